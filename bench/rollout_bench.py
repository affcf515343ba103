"""What taking part in rollouts costs an idle agent: requests to the store per hour, counted by
a proxy in front of SeaweedFS, for an agent that does not take part (no --report) and for one
that does (--report: it reads ROLLOUT with a conditional GET in every pass and writes its
fleet report), with a finished rollout in the registry. Measured at a short interval and
scaled to the defaults (10 s polls, 30 s reports).

    .venv/bin/python -m bench.rollout_bench [--json out.json] [--seconds 20]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3

from bench.common import emit
from modelswap.api import Registry
from modelswap.testing import seaweed
from modelswap.testing.agents import AgentProc
from modelswap.testing.faultproxy import FaultProxy

INTERVAL_S = 0.5
REPORT_S = 1.5
DEFAULT_INTERVAL_S, DEFAULT_REPORT_S = 10.0, 30.0


def count(
    weed: seaweed.Seaweed, url: str, work: Path, seconds: float, *flags: str
) -> dict[str, Any]:
    with FaultProxy(weed.endpoint) as proxy:
        env = {**weed.env(), "AWS_ENDPOINT_URL": proxy.endpoint}
        agent = AgentProc(
            url, "clf", work / f"dest{len(flags)}", "--interval", str(INTERVAL_S), "--jitter",
            "0", "--report-interval", str(REPORT_S), *flags, env=env,
        ).wait_started()  # fmt: skip
        try:
            time.sleep(3)  # linked and settled
            before = len(proxy.requests)
            polls = agent.metric("polls_total")
            time.sleep(seconds)
            seen = proxy.requests[before:]
            polls = agent.metric("polls_total") - polls
        finally:
            agent.stop()
    gets = sum(1 for s in seen if s.method in ("GET", "HEAD"))
    puts = sum(1 for s in seen if s.method == "PUT")
    not_modified = sum(1 for s in seen if s.status == 304)
    per_poll = gets / polls
    reports = puts / (seconds / REPORT_S)
    per_hour = per_poll * 3600 / DEFAULT_INTERVAL_S + reports * 3600 / DEFAULT_REPORT_S
    return {
        "polls": polls,
        "reads": gets,
        "not_modified": not_modified,
        "writes": puts,
        "reads_per_poll": round(per_poll, 2),
        "requests_per_hour_at_defaults": round(per_hour),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rollout-bench-"))
    weed = seaweed.start(work / "seaweed")
    try:
        with seaweed.aws_env(weed):
            boto3.client("s3").create_bucket(Bucket="bench")
            reg = Registry("s3://bench/models", actor="bench")
            (work / "m").write_bytes(b"model")
            reg.publish("clf", [work / "m"], version="v1")
            reg.publish("clf", [work / "m"], version="v2")
            reg.promote("clf", "v1")
            reg.rollout_start("clf", "v2", steps=[100])
            reg.rollout_step("clf")  # promoted: the rollout is over, ROLLOUT stays
        url = "s3://bench/models"
        results = {
            "seconds": args.seconds,
            "alone": count(weed, url, work, args.seconds),
            "taking_part": count(weed, url, work, args.seconds, "--report"),
        }
    finally:
        weed.stop()
        shutil.rmtree(work, ignore_errors=True)
    emit(results, args.json)


def render(r: dict[str, Any]) -> list[str]:
    """The section of docs/benchmarks.md (bench/report.py)."""
    a, b = r["alone"], r["taking_part"]
    return [
        "## Taking part in rollouts (`python -m bench.rollout_bench`)",
        "",
        f"One idle agent against SeaweedFS behind a counting proxy for {r['seconds']:g} s "
        f"({a['polls']:.0f} polls), scaled to the defaults ({DEFAULT_INTERVAL_S:g} s polls, "
        f"{DEFAULT_REPORT_S:g} s reports). Taking part (`--report`) adds one conditional GET "
        "of ROLLOUT per poll (a 304 while it is unchanged) and the fleet report.",
        "",
        "| agent | reads per poll | 304s / reads | writes | requests per hour at defaults |",
        "|---|---|---|---|---|",
        f"| alone | {a['reads_per_poll']} | {a['not_modified']}/{a['reads']} | {a['writes']} | "
        f"{a['requests_per_hour_at_defaults']} |",
        f"| taking part (--report) | {b['reads_per_poll']} | {b['not_modified']}/{b['reads']} | "
        f"{b['writes']} | {b['requests_per_hour_at_defaults']} |",
        "",
    ]


if __name__ == "__main__":
    main()
