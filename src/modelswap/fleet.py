"""Fleet reports: <model>/fleet/<instance>.json written by agents, read by `modelswap status`."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from modelswap.errors import InvalidName, ModelswapError
from modelswap.metadata import parse_time, utc_now
from modelswap.pointers import read_pointer
from modelswap.redact import redact_value
from modelswap.registry import Registry

FLEET_DIR = "fleet"
INSTANCE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")


def check_instance(value: str) -> str:
    if not INSTANCE_RE.fullmatch(value):
        raise InvalidName(
            f"invalid instance id {value!r}",
            hint="instance ids match [A-Za-z0-9][A-Za-z0-9._-]*; the pod or host name works",
        )
    return value


def report_key(model: str, instance: str) -> str:
    return f"{model}/{FLEET_DIR}/{instance}.json"


def write_report(registry: Registry, model: str, status: dict[str, Any]) -> None:
    body = {
        "instance": status["instance"],
        "pointer": status["pointer"],
        "desired_version": status["desired_version"],
        "active_version": status["active_version"],
        "ready": status["ready"],
        "last_change": status["last_change"],
        "last_error": status["last_error"],
        "heartbeat": utc_now(),
    }
    body = redact_value(body)
    registry.store.put(report_key(model, status["instance"]), json.dumps(body).encode())


def fleet_status(
    registry: Registry, model: str, pointer: str, stale_after_s: float
) -> dict[str, Any]:
    """{pointer, version, converged, instances: [...]}: converged when every fresh instance is
    ready on the version the pointer names (and at least one is)."""
    registry.require_model(model)
    state = read_pointer(registry, model, pointer)
    version = state.version if state else None
    now = datetime.now(UTC)
    instances = []
    for info in registry.store.objects(f"{model}/{FLEET_DIR}/"):
        try:
            body = json.loads(registry.store.read(info.key, max_bytes=1 << 16).data)
            heartbeat = parse_time(str(body["heartbeat"]))
        except (ModelswapError, ValueError, KeyError, TypeError):
            continue  # not a report an agent wrote; ignore rather than fail the whole view
        if body.get("pointer", pointer) != pointer:
            continue
        instances.append(
            {
                "instance": body.get("instance"),
                "active_version": body.get("active_version"),
                "desired_version": body.get("desired_version"),
                "ready": bool(body.get("ready")),
                "last_change": body.get("last_change"),
                "last_error": body.get("last_error"),
                "heartbeat": body["heartbeat"],
                "stale": (now - heartbeat).total_seconds() > stale_after_s,
            }
        )
    fresh = [i for i in instances if not i["stale"]]
    converged = bool(fresh) and all(i["ready"] and i["active_version"] == version for i in fresh)
    return {"pointer": pointer, "version": version, "converged": converged, "instances": instances}
