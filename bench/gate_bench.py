"""Gate benchmark: a 100,000-row eval set evaluated in constant memory.

    .venv/bin/python -m bench.gate_bench [--rows 100000] [--json out.json]

Runs the real `modelswap gate` (v2 against v1, both evaluated) on 10,000 and on --rows rows of
digits-like data, in child processes, and reports wall time and peak RSS: flat memory shows
as equal peaks.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from examples.train import train

from bench.common import emit


def _hwm_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_gate(registry: str, evalset: Path) -> dict[str, Any]:
    """Wall time and the child's own peak RSS. VmHWM is sampled while it runs: ru_maxrss would
    carry the parent's size into the child across fork and exec."""
    env = dict(os.environ, MODELSWAP_REGISTRY=registry)
    t = time.monotonic()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modelswap",
            "gate",
            "digits",
            "v2",
            "--against",
            "v1",
            "--eval-set",
            str(evalset),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, _hwm_mb(proc.pid) or 0.0)
        time.sleep(0.005)
    out, err = proc.communicate()
    wall = time.monotonic() - t
    if proc.returncode not in (0, 1):
        raise RuntimeError(err)
    return {
        "seconds": round(wall, 2),
        "peak_rss_mb": round(peak, 1),
        "first_line": out.splitlines()[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="modelswap-gate-bench-"))
    train(work / "trained")
    registry = str(work / "registry")
    for v in ("v1", "v2"):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "modelswap",
                "publish",
                "digits",
                str(work / "trained" / v / "model.onnx"),
                "--version",
                v,
            ],
            env=dict(os.environ, MODELSWAP_REGISTRY=registry),
            check=True,
            capture_output=True,
        )
    base = np.load(work / "trained" / "eval.npz")
    rng = np.random.default_rng(0)
    results = {}
    for rows in (10_000, args.rows):
        pick = rng.integers(0, len(base["y"]), rows)
        noise = rng.normal(0, 0.02, (rows, base["X"].shape[1])).astype(np.float32)
        path = work / f"eval-{rows}.npz"
        np.savez(path, X=base["X"][pick] + noise, y=base["y"][pick])
        results[f"{rows}_rows"] = {
            "eval_set_mb": round(path.stat().st_size / 1e6, 1),
            **run_gate(registry, path),
        }
    emit(results, args.json)


if __name__ == "__main__":
    main()
