"""What the Python API returns: frozen dataclasses, each with to_json where the CLI prints it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelswap.errors import ModelswapError
from modelswap.gate import GateResult
from modelswap.progress import ProgressSink
from modelswap.records import Event


@dataclass(frozen=True)
class SignatureInfo:
    """Who signed a version. `key` is the fingerprint the signature names; `verified` is
    True only when a trusted key checked it (then `trusted_key` is that key's file)."""

    version: str
    signed: bool
    key: str | None
    verified: bool
    trusted_key: str | None
    problem: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "signed": self.signed,
            "key": self.key,
            "verified": self.verified,
            "trusted_key": self.trusted_key,
            "problem": self.problem,
        }


@dataclass(frozen=True)
class VersionInfo:
    """One row of `versions`: a complete version, or a folder that is not one (`problem`)."""

    version: str
    created: str | None
    size: int
    metrics: dict[str, float]
    pointers: tuple[str, ...]
    complete: bool
    problem: str | None
    git_sha: str | None = None
    training_data: str | None = None
    signed: bool = False  # it has a model.sig (whether a trusted key made it: `signature`)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "created": self.created,
            "metrics": dict(self.metrics),
            "size": self.size,
            "pointers": list(self.pointers),
            "complete": self.complete,
            "problem": self.problem,
            "git_sha": self.git_sha,
            "training_data": self.training_data,
            "signed": self.signed,
        }


@dataclass(frozen=True)
class History:
    events: tuple[Event, ...]
    warnings: tuple[ModelswapError, ...]  # unreadable events, malformed pointers: skipped


@dataclass(frozen=True)
class PromoteResult:
    """What a promote did: `event` is None when the pointer already named the version."""

    model: str
    pointer: str
    version: str
    event: Event | None
    gate: GateResult | None = None  # None when not gated, or when a forced gate could not judge
    forced: bool = False

    @property
    def moved(self) -> bool:
        return self.event is not None


__all__ = ["History", "ProgressSink", "PromoteResult", "VersionInfo"]
