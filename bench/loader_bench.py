"""Loader benchmark: swap latency against bare session creation, latency around swaps, RSS.

    .venv/bin/python -m bench.loader_bench [--json out.json]

Each model size runs in a fresh child process so RSS figures belong to that size alone.
"""

from __future__ import annotations

import argparse
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

import numpy as np
import onnxruntime as ort

from bench.common import emit, pct, proc_rss_mb
from modelswap.loader import ModelLoader, memory
from modelswap.testing.onnx_models import scale_model, swap_link, version_dir

SIZES = {"10MB": 1600, "100MB": 5000}


def bare_create_s(path: Path, feed: dict[str, Any], repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        s.run(None, feed)  # the loader warms up too, so the fair bare cost includes one run
        times.append(time.perf_counter() - t)
        del s
        # Start every build, bare or the loader's, from a trimmed heap, as the loader does
        # after each swap: otherwise a bare build would leave warm free pages to the next one.
        memory.trim()
    return statistics.median(times)


def child(size: str, swaps: int) -> dict[str, Any]:  # noqa: PLR0915 - one measurement script, read top to bottom
    width = SIZES[size]
    work = Path(tempfile.mkdtemp(prefix="modelswap-loader-bench-"))
    root = work / "m"
    for v, factor in (("v1", 1.0), ("v2", 2.0)):
        version_dir(root, v, scale_model(work / f"{v}.onnx", factor, width=width))
    swap_link(root, "v1")
    feed = {"input": np.ones((1, width), dtype=np.float32)}
    bare_create_s(root / "versions/v1/model.onnx", feed, repeats=2)  # onnxruntime's first-use costs

    loader = ModelLoader(root / "current", poll_interval_s=1.0).start()
    rss_after_first = proc_rss_mb(os.getpid())
    # Session creation time itself drifts between repeats (100 MB: 350-520 ms), so every swap
    # is paired with a bare create+run of the same file just before it, in the same conditions.
    idle_detect, idle_bare = [], []
    for target in ("v2", "v1", "v2", "v1", "v2", "v1"):  # no traffic: detection plus build
        idle_bare.append(bare_create_s(root / f"versions/{target}/model.onnx", feed, repeats=1))
        time.sleep(0.3)
        t0 = time.perf_counter()
        swap_link(root, target)
        while loader.version != target:
            time.sleep(0.0002)
        idle_detect.append(time.perf_counter() - t0)
        time.sleep(0.3)

    # capacity: back-to-back requests, one thread
    t, n = time.perf_counter(), 0
    while time.perf_counter() - t < 2:
        loader.run(None, feed)
        n += 1
    capacity_rps = n / (time.perf_counter() - t)
    rate = capacity_rps / 2  # "half load"

    records: list[tuple[float, float, str]] = []  # (start, latency, version)
    failures = 0
    stop = threading.Event()

    def client() -> None:
        nonlocal failures
        period, next_at = 1 / rate, time.perf_counter()
        while not stop.is_set():
            now = time.perf_counter()
            if now < next_at:
                time.sleep(next_at - now)
            next_at += period
            start = time.perf_counter()
            try:
                with loader.session() as live:
                    live.model.run(None, feed)
                records.append((start, time.perf_counter() - start, live.version))
            except Exception:  # noqa: BLE001 - counted, that is the measurement
                failures += 1

    thread = threading.Thread(target=client)
    thread.start()
    time.sleep(3)
    steady_end = time.perf_counter()
    swap_windows, detect, traffic_bare = [], [], []
    for i in range(swaps):
        target = "v2" if i % 2 == 0 else "v1"
        # the paired bare build under the same traffic; its requests count in no window
        traffic_bare.append(bare_create_s(root / f"versions/{target}/model.onnx", feed, 1))
        time.sleep(0.5)
        t0 = time.perf_counter()
        swap_link(root, target)
        while loader.version != target:
            time.sleep(0.0005)
        first = next((s + lat for s, lat, v in records if s >= t0 and v == target), None)
        while first is None:
            time.sleep(0.001)
            first = next((s + lat for s, lat, v in records if s >= t0 and v == target), None)
        detect.append(first - t0)
        swap_windows.append((t0, time.perf_counter() + 0.2))
        time.sleep(1.0)
    time.sleep(2)
    stop.set()
    thread.join()
    loader.stop()
    rss_after_swaps = proc_rss_mb(os.getpid())

    def in_swap(s: float) -> bool:
        return any(a <= s <= b for a, b in swap_windows)

    steady = [lat for s, lat, _ in records if s < steady_end]
    during = [lat for s, lat, _ in records if in_swap(s)]
    after = [lat for s, lat, _ in records if s > swap_windows[-1][1] + 1.0]
    ms = 1000
    idle_swap, traffic_swap = statistics.median(idle_detect), statistics.median(detect)
    bare, bare_loaded = statistics.median(idle_bare), statistics.median(traffic_bare)
    return {
        "size": size,
        "model_mb": round((root / "versions/v1/model.onnx").stat().st_size / 1e6, 1),
        "bare_create_and_first_run_ms": round(bare * ms, 1),
        "swap_to_first_new_request_ms_p50": round(statistics.median(detect) * ms, 1),
        "swap_to_first_new_request_ms_max": round(max(detect) * ms, 1),
        "swap_without_traffic_ms_p50": round(statistics.median(idle_detect) * ms, 1),
        "detection_overhead_without_traffic_ms": round((idle_swap - bare) * ms, 1),
        "bare_create_and_first_run_under_traffic_ms": round(bare_loaded * ms, 1),
        "detection_overhead_under_traffic_ms": round((traffic_swap - bare_loaded) * ms, 1),
        "swap_under_traffic_vs_bare_idle_ms": round((traffic_swap - bare) * ms, 1),
        "request_rate_rps": round(rate, 1),
        "failed_requests": failures,
        "requests": len(records),
        "latency_ms": {
            "steady_p50": round(pct(steady, 0.5) * ms, 3),
            "steady_p99": round(pct(steady, 0.99) * ms, 3),
            "during_swaps_p50": round(pct(during, 0.5) * ms, 3),
            "during_swaps_p99": round(pct(during, 0.99) * ms, 3),
            "after_p50": round(pct(after, 0.5) * ms, 3),
            "after_p99": round(pct(after, 0.99) * ms, 3),
        },
        "rss_mb_after_first_load": round(rss_after_first, 1),
        f"rss_mb_after_{swaps}_swaps": round(rss_after_swaps, 1),
        "rss_growth": round(rss_after_swaps / rss_after_first - 1, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", choices=sorted(SIZES))
    ap.add_argument("--swaps", type=int, default=10)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.swaps)))
        return
    results = []
    for size in SIZES:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.loader_bench",
                "--child",
                size,
                "--swaps",
                str(args.swaps),
            ],
            capture_output=True,
            text=True,
            check=True,
            env=dict(os.environ),
        )
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    emit(results, args.json)


if __name__ == "__main__":
    main()
