"""Propagation to a fleet, and idle cost.

    .venv/bin/python -m bench.fleet_bench [--agents 50] [--interval 2] [--idle-s 60] [--json f]

1. Time from `modelswap promote` (the real command) to each of N agent processes having
   swapped its link (four promotes), polling every --interval s; then the same with POST
   /refresh sent to
   every agent right after the promote. The distribution, not only the mean. Times start
   when the promote command starts, so they include the command's own time (reported too).
2. Idle cost at a 10 s interval, extrapolated to an hour: one agent's CPU, RSS, requests and
   bytes on the wire (through a counting proxy), and the loader's CPU and RSS in a process that
   serves nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import boto3

from bench.agent_bench import CountingProxy, link_times, linked
from bench.common import emit, proc_cpu_s, proc_rss_mb, wait_for
from modelswap.pointers import Move, move_pointer
from modelswap.publish import PublishRequest
from modelswap.publish import publish as publish_request
from modelswap.registry import Registry
from modelswap.store import open_store
from modelswap.testing import seaweed
from modelswap.testing.agents import AgentProc
from modelswap.testing.onnx_models import scale_model, swap_link, version_dir

URL = "s3://bench/models"


def quantiles(samples: list[float]) -> dict[str, float]:
    q = statistics.quantiles(samples, n=100)
    return {
        "p50_s": round(q[49], 3),
        "p90_s": round(q[89], 3),
        "p99_s": round(q[98], 3),
        "max_s": round(max(samples), 3),
        "n": len(samples),
    }


def propagation(work: Path, agents: int, interval: float, refresh: bool) -> dict[str, float]:
    dests = [work / f"{'r' if refresh else 'p'}{i}" for i in range(agents)]
    procs = [AgentProc(URL, "small", d, "--interval", str(interval)) for d in dests]
    samples: list[float] = []
    commands: list[float] = []  # the promote command's own time, start to exit
    try:
        for p in procs:
            p.wait_started(120)
        wait_for(lambda: all(linked(d, "small") == "versions/v1" for d in dests), 120, 0.05)
        for target in ("v2", "v1", "v2", "v1"):  # ends where it began, for the next run
            time.sleep(interval)
            env = dict(os.environ, MODELSWAP_REGISTRY=URL)
            start = time.monotonic()
            subprocess.run(
                [sys.executable, "-m", "modelswap", "promote", "small", target],
                env=env,
                check=True,
                capture_output=True,
            )
            commands.append(time.monotonic() - start)
            if refresh:
                threads = [threading.Thread(target=p.refresh) for p in procs]
                for t in threads:
                    t.start()
            samples += link_times(dests, target, start, 60)
    finally:
        for p in procs:
            p.stop()
    return {**quantiles(samples), "promote_command_s": round(statistics.median(commands), 3)}


def idle_agent(proxy: CountingProxy, work: Path, seconds: float) -> dict[str, float]:
    dest = work / "idle"
    agent = AgentProc(URL, "small", dest, "--interval", "10").wait_started()
    try:
        wait_for(lambda: linked(dest, "small") is not None, 30)
        time.sleep(2)
        r0, up0, down0 = proxy.snapshot()
        c0, t0 = proc_cpu_s(agent.proc.pid), time.monotonic()
        time.sleep(seconds)
        r1, up1, down1 = proxy.snapshot()
        c1, t1 = proc_cpu_s(agent.proc.pid), time.monotonic()
        per_hour = 3600 / (t1 - t0)
        return {
            "cpu_percent_of_core": round(100 * (c1 - c0) / (t1 - t0), 3),
            "rss_mb": round(proc_rss_mb(agent.proc.pid), 1),
            "requests_per_hour": round((r1 - r0) * per_hour),
            "kb_per_hour": round((up1 - up0 + down1 - down0) * per_hour / 1024, 1),
        }
    finally:
        agent.stop()


def idle_loader(work: Path, seconds: float) -> dict[str, float]:
    root = work / "loader" / "m"
    version_dir(root, "v1", scale_model(work / "l.onnx", 1.0, width=1600))
    swap_link(root, "v1")
    code = (
        "import sys, time; from modelswap.loader import ModelLoader; "
        "l = ModelLoader(sys.argv[1], health_port=0).start(); print('ready', flush=True); "
        "time.sleep(3600)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(root / "current")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        time.sleep(2)
        c0, t0 = proc_cpu_s(proc.pid), time.monotonic()
        time.sleep(seconds)
        c1, t1 = proc_cpu_s(proc.pid), time.monotonic()
        return {
            "cpu_percent_of_core": round(100 * (c1 - c0) / (t1 - t0), 3),
            "rss_mb_10mb_model": round(proc_rss_mb(proc.pid), 1),
        }
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=50)
    ap.add_argument("--interval", type=float, default=2.0)
    ap.add_argument("--idle-s", type=float, default=60)
    ap.add_argument("--json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="modelswap-fleet-"))
    server = seaweed.start(work / "weed")
    proxy = CountingProxy(server.ports["s3"])
    results: dict[str, Any] = {}
    try:
        with seaweed.aws_env(server):
            boto3.client("s3").create_bucket(Bucket="bench")
            reg = Registry(open_store(URL))
            for v in ("v1", "v2"):
                f = work / v / "model.onnx"
                f.parent.mkdir()
                f.write_bytes(os.urandom(64 << 10))
                publish_request(
                    reg, PublishRequest(model="small", files={"model.onnx": f}, version=v)
                )
            move_pointer(reg, Move("small", "CURRENT", "v1", "promote", "bench"))
            for refresh in (False, True):
                key = f"promote_to_{args.agents}_agents_{args.interval:g}s" + (
                    "_with_refresh" if refresh else ""
                )
                results[key] = propagation(work, args.agents, args.interval, refresh)
                print(key, results[key], flush=True)
            os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{proxy.port}"
            results["idle_agent_10s_interval"] = idle_agent(proxy, work, args.idle_s)
            results["idle_loader"] = idle_loader(work, args.idle_s)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    emit(results, args.json)


if __name__ == "__main__":
    main()
