"""The rollout verbs: start, step (and promote at 100%), pause, resume, abort. Each reads
ROLLOUT, checks, and writes it back by compare-and-swap (rollouts.py has the record)."""

from __future__ import annotations

import contextlib
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from modelswap.errors import Busy, PointerMoved, UsageError
from modelswap.judge import Criteria
from modelswap.metadata import rfc3339, utc_now
from modelswap.pointers import Move, move_pointer, read_pointer, require_pointer
from modelswap.registry import Registry
from modelswap.rollouts import (
    ACTIVE,
    CANARY,
    CURRENT,
    DEFAULT_BAKE_S,
    DEFAULT_DEADLINE_S,
    DEFAULT_STEPS,
    Rollout,
    check_steps,
    log,
    quarantine,
    read,
    refuse_quarantined,
    summary,
    write,
)


@dataclass(frozen=True)
class StartRequest:
    model: str
    version: str
    actor: str
    steps: tuple[int, ...] = DEFAULT_STEPS
    bake_s: float = DEFAULT_BAKE_S
    min_instances: int = 1
    deadline_s: float = DEFAULT_DEADLINE_S
    reason: str | None = None
    salt: str | None = None  # the same salt keeps the same instances in the share
    judge: Criteria = field(default_factory=Criteria)  # no criteria: readiness alone decides


def start(registry: Registry, req: StartRequest) -> Rollout:
    problem = check_steps(list(req.steps))
    if problem:
        raise UsageError(problem)
    if req.bake_s < 0 or req.deadline_s <= 0 or req.min_instances < 1:
        raise UsageError("--bake must be >= 0, --progress-deadline > 0, --min-instances >= 1")
    if req.salt is not None and not 0 < len(req.salt) <= 128:
        raise UsageError("--salt must be 1 to 128 characters", hint="e.g. --salt cohort-a")
    registry.check_stored(req.model, req.version)
    refuse_quarantined(registry, req.model, req.version)
    baseline = require_pointer(registry, req.model, CURRENT).version
    if baseline == req.version:
        raise UsageError(
            f"{req.model}/CURRENT already names {req.version}: nothing to roll out",
            hint="publish a new version first",
        )
    req.judge.check()
    if req.judge.compares and len(req.steps) == 1:
        raise UsageError(
            "--max-error-ratio, --max-p99-ratio and --metric compare the canary with a baseline "
            "cohort, and --steps 100 leaves no one on the baseline",
            hint="start with a smaller share, e.g. --steps 10,100",
        )
    existing = read(registry, req.model)
    if existing is not None and existing[0].watching:
        r = existing[0]
        raise Busy(
            f"rollout {r.id} promoted {req.model}/{r.version} and watches it until "
            f"{r.watch_until} (the bake after promotion)",
            hint=f"wait for it, or end the watch with `modelswap rollout abort {req.model}`",
        )
    if existing is not None and existing[0].active:
        r = existing[0]
        raise Busy(
            f"rollout {r.id} of {req.model}/{r.version} is {r.state} (step {r.step + 1} of "
            f"{len(r.steps)})",
            hint=f"`modelswap rollout abort {req.model}` first, or wait for it to finish",
        )
    now = utc_now()
    rollout = Rollout(
        id=secrets.token_hex(6),
        model=req.model,
        version=req.version,
        baseline=baseline,
        salt=req.salt or secrets.token_hex(8),
        steps=tuple(req.steps),
        step=0,
        state="running",
        started=now,
        updated=now,
        step_started=now,
        actor=req.actor,
        reason=req.reason,
        bake_s=req.bake_s,
        min_instances=req.min_instances,
        deadline_s=req.deadline_s,
        judge=req.judge.to_json() if req.judge.active else {},
    )
    # ROLLOUT first (of two starts one wins), then CANARY: agents follow CANARY only once it
    # names the candidate (follow.py), and a crash in between is finished by the controller.
    pending = rollout.but(pending=intent("start", req.actor, req.reason))
    etag = write(registry, pending, existing[1] if existing else None)
    return finish(registry, pending, etag)[0]


def require(registry: Registry, model: str) -> tuple[Rollout, str]:
    found = read(registry, model)
    if found is None:
        registry.require_model(model)
        raise UsageError(
            f"{model} has no rollout", hint=f"start one: modelswap rollout start {model} VERSION"
        )
    return found


def advance(
    registry: Registry,
    rollout: Rollout,
    etag: str,
    actor: str,
    reason: str,
    *,
    evidence: dict[str, Any] | None = None,
    before: dict[str, Any] | None = None,
) -> Rollout:
    """The next step of exactly this rollout as read (ETag), or promotion at the last one:
    CURRENT moves from exactly the baseline to the candidate. A ROLLOUT changed meanwhile (a
    human's step, another controller) fails the compare-and-swap: nothing moves. `evidence`
    (the judge's verdict) goes into the event; `before` is kept for the next comparisons."""
    if rollout.state != "running" or rollout.pending is not None:
        raise UsageError(
            f"rollout {rollout.id} is {rollout.state}"
            + (f" and finishing a {rollout.pending['action']}" if rollout.pending else "")
            + "; only a running rollout steps",
            hint=f"modelswap rollout resume {rollout.model}" if rollout.state == "paused" else None,
        )
    if rollout.last_step:
        nxt = rollout.but(
            pending=intent("promote", actor, reason, evidence), before=before or rollout.before
        )
    else:
        nxt = rollout.but(
            step=rollout.step + 1,
            step_started=utc_now(),
            converged_since=None,
            verdict=None,
            before=before or rollout.before,
            pending=intent("step", actor, reason, evidence),
        )
    return finish(registry, nxt, write(registry, nxt, etag))[0]


def set_state(registry: Registry, model: str, state: str, actor: str, reason: str) -> Rollout:
    """pause, resume or abort (abort puts CANARY back on what CURRENT names)."""
    rollout, etag = require(registry, model)
    if state == "aborted" and rollout.watching:  # the promotion stays; only the watch ends
        ended = rollout.but(
            watch_until=None,
            stopped=f"promoted; the bake was ended by {actor}: {reason}",
            pending=intent("bake-ended", actor, reason),
        )
        return finish(registry, ended, write(registry, ended, etag))[0]
    allowed = {"paused": ("running",), "running": ("paused",), "aborted": ACTIVE}[state]
    if rollout.state not in allowed:
        raise UsageError(f"rollout {rollout.id} is {rollout.state}; cannot make it {state}")
    if state == "running":
        check_pointers(registry, rollout)  # a human's move in between: abort instead
    action = {"paused": "pause", "running": "resume", "aborted": "abort"}[state]
    changed = rollout.but(
        state=state,
        stopped=f"{state} by {actor}: {reason}" if state != "running" else None,
        step_started=utc_now() if state == "running" else rollout.step_started,
        converged_since=None,
        pending=intent(action, actor, reason),
    )
    return finish(registry, changed, write(registry, changed, etag))[0]


def intent(
    action: str, actor: str, reason: str | None, evidence: dict[str, Any] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"action": action, "actor": actor, "reason": reason, "at": utc_now()}
    if evidence is not None:
        out["evidence"] = evidence
    return out


def finish(
    registry: Registry, rollout: Rollout, etag: str, *, recovering: bool = False
) -> tuple[Rollout, str]:
    """Carry out a written decision's side effects, each safe to repeat (a crashed writer's
    decision is finished by the next controller with recovering=True), then clear it."""
    p = rollout.pending
    if p is None:
        return rollout, etag
    action, actor = str(p.get("action")), str(p.get("actor") or "unknown")
    reason = str(p.get("reason") or action)
    evidence = p.get("evidence") if isinstance(p.get("evidence"), dict) else None
    final = rollout.state
    if action == "start":
        move_pointer(
            registry,
            Move(
                rollout.model,
                CANARY,
                rollout.version,
                "rollout-step",
                actor,
                reason=f"rollout {rollout.id} started: {rollout.steps[0]}% on "
                f"{rollout.version}" + (f" ({p['reason']})" if p.get("reason") else ""),
                extra={"rollout": summary(rollout)},
            ),
        )
    elif action == "promote":
        current = read_pointer(registry, rollout.model, CURRENT)
        if not (recovering and current is not None and current.version == rollout.version):
            move_pointer(
                registry,
                Move(
                    rollout.model,
                    CURRENT,
                    rollout.version,
                    "rollout-promote",
                    actor,
                    reason=reason,
                    expect=rollout.baseline,
                    extra={"rollout": summary(rollout, evidence)},
                ),
            )
        final = "promoted"
    elif action == "rollback":
        if p.get("current"):  # after promotion: CURRENT back from exactly the candidate
            current = read_pointer(registry, rollout.model, CURRENT)
            moved = recovering and current is not None and current.version == rollout.baseline
            back = Move(
                rollout.model,
                CURRENT,
                rollout.baseline,
                "auto-rollback",
                actor,
                reason=reason,
                expect=rollout.version,
                extra={"rollout": summary(rollout, evidence)},
            )
            try:
                if not moved:
                    move_pointer(registry, back)
            except PointerMoved as e:  # a human moved CURRENT meanwhile: theirs stays
                left = f"; CURRENT was left as it is: {e}"
                rollout = rollout.but(stopped=(rollout.stopped or "") + left)
        quarantine(registry, rollout, reason, evidence or {})
        restore_canary(
            registry, rollout, type_="auto-rollback", actor=actor, reason=reason, evidence=evidence
        )
    elif action == "abort":
        restore_canary(registry, rollout, type_="rollout-abort", actor=actor, reason=reason)
    else:  # step, pause, resume, halt, baked: an event only
        log(
            registry,
            rollout,
            f"rollout-{action}",
            actor,
            reason,
            once=recovering,
            evidence=evidence,
        )
    watch = action == "promote" and bool(rollout.judge) and rollout.bake_s > 0
    done = rollout.but(
        pending=None,
        state=final,
        # promoted with a judge: watched for --bake more (the controller rolls back on a
        # regression against the baseline's traffic before the promotion)
        watch_until=_later(rollout.bake_s) if watch else rollout.watch_until,
        stopped=f"promoted to CURRENT: {reason}" if action == "promote" else rollout.stopped,
        # the first step's clock starts when CANARY names the candidate, not when it was asked
        step_started=utc_now() if action == "start" else rollout.step_started,
    )
    return done, write(registry, done, etag)


def _later(seconds: float) -> str:
    return rfc3339(datetime.now(UTC) + timedelta(seconds=seconds))


def restore_canary(
    registry: Registry,
    rollout: Rollout,
    *,
    type_: str,
    actor: str,
    reason: str,
    evidence: dict[str, Any] | None = None,
) -> None:
    """CANARY back on what CURRENT names (the baseline, unless a human moved CURRENT), from
    exactly the candidate: a CANARY someone else set is kept."""
    current = read_pointer(registry, rollout.model, CURRENT)
    with contextlib.suppress(PointerMoved):  # someone else set CANARY: theirs stays
        move_pointer(
            registry,
            Move(
                rollout.model,
                CANARY,
                current.version if current else rollout.baseline,
                type_,
                actor,
                reason=reason,
                expect=rollout.version,
                extra={"rollout": summary(rollout, evidence)},
            ),
        )


def check_pointers(registry: Registry, rollout: Rollout) -> None:
    """PointerMoved when CANARY or CURRENT no longer holds what the rollout set."""
    canary = read_pointer(registry, rollout.model, CANARY)
    current = read_pointer(registry, rollout.model, CURRENT)
    want_current = rollout.version if rollout.state == "promoted" else rollout.baseline
    if canary is None or canary.version != rollout.version:
        raise PointerMoved(
            f"CANARY names {canary.version if canary else 'nothing'}, not the rollout's "
            f"{rollout.version}: it was moved outside rollout {rollout.id}",
            hint=f"`modelswap history {rollout.model}` shows who; abort the rollout or move "
            f"CANARY back to {rollout.version}",
        )
    if current is None or current.version != want_current:
        raise PointerMoved(
            f"CURRENT names {current.version if current else 'nothing'}, not {want_current}: "
            f"it was moved outside rollout {rollout.id}",
            hint=f"`modelswap history {rollout.model}` shows who; abort the rollout",
        )
