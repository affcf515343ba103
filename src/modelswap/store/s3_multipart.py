"""Uploads larger than one PUT: parts in parallel (bounded memory), completed under the same
read-back rule as every other write (s3_outcomes), so a lost reply to the completion is
settled by the nonce the object was created with."""

from __future__ import annotations

import concurrent.futures
import contextlib
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO

import botocore.exceptions

from modelswap.errors import ObjectExists, StoreError, StoreUnavailable
from modelswap.store.base import ObjectInfo
from modelswap.store.s3_outcomes import error_code, fail
from modelswap.store.settle import ABSENT, MINE, NONCE, THEIRS, Stored

if TYPE_CHECKING:
    from modelswap.store.s3 import S3Store

SINGLE_PUT_MAX = 16 << 20
PART_SIZE = 16 << 20
MAX_PARTS = 10_000
UPLOAD_THREADS = 8


def multipart_upload(
    store: S3Store,
    key: str,
    first: bytes,
    src: BinaryIO,
    *,
    create_only: bool,
    on_chunk: Callable[[bytes], None] | None,
) -> ObjectInfo:
    """Upload `first` (already read) and the rest of `src` as parts, then complete."""
    full = store._key(key)
    nonce = uuid.uuid4().hex  # set at create, so the completed object carries it
    # Creating an upload has no visible effect, so the retrying client is safe here.
    upload_id = store._call(
        "write", key, store.client.create_multipart_upload, Metadata={NONCE: nonce}
    )["UploadId"]
    parts: dict[int, str] = {}
    try:
        with concurrent.futures.ThreadPoolExecutor(UPLOAD_THREADS) as pool:
            pending: dict[concurrent.futures.Future[Any], int] = {}
            number, buffered = 0, first
            while True:
                chunk = buffered + read_full(src, PART_SIZE - len(buffered))
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
                    store.client.upload_part,
                    Bucket=store.bucket,
                    Key=full,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=chunk,
                )
                pending[fut] = number
                if len(pending) >= UPLOAD_THREADS:  # bounded memory: at most N parts in flight
                    _collect(pending, parts, wait_all=False)
            _collect(pending, parts, wait_all=True)
        etag = _complete(store, key, upload_id, parts, nonce=nonce, create_only=create_only)
    except BaseException as e:
        # An upload never completed costs storage only; a bucket lifecycle rule ends it.
        with contextlib.suppress(
            botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError
        ):
            store.writer.abort_multipart_upload(Bucket=store.bucket, Key=full, UploadId=upload_id)
        if isinstance(e, botocore.exceptions.ClientError | botocore.exceptions.BotoCoreError):
            fail(store.url, store.bucket, e, key, "write")
        raise
    info = store.head(key)
    return ObjectInfo(key=key, size=info.size, etag=etag or info.etag, modified=info.modified)


def _complete(
    store: S3Store,
    key: str,
    upload_id: str,
    parts: dict[int, str],
    *,
    nonce: str,
    create_only: bool,
) -> str:
    kw: dict[str, Any] = {"IfNoneMatch": "*"} if create_only else {}
    listing: Any = {"Parts": [{"ETag": parts[n], "PartNumber": n} for n in sorted(parts)]}

    def send(_attempt_nonce: str) -> dict[str, Any]:
        try:
            return dict(
                store.writer.complete_multipart_upload(
                    Bucket=store.bucket,
                    Key=store._key(key),
                    UploadId=upload_id,
                    MultipartUpload=listing,
                    **kw,
                )
            )
        except botocore.exceptions.ClientError as e:
            if error_code(e) != "NoSuchUpload":
                raise
            return {}  # completed by an attempt whose reply was lost: settled below

    def judge(stored: Stored | None, _attempt_nonce: str) -> str:
        if stored is not None and stored.nonce == nonce:
            return MINE
        return THEIRS if stored is not None and create_only else ABSENT

    etag = store._write(key, send, judge, lambda: ObjectExists(f"{store.url}/{key} already exists"))
    if not etag:  # NoSuchUpload: settle by reading back
        stored = store._stored(key)
        if stored is None or stored.nonce != nonce:
            raise StoreUnavailable(f"the multipart upload of {store.url}/{key} was lost")
        etag = stored.etag
    return etag


def _collect(
    pending: dict[concurrent.futures.Future[Any], int], parts: dict[int, str], *, wait_all: bool
) -> None:
    how = concurrent.futures.ALL_COMPLETED if wait_all else concurrent.futures.FIRST_COMPLETED
    done, _ = concurrent.futures.wait(pending, return_when=how)
    for fut in done:
        parts[pending.pop(fut)] = fut.result()["ETag"]


def read_full(src: BinaryIO, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = src.read(n - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)
