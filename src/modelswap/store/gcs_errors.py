"""What a google-cloud-storage failure means: the modelswap error to raise for a read, and
for a write whether it was refused by a precondition, may have landed, or certainly did not."""

from __future__ import annotations

from collections.abc import Callable

import google.api_core.exceptions as gexc
import google.auth.exceptions
import requests
import urllib3.exceptions

from modelswap.errors import ModelswapError, ObjectNotFound, StoreUnavailable
from modelswap.store.settle import AMBIGUOUS, CONFLICT

HINT = "retry; if it persists, check the registry URL, the credentials and the bucket"


def translate(
    e: Exception,
    url: str,
    bucket: str,
    key: str,
    *,
    action: str,
    endpoint: str,
    bucket_missing: Callable[[], bool],
) -> ModelswapError:
    """The modelswap error for e; re-raises what is not a storage failure (a bug). A 404 says
    "not found" whether the bucket or the object is missing (and real GCS puts the object's
    name, which may contain "bucket", in the text), so bucket_missing() asks the store."""
    where = f"{url}/{key}"
    if isinstance(e, ModelswapError):
        return e
    if isinstance(e, gexc.RetryError) and isinstance(e.cause, Exception):
        return translate(
            e.cause, url, bucket, key, action=action, endpoint=endpoint,
            bucket_missing=bucket_missing,
        )  # fmt: skip
    if isinstance(e, gexc.NotFound):
        if bucket_missing():
            return StoreUnavailable(
                f"bucket {bucket!r} does not exist",
                hint=f"create it (`gcloud storage buckets create gs://{bucket}`) or fix --registry",
            )
        return ObjectNotFound(f"no object at {where}")
    if isinstance(e, gexc.Forbidden | gexc.Unauthorized):
        return StoreUnavailable(
            f"GCS refused to {action} {where}: {e.code} {e.message}",
            hint="check the credentials (GOOGLE_APPLICATION_CREDENTIALS, workload identity) "
            "and that they may use the bucket (roles/storage.objectUser)",
        )
    if isinstance(e, google.auth.exceptions.GoogleAuthError):
        return StoreUnavailable(
            f"cannot get Google Cloud credentials to {action} {where}: {e}",
            hint="set GOOGLE_APPLICATION_CREDENTIALS or run `gcloud auth "
            "application-default login`",
        )
    if isinstance(e, gexc.GoogleAPICallError):
        return StoreUnavailable(f"GCS failed to {action} {where}: {e.code} {e.message}", hint=HINT)
    if isinstance(e, requests.RequestException | urllib3.exceptions.HTTPError | OSError):
        return StoreUnavailable(
            f"cannot reach the GCS registry {url} at {endpoint}: {_reason(e)}",
            hint="check the network (or STORAGE_EMULATOR_HOST), then retry",
        )
    if isinstance(e, gexc.GoogleAPIError | ValueError):  # the SDK's words for a bad reply
        return StoreUnavailable(f"GCS gave an unexpected reply to {action} {where}: {e}", hint=HINT)
    raise e


def write_outcome(e: Exception) -> str | None:
    """CONFLICT (a precondition refused it), AMBIGUOUS (it may have landed), or None when it
    certainly did not (translate() then says why). Only a connection that never opened, or
    an answer that says no (a 4xx), is definite: anything that breaks after the request went
    out (a reset, a body cut mid-reply, a read timeout, a 5xx) may have been applied."""
    if isinstance(e, gexc.PreconditionFailed):
        return CONFLICT
    if isinstance(e, gexc.ServerError | gexc.TooManyRequests):
        return AMBIGUOUS
    if isinstance(e, gexc.RetryError) and isinstance(e.cause, Exception):
        return write_outcome(e.cause)
    if isinstance(e, requests.ConnectTimeout | requests.exceptions.SSLError):
        return None  # never connected, or the handshake failed: nothing was sent
    if isinstance(e, requests.ConnectionError) and _never_connected(e):
        return None
    if isinstance(e, requests.RequestException | urllib3.exceptions.HTTPError | OSError):
        return AMBIGUOUS
    return None


def _never_connected(e: requests.ConnectionError) -> bool:
    """urllib3 wraps a refused connection or an unknown host (NameResolutionError is a
    NewConnectionError) as the reason of a MaxRetryError."""
    cause = e.args[0] if e.args else None
    reason = getattr(cause, "reason", cause)
    return isinstance(
        reason, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError
    )


def _reason(e: Exception) -> str:
    """The innermost words of a requests/urllib3 failure ("connection refused")."""
    text = str(e).lower()
    for words in ("connection refused", "timed out", "name or service not known", "reset"):
        if words in text:
            return words
    return type(e).__name__
