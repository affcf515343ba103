"""The agent's logger. structlog would import rich to draw tracebacks when it is installed
(sigstore brings it: ~40 ms of every agent start, --once included); the agent logs errors as
one line each, so structlog's plain formatting will do (modelswap.lean says why)."""

from __future__ import annotations

from modelswap.lean import without

with without("rich", "better_exceptions"):
    import structlog

log = structlog.get_logger("modelswap.agent")

__all__ = ["log", "structlog"]
