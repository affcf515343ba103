"""Download one version into a folder, verifying size and sha256 while streaming (agent, gate).

The bytes are hashed as they arrive (no second read pass) and a mismatch stops the download
at once; only a folder whose every file matched metadata.json is handed back for install.
"""

from __future__ import annotations

import collections
import concurrent.futures
import errno
import functools
import hashlib
import itertools
import os
import shutil
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from modelswap import keys
from modelswap.errors import (
    Cancelled,
    IntegrityError,
    LocalIOError,
    ObjectNotFound,
    UsageError,
    VersionNotFound,
)
from modelswap.metadata import METADATA_FILE, Metadata
from modelswap.signing import SIGNATURE_FILE
from modelswap.store import Store

CHUNK = 1 << 20
PARALLEL_MIN = 16 << 20  # below this one streamed GET is as fast and costs fewer requests
# Measured in one process against SeaweedFS on loopback (2 cores, 300 MB to tmpfs, median of
# 3; a side-by-side script, not bench/peers_bench.py, which times whole commands): parts of
# 16 MB on 2 threads, each written piece by piece (4 MB reads) as it arrives, 567 MB/s; the
# same parts read whole into one bytes object before writing, on 4 threads, 342 MB/s (the
# join copies every byte again, and more threads only queue on the GIL). One streamed GET
# with a hashing thread is as fast here, but a real store caps each connection, so parts
# stay. At most WINDOW parts (48 MB) are in memory, whatever the file size.
PART = 16 << 20
PIECE = 4 << 20
THREADS = 2
WINDOW = 3


@dataclass
class FetchStats:
    bytes: int = 0
    files: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    on_bytes: Callable[[int], None] | None = field(default=None, repr=False)  # progress

    def add(self, nbytes: int = 0, files: int = 0) -> None:
        with self.lock:  # small files download on several threads at once
            self.bytes += nbytes
            self.files += files
        if nbytes and self.on_bytes is not None:
            self.on_bytes(nbytes)


def fetch_version(
    *,
    store: Store,
    model: str,
    meta: Metadata,
    metadata_bytes: bytes,
    staging: Path,
    cancel: threading.Event,
    stats: FetchStats,
    signature: bytes | None = None,
) -> None:
    """Fill `staging` with the verified files of meta.version, its metadata.json and its
    model.sig if it has one (so `model_signing verify` works on the copy).
    On any failure the staging folder is removed and the error raised."""

    def one(name: str) -> None:
        entry = meta.files[name]
        target = staging / name
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        _download(
            store=store,
            key=keys.version_file(model, meta.version, name),
            target=target,
            size=entry.size,
            sha256=entry.sha256,
            cancel=cancel,
            stats=stats,
        )
        stats.add(files=1)

    try:
        names = sorted(meta.files)
        large = [n for n in names if meta.files[n].size >= PARALLEL_MIN]
        small = [n for n in names if meta.files[n].size < PARALLEL_MIN]
        for name in large:  # each already fetched by several ranged GETs at once
            one(name)
        # Many small files: one GET each, several at a time.
        for fut in _bounded([functools.partial(one, n) for n in small], THREADS):
            fut.result()
        _write_named(staging / METADATA_FILE, metadata_bytes)
        if signature is not None:
            _write_named(staging / SIGNATURE_FILE, signature)
        for path in staging.rglob("*"):
            path.chmod(
                0o755 if path.is_dir() else 0o444
            )  # readable by the app's uid, never rewritten
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def download_into(
    store: Store,
    model: str,
    meta: Metadata,
    target: Path,
    *,
    on_bytes: Callable[[int], None] | None = None,
    signature: bytes | None = None,
) -> Path:
    """A verified copy of a version in folder `target`, which must not exist yet: it appears
    by rename once every file matched its sha256 (`modelswap download`)."""
    if os.path.lexists(target):
        raise UsageError(f"{target} already exists", hint="download into a new folder")
    staging = target.with_name(f".{target.name}.partial-{uuid.uuid4().hex[:8]}")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging.mkdir()
    try:
        fetch_version(
            store=store,
            model=model,
            meta=meta,
            metadata_bytes=meta.stored_bytes,
            staging=staging,
            cancel=threading.Event(),
            stats=FetchStats(on_bytes=on_bytes),
            signature=signature,
        )
        os.rename(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _write_named(path: Path, data: bytes) -> None:
    """write_bytes, with the path in the error: a failed write() (ENOSPC) names no file."""
    try:
        path.write_bytes(data)
    except OSError as e:
        if e.filename is None:
            e.filename = str(path)
        raise


def _spawn(fn: Callable[[], Any], gate: threading.Semaphore) -> concurrent.futures.Future[Any]:
    """Run fn on a daemon thread. Not a ThreadPoolExecutor: the interpreter joins a pool's
    threads at exit, so one blocked in a read of a stalled store would keep a SIGTERMed agent
    alive; a daemon thread is dropped at exit, and its output is only ever a staging file."""
    fut: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def run() -> None:
        with gate:
            if not fut.set_running_or_notify_cancel():
                return
            try:
                fut.set_result(fn())
            except BaseException as e:  # noqa: BLE001 - handed to whoever waits on fut
                fut.set_exception(e)

    threading.Thread(target=run, daemon=True, name="modelswap-fetch").start()
    return fut


def _bounded(jobs: list[Callable[[], Any]], threads: int) -> list[concurrent.futures.Future[Any]]:
    """Start every job on a daemon thread, at most `threads` running at once; the futures
    are returned in order, and on the first failure the ones not yet started are cancelled."""
    gate = threading.Semaphore(threads)
    futs = [_spawn(job, gate) for job in jobs]
    for fut in futs:
        if fut.exception() is not None:
            for other in futs:
                other.cancel()
            break
    return futs


class _Job(NamedTuple):
    store: Store
    key: str
    fd: int
    path: Path
    size: int
    digest: Any
    cancel: threading.Event
    stats: FetchStats


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
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            job = _Job(store, key, fd, target, size, digest, cancel, stats)
            # No fsync: it cost a third of a 200 MB fetch here, and durability comes from the
            # start-up check instead, which re-hashes every local copy after any restart
            # (a power loss included) and re-fetches what does not match.
            if size >= PARALLEL_MIN:
                _ranged(job)
            else:
                _streamed(job)
        finally:
            os.close(fd)
    except ObjectNotFound as e:
        raise VersionNotFound(
            f"{key} listed in {METADATA_FILE} is missing from the store",
            hint="the version is damaged; promote another one",
        ) from e
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise LocalIOError(
                f"no space left on the --dest volume while writing {target.name}",
                hint="free space or lower --keep; the linked version is untouched",
            ) from e
        raise LocalIOError(f"cannot write {target}: {e.strerror}") from e
    if digest.hexdigest() != sha256:
        raise IntegrityError(
            f"{key} sha256 {digest.hexdigest()[:12]}... does not match {sha256[:12]}... in "
            f"{METADATA_FILE}",
            hint="the stored object changed after publish; it is never linked. Promote another "
            "version or re-publish",
        )


def _streamed(job: _Job) -> None:
    store, key, fd, _path, size, digest, cancel, stats = job
    written = 0
    for chunk in store.iter_chunks(key, CHUNK):
        if cancel.is_set():
            raise Cancelled("download stopped: the agent is shutting down")
        written += len(chunk)
        if written > size:
            raise IntegrityError(f"{key} is larger than the {size} bytes in {METADATA_FILE}")
        digest.update(chunk)
        os.write(fd, chunk)
        stats.add(len(chunk))
    if written != size:
        raise IntegrityError(f"{key} is {written} bytes, {METADATA_FILE} says {size}")


def _ranged(job: _Job) -> None:
    """Parallel ranged GETs written at their offsets, hashed strictly in order as they land,
    with a bounded window so memory stays at WINDOW parts whatever the file size."""
    store, key, _fd, path, size, digest, cancel, stats = job
    stored = store.head(key).size
    if stored != size:
        raise IntegrityError(f"{key} is {stored} bytes, {METADATA_FILE} says {size}")

    def fetch(offset: int, length: int) -> list[bytes]:
        if cancel.is_set():
            raise Cancelled("download stopped: the agent is shutting down")
        # Each part opens the file itself: a part still running after the fetch failed or
        # was cancelled must never write through a descriptor number that was closed and
        # reused meanwhile. The open fails once the staging folder is gone.
        part_fd = os.open(path, os.O_WRONLY)
        pieces, at = [], offset
        try:
            for piece in store.iter_range(key, offset, length, PIECE):
                if cancel.is_set():
                    raise Cancelled("download stopped: the agent is shutting down")
                if at + len(piece) > offset + length:
                    raise IntegrityError(f"{key} returned more than a {length}-byte range")
                os.pwrite(part_fd, piece, at)  # written now; hashed in order by the caller
                at += len(piece)
                pieces.append(piece)
        finally:
            os.close(part_fd)
        if at != offset + length:
            raise IntegrityError(f"{key} returned {at - offset} bytes for a {length}-byte range")
        return pieces

    parts = iter([(off, min(PART, size - off)) for off in range(0, size, PART)])
    gate = threading.Semaphore(THREADS)
    window: collections.deque[concurrent.futures.Future[Any]] = collections.deque()
    try:
        for p in itertools.islice(parts, WINDOW):
            window.append(_spawn(functools.partial(fetch, *p), gate))
        while window:
            for piece in window.popleft().result():
                digest.update(piece)  # hashlib lets go of the GIL while it hashes
                stats.add(len(piece))
            nxt = next(parts, None)
            if nxt is not None:
                window.append(_spawn(functools.partial(fetch, *nxt), gate))
    finally:
        for fut in window:
            fut.cancel()


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
