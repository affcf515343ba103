"""A registry with hostile text in every field the UI shows, and fetching its pages."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import modelswap
from modelswap.records import FleetReport
from modelswap.testing.ui_process import server_log, serving

SCRIPT = "<script>alert('notes')</script>"
ONERROR = '<img src=x onerror="alert(1)">'
INSTANCE = "pod-1"
__all__ = ["get", "hostile_registry", "server_log", "serving"]


def hostile_registry(root: Path, events: int = 0) -> modelswap.Registry:
    """clf: v1..v3 published (v2's notes hold a <script>), CURRENT moved v1 -> v2 -> v3 and
    rolled back (the rollback's reason holds an onerror=), `events` more promotes, STAGING
    written by hand, an incomplete v4, a v5 with a malformed metadata.json, and one fleet report."""
    reg = modelswap.Registry(root, actor="tester@test")
    model = root.parent / f"{root.name}-model.onnx"
    for i, acc in enumerate((0.90, 0.93, 0.95), start=1):
        model.write_bytes(f"model {i}".encode())
        reg.publish(
            "clf",
            [model],
            metrics={"accuracy": acc, "latency_ms": 4.0 + i},
            notes=SCRIPT if i == 2 else f"build {i}",
            training_data=f"s3://data/clf/{i}",
            git_sha=f"{i:040x}",
        )
    reg.promote("clf", "v1", reason="first")
    reg.promote("clf", "v2", reason="more data")
    reg.promote("clf", "v3")
    reg.rollback("clf", reason=ONERROR)
    for n in range(events):
        reg.promote("clf", "v3" if n % 2 == 0 else "v2", reason=f"move {n}")
    (root / "clf" / "STAGING").write_text("v1\n")  # moved by hand: out-of-band
    (root / "clf" / "v4").mkdir()
    (root / "clf" / "v4" / "model.onnx").write_bytes(b"half")
    (root / "clf" / "v5").mkdir()
    (root / "clf" / "v5" / "metadata.json").write_text("{not json")
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    report = FleetReport(
        instance=INSTANCE,
        pointer="CURRENT",
        desired_version="v2",
        active_version="v2",
        ready=True,
        last_change=now,
        last_error=ONERROR,
        heartbeat=now,
    )
    (root / "clf" / "fleet").mkdir(exist_ok=True)
    (root / "clf" / "fleet" / f"{INSTANCE}.json").write_text(json.dumps(report.to_json()))
    return reg


def get(url: str, method: str = "GET") -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(url, method=method)  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=20) as r:  # noqa: S310 - loopback
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()
