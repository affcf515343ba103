"""The evaluation gate with real scikit-learn models converted to ONNX, on both backends."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from examples.train import SEED, to_onnx, train
from sklearn.datasets import load_digits
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import train_test_split

from modelswap.pointers import read_pointer
from modelswap.publish import PublishRequest, publish
from modelswap.registry import Registry
from tests.conftest import run_cli


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """v1 (0.900), v2 (0.963), v3 (0.609) from examples/train.py, plus extra variants."""
    out = tmp_path_factory.mktemp("trained")
    train(out)
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, _, y_train, _ = train_test_split(x, y, test_size=0.3, random_state=SEED)
    shuffled = np.random.default_rng(1).permutation(y_train)
    variants = {
        "shuffled": LogisticRegression(max_iter=2000).fit(x_train, shuffled),
        "slightly-worse": LogisticRegression(C=0.7, max_iter=2000).fit(x_train, y_train),
    }
    for name, model in variants.items():
        (out / name).mkdir()
        (out / name / "model.onnx").write_bytes(to_onnx(model, x.shape[1]))
    reg = LinearRegression().fit(x_train, y_train.astype(np.float32))
    from skl2onnx import convert_sklearn  # noqa: PLC0415
    from skl2onnx.common.data_types import FloatTensorType  # noqa: PLC0415

    onx = convert_sklearn(
        reg, initial_types=[("input", FloatTensorType([None, 64]))], target_opset=17
    )
    (out / "regressor").mkdir()
    (out / "regressor" / "model.onnx").write_bytes(onx.SerializeToString())
    return out


@pytest.fixture
def published(registry_url: str, registry: Registry, trained: Path) -> Registry:
    for version in ("v1", "v2", "v3", "shuffled", "slightly-worse", "regressor"):
        files = {"model.onnx": trained / version / "model.onnx"}
        publish(registry, PublishRequest(model="digits", files=files, version=version))
    return registry


def gate(registry_url: str, trained: Path, *args: str) -> tuple[int, str, str]:
    r = run_cli(
        "gate", "digits", *args, "--eval-set", str(trained / "eval.npz"), registry=registry_url
    )
    return r.returncode, r.stdout, r.stderr


def promote(registry_url: str, *args: str) -> tuple[int, str, str]:
    r = run_cli("promote", "digits", *args, registry=registry_url)
    return r.returncode, r.stdout, r.stderr


def test_better_model_passes(registry_url: str, published: Registry, trained: Path) -> None:
    """v2 against a live v1: new=0.9630 current=0.9000, exit 0."""
    assert promote(registry_url, "v1")[0] == 0
    code, out, _ = gate(registry_url, trained, "v2")
    assert code == 0
    assert out.splitlines()[0].startswith("new=0.9630 current=0.9000")
    assert "PASS" in out


def test_shuffled_labels_are_refused_and_pointer_unchanged(
    registry_url: str, published: Registry, trained: Path
) -> None:
    """A model trained on shuffled labels fails the gate; a gated promote leaves CURRENT."""
    assert promote(registry_url, "v2")[0] == 0
    code, out, _ = gate(registry_url, trained, "shuffled")
    assert code == 1
    assert "REFUSED" in out
    code, out, _ = promote(registry_url, "shuffled", "--eval-set", str(trained / "eval.npz"))
    assert code == 1
    assert "not moved" in out
    assert read_pointer(published, "digits", "CURRENT").version == "v2"  # type: ignore[union-attr]
    history = json.loads(run_cli("history", "digits", "--json", registry=registry_url).stdout)
    assert len(history) == 1


def test_slightly_worse_within_tolerance_passes(
    registry_url: str, published: Registry, trained: Path
) -> None:
    """About 0.002 below 0.9630 passes at the default 0.005 and is refused at 0.001."""
    assert promote(registry_url, "v2")[0] == 0
    code, out, _ = gate(registry_url, trained, "slightly-worse")
    # The exact figure moves with scikit-learn's solver (0.9593 earlier, 0.9611 on 1.9).
    new, current = (float(w.split("=")[1]) for w in out.splitlines()[0].split()[:2])
    assert (code, current) == (0, 0.9630)
    assert 0.001 < current - new < 0.005
    assert gate(registry_url, trained, "slightly-worse", "--tolerance", "0.001")[0] == 1


def test_force_needs_a_reason_and_is_recorded(
    registry_url: str, published: Registry, trained: Path
) -> None:
    """--force --reason moves past a refusing gate and the event names who forced it."""
    assert promote(registry_url, "v2")[0] == 0
    evalset = str(trained / "eval.npz")
    code, _, err = promote(registry_url, "v3", "--eval-set", evalset, "--force")
    assert code == 2
    assert "--force needs --reason" in err
    code, out, _ = promote(registry_url, "v3", "--eval-set", evalset, "--force", "--reason", "demo")
    assert code == 0, out
    event = json.loads(run_cli("history", "digits", "--json", registry=registry_url).stdout)[-1]
    assert (event["to"], event["reason"]) == ("v3", "demo")
    gate_record = event["gate"]
    assert (gate_record["passed"], gate_record["forced"], gate_record["forced_by"]) == (
        False,
        True,
        "tester@test",
    )
    assert (
        gate_record["eval_set_sha256"]
        == hashlib.sha256((trained / "eval.npz").read_bytes()).hexdigest()
    )
    assert 0.55 < gate_record["new"] < 0.65  # v3, ~0.61 whatever scikit-learn's version


def test_gated_promote_records_the_result(
    registry_url: str, published: Registry, trained: Path
) -> None:
    """A passing gated promote moves the pointer and stores metrics, tolerance and eval set."""
    assert promote(registry_url, "v1")[0] == 0
    code, out, _ = promote(registry_url, "v2", "--eval-set", str(trained / "eval.npz"))
    assert code == 0, out
    event = json.loads(run_cli("history", "digits", "--json", registry=registry_url).stdout)[-1]
    assert event["gate"]["passed"] is True
    assert event["gate"]["forced"] is False
    assert (event["gate"]["metric"], event["gate"]["tolerance"]) == ("accuracy", 0.005)
    assert sorted(event["gate"]["metrics"]) == ["v1", "v2"]


def test_first_promotion_needs_a_floor_or_force(
    registry_url: str, published: Registry, trained: Path
) -> None:
    """No CURRENT: refused without --min; --min 0.9 passes v2; --min 0.99 refuses it."""
    code, _, err = promote(registry_url, "v2", "--eval-set", str(trained / "eval.npz"))
    assert code == 1
    assert "--min" in err
    code, out, _ = gate(registry_url, trained, "v2", "--min", "0.99")
    assert (code, "misses --min" in out) == (1, True)
    code, out, _ = promote(
        registry_url, "v2", "--eval-set", str(trained / "eval.npz"), "--min", "0.9"
    )
    assert code == 0, out
    assert out.splitlines()[0].startswith("new=0.9630 current=none")


def test_regression_metrics_need_a_declared_direction(
    registry_url: str, published: Registry, trained: Path, tmp_path: Path
) -> None:
    """rmse:min works on a regressor; a metric with no known direction is a usage error."""
    x = np.load(trained / "eval.npz")["X"]
    y = np.load(trained / "eval.npz")["y"].astype(np.float32)
    evalset = tmp_path / "reg.npz"
    np.savez(evalset, X=x, y=y)

    def gate(metric: str) -> subprocess.CompletedProcess[str]:
        return run_cli(
            "gate",
            "digits",
            "regressor",
            "--against",
            "regressor",
            "--eval-set",
            str(evalset),
            "--metric",
            metric,
            registry=registry_url,
        )

    r = gate("rmse")
    assert r.returncode == 0, r.stderr
    assert "rmse" in r.stdout
    r = gate("bogus")
    assert r.returncode == 2
    assert "declare it" in r.stderr


@pytest.mark.parametrize("case", ["missing-metric", "nan", "raises", "wrong-shape", "not-npz"])
def test_evaluation_problems_refuse_never_pass(
    registry_url: str,
    published: Registry,
    trained: Path,
    tmp_path: Path,
    case: str,
) -> None:
    """Missing metric, NaN, a raising evaluator, a mismatched or broken set: exit 1, error:."""
    assert promote(registry_url, "v1")[0] == 0
    (tmp_path / "evals.py").write_text(
        "def nan(model_dir, eval_set):\n    return {'accuracy': float('nan')}\n"
        "def raises(model_dir, eval_set):\n    raise RuntimeError('boom')\n"
    )
    evalset = str(trained / "eval.npz")
    extra: list[str] = []
    if case == "missing-metric":
        extra = ["--metric", "f1"]
    elif case in ("nan", "raises"):
        extra = ["--evaluator", f"evals:{case}"]
    elif case == "wrong-shape":
        evalset = str(tmp_path / "wrong.npz")
        np.savez(evalset, X=np.zeros((5, 10), np.float32), y=np.zeros(5, np.int64))
    else:
        evalset = str(tmp_path / "broken.npz")
        Path(evalset).write_bytes(b"not a zip")
    r = run_cli(
        "gate", "digits", "v2", "--eval-set", evalset, *extra, registry=registry_url, cwd=tmp_path
    )
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stderr.startswith("error: ")
    assert "PASS" not in r.stdout
    assert read_pointer(published, "digits", "CURRENT").version == "v1"  # type: ignore[union-attr]
