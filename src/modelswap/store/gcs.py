"""A registry in Google Cloud Storage, through google-cloud-storage.

GCS has no ETag preconditions on writes; it has object generations. The seam's ETag here is
the generation as a string: create-only is `ifGenerationMatch=0`, compare-and-swap is
`ifGenerationMatch=<gen>`, a conditional poll is `ifGenerationNotMatch=<gen>` (304, no body)
and, for stores that ignore that on GETs (fake-gcs-server), the response's x-goog-generation
compared before the body is read. Writes go out with retry=None and are settled by reading
back the nonce (settle.py). Reads stream over the client's own authorized session so the
low-speed limit sees every socket read.

Credentials: Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud's,
workload identity on GKE); STORAGE_EMULATOR_HOST points the client at an emulator.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import BinaryIO
from urllib.parse import quote

import google.api_core.exceptions as gexc
import google.auth.exceptions
import requests
import urllib3.exceptions
from google.api_core.retry import Retry
from google.cloud import storage

from modelswap.errors import (
    ObjectExists,
    ObjectNotFound,
    PreconditionFailed,
    StoreError,
    StoreUnavailable,
)
from modelswap.store.base import CHUNK_SIZE, Blob, ObjectInfo, Store, StoreOptions
from modelswap.store.gcs_errors import translate, write_outcome
from modelswap.store.settle import (
    NONCE,
    Stored,
    judge_delete,
    judge_new,
    judge_put,
    judge_replace,
    paced,
    replayable,
    settle,
)

SINGLE_REQUEST_MAX = 8 << 20  # the client's own multipart/resumable threshold
_READ_RETRYABLE = (gexc.TooManyRequests, gexc.ServerError, requests.ConnectionError)


class GCSStore(Store):
    def __init__(self, bucket: str, prefix: str, options: StoreOptions | None = None) -> None:
        self.bucket_name = bucket
        self.prefix = prefix.strip("/")
        self.url = f"gs://{bucket}/{self.prefix}" if self.prefix else f"gs://{bucket}"
        self.options = options or StoreOptions()
        self.timeout = (self.options.connect_timeout_s, self.options.read_timeout_s)
        self._client: storage.Client | None = None
        self._lock = threading.Lock()
        # Reads are idempotent: retried for about a second (S3's second attempt), never for
        # the client's default two minutes; each attempt is bounded by self.timeout.
        self._read_retry = Retry(
            predicate=lambda e: isinstance(e, _READ_RETRYABLE),
            initial=0.2,
            maximum=0.5,
            timeout=1.0 if self.options.read_attempts > 1 else 0.0,
        )

    # -- plumbing --------------------------------------------------------------------------

    @property
    def client(self) -> storage.Client:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._make_client()
        return self._client

    def _make_client(self) -> storage.Client:
        project = os.environ.get("GOOGLE_CLOUD_PROJECT")
        if os.environ.get("STORAGE_EMULATOR_HOST"):
            project = project or "modelswap-emulator"  # an emulator needs no real project
        try:
            return storage.Client(project=project)
        except google.auth.exceptions.DefaultCredentialsError as e:
            raise StoreUnavailable(
                "no Google Cloud credentials found for the GCS registry",
                hint="set GOOGLE_APPLICATION_CREDENTIALS, run `gcloud auth application-default "
                "login`, or use workload identity on GKE",
            ) from e

    def connect(self) -> None:
        _ = self.client

    def _full(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _rel(self, full: str) -> str:
        return full[len(self.prefix) + 1 :] if self.prefix else full

    def _blob(self, key: str) -> storage.Blob:
        return self.client.bucket(self.bucket_name).blob(self._full(key))

    def _fail(self, e: Exception, key: str, action: str) -> StoreError:
        return translate(e, self.url, self.bucket_name, key, action=action, endpoint=self._endpoint)

    @property
    def _endpoint(self) -> str:
        return str(self.client._connection.API_BASE_URL)  # the emulator's when it is set

    # -- reads -----------------------------------------------------------------------------

    def _media(
        self, key: str, *, byte_range: str | None = None, not_generation: str | None = None
    ) -> requests.Response:
        """An open streaming GET of the object's bytes, status checked."""
        name = quote(self._full(key), safe="")
        url = f"{self._endpoint}/download/storage/v1/b/{self.bucket_name}/o/{name}"
        params = {"alt": "media"}
        if not_generation is not None:
            params["ifGenerationNotMatch"] = not_generation
        headers = {"Accept-Encoding": "identity"}  # sizes and hashes are of the stored bytes
        if byte_range is not None:
            headers["Range"] = byte_range

        def once() -> requests.Response:
            r: requests.Response = self.client._http.get(
                url, params=params, headers=headers, stream=True, timeout=self.timeout
            )
            if r.status_code in (429,) or r.status_code >= 500:
                r.close()
                raise gexc.from_http_status(r.status_code, f"{r.status_code} from GCS")  # type: ignore[no-untyped-call]
            return r

        try:
            r: requests.Response = self._read_retry(once)()
        except Exception as e:
            raise self._fail(e, key, "read") from e
        if r.status_code == 404:
            r.close()
            raise self._fail(gexc.NotFound(r.text[:200]), key, "read")  # type: ignore[no-untyped-call]
        if r.status_code in (401, 403):
            r.close()
            denied = gexc.from_http_status(r.status_code, r.text[:200])  # type: ignore[no-untyped-call]
            raise self._fail(denied, key, "read")
        if r.status_code not in (200, 206, 304, 416):
            r.close()
            raise StoreUnavailable(f"GCS failed to read {self.url}/{key}: {r.status_code}")
        return r

    def _stream(self, key: str, r: requests.Response, chunk_size: int) -> Iterator[bytes]:
        def reads() -> Iterator[bytes]:
            try:
                while True:
                    data = r.raw.read1(chunk_size)  # one socket read: paced() sees a trickle
                    if not data:
                        return
                    yield data
            except (requests.RequestException, OSError, urllib3.exceptions.HTTPError) as e:
                raise StoreUnavailable(
                    f"the connection broke while reading {self.url}/{key}: {e}",
                    hint="the read is retried on the next pass",
                ) from e

        return paced(reads(), self.options, f"{self.url}/{key}", close=r.close)

    def get(
        self, key: str, *, if_none_match: str | None = None, max_bytes: int | None = None
    ) -> Blob | None:
        r = self._media(
            key,
            byte_range=f"bytes=0-{max_bytes}" if max_bytes is not None else None,
            not_generation=if_none_match,
        )
        generation = r.headers.get("x-goog-generation", "")
        if r.status_code == 416:  # a range of an empty object
            r.close()
            return Blob(data=b"", etag=generation, size=0, modified=datetime.now(UTC))
        if r.status_code == 304 or (if_none_match is not None and generation == if_none_match):
            r.close()  # unchanged: the body (if the store sent one) is never read
            return None
        size = _total_size(r)
        modified = _http_time(r.headers.get("Last-Modified"))
        if max_bytes is not None and size > max_bytes:
            r.close()
            return Blob(data=b"", etag=generation, size=size, modified=modified)
        data = b"".join(self._stream(key, r, CHUNK_SIZE))
        return Blob(data=data, etag=generation, size=size, modified=modified)

    def head(self, key: str) -> ObjectInfo:
        try:
            blob = self.client.bucket(self.bucket_name).get_blob(
                self._full(key), timeout=self.timeout, retry=self._read_retry
            )
        except Exception as e:
            raise self._fail(e, key, "read") from e
        if blob is None:
            raise ObjectNotFound(f"no object at {self.url}/{key}")
        return _info(key, blob)

    def objects(self, prefix: str) -> Iterator[ObjectInfo]:
        try:
            for blob in self.client.list_blobs(
                self.bucket_name,
                prefix=self._full(prefix),
                timeout=self.timeout,
                retry=self._read_retry,
            ):
                yield _info(self._rel(blob.name), blob)
        except Exception as e:
            raise self._fail(e, prefix, "list") from e

    def list_dirs(self, prefix: str) -> list[str]:
        full = self._full(prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")
        try:
            pages = self.client.list_blobs(
                self.bucket_name,
                prefix=full,
                delimiter="/",
                timeout=self.timeout,
                retry=self._read_retry,
            )
            for _ in pages:  # prefixes are collected while the pages are read
                pass
            names = [p[len(full) :].rstrip("/") for p in pages.prefixes]
        except Exception as e:
            raise self._fail(e, prefix, "list") from e
        return sorted(n for n in names if n)

    def read_range(self, key: str, start: int, length: int) -> bytes:
        if length <= 0:
            return b""
        r = self._media(key, byte_range=f"bytes={start}-{start + length - 1}")
        data = b"".join(self._stream(key, r, CHUNK_SIZE))
        if len(data) != length:
            raise StoreUnavailable(
                f"the read of {self.url}/{key} ended after {len(data)} of {length} bytes",
                hint="the read is retried on the next pass",
            )
        return data

    def iter_chunks(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        return self._stream(key, self._media(key), chunk_size)

    # -- writes ----------------------------------------------------------------------------

    def _read_back(self, key: str) -> Stored | None:
        blob = self.client.bucket(self.bucket_name).get_blob(
            self._full(key), timeout=self.timeout, retry=self._read_retry
        )
        if blob is None:
            return None
        return Stored(etag=str(blob.generation), nonce=(blob.metadata or {}).get(NONCE))

    def _classify(self, key: str) -> Callable[[Exception], str]:
        def classify(e: Exception) -> str:
            kind = write_outcome(e)
            if kind is None:
                raise self._fail(e, key, "write") from e
            return kind

        return classify

    def _write(
        self,
        key: str,
        src: Callable[[], BinaryIO],
        size: int,
        *,
        generation: int | None,
        judge: Callable[[Stored | None, str], str],
        conflict: Callable[[], StoreError],
    ) -> str:
        def send(nonce: str) -> str:
            blob = self._blob(key)
            blob.metadata = {NONCE: nonce}
            blob.upload_from_file(
                src(),
                size=size,
                if_generation_match=generation,
                timeout=self.timeout,
                retry=None,  # a retried conditional write answers 412 for itself
                checksum="md5" if size > SINGLE_REQUEST_MAX else None,
            )
            return str(blob.generation)

        return settle(
            f"{self.url}/{key}",
            send,
            read_back=lambda: self._read_back_or_fail(key),
            judge=judge,
            conflict=conflict,
            classify=self._classify(key),
        )

    def _read_back_or_fail(self, key: str) -> Stored | None:
        try:
            return self._read_back(key)
        except Exception as e:
            raise self._fail(e, key, "read back") from e

    def put(self, key: str, data: bytes) -> str:
        return self._write(
            key,
            lambda: io.BytesIO(data),
            len(data),
            generation=None,
            judge=judge_put,
            conflict=lambda: StoreError("an unconditional write cannot conflict"),
        )

    def put_new(self, key: str, data: bytes) -> str:
        return self._write(
            key,
            lambda: io.BytesIO(data),
            len(data),
            generation=0,
            judge=judge_new,
            conflict=lambda: ObjectExists(f"{self.url}/{key} already exists"),
        )

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        if not etag.isdigit():
            raise PreconditionFailed(f"{self.url}/{key} changed (not a GCS generation: {etag})")
        return self._write(
            key,
            lambda: io.BytesIO(data),
            len(data),
            generation=int(etag),
            judge=judge_replace(etag),
            conflict=lambda: PreconditionFailed(f"{self.url}/{key} changed"),
        )

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        def send(_nonce: str) -> str:
            try:
                self._blob(key).delete(
                    if_generation_match=int(if_match) if if_match is not None else None,
                    timeout=self.timeout,
                    retry=None,
                )
            except gexc.NotFound:
                return ""  # a missing key is not an error
            return ""

        settle(
            f"{self.url}/{key}",
            send,
            read_back=lambda: self._read_back_or_fail(key),
            judge=judge_delete(if_match),
            conflict=lambda: PreconditionFailed(f"{self.url}/{key} changed"),
            classify=self._classify(key),
        )

    def upload(
        self,
        key: str,
        src: BinaryIO,
        *,
        create_only: bool,
        on_chunk: Callable[[bytes], None] | None = None,
    ) -> ObjectInfo:
        with replayable(src, on_chunk) as (rewound, size):
            etag = self._write(
                key,
                rewound,
                size,
                generation=0 if create_only else None,
                judge=judge_new if create_only else judge_put,
                conflict=lambda: ObjectExists(f"{self.url}/{key} already exists"),
            )
        return ObjectInfo(key=key, size=size, etag=etag, modified=datetime.now(UTC))


def _info(key: str, blob: storage.Blob) -> ObjectInfo:
    return ObjectInfo(
        key=key,
        size=int(blob.size or 0),
        etag=str(blob.generation),
        modified=blob.updated or datetime.now(UTC),
    )


def _total_size(r: requests.Response) -> int:
    content_range = r.headers.get("Content-Range", "")
    if "/" in content_range:
        return int(content_range.rsplit("/", 1)[1])
    stored = r.headers.get("x-goog-stored-content-length") or r.headers.get("Content-Length")
    return int(stored or 0)


def _http_time(value: str | None) -> datetime:
    if not value:
        return datetime.now(UTC)
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return datetime.now(UTC)


__all__ = ["GCSStore"]
