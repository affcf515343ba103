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

import concurrent.futures
import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn

import boto3
import botocore.exceptions
import urllib3.exceptions
from botocore.config import Config

from modelswap.errors import (
    ObjectExists,
    ObjectNotFound,
    OutcomeUnknown,
    PreconditionFailed,
    StoreError,
    StoreUnavailable,
)
from modelswap.store.base import CHUNK_SIZE, Blob, ObjectInfo, Store, StoreOptions

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

SINGLE_PUT_MAX = 16 << 20
PART_SIZE = 16 << 20
MAX_PARTS = 10_000
UPLOAD_THREADS = 8
NONCE = "modelswap-write"  # user-metadata field: which attempt wrote this object
WRITE_ATTEMPTS = 3

_CREDENTIAL_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "Forbidden",
    "403",
}
_CONFLICT_CODES = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
_NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound"}
_DEFINITE = (  # failures after which the store has certainly not applied the write
    botocore.exceptions.EndpointConnectionError,  # never connected: nothing was sent
    botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.NoCredentialsError,
    botocore.exceptions.PartialCredentialsError,
    botocore.exceptions.ParamValidationError,
)
_BODY_ERRORS = (
    botocore.exceptions.BotoCoreError,
    urllib3.exceptions.HTTPError,
    OSError,
)


def make_client(options: StoreOptions, *, attempts: int, max_pool: int = 32) -> S3Client:
    session = boto3.session.Session()
    config = Config(
        connect_timeout=options.connect_timeout_s,
        read_timeout=options.read_timeout_s,
        retries={"total_max_attempts": attempts, "mode": "standard"},
        max_pool_connections=max_pool,
        tcp_keepalive=True,
    )
    region = session.region_name or "us-east-1"
    try:
        return session.client("s3", region_name=region, config=config)
    except ValueError as e:  # botocore's words for a malformed AWS_ENDPOINT_URL
        raise StoreUnavailable(
            f"the S3 endpoint is not a valid URL: {e}",
            hint="AWS_ENDPOINT_URL must include the scheme, e.g. http://127.0.0.1:8333",
        ) from e


@dataclass(frozen=True)
class _Stored:
    etag: str
    nonce: str | None


# A read-back's verdict on one write attempt.
_MINE, _THEIRS, _ABSENT = "mine", "theirs", "absent"


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
                    client = make_client(self.options, attempts=attempts)
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

    def _fail(self, e: Exception, key: str, action: str) -> NoReturn:
        where = f"{self.url}/{key}"
        if isinstance(e, botocore.exceptions.ClientError):
            err = e.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in _NOT_FOUND_CODES:
                raise ObjectNotFound(f"no object at {where}") from e
            if code == "NoSuchBucket":
                raise StoreUnavailable(
                    f"bucket {self.bucket!r} does not exist at the S3 endpoint",
                    hint=f"create it (`aws s3 mb s3://{self.bucket}`) or fix --registry",
                ) from e
            if code in _CREDENTIAL_CODES:
                raise StoreUnavailable(
                    f"the S3 store refused to {action} {where}: {code}",
                    hint="check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_PROFILE and "
                    "the bucket policy",
                ) from e
            raise StoreUnavailable(
                f"the S3 store failed to {action} {where}: {code or status} "
                f"{err.get('Message', '')}".rstrip()
            ) from e
        if isinstance(e, botocore.exceptions.NoCredentialsError):
            raise StoreUnavailable(
                "no AWS credentials found for the S3 registry",
                hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE",
            ) from e
        if isinstance(e, botocore.exceptions.BotoCoreError):
            raise StoreUnavailable(
                f"cannot reach the S3 registry {self.url}: {e}",
                hint="check AWS_ENDPOINT_URL and the network, then retry",
            ) from e
        if isinstance(e, _BODY_ERRORS):
            raise StoreUnavailable(
                f"the connection broke while reading {where}: {e}",
                hint="check AWS_ENDPOINT_URL and the network, then retry",
            ) from e
        raise e

    def _call(self, action: str, key: str, fn: Callable[..., Any], **kw: Any) -> Any:
        try:
            return fn(Bucket=self.bucket, Key=self._key(key), **kw)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
            code = _code(e)
            if code in _CONFLICT_CODES:
                raise _conflict(kw, f"{self.url}/{key}") from e
            if code == "304":
                raise _NotModifiedError from e
            self._fail(e, key, action)

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
                except _BODY_ERRORS as e:
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
            self._fail(e, prefix, "list")

    def list_dirs(self, prefix: str) -> list[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        full = self._key(prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")
        names: list[str] = []
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full, Delimiter="/"):
                for p in page.get("CommonPrefixes", []):
                    names.append(p["Prefix"][len(full) :].rstrip("/"))
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
            self._fail(e, prefix, "list")
        return sorted(n for n in names if n)

    def read_range(self, key: str, start: int, length: int) -> bytes:
        if length <= 0:
            return b""
        r = self._call(
            "read", key, self.client.get_object, Range=f"bytes={start}-{start + length - 1}"
        )
        return b"".join(self._body(key, r, CHUNK_SIZE, start))

    def iter_chunks(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        r = self._call("read", key, self.client.get_object)
        return self._body(key, r, chunk_size)

    # -- writes ----------------------------------------------------------------------------

    def _stored(self, key: str) -> _Stored | None:
        """The object at key now (read back after an ambiguous write), or None."""
        try:
            r = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except botocore.exceptions.ClientError as e:
            if _code(e) in _NOT_FOUND_CODES:
                return None
            raise OutcomeUnknown(
                f"could not read back {self.url}/{key} after a write whose reply was lost: "
                f"{_code(e)}"
            ) from e
        except botocore.exceptions.BotoCoreError as e:
            raise OutcomeUnknown(
                f"could not read back {self.url}/{key} after a write whose reply was lost: {e}"
            ) from e
        return _Stored(etag=r["ETag"], nonce=(r.get("Metadata") or {}).get(NONCE))

    def _write(
        self,
        key: str,
        send: Callable[[str], dict[str, Any]],
        judge: Callable[[_Stored | None, str], str],
        conflict: Callable[[], StoreError],
    ) -> str:
        """Send a write once per attempt; after an ambiguous outcome read back and let
        `judge(stored, nonce)` say mine / theirs / absent. Returns the new ETag ('' when
        the write leaves no object, as a delete does)."""
        nonce = uuid.uuid4().hex
        last: Exception | None = None
        for attempt in range(WRITE_ATTEMPTS):
            try:
                return str(send(nonce).get("ETag", ""))
            except botocore.exceptions.ClientError as e:
                code = _code(e)
                if code in _CONFLICT_CODES and attempt == 0:
                    raise conflict() from e
                if code not in _CONFLICT_CODES and not _ambiguous(e):
                    self._fail(e, key, "write")
                last = e  # a 5xx, or a 412 that may answer our own earlier attempt
            except botocore.exceptions.BotoCoreError as e:
                if isinstance(e, _DEFINITE):
                    self._fail(e, key, "write")
                last = e
            stored = self._stored(key)
            verdict = judge(stored, nonce)
            if verdict == _MINE:
                return stored.etag if stored is not None else ""
            if verdict == _THEIRS:
                raise conflict() from last
        # The last attempt has no later conditional write to fence it off: it may still land.
        raise OutcomeUnknown(
            f"could not write {self.url}/{key}: {WRITE_ATTEMPTS} attempts went unanswered "
            f"and the last may still land (last error: {last})",
        ) from last

    def _put(self, key: str, data: bytes, nonce: str, **kw: Any) -> dict[str, Any]:
        """One attempt, untranslated: _write reads botocore's errors itself."""
        meta = {NONCE: nonce}
        return dict(
            self.writer.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=data, Metadata=meta, **kw
            )
        )

    def put(self, key: str, data: bytes) -> str:
        def judge(stored: _Stored | None, nonce: str) -> str:
            return _MINE if stored is not None and stored.nonce == nonce else _ABSENT

        return self._write(key, lambda n: self._put(key, data, n), judge, self._never)

    def put_new(self, key: str, data: bytes) -> str:
        return self._write(
            key,
            lambda n: self._put(key, data, n, IfNoneMatch="*"),
            _judge_new,
            lambda: ObjectExists(f"{self.url}/{key} already exists"),
        )

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        def judge(stored: _Stored | None, nonce: str) -> str:
            if stored is None:
                return _THEIRS  # deleted meanwhile
            if stored.nonce == nonce:
                return _MINE
            return _ABSENT if stored.etag == etag else _THEIRS

        def send(nonce: str) -> dict[str, Any]:
            try:
                return self._put(key, data, nonce, IfMatch=etag)
            except botocore.exceptions.ClientError as e:
                if _code(e) in _NOT_FOUND_CODES:  # AWS: If-Match on a missing key is a 404
                    raise PreconditionFailed(f"{self.url}/{key} was deleted") from e
                raise

        return self._write(
            key, send, judge, lambda: PreconditionFailed(f"{self.url}/{key} changed")
        )

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        kw: dict[str, Any] = {} if if_match is None else {"IfMatch": if_match}

        def send(_nonce: str) -> dict[str, Any]:
            try:
                self.writer.delete_object(Bucket=self.bucket, Key=self._key(key), **kw)
            except botocore.exceptions.ClientError as e:
                code = _code(e)
                # A missing key is not an error: AWS answers a conditional delete of one with
                # 404, SeaweedFS with 412.
                if code in _NOT_FOUND_CODES or (
                    code in _CONFLICT_CODES and self._stored(key) is None
                ):
                    return {}
                raise
            return {}

        def judge(stored: _Stored | None, _nonce: str) -> str:
            if stored is None:
                return _MINE  # gone, which is what a delete asks for
            return _ABSENT if if_match is None or stored.etag == if_match else _THEIRS

        self._write(key, send, judge, lambda: PreconditionFailed(f"{self.url}/{key} changed"))

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
        first = _read_full(src, SINGLE_PUT_MAX + 1)
        if len(first) <= SINGLE_PUT_MAX:
            if on_chunk is not None:
                on_chunk(first)
            etag = self.put_new(key, first) if create_only else self.put(key, first)
            return ObjectInfo(key=key, size=len(first), etag=etag, modified=_now())
        return self._multipart(key, first, src, create_only, on_chunk)

    def _multipart(
        self,
        key: str,
        first: bytes,
        src: BinaryIO,
        create_only: bool,
        on_chunk: Callable[[bytes], None] | None,
    ) -> ObjectInfo:
        full = self._key(key)
        nonce = uuid.uuid4().hex  # set at create, so the completed object carries it
        # Creating an upload has no visible effect, so the retrying client is safe here.
        upload_id = self._call(
            "write", key, self.client.create_multipart_upload, Metadata={NONCE: nonce}
        )["UploadId"]
        parts: dict[int, str] = {}
        try:
            with concurrent.futures.ThreadPoolExecutor(UPLOAD_THREADS) as pool:
                pending: dict[concurrent.futures.Future[Any], int] = {}
                number, buffered = 0, first
                while True:
                    chunk = buffered + _read_full(src, PART_SIZE - len(buffered))
                    buffered = b""
                    if not chunk:
                        break
                    number += 1
                    if number > MAX_PARTS:
                        raise StoreError(f"{key} is larger than {MAX_PARTS} parts of {PART_SIZE}")
                    if on_chunk is not None:
                        on_chunk(chunk)
                    # A part is idempotent (same number, same bytes), so boto3 may retry it.
                    fut = pool.submit(
                        self.client.upload_part,
                        Bucket=self.bucket,
                        Key=full,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=chunk,
                    )
                    pending[fut] = number
                    if len(pending) >= UPLOAD_THREADS:  # bounded memory: at most N parts in flight
                        _collect(pending, parts, wait_all=False)
                _collect(pending, parts, wait_all=True)
            etag = self._complete(key, upload_id, parts, nonce, create_only)
        except BaseException as e:
            # An upload never completed costs storage only; a bucket lifecycle rule ends it.
            with contextlib.suppress(
                botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError
            ):
                self.writer.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)
            if isinstance(e, botocore.exceptions.ClientError | botocore.exceptions.BotoCoreError):
                self._fail(e, key, "write")
            raise
        info = self.head(key)
        return ObjectInfo(key=key, size=info.size, etag=etag or info.etag, modified=info.modified)

    def _complete(
        self, key: str, upload_id: str, parts: dict[int, str], nonce: str, create_only: bool
    ) -> str:
        kw: dict[str, Any] = {"IfNoneMatch": "*"} if create_only else {}
        listing: Any = {"Parts": [{"ETag": parts[n], "PartNumber": n} for n in sorted(parts)]}

        def send(_attempt_nonce: str) -> dict[str, Any]:
            try:
                return dict(
                    self.writer.complete_multipart_upload(
                        Bucket=self.bucket,
                        Key=self._key(key),
                        UploadId=upload_id,
                        MultipartUpload=listing,
                        **kw,
                    )
                )
            except botocore.exceptions.ClientError as e:
                if _code(e) != "NoSuchUpload":
                    raise
                return {}  # completed by an attempt whose reply was lost: settled below

        def judge(stored: _Stored | None, _attempt_nonce: str) -> str:
            if stored is not None and stored.nonce == nonce:
                return _MINE
            return _THEIRS if stored is not None and create_only else _ABSENT

        etag = self._write(
            key, send, judge, lambda: ObjectExists(f"{self.url}/{key} already exists")
        )
        if not etag:  # NoSuchUpload: settle by reading back
            stored = self._stored(key)
            if stored is None or stored.nonce != nonce:
                raise StoreUnavailable(f"the multipart upload of {self.url}/{key} was lost")
            etag = stored.etag
        return etag


def _judge_new(stored: _Stored | None, nonce: str) -> str:
    if stored is None:
        return _ABSENT
    return _MINE if stored.nonce == nonce else _THEIRS


def _ambiguous(e: botocore.exceptions.ClientError) -> bool:
    """A reply that does not say the write was refused: a 5xx, or S3's own timeouts."""
    status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return status >= 500 or status == 0 or _code(e) in ("RequestTimeout", "SlowDown")


def _now() -> Any:
    from datetime import UTC, datetime  # noqa: PLC0415 - only for the returned ObjectInfo

    return datetime.now(UTC)


def _collect(
    pending: dict[concurrent.futures.Future[Any], int], parts: dict[int, str], *, wait_all: bool
) -> None:
    how = concurrent.futures.ALL_COMPLETED if wait_all else concurrent.futures.FIRST_COMPLETED
    done, _ = concurrent.futures.wait(pending, return_when=how)
    for fut in done:
        parts[pending.pop(fut)] = fut.result()["ETag"]


def _read_full(src: BinaryIO, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = src.read(n - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def _code(e: Exception) -> str:
    if isinstance(e, botocore.exceptions.ClientError):
        return str(e.response.get("Error", {}).get("Code", ""))
    return ""


def _conflict(kw: dict[str, Any], where: str) -> StoreError:
    if kw.get("IfNoneMatch") == "*":
        return ObjectExists(f"{where} already exists")
    return PreconditionFailed(f"{where} changed since it was read")


class _NotModifiedError(Exception):
    pass


class _BrokenBodyError(Exception):
    """A body that stopped before its Content-Length: resumable."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause
