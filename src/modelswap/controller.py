"""The rollout controller (`modelswap rollout run`): reads the fleet's reports, steps the rollout
when its canary share is ready for the bake time, promotes at 100%, and rolls back by itself.

One pass is `tick`: it never sleeps and decides from what the store holds now, so a controller
killed anywhere and started again resumes from ROLLOUT. Two controllers cannot both act: a
pass runs under the model's controller lease, and every write it makes is a compare-and-swap
from what it read (ROLLOUT by ETag, pointers from exactly what the rollout set), so a human's
move in between stops it instead of being overwritten.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from modelswap import analysis, judge, keys, locks, rollout_verbs, rollouts
from modelswap.errors import Busy, LeaseLost, ModelswapError, PointerMoved
from modelswap.fleet import read_reports
from modelswap.metadata import parse_time, utc_now
from modelswap.pointers import read_pointer
from modelswap.records import FleetReport
from modelswap.registry import Registry
from modelswap.rollouts import CANARY, Rollout

STALE_AFTER_S = 90.0
PENDING_GRACE_S = 10.0  # a decision unfinished for this long was left by a crashed writer
CONTROLLER_LOCK = "rollout-controller"


@dataclass(frozen=True)
class Instance:
    """One fresh fleet report, as the controller judges it."""

    name: str
    bucket: float
    follows: str | None
    rollout: str | None
    active: str | None
    ready: bool
    refused_version: str | None
    refusal: str | None
    served: str | None
    heartbeat: str
    metrics: dict[str, Any] | None = None  # the app's counters (agent --metrics-url)

    def on_canary(self, r: Rollout) -> bool:
        """Following CANARY for this rollout, linked on its version, and (with a loader
        watched) served: ready as a canary."""
        return (
            self.follows == CANARY
            and self.rollout == r.id
            and self.active == r.version
            and self.served in (None, r.version)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "instance": self.name,
            "bucket": round(self.bucket, 6),
            "follows": self.follows,
            "active_version": self.active,
            "ready": self.ready,
            "refused_version": self.refused_version,
            "refusal": self.refusal,
            "served_version": self.served,
        }


@dataclass(frozen=True)
class Decision:
    action: str  # idle | waiting | baking | step | promote | rollback | halt
    detail: str
    rollout: Rollout | None = None


def fleet(registry: Registry, r: Rollout, stale_after_s: float) -> list[Instance]:
    """Every instance on CURRENT or in the share whose last report is well formed and fresh
    (older ones say nothing about now), read and judged as `status` does."""
    out = []
    for seen in read_reports(registry, r.model, rollouts.CURRENT, stale_after_s):
        report = seen.report
        if seen.stale or not isinstance(report, FleetReport):
            continue
        out.append(
            Instance(
                name=seen.name,
                bucket=rollouts.bucket(r.salt, r.model, seen.name),
                follows=report.follows,
                rollout=report.rollout,
                active=report.active_version,
                ready=report.ready,
                refused_version=report.refused_version,
                refusal=report.refusal,
                served=report.served_version,
                heartbeat=report.heartbeat,
                metrics=report.metrics,
            )
        )
    return sorted(out, key=lambda i: i.name)


def tick(
    registry: Registry, model: str, actor: str, *, stale_after_s: float = STALE_AFTER_S
) -> Decision:
    """One look at the rollout and the fleet, and at most one decision."""
    found = rollouts.read(registry, model)
    if found is None:
        return Decision("idle", f"{model} has no rollout")
    r, etag = found
    if r.pending is not None:
        return _finish(registry, r, etag, actor)
    if r.watching:
        return _watch(registry, r, etag, actor, fleet(registry, r, stale_after_s))
    if r.state != "running":
        return Decision("idle", f"rollout {r.id} is {r.state}", r)
    try:
        rollout_verbs.check_pointers(registry, r)
    except PointerMoved as e:
        return _halt(registry, r, etag, actor, str(e))
    instances = fleet(registry, r, stale_after_s)
    refused = [
        i
        for i in instances  # a refusal counts from the share of this rollout only
        if i.refused_version == r.version and i.rollout == r.id and i.follows == CANARY
    ]
    if refused:
        first = refused[0]
        why = f"{len(refused)} instance(s) refused {r.version}; {first.name}: {first.refusal}"
        return _rollback(registry, r, etag, actor, why=why, instances=instances)
    cohort = [i for i in instances if i.bucket < r.fraction]
    ready = [i for i in cohort if i.on_canary(r) and i.ready]
    pending = [i for i in cohort if i not in ready]
    now = datetime.now(UTC)
    in_step = (now - parse_time(r.step_started)).total_seconds()
    share = f"step {r.step + 1}/{len(r.steps)} ({r.steps[r.step]}%)"
    if pending:
        if in_step > r.deadline_s:
            names = ", ".join(i.name for i in pending[:5])
            why = (
                f"{len(pending)} canary instance(s) not on {r.version} after "
                f"{r.deadline_s:g} s (progress deadline): {names}"
            )
            return _rollback(registry, r, etag, actor, why=why, instances=instances)
        if r.converged_since is not None:
            rollouts.write(registry, r.but(converged_since=None), etag)
        return Decision("waiting", f"{share}: {len(ready)} of {len(cohort)} ready", r)
    if len(ready) < r.min_instances:
        return Decision(
            "waiting",
            f"{share}: {len(ready)} canary instance(s) ready, --min-instances is "
            f"{r.min_instances}; holding",
            r,
        )
    if r.converged_since is None:
        baking = r.but(converged_since=utc_now(), verdict=None)
        rollouts.write(registry, baking, etag)
        return Decision("baking", f"{share}: {len(ready)} ready; baking {r.bake_s:g} s", baking)
    criteria = criteria_of(r)
    seen, said, verdict = None, "", None
    if criteria is not None:
        seen = analysis.check(registry, r, criteria, instances)
        verdict = analysis.recorded(seen, r)
        said = f"; {_verdict_line(verdict)}"
        if seen.verdict.result == "fail" and seen.window.fails >= criteria.fail_checks:
            why = f"live metrics failed {seen.window.fails} check(s) in a row: {seen.verdict.why}"
            return _rollback(
                registry, r, etag, actor, why=why, instances=instances, verdict=verdict
            )
        r, etag = _keep(registry, r, etag, seen, verdict)
    baked = (now - parse_time(str(r.converged_since))).total_seconds()
    if baked < r.bake_s:
        return Decision("baking", f"{share}: baked {baked:.0f} of {r.bake_s:g} s{said}", r)
    if seen is not None and seen.verdict.result != "pass":
        return Decision("holding", f"{share}: baked, holding{said}", r)
    nxt = "promote to CURRENT" if r.last_step else f"step {r.step + 2} ({r.steps[r.step + 1]}%)"
    reason = (
        f"{share} held: {len(ready)} canary instance(s) ready on {r.version} for "
        f"{baked:.0f} s{said}; {nxt}"
    )
    try:
        moved = rollout_verbs.advance(
            registry,
            r,
            etag,
            actor,
            reason,
            evidence={"verdict": verdict} if verdict is not None else None,
            before=analysis.baseline_record(seen, r) if seen is not None else r.before,
        )
    except PointerMoved as e:
        return _halt(registry, r, etag, actor, str(e))
    action = "promote" if moved.state == "promoted" else "step"
    return Decision(action, reason, moved)


def criteria_of(r: Rollout) -> judge.Criteria | None:
    """The rollout's judge, or None when it has none (readiness alone decides). A judge the
    controller cannot read is an error in ROLLOUT, raised for the loop to say."""
    if not r.judge:
        return None
    try:
        criteria = judge.Criteria.from_json(r.judge)
    except ValueError as e:
        raise rollouts.InvalidRollout(f"rollout {r.id}: its judge is unreadable: {e}") from e
    return criteria if criteria.active else None


def _verdict_line(verdict: dict[str, Any]) -> str:
    fails = f", {verdict['fails']} of {verdict['fail_checks']} failing" if verdict["fails"] else ""
    return f"verdict {verdict['result']}{fails}: {verdict['why']}"


def _keep(
    registry: Registry, r: Rollout, etag: str, seen: analysis.Check, verdict: dict[str, Any]
) -> tuple[Rollout, str]:
    """Save the window object; write ROLLOUT's verdict only when its result, phase or run of
    failures changed (agents poll ROLLOUT: growing counts alone do not make them read it)."""
    if not analysis.keep(registry, r, seen, verdict):
        return r, etag
    kept = r.but(verdict=verdict)
    return kept, rollouts.write(registry, kept, etag)


def _watch(
    registry: Registry, r: Rollout, etag: str, actor: str, instances: list[Instance]
) -> Decision:
    """The bake after promotion: the fleet on the new version against the baseline before it.
    A regression (or a refusal) rolls CURRENT back; a pass when the bake is over ends it;
    too little traffic keeps watching (silence never passes)."""
    current = read_pointer(registry, r.model, rollouts.CURRENT)
    if current is None or current.version != r.version:
        why = (
            f"CURRENT names {current.version if current else 'nothing'}, not {r.version}: moved "
            f"outside rollout {r.id}; the bake stops"
        )
        halted = r.but(watch_until=None, stopped=f"controller stopped: {why}")
        rollouts.write(registry, halted, etag)
        return Decision("halt", why, halted)
    refused = [i for i in instances if i.refused_version == r.version]
    if refused:
        first = refused[0]
        why = f"{len(refused)} instance(s) refused {r.version}; {first.name}: {first.refusal}"
        return _rollback(registry, r, etag, actor, why=why, instances=instances)
    criteria = criteria_of(r)
    if criteria is None:  # a judge removed by hand: nothing to watch with
        ended = r.but(watch_until=None)
        rollouts.write(registry, ended, etag)
        return Decision("idle", f"rollout {r.id} is promoted", ended)
    seen = analysis.watch(registry, r, criteria, instances)
    verdict = analysis.recorded(seen, r)
    said = _verdict_line(verdict)
    if seen.verdict.result == "fail" and seen.window.fails >= criteria.fail_checks:
        why = (
            f"regression after promotion, {seen.window.fails} failing check(s): {seen.verdict.why}"
        )
        return _rollback(registry, r, etag, actor, why=why, instances=instances, verdict=verdict)
    left = (parse_time(str(r.watch_until)) - datetime.now(UTC)).total_seconds()
    over = left <= 0 and seen.verdict.result == "pass"
    # no pass for a whole progress deadline past the bake (too little traffic, or a failure
    # that never repeated because the traffic stopped): stop watching (the promotion stays,
    # as it would without a watch) and say why
    given_up = left <= -r.deadline_s and seen.verdict.result != "pass"
    if over or given_up:
        action = "baked" if over else "bake-ended"
        why = (
            f"baked {r.bake_s:g} s after promotion: {said}"
            if over
            else f"the bake ended without a conclusive pass {r.deadline_s:g} s past --bake "
            f"(--progress-deadline); the promotion stays: {said}"
        )
        done = r.but(
            watch_until=None,
            verdict=verdict,
            stopped=f"promoted to CURRENT; {why}",
            pending=rollout_verbs.intent(action, actor, why, {"verdict": verdict}),
        )
        done, _ = rollout_verbs.finish(registry, done, rollouts.write(registry, done, etag))
        return Decision(action, why, done)
    r, etag = _keep(registry, r, etag, seen, verdict)
    when = f"{left:.0f} s left" if left > 0 else "bake over, waiting for a conclusive verdict"
    return Decision("baking", f"promoted; watching ({when}); {said}", r)


def _rollback(
    registry: Registry,
    r: Rollout,
    etag: str,
    actor: str,
    *,
    why: str,
    instances: list[Instance],
    verdict: dict[str, Any] | None = None,
) -> Decision:
    """Quarantine the candidate, put CANARY back on the baseline (from exactly the candidate)
    and mark the rollout rolled-back; after a promotion (the bake), CURRENT too, from exactly
    the candidate. Each step is safe to repeat after a crash."""
    evidence: dict[str, Any] = {
        "why": why,
        "step": r.step + 1,
        "fraction": r.steps[r.step] / 100,
        "instances": [i.to_json() for i in instances if i.bucket < max(r.fraction, 0.0)]
        or [i.to_json() for i in instances],
    }
    if verdict is not None:
        evidence["verdict"] = verdict
    pending = rollout_verbs.intent("rollback", actor, why, evidence)
    if r.watching:
        pending["current"] = True  # promoted: CURRENT goes back to the baseline as well
    done = r.but(
        state="rolled-back",  # at once: every agent follows CURRENT again
        stopped=f"rolled back by the controller: {why}",
        evidence=evidence,
        verdict=verdict or r.verdict,
        watch_until=None,
        pending=pending,
    )
    done, _ = rollout_verbs.finish(registry, done, rollouts.write(registry, done, etag))
    return Decision("rollback", why, done)


def _halt(registry: Registry, r: Rollout, etag: str, actor: str, why: str) -> Decision:
    """A human moved a pointer the rollout set: stop, move nothing, and say so."""
    halted = r.but(
        state="paused",
        stopped=f"controller stopped: {why}",
        pending=rollout_verbs.intent("halt", actor, why),
    )
    halted, _ = rollout_verbs.finish(registry, halted, rollouts.write(registry, halted, etag))
    return Decision("halt", why, halted)


def _finish(registry: Registry, r: Rollout, etag: str, actor: str) -> Decision:
    """A decision whose side effects are not all done: the writer's own, while it may still be
    at work (PENDING_GRACE_S); after that a crashed writer's, and it is finished here."""
    pending = r.pending or {}
    what = f"{pending.get('action')} by {pending.get('actor')}"
    try:
        age = (datetime.now(UTC) - parse_time(str(pending.get("at")))).total_seconds()
    except ValueError:
        age = PENDING_GRACE_S
    if age < PENDING_GRACE_S:
        return Decision("waiting", f"rollout {r.id}: {what} is being carried out", r)
    try:
        done, _ = rollout_verbs.finish(registry, r, etag, recovering=True)
    except PointerMoved as e:
        return _halt(registry, r.but(pending=None), etag, actor, str(e))
    return Decision("recover", f"finished the {what} left unfinished", done)


def lease(registry: Registry, model: str, actor: str) -> locks.Lease:
    """The one lease a controller holds while it acts; Busy names the other holder."""
    return locks.acquire(
        registry.store,
        keys.lock(model, CONTROLLER_LOCK),
        f"the rollout controller of {model}",
        actor=actor,
        ttl_s=registry.lease_ttl_s,
    ).keep_alive()


def run(
    registry: Registry,
    model: str,
    actor: str,
    *,
    interval_s: float,
    once: bool = False,
    stale_after_s: float = STALE_AFTER_S,
    say: Callable[[str], None] = print,
    stop: threading.Event | None = None,
) -> int:
    """The controller loop: acts only while it holds the lease (a second controller stands by
    and takes over when the first stops or dies); says every decision once. With `once`, one
    pass (a CronJob): Busy if another controller holds the lease."""
    stop = stop or threading.Event()
    said = ""
    while not stop.is_set():
        try:
            held = lease(registry, model, actor)
        except Busy as e:
            if once:
                raise
            if f"standby: {e}" != said:
                said = f"standby: {e}"
                say(said)
            stop.wait(interval_s)
            continue
        with held:
            say(f"controller of {model}: holding the lease")
            while not stop.is_set():
                try:
                    held.check()
                    decision = tick(registry, model, actor, stale_after_s=stale_after_s)
                except LeaseLost as e:
                    say(f"lost the lease: {e}")
                    break
                except ModelswapError as e:
                    if once:
                        raise
                    decision = Decision("error", f"{e} (hint: {e.hint})")
                except Exception as e:  # a bug must not end the controller
                    if once:
                        raise
                    decision = Decision("error", f"unexpected {type(e).__name__}: {e}")
                line = f"{decision.action}: {decision.detail}"
                if line != said:
                    said = line
                    say(line)
                if once:
                    return 0
                stop.wait(interval_s)
    return 0
