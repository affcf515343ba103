"""What a google-cloud-storage failure means: the modelswap error to raise for a read, and
for a write whether it was refused by a precondition, may have landed, or certainly did not."""

from __future__ import annotations

import google.api_core.exceptions as gexc
import google.auth.exceptions
import requests

from modelswap.errors import ObjectNotFound, StoreError, StoreUnavailable
from modelswap.store.settle import AMBIGUOUS, CONFLICT


def translate(
    e: Exception, url: str, bucket: str, key: str, *, action: str, endpoint: str
) -> StoreError:
    """The StoreError for e; re-raises what is not a storage failure (a bug)."""
    where = f"{url}/{key}"
    if isinstance(e, StoreError):
        return e
    if isinstance(e, gexc.RetryError) and e.cause is not None:
        return translate(e.cause, url, bucket, key, action=action, endpoint=endpoint)
    if isinstance(e, gexc.NotFound):
        if "bucket" in str(e).lower():
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
        return StoreUnavailable(f"GCS failed to {action} {where}: {e.code} {e.message}")
    if isinstance(e, requests.RequestException | OSError):
        return StoreUnavailable(
            f"cannot reach the GCS registry {url} at {endpoint}: {_reason(e)}",
            hint="check the network (or STORAGE_EMULATOR_HOST), then retry",
        )
    raise e


def write_outcome(e: Exception) -> str | None:
    """CONFLICT (a precondition refused it), AMBIGUOUS (it may have landed), or None when it
    certainly did not (translate() then says why)."""
    if isinstance(e, gexc.PreconditionFailed):
        return CONFLICT
    if isinstance(e, requests.ConnectTimeout):
        return None  # never connected: nothing was sent
    if isinstance(e, gexc.ServerError | gexc.TooManyRequests | requests.Timeout):
        return AMBIGUOUS
    if isinstance(e, requests.ConnectionError):
        cause = str(e)
        if "NewConnectionError" in cause or "Failed to establish" in cause:
            return None
        return AMBIGUOUS  # reset after the request went out
    return None


def _reason(e: Exception) -> str:
    """The innermost words of a requests/urllib3 failure ("connection refused")."""
    text = str(e).lower()
    for words in ("connection refused", "timed out", "name or service not known", "reset"):
        if words in text:
            return words
    return type(e).__name__
