"""modelswap: immutable model versions, a pointer for what is live, rollback in seconds.

`modelswap.Registry` is the Python API (see modelswap.api). Its names are imported on first
use, so `import modelswap.loader` in a serving app stays light (no boto3, no gate).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "Event",
    "FleetStatus",
    "GateRecord",
    "GateRefused",
    "GateResult",
    "GcReport",
    "History",
    "InstanceStatus",
    "Metadata",
    "ModelswapError",
    "ProgressSink",
    "PromoteResult",
    "Registry",
    "SignatureError",
    "SignatureInfo",
    "VersionInfo",
    "__version__",
]

if TYPE_CHECKING:
    from modelswap.api import Registry
    from modelswap.cleanup import GcReport
    from modelswap.errors import GateRefused, ModelswapError, SignatureError
    from modelswap.gate import GateResult
    from modelswap.metadata import Metadata
    from modelswap.records import Event, FleetStatus, GateRecord, InstanceStatus
    from modelswap.results import (
        History,
        ProgressSink,
        PromoteResult,
        SignatureInfo,
        VersionInfo,
    )

_HOMES = {
    "Registry": "modelswap.api",
    "Event": "modelswap.records",
    "GateRecord": "modelswap.records",
    "FleetStatus": "modelswap.records",
    "InstanceStatus": "modelswap.records",
    "History": "modelswap.results",
    "PromoteResult": "modelswap.results",
    "VersionInfo": "modelswap.results",
    "SignatureInfo": "modelswap.results",
    "SignatureError": "modelswap.errors",
    "ProgressSink": "modelswap.results",
    "GcReport": "modelswap.cleanup",
    "GateRefused": "modelswap.errors",
    "ModelswapError": "modelswap.errors",
    "GateResult": "modelswap.gate",
    "Metadata": "modelswap.metadata",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'modelswap' has no attribute {name!r}")
    import importlib  # noqa: PLC0415 - lazily, see the module docstring

    return getattr(importlib.import_module(home), name)
