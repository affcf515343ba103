"""An app for the rollout tests and demo: one real ModelLoader per instance, each with its own
/health and /metrics on 127.0.0.1, and steady traffic through each.

    python -m modelswap.testing.traffic_app ROOT POD [POD ...] [--rate 50] [--eval EVAL.npz]

Each POD serves the link ROOT/POD/<model>/current (what `modelswap agent --dest ROOT/POD`
keeps). With --eval the versions are real ONNX classifiers: each request is a row of the eval
set and its label arrives afterwards as `loader.observe("accuracy", right)`. Without it, a
version's `behaviour.json` says how it behaves (`delay_ms`, `error_rate`, `accuracy`), and
ROOT/overrides.json (`{version: behaviour}`, re-read every 0.2 s) changes that while it runs:
the world getting worse for a version after it was promoted. Prints one JSON line
`{"ports": {pod: port}}` once every loader listens.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from modelswap.loader import ModelLoader

OVERRIDES = "overrides.json"


class Behaviour:
    """A model whose latency, errors and answers come from its version's behaviour.json."""

    def __init__(self, folder: Path, overrides: dict[str, dict[str, Any]]) -> None:
        self.version = folder.name
        self.own = json.loads((folder / "behaviour.json").read_text())
        self.overrides = overrides

    def __call__(self, rng: random.Random) -> bool:
        b = {**self.own, **self.overrides.get(self.version, {})}
        time.sleep(rng.lognormvariate(0, 0.25) * float(b.get("delay_ms", 2.0)) / 1000)
        if rng.random() < float(b.get("error_rate", 0.0)):
            raise RuntimeError(f"{self.version}: injected error")
        return rng.random() < float(b.get("accuracy", 0.95))


class Pod:
    def __init__(self, root: Path, pod: str, model: str, args: argparse.Namespace) -> None:
        self.overrides: dict[str, dict[str, Any]] = {}
        self.eval = None
        if args.eval:
            data = np.load(args.eval)
            self.eval = (data["X"], data["y"])
            load = None
        else:
            load = lambda folder: Behaviour(folder, self.overrides)  # noqa: E731
        self.loader = ModelLoader(
            root / pod / model / "current",
            health_port=0,
            load=load,
            warmup=bool(args.eval),
            poll_interval_s=0.2,
        )
        self.rate = args.rate
        self.rng = random.Random(pod)

    def one(self) -> None:
        with self.loader.session() as live:
            if self.eval is None:
                right = live.model(self.rng)
            else:
                x, y = self.eval
                i = self.rng.randrange(len(y))
                label = live.model.run(None, {"input": x[i : i + 1]})[0]
                right = int(label[0]) == int(y[i])
            version = live.version
        self.loader.observe("accuracy", 1.0 if right else 0.0, version=version)

    def serve(self, stop: threading.Event) -> None:
        gap = 1.0 / self.rate
        while not stop.is_set():
            started = time.monotonic()
            # an error is counted by the loader (and before the first model: nothing to count)
            with contextlib.suppress(Exception):
                self.one()
            stop.wait(max(0.0, gap - (time.monotonic() - started)))


def watch_overrides(root: Path, pods: list[Pod], stop: threading.Event) -> None:
    while not stop.wait(0.2):
        try:
            raw = json.loads((root / OVERRIDES).read_text())
        except (OSError, ValueError):
            raw = {}
        for pod in pods:
            pod.overrides.clear()
            pod.overrides.update(raw if isinstance(raw, dict) else {})


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("root", type=Path)
    p.add_argument("pods", nargs="+")
    p.add_argument("--model", default="clf")
    p.add_argument("--rate", type=float, default=50.0, help="requests per second per pod")
    p.add_argument("--eval", help="an eval set (X, y) for ONNX classifiers")
    args = p.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    pods = [Pod(args.root, name, args.model, args) for name in args.pods]
    for pod in pods:
        pod.loader.start()
    ports = {name: pod.loader.health_port for name, pod in zip(args.pods, pods, strict=True)}
    print(json.dumps({"ports": ports}), flush=True)
    threads = [threading.Thread(target=pod.serve, args=(stop,), daemon=True) for pod in pods]
    threads.append(
        threading.Thread(target=watch_overrides, args=(args.root, pods, stop), daemon=True)
    )
    for t in threads:
        t.start()
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()
    for pod in pods:
        pod.loader.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
