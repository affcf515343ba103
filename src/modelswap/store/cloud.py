"""What the GCS and Azure backends share: reads over one streaming HTTP GET, and writes of
one attempt each settled by reading back (settle.py).

A backend supplies `_media(key, byte_range=, not_etag=)`: an open response (status 200, 206,
304 or 416; every other status already raised as a StoreError) whose raw urllib3 response
(`_raw`) has read1, so the low-speed limit (settle.paced) sees every socket read; `_etag`;
and for writes `_send` (one attempt), `_read_back` and `_classify`.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import requests
import requests.adapters
import urllib3.exceptions

from modelswap.errors import (
    ObjectExists,
    ObjectNotFound,
    PreconditionFailed,
    StoreError,
    StoreUnavailable,
)
from modelswap.store.base import CHUNK_SIZE, Blob, ObjectInfo, Store, StoreOptions
from modelswap.store.settle import (
    Stored,
    UploadBody,
    judge_delete,
    judge_new,
    judge_put,
    judge_replace,
    paced,
    settle,
)

# What a write asks of the store: create only, replace only from an ETag, or unconditional.
NEW, REPLACE, PUT = "new", "replace", "put"


class Response(Protocol):
    status_code: int
    headers: Any

    def close(self) -> None: ...


class CloudStore(Store):
    options: StoreOptions

    @abc.abstractmethod
    def _media(
        self, key: str, *, byte_range: str | None = None, not_etag: str | None = None
    ) -> Response:
        """An open streaming GET of the object (see the module docstring)."""

    @abc.abstractmethod
    def _etag(self, response: Response) -> str:
        """The object's ETag (its generation on GCS) as the response names it."""

    @abc.abstractmethod
    def _raw(self, response: Response) -> Any:
        """The urllib3 response under it (has read1)."""

    def _stream(
        self, key: str, response: Response, chunk_size: int = CHUNK_SIZE
    ) -> Iterator[bytes]:
        raw = self._raw(response)

        def reads() -> Iterator[bytes]:
            try:
                while data := raw.read1(chunk_size):  # one socket read
                    yield data
            except (OSError, urllib3.exceptions.HTTPError, requests.RequestException) as e:
                raise StoreUnavailable(
                    f"the connection broke while reading {self.url}/{key}: {e}",
                    hint="the read is retried on the next pass",
                ) from e

        return paced(reads(), self.options, f"{self.url}/{key}", close=response.close)

    def get(
        self, key: str, *, if_none_match: str | None = None, max_bytes: int | None = None
    ) -> Blob | None:
        r = self._media(
            key,
            byte_range=f"bytes=0-{max_bytes}" if max_bytes is not None else None,
            not_etag=if_none_match,
        )
        etag = self._etag(r)
        # A store that ignores the condition (fake-gcs-server) still names the object's
        # version: unchanged is decided before the body is read.
        if r.status_code == 304 or (if_none_match is not None and etag == if_none_match):
            r.close()
            return None
        if r.status_code == 416:  # a range of an empty object
            r.close()
            info = self.head(key)
            if info.etag == if_none_match:
                return None
            return Blob(data=b"", etag=info.etag, size=0, modified=info.modified)
        size = total_size(r.headers)
        modified = http_time(r.headers.get("Last-Modified"))
        if max_bytes is not None and size > max_bytes:
            r.close()
            return Blob(data=b"", etag=etag, size=size, modified=modified)
        data = b"".join(self._stream(key, r))
        return Blob(data=data, etag=etag, size=size, modified=modified)

    def read_range(self, key: str, start: int, length: int) -> bytes:
        if length <= 0:
            return b""
        data = b"".join(
            self._stream(key, self._media(key, byte_range=f"bytes={start}-{start + length - 1}"))
        )
        if len(data) != length:
            raise StoreUnavailable(
                f"the read of {self.url}/{key} ended after {len(data)} of {length} bytes",
                hint="the read is retried on the next pass",
            )
        return data

    def iter_chunks(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        return self._stream(key, self._media(key), chunk_size)

    # -- writes ----------------------------------------------------------------------------

    @abc.abstractmethod
    def _send(
        self, key: str, attempt: Any, size: int, nonce: str, *, mode: str, etag: str | None
    ) -> str:
        """One attempt of a write of `size` bytes read from `attempt`, carrying `nonce` in the
        object's metadata; the new ETag. Raises the SDK's own errors: _classify reads them."""

    @abc.abstractmethod
    def _read_back(self, key: str) -> Stored | None:
        """The object at key now (etag and nonce), or None; raises StoreError."""

    @abc.abstractmethod
    def _classify(self, key: str) -> Callable[[Exception], str]:
        """settle()'s classify for this backend's errors."""

    def _valid_etag(self, etag: str) -> bool:
        return True

    def _write(self, key: str, body: UploadBody, *, mode: str, etag: str | None = None) -> str:
        def send(nonce: str) -> str:
            attempt = body.attempt()
            new_etag = self._send(key, attempt, body.size, nonce, mode=mode, etag=etag)
            body.sent(attempt)
            return new_etag

        judge = {NEW: judge_new, PUT: judge_put}.get(mode) or judge_replace(etag or "")
        return settle(
            f"{self.url}/{key}",
            send,
            read_back=lambda: self._read_back(key),
            judge=judge,
            conflict=lambda: self._conflict(key, mode),
            classify=self._classify(key),
        )

    def _conflict(self, key: str, mode: str) -> StoreError:
        if mode == NEW:
            return ObjectExists(f"{self.url}/{key} already exists")
        if mode == REPLACE:
            return PreconditionFailed(f"{self.url}/{key} changed")
        return StoreError("an unconditional write cannot conflict")

    @abc.abstractmethod
    def _send_delete(self, key: str, if_match: str | None) -> None:
        """One attempt of a delete; a key already missing is success (raise if the bucket
        or container is)."""

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        if if_match is not None and not self._valid_etag(if_match):
            raise PreconditionFailed(f"{self.url}/{key} changed (its ETag was {if_match!r})")

        def send(_nonce: str) -> str:
            self._send_delete(key, if_match)
            return ""

        settle(
            f"{self.url}/{key}",
            send,
            read_back=lambda: self._read_back(key),
            judge=judge_delete(if_match),
            conflict=lambda: self._conflict(key, REPLACE),
            classify=self._classify(key),
        )

    def put(self, key: str, data: bytes) -> str:
        return self._write(key, UploadBody.of(data), mode=PUT)

    def put_new(self, key: str, data: bytes) -> str:
        return self._write(key, UploadBody.of(data), mode=NEW)

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        if not self._valid_etag(etag):
            raise PreconditionFailed(f"{self.url}/{key} changed (its ETag was {etag!r})")
        try:
            return self._write(key, UploadBody.of(data), mode=REPLACE, etag=etag)
        except ObjectNotFound as e:  # compare-and-swap against a deleted object
            raise self._conflict(key, REPLACE) from e

    def upload(
        self,
        key: str,
        src: Any,
        *,
        create_only: bool,
        on_chunk: Callable[[bytes], None] | None = None,
    ) -> ObjectInfo:
        with contextlib.ExitStack() as stack:
            body = UploadBody(src, on_chunk, stack)
            etag = self._write(key, body, mode=NEW if create_only else PUT)
        return ObjectInfo(key=key, size=body.size, etag=etag, modified=datetime.now(UTC))


def pooled_adapter() -> requests.adapters.HTTPAdapter:
    """The registry reads up to 16 objects at once (listings, events); requests' default pool
    of 10 connections per host would drop some with a warning on stderr."""
    return requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=32)


def total_size(headers: Any) -> int:
    content_range = str(headers.get("Content-Range") or "")
    if "/" in content_range:
        return int(content_range.rsplit("/", 1)[1])
    stored = headers.get("x-goog-stored-content-length") or headers.get("Content-Length")
    return int(stored or 0)


def http_time(value: str | None) -> datetime:
    try:
        return parsedate_to_datetime(value) if value else datetime.now(UTC)
    except (TypeError, ValueError):
        return datetime.now(UTC)
