"""Fleet reports: <model>/fleet/<instance>.json written by agents, read by `modelswap status`."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from modelswap.errors import InvalidName, ModelswapError
from modelswap.metadata import parse_time, utc_now
from modelswap.pointers import read_pointer
from modelswap.redact import redact_value
from modelswap.registry import Registry

FLEET_DIR = "fleet"
REPORT_MAX_BYTES = 1 << 16
FUTURE_SKEW = timedelta(seconds=60)  # clocks disagree a little; a report from 2099 is wrong
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
        body, problem = _read_report(registry, info.key)
        if body.get("pointer", pointer) != pointer:
            continue
        heartbeat = _aware_time(body.get("heartbeat"))
        if problem is None and heartbeat is None:
            problem = f"heartbeat {body.get('heartbeat')!r} is not an RFC 3339 time with a zone"
        if problem is None and not isinstance(body.get("ready"), bool):
            problem = f"ready is {body.get('ready')!r}, not true or false"
        name = info.key[len(f"{model}/{FLEET_DIR}/") :].removesuffix(".json")
        if problem is None and body.get("instance") != name:
            problem = f"names instance {body.get('instance')!r} but is stored as {name!r}"
        if problem is None and "pointer" not in body:
            problem = "names no pointer"
        if problem is None and heartbeat is not None and heartbeat - now > FUTURE_SKEW:
            problem = f"heartbeat {body.get('heartbeat')} is in the future"
        instances.append(
            {
                "instance": body.get("instance") if problem is None else name,
                "active_version": body.get("active_version"),
                "desired_version": body.get("desired_version"),
                # A report that cannot be read is never ready: silence is not success.
                "ready": problem is None and body.get("ready") is True,
                "last_change": body.get("last_change"),
                "last_error": body.get("last_error") if problem is None else problem,
                "heartbeat": body.get("heartbeat"),
                "stale": heartbeat is None
                or abs((now - heartbeat).total_seconds()) > stale_after_s,
                "malformed": problem,
            }
        )
    fresh = [i for i in instances if not i["stale"]]
    converged = bool(fresh) and all(i["ready"] and i["active_version"] == version for i in fresh)
    return {"pointer": pointer, "version": version, "converged": converged, "instances": instances}


def _read_report(registry: Registry, key: str) -> tuple[dict[str, Any], str | None]:
    """A report's body, and what is wrong with it (None when it is an agent's report)."""
    try:
        blob = registry.store.read(key, max_bytes=REPORT_MAX_BYTES)
    except ModelswapError as e:
        return {}, f"unreadable: {e}"
    if blob.truncated:
        return {}, f"{blob.size} bytes, larger than a report"
    try:
        body = json.loads(blob.data)
    except (UnicodeDecodeError, ValueError):
        return {}, "not valid JSON"
    if not isinstance(body, dict):
        return {}, "not a JSON object"
    return body, None


def _aware_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        t = parse_time(value)
    except ValueError:
        return None
    return t if t.tzinfo is not None else None
