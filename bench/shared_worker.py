"""A serving worker for bench.shared_bench: Poisson arrivals at a mean rate, latencies to a file.

It serves only while the turn file names its mode, so plain and shared workers can stay
loaded side by side and take turns in short slices: drift of the machine falls on both.

Arrivals are random, not periodic: workers that start together and send at a fixed period
stay in step, so their requests always collide on the 2 cores (2-3x the latency) while a
worker that happened to start out of step never waits. Which workers collided decided the
old figures (probe: per-worker p50 23-28 ms without overlap, 50-83 ms with, in both modes).
"""

from __future__ import annotations

import random
import signal
import sys
import time
from pathlib import Path

import numpy as np

from modelswap.loader import ModelLoader
from modelswap.testing.shared_worker import report


def my_turn(turn: Path, mode: str) -> bool:
    try:
        return turn.read_text() == mode
    except OSError:
        return False


def main() -> None:
    link, out, width, mode, rate, turn = (
        Path(sys.argv[1]),
        Path(sys.argv[2]),
        int(sys.argv[3]),
        sys.argv[4],
        float(sys.argv[5]),
        Path(sys.argv[6]),
    )
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    loader = ModelLoader(link, shared=mode == "shared", poll_interval_s=0.05).start()
    x = np.ones((1, width), dtype=np.float32)
    records: list[tuple[float, float, str]] = []
    failures = 0
    arrivals = random.Random()  # seeded from os.urandom: every worker its own sequence
    next_at = time.monotonic()
    last_write = 0.0
    while not stop:
        next_at += arrivals.expovariate(rate)
        if my_turn(turn, mode):
            t = time.time()
            try:
                with loader.session() as live:
                    live.model.run(None, {"input": x})
                    records.append((t, time.time() - t, live.version))
            except Exception:  # noqa: BLE001 - counted
                failures += 1
        if time.monotonic() - last_write > 0.1:
            report(out, loader, failures=failures, records=records)
            last_write = time.monotonic()
        time.sleep(max(0.0, next_at - time.monotonic()))
    loader.stop()


if __name__ == "__main__":
    main()
