"""A registry in a local folder: the default, and the reference the S3 backend is tested against.

Create-only writes are a temporary file hard-linked into place (link fails if the name exists,
atomically); compare-and-swap holds an flock on a per-key lock file while it compares and
renames. The ETag is inode, mtime and size: every write makes a new inode, so it changes on
every write without hashing large files.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from modelswap.errors import ObjectExists, ObjectNotFound, PreconditionFailed, StoreUnavailable
from modelswap.store.base import CHUNK_SIZE, Blob, ObjectInfo, Store

TMP_MARK = ".modelswap-tmp-"
INTERNAL_DIR = ".modelswap"


def _etag(st: os.stat_result) -> str:
    return f'"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"'


def _info(key: str, st: os.stat_result) -> ObjectInfo:
    modified = datetime.fromtimestamp(st.st_mtime, tz=UTC)
    return ObjectInfo(key=key, size=st.st_size, etag=_etag(st), modified=modified)


class LocalStore(Store):
    parallel_reads = 1  # a read is a few microseconds of syscalls: threads only contend

    def __init__(self, root: Path) -> None:
        self.root = root.absolute()
        self.url = f"file://{self.root}"

    # -- paths -----------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        return self.root / key

    def _check_root(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise StoreUnavailable(
                f"registry {self.root} is not a folder",
                hint="point --registry at a folder (it is created on first publish)",
            )

    @contextlib.contextmanager
    def _key_lock(self, key: str) -> Iterator[None]:
        locks = self.root / INTERNAL_DIR / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256(key.encode()).hexdigest()[:32]
        fd = os.open(locks / name, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _stat(self, key: str) -> os.stat_result:
        try:
            st = os.stat(self._path(key))
        except FileNotFoundError as e:
            raise ObjectNotFound(f"no object at {self.url}/{key}") from e
        except NotADirectoryError as e:
            raise ObjectNotFound(f"no object at {self.url}/{key}") from e
        except OSError as e:
            raise StoreUnavailable(f"cannot read {self.url}/{key}: {e.strerror}") from e
        if not os.path.isfile(self._path(key)):
            raise ObjectNotFound(f"no object at {self.url}/{key} (it is a folder)")
        return st

    # -- writes ----------------------------------------------------------------------------

    def _write_tmp(
        self, key: str, src: BinaryIO | bytes, on_chunk: Callable[[bytes], None] | None = None
    ) -> Path:
        self._check_root()
        path = self._path(key)
        tmp = path.with_name(f"{path.name}{TMP_MARK}{uuid.uuid4().hex}")
        for _ in range(3):  # a concurrent delete may remove the empty parent between calls
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                break
            except FileNotFoundError:
                continue
            except OSError as e:
                raise StoreUnavailable(f"cannot write {self.url}/{key}: {e.strerror}") from e
        else:
            raise StoreUnavailable(f"cannot write {self.url}/{key}: folder keeps disappearing")
        try:
            with os.fdopen(fd, "wb") as f:
                if isinstance(src, bytes):
                    f.write(src)
                else:
                    while chunk := src.read(CHUNK_SIZE):
                        if on_chunk is not None:
                            on_chunk(chunk)
                        f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
        except BaseException as e:
            tmp.unlink(missing_ok=True)
            if isinstance(e, OSError):
                raise StoreUnavailable(f"cannot write {self.url}/{key}: {e.strerror}") from e
            raise
        return tmp

    def _link_new(self, key: str, tmp: Path) -> os.stat_result:
        try:
            os.link(tmp, self._path(key))
        except FileExistsError as e:
            raise ObjectExists(f"{self.url}/{key} already exists") from e
        except OSError as e:
            raise StoreUnavailable(f"cannot write {self.url}/{key}: {e.strerror}") from e
        finally:
            tmp.unlink(missing_ok=True)
        return os.stat(self._path(key))

    def _replace(self, key: str, tmp: Path) -> os.stat_result:
        try:
            os.replace(tmp, self._path(key))
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise StoreUnavailable(f"cannot write {self.url}/{key}: {e.strerror}") from e
        return os.stat(self._path(key))

    def put(self, key: str, data: bytes) -> str:
        return _etag(self._replace(key, self._write_tmp(key, data)))

    def put_new(self, key: str, data: bytes) -> str:
        return _etag(self._link_new(key, self._write_tmp(key, data)))

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        tmp = self._write_tmp(key, data)
        try:
            with self._key_lock(key):
                try:
                    current = _etag(self._stat(key))
                except ObjectNotFound:
                    current = None
                if current != etag:
                    raise PreconditionFailed(f"{self.url}/{key} changed (ETag {current})")
                return _etag(self._replace(key, tmp))
        finally:
            tmp.unlink(missing_ok=True)

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        with self._key_lock(key) if if_match is not None else contextlib.nullcontext():
            if if_match is not None:
                try:
                    current = _etag(self._stat(key))
                except ObjectNotFound:
                    return
                if current != if_match:
                    raise PreconditionFailed(f"{self.url}/{key} changed (ETag {current})")
            try:
                self._path(key).unlink()
            except FileNotFoundError:
                return
            except OSError as e:
                raise StoreUnavailable(f"cannot delete {self.url}/{key}: {e.strerror}") from e
        self._prune_empty_parents(self._path(key).parent)

    def _prune_empty_parents(self, folder: Path) -> None:
        while folder != self.root and self.root in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent

    def upload(
        self,
        key: str,
        src: BinaryIO,
        *,
        create_only: bool,
        on_chunk: Callable[[bytes], None] | None = None,
    ) -> ObjectInfo:
        tmp = self._write_tmp(key, src, on_chunk)
        st = self._link_new(key, tmp) if create_only else self._replace(key, tmp)
        return _info(key, st)

    # -- reads -----------------------------------------------------------------------------

    def get(
        self, key: str, *, if_none_match: str | None = None, max_bytes: int | None = None
    ) -> Blob | None:
        path = os.path.join(self.root, key)  # a str, not a Path: 10,000 event reads add up
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                if if_none_match is not None and _etag(st) == if_none_match:
                    return None
                too_big = max_bytes is not None and st.st_size > max_bytes
                data = b"" if too_big else f.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as e:
            raise ObjectNotFound(f"no object at {self.url}/{key}") from e
        except OSError as e:
            raise StoreUnavailable(f"cannot read {self.url}/{key}: {e.strerror}") from e
        info = _info(key, st)
        return Blob(data=data, etag=info.etag, size=info.size, modified=info.modified)

    def head(self, key: str) -> ObjectInfo:
        return _info(key, self._stat(key))

    def objects(self, prefix: str) -> Iterator[ObjectInfo]:
        """In key order, lazily: each folder's entries are sorted as their keys sort (a folder
        as its name and "/"), so `any(objects(p))` stops at the first object instead of
        walking and stat-ing a model's 10,000 events."""
        return self.objects_except(prefix, ())

    def objects_except(self, prefix: str, skip: tuple[str, ...]) -> Iterator[ObjectInfo]:
        self._check_root()
        base, _, _ = prefix.rpartition("/")
        start = self._path(base) if base else self.root
        return self._walk(start, f"{base}/" if base else "", prefix, skip)

    def files(self, prefix: str) -> list[ObjectInfo]:
        self._check_root()
        return list(self._walk(self._path(prefix), prefix, prefix, (), deep=False))

    def _walk(
        self,
        folder: Path | str,
        rel: str,
        prefix: str,
        skip: tuple[str, ...],
        deep: bool = True,
    ) -> Iterator[ObjectInfo]:
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as err:  # unreadable (permissions): said, never skipped in silence
            raise StoreUnavailable(f"cannot list {self.url}/{rel}: {err.strerror}") from err
        named = []
        for entry in entries:
            is_dir = entry.is_dir(follow_symlinks=False)
            if (is_dir and not rel and entry.name == INTERNAL_DIR) or (
                not is_dir and entry.is_dir()
            ):
                continue  # our own folder, and a link to a folder (never walked into)
            named.append((f"{entry.name}/" if is_dir else entry.name, entry))
        for name, e in sorted(named, key=lambda t: t[0]):
            key = rel + name
            if not (key.startswith(prefix) or prefix.startswith(key)):
                continue  # neither under the prefix nor a folder that leads to it
            if name.endswith("/"):
                if deep and not key.startswith(skip):
                    yield from self._walk(e.path, key, prefix, skip)
            elif TMP_MARK not in name and key.startswith(prefix):
                try:
                    st = e.stat(follow_symlinks=True)
                except FileNotFoundError:
                    continue
                yield _info(key, st)

    def list_dirs(self, prefix: str) -> list[str]:
        self._check_root()
        folder = self._path(prefix) if prefix else self.root
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as e:
            raise StoreUnavailable(f"cannot list {self.url}/{prefix}: {e.strerror}") from e
        return sorted(e.name for e in entries if e.is_dir() and e.name != INTERNAL_DIR)

    def read_range(self, key: str, start: int, length: int) -> bytes:
        try:
            fd = os.open(self._path(key), os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as e:
            raise ObjectNotFound(f"no object at {self.url}/{key}") from e
        except OSError as e:
            raise StoreUnavailable(f"cannot read {self.url}/{key}: {e.strerror}") from e
        try:
            return os.pread(fd, length, start)
        finally:
            os.close(fd)

    def iter_chunks(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        try:
            f = open(self._path(key), "rb")  # noqa: SIM115 - closed by the generator below
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as e:
            raise ObjectNotFound(f"no object at {self.url}/{key}") from e
        except OSError as e:
            raise StoreUnavailable(f"cannot read {self.url}/{key}: {e.strerror}") from e
        return _chunks(f, chunk_size)


def _chunks(f: BinaryIO, chunk_size: int) -> Iterator[bytes]:
    with f:
        while chunk := f.read(chunk_size):
            yield chunk
