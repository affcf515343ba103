"""Reads over one streaming HTTP GET, shared by the GCS and Azure backends.

A backend supplies `_media(key, byte_range=, not_etag=)`: an open response (status 200, 206,
304 or 416; every other status already raised as a StoreError) whose `raw` has urllib3's
read1, so the low-speed limit (settle.paced) sees every socket read, and `_etag(response)`.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import requests
import urllib3.exceptions

from modelswap.errors import StoreUnavailable
from modelswap.store.base import CHUNK_SIZE, Blob, Store, StoreOptions
from modelswap.store.settle import paced


class Response(Protocol):
    status_code: int
    headers: Any

    def close(self) -> None: ...


class StreamedReads(Store):
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
