"""The storage seam: the few operations the registry needs, the same on every backend.

Keys are '/'-separated and relative to the registry root. Every backend raises only the
StoreError family from modelswap.errors, so the registry never sees boto3 or OSError.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO

from modelswap.errors import StoreError

CHUNK_SIZE = 1 << 20


@dataclass(frozen=True)
class StoreOptions:
    """How long a network store may take. A request that sends nothing for read_timeout_s
    fails; so does a body arriving slower than min_rate_bps over a window of 2 x
    read_timeout_s (curl's low-speed limit): a trickling store cannot hold a reader forever,
    whatever the object's size. Reads are tried read_attempts times; writes go out once and
    are settled by reading back (see the S3 backend)."""

    connect_timeout_s: float = 3.0
    read_timeout_s: float = 5.0
    min_rate_bps: int = 64 << 10
    read_attempts: int = 2

    def validate(self) -> list[str]:
        problems = []
        if self.read_timeout_s <= 0:
            problems.append("--store-timeout must be greater than 0 seconds")
        if self.min_rate_bps < 1:
            problems.append("--min-rate must be at least 1 byte per second")
        return problems


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    modified: datetime


@dataclass(frozen=True)
class Blob:
    """A small object read whole. `data` is empty when the object is larger than max_bytes."""

    data: bytes
    etag: str
    size: int
    modified: datetime

    @property
    def truncated(self) -> bool:
        return len(self.data) != self.size


class Store(abc.ABC):
    """One registry root on one backend."""

    url: str
    # How many small reads are worth having in flight at once. A network store waits on
    # round trips, so 16 overlap; a local folder's reads are all CPU under one GIL, where
    # 16 threads read 10,000 events 5x slower than one (see LocalStore).
    parallel_reads = 16

    @abc.abstractmethod
    def get(
        self, key: str, *, if_none_match: str | None = None, max_bytes: int | None = None
    ) -> Blob | None:
        """Read a small object. None means unchanged (its ETag equals if_none_match).

        Raises ObjectNotFound. With max_bytes, a larger object comes back with empty data and
        its real size, and its body is never transferred.
        """

    def connect(self) -> None:
        """Do the one-time set-up (an S3 client) now rather than in the first request: a
        daemon calls this at start-up so its first sync pass costs what every pass costs."""
        return  # nothing to set up for a local folder

    def read(self, key: str, *, max_bytes: int | None = None) -> Blob:
        """get() without a condition: always a Blob (see get for max_bytes)."""
        blob = self.get(key, max_bytes=max_bytes)
        if blob is None:
            raise StoreError(f"{self.url}/{key}: the store answered 304 to an unconditional read")
        return blob

    @abc.abstractmethod
    def head(self, key: str) -> ObjectInfo:
        """Size, ETag and modification time; raises ObjectNotFound."""

    @abc.abstractmethod
    def put(self, key: str, data: bytes) -> str:
        """Write unconditionally; returns the new ETag."""

    @abc.abstractmethod
    def put_new(self, key: str, data: bytes) -> str:
        """Create-only write; raises ObjectExists if the key is taken."""

    @abc.abstractmethod
    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        """Compare-and-swap; raises PreconditionFailed unless the stored ETag is `etag`."""

    @abc.abstractmethod
    def delete(self, key: str, *, if_match: str | None = None) -> None:
        """Delete; a missing key is not an error. With if_match, raises PreconditionFailed
        when the stored object is another one."""

    @abc.abstractmethod
    def objects(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with prefix, in key order."""

    def objects_except(self, prefix: str, skip: tuple[str, ...]) -> Iterator[ObjectInfo]:
        """objects(prefix) but those under the folders `skip` (key prefixes ending in '/').
        A listing is a listing on a network store; a local folder never walks into them."""
        return (o for o in self.objects(prefix) if not o.key.startswith(skip))

    def files(self, prefix: str) -> list[ObjectInfo]:
        """The objects right under prefix (which ends with '/'), none in its folders."""
        return [o for o in self.objects(prefix) if "/" not in o.key[len(prefix) :]]

    @abc.abstractmethod
    def list_dirs(self, prefix: str) -> list[str]:
        """The names of the immediate 'folders' under prefix (which ends with '/'), sorted."""

    @abc.abstractmethod
    def iter_chunks(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """Stream an object's bytes; raises ObjectNotFound before the first chunk."""

    @abc.abstractmethod
    def read_range(self, key: str, start: int, length: int) -> bytes:
        """Bytes [start, start+length) of an object; raises ObjectNotFound."""

    def iter_range(
        self, key: str, start: int, length: int, chunk_size: int = CHUNK_SIZE
    ) -> Iterator[bytes]:
        """Bytes [start, start+length) as they arrive, so a caller can write each piece
        before the whole range is in; stores whose client reads a range in one call yield
        it whole."""
        yield self.read_range(key, start, length)

    @abc.abstractmethod
    def upload(
        self,
        key: str,
        src: BinaryIO,
        *,
        create_only: bool,
        on_chunk: Callable[[bytes], None] | None = None,
    ) -> ObjectInfo:
        """Stream src into key (multipart where the backend has it), calling on_chunk with
        every chunk read so callers can hash while uploading. The object appears whole or not
        at all. create_only raises ObjectExists if the key is taken."""
