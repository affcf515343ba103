"""The CLI as a new user meets it: what promote says when it is not gated or forced, where a
second rollback goes, hints that name real models and versions, and --version."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from examples.train import train

import modelswap
from tests.conftest import run_cli

MakeFile = Callable[[str, bytes], Path]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trained")
    train(out)
    return out


def _three(url: str, trained: Path) -> None:
    reg = modelswap.Registry(url, actor="setup")
    for v in ("v1", "v2", "v3"):
        reg.publish("digits", [trained / v / "model.onnx"])


def test_an_ungated_promote_says_so_and_can_be_required_to_be_gated(
    registry_url: str, trained: Path
) -> None:
    """No --eval-set: a note says the move is not gated; with MODELSWAP_REQUIRE_GATE=1 an
    ungated promote of CURRENT is refused (other pointers are not)."""
    _three(registry_url, trained)
    plain = run_cli("promote", "digits", "v1", registry=registry_url)
    assert plain.returncode == 0
    assert plain.stderr.startswith("note: not gated (no --eval-set); digits/CURRENT moved")
    strict = {"MODELSWAP_REQUIRE_GATE": "1"}
    refused = run_cli("promote", "digits", "v2", registry=registry_url, env=strict)
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: promotes of CURRENT must be gated here")
    canary = run_cli(
        "promote", "digits", "v2", "--pointer", "CANARY", registry=registry_url, env=strict
    )
    assert canary.returncode == 0, canary.stderr
    gated = run_cli(
        "promote",
        "digits",
        "v2",
        "--eval-set",
        str(trained / "eval.npz"),
        registry=registry_url,
        env=strict,
    )
    assert gated.returncode == 0, gated.stderr


def test_a_forced_promote_prints_forced_not_refused(registry_url: str, trained: Path) -> None:
    """A worse candidate forced through: the output says FORCED and who, never REFUSED."""
    _three(registry_url, trained)
    assert run_cli("promote", "digits", "v2", registry=registry_url).returncode == 0
    forced = run_cli(
        "promote",
        "digits",
        "v3",
        "--eval-set",
        str(trained / "eval.npz"),
        "--force",
        "--reason",
        "hotfix",
        registry=registry_url,
    )
    assert forced.returncode == 0, forced.stderr
    assert "FORCED by tester@test past a refusing gate" in forced.stdout
    assert "REFUSED" not in forced.stdout
    assert "digits/CURRENT: v2 -> v3" in forced.stdout


def test_a_second_rollback_after_a_forced_bad_version_goes_to_the_last_good_one(
    registry_url: str, trained: Path
) -> None:
    """v1 -> v2 -> v3 (forced, bad) -> rollback (v2) -> rollback: v1, not v3 again."""
    _three(registry_url, trained)
    for v in ("v1", "v2", "v3"):
        assert run_cli("promote", "digits", v, registry=registry_url).returncode == 0
    first = run_cli("rollback", "digits", registry=registry_url)
    second = run_cli("rollback", "digits", registry=registry_url)
    assert "digits/CURRENT: v3 -> v2" in first.stdout
    assert "digits/CURRENT: v2 -> v1" in second.stdout, second.stdout + second.stderr


def test_hints_name_the_models_and_versions_there_are(registry_url: str, trained: Path) -> None:
    """A mistyped model lists the models (not "publish a first version"); a mistyped version
    lists the versions."""
    _three(registry_url, trained)
    model = run_cli("versions", "digitz", registry=registry_url)
    assert model.returncode == 1
    assert model.stderr.splitlines()[1] == "hint: models here: digits"
    version = run_cli("show", "digits", "v9", registry=registry_url)
    assert version.stderr.splitlines()[1] == "hint: digits has v1, v2, v3"


def test_version_flag_prints_the_version(tmp_path: Path) -> None:
    """`modelswap --version` prints the package version and exits 0."""
    done = run_cli("--version", registry=str(tmp_path / "r"))
    assert (done.returncode, done.stdout.strip()) == (0, f"modelswap {modelswap.__version__}")


def test_status_says_what_to_do_without_reports_and_check_exits_non_zero(
    registry_url: str, trained: Path
) -> None:
    """No agent reports: a note names --report; --check exits 1 while not converged."""
    _three(registry_url, trained)
    assert run_cli("promote", "digits", "v1", registry=registry_url).returncode == 0
    plain = run_cli("status", "digits", registry=registry_url)
    assert plain.returncode == 0
    assert "run the agents with --report" in plain.stderr
    checked = run_cli("status", "digits", "--check", "--json", registry=registry_url)
    assert checked.returncode == 1
    assert '"converged": false' in checked.stdout


def test_diff_json_lists_changed_metadata_metrics_and_files(
    registry_url: str, trained: Path
) -> None:
    """`diff --json`: every changed field as [a, b], metrics and files alike."""
    reg = modelswap.Registry(registry_url, actor="setup")
    reg.publish("digits", [trained / "v1" / "model.onnx"], metrics={"accuracy": 0.9}, notes="a")
    reg.publish("digits", [trained / "v2" / "model.onnx"], metrics={"accuracy": 0.96}, notes="b")
    done = run_cli("diff", "digits", "v1", "v2", "--json", registry=registry_url)
    assert done.returncode == 0, done.stderr
    view = json.loads(done.stdout)
    assert (view["a"], view["b"]) == ("v1", "v2")
    assert view["metadata"]["notes"] == ["a", "b"]
    assert view["metrics"] == {"accuracy": [0.9, 0.96]}
    assert list(view["files"]) == ["model.onnx"]
    old, new = view["files"]["model.onnx"]
    assert old["sha256"] != new["sha256"]


def _stderr_on_a_terminal(
    *args: str, registry: str, extra_env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run the CLI with stderr on a real pseudo-terminal; its exit code and what it drew."""
    main, follower = pty.openpty()
    env = dict(os.environ, MODELSWAP_REGISTRY=registry, MODELSWAP_ACTOR="tester@test")
    env.update(extra_env or {})
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelswap", *args],
        stdout=subprocess.DEVNULL,
        stderr=follower,
        env=env,
    )
    os.close(follower)
    drawn = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        drawn += chunk
    os.close(main)
    return proc.wait(60), drawn.decode(errors="replace")


def test_long_transfers_show_progress_on_a_terminal_only(tmp_path: Path) -> None:
    """publish, verify and download of 30 MB draw bytes, rate and time left on a terminal;
    nothing with --quiet, and nothing when stderr is a pipe."""
    reg = str(tmp_path / "r")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(30_000_000))
    code, drawn = _stderr_on_a_terminal("publish", "clf", str(big), registry=reg)
    assert code == 0
    assert "publish clf: 30.0 MB / 30.0 MB" in drawn
    assert "/s" in drawn
    assert "left" in drawn
    code, drawn = _stderr_on_a_terminal("verify", "clf", registry=reg)
    assert (code, "verify clf: 30.0 MB / 30.0 MB" in drawn) == (0, True)
    code, drawn = _stderr_on_a_terminal("download", "clf", "v1", str(tmp_path / "d"), registry=reg)
    assert (code, "download clf/v1: 30.0 MB / 30.0 MB" in drawn) == (0, True)
    assert (tmp_path / "d" / "big.bin").read_bytes() == big.read_bytes()
    code, drawn = _stderr_on_a_terminal("verify", "clf", "--quiet", registry=reg)
    assert (code, drawn) == (0, "")
    piped = run_cli("verify", "clf", registry=reg)
    assert (piped.returncode, piped.stderr) == (0, "")

    # gate downloads both versions before evaluating: 2 x 30 MB, drawn as one transfer
    big.write_bytes(os.urandom(30_000_000))
    assert run_cli("publish", "clf", str(big), registry=reg).returncode == 0
    (tmp_path / "evals_const.py").write_text(
        "def same(model_dir, eval_set):\n    return {'accuracy': 0.9}\n"
    )
    (tmp_path / "eval.bin").write_bytes(b"fixed")
    gate = ("gate", "clf", "v2", "--against", "v1", "--eval-set", str(tmp_path / "eval.bin"))
    gate += ("--evaluator", "evals_const:same")
    on_path = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    code, drawn = _stderr_on_a_terminal(*gate, registry=reg, extra_env=on_path)
    assert (code, "gate clf/v2: 60.0 MB / 60.0 MB" in drawn) == (0, True), drawn[-500:]
    code, drawn = _stderr_on_a_terminal(*gate, "--quiet", registry=reg, extra_env=on_path)
    assert (code, drawn) == (0, "")


def test_a_variable_a_command_no_longer_reads_is_named_not_ignored(tmp_path: Path) -> None:
    """MODELSWAP_METRIC meant K=V to publish and NAME:max to the gate; left in CI's
    environment it was silently ignored after the split, and the gate used its default. Now
    the command refuses and names the variable it reads; MODELSWAP_VERSION (what hooks are
    told) only draws a warning from publish."""
    reg = str(tmp_path / "r")
    (tmp_path / "m.bin").write_bytes(b"weights")
    r = run_cli(
        "publish", "clf", str(tmp_path / "m.bin"), registry=reg,
        env={"MODELSWAP_METRIC": "accuracy=0.9"},
    )  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.splitlines() == [
        "error: publish does not read MODELSWAP_METRIC; it reads MODELSWAP_PUBLISH_METRIC",
        "hint: rename it MODELSWAP_PUBLISH_METRIC (K=V), or unset MODELSWAP_METRIC",
    ]
    assert not (tmp_path / "r").exists()  # nothing was published
    r = run_cli(
        "publish", "clf", str(tmp_path / "m.bin"), registry=reg, env={"MODELSWAP_VERSION": "v7"}
    )
    assert (r.returncode, r.stdout.strip()) == (0, "v1")
    assert "warning: publish does not read MODELSWAP_VERSION" in r.stderr
    r = run_cli("gate", "clf", "v1", "--eval-set", "e.npz", registry=reg,
                env={"MODELSWAP_METRIC": "accuracy:min"})  # fmt: skip
    assert r.returncode == 2
    assert "it reads MODELSWAP_GATE_METRIC" in r.stderr


def test_gate_and_promote_hints_name_only_their_own_flags(tmp_path: Path) -> None:
    """With nothing live to compare with, gate's hint offers --min and --against (it has no
    --force), promote's offers --min and --force (it has no --against)."""
    reg = str(tmp_path / "r")
    (tmp_path / "m.bin").write_bytes(b"weights")
    (tmp_path / "e.bin").write_bytes(b"fixed")
    assert run_cli("publish", "clf", str(tmp_path / "m.bin"), registry=reg).returncode == 0
    gate = run_cli("gate", "clf", "v1", "--eval-set", str(tmp_path / "e.bin"), registry=reg)
    promote = run_cli("promote", "clf", "v1", "--eval-set", str(tmp_path / "e.bin"), registry=reg)
    gate_hint = gate.stderr.splitlines()[-1]
    promote_hint = promote.stderr.splitlines()[-1]
    assert (gate.returncode, promote.returncode) == (1, 1)
    assert "--against" in gate_hint
    assert "--force" not in gate_hint
    assert "--force --reason" in promote_hint
    assert "--against" not in promote_hint


def test_gc_json_says_what_it_deleted_and_why_it_kept_the_rest(tmp_path: Path) -> None:
    reg = str(tmp_path / "r")
    for n in (1, 2, 3):
        (tmp_path / "m.bin").write_bytes(b"w" * n)
        assert run_cli("publish", "clf", str(tmp_path / "m.bin"), registry=reg).returncode == 0
    assert run_cli("promote", "clf", "v3", registry=reg).returncode == 0
    r = run_cli("gc", "clf", "--keep", "1", "--dry-run", "--json", registry=reg)
    assert r.returncode == 0, r.stderr
    view = json.loads(r.stdout)
    assert (view["dry_run"], view["partial"]) == (True, [])
    assert sorted(view["deleted"]) == ["v1", "v2"]
    assert view["kept"]["v3"] == "named by CURRENT"
    r = run_cli("gc", "clf", "--keep", "1", "--json", registry=reg)
    assert sorted(json.loads(r.stdout)["deleted"]) == ["v1", "v2"]
    assert [
        v["version"] for v in json.loads(run_cli("versions", "clf", "--json", registry=reg).stdout)
    ] == ["v3"]
