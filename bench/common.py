"""What every benchmark needs: waiting for a condition, percentiles, process figures from
/proc, and printing (and saving) the results."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


def wait_for(pred: Any, timeout: float, interval: float = 0.002) -> float:
    """Seconds until pred() held; TimeoutError after `timeout`."""
    start = time.monotonic()
    while not pred():
        if time.monotonic() - start > timeout:
            raise TimeoutError
        time.sleep(interval)
    return time.monotonic() - start


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def emit(results: Any, json_path: str | None) -> None:
    """Print the results as JSON, and write them to json_path too when given."""
    text = json.dumps(results, indent=2)
    print(text)
    if json_path:
        Path(json_path).write_text(text + "\n")


def mark(ok: bool) -> str:
    """A target's verdict in docs/benchmarks.md."""
    return "met" if ok else "**missed**"
