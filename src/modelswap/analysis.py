"""Live analysis for the controller: which instances are the canary and which the baseline, what
each served since the judging window opened, and the judge's verdict on the two.

A window opens when a step's canary share is first all ready (or when CURRENT is promoted, for
the bake). Every instance's totals (agent/metrics.py) are marked when it is first seen in the
window, and only what it counts after that is judged, so the canary and its baseline are
measured over the same time; what the canary served while the share was still converging is
left out. The window (every instance's marks), the run of failing checks and the freshest
verdict live in their own object, `<model>/.rollout/window.json`, written by the controller
alone (ROLLOUT, which every agent polls, changes only when the verdict's result or run of
failures does), so a controller restarted, or run as a CronJob with --once, goes on with the
same evidence.

A check counts only when the canary has served more requests since the last counted one: two
looks at the same reports are not two failures.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelswap import judge, keys
from modelswap.errors import ObjectNotFound
from modelswap.metadata import utc_now
from modelswap.registry import Registry
from modelswap.rollouts import CURRENT, Rollout
from modelswap.traffic import BadTraffic, Traffic, total

if TYPE_CHECKING:
    from modelswap.controller import Instance


@dataclass
class Mark:
    since: str | None  # the agent's `since`: another value means it restarted
    versions: dict[str, Traffic]

    def to_json(self) -> dict[str, Any]:
        return {"since": self.since, "versions": {v: t.to_json() for v, t in self.versions.items()}}


@dataclass
class Window:
    phase: str  # "step 2" or "bake"
    opened: str
    marks: dict[str, Mark] = field(default_factory=dict)
    fails: int = 0  # consecutive counted checks that failed
    checked: int = -1  # the canary's requests at the last counted check

    def to_json(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "opened": self.opened,
            "fails": self.fails,
            "checked": self.checked,
            "marks": {name: m.to_json() for name, m in sorted(self.marks.items())},
        }

    @classmethod
    def of(cls, stored: dict[str, Any] | None, phase: str) -> Window:
        """The rollout's open window for `phase`, or a new one (also for a window it cannot
        read: it is the controller's own bookkeeping, and starting it again loses nothing but
        time)."""
        raw = (stored or {}).get("window")
        if not isinstance(raw, dict) or raw.get("phase") != phase:
            return cls(phase, utc_now())
        try:
            marks = {
                str(name): Mark(
                    m.get("since"), {v: Traffic.from_json(t) for v, t in m["versions"].items()}
                )
                for name, m in raw["marks"].items()
            }
            return cls(phase, str(raw["opened"]), marks, int(raw["fails"]), int(raw["checked"]))
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
            return cls(phase, utc_now())


def served(i: Instance) -> tuple[str | None, dict[str, Traffic]] | None:
    """An instance's totals per version since its agent started, or None if its report has
    none (no --metrics-url, a scrape that failed, or metrics that are not counts)."""
    m = i.metrics
    if not isinstance(m, dict) or not isinstance(m.get("versions"), dict):
        return None
    try:
        versions = {str(v): Traffic.from_json(t) for v, t in m["versions"].items()}
    except BadTraffic:
        return None
    since = m.get("since") if isinstance(m.get("since"), str) else None
    return since, versions


def cohort(window: Window, instances: list[Instance], version: str) -> tuple[Traffic, int]:
    """What `instances` served on `version` since each was marked, and how many had metrics."""
    parts, counted = [], 0
    for i in instances:
        seen = served(i)
        if seen is None:
            continue
        since, versions = seen
        counted += 1
        mark = window.marks.get(i.name)
        if mark is None:  # first seen in this window: only what comes after counts
            window.marks[i.name] = Mark(since, dict(versions))
            continue
        if mark.since != since:  # its agent restarted: everything it counts now is new
            mark = window.marks[i.name] = Mark(since, {})
        now = versions.get(version)
        if now is not None:
            before = mark.versions.get(version)
            parts.append(now.since(before) if before is not None else now)
    return total(parts), counted


@dataclass(frozen=True)
class Cohorts:
    canary: list[Instance]
    baseline: list[Instance]
    label: str


def cohorts(r: Rollout, instances: list[Instance]) -> Cohorts:
    """The canary share, and its baseline: the instances with fraction <= b < 2 x fraction
    (as many as the canary on average, the same age); if that range holds no instance, the
    rest of the fleet on CURRENT."""
    f = r.fraction
    canary = [i for i in instances if i.bucket < f and i.on_canary(r) and i.ready]
    rest = [
        i
        for i in instances
        if i.bucket >= f
        and i.follows == CURRENT
        and i.active == r.baseline
        and i.served in (None, r.baseline)
    ]
    same = [i for i in rest if i.bucket < 2 * f]
    if same or f >= 1:
        return Cohorts(canary, same, "baseline cohort")
    return Cohorts(canary, rest, "rest of the fleet (no instance in the baseline cohort)")


WINDOW_MAX_BYTES = 16 << 20


def load(registry: Registry, r: Rollout) -> dict[str, Any] | None:
    """The stored window object of this rollout (None: none yet, another rollout's, or one
    that cannot be read: a new window opens)."""
    try:
        blob = registry.store.read(keys.rollout_window(r.model), max_bytes=WINDOW_MAX_BYTES)
        body = json.loads(blob.data)
    except (ObjectNotFound, ValueError):
        return None
    return body if isinstance(body, dict) and body.get("rollout") == r.id else None


def save(registry: Registry, r: Rollout, window: Window, verdict: dict[str, Any]) -> None:
    body = {"rollout": r.id, "window": window.to_json(), "verdict": verdict}
    data = json.dumps(body, sort_keys=True, allow_nan=False).encode()
    registry.store.put(keys.rollout_window(r.model), data)


@dataclass(frozen=True)
class Check:
    verdict: judge.Verdict
    window: Window
    baseline: Traffic  # what the baseline served in the window (recorded as `before`)
    baseline_instances: int
    stored: dict[str, Any] | None  # the window object as it was read


def check(
    registry: Registry, r: Rollout, criteria: judge.Criteria, instances: list[Instance]
) -> Check:
    """One look at a running rollout's step: canary against its baseline cohort, or at the
    last step (everyone on the canary) against the baseline's traffic before it."""
    stored = load(registry, r)
    window = Window.of(stored, f"step {r.step + 1}")
    groups = cohorts(r, instances)
    canary, c_n = cohort(window, groups.canary, r.version)
    baseline, b_n = cohort(window, groups.baseline, r.baseline)
    against: Traffic | None = baseline
    label = groups.label
    if not groups.baseline and r.fraction >= 1:
        against, b_n, label = before(r)
    verdict = judge.judge(
        criteria, canary, against, canary_instances=c_n, baseline_instances=b_n,
        baseline_label=label,
    )  # fmt: skip
    _count(window, verdict, canary)
    return Check(verdict, window, baseline, b_n, stored)


def watch(
    registry: Registry, r: Rollout, criteria: judge.Criteria, instances: list[Instance]
) -> Check:
    """One look during the bake after promotion: everyone serving the new version against the
    baseline's traffic before the promotion."""
    stored = load(registry, r)
    window = Window.of(stored, "bake")
    serving = [i for i in instances if i.active == r.version and i.served in (None, r.version)]
    fleet, n = cohort(window, serving, r.version)
    against, b_n, label = before(r)
    verdict = judge.judge(
        criteria, fleet, against, canary_instances=n, baseline_instances=b_n, baseline_label=label
    )
    _count(window, verdict, fleet)
    return Check(verdict, window, fleet, n, stored)


def before(r: Rollout) -> tuple[Traffic | None, int, str]:
    """The baseline's traffic recorded when the rollout left its last judged step (None: none
    recorded, e.g. a step taken by hand, or a record that is not counts)."""
    raw = r.before or {}
    try:
        return (
            Traffic.from_json(raw.get("traffic")),
            int(raw.get("instances", 0)),
            str(raw.get("label", "baseline before the last step")),
        )
    except (BadTraffic, TypeError, ValueError, OverflowError):
        return None, 0, "baseline before the last step (none recorded)"


def _count(window: Window, verdict: judge.Verdict, canary: Traffic) -> None:
    if canary.requests <= window.checked:
        return  # nothing new served: the same evidence is not another check
    window.checked = canary.requests
    if verdict.result == "fail":
        window.fails += 1
    elif verdict.result == "pass":
        window.fails = 0


def keep(registry: Registry, r: Rollout, c: Check, verdict: dict[str, Any]) -> bool:
    """Save the window object if this look changed it; True when ROLLOUT's verdict should
    change too (its result, phase or run of failures did: not merely the counts)."""

    def timeless(v: Any) -> Any:
        return {k: x for k, x in v.items() if k != "at"} if isinstance(v, dict) else v

    stored = c.stored or {}
    if c.window.to_json() != stored.get("window") or timeless(verdict) != timeless(
        stored.get("verdict")
    ):
        save(registry, r, c.window, verdict)
    old = r.verdict or {}
    return any(old.get(k) != verdict.get(k) for k in ("result", "phase", "fails"))


def recorded(c: Check, r: Rollout) -> dict[str, Any]:
    """The verdict as ROLLOUT and events keep it: the evidence, and the run of failures."""
    return {
        **c.verdict.to_json(),
        "phase": c.window.phase,
        "window_opened": c.window.opened,
        "fails": c.window.fails,
        "fail_checks": judge.Criteria.from_json(r.judge).fail_checks,
        "at": utc_now(),
    }


def baseline_record(c: Check, r: Rollout) -> dict[str, Any] | None:
    """What to keep as `before` when the rollout leaves this step: the baseline cohort's
    traffic in the step's window, if it is enough for a verdict (else the older record)."""
    criteria = judge.Criteria.from_json(r.judge)
    if c.baseline.requests < criteria.min_requests:
        return r.before
    return {
        "traffic": c.baseline.to_json(),
        "instances": c.baseline_instances,
        "label": f"baseline cohort in step {r.step + 1} ({r.steps[r.step]}%)",
        "version": r.baseline,
    }
