"""A registry in any S3-compatible store, through boto3.

Credentials, region and endpoint come from the standard AWS chain (AWS_ENDPOINT_URL included).
Create-only is `If-None-Match: *`, compare-and-swap is `If-Match`, both answered by the store
itself, so two writers on two machines can never both win. Timeouts and retries are short on
purpose: an unreachable registry is an error within seconds, not a hang; the agent's loop is
the one place that keeps retrying.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn

import boto3
import botocore.exceptions
from botocore.config import Config

from modelswap.errors import (
    ObjectExists,
    ObjectNotFound,
    PreconditionFailed,
    StoreError,
    StoreUnavailable,
)
from modelswap.store.base import CHUNK_SIZE, Blob, ObjectInfo, Store

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

SINGLE_PUT_MAX = 16 << 20
PART_SIZE = 16 << 20
MAX_PARTS = 10_000
UPLOAD_THREADS = 8

_CREDENTIAL_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "Forbidden",
    "403",
}


def make_client(max_pool: int = 32) -> S3Client:
    session = boto3.session.Session()
    config = Config(
        connect_timeout=3,
        read_timeout=30,
        retries={"max_attempts": 3, "mode": "standard"},
        max_pool_connections=max_pool,
        tcp_keepalive=True,
    )
    region = session.region_name or "us-east-1"
    return session.client("s3", region_name=region, config=config)


class S3Store(Store):
    def __init__(self, bucket: str, prefix: str, client: S3Client | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._client = client
        self._client_lock = threading.Lock()

    def connect(self) -> None:
        _ = self.client

    @property
    def client(self) -> S3Client:
        """Made on first use: building a boto3 client costs ~0.3 s, and a URL check needs none."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = make_client()
        return self._client

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
            if code in ("NoSuchKey", "404", "NotFound"):
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
        raise e

    def _call(self, action: str, key: str, fn: Callable[..., Any], **kw: Any) -> Any:
        try:
            return fn(Bucket=self.bucket, Key=self._key(key), **kw)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
            code = _code(e)
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                raise _conflict(kw, f"{self.url}/{key}") from e
            if code == "304":
                raise _NotModifiedError from e
            self._fail(e, key, action)

    # -- reads -----------------------------------------------------------------------------

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
        body = r["Body"]
        size = int(r["ContentLength"])
        try:
            # A body larger than max_bytes is never read: closing drops the connection.
            data = b"" if max_bytes is not None and size > max_bytes else body.read()
        except botocore.exceptions.BotoCoreError as e:
            self._fail(e, key, "read")
        finally:
            body.close()
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
        try:
            return bytes(r["Body"].read())
        except botocore.exceptions.BotoCoreError as e:
            self._fail(e, key, "read")
        finally:
            r["Body"].close()

    def iter_chunks(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        r = self._call("read", key, self.client.get_object)
        return self._stream(key, r["Body"], chunk_size)

    def _stream(self, key: str, body: Any, chunk_size: int) -> Iterator[bytes]:
        try:
            yield from body.iter_chunks(chunk_size)
        except botocore.exceptions.BotoCoreError as e:
            self._fail(e, key, "read")
        finally:
            body.close()

    # -- writes ----------------------------------------------------------------------------

    def put(self, key: str, data: bytes) -> str:
        return str(self._call("write", key, self.client.put_object, Body=data)["ETag"])

    def put_new(self, key: str, data: bytes) -> str:
        r = self._call("write", key, self.client.put_object, Body=data, IfNoneMatch="*")
        return str(r["ETag"])

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        try:
            r = self._call("write", key, self.client.put_object, Body=data, IfMatch=etag)
        except ObjectNotFound as e:
            raise PreconditionFailed(f"{self.url}/{key} was deleted") from e
        return str(r["ETag"])

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        kw: dict[str, Any] = {} if if_match is None else {"IfMatch": if_match}
        with contextlib.suppress(ObjectNotFound):
            self._call("delete", key, self.client.delete_object, **kw)

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
            return ObjectInfo(key=key, size=len(first), etag=etag, modified=datetime.now(UTC))
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
        upload_id = self._call("write", key, self.client.create_multipart_upload)["UploadId"]
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
            kw: dict[str, Any] = {"IfNoneMatch": "*"} if create_only else {}
            self._call(
                "write",
                key,
                self.client.complete_multipart_upload,
                UploadId=upload_id,
                MultipartUpload={
                    "Parts": [{"ETag": parts[n], "PartNumber": n} for n in sorted(parts)]
                },
                **kw,
            )
        except BaseException as e:
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)
            if isinstance(e, botocore.exceptions.ClientError | botocore.exceptions.BotoCoreError):
                self._fail(e, key, "write")
            raise
        return self.head(key)


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
