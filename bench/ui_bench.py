"""How fast `modelswap ui` renders a big registry: 500 versions and 10,000 events of one model
in a local folder (modelswap.testing.sample_registry), served by the real `modelswap ui`
process and fetched over loopback HTTP.

"Cold" is the first request to a freshly started server (its caches empty; the files are in
the OS page cache, as on any machine that has read them once); "warm" is the same page again.

    .venv/bin/python -m bench.ui_bench [--json out.json] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import emit
from modelswap.testing import sample_registry
from modelswap.testing.ui_process import serving

VERSIONS, EVENTS = 500, 10_000
PAGES = {
    "model page": "/models/clf",
    "timeline, newest 50": "/models/clf/timeline",
    "timeline, page 200 (oldest)": "/models/clf/timeline?page=200",
    "models": "/",
    "version": "/models/clf/versions/v250",
    "diff": "/models/clf/diff?a=v1&b=v500",
}


def fetch(url: str) -> tuple[float, int]:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as r:  # noqa: S310 - loopback only
        body = r.read()
    return time.perf_counter() - start, len(body)


def measure(runs: int, warm_n: int = 10) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "reg"
        built = sample_registry.build(root, versions=VERSIONS, events=EVENTS)
        rows = []
        for name, path in PAGES.items():
            cold, warm, size = [], [], 0
            for _ in range(runs):
                with serving(root) as url:
                    seconds, size = fetch(url + path)
                    cold.append(seconds)
                    warm += [fetch(url + path)[0] for _ in range(warm_n)]
            rows.append(
                {
                    "page": name,
                    "path": path,
                    "cold_s": [round(c, 3) for c in cold],
                    "cold_median_s": round(statistics.median(cold), 3),
                    "warm_median_s": round(statistics.median(warm), 4),
                    "warm_max_s": round(max(warm), 4),
                    "bytes": size,
                }
            )
    return {"versions": VERSIONS, "events": EVENTS, "built": built, "runs": runs, "rows": rows}


def render(r: dict[str, Any]) -> list[str]:
    """The section of docs/benchmarks.md (bench/report.py)."""
    out = [
        "## The registry UI on a big registry (`python -m bench.ui_bench`)",
        "",
        f"One model with {r['versions']} versions and {r['events']:,} events in a local folder, "
        "served by the real `modelswap ui` and fetched over loopback. *Cold*: the first request "
        f"to a freshly started server ({r['runs']} starts; the files are in the OS page cache). "
        "*Warm*: the same page again (10 times per start): events and metadata.json are "
        "immutable, so the server keeps what it parsed while a listing shows the same ETags, "
        "and re-lists every time. The target is under 1 s for the model page.",
        "",
        "| page | cold (median) | cold runs | warm (median) | warm (max) | size |",
        "|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        runs = ", ".join(f"{c:.2f}" for c in row["cold_s"])
        out.append(
            f"| {row['page']} | {row['cold_median_s']:.2f} s | {runs} | "
            f"{row['warm_median_s'] * 1000:.0f} ms | {row['warm_max_s'] * 1000:.0f} ms | "
            f"{row['bytes'] / 1000:.0f} KB |"
        )
    model = next(x for x in r["rows"] if x["page"] == "model page")
    verdict = "met" if max(model["cold_s"]) < 1 else "missed"
    out += [
        "",
        f"Model page under 1 s: {verdict} (cold worst {max(model['cold_s']):.2f} s, warm "
        f"{model['warm_median_s'] * 1000:.0f} ms).",
        "",
    ]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    r = measure(args.runs)
    print("\n".join(render(r)))
    emit(r, args.json)


if __name__ == "__main__":
    main()
