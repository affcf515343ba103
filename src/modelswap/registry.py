"""Versions in the registry: publish, list, read, verify, delete.

A version exists when its metadata.json does; publish writes it last, create-only, while
holding a lease on the version name, so an interrupted publish leaves nothing visible and two
publishers of one name cannot both win.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelswap import locks
from modelswap.errors import (
    Busy,
    IntegrityError,
    InvalidMetadata,
    InvalidName,
    ModelNotFound,
    ObjectExists,
    ObjectNotFound,
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
    version_number,
)
from modelswap.store import Store

LOCKS_DIR = ".locks"
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
            out[name] = f
    return out


class Registry:
    def __init__(self, store: Store) -> None:
        self.store = store

    # -- keys ------------------------------------------------------------------------------

    @staticmethod
    def metadata_key(model: str, version: str) -> str:
        return f"{model}/{version}/{METADATA_FILE}"

    @staticmethod
    def lock_key(model: str, name: str) -> str:
        return f"{model}/{LOCKS_DIR}/{name}.lock"

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
        return Metadata.parse(blob.data, f"{self.store.url}/{key}", expect_version=version)

    def _missing(self, model: str, version: str) -> Exception:
        if any(True for _ in self.store.objects(f"{model}/{version}/")):
            return VersionNotFound(
                f"version {model}/{version} is incomplete: it has files but no {METADATA_FILE}",
                hint="a publish was interrupted or is running; re-run it, or `modelswap gc` "
                "removes the leftovers",
            )
        if not self._model_exists(model):
            return ModelNotFound(f"model {model!r} does not exist in {self.store.url}")
        return VersionNotFound(f"version {model}/{version} does not exist")

    def _model_exists(self, model: str) -> bool:
        return any(True for _ in self.store.objects(f"{model}/"))

    def require_model(self, model: str) -> None:
        check_model(model)
        if not self._model_exists(model):
            raise ModelNotFound(f"model {model!r} does not exist in {self.store.url}")

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
        numbers = [version_number(v) for v in self.version_names(model)]
        return f"v{max((n for n in numbers if n is not None), default=0) + 1}"

    def publish(self, req: PublishRequest) -> Metadata:
        check_model(req.model)
        if req.version is not None:
            return self._publish_as(req, check_new_version(req.version))
        for _ in range(50):  # racing auto-numbered publishers each take the next free vN
            version = self.next_version(req.model)
            try:
                return self._publish_as(req, version)
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
        ).keep_alive() as lease:
            if self._exists(key):
                raise VersionExists(f"version {req.model}/{version} already exists")
            prefix = f"{req.model}/{version}/"
            for leftover in list(self.store.objects(prefix)):  # from an interrupted publish
                self.store.delete(leftover.key)
            written: list[str] = []
            try:
                files = {}
                for name, path in req.files.items():
                    files[name] = self._upload(prefix + name, path)
                    written.append(prefix + name)
                meta = self._metadata(req, version, files)
                lease.check()
                self.store.put_new(key, meta.to_json())
            except BaseException:
                for k in written:  # leave no partial version behind, also on Ctrl-C
                    with contextlib.suppress(StoreError):
                        self.store.delete(k)
                raise
            return meta

    def _exists(self, key: str) -> bool:
        try:
            self.store.head(key)
        except ObjectNotFound:
            return False
        return True

    def _upload(self, key: str, path: Path) -> dict[str, Any]:
        digest = hashlib.sha256()
        try:
            with open(path, "rb") as src:
                info = self.store.upload(key, src, create_only=True, on_chunk=digest.update)
        except ObjectExists as e:
            raise Busy(f"{key} was written by someone else during this publish") from e
        except OSError as e:
            raise UsageError(f"cannot read {path}: {e.strerror}") from e
        return {"sha256": digest.hexdigest(), "size": info.size}

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

    def verify(self, model: str, version: str) -> list[str]:
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

    def delete_version(self, model: str, version: str) -> int:
        """Delete metadata.json first (the version vanishes at once), then its files."""
        check_version(version)
        prefix = f"{model}/{version}/"
        self.store.delete(self.metadata_key(model, version))
        count = 0
        for o in list(self.store.objects(prefix)):
            self.store.delete(o.key)
            count += 1
        return count


def _natural(name: str) -> tuple[int, int, str]:
    n = version_number(name)
    return (0, n, "") if n is not None else (1, 0, name)
