"""Open a registry root by URL: s3://, gs:// or az:// bucket/prefix, file:///abs/path, a folder."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import ParseResult, urlparse

from modelswap.errors import RegistryURLInvalid, StoreUnavailable
from modelswap.store.base import Blob, ObjectInfo, Store, StoreOptions
from modelswap.store.local import LocalStore

__all__ = ["Blob", "ObjectInfo", "Store", "StoreOptions", "open_store"]

_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_GCS_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]")
_CONTAINER_RE = re.compile(r"[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]")
# "s3:/b", "s3//b", "gs:b": a URL mistyped, never meant as a folder called "s3:".
_LOOKS_LIKE_URL = re.compile(r"(s3|gs|az|file|https?)(?::|//|:/)", re.IGNORECASE)
_URL_FORMS = {
    "s3": "write s3://bucket/prefix (two slashes after the colon)",
    "file": "write file:///absolute/path (three slashes) or a plain folder path",
    "gs": "write gs://bucket/prefix (two slashes after the colon)",
    "az": "write az://container/prefix (two slashes after the colon)",
}
_UNSUPPORTED = (
    "registries are s3://bucket/prefix, gs://bucket/prefix, az://container/prefix, "
    "file:///absolute/path or a folder"
)


def open_store(url: str, options: StoreOptions | None = None) -> Store:
    """The Store for a registry URL; raises RegistryURLInvalid with a hint when malformed.
    `options` bound how long a network store may take (the local folder ignores them)."""
    if not url or url.strip() != url:
        raise RegistryURLInvalid(f"registry URL {url!r} is empty or has surrounding spaces")
    if "://" not in url:
        mistyped = _LOOKS_LIKE_URL.match(url)
        if mistyped:
            scheme = mistyped.group(1).lower()
            raise RegistryURLInvalid(
                f"registry URL {url!r} looks like a {scheme}:// URL but is not one",
                hint=_URL_FORMS.get(scheme, _UNSUPPORTED)
                + "; a folder path must not start with a scheme",
            )
        return LocalStore(Path(url))
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/"):
            raise RegistryURLInvalid(
                f"registry URL {url!r} is not an absolute file URL",
                hint="write file:///absolute/path (three slashes), or a plain folder path",
            )
        return LocalStore(Path(parsed.path))
    if parsed.scheme == "s3":
        bucket = parsed.netloc
        if not _BUCKET_RE.fullmatch(bucket):
            raise RegistryURLInvalid(
                f"registry URL {url!r} has no valid bucket name",
                hint="write s3://bucket/prefix; bucket names are 3-63 lower-case letters, "
                "digits, dots and dashes",
            )
        if parsed.query or parsed.fragment or "//" in parsed.path:
            raise RegistryURLInvalid(f"registry URL {url!r} has an unexpected '?', '#' or '//'")
        try:
            from modelswap.store.s3 import S3Store  # noqa: PLC0415 - boto3 only when S3 is used
        except ImportError as e:
            raise StoreUnavailable(
                "the S3 registry needs boto3, which is not installed",
                hint="pip install 'modelswap[s3]'",
            ) from e
        return S3Store(bucket, parsed.path, options=options)
    if parsed.scheme in ("gs", "az"):
        return _cloud_store(url, parsed, options)
    raise RegistryURLInvalid(
        f"registry URL {url!r} has an unsupported scheme {parsed.scheme!r}", hint=_UNSUPPORTED
    )


def _cloud_store(url: str, parsed: ParseResult, options: StoreOptions | None) -> Store:
    """gs://bucket/prefix or az://container/prefix, each through its cloud's own SDK."""
    scheme, name, path = parsed.scheme, parsed.netloc, parsed.path
    valid = _GCS_BUCKET_RE if scheme == "gs" else _CONTAINER_RE
    if not valid.fullmatch(name):
        what = "bucket" if scheme == "gs" else "container"
        raise RegistryURLInvalid(
            f"registry URL {url!r} has no valid {what} name",
            hint=f"write {scheme}://{what}/prefix; {what} names are lower-case letters and digits"
            + (
                ", dots, dashes and underscores (3-63)"
                if scheme == "gs"
                else " and single dashes (3-63)"
            ),
        )
    if parsed.query or parsed.fragment or "//" in path:
        raise RegistryURLInvalid(f"registry URL {url!r} has an unexpected '?', '#' or '//'")
    extra = "gcs" if scheme == "gs" else "azure"
    try:
        if scheme == "gs":
            from modelswap.store.gcs import GCSStore  # noqa: PLC0415 - its SDK only when used

            return GCSStore(name, path, options=options)
        from modelswap.store.azure import AzureStore  # noqa: PLC0415 - its SDK only when used

        return AzureStore(name, path, options=options)
    except ImportError as e:
        raise StoreUnavailable(
            f"the {scheme}:// registry needs {e.name}, which is not installed",
            hint=f"pip install 'modelswap[{extra}]'",
        ) from e
