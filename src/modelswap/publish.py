"""Publishing a version: upload its files create-only, then metadata.json, last.

A version exists when its metadata.json does; publish writes it last, create-only, while
holding a lease on the version name (confirmed just before that write), so an interrupted
publish leaves nothing visible and two publishers of one name cannot both win. A name gc
deleted keeps a tombstone and is never published again.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelswap import keys, locks, signing
from modelswap.errors import (
    Busy,
    InvalidName,
    LeaseLost,
    ObjectExists,
    ObjectNotFound,
    OutcomeUnknown,
    StoreError,
    UsageError,
    VersionExists,
)
from modelswap.metadata import METADATA_FILE, METADATA_MAX_BYTES, Metadata, utc_now
from modelswap.names import (
    POINTER_RE,
    check_file_path,
    check_model,
    check_version,
    path_collision,
    version_number,
)
from modelswap.registry import Registry

METADATA_KEYS = {
    "model",
    "version",
    "created",
    "git_sha",
    "training_data",
    "metrics",
    "notes",
    "files",
}


def check_new_version(version: str) -> str:
    check_version(version)
    if version in keys.RESERVED or POINTER_RE.fullmatch(version):
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
    sign_key: signing.SigningKey | None = None  # writes model.sig before metadata.json


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
            if name == signing.SIGNATURE_FILE:
                raise UsageError(
                    f"{f}: {signing.SIGNATURE_FILE} is the version's signature, written by "
                    "modelswap itself",
                    hint="rename the file; sign with --sign-key",
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


def publish(registry: Registry, req: PublishRequest) -> Metadata:
    check_model(req.model)
    if req.version is not None:
        return _publish_as(registry, req, check_new_version(req.version))
    number = 0
    for _ in range(50):
        # Racing auto-numbered publishers each take the next free vN: one that finds a
        # number taken (or its lease held) moves past it instead of re-reading the same
        # listing, so N racers need at most N tries whatever the upload takes.
        listed = version_number(registry.next_version(req.model)) or 1
        number = max(number + 1, listed)
        try:
            return _publish_as(registry, req, f"v{number}")
        except LeaseLost:
            raise
        except (VersionExists, Busy):
            continue
    raise Busy(f"could not find a free version number for {req.model}")


def _publish_as(registry: Registry, req: PublishRequest, version: str) -> Metadata:
    key = keys.metadata(req.model, version)
    with locks.acquire(
        registry.store,
        keys.publish_lock(req.model, version),
        f"version {req.model}/{version}",
        actor=req.actor,
        ttl_s=registry.lease_ttl_s,
    ).keep_alive() as lease:
        if _exists(registry, key):
            raise VersionExists(f"version {req.model}/{version} already exists")
        tomb = keys.tombstone(req.model, version)
        if _exists(registry, tomb):
            raise VersionExists(
                f"version {req.model}/{version} was deleted by gc; version names are never reused",
                hint="publish under a new --version, or omit it for the next vN",
            )
        prefix = keys.version_prefix(req.model, version)
        for leftover in list(registry.store.objects(prefix)):  # from an interrupted publish
            registry.store.delete(leftover.key)
        written: dict[str, str] = {}  # key -> the ETag our upload got
        meta: Metadata | None = None
        sent = False  # metadata.json's write was started: from then on it may land
        try:
            files = {}
            for name, path in req.files.items():
                lease.check()
                files[name], written[prefix + name] = _upload(
                    registry, prefix + name, path, req.progress
                )
            meta = _metadata(req, version, files)
            if req.sign_key is not None:  # the signature covers metadata.json, so it is first
                sig = signing.sign(req.sign_key, req.model, version, meta)
                lease.check()
                sig_key = prefix + signing.SIGNATURE_FILE
                written[sig_key] = registry.store.put_new(sig_key, sig)
            lease.confirm()  # a lease that lapsed while uploading stops us here
            sent = True
            registry.store.put_new(key, meta.to_json())
        except OutcomeUnknown:
            if not sent:
                _undo_publish(registry, key, None, written)
            # else: metadata.json may still land; its files must then be there. A re-run
            # (or gc) clears them if it did not.
            raise
        except BaseException:
            _undo_publish(registry, key, meta, written)
            raise
        return meta


def _undo_publish(
    registry: Registry, key: str, meta: Metadata | None, written: dict[str, str]
) -> None:
    """Leave no partial version behind, also on Ctrl-C: our metadata.json first (a write
    whose outcome was unknown may have landed), then our files, each only if it is still
    the object we uploaded (a publisher that took over a lapsed lease owns them now)."""
    if meta is not None:
        with contextlib.suppress(StoreError):
            stored = registry.store.read(key, max_bytes=METADATA_MAX_BYTES)
            if stored.data == meta.to_json():
                registry.store.delete(key, if_match=stored.etag)
    for k, etag in written.items():
        with contextlib.suppress(StoreError):
            registry.store.delete(k, if_match=etag)


def _exists(registry: Registry, key: str) -> bool:
    try:
        registry.store.head(key)
    except ObjectNotFound:
        return False
    return True


def _upload(
    registry: Registry, key: str, path: Path, progress: Callable[[int], None] | None = None
) -> tuple[dict[str, Any], str]:
    """Upload one file create-only; its metadata entry and the ETag it got."""
    digest = hashlib.sha256()

    def on_chunk(chunk: bytes) -> None:
        digest.update(chunk)
        if progress is not None:
            progress(len(chunk))

    try:
        with open(path, "rb") as src:
            info = registry.store.upload(key, src, create_only=True, on_chunk=on_chunk)
    except ObjectExists as e:
        raise Busy(f"{key} was written by someone else during this publish") from e
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from e
    return {"sha256": digest.hexdigest(), "size": info.size}, info.etag


def _metadata(req: PublishRequest, version: str, files: dict[str, Any]) -> Metadata:
    raw: dict[str, Any] = dict(req.extra)
    raw.update(
        {
            "model": req.model,  # a signature over metadata.json binds the name too
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
