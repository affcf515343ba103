"""The README's five-minute tour, copied out of the README and run top to bottom as written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_tour_runs_top_to_bottom(tmp_path: Path) -> None:
    """Every command of the tour succeeds in an empty folder, in the order written."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- tour -->", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    script = tmp_path / "tour.sh"
    script.write_text("set -euo pipefail\n" + block)
    bin_dir = Path(sys.executable).parent
    env = dict(
        os.environ,
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        PYTHONPATH=str(ROOT),
        MODELSWAP_ACTOR="reader@readme",
    )
    env.pop("MODELSWAP_REGISTRY", None)
    done = subprocess.run(
        ["bash", str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "refused, as it should be" in done.stdout
    assert "FORCED by reader@readme" in done.stdout
    assert "classifier/CURRENT: v3 -> v2" in done.stdout  # the rollback
    assert (tmp_path / "copy" / "model.onnx").read_bytes() == (
        tmp_path / "trained" / "v2" / "model.onnx"
    ).read_bytes()
