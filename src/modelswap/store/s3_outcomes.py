"""How the S3 store reads boto3's failures: which codes mean what, which failures are
definite (nothing was applied) and which leave a write's outcome to be read back."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

from modelswap.errors import (
    ObjectExists,
    ObjectNotFound,
    PreconditionFailed,
    StoreError,
    StoreUnavailable,
)
from modelswap.lean import without
from modelswap.store.base import StoreOptions

with without("urllib3.contrib.pyopenssl"):  # botocore falls back to urllib3's own SSLContext
    import boto3
    import botocore.exceptions
    import urllib3.exceptions
    from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


CREDENTIAL_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "Forbidden",
    "403",
}
CONFLICT_CODES = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound"}
DEFINITE = (  # failures after which the store has certainly not applied the write
    botocore.exceptions.EndpointConnectionError,  # never connected: nothing was sent
    botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.NoCredentialsError,
    botocore.exceptions.PartialCredentialsError,
    botocore.exceptions.ParamValidationError,
)
BODY_ERRORS = (
    botocore.exceptions.BotoCoreError,
    urllib3.exceptions.HTTPError,
    OSError,
)


def new_session() -> boto3.session.Session:
    return boto3.session.Session()


def make_client(
    options: StoreOptions,
    *,
    attempts: int,
    session: boto3.session.Session,
    max_pool: int = 32,
) -> S3Client:
    """A client of `session` (one per store: its second client reuses the service model the
    first one loaded, ~15 ms instead of ~120). Not thread-safe: the caller holds a lock."""
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


def fail(store_url: str, bucket: str, e: Exception, key: str, action: str) -> NoReturn:
    """Raise the modelswap error for a boto3 failure, naming the object and what to do."""
    where = f"{store_url}/{key}"
    if isinstance(e, botocore.exceptions.ClientError):
        err = e.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in NOT_FOUND_CODES:
            raise ObjectNotFound(f"no object at {where}") from e
        if code == "NoSuchBucket":
            raise StoreUnavailable(
                f"bucket {bucket!r} does not exist at the S3 endpoint",
                hint=f"create it (`aws s3 mb s3://{bucket}`) or fix --registry",
            ) from e
        if code in CREDENTIAL_CODES:
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
            f"cannot reach the S3 registry {store_url}: {e}",
            hint="check AWS_ENDPOINT_URL and the network, then retry",
        ) from e
    if isinstance(e, BODY_ERRORS):
        raise StoreUnavailable(
            f"the connection broke while reading {where}: {e}",
            hint="check AWS_ENDPOINT_URL and the network, then retry",
        ) from e
    raise e


def ambiguous(e: botocore.exceptions.ClientError) -> bool:
    """A reply that does not say the write was refused: a 5xx, or S3's own timeouts."""
    status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return status >= 500 or status == 0 or error_code(e) in ("RequestTimeout", "SlowDown")


def error_code(e: Exception) -> str:
    if isinstance(e, botocore.exceptions.ClientError):
        return str(e.response.get("Error", {}).get("Code", ""))
    return ""


def conflict(kw: dict[str, Any], where: str) -> StoreError:
    if kw.get("IfNoneMatch") == "*":
        return ObjectExists(f"{where} already exists")
    return PreconditionFailed(f"{where} changed since it was read")
