"""The Python API as a pipeline uses it: train, publish, gate, promote, roll back and download
through `modelswap.Registry` alone (no subprocess), on the folder and on S3 alike."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from examples.train import train

import modelswap
from modelswap.errors import ModelNotFound, VersionExists

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float]]:
    out = tmp_path_factory.mktemp("trained")
    return out, train(out)


def test_a_whole_pipeline_runs_through_the_python_api(
    registry_url: str, trained: tuple[Path, dict[str, float]], tmp_path: Path
) -> None:
    """publish -> gated promote -> better candidate promoted -> worse one refused -> rollback ->
    verified download, with typed results and the CLI's own exceptions."""
    out, accuracy = trained
    eval_set = out / "eval.npz"
    reg = modelswap.Registry(registry_url, actor="ci@pipeline")
    for v in ("v1", "v2", "v3"):
        meta = reg.publish(
            "digits",
            [out / v / "model.onnx"],
            metrics={"accuracy": accuracy[v]},
            training_data="sklearn digits",
            notes=f"trained as {v}",
        )
        assert meta.version == v
    with pytest.raises(VersionExists):
        reg.publish("digits", [out / "v1" / "model.onnx"], version="v1")

    first = reg.promote("digits", "v1", eval_set=eval_set, minimum=0.5, reason="first")
    assert (first.moved, first.gate is not None and first.gate.passed) == (True, True)
    checked = reg.gate("digits", "v2", eval_set=eval_set)
    assert (checked.passed, checked.against) == (True, "v1")
    assert checked.current is not None
    assert checked.new > checked.current
    second = reg.promote("digits", "v2", eval_set=eval_set, reason="more data")
    assert second.event is not None
    assert (second.event.from_version, second.event.to, second.event.actor) == (
        "v1",
        "v2",
        "ci@pipeline",
    )

    with pytest.raises(modelswap.GateRefused) as refused:
        reg.promote("digits", "v3", eval_set=eval_set)
    assert refused.value.result.passed is False
    assert reg.show("digits").version == "v2"  # nothing moved

    def generous(_model_dir: Path, _eval_set: Path) -> dict[str, float]:
        return {"accuracy": 0.99}

    assert reg.gate("digits", "v3", eval_set=eval_set, evaluator=generous).passed is True

    back = reg.rollback("digits", reason="p99 regression")
    assert back.event is not None
    assert (back.event.type, back.event.to) == ("rollback", "v1")
    log = reg.history("digits")
    assert [(e.type, e.from_version, e.to) for e in log.events] == [
        ("promote", None, "v1"),
        ("promote", "v1", "v2"),
        ("rollback", "v2", "v1"),
    ]
    assert log.warnings == ()
    rows = {r.version: r.pointers for r in reg.versions("digits")}
    assert rows == {"v1": ("CURRENT",), "v2": (), "v3": ()}
    copy = reg.download("digits", "CURRENT", tmp_path / "copy")
    assert (copy / "model.onnx").read_bytes() == (out / "v1" / "model.onnx").read_bytes()
    assert reg.verify("digits") == {"v1": [], "v2": [], "v3": []}
    with pytest.raises(ModelNotFound):
        reg.versions("digitz")


def test_a_user_script_type_checks_under_mypy_strict(tmp_path: Path) -> None:
    """The package ships py.typed and its public names carry types that mypy --strict uses."""
    script = tmp_path / "pipeline.py"
    script.write_text(
        textwrap.dedent(
            """
            import modelswap

            def ship(path: str) -> str:
                reg = modelswap.Registry("./registry", actor="ci@pipeline")
                meta: modelswap.Metadata = reg.publish("clf", [path], metrics={"acc": 0.9})
                result: modelswap.PromoteResult = reg.promote("clf", meta.version)
                moved: bool = result.moved
                events: tuple[modelswap.Event, ...] = reg.history("clf").events
                return f"{meta.version} {moved} {len(events)}"
            """
        )
    )
    wrong = tmp_path / "wrong.py"
    wrong.write_text("import modelswap\n\nx: int = modelswap.Registry('.').publish('m', ['f'])\n")
    env = {"MYPYPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}

    def mypy(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(path)],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            check=False,
            timeout=300,
        )

    good = mypy(script)
    assert good.returncode == 0, good.stdout + good.stderr
    bad = mypy(wrong)
    assert bad.returncode == 1
    assert 'incompatible type "Metadata"' in bad.stdout or "Metadata" in bad.stdout


def test_the_readme_pipeline_example_runs_as_written(tmp_path: Path) -> None:
    """The README's CI example, copied out of the README, runs and promotes v2 past v1."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- pipeline-example -->", 1)[1].split("```python\n", 1)[1]
    code = block.split("```", 1)[0]
    (tmp_path / "pipeline.py").write_text(code)
    done = subprocess.run(
        [sys.executable, "pipeline.py"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "USER": "ci"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("v1 live, gate new=")
    assert lines[1].startswith("v2 live, gate new=")
    assert lines[2] == "['metadata.json', 'model.onnx']"
