"""Rollouts: one `<model>/ROLLOUT` object, moved by compare-and-swap (PRODUCT.md section 10).

    {id, version, baseline, salt, steps, step, state, started, updated, judge, ...}

While a rollout is `running` or `paused`, CANARY names the candidate and an agent whose bucket
(sha256 of `<salt>|<model>|<instance>`, first 8 bytes over 2^64) is below the step's fraction
follows CANARY; everyone else, and everyone once it is `promoted`, `aborted` or `rolled-back`,
follows CURRENT. Raising the fraction only adds instances (the bucket never changes). Each
decision is an event; the controller that makes them unattended is in controller.py.

Order of writes, so that an agent never follows a CANARY the rollout did not set: ROLLOUT is
written first (CAS; of two starts one wins), then CANARY moves; when a rollout ends, CANARY
is put back on what CURRENT names, so a stale CANARY is the live version.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from typing import Any

from modelswap import keys
from modelswap.errors import (
    ObjectExists,
    ObjectNotFound,
    PointerMoved,
    PreconditionFailed,
    RegistryError,
)
from modelswap.events import EventLog
from modelswap.metadata import parse_time, utc_now
from modelswap.pointers import acquire_moves
from modelswap.records import Event
from modelswap.registry import Registry

ROLLOUT_MAX_BYTES = 1 << 20
ACTIVE = ("running", "paused")
STATES = (*ACTIVE, "promoted", "aborted", "rolled-back")
CANARY = "CANARY"
CURRENT = "CURRENT"
DEFAULT_STEPS = (10, 50, 100)
DEFAULT_BAKE_S = 60.0
DEFAULT_DEADLINE_S = 600.0


class InvalidRollout(RegistryError):
    default_hint = "ROLLOUT is written by `modelswap rollout`; abort it, or fix it by hand"


class Quarantined(RegistryError):
    default_hint = "promote another version, or pass --force with --reason to promote it anyway"


def bucket(salt: str, model: str, instance: str) -> float:
    """Where an instance falls in [0, 1): the exact formula of PRODUCT.md section 10."""
    digest = hashlib.sha256(f"{salt}|{model}|{instance}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class Rollout:
    id: str
    model: str
    version: str
    baseline: str
    salt: str
    steps: tuple[int, ...]
    step: int
    state: str
    started: str
    updated: str
    step_started: str
    actor: str
    reason: str | None = None
    bake_s: float = DEFAULT_BAKE_S
    min_instances: int = 1
    deadline_s: float = DEFAULT_DEADLINE_S
    converged_since: str | None = None  # when the step's canary share was first all ready
    stopped: str | None = None  # why it is no longer running, in words
    evidence: dict[str, Any] | None = None  # what an auto-rollback saw
    # A decision written but whose side effects (an event, a pointer move, a quarantine) may
    # not all have happened yet: whoever finds it finishes them (rollout_verbs.finish).
    pending: dict[str, Any] | None = None
    judge: dict[str, Any] = field(default_factory=dict)  # judge.Criteria.to_json(); {}: none
    # The judge's last verdict when its result or run of failures changed (the window it
    # judges, with every instance's marks and the freshest verdict, is its own object: see
    # analysis.py), and the baseline's traffic before the final step, which the last step
    # and the bake after promotion compare with.
    verdict: dict[str, Any] | None = None
    before: dict[str, Any] | None = None
    watch_until: str | None = None  # promoted, and watched for a regression until then
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def fraction(self) -> float:
        """The share of the fleet on CANARY now (0 once the rollout is over)."""
        return self.steps[self.step] / 100 if self.active else 0.0

    @property
    def watching(self) -> bool:
        """Promoted, and still watched for a regression (the bake after promotion)."""
        return self.state == "promoted" and self.watch_until is not None

    @property
    def last_step(self) -> bool:
        return self.step == len(self.steps) - 1

    def follows(self, instance: str) -> tuple[str, float, str]:
        """(pointer, bucket, why) for an instance of this model."""
        b = bucket(self.salt, self.model, instance)
        if not self.active:
            return CURRENT, b, f"rollout {self.id} is {self.state}"
        if b < self.fraction:
            return CANARY, b, f"bucket {b:.4f} < {self.fraction:g} (rollout {self.id})"
        return CURRENT, b, f"bucket {b:.4f} >= {self.fraction:g} (rollout {self.id})"

    def but(self, **changes: Any) -> Rollout:
        return dataclasses.replace(self, updated=utc_now(), **changes)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.extra,
            "id": self.id,
            "model": self.model,
            "version": self.version,
            "baseline": self.baseline,
            "salt": self.salt,
            "steps": list(self.steps),
            "step": self.step,
            "state": self.state,
            "started": self.started,
            "updated": self.updated,
            "step_started": self.step_started,
            "actor": self.actor,
            "reason": self.reason,
            "bake_s": self.bake_s,
            "min_instances": self.min_instances,
            "deadline_s": self.deadline_s,
            "converged_since": self.converged_since,
            "stopped": self.stopped,
            "evidence": self.evidence,
            "pending": self.pending,
            "judge": self.judge,
            "verdict": self.verdict,
            "before": self.before,
            "watch_until": self.watch_until,
        }

    @classmethod
    def from_json(cls, raw: Any, where: str) -> Rollout:
        if not isinstance(raw, dict):
            raise InvalidRollout(f"{where} is not a JSON object")
        try:
            steps = tuple(raw["steps"])
            r = cls(
                id=_text(raw, "id"),
                model=_text(raw, "model"),
                version=_text(raw, "version"),
                baseline=_text(raw, "baseline"),
                salt=_text(raw, "salt"),
                steps=steps,
                step=_int(raw["step"]),
                state=_text(raw, "state"),
                started=_text(raw, "started"),
                updated=_text(raw, "updated"),
                step_started=_text(raw, "step_started"),
                actor=_text(raw, "actor"),
                reason=raw.get("reason") if isinstance(raw.get("reason"), str) else None,
                bake_s=_seconds(raw.get("bake_s", DEFAULT_BAKE_S)),
                min_instances=_int(raw.get("min_instances", 1)),
                deadline_s=_seconds(raw.get("deadline_s", DEFAULT_DEADLINE_S)),
                converged_since=raw.get("converged_since")
                if isinstance(raw.get("converged_since"), str)
                else None,
                stopped=raw.get("stopped") if isinstance(raw.get("stopped"), str) else None,
                evidence=raw.get("evidence") if isinstance(raw.get("evidence"), dict) else None,
                pending=raw.get("pending") if isinstance(raw.get("pending"), dict) else None,
                judge=dict(raw["judge"]) if isinstance(raw.get("judge"), dict) else {},
                verdict=_object(raw.get("verdict")),
                before=_object(raw.get("before")),
                watch_until=raw.get("watch_until")
                if isinstance(raw.get("watch_until"), str)
                else None,
                extra={k: v for k, v in raw.items() if k not in _FIELDS},
            )
            for t in (r.started, r.updated, r.step_started, r.converged_since, r.watch_until):
                if t is not None:
                    parse_time(t)  # a time the controller cannot read: not a rollout
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            raise InvalidRollout(f"{where} is not a rollout: {type(e).__name__} {e}") from e
        problem = check_steps(list(r.steps)) if all(isinstance(s, int) for s in steps) else "x"
        if problem or r.state not in STATES or not 0 <= r.step < len(r.steps):
            raise InvalidRollout(f"{where}: steps {list(steps)}, step {r.step}, state {r.state!r}")
        return r


_FIELDS = {f.name for f in dataclasses.fields(Rollout)} - {"extra"}


def _object(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{value!r} is not an integer")
    return value


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TypeError(f"{value!r} is not a number of seconds")
    return float(value)


def _text(raw: dict[str, Any], name: str) -> str:
    value = raw[name]
    if not isinstance(value, str):
        raise TypeError(f"{name} is not text")
    return value


def check_steps(steps: list[int]) -> str | None:
    """What is wrong with a step list (percent of the fleet, rising, ending at 100)."""
    if not steps:
        return "--steps needs at least one step, e.g. 10,50,100"
    if any(not 0 < s <= 100 for s in steps):
        return f"--steps {','.join(map(str, steps))}: each step is a percent in 1..100"
    if any(a >= b for a, b in itertools.pairwise(steps)):
        return f"--steps {','.join(map(str, steps))}: steps must rise"
    if steps[-1] != 100:
        return f"--steps {','.join(map(str, steps))}: the last step must be 100"
    return None


# -- reading and writing ROLLOUT ---------------------------------------------------------------


def read(registry: Registry, model: str) -> tuple[Rollout, str] | None:
    """The rollout and its ETag, or None when the model never had one."""
    key = keys.rollout(model)
    try:
        blob = registry.store.read(key, max_bytes=ROLLOUT_MAX_BYTES)
    except ObjectNotFound:
        return None
    where = f"{registry.store.url}/{key}"
    if blob.truncated:
        raise InvalidRollout(f"{where} is {blob.size} bytes, too large for a rollout")
    return parse(blob.data, where), blob.etag


def parse(data: bytes, where: str) -> Rollout:
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, ValueError) as e:
        raise InvalidRollout(f"{where} is not valid JSON: {e}") from e
    return Rollout.from_json(raw, where)


def write(registry: Registry, rollout: Rollout, etag: str | None) -> str:
    """Compare-and-swap ROLLOUT from `etag` (None: create-only); its new ETag. PointerMoved
    when someone else wrote it first: nothing was changed."""
    key = keys.rollout(rollout.model)
    # allow_nan=False: an infinity that slipped into the evidence fails here, not in a reader
    data = (
        json.dumps(rollout.to_json(), indent=2, sort_keys=True, allow_nan=False) + "\n"
    ).encode()
    try:
        if etag is None:
            return registry.store.put_new(key, data)
        return registry.store.put_if_match(key, data, etag)
    except (PreconditionFailed, ObjectExists) as e:
        raise PointerMoved(
            f"{rollout.model}/ROLLOUT changed while this command ran; nothing changed",
            hint="`modelswap rollout status` shows what it is now",
        ) from e


def log(
    registry: Registry,
    rollout: Rollout,
    type_: str,
    actor: str,
    reason: str,
    *,
    once: bool,
    evidence: dict[str, Any] | None = None,
) -> None:
    """A decision that moves no pointer (a step, a pause): an event on CANARY from and to the
    candidate, so each pointer's chain of from/to stays unbroken. Written under the moves lease
    (a human's CANARY move cannot slip in between); with `once`, not if already logged (a
    crashed writer's decision being finished)."""
    events = EventLog(registry.store, rollout.model)
    if once and any(
        e.type == type_
        and isinstance(e.extra.get("rollout"), dict)
        and e.extra["rollout"].get("id") == rollout.id
        and e.extra["rollout"].get("step") == rollout.step + 1
        for e in events.all()
    ):
        return
    event = Event(
        pointer=CANARY,
        from_version=rollout.version,
        to=rollout.version,
        type=type_,
        actor=actor,
        time=utc_now(),
        reason=reason,
        extra={"rollout": summary(rollout, evidence)},
    )
    with acquire_moves(registry, rollout.model, actor=actor):
        events.append(event)


def summary(rollout: Rollout, evidence: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": rollout.id,
        "version": rollout.version,
        "baseline": rollout.baseline,
        "step": rollout.step + 1,
        "steps": list(rollout.steps),
        "fraction": rollout.steps[rollout.step] / 100,
        "state": rollout.state,
    }
    if evidence is not None:
        out["evidence"] = evidence
    return out


# -- quarantine --------------------------------------------------------------------------------


def quarantine(registry: Registry, rollout: Rollout, why: str, evidence: dict[str, Any]) -> None:
    """Mark the candidate as rolled back (create-only: the first record stays)."""
    body = {
        "version": rollout.version,
        "time": utc_now(),
        "rollout": rollout.id,
        "reason": why,
        "evidence": evidence,
    }
    with contextlib.suppress(ObjectExists):
        registry.store.put_new(
            keys.quarantine(rollout.model, rollout.version),
            (json.dumps(body, indent=2, sort_keys=True) + "\n").encode(),
        )


def quarantined(registry: Registry, model: str, version: str) -> dict[str, Any] | None:
    try:
        blob = registry.store.read(keys.quarantine(model, version), max_bytes=ROLLOUT_MAX_BYTES)
    except ObjectNotFound:
        return None
    try:
        body = json.loads(blob.data)
    except ValueError:
        body = None
    return body if isinstance(body, dict) else {"reason": "unreadable quarantine record"}


def refuse_quarantined(registry: Registry, model: str, version: str) -> None:
    record = quarantined(registry, model, version)
    if record is not None:
        raise quarantine_error(model, version, record)


def quarantine_error(model: str, version: str, record: dict[str, Any]) -> Quarantined:
    return Quarantined(
        f"{model}/{version} is quarantined: {record.get('reason', 'rolled back')} "
        f"(rollout {record.get('rollout', '?')}, {record.get('time', '?')})"
    )
