"""Hot swap against restart: the example server under steady load switches versions
(a) by the loader's hot swap and (b) by restarting the server process, as most services do.

    .venv/bin/python -m bench.restart_bench [--rate 100] [--width 1600] [--json out.json]

Reports failed requests, the longest time without a successful answer, and p99 latency in the
three seconds after the switch, against the steady p99 before it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import emit
from modelswap.testing.onnx_models import scale_model, swap_link, version_dir

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Load(threading.Thread):
    def __init__(self, port: int, width: int, rate: float) -> None:
        super().__init__(daemon=True)
        self.port, self.period = port, 1 / rate
        self.body = json.dumps({"inputs": [[1.0] * width]})
        self.records: list[tuple[float, bool, float]] = []  # (start, ok, latency)
        self.stop_event = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        next_at = time.monotonic()
        while not self.stop_event.is_set():
            next_at += self.period
            start = time.monotonic()
            try:
                conn.request("POST", "/predict", self.body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            self.records.append((start, ok, time.monotonic() - start))
            time.sleep(max(0.0, next_at - time.monotonic()))


def server(link: Path, port: int, health: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "examples/server.py",
            "--link",
            str(link),
            "--port",
            str(port),
            "--health-port",
            str(health),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_ok(load: Load, after: float, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not any(s >= after and ok for s, ok, _ in load.records):
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(0.01)


def summarize(load: Load, switch_at: float) -> dict[str, Any]:
    steady = sorted(lat for s, ok, lat in load.records if ok and switch_at - 5 <= s < switch_at)
    around = [(s, ok, lat) for s, ok, lat in load.records if switch_at <= s < switch_at + 3]
    window = [r for r in load.records if switch_at - 1 <= r[0]]
    gap, last_ok = 0.0, None
    for s, ok, lat in window:
        if ok:
            if last_ok is not None:
                gap = max(gap, s + lat - last_ok)
            last_ok = s + lat
    lats = sorted(lat for _, ok, lat in around if ok) or [0.0]

    def p99(xs: list[float]) -> float:
        return round(xs[min(len(xs) - 1, int(0.99 * len(xs)))] * 1000, 2)

    return {
        "failed_requests": sum(not ok for _, ok, _ in around),
        "requests_in_3s_after": len(around),
        "longest_gap_without_an_answer_ms": round(gap * 1000, 1),
        "p99_ms_steady": p99(steady),
        "p99_ms_3s_after_switch": p99(lats),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=100)
    ap.add_argument("--width", type=int, default=1600)
    ap.add_argument("--json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="modelswap-restart-"))
    results = {}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        root = work / "m"
        for v, factor in (("v1", 1.0), ("v2", 2.0)):
            version_dir(root, v, scale_model(work / f"{v}.onnx", factor, width=args.width))
        for mode in ("hot swap", "restart"):
            swap_link(root, "v1")
            port, health = free_port(), free_port()
            procs.append(server(root / "current", port, health))
            load = Load(port, args.width, args.rate)
            load.start()
            wait_ok(load, 0)
            time.sleep(6)
            switch_at = time.monotonic()
            if mode == "hot swap":
                swap_link(root, "v2")
            else:
                procs[-1].terminate()
                procs[-1].wait()
                swap_link(root, "v2")
                procs.append(server(root / "current", port, health))
            wait_ok(load, switch_at)
            time.sleep(4)
            load.stop_event.set()
            load.join()
            results[mode] = summarize(load, switch_at)
            print(mode, results[mode], flush=True)
            procs[-1].terminate()
            procs[-1].wait()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)
    emit(results, args.json)


if __name__ == "__main__":
    main()
