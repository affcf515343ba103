"""The README's main job runs end to end (fast mode), so CI keeps it working."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _demo(*flags: str, timeout: float) -> tuple[str, str]:
    """Run the demo in fast mode; its stdout and the tail of both streams for a failure."""
    result = subprocess.run(
        [sys.executable, "-m", "examples.demo", "--fast", *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=dict(os.environ, MODELSWAP_REGISTRY=""),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout, result.stderr


@pytest.mark.timeout(300)
def test_demo_runs_to_the_end_with_no_failed_request() -> None:
    """`python -m examples.demo --fast` exits 0, rolls back, and reports zero failures."""
    out, _ = _demo(timeout=280)
    assert "REFUSED: v3 is worse than v2" in out
    assert "digits/CURRENT: v3 -> v2 (event 4)" in out
    assert "requests sent: " in out
    assert ", failed: 0" in out
    assert "no request failed during any swap" in out
    assert "FORCED by demo" in out


@pytest.mark.timeout(400)
def test_demo_s3_prints_the_endpoint_and_credentials_it_used() -> None:
    """`make demo-s3` (the demo on a loopback SeaweedFS) prints an export line with the
    endpoint, a key pair and the registry, so its commands can be re-run by hand."""
    out, _ = _demo("--s3-local", timeout=380)
    exports = [line.strip() for line in out.splitlines() if line.strip().startswith("export ")]
    assert len(exports) == 1, out[:2000]
    values = dict(item.split("=", 1) for item in exports[0].removeprefix("export ").split())
    assert values["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    assert values["AWS_ACCESS_KEY_ID"]
    assert values["AWS_SECRET_ACCESS_KEY"]
    assert values["MODELSWAP_REGISTRY"] == "s3://demo/models"
    assert ", failed: 0" in out


@pytest.mark.timeout(300)
def test_demo_rollout_promotes_a_good_canary_and_rolls_back_bad_ones() -> None:
    """`make demo-rollout`: ten loaders serving traffic, ten agents and a controller; v2 is
    promoted on its live metrics, v3 (loads fine, answers worse) is caught by live accuracy
    and rolled back, v4 (one byte flipped in the store) is refused by the canary share and
    rolled back, all with no command typed."""
    result = subprocess.run(
        [sys.executable, "-m", "examples.demo_rollout"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
        env=dict(os.environ, MODELSWAP_REGISTRY=""),
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "v2 promoted by the controller on its live metrics, and baked" in out
    assert "v3 rolled back by live metrics, with no command typed: live accuracy" in out
    assert "v4 rolled back and quarantined by the controller" in out
    assert "REFUSED v4" in out
    assert "now every agent serves v2; v3 was served by the canary share only, v4 by nobody" in out
    assert "clf/v3 is quarantined" in out
    assert "auto-rollback" in out
