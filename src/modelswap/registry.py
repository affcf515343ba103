"""Versions in the registry: publish, list, read, verify, delete.

A version exists when its metadata.json does; publish writes it last, create-only, while
holding a lease on the version name (confirmed just before that write), so an interrupted
publish leaves nothing visible and two publishers of one name cannot both win. A name gc
deleted keeps a tombstone (<model>/.deleted/<version>.json) and is never published again:
an agent that cached the old bytes under that name would otherwise serve them as the new.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelswap import locks
from modelswap.errors import (
    Busy,
    IntegrityError,
    InvalidMetadata,
    InvalidName,
    LeaseLost,
    ModelNotFound,
    ObjectExists,
    ObjectNotFound,
    OutcomeUnknown,
    StoreError,
    UsageError,
    VersionExists,
    VersionNotFound,
)
from modelswap.metadata import METADATA_FILE, METADATA_MAX_BYTES, Metadata, utc_now
from modelswap.names import (
    NAME_RE,
    POINTER_RE,
    check_file_path,
    check_model,
    check_version,
    path_collision,
    version_number,
)
from modelswap.store import Store

LOCKS_DIR = ".locks"
TOMBSTONES_DIR = ".deleted"
MOVES_LOCK = "moves"  # one lease for every pointer move of a model, and for gc
MOVE_WAIT_S = 15.0  # a move waits this long for another move or a gc to finish
RESERVED = {"events", "fleet"}
METADATA_KEYS = {"version", "created", "git_sha", "training_data", "metrics", "notes", "files"}


def check_new_version(version: str) -> str:
    check_version(version)
    if version in RESERVED or POINTER_RE.fullmatch(version):
        raise InvalidName(
            f"version name {version!r} is reserved",
            hint="'events', 'fleet' and upper-case names (pointers) cannot be versions; use vN",
        )
    return version


@dataclass(frozen=True)
class PublishRequest:
    model: str
    files: dict[str, Path]  # name inside the version -> local file
    version: str | None = None
    training_data: str | None = None
    notes: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    git_sha: str | None = None
    actor: str = "unknown"
    progress: Callable[[int], None] | None = None  # told the size of every chunk uploaded


def collect_files(paths: list[Path]) -> dict[str, Path]:
    """Map each FILE argument (or every file under a folder argument) to its name in a version."""
    if not paths:
        raise UsageError(
            "publish needs at least one FILE", hint="modelswap publish MODEL model.onnx"
        )
    out: dict[str, Path] = {}
    for p in paths:
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file())
            pairs = [(f.relative_to(p).as_posix(), f) for f in found]
            if not pairs:
                raise UsageError(f"folder {p} holds no files")
        elif p.is_file():
            pairs = [(p.name, p)]
        else:
            raise UsageError(f"{p} is not a file or folder", hint="check the FILE arguments")
        for name, f in pairs:
            check_file_path(name)
            if name == METADATA_FILE:
                raise UsageError(
                    f"{f}: {METADATA_FILE} is written by modelswap itself",
                    hint="rename the file, or pass its values with --meta K=V",
                )
            if name in out:
                raise UsageError(f"two files would both be stored as {name!r}: {out[name]} and {f}")
            if f.stat().st_size == 0:
                raise UsageError(
                    f"{f} is empty; a version's files hold the model",
                    hint="check the file was written completely before publishing it",
                )
            out[name] = f
    clash = path_collision(list(out))
    if clash:
        raise UsageError(
            f"{clash[0]!r} would be stored as a file and as the folder of {clash[1]!r}",
            hint="rename one of them; a path inside a version cannot be both",
        )
    return out


class Registry:
    def __init__(self, store: Store, *, lease_ttl_s: float = locks.LEASE_TTL_S) -> None:
        self.store = store
        self.lease_ttl_s = lease_ttl_s

    # -- keys ------------------------------------------------------------------------------

    @staticmethod
    def metadata_key(model: str, version: str) -> str:
        return f"{model}/{version}/{METADATA_FILE}"

    @staticmethod
    def lock_key(model: str, name: str) -> str:
        return f"{model}/{LOCKS_DIR}/{name}.lock"

    @staticmethod
    def tombstone_key(model: str, version: str) -> str:
        return f"{model}/{TOMBSTONES_DIR}/{version}.json"

    # -- reading ---------------------------------------------------------------------------

    def models(self) -> list[str]:
        return [m for m in self.store.list_dirs("") if not m.startswith(".")]

    def version_names(self, model: str) -> list[str]:
        """Every folder holding objects that could be a version (complete or not), in natural
        order. Derived from the object listing, not from folder listings: some stores (SeaweedFS,
        a local folder) keep a folder after its last object is deleted."""
        check_model(model)
        prefix = f"{model}/"
        names = {o.key[len(prefix) :].split("/", 1)[0] for o in self.store.objects(prefix)}
        names = {n for n in names if n not in RESERVED and NAME_RE.fullmatch(n)}
        names -= {n for n in names if POINTER_RE.fullmatch(n)}
        return sorted(names, key=_natural)

    def metadata(self, model: str, version: str) -> Metadata:
        check_model(model)
        check_version(version)
        key = self.metadata_key(model, version)
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

    def _missing(self, model: str, version: str) -> Exception:
        if any(True for _ in self.store.objects(f"{model}/{version}/")):
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
        return any(True for _ in self.store.objects(f"{model}/"))

    def require_model(self, model: str) -> None:
        check_model(model)
        if not self._model_exists(model):
            raise self._no_model(model)

    def all_metadata(self, model: str) -> dict[str, Metadata | InvalidMetadata | None]:
        """Every version folder's metadata: None where metadata.json is missing (a partial
        upload), the InvalidMetadata error where it is malformed (shown, never deleted)."""
        self.require_model(model)
        names = self.version_names(model)

        def one(v: str) -> Metadata | InvalidMetadata | None:
            try:
                return self.metadata(model, v)
            except InvalidMetadata as e:
                return e
            except VersionNotFound:
                return None

        with concurrent.futures.ThreadPoolExecutor(min(16, max(1, len(names)))) as pool:
            return dict(zip(names, pool.map(one, names), strict=True))

    # -- publishing ------------------------------------------------------------------------

    def next_version(self, model: str) -> str:
        """One past the highest vN ever used: versions, publishes in flight, gc's tombstones."""
        check_model(model)
        taken = {o.key.rsplit("/", 1)[-1] for o in self.store.objects(f"{model}/{LOCKS_DIR}/")}
        taken = {t.removeprefix("publish-").removesuffix(".lock") for t in taken}
        taken |= set(self.version_names(model)) | set(self.tombstones(model))
        numbers = [n for n in (version_number(v) for v in taken) if n is not None]
        return f"v{max(numbers, default=0) + 1}"

    def tombstones(self, model: str) -> list[str]:
        prefix = f"{model}/{TOMBSTONES_DIR}/"
        return [
            o.key[len(prefix) :].removesuffix(".json")
            for o in self.store.objects(prefix)
            if o.key.endswith(".json")
        ]

    def publish(self, req: PublishRequest) -> Metadata:
        check_model(req.model)
        if req.version is not None:
            return self._publish_as(req, check_new_version(req.version))
        number = 0
        for _ in range(50):
            # Racing auto-numbered publishers each take the next free vN: one that finds a
            # number taken (or its lease held) moves past it instead of re-reading the same
            # listing, so N racers need at most N tries whatever the upload takes.
            listed = version_number(self.next_version(req.model)) or 1
            number = max(number + 1, listed)
            try:
                return self._publish_as(req, f"v{number}")
            except LeaseLost:
                raise
            except (VersionExists, Busy):
                continue
        raise Busy(f"could not find a free version number for {req.model}")

    def _publish_as(self, req: PublishRequest, version: str) -> Metadata:
        key = self.metadata_key(req.model, version)
        with locks.acquire(
            self.store,
            self.lock_key(req.model, f"publish-{version}"),
            f"version {req.model}/{version}",
            actor=req.actor,
            ttl_s=self.lease_ttl_s,
        ).keep_alive() as lease:
            if self._exists(key):
                raise VersionExists(f"version {req.model}/{version} already exists")
            tomb = self.tombstone_key(req.model, version)
            if self._exists(tomb):
                raise VersionExists(
                    f"version {req.model}/{version} was deleted by gc; version names are "
                    "never reused",
                    hint="publish under a new --version, or omit it for the next vN",
                )
            prefix = f"{req.model}/{version}/"
            for leftover in list(self.store.objects(prefix)):  # from an interrupted publish
                self.store.delete(leftover.key)
            written: dict[str, str] = {}  # key -> the ETag our upload got
            meta: Metadata | None = None
            try:
                files = {}
                for name, path in req.files.items():
                    lease.check()
                    files[name], written[prefix + name] = self._upload(
                        prefix + name, path, req.progress
                    )
                meta = self._metadata(req, version, files)
                lease.confirm()  # a lease that lapsed while uploading stops us here
                self.store.put_new(key, meta.to_json())
            except OutcomeUnknown:
                if meta is None:
                    self._undo_publish(key, meta, written)
                # else: metadata.json may still land; its files must then be there. A re-run
                # (or gc) clears them if it did not.
                raise
            except BaseException:
                self._undo_publish(key, meta, written)
                raise
            return meta

    def _undo_publish(self, key: str, meta: Metadata | None, written: dict[str, str]) -> None:
        """Leave no partial version behind, also on Ctrl-C: our metadata.json first (a write
        whose outcome was unknown may have landed), then our files, each only if it is still
        the object we uploaded (a publisher that took over a lapsed lease owns them now)."""
        if meta is not None:
            with contextlib.suppress(StoreError):
                stored = self.store.read(key, max_bytes=METADATA_MAX_BYTES)
                if stored.data == meta.to_json():
                    self.store.delete(key, if_match=stored.etag)
        for k, etag in written.items():
            with contextlib.suppress(StoreError):
                self.store.delete(k, if_match=etag)

    def _exists(self, key: str) -> bool:
        try:
            self.store.head(key)
        except ObjectNotFound:
            return False
        return True

    def _upload(
        self, key: str, path: Path, progress: Callable[[int], None] | None = None
    ) -> tuple[dict[str, Any], str]:
        """Upload one file create-only; its metadata entry and the ETag it got."""
        digest = hashlib.sha256()

        def on_chunk(chunk: bytes) -> None:
            digest.update(chunk)
            if progress is not None:
                progress(len(chunk))

        try:
            with open(path, "rb") as src:
                info = self.store.upload(key, src, create_only=True, on_chunk=on_chunk)
        except ObjectExists as e:
            raise Busy(f"{key} was written by someone else during this publish") from e
        except OSError as e:
            raise UsageError(f"cannot read {path}: {e.strerror}") from e
        return {"sha256": digest.hexdigest(), "size": info.size}, info.etag

    @staticmethod
    def _metadata(req: PublishRequest, version: str, files: dict[str, Any]) -> Metadata:
        raw: dict[str, Any] = dict(req.extra)
        raw.update(
            {
                "version": version,
                "created": utc_now(),
                "git_sha": req.git_sha,
                "training_data": req.training_data,
                "metrics": dict(req.metrics),
                "notes": req.notes,
                "files": files,
                "published_by": req.actor,
            }
        )
        return Metadata(raw)

    # -- checking and deleting -------------------------------------------------------------

    def verify(
        self, model: str, version: str, progress: Callable[[int], None] | None = None
    ) -> list[str]:
        """Re-read every stored file; the problems found (empty when the version is intact)."""
        meta = self.metadata(model, version)
        prefix = f"{model}/{version}/"
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
        known = {prefix + n for n in meta.files} | {prefix + METADATA_FILE}
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
        prefix = f"{model}/{version}/"
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
        prefix = f"{model}/{version}/"
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
                    self.tombstone_key(model, version),
                    json.dumps(tomb, sort_keys=True).encode(),
                )
        self.store.delete(self.metadata_key(model, version))
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
