"""`modelswap rollout start|status|step|pause|resume|abort|run`: a canary share of the fleet, and
the controller that steps it, promotes it, or rolls it back by itself."""

from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from modelswap import render
from modelswap.api import (
    DEFAULT_ALPHA,
    DEFAULT_FAIL_CHECKS,
    DEFAULT_MIN_REQUESTS,
    Criteria,
    MetricRule,
    RolloutStatus,
)
from modelswap.cli.common import _api, _Parser, _print_json
from modelswap.config import add_flag
from modelswap.errors import UsageError

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)?")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def duration(text: str) -> float:
    """Seconds from 90, 90s, 10m, 1.5h or 500ms (argparse type: a ValueError names the flag)."""
    m = _DURATION.fullmatch(text.strip())
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def steps(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError as e:
        raise ValueError(text) from e


def add_parser(sub: argparse._SubParsersAction[_Parser], common: _Parser) -> None:
    p = sub.add_parser(
        "rollout",
        help="a canary share of the fleet, stepped, promoted or rolled back by a controller",
        description="a canary share of the fleet follows CANARY; the controller steps it",
        parents=[common],
    )
    verbs = p.add_subparsers(dest="rollout_command", required=True, parser_class=_Parser)

    def verb(name: str, fn: Callable[[argparse.Namespace], int], what: str) -> _Parser:
        v: _Parser = verbs.add_parser(name, help=what, description=what, parents=[common])
        v.set_defaults(fn=fn)
        v.add_argument("model")
        return v

    v = verb("start", cmd_start, "start rolling VERSION out to a share of the fleet")
    v.add_argument("version")
    add_flag(v, "--steps", type=steps, default=[10, 50, 100], help="percent per step, to 100")
    add_flag(v, "--bake", type=duration, default=60.0, help="time each step's share is ready")
    add_flag(v, "--min-instances", type=int, default=1, help="canary instances a step needs")
    add_flag(
        v,
        "--progress-deadline",
        type=duration,
        default=600.0,
        help="a step's share not ready by then: rolled back",
    )
    add_flag(v, "--reason", help="why, for the event log")
    add_flag(
        v,
        "--salt",
        help="bucket salt (default: random); the same salt keeps the same instances in the share",
    )
    _judge_flags(v)
    v = verb("status", cmd_status, "the rollout, and which instance follows what")
    add_flag(v, "--json", action="store_true", help="stable JSON for scripts")
    add_flag(v, "--stale-after", type=float, default=90.0, help="seconds a report stays fresh")
    for name, fn, what in (
        ("step", cmd_step, "take the next step now (promote at the last)"),
        ("pause", cmd_pause, "hold the rollout where it is (the controller waits)"),
        ("resume", cmd_resume, "let the controller go on"),
        ("abort", cmd_abort, "end the rollout: everyone follows CURRENT again"),
    ):
        v = verb(name, fn, what)
        add_flag(v, "--reason", help="why, for the event log")
    v = verb("run", cmd_run, "the controller: judge, step, promote, or roll back by itself")
    # Their own variables: the agent's MODELSWAP_INTERVAL and MODELSWAP_ONCE mean its polls.
    add_flag(
        v,
        "--interval",
        env_var="MODELSWAP_ROLLOUT_INTERVAL",
        type=duration,
        default=30.0,
        help="time between looks",
    )
    add_flag(
        v,
        "--once",
        env_var="MODELSWAP_ROLLOUT_ONCE",
        action="store_true",
        help="one look and exit (a CronJob)",
    )
    add_flag(v, "--stale-after", type=float, default=90.0, help="seconds a report stays fresh")


def _judge_flags(v: _Parser) -> None:
    g = v.add_argument_group(
        "judge (live metrics from agents run with --metrics-url; any of these turns it on)"
    )
    add_flag(g, "--max-error-rate", type=float, help="fail if the canary's error rate is above")
    add_flag(g, "--max-p99-ms", type=float, help="fail if the canary's p99 latency is above")
    add_flag(
        g,
        "--max-error-ratio",
        type=float,
        help="fail if the canary's error rate is this many times the baseline's, significantly",
    )
    add_flag(
        g,
        "--max-p99-ratio",
        type=float,
        help="fail if the canary's p99 is this many times the baseline's, significantly",
    )
    add_flag(
        g,
        "--metric",
        env_var="MODELSWAP_ROLLOUT_METRIC",  # publish's --metric is NAME=VALUE
        action="append",
        default=[],
        help="NAME:min:TOL (a score: fail below the baseline's minus TOL) or NAME:max:TOL "
        "(a cost: fail above its plus TOL), for the app's loader.observe(NAME, value)",
    )
    add_flag(
        g,
        "--min-requests",
        type=int,
        default=DEFAULT_MIN_REQUESTS,
        help="requests (and observations) each side needs; below: inconclusive, the step holds",
    )
    add_flag(
        g,
        "--fail-checks",
        type=int,
        default=DEFAULT_FAIL_CHECKS,
        help="consecutive failing checks (each on new traffic) before it rolls back",
    )
    add_flag(g, "--alpha", type=float, default=DEFAULT_ALPHA, help="significance of each test")


def _criteria(args: argparse.Namespace) -> Criteria:
    return Criteria(
        max_error_rate=args.max_error_rate,
        max_p99_ms=args.max_p99_ms,
        max_error_ratio=args.max_error_ratio,
        max_p99_ratio=args.max_p99_ratio,
        metrics=tuple(MetricRule.parse(m) for m in args.metric),
        min_requests=args.min_requests,
        fail_checks=args.fail_checks,
        alpha=args.alpha,
    ).check()


def cmd_start(args: argparse.Namespace) -> int:
    r = _api(args).rollout_start(
        args.model,
        args.version,
        steps=args.steps,
        bake_s=args.bake,
        min_instances=args.min_instances,
        deadline_s=args.progress_deadline,
        reason=args.reason,
        salt=args.salt,
        judge=_criteria(args),
    )
    print(
        f"rollout {r.id}: {args.model}/{r.version} over {r.baseline}, steps "
        f"{','.join(map(str, r.steps))}%, now {r.steps[0]}% on CANARY"
    )
    print(f"note: `modelswap rollout run {args.model}` steps it", file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    status = _api(args).rollout_status(args.model, stale_after_s=args.stale_after)
    if args.json:
        _print_json(status.to_json())
        return 0
    print(describe(status))
    return 0


def describe(status: RolloutStatus) -> str:
    r = status.rollout
    if r is None:
        return f"{status.model}: no rollout (CURRENT {status.current or '-'})"
    lines = [
        f"rollout {r.id} of {status.model}: {r.version} over {r.baseline}, {r.state}, "
        f"step {r.step + 1}/{len(r.steps)} ({r.steps[r.step]}%)",
        f"  started {r.started} by {r.actor}" + (f" ({r.reason})" if r.reason else ""),
        f"  step started {r.step_started}"
        + (f", ready since {r.converged_since} (bake {r.bake_s:g} s)" if r.converged_since else ""),
        f"  CURRENT {status.current or '-'}, CANARY {status.canary or '-'}",
    ]
    if r.watching:
        lines.append(f"  promoted; watched for a regression until {r.watch_until}")
    if r.stopped:
        lines.append(f"  {r.stopped}")
    # the freshest verdict while the rollout is judged; the one it acted on once it is over
    lines += verdict_lines(status.judging if r.active or r.watching else r.verdict)
    rows = [
        [
            i.name,
            f"{i.bucket:.4f}",
            i.follows or "-",
            i.active or "-",
            "yes" if i.ready else "no",
            i.refusal or "",
        ]
        for i in status.instances
    ]
    if rows:
        headers = ["INSTANCE", "BUCKET", "FOLLOWS", "ACTIVE", "READY", "REFUSAL"]
        lines += ["", render.table(headers, rows)]
    return "\n".join(lines)


def verdict_lines(verdict: Any) -> list[str]:
    """The judge's last verdict and each check's evidence, for people."""
    if not isinstance(verdict, dict):  # read from the store: anything at all
        return []
    fails = verdict.get("fails", 0)
    lines = [
        f"  verdict {verdict.get('result')} ({verdict.get('phase')}, {fails} of "
        f"{verdict.get('fail_checks')} failing checks in a row): {verdict.get('why')}"
    ]
    for side in ("canary", "baseline"):
        s = verdict.get(side)
        if isinstance(s, dict):
            lines.append(
                f"    {side}: {s.get('instances')} instance(s), {s.get('requests')} requests, "
                f"error rate {s.get('error_rate')}, p99 {s.get('p99_ms')} ms"
            )
    checks = verdict.get("checks")
    for check in checks if isinstance(checks, list) else []:
        if isinstance(check, dict):
            lines.append(f"    {check.get('check')}: {check.get('result')} - {check.get('why')}")
    return lines


def _moved(args: argparse.Namespace, verb: str) -> int:
    reg = _api(args)
    r = getattr(reg, f"rollout_{verb}")(args.model, reason=args.reason)
    print(f"rollout {r.id}: {r.state}, step {r.step + 1}/{len(r.steps)} ({r.steps[r.step]}%)")
    return 0


def cmd_step(args: argparse.Namespace) -> int:
    return _moved(args, "step")


def cmd_pause(args: argparse.Namespace) -> int:
    return _moved(args, "pause")


def cmd_resume(args: argparse.Namespace) -> int:
    return _moved(args, "resume")


def cmd_abort(args: argparse.Namespace) -> int:
    return _moved(args, "abort")


def cmd_run(args: argparse.Namespace) -> int:
    if args.interval <= 0:
        raise UsageError("--interval must be greater than 0", hint="e.g. --interval 30s")

    def say(line: str) -> None:
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        print(f"{now} {line}", flush=True)

    stop = threading.Event()  # SIGTERM ends the pass and releases the lease for the next one
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return _api(args).rollout_run(
        args.model,
        interval_s=args.interval,
        once=args.once,
        stale_after_s=args.stale_after,
        say=say,
        stop=stop,
    )
