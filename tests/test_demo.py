"""The README's main job runs end to end (fast mode), so CI keeps it working."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(300)
def test_demo_runs_to_the_end_with_no_failed_request() -> None:
    """`python -m examples.demo --fast` exits 0, rolls back, and reports zero failures."""
    result = subprocess.run(
        [sys.executable, "-m", "examples.demo", "--fast"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
        env=dict(os.environ, MODELSWAP_REGISTRY=""),
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "REFUSED: v3 is worse than v2" in out
    assert "digits/CURRENT: v3 -> v2 (event 4)" in out
    assert "requests sent: " in out
    assert ", failed: 0" in out
    assert "no request failed during any swap" in out
    assert "FORCED by demo" in out
