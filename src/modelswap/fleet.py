"""Fleet reports: <model>/fleet/<instance>.json written by agents, read by `modelswap status`."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from modelswap import keys
from modelswap.errors import InvalidName, ModelswapError
from modelswap.metadata import parse_time, utc_now
from modelswap.pointers import read_pointer
from modelswap.records import FleetReport, FleetStatus, InstanceStatus, text_or_none
from modelswap.redact import redact_value
from modelswap.registry import Registry

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
    return keys.fleet_report(model, instance)


def write_report(registry: Registry, model: str, status: dict[str, Any]) -> None:
    report = FleetReport(
        instance=status["instance"],
        pointer=status["pointer"],
        desired_version=status["desired_version"],
        active_version=status["active_version"],
        ready=status["ready"],
        last_change=status["last_change"],
        last_error=status["last_error"],
        heartbeat=utc_now(),
        signed_by=status.get("signed_by"),
        follows=status.get("follows"),
        follow_reason=status.get("follow_reason"),
        rollout=status.get("rollout"),
        bucket=status.get("bucket"),
        refused_version=status.get("refused_version"),
        refusal=status.get("refusal"),
        served_version=status.get("served_version"),
        metrics=status.get("metrics"),
    )
    body = redact_value(report.to_json())
    registry.store.put(report_key(model, report.instance), json.dumps(body).encode())


@dataclass(frozen=True)
class SeenReport:
    name: str  # the instance, as the report's key says
    body: dict[str, Any]
    report: FleetReport | str  # the report, or what is wrong with it
    stale: bool  # no heartbeat within stale_after_s (or none that can be read)


def read_reports(
    registry: Registry, model: str, pointer: str, stale_after_s: float
) -> Iterator[SeenReport]:
    """Every report of agents following `pointer`, each judged once: unreadable, malformed, a
    heartbeat without a zone or from the future, stale (`status` and the controller)."""
    now = datetime.now(UTC)
    prefix = keys.fleet_prefix(model)
    for info in registry.store.objects(prefix):
        name = keys.name_under(prefix, info.key, ".json")
        body, problem = _read_report(registry, info.key)
        if body.get("pointer", pointer) != pointer:
            continue
        report = FleetReport.from_json(body, name) if problem is None else problem
        heartbeat = _aware_time(body.get("heartbeat"))
        if isinstance(report, FleetReport) and heartbeat is None:
            report = f"heartbeat {body.get('heartbeat')!r} is not an RFC 3339 time with a zone"
        if (
            isinstance(report, FleetReport)
            and heartbeat is not None
            and heartbeat - now > FUTURE_SKEW
        ):
            report = f"heartbeat {body.get('heartbeat')} is in the future"
        stale = heartbeat is None or abs((now - heartbeat).total_seconds()) > stale_after_s
        yield SeenReport(name, body, report, stale)


def fleet_status(registry: Registry, model: str, pointer: str, stale_after_s: float) -> FleetStatus:
    """Every agent's report for `pointer`, judged: a report that cannot be read is shown as
    malformed and never counts as ready (silence is not success)."""
    registry.require_model(model)
    state = read_pointer(registry, model, pointer)
    version = state.version if state else None
    instances = []
    for seen in read_reports(registry, model, pointer, stale_after_s):
        name, body, report, stale = seen.name, seen.body, seen.report, seen.stale
        if isinstance(report, FleetReport):
            instances.append(
                InstanceStatus(
                    instance=report.instance,
                    active_version=report.active_version,
                    desired_version=report.desired_version,
                    ready=report.ready,
                    last_change=report.last_change,
                    last_error=report.last_error,
                    heartbeat=report.heartbeat,
                    stale=stale,
                    signed_by=report.signed_by,
                    follows=report.follows,
                )
            )
        else:
            instances.append(
                InstanceStatus(
                    instance=name,
                    active_version=text_or_none(body.get("active_version")),
                    desired_version=text_or_none(body.get("desired_version")),
                    ready=False,
                    last_change=text_or_none(body.get("last_change")),
                    last_error=report,
                    heartbeat=text_or_none(body.get("heartbeat")),
                    stale=stale,
                    malformed=report,
                )
            )
    fresh = [i for i in instances if not i.stale]
    # An instance in a rollout's canary share follows CANARY: it is judged against that.
    wanted = {pointer: version}
    for other in {i.follows for i in fresh} - {pointer, None}:
        try:
            other_state = read_pointer(registry, model, str(other))
        except ModelswapError:  # a report naming no real pointer: never converged
            other_state = None
        wanted[str(other)] = other_state.version if other_state else None
    converged = bool(fresh) and all(
        i.ready and i.active_version == wanted[i.follows or pointer] for i in fresh
    )
    return FleetStatus(pointer, version, converged, tuple(instances))


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
