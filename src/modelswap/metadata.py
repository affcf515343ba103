"""metadata.json: parsed strictly, written deterministically, unknown keys kept as they were."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from modelswap.errors import InvalidMetadata, InvalidName
from modelswap.names import check_file_path, path_collision

METADATA_FILE = "metadata.json"
METADATA_MAX_BYTES = 16 << 20
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


def utc_now() -> str:
    """RFC 3339 UTC with milliseconds, e.g. 2026-11-26T15:04:05.123Z."""
    return rfc3339(datetime.now(UTC))


def rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    size: int


@dataclass(frozen=True)
class Metadata:
    raw: dict[str, Any]
    # The bytes it was parsed from: a signature covers those, not a re-serialization.
    data: bytes | None = field(default=None, compare=False, repr=False)

    @property
    def stored_bytes(self) -> bytes:
        return self.data if self.data is not None else self.to_json()

    @property
    def model(self) -> str | None:
        """The model it names (versions published before signing existed name none)."""
        value = self.raw.get("model")
        return value if isinstance(value, str) else None

    @property
    def version(self) -> str:
        return str(self.raw["version"])

    @property
    def created(self) -> str:
        return str(self.raw["created"])

    @property
    def metrics(self) -> dict[str, float]:
        return dict(self.raw.get("metrics") or {})

    @property
    def files(self) -> dict[str, FileEntry]:
        return {
            name: FileEntry(sha256=e["sha256"], size=int(e["size"]))
            for name, e in self.raw["files"].items()
        }

    @property
    def size(self) -> int:
        return sum(e.size for e in self.files.values())

    def to_json(self) -> bytes:
        return (json.dumps(self.raw, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def parse(cls, data: bytes, where: str, expect_version: str | None = None) -> Metadata:
        try:
            raw = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InvalidMetadata(f"{where} is not valid JSON: {e}") from e
        if not isinstance(raw, dict):
            raise InvalidMetadata(f"{where} is not a JSON object")
        problem = _problem(raw, expect_version)
        if problem:
            raise InvalidMetadata(f"{where}: {problem}")
        return cls(raw, data)


def _problem(raw: dict[str, Any], expect_version: str | None) -> str | None:
    version = raw.get("version")
    if not isinstance(version, str):
        return "'version' is missing or not a string"
    if expect_version is not None and version != expect_version:
        return f"'version' is {version!r} but the folder is {expect_version!r}"
    created = raw.get("created")
    if not isinstance(created, str):
        return "'created' is missing or not a string"
    try:
        parse_time(created)
    except ValueError:
        return f"'created' is {created!r}, not an RFC 3339 time"
    files = raw.get("files")
    if not isinstance(files, dict) or not files:
        return "'files' is missing, empty or not an object"
    for name, entry in files.items():
        try:
            check_file_path(name)
        except InvalidName as e:
            return f"lists an unusable file path: {e}"
        if name == METADATA_FILE:
            return f"lists {METADATA_FILE} as one of its own files"
        if not isinstance(entry, dict):
            return f"file {name!r} has no sha256/size object"
        if not isinstance(entry.get("sha256"), str) or not _SHA256_RE.fullmatch(entry["sha256"]):
            return f"file {name!r} has no valid lower-case hex sha256"
        size = entry.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            return f"file {name!r} has no valid size"
    clash = path_collision(list(files))
    if clash:
        return f"lists both {clash[0]!r} and {clash[1]!r}: one path cannot be a file and a folder"
    metrics = raw.get("metrics", {})
    if metrics is None:
        metrics = {}
    if not isinstance(metrics, dict):
        return "'metrics' is not an object"
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not _finite(value):
            return f"metric {key!r} is {str(value)[:40]!r}, not a finite number"
    return None


def _finite(value: float) -> bool:
    """math.isfinite, but a 400-digit integer (valid JSON) is not a metric: isfinite raises
    OverflowError on it, which escaped as a crash instead of this file's error."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False
