"""Shared mode against plain mode: 4 worker processes per mode, a 403 MB MLP on tmpfs.

    .venv/bin/python -m bench.shared_bench [--width 2048] [--layers 24] [--workers 4] [--slices 24]
                                           [--dir /dev/shm] [--json F]

The model is an MLP of 24 MatMuls of 2048 x 2048 float32 (many mid-sized tensors, as real
models store them: onnxruntime's heap keeps those, where one 400 MB tensor is mmapped and
returned at once and would hide what preparing costs the worker that does it).
Each set's workers start one after another, as in a rolling start or a pre-fork server: the
first prepares the shared artifact, the others map it (--together starts them all at once).
Both sets of workers stay loaded side by side (each on its own link) and take turns serving
in 3-second slices, ABBA order, so any drift of the machine's speed falls on both
modes alike. Reports total PSS of each set (from /proc/PID/smaps_rollup), inference latency
p50/p99 (each worker's requests arrive at random, Poisson, at a mean rate), and the time
from a link swap until every worker of a set serves the new version (two swaps per mode,
ABBA, only that set serving), and PSS again after those swaps.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import emit, mark, pct, wait_for
from modelswap.testing.onnx_models import mlp_model, swap_link, version_dir

ROOT = Path(__file__).resolve().parents[1]
MODES = ("plain", "shared")
SHM = "/dev/shm"  # noqa: S108 - the benchmark's volume is meant to be a tmpfs
SLICE_S = 3.0
SETTLE_S = 0.6  # a waiting worker looks at its turn once per request period (0.5 s)


def pss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return 0.0


def read(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def abba(n: int) -> list[str]:
    return [MODES[(i + 1) // 2 % 2] for i in range(n)]  # plain shared shared plain plain ...


class WorkerSet:
    def __init__(
        self,
        mode: str,
        work: Path,
        shape: tuple[int, int],
        workers: int,
        rate: float,
        *,
        together: bool,
    ) -> None:
        width, layers = shape
        self.mode, self.base = mode, work / mode
        if not self.base.exists():  # the one-worker run already built the plain volume
            for v, factor in (("v1", 1.0), ("v2", 2.0)):
                src = mlp_model(work / f"{mode}-{v}.onnx", factor, width, layers)
                version_dir(self.base, v, src)
                src.unlink()
        swap_link(self.base, "v1")
        self.files = [work / f"{mode}-{i}.json" for i in range(workers)]
        for f in self.files:
            f.unlink(missing_ok=True)  # a file left by an earlier set would read as "serving"
        self.procs: list[subprocess.Popen[bytes]] = []
        for f in self.files:
            self.procs.append(self.start(f, width, mode, rate, work))
            if not together:  # the next one starts once this one serves, as in a rolling start
                wait_for(lambda f=f: read(f).get("version") == "v1", 600, 0.01)

    def start(
        self, f: Path, width: int, mode: str, rate: float, work: Path
    ) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.shared_worker",
                str(self.base / "current"),
                str(f),
                str(width),
                mode,
                str(rate),
                str(work / "turn"),
            ],
            cwd=ROOT,
        )

    def serving(self, version: str) -> bool:
        return all(read(f).get("version") == version for f in self.files)

    def records(self) -> list[list[tuple[float, float, str]]]:
        """Each worker's (start, latency, version) records."""
        return [[tuple(r) for r in read(f).get("records", [])] for f in self.files]  # type: ignore[misc]

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(30)


def swap_time(ws: WorkerSet, target: str) -> float:
    swap_at = time.time()
    swap_link(ws.base, target)
    wait_for(lambda: ws.serving(target), 300, 0.01)

    def first(f: Path) -> float | None:
        times = [
            t + lat for t, lat, v in read(f).get("records", []) if v == target and t >= swap_at
        ]
        return min(times) if times else None

    wait_for(lambda: all(first(f) is not None for f in ws.files), 60, 0.01)
    return max(first(f) or 0.0 for f in ws.files) - swap_at


def measure(
    work: Path, shape: tuple[int, int], workers: int, rate: float, slices: int, *, together: bool
) -> dict[str, Any]:
    turn = work / "turn"
    turn.write_text("")
    sets = {m: WorkerSet(m, work, shape, workers, rate, together=together) for m in MODES}
    try:
        for ws in sets.values():
            wait_for(lambda ws=ws: ws.serving("v1"), 600, 0.01)
        time.sleep(3)
        pss = {m: [pss_mb(p.pid) for p in ws.procs] for m, ws in sets.items()}
        windows: dict[str, list[tuple[float, float]]] = {m: [] for m in MODES}
        for mode in abba(slices):
            turn.write_text(mode)
            start = time.time()
            time.sleep(SLICE_S)
            windows[mode].append((start + SETTLE_S, time.time()))
        per_worker = {
            m: [
                sorted(lat for t, lat, _ in recs if any(a <= t < b for a, b in windows[m]))
                for recs in sets[m].records()
            ]
            for m in MODES
        }
        latencies = {m: sorted(lat for lats in per_worker[m] for lat in lats) for m in MODES}
        swaps: dict[str, list[float]] = {m: [] for m in MODES}
        for mode, target in zip(abba(4), ("v2", "v2", "v1", "v1"), strict=True):
            turn.write_text(mode)
            time.sleep(SETTLE_S)
            swaps[mode].append(swap_time(sets[mode], target))
        time.sleep(3)  # the old version's session is released once its last request ends
        pss_after = {m: [pss_mb(p.pid) for p in ws.procs] for m, ws in sets.items()}
        failures = {m: sum(read(f).get("failures", 0) for f in sets[m].files) for m in MODES}
        shared_active = all(read(f).get("shared") for f in sets["shared"].files)
    finally:
        turn.write_text("")
        for ws in sets.values():
            ws.stop()
    out: dict[str, Any] = {}
    for m in MODES:
        lat = latencies[m]
        out[m] = {
            "pss_mb_per_worker": [round(x, 1) for x in pss[m]],
            "pss_mb_total": round(sum(pss[m]), 1),
            "pss_mb_per_worker_after_swaps": [round(x, 1) for x in pss_after[m]],
            "pss_mb_total_after_swaps": round(sum(pss_after[m]), 1),
            "requests": len(lat),
            "latency_ms_p50": round(statistics.median(lat) * 1000, 2),
            "latency_ms_p99": round(pct(lat, 0.99) * 1000, 2),
            "latency_ms_p50_per_worker": [
                round(statistics.median(w) * 1000, 1) if w else None for w in per_worker[m]
            ],
            "swap_to_all_workers_serving_s": round(statistics.median(swaps[m]), 3),
            "swap_samples_s": [round(s, 3) for s in swaps[m]],
            "failures": failures[m],
        }
    out["shared"]["shared_active"] = shared_active
    return out


def one_plain_worker_pss(work: Path, shape: tuple[int, int], rate: float) -> float:
    (work / "turn").write_text("")
    ws = WorkerSet("plain", work, shape, 1, rate, together=True)
    try:
        wait_for(lambda: ws.serving("v1"), 600, 0.01)
        time.sleep(3)
        return round(pss_mb(ws.procs[0].pid), 1)
    finally:
        ws.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=24)  # 24 x 2048^2 float32 = 403 MB
    ap.add_argument("--workers", type=int, default=4)
    # 4 workers x 2 rps x ~30 ms stays well under 2 cores: latency, not a queue, is measured;
    # the arrivals are Poisson, so workers are never in or out of step for a whole run
    ap.add_argument("--rate", type=float, default=2.0, help="requests per second per worker")
    ap.add_argument("--slices", type=int, default=24, help="3 s serving turns, ABBA order")
    ap.add_argument("--dir", default=SHM, help="where the volume lives (a tmpfs)")
    ap.add_argument(
        "--together", action="store_true", help="start a set's workers at once, not in turn"
    )
    ap.add_argument("--json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="modelswap-shared-", dir=args.dir))
    try:
        one = one_plain_worker_pss(work, (args.width, args.layers), args.rate)
        both = measure(
            work,
            (args.width, args.layers),
            args.workers,
            args.rate,
            args.slices,
            together=args.together,
        )
        model_mb = round((work / "plain/versions/v1/model.onnx").stat().st_size / 1e6, 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = {
        "model_mb": model_mb,
        "model": f"MLP, {args.layers} MatMuls of {args.width} x {args.width} float32",
        "workers": args.workers,
        "slices": args.slices,
        "start": "together" if args.together else "one after another",
        "one_plain_worker_pss_mb": one,
        **both,
        "shared_total_pss_vs_one_worker": round(both["shared"]["pss_mb_total"] / one, 2),
        "shared_total_pss_after_swaps_vs_one_worker": round(
            both["shared"]["pss_mb_total_after_swaps"] / one, 2
        ),
        "shared_p50_vs_plain": round(
            both["shared"]["latency_ms_p50"] / both["plain"]["latency_ms_p50"], 3
        ),
    }
    emit(results, args.json)


def render(r: dict[str, Any]) -> list[str]:
    plain, shared = r["plain"], r["shared"]
    first, after = (
        r["shared_total_pss_vs_one_worker"],
        r.get("shared_total_pss_after_swaps_vs_one_worker"),
    )
    plain_after = round(statistics.fmean(plain.get("pss_mb_per_worker_after_swaps") or [0]), 1)
    strict = round(shared["pss_mb_total_after_swaps"] / plain_after, 2) if plain_after else None
    return [
        "## Shared mode (`python -m bench.shared_bench`)",
        "",
        f"{r['workers']} plain and {r['workers']} shared worker processes, each set on its own link to a",
        f"{r['model_mb']} MB model ({r.get('model', 'one MatMul')}) on tmpfs (/dev/shm).",
        f"Each set's workers start {r.get('start', 'together')}"
        " (the first prepares the shared artifact, as in a rolling start or a pre-fork server),",
        "then all stay loaded side by side; the sets take turns serving at a mean of 2 requests/s",
        f"per worker in {r.get('slices', '?')} slices of 3 s (ABBA order), so any drift of the machine falls on",
        "both. Swap times: two swaps per mode, ABBA, only the swapping set serving; PSS is read",
        "again 3 s after them.",
        "",
        "| | plain | shared | target | |",
        "|---|---|---|---|---|",
        f"| total PSS of the workers, first load | {plain['pss_mb_total']} MB | {shared['pss_mb_total']} MB ({first}x one plain worker's {r['one_plain_worker_pss_mb']} MB) | <= 1.3x one worker | {mark(first <= 1.3)} |",
        f"| total PSS after two swaps | {plain.get('pss_mb_total_after_swaps', '?')} MB | {shared.get('pss_mb_total_after_swaps', '?')} MB ({after}x) | <= 1.3x one worker | {mark(after is not None and after <= 1.3)} |",
        f"| the same, against one plain worker after those swaps ({plain_after} MB) | | {shared.get('pss_mb_total_after_swaps', '?')} MB ({strict}x) | <= 1.3x, the strict reading | {mark(strict is not None and strict <= 1.3)} |",
        f"| PSS per worker, first load | {plain.get('pss_mb_per_worker', '?')} MB | {shared.get('pss_mb_per_worker', '?')} MB | | |",
        f"| inference p50 / p99 | {plain['latency_ms_p50']} / {plain['latency_ms_p99']} ms | {shared['latency_ms_p50']} / {shared['latency_ms_p99']} ms | p50 within 10% of plain | {mark(r['shared_p50_vs_plain'] <= 1.1)} |",
        f"| link swap -> every worker serving the new version | {plain['swap_to_all_workers_serving_s']} s | {shared['swap_to_all_workers_serving_s']} s | no worse than plain | {mark(shared['swap_to_all_workers_serving_s'] <= plain['swap_to_all_workers_serving_s'])} |",
        f"| failed requests | {plain['failures']} | {shared['failures']} | 0 | {mark(plain['failures'] + shared['failures'] == 0)} |",
        "",
        f"Requests measured: plain {plain.get('requests', '?')}, shared {shared.get('requests', '?')}. "
        f"Swap samples: plain {plain.get('swap_samples_s', '?')} s, shared "
        f"{shared.get('swap_samples_s', '?')} s. Shared mode is off by default.",
        "",
        *SHARED_HISTORY,
        f"Per-worker p50 in this run: plain {plain.get('latency_ms_p50_per_worker', '?')} ms, "
        f"shared {shared.get('latency_ms_p50_per_worker', '?')} ms.",
        "",
    ]


SHARED_HISTORY = [
    "The worker that prepares. Preparing inside the serving process left that worker with a",
    "private heap as large as the model's weights and more (glibc keeps onnxruntime's freed",
    "arenas), for as long as it lived and again after every swap: with workers started one after",
    "another on a 384 MB MLP, 4 shared workers held 2.12x one private worker, the preparer alone",
    "931 MB PSS. Since issue #17 a short-lived child (loader/prepare.py) prepares, at a lower",
    "priority, and returns all of it when it exits; the worker maps the artifact like the others.",
    "Three runs of this benchmark since (#17): shared total 0.84x, 0.84x, 0.82x one private worker",
    "at first load and the same after two swaps, p50 shared/plain 1.007, 0.971, 0.922, no failed",
    "request. Shared is below one private worker because a private worker's first load also keeps",
    "the heap it loaded through (697 MB, against ~420 MB per plain worker after a swap, when the",
    "loader trims it); a shared worker maps a quarter of the 403 MB artifact and adds ~45 MB of",
    "its own (Python, numpy, onnxruntime). Against a private worker after a swap (~419 MB) the",
    "shared set is 1.40x in all three runs: missed in that strict reading. The floor is the",
    "weights once plus each worker's own runtime, (403 + 4 x 45) / 419 = 1.39x, so what is left",
    "above 1.3x is the per-process runtime, not a second copy of the weights. The same benchmark",
    "with the worker preparing in-process (before #17), one run: 2.99x at first load (the",
    "preparer 882 MB, the others 178 MB), 1.21x after swaps; one private worker was 473 MB in",
    "that run (466-713 MB across runs: how much loading heap a private worker keeps varies).",
    "An earlier version of this benchmark used one big MatMul and started the workers together:",
    "a tensor that large is mmapped and handed back at once, which hid the preparer's heap.",
    "",
    "Each worker's requests arrive at random (Poisson) at that mean rate. An earlier version",
    "sent them at a fixed period, and the result was decided by which workers happened to be",
    "in step: workers that finished loading together stayed in step for the whole run, so",
    "their requests always collided on the 2 cores (shared/plain p50 swung 0.76x, 2.34x, 1.58x",
    "in three runs; with Poisson arrivals 1.003x, 0.904x, 0.971x).",
]


if __name__ == "__main__":
    main()
