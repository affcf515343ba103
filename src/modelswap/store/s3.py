"""A registry in any S3-compatible store, through boto3.

Credentials, region and endpoint come from the standard AWS chain (AWS_ENDPOINT_URL included).
Create-only is `If-None-Match: *`, compare-and-swap is `If-Match`, both answered by the store
itself, so two writers on two machines can never both win.

Truth under faults (PRODUCT.md section 6): a write can land while its reply is lost. So writes
go out on a client that never retries, each carrying a fresh nonce in its user metadata; after
a timeout, a reset or a 5xx, `_write` reads the key back and decides from what is there:
our nonce means it landed, another object means someone else won, the old state means it did
not land and may be sent again. Reads retry inside boto3 and are bounded by a low-speed limit,
so a store that stalls or trickles is an error within seconds, not a hang.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

import botocore.exceptions

from modelswap.errors import (
    ObjectExists,
    OutcomeUnknown,
    PreconditionFailed,
    StoreError,
    StoreUnavailable,
)
from modelswap.store.base import CHUNK_SIZE, Blob, ObjectInfo, Store, StoreOptions
from modelswap.store.s3_multipart import SINGLE_PUT_MAX, multipart_upload, read_full
from modelswap.store.s3_outcomes import (
    BODY_ERRORS,
    CONFLICT_CODES,
    DEFINITE,
    NOT_FOUND_CODES,
    ambiguous,
    conflict,
    error_code,
    fail,
    make_client,
    new_session,
)
from modelswap.store.settle import (
    AMBIGUOUS,
    CONFLICT,
    NONCE,
    Stored,
    judge_delete,
    judge_new,
    judge_put,
    judge_replace,
    settle,
)

if TYPE_CHECKING:
    import boto3.session
    from mypy_boto3_s3 import S3Client


class S3Store(Store):
    def __init__(
        self,
        bucket: str,
        prefix: str,
        client: S3Client | None = None,
        options: StoreOptions | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.options = options or StoreOptions()
        self._clients: dict[str, S3Client] = {}
        if client is not None:
            self._clients = {"read": client, "write": client}
        self._client_lock = threading.Lock()
        self._session: boto3.session.Session | None = None  # made with the first client

    def connect(self) -> None:
        _ = self.client

    def _made(self, role: str, attempts: int) -> S3Client:
        """Made on first use: building a boto3 client costs ~0.1-0.3 s, and a URL check or a
        read-only command needs no writer."""
        client = self._clients.get(role)
        if client is None:
            with self._client_lock:
                client = self._clients.get(role)
                if client is None:
                    self._session = self._session or new_session()
                    client = make_client(self.options, attempts=attempts, session=self._session)
                    self._clients[role] = client
        return client

    @property
    def client(self) -> S3Client:
        """Reads retry inside boto3: they are idempotent."""
        return self._made("read", self.options.read_attempts)

    @property
    def writer(self) -> S3Client:
        """Never retries: an SDK retry of a create-only or If-Match write whose first reply
        was lost answers 412 for the write that already landed."""
        return self._made("write", 1)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _rel(self, full: str) -> str:
        return full[len(self.prefix) + 1 :] if self.prefix else full

    def _call(self, action: str, key: str, fn: Callable[..., Any], **kw: Any) -> Any:
        try:
            return fn(Bucket=self.bucket, Key=self._key(key), **kw)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
            code = error_code(e)
            if code in CONFLICT_CODES:
                raise conflict(kw, f"{self.url}/{key}") from e
            if code == "304":
                raise _NotModifiedError from e
            fail(self.url, self.bucket, e, key, action)

    # -- reads -----------------------------------------------------------------------------

    def _body(
        self, key: str, response: dict[str, Any], piece: int, start: int = 0
    ) -> Iterator[bytes]:
        """The body as it arrives. A connection that breaks mid-body is resumed where it
        broke (a ranged GET with If-Match on the same ETag), up to read_attempts in all: boto3
        retries a failed request but not a body that stops halfway. A body slower than the
        low-speed limit is abandoned, not resumed: the store is degraded, the caller decides."""
        etag, expected, got = response["ETag"], int(response["ContentLength"]), 0
        for attempt in range(1, self.options.read_attempts + 1):
            try:
                for data in self._pieces(key, response, piece, expected - got):
                    got += len(data)
                    yield data
                return
            except _BrokenBodyError as e:
                if attempt == self.options.read_attempts:
                    raise StoreUnavailable(
                        f"the connection broke while reading {self.url}/{key} "
                        f"({attempt} attempts): {e.cause}",
                        hint="check AWS_ENDPOINT_URL and the network; the read is retried on "
                        "the next pass",
                    ) from e.cause
            first = start + got
            response = self._call(
                "read",
                key,
                self.client.get_object,
                IfMatch=etag,
                Range=f"bytes={first}-{start + expected - 1}",
            )

    def _pieces(
        self, key: str, response: dict[str, Any], piece: int, expected: int
    ) -> Iterator[bytes]:
        """`expected` bytes of one response, under the low-speed limit of StoreOptions.

        read1 returns after one socket read, so the rate is checked however slowly bytes
        come; StreamingBody.read(n) would wait for all n bytes first (a 1 MB read of a store
        trickling 2 KB/s takes 8 minutes)."""
        body = response["Body"]
        raw: Any = getattr(body, "_raw_stream", None)
        read = raw.read1 if raw is not None and hasattr(raw, "read1") else body.read
        window = 2 * self.options.read_timeout_s
        floor = self.options.min_rate_bps * window
        started, in_window, total = time.monotonic(), 0, 0
        try:
            while total < expected:
                try:
                    data = read(min(piece, expected - total))
                except BODY_ERRORS as e:
                    raise _BrokenBodyError(e) from e
                if not data:
                    raise _BrokenBodyError(
                        OSError(f"the body ended after {total} of {expected} bytes")
                    )
                total += len(data)
                in_window += len(data)
                yield data
                now = time.monotonic()
                if now - started >= window:
                    if in_window < floor:
                        raise StoreUnavailable(
                            f"reading {self.url}/{key} is too slow: {in_window} bytes in "
                            f"{now - started:.1f} s (below {self.options.min_rate_bps} B/s); "
                            "abandoned",
                            hint="the store or the network is degraded; the read is retried "
                            "on the next pass",
                        )
                    started, in_window = now, 0
        finally:
            body.close()

    def get(
        self, key: str, *, if_none_match: str | None = None, max_bytes: int | None = None
    ) -> Blob | None:
        kw: dict[str, Any] = {}
        if if_none_match is not None:
            kw["IfNoneMatch"] = if_none_match
        try:
            r = self._call("read", key, self.client.get_object, **kw)
        except _NotModifiedError:
            return None
        size = int(r["ContentLength"])
        if max_bytes is not None and size > max_bytes:
            r["Body"].close()  # never read: closing drops the connection
            data = b""
        else:
            data = b"".join(self._body(key, r, CHUNK_SIZE))
        return Blob(data=data, etag=r["ETag"], size=size, modified=r["LastModified"])

    def head(self, key: str) -> ObjectInfo:
        r = self._call("read", key, self.client.head_object)
        return ObjectInfo(
            key=key, size=int(r["ContentLength"]), etag=r["ETag"], modified=r["LastModified"]
        )

    def objects(self, prefix: str) -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                for o in page.get("Contents", []):
                    yield ObjectInfo(
                        key=self._rel(o["Key"]),
                        size=int(o["Size"]),
                        etag=o["ETag"],
                        modified=o["LastModified"],
                    )
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
            fail(self.url, self.bucket, e, prefix, "list")

    def list_dirs(self, prefix: str) -> list[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        full = self._key(prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")
        names: list[str] = []
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full, Delimiter="/"):
                for p in page.get("CommonPrefixes", []):
                    names.append(p["Prefix"][len(full) :].rstrip("/"))
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
            fail(self.url, self.bucket, e, prefix, "list")
        return sorted(n for n in names if n)

    def read_range(self, key: str, start: int, length: int) -> bytes:
        return b"".join(self.iter_range(key, start, length))

    def iter_range(
        self, key: str, start: int, length: int, chunk_size: int = CHUNK_SIZE
    ) -> Iterator[bytes]:
        if length <= 0:
            return
        r = self._call(
            "read", key, self.client.get_object, Range=f"bytes={start}-{start + length - 1}"
        )
        yield from self._body(key, r, chunk_size, start)

    def iter_chunks(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        r = self._call("read", key, self.client.get_object)
        return self._body(key, r, chunk_size)

    # -- writes ----------------------------------------------------------------------------

    def _stored(self, key: str) -> Stored | None:
        """The object at key now (read back after an ambiguous write), or None."""
        try:
            r = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except botocore.exceptions.ClientError as e:
            if error_code(e) in NOT_FOUND_CODES:
                return None
            raise OutcomeUnknown(
                f"could not read back {self.url}/{key} after a write whose reply was lost: "
                f"{error_code(e)}"
            ) from e
        except botocore.exceptions.BotoCoreError as e:
            raise OutcomeUnknown(
                f"could not read back {self.url}/{key} after a write whose reply was lost: {e}"
            ) from e
        return Stored(etag=r["ETag"], nonce=(r.get("Metadata") or {}).get(NONCE))

    def _write(
        self,
        key: str,
        send: Callable[[str], dict[str, Any]],
        judge: Callable[[Stored | None, str], str],
        conflict: Callable[[], StoreError],
    ) -> str:
        """Send a write once per attempt; after an ambiguous outcome read back and let
        `judge(stored, nonce)` say mine / theirs / absent. Returns the new ETag ('' when
        the write leaves no object, as a delete does)."""

        def classify(e: Exception) -> str:
            if isinstance(e, botocore.exceptions.ClientError):
                code = error_code(e)
                if code in CONFLICT_CODES:
                    return CONFLICT  # on a later attempt it may answer our own earlier one
                if ambiguous(e):
                    return AMBIGUOUS  # a 5xx
                fail(self.url, self.bucket, e, key, "write")
            if isinstance(e, botocore.exceptions.BotoCoreError) and not isinstance(e, DEFINITE):
                return AMBIGUOUS
            if isinstance(e, botocore.exceptions.BotoCoreError):
                fail(self.url, self.bucket, e, key, "write")
            raise e  # ours (PreconditionFailed from a send), or a bug

        return settle(
            f"{self.url}/{key}",
            lambda nonce: str(send(nonce).get("ETag", "")),
            read_back=lambda: self._stored(key),
            judge=judge,
            conflict=conflict,
            classify=classify,
        )

    def _put(self, key: str, data: bytes, nonce: str, **kw: Any) -> dict[str, Any]:
        """One attempt, untranslated: _write reads botocore's errors itself."""
        meta = {NONCE: nonce}
        return dict(
            self.writer.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=data, Metadata=meta, **kw
            )
        )

    def put(self, key: str, data: bytes) -> str:
        return self._write(key, lambda n: self._put(key, data, n), judge_put, self._never)

    def put_new(self, key: str, data: bytes) -> str:
        return self._write(
            key,
            lambda n: self._put(key, data, n, IfNoneMatch="*"),
            judge_new,
            lambda: ObjectExists(f"{self.url}/{key} already exists"),
        )

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        def send(nonce: str) -> dict[str, Any]:
            try:
                return self._put(key, data, nonce, IfMatch=etag)
            except botocore.exceptions.ClientError as e:
                if error_code(e) in NOT_FOUND_CODES:  # AWS: If-Match on a missing key is a 404
                    raise PreconditionFailed(f"{self.url}/{key} was deleted") from e
                raise

        return self._write(
            key, send, judge_replace(etag), lambda: PreconditionFailed(f"{self.url}/{key} changed")
        )

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        kw: dict[str, Any] = {} if if_match is None else {"IfMatch": if_match}

        def send(_nonce: str) -> dict[str, Any]:
            try:
                self.writer.delete_object(Bucket=self.bucket, Key=self._key(key), **kw)
            except botocore.exceptions.ClientError as e:
                code = error_code(e)
                # A missing key is not an error: AWS answers a conditional delete of one with
                # 404, SeaweedFS with 412.
                if code in NOT_FOUND_CODES or (
                    code in CONFLICT_CODES and self._stored(key) is None
                ):
                    return {}
                raise
            return {}

        self._write(
            key,
            send,
            judge_delete(if_match),
            lambda: PreconditionFailed(f"{self.url}/{key} changed"),
        )

    def _never(self) -> StoreError:
        return StoreError("an unconditional write cannot conflict")

    def upload(
        self,
        key: str,
        src: BinaryIO,
        *,
        create_only: bool,
        on_chunk: Callable[[bytes], None] | None = None,
    ) -> ObjectInfo:
        first = read_full(src, SINGLE_PUT_MAX + 1)
        if len(first) <= SINGLE_PUT_MAX:
            if on_chunk is not None:
                on_chunk(first)
            etag = self.put_new(key, first) if create_only else self.put(key, first)
            return ObjectInfo(key=key, size=len(first), etag=etag, modified=_now())
        return multipart_upload(self, key, first, src, create_only=create_only, on_chunk=on_chunk)


def _now() -> Any:
    from datetime import UTC, datetime  # noqa: PLC0415 - only for the returned ObjectInfo

    return datetime.now(UTC)


class _NotModifiedError(Exception):
    pass


class _BrokenBodyError(Exception):
    """A body that stopped before its Content-Length: resumable."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause
