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

import os
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import quote

import google.api_core.exceptions as gexc
import google.auth.exceptions
import requests
import requests.adapters
from google.api_core.retry import Retry

# The SDK ships no types; a user's mypy --strict reaching this import must not fail on it.
from google.cloud import storage  # type: ignore[import-untyped, unused-ignore]

from modelswap.errors import (
    ModelswapError,
    ObjectNotFound,
    StoreUnavailable,
)
from modelswap.store.base import ObjectInfo, StoreOptions
from modelswap.store.cloud import NEW, REPLACE, CloudStore, Response, pooled_adapter
from modelswap.store.gcs_errors import translate, write_outcome
from modelswap.store.settle import (
    NONCE,
    Stored,
)

SINGLE_REQUEST_MAX = 8 << 20  # the client's own multipart/resumable threshold
_READ_RETRYABLE = (gexc.TooManyRequests, gexc.ServerError, requests.ConnectionError)


class GCSStore(CloudStore):
    def __init__(self, bucket: str, prefix: str, options: StoreOptions | None = None) -> None:
        self.bucket_name = bucket
        self.prefix = prefix.strip("/")
        self.url = f"gs://{bucket}/{self.prefix}" if self.prefix else f"gs://{bucket}"
        self.options = options or StoreOptions()
        self.timeout = (self.options.connect_timeout_s, self.options.read_timeout_s)
        self._client: storage.Client | None = None
        self._bucket_seen = False
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
            client = storage.Client(project=project)
        except google.auth.exceptions.DefaultCredentialsError as e:
            raise StoreUnavailable(
                "no Google Cloud credentials found for the GCS registry",
                hint="set GOOGLE_APPLICATION_CREDENTIALS, run `gcloud auth application-default "
                "login`, or use workload identity on GKE",
            ) from e
        adapter = pooled_adapter()
        client._http.mount("https://", adapter)
        client._http.mount("http://", adapter)
        return client

    def connect(self) -> None:
        _ = self.client

    def _full(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _rel(self, full: str) -> str:
        return full[len(self.prefix) + 1 :] if self.prefix else full

    def _blob(self, key: str) -> storage.Blob:
        return self.client.bucket(self.bucket_name).blob(self._full(key))

    def _fail(self, e: Exception, key: str, action: str) -> ModelswapError:
        return translate(
            e,
            self.url,
            self.bucket_name,
            key,
            action=action,
            endpoint=self._endpoint,
            bucket_missing=self._bucket_missing,
        )

    def _bucket_missing(self) -> bool:
        """Asked after a 404; a bucket found once is not asked about again."""
        if self._bucket_seen:
            return False
        try:
            exists = self.client.bucket(self.bucket_name).exists(
                timeout=self.timeout, retry=self._read_retry
            )
        except Exception:  # noqa: BLE001 - cannot tell: report the 404 as it came
            return False
        self._bucket_seen = bool(exists)
        return not exists

    @property
    def _endpoint(self) -> str:
        return str(self.client._connection.API_BASE_URL)  # the emulator's when it is set

    # -- reads -----------------------------------------------------------------------------

    def _media(
        self, key: str, *, byte_range: str | None = None, not_etag: str | None = None
    ) -> requests.Response:
        """An open streaming GET of the object's bytes, status checked."""
        name = quote(self._full(key), safe="")
        url = f"{self._endpoint}/download/storage/v1/b/{self.bucket_name}/o/{name}"
        params = {"alt": "media"}
        if not_etag is not None:
            params["ifGenerationNotMatch"] = not_etag
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
            raise StoreUnavailable(
                f"GCS failed to read {self.url}/{key}: {r.status_code}",
                hint="retry; if it persists, check the registry URL and the credentials",
            )
        return r

    def _etag(self, response: Response) -> str:
        return str(response.headers.get("x-goog-generation", ""))

    def _raw(self, response: Response) -> Any:
        return cast(requests.Response, response).raw

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

    # -- writes ----------------------------------------------------------------------------

    def _read_back(self, key: str) -> Stored | None:
        try:
            blob = self.client.bucket(self.bucket_name).get_blob(
                self._full(key), timeout=self.timeout, retry=self._read_retry
            )
        except Exception as e:
            raise self._fail(e, key, "read back") from e
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

    def _valid_etag(self, etag: str) -> bool:
        return etag.isdigit()  # a generation

    def _send(
        self, key: str, attempt: Any, size: int, nonce: str, *, mode: str, etag: str | None
    ) -> str:
        generation = 0 if mode == NEW else int(etag) if mode == REPLACE and etag else None
        blob = self._blob(key)
        blob.metadata = {NONCE: nonce}
        blob.upload_from_file(
            attempt,
            size=size,
            if_generation_match=generation,
            timeout=self.timeout,
            retry=None,  # a retried conditional write answers 412 for itself
            # Our sha256 of the bytes sent is in metadata.json and every reader checks it;
            # the SDK's own md5 check would delete a mismatch with default retries.
            checksum=None,
        )
        return str(blob.generation)

    def _send_delete(self, key: str, if_match: str | None) -> None:
        try:
            self._blob(key).delete(
                if_generation_match=int(if_match) if if_match is not None else None,
                timeout=self.timeout,
                retry=None,
            )
        except gexc.NotFound as e:
            if self._bucket_missing():
                raise self._fail(e, key, "delete") from e


def _info(key: str, blob: storage.Blob) -> ObjectInfo:
    return ObjectInfo(
        key=key,
        size=int(blob.size or 0),
        etag=str(blob.generation),
        modified=blob.updated or datetime.now(UTC),
    )


__all__ = ["GCSStore"]
