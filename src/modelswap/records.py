"""The registry's JSON records as typed values, each with one to_json and one from_json.

    Event       <model>/events/<seq>.json       one pointer move (`history --json`)
    GateRecord  an event's `gate`                what the gate judged, or why it could not
    FleetReport <model>/fleet/<instance>.json    an agent's last word (`status`)

from_json never drops a key it does not know (`extra`), so a record written by a newer
modelswap survives a read and re-write by this one; to_json writes the same shape every time.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

EVENT_FIELDS = ("seq", "time", "actor", "pointer", "from", "to", "reason", "gate", "type")
_EVENT_OPTIONAL = ("move_id", "recovered")  # written only when set
_EVENT_KNOWN = frozenset({*EVENT_FIELDS, *_EVENT_OPTIONAL})
_RESULT_FIELDS = (
    "candidate",
    "against",
    "metric",
    "direction",
    "new",
    "current",
    "tolerance",
    "floor",
    "eval_set",
    "eval_set_sha256",
    "verdict",
    "metrics",
)
_GATE_TYPES: dict[str, type | tuple[type, ...]] = {
    "passed": bool,
    "forced": bool,
    "forced_by": str,
    "error": str,
    "candidate": str,
    "against": str,
    "metric": str,
    "direction": str,
    "new": (int, float),
    "current": (int, float),
    "tolerance": (int, float),
    "floor": (int, float),
    "eval_set": str,
    "eval_set_sha256": str,
    "verdict": str,
    "metrics": dict,
}
REPORT_FIELDS = (
    "instance",
    "pointer",
    "desired_version",
    "active_version",
    "ready",
    "last_change",
    "last_error",
    "heartbeat",
    "signed_by",
    "follows",
    "follow_reason",
    "rollout",
    "bucket",
    "refused_version",
    "refusal",
    "served_version",
    "metrics",
)
_REPORT_TEXT = (
    "desired_version",
    "active_version",
    "last_change",
    "last_error",
    "signed_by",
    "follows",
    "follow_reason",
    "rollout",
    "refused_version",
    "refusal",
    "served_version",
)


@dataclass(frozen=True)
class GateRecord:
    """A gate's verdict as an event records it. A gate that could not judge (a broken eval
    set, an evaluator that crashed) and was forced carries `error` and no measurements."""

    passed: bool
    forced: bool = False
    forced_by: str | None = None
    error: str | None = None
    candidate: str | None = None
    against: str | None = None
    metric: str | None = None
    direction: str | None = None
    new: float | None = None
    current: float | None = None
    tolerance: float | None = None
    floor: float | None = None
    eval_set: str | None = None
    eval_set_sha256: str | None = None
    verdict: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def measured(self) -> bool:
        return self.metric is not None and self.new is not None

    def summary(self) -> str:
        """One word or phrase for a history table."""
        if self.forced:
            return f"FORCED by {self.forced_by}"
        if self.measured and isinstance(self.new, int | float):
            return f"pass {self.metric}={self.new:.4f}"
        return "pass" if self.passed else "refused"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.error is not None:
            out["error"] = self.error
        if self.metric is not None:  # a measured verdict: every field, as GateResult has them
            out.update({k: getattr(self, k) for k in _RESULT_FIELDS})
        else:  # the fields a record without a metric does carry
            out.update({k: getattr(self, k) for k in _RESULT_FIELDS if getattr(self, k)})
        out.update({"passed": self.passed, "forced": self.forced, "forced_by": self.forced_by})
        # What was stored as another type (a hand edit) goes back as it was.
        out.update({k: v for k, v in self.extra.items() if out.get(k) is None})
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> GateRecord:
        """Known fields of the expected type become attributes; anything else (unknown keys,
        and known ones of another type, as a hand edit may leave) is kept in `extra`."""
        values: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for k, v in raw.items():
            want = _GATE_TYPES.get(k)
            if want is not None and (v is None or isinstance(v, want)):
                values[k] = v
            else:
                extra[k] = v
        values["passed"] = values.get("passed") is True
        values["forced"] = values.get("forced") is True
        values["metrics"] = values.get("metrics") or {}
        return cls(**values, extra=extra)


@dataclass(frozen=True)
class Event:
    """One logged pointer move (`history --json` fields; `from` is `from_version` here).
    `seq` is None for an out-of-band edit noticed but not (yet) logged."""

    pointer: str
    from_version: str | None
    to: str | None
    type: str
    actor: str | None = None
    time: str | None = None
    reason: str | None = None
    gate: GateRecord | None = None
    seq: int | None = None
    move_id: str | None = None  # which move wrote it (its lease's owner)
    recovered: bool | None = None  # logged by the mover that settled a dead one's move
    extra: dict[str, Any] = field(default_factory=dict)

    def with_seq(self, seq: int | None) -> Event:
        return dataclasses.replace(self, seq=seq)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            **self.extra,
            "seq": self.seq,
            "time": self.time,
            "actor": self.actor,
            "pointer": self.pointer,
            "from": self.from_version,
            "to": self.to,
            "reason": self.reason,
            "gate": self.gate.to_json() if self.gate is not None else None,
            "type": self.type,
        }
        for k in _EVENT_OPTIONAL:
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Event:
        """The caller checks the fields that matter (events.py names the object when one is
        wrong); here a missing or odd field reads as None."""
        gate = raw.get("gate")
        seq = raw.get("seq")
        known = _EVENT_KNOWN
        return cls(
            pointer=str(raw.get("pointer")),
            from_version=text_or_none(raw.get("from")),
            to=text_or_none(raw.get("to")),
            type=str(raw.get("type") or "promote"),
            actor=text_or_none(raw.get("actor")),
            time=text_or_none(raw.get("time")),
            reason=text_or_none(raw.get("reason")),
            gate=GateRecord.from_json(gate) if isinstance(gate, dict) else None,
            seq=seq if isinstance(seq, int) and not isinstance(seq, bool) else None,
            move_id=text_or_none(raw.get("move_id")),
            recovered=raw.get("recovered") if isinstance(raw.get("recovered"), bool) else None,
            extra={
                k: v
                for k, v in raw.items()
                if k not in known
                or (k == "move_id" and not isinstance(v, str))
                or (k == "recovered" and not isinstance(v, bool))
            },
        )


@dataclass(frozen=True)
class FleetReport:
    """What an agent writes after every change and as a heartbeat."""

    instance: str
    pointer: str
    desired_version: str | None
    active_version: str | None
    ready: bool
    last_change: str | None
    last_error: str | None
    heartbeat: str
    signed_by: str | None = None  # the trusted key that signed active_version (--trust-key)
    follows: str | None = None  # the pointer it follows now: CURRENT, or CANARY in a rollout
    follow_reason: str | None = None  # why (its bucket against the rollout's fraction)
    rollout: str | None = None  # the id of the rollout it saw
    bucket: float | None = None
    refused_version: str | None = None  # a version it would not serve (verification, load)
    refusal: str | None = None  # why, in one line
    served_version: str | None = None  # what the app's loader serves (agent --loader-url)
    metrics: dict[str, Any] | None = None  # the app's counters per version (--metrics-url)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {**self.extra, **{k: getattr(self, k) for k in REPORT_FIELDS}}

    @classmethod
    def from_json(cls, raw: dict[str, Any], stored_as: str) -> FleetReport | str:
        """The report, or what is wrong with it (fleet.py shows that instead of trusting it).
        `stored_as` is the instance name its key says."""
        if raw.get("instance") != stored_as:
            return f"names instance {raw.get('instance')!r} but is stored as {stored_as!r}"
        if not isinstance(raw.get("pointer"), str):
            return "names no pointer"
        if not isinstance(raw.get("ready"), bool):
            return f"ready is {raw.get('ready')!r}, not true or false"
        if not isinstance(raw.get("heartbeat"), str):
            return f"heartbeat {raw.get('heartbeat')!r} is not an RFC 3339 time with a zone"
        for name in _REPORT_TEXT:
            if not isinstance(raw.get(name), str | None):
                return f"{name} is {raw.get(name)!r}, not text"
        bucket = raw.get("bucket")
        if isinstance(bucket, bool) or not isinstance(bucket, int | float | None):
            return f"bucket is {bucket!r}, not a number"
        if not isinstance(raw.get("metrics"), dict | None):
            return "metrics is not a JSON object"
        return cls(
            instance=stored_as,
            pointer=raw["pointer"],
            desired_version=text_or_none(raw.get("desired_version")),
            active_version=text_or_none(raw.get("active_version")),
            ready=raw["ready"],
            last_change=text_or_none(raw.get("last_change")),
            last_error=text_or_none(raw.get("last_error")),
            heartbeat=raw["heartbeat"],
            signed_by=text_or_none(raw.get("signed_by")),
            follows=text_or_none(raw.get("follows")),
            follow_reason=text_or_none(raw.get("follow_reason")),
            rollout=text_or_none(raw.get("rollout")),
            bucket=float(bucket) if bucket is not None else None,
            refused_version=text_or_none(raw.get("refused_version")),
            refusal=text_or_none(raw.get("refusal")),
            served_version=text_or_none(raw.get("served_version")),
            metrics=raw.get("metrics"),
            extra={k: v for k, v in raw.items() if k not in REPORT_FIELDS},
        )


@dataclass(frozen=True)
class InstanceStatus:
    """One row of `status`: a report as read, judged stale or malformed."""

    instance: str
    active_version: str | None
    desired_version: str | None
    ready: bool
    last_change: str | None
    last_error: str | None
    heartbeat: str | None
    stale: bool
    malformed: str | None = None
    signed_by: str | None = None
    follows: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class FleetStatus:
    """`status --json`: converged when every fresh instance is ready on the version the
    pointer names (and at least one is)."""

    pointer: str
    version: str | None
    converged: bool
    instances: tuple[InstanceStatus, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "pointer": self.pointer,
            "version": self.version,
            "converged": self.converged,
            "instances": [i.to_json() for i in self.instances],
        }


def text_or_none(value: Any) -> str | None:
    """value if it is a string, else None (a field a reader can show as text)."""
    return value if isinstance(value, str) else None
