"""The three network stores side by side on this machine: `modelswap agent --once` (download,
verify, link: what an init container waits for) of one version from SeaweedFS (s3://),
fake-gcs-server (gs://) and Azurite (az://), plus each client library's import time and
installed size (with its dependencies), and obstore's for the record.

    .venv/bin/python -m bench.stores_bench [--json out.json] [--size-mb 200] [--runs 3]

Emulators are not clouds: the figures compare the clients and modelswap's paths on one
loopback, not GCS against Azure.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3

from bench.common import emit
from modelswap.api import Registry
from modelswap.testing import emulators, seaweed

CLIENTS = {  # backend -> (module imported by the backend, distributions it installs)
    "s3": ("modelswap.store.s3", ["boto3"]),
    "gcs": ("modelswap.store.gcs", ["google-cloud-storage"]),
    "azure": ("modelswap.store.azure", ["azure-storage-blob"]),
    "obstore (not used)": ("obstore", ["obstore"]),
}


def closure_bytes(names: list[str]) -> int:
    """Installed bytes of the distributions and everything they require (once each)."""
    seen: set[str] = set()
    todo = list(names)
    total = 0
    while todo:
        name = re.split(r"[ ;<>=!~\[]", todo.pop(), maxsplit=1)[0].lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        total += sum(f.size or 0 for f in dist.files or [] if f.size)
        todo += [r for r in dist.requires or [] if "extra ==" not in r]
    return total


def import_s(module: str, runs: int) -> float:
    def once(code: str) -> float:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        return time.perf_counter() - t

    base = statistics.median(once("pass") for _ in range(runs))
    return max(0.0, statistics.median(once(f"import {module}") for _ in range(runs)) - base)


def agent_once_s(url: str, env: dict[str, str], work: Path, runs: int) -> list[float]:
    times = []
    for i in range(runs):
        dest = work / f"dest-{i}"
        t = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "modelswap", "agent", "clf", "--dest", str(dest), "--once"],
            env={**os.environ, **env, "MODELSWAP_REGISTRY": url},
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        times.append(time.perf_counter() - t)
        shutil.rmtree(dest)
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--size-mb", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="stores-bench-"))
    model = work / "model.bin"
    model.write_bytes(os.urandom(args.size_mb << 20))
    weed = seaweed.start(work / "seaweed")
    gcs = emulators.start_fake_gcs(work / "gcs")
    az = emulators.start_azurite(work / "azurite")
    results: dict[str, Any] = {"size_mb": args.size_mb, "runs": args.runs, "stores": {}}
    try:
        with seaweed.aws_env(weed):
            boto3.client("s3").create_bucket(Bucket="bench")
        targets = {
            "s3": ("s3://bench/models", dict(weed.env()), lambda: seaweed.aws_env(weed)),
            "gcs": (f"gs://{gcs.bucket}/models", gcs.env, lambda: emulators.environment(gcs)),
            "azure": (f"az://{az.container}/models", az.env, lambda: emulators.environment(az)),
        }
        for name, (url, env, variables) in targets.items():
            with variables():
                reg = Registry(url, actor="bench")
                t = time.perf_counter()
                reg.publish("clf", [model])
                publish_s = time.perf_counter() - t
                reg.promote("clf", "v1")
            times = agent_once_s(url, env, work, args.runs)
            results["stores"][name] = {
                "publish_s": round(publish_s, 2),
                "agent_once_s": [round(x, 2) for x in times],
                "agent_once_mb_s": round(args.size_mb / statistics.median(times), 1),
            }
    finally:
        for server in (weed, gcs, az):
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    results["clients"] = {
        name: {
            "import_s": round(import_s(module, args.runs), 3),
            "installed_mb": round(closure_bytes(dists) / 1e6, 1),
        }
        for name, (module, dists) in CLIENTS.items()
    }
    emit(results, args.json)


def render(r: dict[str, Any]) -> list[str]:
    """The section of docs/benchmarks.md (bench/report.py)."""
    lines = [
        "## Stores side by side (`python -m bench.stores_bench`)",
        "",
        f"One {r['size_mb']} MB version; `modelswap agent --once` (download, verify, link) from "
        f"each emulator on loopback, median of {r['runs']}. Emulators are not clouds: this "
        "compares the clients and modelswap's paths, not GCS with Azure.",
        "",
        "| store | publish | agent --once | MB/s |",
        "|---|---|---|---|",
    ]
    for name, s in r["stores"].items():
        median = statistics.median(s["agent_once_s"])
        lines.append(f"| {name} | {s['publish_s']} s | {median:.2f} s | {s['agent_once_mb_s']} |")
    lines += ["", "| client | import time | installed (with dependencies) |", "|---|---|---|"]
    for name, c in r["clients"].items():
        lines.append(f"| {name} | {c['import_s'] * 1000:.0f} ms | {c['installed_mb']} MB |")
    return [*lines, ""]


if __name__ == "__main__":
    main()
