"""Agent benchmark: propagation, poll cost, idle cost, download+verify throughput.

    .venv/bin/python -m bench.agent_bench [--size-mb 200] [--agents 20] [--idle-s 30]

Starts its own SeaweedFS on 127.0.0.1 behind a byte-counting TCP proxy, so request and byte
counts are what crossed the wire, not what the client believes it sent.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import boto3

from bench.common import emit, proc_cpu_s, proc_rss_mb, wait_for
from modelswap.pointers import Move, move_pointer
from modelswap.publish import PublishRequest
from modelswap.publish import publish as publish_request
from modelswap.registry import Registry
from modelswap.store import open_store
from modelswap.testing import seaweed
from modelswap.testing.agents import AgentProc

URL = "s3://bench/models"


class CountingProxy:
    """A loopback TCP proxy that counts bytes each way and HTTP requests (by request lines)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.up = self.down = self.requests = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait()

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter, upward: bool) -> None:
            try:
                while data := await r.read(1 << 16):
                    if upward:
                        self.up += len(data)
                        self.requests += sum(
                            data.count(m) for m in (b"GET /", b"PUT /", b"HEAD /", b"POST /")
                        )
                    else:
                        self.down += len(data)
                    w.write(data)
                    await w.drain()
            except ConnectionError:
                pass
            finally:
                w.close()

        async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            await asyncio.gather(pipe(cr, uw, True), pipe(ur, cw, False))

        async def start() -> None:
            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            await server.serve_forever()

        self._loop.run_until_complete(start())

    def snapshot(self) -> tuple[int, int, int]:
        return self.requests, self.up, self.down


def linked(dest: Path, model: str) -> str | None:
    try:
        return os.readlink(dest / model / "current")
    except OSError:
        return None


def link_times(dests: list[Path], target: str, start: float, timeout: float) -> list[float]:
    """Seconds from `start` (time.monotonic) until each agent's link to the "small" model
    named `target`."""
    times, pending = [], set(dests)
    while pending:
        for d in list(pending):
            if linked(d, "small") == f"versions/{target}":
                times.append(time.monotonic() - start)
                pending.discard(d)
        if time.monotonic() - start > timeout:
            raise TimeoutError
        time.sleep(0.002)
    return times


def bench_idle(proxy: CountingProxy, work: Path, idle_s: float) -> dict[str, Any]:
    """Unchanged-poll cost on the wire, and idle CPU and RSS of one agent at a 1 s interval."""
    dest = work / "idle"
    agent = AgentProc(URL, "small", dest, "--interval", "1", "--jitter", "0").wait_started()
    try:
        wait_for(lambda: linked(dest, "small") == "versions/v1", 30)
        time.sleep(2)
        r0, up0, down0 = proxy.snapshot()
        polls0 = agent.metric("polls_total")
        cpu0, t0 = proc_cpu_s(agent.proc.pid), time.monotonic()
        time.sleep(idle_s)
        r1, up1, down1 = proxy.snapshot()
        polls1 = agent.metric("polls_total")
        cpu1, t1 = proc_cpu_s(agent.proc.pid), time.monotonic()
        polls = polls1 - polls0
        return {
            "unchanged_poll": {
                "polls": polls,
                "requests_per_poll": round((r1 - r0) / polls, 3),
                "bytes_sent_per_poll": round((up1 - up0) / polls),
                "bytes_received_per_poll": round((down1 - down0) / polls),
                "not_modified_share": round(agent.metric("polls_not_modified_total") / polls1, 3),
            },
            "idle_1s_interval": {
                "cpu_percent_of_core": round(100 * (cpu1 - cpu0) / (t1 - t0), 3),
                "rss_mb": round(proc_rss_mb(agent.proc.pid), 1),
            },
        }
    finally:
        agent.stop()


def bench_propagation(reg: Registry, work: Path, n: int) -> dict[str, Any]:
    """Promote -> link swapped in each of n agents (1 s interval), four promotes."""
    dests = [work / f"fleet{n}-{i}" for i in range(n)]
    agents = [AgentProc(URL, "small", d, "--interval", "1") for d in dests]
    try:
        for a in agents:
            a.wait_started(60)
        wait_for(lambda: all(linked(d, "small") == "versions/v1" for d in dests), 60)
        time.sleep(1.5)
        samples: list[float] = []
        for target in ("v2", "v1", "v2", "v1"):
            start = time.monotonic()
            move_pointer(reg, Move("small", "CURRENT", target, "promote", "bench"))
            samples += link_times(dests, target, start, 30)
            time.sleep(1.2)
        return {
            "p50_s": round(statistics.median(samples), 3),
            "p90_s": round(statistics.quantiles(samples, n=10)[-1], 3) if n > 1 else None,
            "max_s": round(max(samples), 3),
            "samples": len(samples),
        }
    finally:
        for a in agents:
            a.stop()


def bench_download(reg: Registry, work: Path, size_mb: int, repeats: int) -> dict[str, Any]:
    """Agent fetch+verify+swap against boto3's download_file of the same object, same run."""
    big = work / "big.onnx"
    with open(big, "wb") as f:
        block = os.urandom(1 << 20)
        for _ in range(size_mb):
            f.write(block)
    publish_request(reg, PublishRequest(model="big", files={"model.onnx": big}, version="v1"))
    move_pointer(reg, Move("big", "CURRENT", "v1", "promote", "bench"))
    client = boto3.client("s3")
    agent_s, plain_s, plain_hash_s = [], [], []
    for i in range(repeats):
        out = work / f"plain-{i}"
        t = time.monotonic()
        client.download_file("bench", "models/big/v1/model.onnx", str(out))
        plain_s.append(time.monotonic() - t)
        h = hashlib.sha256()
        with open(out, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        plain_hash_s.append(time.monotonic() - t)
        out.unlink()
        dest = work / f"once-{i}"
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "modelswap",
                "agent",
                "big",
                "--dest",
                str(dest),
                "--once",
                "--registry",
                URL,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        event = next(json.loads(x) for x in proc.stderr.splitlines() if '"sync.once"' in x)
        agent_s.append(event["duration_s"])
        subprocess.run(["rm", "-rf", str(dest)], check=True)

    def mbps(secs: list[float]) -> float:
        return round(size_mb / statistics.median(secs), 1)

    return {
        "size_mb": size_mb,
        "agent_fetch_verify_swap_MBps": mbps(agent_s),
        "boto3_download_file_MBps": mbps(plain_s),
        "boto3_download_file_then_sha256_MBps": mbps(plain_hash_s),
        "agent_vs_boto3_download": round(
            statistics.median(plain_s) / statistics.median(agent_s), 3
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=200)
    ap.add_argument("--agents", type=int, default=20)
    ap.add_argument("--idle-s", type=float, default=30)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="modelswap-bench-"))
    server = seaweed.start(work / "weed")
    proxy = CountingProxy(server.ports["s3"])
    os.environ.update(dict(server.env(), AWS_ENDPOINT_URL=f"http://127.0.0.1:{proxy.port}"))
    results: dict[str, Any] = {}
    try:
        boto3.client("s3").create_bucket(Bucket="bench")
        reg = Registry(open_store(URL))
        small = work / "small.onnx"
        for v in ("v1", "v2"):
            small.write_bytes(os.urandom(64 << 10))
            publish_request(
                reg, PublishRequest(model="small", files={"model.onnx": small}, version=v)
            )
        move_pointer(reg, Move("small", "CURRENT", "v1", "promote", "bench"))
        results.update(bench_idle(proxy, work, args.idle_s))
        for n in (1, args.agents):
            results[f"promote_to_swap_{n}_agents_1s_interval"] = bench_propagation(reg, work, n)
        # Straight to the server: the counting proxy would cap both downloads at its own speed.
        os.environ["AWS_ENDPOINT_URL"] = server.endpoint
        reg = Registry(open_store(URL))
        results["download_verify"] = bench_download(reg, work, args.size_mb, args.repeats)
    finally:
        server.stop()
        subprocess.run(["rm", "-rf", str(work)], check=False)
    emit(results, args.json)


if __name__ == "__main__":
    main()
