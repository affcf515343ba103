"""A registry in Azure Blob Storage, through azure-storage-blob.

Azure Blob has ETag preconditions like S3: create-only is `If-None-Match: *`, compare-and-swap
`If-Match`, a conditional poll `If-None-Match: <etag>` (304). Writes go out on a client that
never retries (retry_total=0) and are settled by reading back the nonce (settle.py).

Credentials: AZURE_STORAGE_CONNECTION_STRING (an account key or SAS, Azurite's too), else the
account AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY or, without a key, DefaultAzureCredential
(managed or workload identity on AKS, `az login`; needs azure-identity).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, cast

import azure.core.exceptions as aexc
import requests
import requests.adapters
from azure.core import MatchConditions
from azure.core.pipeline.transport import RequestsTransport
from azure.core.rest import HttpRequest
from azure.storage.blob import BlobServiceClient, ContainerClient, LinearRetry

from modelswap.errors import (
    ObjectNotFound,
    StoreError,
    StoreUnavailable,
)
from modelswap.store.base import ObjectInfo, StoreOptions
from modelswap.store.cloud import NEW, REPLACE, CloudStore, Response, pooled_adapter
from modelswap.store.settle import (
    AMBIGUOUS,
    CONFLICT,
    Stored,
)

UPLOAD_THREADS = 4
# Azure metadata names are C# identifiers: the nonce field has no dash here.
NONCE = "modelswap_write"
HINT = "retry; if it persists, check the registry URL, the credentials and the container"


class AzureStore(CloudStore):
    def __init__(self, container: str, prefix: str, options: StoreOptions | None = None) -> None:
        self.container_name = container
        self.prefix = prefix.strip("/")
        self.url = f"az://{container}/{self.prefix}" if self.prefix else f"az://{container}"
        self.options = options or StoreOptions()
        self._clients: dict[str, ContainerClient] = {}
        self._lock = threading.Lock()

    # -- plumbing --------------------------------------------------------------------------

    def _container(self, role: str) -> ContainerClient:
        client = self._clients.get(role)
        if client is None:
            with self._lock:
                client = self._clients.get(role)
                if client is None:
                    attempts = self.options.read_attempts if role == "read" else 1
                    client = self._make(attempts - 1).get_container_client(self.container_name)
                    self._clients[role] = client
        return client

    @property
    def reader(self) -> ContainerClient:
        return self._container("read")

    @property
    def writer(self) -> ContainerClient:
        """Never retries: a retried If-None-Match write whose first reply was lost answers
        409 for the write that already landed."""
        return self._container("write")

    def _make(self, retries: int) -> BlobServiceClient:
        kw: dict[str, Any] = {
            # The SDK's default backs off 15 s and more; a read here retries for about a
            # second (S3's second attempt), a write never.
            "retry_policy": LinearRetry(backoff=1, retry_total=retries, random_jitter_range=0),
            "transport": RequestsTransport(
                session=_pooled_session(),
                session_owner=False,
                connection_timeout=self.options.connect_timeout_s,
                read_timeout=self.options.read_timeout_s,
            ),
        }
        conn = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
        if conn:
            try:
                return BlobServiceClient.from_connection_string(conn, **kw)
            except ValueError as e:
                raise StoreUnavailable(
                    f"AZURE_STORAGE_CONNECTION_STRING is not a connection string: {e}",
                    hint="copy it from the portal (Access keys) or `az storage account "
                    "show-connection-string`",
                ) from e
        account = os.environ.get("AZURE_STORAGE_ACCOUNT")
        if not account:
            raise StoreUnavailable(
                "no Azure storage account given for the az:// registry",
                hint="set AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT (with "
                "AZURE_STORAGE_KEY, or a managed identity through DefaultAzureCredential)",
            )
        url = f"https://{account}.blob.core.windows.net"
        key = os.environ.get("AZURE_STORAGE_KEY")
        if key:
            return BlobServiceClient(
                url, credential={"account_name": account, "account_key": key}, **kw
            )
        try:
            from azure.identity import (  # type: ignore[import-untyped, unused-ignore]  # noqa: PLC0415
                DefaultAzureCredential,  # only without a key
            )
        except ImportError as e:
            raise StoreUnavailable(
                "an az:// registry without a key or connection string needs azure-identity",
                hint="pip install azure-identity, or set AZURE_STORAGE_KEY",
            ) from e
        return BlobServiceClient(url, credential=DefaultAzureCredential(), **kw)

    def connect(self) -> None:
        _ = self.reader

    def _full(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _rel(self, full: str) -> str:
        return full[len(self.prefix) + 1 :] if self.prefix else full

    def _no_container(self) -> StoreUnavailable:
        return StoreUnavailable(
            f"container {self.container_name!r} does not exist",
            hint=f"create it (`az storage container create -n {self.container_name}`) or "
            "fix --registry",
        )

    def _fail(self, e: Exception, key: str, action: str) -> StoreError:
        where = f"{self.url}/{key}"
        if isinstance(e, StoreError):
            return e
        raw = getattr(e, "error_code", "") or ""
        code = str(getattr(raw, "value", raw))  # an enum member in some SDK versions
        if code == "ContainerNotFound":
            return self._no_container()
        if isinstance(e, aexc.ResourceNotFoundError):
            return ObjectNotFound(f"no object at {where}")
        if isinstance(e, aexc.ClientAuthenticationError) or (
            isinstance(e, aexc.HttpResponseError) and e.status_code in (401, 403)
        ):
            return StoreUnavailable(
                f"Azure refused to {action} {where}: {code or 'authentication failed'}",
                hint="check AZURE_STORAGE_CONNECTION_STRING / AZURE_STORAGE_KEY or the identity's "
                "role (Storage Blob Data Contributor)",
            )
        if isinstance(e, aexc.HttpResponseError) and e.status_code is not None:
            return StoreUnavailable(
                f"Azure failed to {action} {where}: {e.status_code} {code}".rstrip(),
                hint=HINT,
            )
        if isinstance(e, aexc.AzureError | OSError):
            reason = "connection refused" if "refused" in str(e) else type(e).__name__
            return StoreUnavailable(
                f"cannot reach the Azure registry {self.url} (or it broke off): {reason}",
                hint="check the connection string's BlobEndpoint and the network, then retry",
            )
        if isinstance(e, ValueError):  # the SDK's words for a reply it could not parse
            return StoreUnavailable(f"Azure gave an unexpected reply to {action} {where}: {e}")
        raise e

    # -- reads -----------------------------------------------------------------------------

    def _media(
        self, key: str, *, byte_range: str | None = None, not_etag: str | None = None
    ) -> Response:
        """An open streaming GET of the blob, status checked. Sent through the client's own
        pipeline (its credentials and signing) with stream=True, because the SDK's
        downloader reads whole chunks inside its calls, where no low-speed limit can see a
        trickle, and retries broken bodies on its own."""
        blob = self.reader.get_blob_client(self._full(key))
        headers = {"x-ms-version": blob.api_version}
        if byte_range is not None:
            headers["x-ms-range"] = byte_range
        if not_etag is not None:
            headers["If-None-Match"] = not_etag
        try:
            resp: Response = blob._pipeline.run(
                HttpRequest("GET", blob.url, headers=headers), stream=True
            ).http_response
        except Exception as e:
            raise self._fail(e, key, "read") from e
        if resp.status_code in (200, 206, 304, 416):
            return resp
        code = resp.headers.get("x-ms-error-code", "")
        resp.close()
        if resp.status_code == 404:
            if code == "ContainerNotFound":
                raise self._no_container()
            raise ObjectNotFound(f"no object at {self.url}/{key}")
        if resp.status_code in (401, 403):
            raise self._fail(aexc.ClientAuthenticationError(code), key, "read")
        raise StoreUnavailable(
            f"Azure failed to read {self.url}/{key}: {resp.status_code} {code}".rstrip(),
            hint=HINT,
        )

    def _etag(self, response: Response) -> str:
        return str(response.headers.get("ETag", ""))

    def _raw(self, response: Response) -> Any:
        return cast(Any, response).internal_response.raw  # requests' urllib3 response

    def head(self, key: str) -> ObjectInfo:
        try:
            props = self.reader.get_blob_client(self._full(key)).get_blob_properties()
        except Exception as e:
            raise self._fail(e, key, "read") from e
        return ObjectInfo(
            key=key, size=int(props.size), etag=props.etag, modified=props.last_modified
        )

    def objects(self, prefix: str) -> Iterator[ObjectInfo]:
        try:
            for b in self.reader.list_blobs(name_starts_with=self._full(prefix)):
                yield ObjectInfo(
                    key=self._rel(b.name), size=int(b.size), etag=b.etag, modified=b.last_modified
                )
        except Exception as e:
            raise self._fail(e, prefix, "list") from e

    def list_dirs(self, prefix: str) -> list[str]:
        full = self._full(prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")
        try:
            names = [
                item.name[len(full) :].rstrip("/")
                for item in self.reader.walk_blobs(name_starts_with=full, delimiter="/")
                if item.name.endswith("/")
            ]
        except Exception as e:
            raise self._fail(e, prefix, "list") from e
        return sorted(n for n in names if n)

    # -- writes ----------------------------------------------------------------------------

    def _read_back(self, key: str) -> Stored | None:
        try:
            props = self.reader.get_blob_client(self._full(key)).get_blob_properties()
        except aexc.ResourceNotFoundError:
            return None
        except Exception as e:
            raise self._fail(e, key, "read back") from e
        return Stored(etag=props.etag, nonce=(props.metadata or {}).get(NONCE))

    def _classify(self, key: str) -> Callable[[Exception], str]:
        def classify(e: Exception) -> str:
            # Only a request that was never sent (ServiceRequestError) or an answer that
            # says no (a 4xx) is definite; anything that breaks after sending may have landed.
            if isinstance(e, aexc.ResourceExistsError | aexc.ResourceModifiedError):
                return CONFLICT
            if isinstance(e, aexc.ServiceRequestError):
                raise self._fail(e, key, "write") from e
            if isinstance(e, aexc.HttpResponseError) and 400 <= (e.status_code or 0) < 500:
                raise self._fail(e, key, "write") from e
            if isinstance(e, aexc.AzureError | OSError | ValueError):
                return AMBIGUOUS  # a 5xx, a lost or cut reply, a reply it could not parse
            raise self._fail(e, key, "write") from e

        return classify

    def _send(
        self, key: str, attempt: Any, size: int, nonce: str, *, mode: str, etag: str | None
    ) -> str:
        condition: dict[str, Any] = {"overwrite": mode != NEW}  # If-None-Match: * when False
        if mode == REPLACE:
            condition |= {"etag": etag, "match_condition": MatchConditions.IfNotModified}
        result = self.writer.get_blob_client(self._full(key)).upload_blob(
            cast(BinaryIO, attempt),  # read() and tell(): all the SDK uses of a stream
            length=size,
            metadata={NONCE: nonce},
            max_concurrency=UPLOAD_THREADS,
            **condition,
        )
        return str(result["etag"])

    def _send_delete(self, key: str, if_match: str | None) -> None:
        kw: dict[str, Any] = {}
        if if_match is not None:
            kw = {"etag": if_match, "match_condition": MatchConditions.IfNotModified}
        try:
            self.writer.get_blob_client(self._full(key)).delete_blob(**kw)
        except aexc.ResourceNotFoundError as e:
            if "ContainerNotFound" in str(getattr(e, "error_code", "")):
                raise
        except aexc.ResourceModifiedError:
            if self._read_back(key) is not None:  # Azurite answers 412 for a missing blob
                raise


def _pooled_session() -> requests.Session:
    session = requests.Session()
    adapter = pooled_adapter()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


__all__ = ["AzureStore"]
