"""Truth under faults for every network backend (PRODUCT.md section 6), one rule for all.

A write goes out once per attempt, with a fresh nonce in the object's user metadata. When the
outcome is ambiguous (a timeout, a reset after the body was sent, a 5xx), the key is read
back: our nonce means it landed, another object means someone else won, the old state means it
did not land and may be sent again. The last attempt has no later write to fence it off, so
if it goes unanswered too the outcome is OutcomeUnknown. A paced body read fails when bytes
arrive slower than StoreOptions.min_rate_bps (curl's low-speed limit).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from modelswap.errors import OutcomeUnknown, StoreError, StoreUnavailable, UsageError
from modelswap.store.base import CHUNK_SIZE, StoreOptions

NONCE = "modelswap-write"  # user-metadata field: which attempt wrote this object
WRITE_ATTEMPTS = 3
# A read-back's verdict on one write attempt.
MINE, THEIRS, ABSENT = "mine", "theirs", "absent"
# What a backend says of a failed attempt: refused by a precondition, or maybe applied.
CONFLICT, AMBIGUOUS = "conflict", "ambiguous"


@dataclass(frozen=True)
class Stored:
    etag: str
    nonce: str | None


def judge_new(stored: Stored | None, nonce: str) -> str:
    """Create-only: absent means not landed; our nonce mine; anything else someone else's."""
    if stored is None:
        return ABSENT
    return MINE if stored.nonce == nonce else THEIRS


def judge_replace(etag: str) -> Callable[[Stored | None, str], str]:
    """Compare-and-swap from `etag`: still that object means not landed."""

    def judge(stored: Stored | None, nonce: str) -> str:
        if stored is None:
            return THEIRS  # deleted meanwhile
        if stored.nonce == nonce:
            return MINE
        return ABSENT if stored.etag == etag else THEIRS

    return judge


def judge_put(stored: Stored | None, nonce: str) -> str:
    return MINE if stored is not None and stored.nonce == nonce else ABSENT


def judge_delete(if_match: str | None) -> Callable[[Stored | None, str], str]:
    def judge(stored: Stored | None, _nonce: str) -> str:
        if stored is None:
            return MINE  # gone, which is what a delete asks for
        return ABSENT if if_match is None or stored.etag == if_match else THEIRS

    return judge


def settle(
    where: str,
    send: Callable[[str], str],
    *,
    read_back: Callable[[], Stored | None],
    judge: Callable[[Stored | None, str], str],
    conflict: Callable[[], StoreError],
    classify: Callable[[Exception], str],
) -> str:
    """Send a write (send(nonce) returns the new ETag) until its outcome is known.

    classify(e) says CONFLICT or AMBIGUOUS for a failure, or raises the backend's translated
    error for a definite one (nothing was applied). A conflict on the first attempt is the
    store refusing; on a later one it may answer our own earlier attempt, so it is read back."""
    nonce = uuid.uuid4().hex
    last: Exception | None = None
    for attempt in range(WRITE_ATTEMPTS):
        try:
            return send(nonce)
        except Exception as e:
            try:
                kind = classify(e)
            except StoreError as definite:
                if last is None:
                    raise
                # This attempt certainly failed, but an earlier one may still land.
                raise OutcomeUnknown(
                    f"could not write {where}: an earlier attempt went unanswered and may "
                    f"still land, and the next failed ({definite})"
                ) from definite
            if kind == CONFLICT and attempt == 0:
                raise conflict() from e
            last = e
        try:
            stored = read_back()
        except OutcomeUnknown:
            raise
        except StoreError as e:
            raise OutcomeUnknown(
                f"could not read back {where} after a write whose reply was lost: {e}"
            ) from e
        verdict = judge(stored, nonce)
        if verdict == MINE:
            return stored.etag if stored is not None else ""
        if verdict == THEIRS:
            raise conflict() from last
    raise OutcomeUnknown(
        f"could not write {where}: {WRITE_ATTEMPTS} attempts went unanswered and the last may "
        f"still land (last error: {last})",
    ) from last


def paced(
    chunks: Iterator[bytes], options: StoreOptions, where: str, *, close: Callable[[], None]
) -> Iterator[bytes]:
    """Pass chunks through, failing when fewer than min_rate_bps arrive over a window of
    2 x read_timeout_s. The chunks should be one socket read each, so a trickle is caught
    however slowly it comes; `close` drops the connection on any exit."""
    window = 2 * options.read_timeout_s
    floor = options.min_rate_bps * window
    started, in_window = time.monotonic(), 0
    try:
        for data in chunks:
            in_window += len(data)
            yield data
            now = time.monotonic()
            if now - started >= window:
                # Against the time it really took: one chunk that arrived after a minute fails
                # even though it holds more than a window's worth of bytes.
                if in_window < max(floor, options.min_rate_bps * (now - started)):
                    raise StoreUnavailable(
                        f"reading {where} is too slow: {in_window} bytes in "
                        f"{now - started:.1f} s (below {options.min_rate_bps} B/s); abandoned",
                        hint="the store or the network is degraded; the read is retried on "
                        "the next pass",
                    )
                started, in_window = now, 0
    finally:
        close()


class _Attempt:
    """One attempt's read of the body: exactly `size` bytes, hashed as the SDK reads them."""

    def __init__(self, src: BinaryIO, size: int, sink: Callable[[bytes], None] | None) -> None:
        self.src, self.left, self.sink = src, size, sink
        self.count = 0
        self.digest = hashlib.sha256()

    def read(self, n: int | None = -1) -> bytes:
        want = self.left if n is None or n < 0 else min(n, self.left)
        data = self.src.read(want)
        if len(data) < want and not data:
            raise UsageError(
                f"the file being uploaded ended after {self.count} of {self.count + self.left} "
                "bytes: it changed while it was read",
                hint="publish from files nothing is still writing to",
            )
        self.count += len(data)
        self.left -= len(data)
        self.digest.update(data)
        if self.sink is not None:
            self.sink(data)
        return data

    def tell(self) -> int:
        return self.count

    def seekable(self) -> bool:
        return False  # read once, in order: what is hashed is what is sent

    def readable(self) -> bool:
        return True


class UploadBody:
    """An upload's bytes for settle(), which may send them more than once. Every attempt reads
    from src's start; the first tells on_chunk every chunk the SDK sends (callers hash it for
    metadata.json) and every later one must send the same bytes, or the upload fails: what
    metadata.json says is what was stored. A source that cannot seek is spooled first."""

    def __init__(
        self, src: BinaryIO, on_chunk: Callable[[bytes], None] | None, stack: contextlib.ExitStack
    ) -> None:
        if not src.seekable():
            spool = stack.enter_context(tempfile.TemporaryFile())  # noqa: SIM115 - it is one
            shutil.copyfileobj(src, spool, CHUNK_SIZE)
            spool.seek(0)
            src = spool
        self.src, self.on_chunk = src, on_chunk
        self.start = src.tell()
        self.size = src.seek(0, os.SEEK_END) - self.start
        src.seek(self.start)
        self._first: bytes | None = None

    @classmethod
    def of(cls, data: bytes) -> UploadBody:
        """A small object's bytes, already in memory."""
        return cls(io.BytesIO(data), None, contextlib.ExitStack())

    def attempt(self) -> _Attempt:
        self.src.seek(self.start)
        return _Attempt(self.src, self.size, self.on_chunk if self._first is None else None)

    def sent(self, attempt: _Attempt) -> None:
        """After a send: the attempt read every byte, the same bytes as the first."""
        digest = attempt.digest.digest()
        if attempt.left or (self._first is not None and digest != self._first):
            raise UsageError(
                "the file being uploaded changed while it was sent",
                hint="publish from files nothing is still writing to",
            )
        self._first = self._first or digest
