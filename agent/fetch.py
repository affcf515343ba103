"""Download one version into a staging folder, verifying size and sha256 while streaming.

The bytes are hashed as they arrive (no second read pass) and a mismatch stops the download
at once; only a folder whose every file matched metadata.json is handed back for install.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path

from modelswap.errors import (
    Cancelled,
    IntegrityError,
    LocalIOError,
    ObjectNotFound,
    VersionNotFound,
)
from modelswap.metadata import METADATA_FILE, Metadata
from modelswap.store import Store

CHUNK = 1 << 20


@dataclass
class FetchStats:
    bytes: int = 0
    files: int = 0
    per_file: dict[str, int] = field(default_factory=dict)


def fetch_version(
    *,
    store: Store,
    model: str,
    meta: Metadata,
    metadata_bytes: bytes,
    staging: Path,
    cancel: threading.Event,
    stats: FetchStats,
) -> None:
    """Fill `staging` with the verified files of meta.version and its metadata.json.
    On any failure the staging folder is removed and the error raised."""
    try:
        for name, entry in sorted(meta.files.items()):
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            _download(
                store=store,
                key=f"{model}/{meta.version}/{name}",
                target=target,
                size=entry.size,
                sha256=entry.sha256,
                cancel=cancel,
                stats=stats,
            )
            stats.files += 1
        (staging / METADATA_FILE).write_bytes(metadata_bytes)
        for path in staging.rglob("*"):
            path.chmod(
                0o755 if path.is_dir() else 0o444
            )  # readable by the app's uid, never rewritten
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _download(
    *,
    store: Store,
    key: str,
    target: Path,
    size: int,
    sha256: str,
    cancel: threading.Event,
    stats: FetchStats,
) -> None:
    digest = hashlib.sha256()
    written = 0
    try:
        with open(target, "wb") as f:
            try:
                chunks = store.iter_chunks(key, CHUNK)
            except ObjectNotFound as e:
                raise VersionNotFound(
                    f"{key} listed in {METADATA_FILE} is missing from the store",
                    hint="the version is damaged; promote another one",
                ) from e
            for chunk in chunks:
                if cancel.is_set():
                    raise Cancelled("download stopped: the agent is shutting down")
                written += len(chunk)
                if written > size:
                    raise IntegrityError(
                        f"{key} is larger than the {size} bytes in {METADATA_FILE}"
                    )
                digest.update(chunk)
                f.write(chunk)
                stats.bytes += len(chunk)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise LocalIOError(
                f"no space left on the --dest volume while writing {target.name}",
                hint="free space or lower --keep; the linked version is untouched",
            ) from e
        raise LocalIOError(f"cannot write {target}: {e.strerror}") from e
    if written != size:
        raise IntegrityError(f"{key} is {written} bytes, {METADATA_FILE} says {size}")
    if digest.hexdigest() != sha256:
        raise IntegrityError(
            f"{key} sha256 {digest.hexdigest()[:12]}... does not match {sha256[:12]}... in "
            f"{METADATA_FILE}",
            hint="the stored object changed after publish; it is never linked. Promote another "
            "version or re-publish",
        )


def verify_local(folder: Path, meta: Metadata, *, full: bool) -> list[str]:
    """Problems with a local copy: sizes always, and sha256 when full (start-up check)."""
    problems = []
    for name, entry in meta.files.items():
        path = folder / name
        try:
            st = path.stat()
        except OSError:
            problems.append(f"{name}: missing")
            continue
        if st.st_size != entry.size:
            problems.append(f"{name}: {st.st_size} bytes, expected {entry.size}")
            continue
        if full:
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK):
                    digest.update(chunk)
            if digest.hexdigest() != entry.sha256:
                problems.append(f"{name}: sha256 does not match")
    return problems
