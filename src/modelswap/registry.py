"""Versions in the registry: list, read, verify, delete (publishing is in publish.py).

A version exists when its metadata.json does. A name gc deleted keeps a tombstone
(<model>/.deleted/<version>.json) and is never published again: an agent that cached the old
bytes under that name would otherwise serve them as the new.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
from collections.abc import Callable

from modelswap import keys, locks, signing
from modelswap.errors import (
    IntegrityError,
    InvalidMetadata,
    ModelNotFound,
    ObjectExists,
    ObjectNotFound,
    SignatureError,
    VersionNotFound,
)
from modelswap.metadata import METADATA_FILE, METADATA_MAX_BYTES, Metadata, utc_now
from modelswap.names import (
    NAME_RE,
    POINTER_RE,
    check_model,
    check_version,
    version_number,
)
from modelswap.records import Event
from modelswap.store import ObjectInfo, Store

MOVE_WAIT_S = 15.0  # a move waits this long for another move or a gc to finish


class Registry:
    def __init__(self, store: Store, *, lease_ttl_s: float = locks.LEASE_TTL_S) -> None:
        self.store = store
        self.lease_ttl_s = lease_ttl_s
        # metadata.json and events are written once and never rewritten, so what was read
        # stays true while a listing shows the same key with the same ETag: a long-lived
        # reader (`modelswap ui`, the controller) reads a 10,000-event log once.
        self.metadata_cache: dict[str, tuple[str, Metadata]] = {}
        self.event_cache: dict[str, tuple[str, Event]] = {}

    # -- reading ---------------------------------------------------------------------------

    def models(self) -> list[str]:
        """Folders named like a model (a folder named otherwise, say in another encoding,
        is not one modelswap could have made)."""
        return [m for m in self.store.list_dirs("") if NAME_RE.fullmatch(m)]

    def version_names(self, model: str) -> list[str]:
        """Every folder holding objects that could be a version (complete or not), in natural
        order. Derived from the object listing, not from folder listings: some stores (SeaweedFS,
        a local folder) keep a folder after its last object is deleted."""
        return list(self.version_listing(model))

    def version_listing(self, model: str) -> dict[str, dict[str, ObjectInfo]]:
        """version_names, each with its objects by file name, from one listing."""
        check_model(model)
        prefix = keys.model_prefix(model)
        found: dict[str, dict[str, ObjectInfo]] = {}
        # The folders that are never versions are not walked (a model's events alone can be
        # 10,000 objects); a network store lists and drops them.
        skip = tuple(f"{prefix}{d}/" for d in (*keys.RESERVED, *keys.HIDDEN_DIRS))
        for o in self.store.objects_except(prefix, skip):
            name, _, rest = o.key[len(prefix) :].partition("/")
            if name in found:
                found[name][rest] = o
            elif (
                name not in keys.RESERVED
                and NAME_RE.fullmatch(name)
                and not POINTER_RE.fullmatch(name)
            ):
                found[name] = {rest: o}
        return {n: found[n] for n in sorted(found, key=_natural)}

    def metadata(self, model: str, version: str) -> Metadata:
        check_model(model)
        check_version(version)
        key = keys.metadata(model, version)
        try:
            blob = self.store.read(key, max_bytes=METADATA_MAX_BYTES)
        except ObjectNotFound:
            raise self._missing(model, version) from None
        if blob.truncated:
            raise InvalidMetadata(
                f"{self.store.url}/{key} is {blob.size} bytes, over the "
                f"{METADATA_MAX_BYTES >> 20} MiB a metadata.json may have; it was not read",
                hint="metadata.json is written by `modelswap publish`; re-publish under a new "
                "version with smaller --meta values",
            )
        return Metadata.parse(blob.data, f"{self.store.url}/{key}", expect_version=version)

    def signature(self, model: str, version: str) -> bytes | None:
        """The version's model.sig as stored, or None when it has none (unsigned)."""
        key = keys.version_file(model, version, signing.SIGNATURE_FILE)
        try:
            blob = self.store.read(key, max_bytes=signing.SIGNATURE_MAX_BYTES)
        except ObjectNotFound:
            return None
        if blob.truncated:
            raise SignatureError(
                f"{self.store.url}/{key} is {blob.size} bytes, too large for a signature",
                hint="model.sig is written by `modelswap publish --sign-key`; re-publish",
            )
        return blob.data

    def _missing(self, model: str, version: str) -> Exception:
        if any(True for _ in self.store.objects(keys.version_prefix(model, version))):
            return VersionNotFound(
                f"version {model}/{version} is incomplete: it has files but no {METADATA_FILE}",
                hint="a publish was interrupted or is running; re-run it, or `modelswap gc` "
                "removes the leftovers",
            )
        if not self._model_exists(model):
            return self._no_model(model)
        have = [v for v, m in self.all_metadata(model).items() if m is not None]
        return VersionNotFound(
            f"version {model}/{version} does not exist",
            hint=f"{model} has {_listed(have)}" if have else f"{model} has no complete version yet",
        )

    def _no_model(self, model: str) -> ModelNotFound:
        """A mistyped model names the models there are, instead of suggesting a publish
        that would create the typo."""
        models = self.models()
        if models:
            return ModelNotFound(
                f"model {model!r} does not exist in {self.store.url}",
                hint=f"models here: {_listed(models)}",
            )
        return ModelNotFound(f"model {model!r} does not exist in {self.store.url}")

    def _model_exists(self, model: str) -> bool:
        return any(True for _ in self.store.objects(keys.model_prefix(model)))

    def require_model(self, model: str) -> None:
        check_model(model)
        if not self._model_exists(model):
            raise self._no_model(model)

    def all_metadata(
        self, model: str, listing: dict[str, dict[str, ObjectInfo]] | None = None
    ) -> dict[str, Metadata | InvalidMetadata | None]:
        """Every version folder's metadata: None where metadata.json is missing (a partial
        upload), the InvalidMetadata error where it is malformed (shown, never deleted).
        `listing` is version_listing(model) when the caller has it already."""
        self.require_model(model)
        listing = self.version_listing(model) if listing is None else listing

        def one(v: str) -> Metadata | InvalidMetadata | None:
            info = listing[v].get(METADATA_FILE)
            if info is None:
                return None
            cached = self.metadata_cache.get(info.key)
            if cached is not None and cached[0] == info.etag:
                return cached[1]
            try:
                meta = self.metadata(model, v)
            except InvalidMetadata as e:
                return e
            except VersionNotFound:
                return None
            self.metadata_cache[info.key] = (info.etag, meta)
            return meta

        names = list(listing)
        if self.store.parallel_reads <= 1:
            return {v: one(v) for v in names}
        with concurrent.futures.ThreadPoolExecutor(
            min(self.store.parallel_reads, max(1, len(names)))
        ) as pool:
            return dict(zip(names, pool.map(one, names), strict=True))

    def next_version(self, model: str) -> str:
        """One past the highest vN ever used: versions, publishes in flight, gc's tombstones."""
        check_model(model)
        taken = {
            keys.lock_name(o.key).removeprefix(keys.PUBLISH_LOCK_PREFIX)
            for o in self.store.objects(keys.publish_locks_prefix(model))
        }
        taken |= set(self.version_names(model)) | set(self.tombstones(model))
        numbers = [n for n in (version_number(v) for v in taken) if n is not None]
        return f"v{max(numbers, default=0) + 1}"

    def tombstones(self, model: str) -> list[str]:
        prefix = keys.tombstones_prefix(model)
        return [
            keys.name_under(prefix, o.key, ".json")
            for o in self.store.objects(prefix)
            if o.key.endswith(".json")
        ]

    # -- checking and deleting -------------------------------------------------------------

    def verify(
        self, model: str, version: str, progress: Callable[[int], None] | None = None
    ) -> list[str]:
        """Re-read every stored file; the problems found (empty when the version is intact)."""
        meta = self.metadata(model, version)
        prefix = keys.version_prefix(model, version)
        problems = []
        for name, entry in meta.files.items():
            digest, size = hashlib.sha256(), 0
            try:
                for chunk in self.store.iter_chunks(prefix + name):
                    digest.update(chunk)
                    size += len(chunk)
                    if progress is not None:
                        progress(len(chunk))
            except ObjectNotFound:
                problems.append(f"{name}: missing from the store")
                continue
            if size != entry.size:
                problems.append(f"{name}: size {size} != {entry.size} in {METADATA_FILE}")
            elif digest.hexdigest() != entry.sha256:
                problems.append(
                    f"{name}: sha256 {digest.hexdigest()[:12]}... != {entry.sha256[:12]}..."
                )
        known = {prefix + n for n in [*meta.files, METADATA_FILE, signing.SIGNATURE_FILE]}
        problems += [
            f"{o.key[len(prefix) :]}: stored but not listed in {METADATA_FILE}"
            for o in self.store.objects(prefix)
            if o.key not in known
        ]
        return problems

    def require_intact(self, model: str, version: str) -> None:
        problems = self.verify(model, version)
        if problems:
            raise IntegrityError(f"{model}/{version} failed verification: {problems[0]}")

    def check_stored(self, model: str, version: str, *, full: bool = False) -> Metadata:
        """The version's metadata, after checking that every file it lists is stored with
        its size (one listing), or with full=True its sha256 too (reads every byte). Refuses
        with IntegrityError: a pointer must never name a version the fleet would refuse."""
        meta = self.metadata(model, version)
        prefix = keys.version_prefix(model, version)
        if full:
            problems = self.verify(model, version)
        else:
            sizes = {o.key[len(prefix) :]: o.size for o in self.store.objects(prefix)}
            problems = [
                f"{name}: missing from the store"
                if name not in sizes
                else f"{name}: size {sizes[name]} != {entry.size} in {METADATA_FILE}"
                for name, entry in meta.files.items()
                if sizes.get(name) != entry.size
            ]
        if problems:
            raise IntegrityError(
                f"{model}/{version} cannot be promoted: {problems[0]}",
                hint=f"`modelswap verify {model} {version}` lists every problem; promote "
                "another version or re-publish this one under a new name",
            )
        return meta

    def delete_version(self, model: str, version: str, *, actor: str = "unknown") -> int:
        """Tombstone the name (create-only), delete metadata.json (the version vanishes at
        once), then its files. The tombstone keeps the deleted files' checksums."""
        check_version(version)
        prefix = keys.version_prefix(model, version)
        try:
            meta: Metadata | None = self.metadata(model, version)
        except (VersionNotFound, InvalidMetadata):
            meta = None
        if meta is not None:
            tomb = {
                "version": version,
                "deleted": utc_now(),
                "deleted_by": actor,
                "files": meta.raw["files"],
            }
            with contextlib.suppress(ObjectExists):
                self.store.put_new(
                    keys.tombstone(model, version),
                    json.dumps(tomb, sort_keys=True).encode(),
                )
        self.store.delete(keys.metadata(model, version))
        count = 0
        for o in list(self.store.objects(prefix)):
            self.store.delete(o.key)
            count += 1
        return count


def _listed(names: list[str], most: int = 12) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _natural(name: str) -> tuple[int, int, str]:
    n = version_number(name)
    return (0, n, "") if n is not None else (1, 0, name)
