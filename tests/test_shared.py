"""Shared mode: several real worker processes map one prepared copy of the weights."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelswap.loader import ModelLoader
from modelswap.testing.onnx_models import mlp_model, scale_model, swap_link, version_dir
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parents[1]


def two_versions(tmp_path: Path) -> Path:
    base = tmp_path / "clf"
    version_dir(base, "v1", scale_model(tmp_path / "m1.onnx", 1.0, width=600))
    version_dir(base, "v2", scale_model(tmp_path / "m2.onnx", 2.0, width=600))
    swap_link(base, "v1")
    return base


def reports(files: list[Path]) -> list[dict[str, Any]]:
    out = []
    for f in files:
        try:
            out.append(json.loads(f.read_text()))
        except (OSError, ValueError):
            out.append({})
    return out


def test_four_workers_share_one_prepared_copy_and_swap_together(tmp_path: Path) -> None:
    """4 worker processes: same version, all swap, no failed request, each version prepared once."""
    base = two_versions(tmp_path)
    files = [tmp_path / f"worker{i}.json" for i in range(4)]
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "modelswap.testing.shared_worker",
                str(base / "current"),
                str(f),
            ],
            cwd=ROOT,
        )
        for f in files
    ]
    try:
        wait_until(lambda: all(r.get("version") == "v1" for r in reports(files)), timeout=60)
        assert all(r["shared"] for r in reports(files)), reports(files)
        swap_link(base, "v2")
        wait_until(lambda: all(r.get("version") == "v2" for r in reports(files)), timeout=60)
        wait_until(lambda: all(r["served"].get("v2", 0) > 10 for r in reports(files)), timeout=30)
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(10)
    final = reports(files)
    assert [r["failures"] for r in final] == [0, 0, 0, 0]
    log = (base / ".prepared" / "prepare.log").read_text().splitlines()
    assert sorted(line.split()[0] for line in log) == ["v1", "v2"]
    artifacts = sorted(p.name.split("-")[0] for p in (base / ".prepared").iterdir() if p.is_dir())
    assert artifacts == ["v1", "v2"]
    weights = next((base / ".prepared").glob("v2-*/weights.bin"))
    assert weights.stat().st_mode & 0o777 == 0o444


def test_unwritable_prepared_dir_falls_back_to_private_load(tmp_path: Path) -> None:
    """When the prepared copy cannot be made, the loader serves privately and says so."""
    base = two_versions(tmp_path)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with ModelLoader(
        base / "current", shared=True, prepared_dir=blocker / "prepared", poll_interval_s=0.05
    ) as loader:
        assert loader.version == "v1"
        out = loader.run(None, {"input": np.ones((1, 600), np.float32)})[0]
        assert float(out[0, 0]) == 1.0
        health = loader.health()[1]
        assert health["shared"] is False
        assert "loaded privately" in health["shared_error"]


def test_artifacts_of_versions_gone_from_the_volume_are_removed(tmp_path: Path) -> None:
    """After the agent prunes a version, the next swap deletes its prepared copy."""
    base = two_versions(tmp_path)
    version_dir(base, "v3", scale_model(tmp_path / "m3.onnx", 3.0, width=600))
    with ModelLoader(base / "current", shared=True, poll_interval_s=0.05) as loader:
        swap_link(base, "v2")
        wait_until(lambda: loader.version == "v2", timeout=10)
        shutil.rmtree(base / "versions" / "v1")
        swap_link(base, "v3")
        wait_until(lambda: loader.version == "v3", timeout=10)
        prepared = base / ".prepared"
        wait_until(
            lambda: sorted(p.name[:2] for p in prepared.iterdir() if p.is_dir()) == ["v2", "v3"],
            timeout=10,
        )


ANON = (
    "import sys; from pathlib import Path; from modelswap.loader import ModelLoader\n"
    "with ModelLoader(sys.argv[1], shared=True) as loader:\n"
    "    assert loader.health()[1]['shared'], loader.health()[1]\n"
    "    rollup = Path('/proc/self/smaps_rollup').read_text().splitlines()\n"
    "    print(next(int(x.split()[1]) for x in rollup if x.startswith('Anonymous:')) // 1024)\n"
)


def test_worker_that_prepares_keeps_no_private_copy_of_the_weights(tmp_path: Path) -> None:
    """The first worker prepares the shared copy, a second only maps it: the first holds no
    more private (anonymous) memory than the second. Preparing inside the worker left it with
    the weights' size and more in its heap for as long as it lived."""
    base = tmp_path / "clf"
    # many mid-sized tensors, as in a real MLP: onnxruntime's heap kept those (one big tensor
    # is mmapped and returned at once, which hid the defect)
    version_dir(base, "v1", mlp_model(tmp_path / "m1.onnx", 1.0, width=1024, layers=8))  # 32 MB
    swap_link(base, "v1")
    model_mb = (base / "versions/v1/model.onnx").stat().st_size >> 20

    def anonymous_mb() -> int:
        done = subprocess.run(
            [sys.executable, "-c", ANON, str(base / "current")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        return int(done.stdout.split()[-1])

    first, second = anonymous_mb(), anonymous_mb()
    assert len((base / ".prepared" / "prepare.log").read_text().splitlines()) == 1
    assert first - second < model_mb / 2, (first, second, model_mb)


def test_a_preparation_that_fails_says_why_in_one_line(tmp_path: Path) -> None:
    """The child's own failure, not a traceback, becomes the reason /health shows."""
    from modelswap.loader.shared import SharedUnavailable, _prepare  # noqa: PLC0415

    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not a model")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(SharedUnavailable) as failed:
        _prepare(bad, out)
    why = str(failed.value)
    assert why.startswith(f"preparing {bad} failed: "), why
    assert "\n" not in why
    assert "Traceback" not in why
    assert not (out / "model.onnx").exists()
