"""The `modelswap` command as users run it: output, exit codes, and `error:`/`hint:` lines."""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import backend_url, run_cli


def _assert_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("error: ")
    assert fragment in lines[0]
    assert lines[1].startswith("hint: ")


@pytest.fixture
def onnx_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not really onnx, but bytes are bytes")
    return path


def test_walkthrough_publish_promote_rollback_history(
    registry_url: str, onnx_file: Path, tmp_path: Path
) -> None:
    """The README's verbs in order print versions, moves and a two-pointer-move history."""
    out = [
        run_cli("publish", "clf", str(onnx_file), "--metric", "acc=0.9", registry=registry_url),
        run_cli("publish", "clf", str(onnx_file), "--notes", "n", registry=registry_url),
        run_cli("promote", "clf", "v1", registry=registry_url),
        run_cli("promote", "clf", "v2", "--reason", "better", registry=registry_url),
        run_cli("rollback", "clf", "--reason", "oops", registry=registry_url),
    ]
    assert [r.returncode for r in out] == [0] * 5, [r.stderr for r in out]
    assert [r.stdout.strip() for r in out[:2]] == ["v1", "v2"]
    assert out[4].stdout.strip() == "clf/CURRENT: v2 -> v1 (event 3)"
    hist = json.loads(run_cli("history", "clf", "--json", registry=registry_url).stdout)
    assert [(e["seq"], e["from"], e["to"], e["type"], e["actor"]) for e in hist] == [
        (1, None, "v1", "promote", "tester@test"),
        (2, "v1", "v2", "promote", "tester@test"),
        (3, "v2", "v1", "rollback", "tester@test"),
    ]
    versions = json.loads(run_cli("versions", "clf", "--json", registry=registry_url).stdout)
    assert [(v["version"], v["pointers"], v["metrics"]) for v in versions] == [
        ("v1", ["CURRENT"], {"acc": 0.9}),
        ("v2", [], {}),
    ]
    shown = json.loads(run_cli("show", "clf", "--json", registry=registry_url).stdout)
    assert shown["version"] == "v1"
    assert run_cli("verify", "clf", registry=registry_url).stdout.count(": ok") == 2


def test_publish_records_git_sha_inside_a_work_tree(tmp_path: Path, onnx_file: Path) -> None:
    """publish run inside a git work tree stores HEAD's sha in metadata.json."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for cmd in (
        ["init", "-q"],
        ["-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "--allow-empty", "-m", "x"],
    ):
        subprocess.run(["git", *cmd], cwd=repo, check=True)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()
    reg = str(tmp_path / "reg")
    assert run_cli("publish", "clf", str(onnx_file), registry=reg, cwd=repo).returncode == 0
    shown = json.loads(run_cli("show", "clf", "v1", "--json", registry=reg).stdout)
    assert shown["git_sha"] == head


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["show", "nosuch"], "model 'nosuch' does not exist"),
        (["show", "clf", "v7"], "version clf/v7 does not exist"),
        (["promote", "clf", "v7"], "version clf/v7 does not exist"),
        (["promote", "clf", "../etc"], "invalid version name"),
        (["publish", "bad/name", "x"], "invalid model name"),
        (["publish", "clf", "/does/not/exist"], "is not a file or folder"),
        (["publish", "clf", "{file}", "--version", "CURRENT"], "reserved"),
        (["publish", "clf", "{file}", "--metric", "acc"], "is not KEY=VALUE"),
        (["publish", "clf", "{file}", "--metric", "acc=nan"], "not a finite number"),
        (["promote", "clf", "v1", "--pointer", "lower"], "invalid pointer name"),
        (["rollback", "clf"], "no earlier version"),
        (["gc", "clf", "--keep", "0"], "--keep must be at least 1"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_prints_error_and_hint(
    tmp_path: Path, onnx_file: Path, args: list[str], fragment: str
) -> None:
    """Each bad name, flag or target fails with one error: line and one hint: line."""
    reg = str(tmp_path / "reg")
    assert run_cli("publish", "clf", str(onnx_file), registry=reg).returncode == 0
    assert run_cli("promote", "clf", "v1", registry=reg).returncode == 0
    result = run_cli(*[a.replace("{file}", str(onnx_file)) for a in args], registry=reg)
    _assert_error(result, fragment)
    assert (
        json.loads(run_cli("versions", "clf", "--json", registry=reg).stdout)[0]["version"] == "v1"
    )


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("s3://", "no valid bucket name"),
        ("s3://A_b/x", "no valid bucket name"),
        ("file://relative/path", "not an absolute file URL"),
        ("gopher://x/y", "unsupported scheme"),
    ],
)
def test_malformed_registry_url_is_refused(onnx_file: Path, url: str, fragment: str) -> None:
    """A wrongly formed --registry fails at once with a hint on the accepted forms."""
    _assert_error(run_cli("versions", "clf", registry=url), fragment)


def test_unreachable_s3_registry_fails_within_seconds(onnx_file: Path) -> None:
    """An S3 endpoint nobody listens on is a clear error in seconds, not a hang."""
    started = time.monotonic()
    result = run_cli(
        "versions",
        "clf",
        registry="s3://bucket/x",
        env={
            "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
            "AWS_ACCESS_KEY_ID": "a",
            "AWS_SECRET_ACCESS_KEY": "b",
        },
    )
    _assert_error(result, "cannot reach the S3 registry")
    assert time.monotonic() - started < 15


def test_missing_bucket_names_the_bucket(s3_server: object, onnx_file: Path) -> None:
    """A registry in a bucket that does not exist says so and how to create it."""
    result = run_cli("publish", "clf", str(onnx_file), registry="s3://no-such-bucket-here/x")
    _assert_error(result, "bucket 'no-such-bucket-here' does not exist")


@pytest.fixture(params=["s3", "gcs", "azure"])
def race_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A registry on each network store: SeaweedFS, fake-gcs-server, Azurite."""
    return backend_url(request, request.param, tmp_path)


def test_eight_simultaneous_publishes_of_one_version_have_one_winner(
    race_url: str, tmp_path: Path
) -> None:
    """Eight processes publish v1 at once: one wins, seven are refused, on every store."""
    reg = race_url
    files = []
    for i in range(8):
        f = tmp_path / f"m{i}" / "model.onnx"
        f.parent.mkdir()
        f.write_bytes(f"content of publisher {i}".encode() * 1000)
        files.append(f)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(
                lambda f: run_cli("publish", "clf", str(f), "--version", "v1", registry=reg), files
            )
        )
    winners = [r for r in results if r.returncode == 0]
    assert len(winners) == 1, [r.stderr for r in results]
    for loser in (r for r in results if r.returncode != 0):
        assert loser.stderr.startswith("error: ")
    assert run_cli("verify", "clf", "v1", registry=reg).returncode == 0


def eight_promotes_at_once(
    reg: str, onnx_file: Path, *flags: str
) -> list[subprocess.CompletedProcess[str]]:
    """Publish v1..v9, promote v1, then 8 processes promote v2..v9 at the same moment."""
    for _ in range(9):
        assert run_cli("publish", "clf", str(onnx_file), registry=reg).returncode == 0
    assert run_cli("promote", "clf", "v1", registry=reg).returncode == 0

    def promote(v: int) -> subprocess.CompletedProcess[str]:
        return run_cli("promote", "clf", f"v{v}", *flags, registry=reg)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return list(pool.map(promote, range(2, 10)))


def test_eight_simultaneous_promotes_have_one_winner_and_one_event(
    race_url: str, onnx_file: Path
) -> None:
    """Eight processes move CURRENT from v1 at once: one moves it, the log holds one event."""
    reg = race_url
    results = eight_promotes_at_once(reg, onnx_file, "--expect", "v1")
    assert sum(r.returncode == 0 for r in results) == 1, [r.stderr for r in results]
    hist = json.loads(run_cli("history", "clf", "--json", registry=reg).stdout)
    assert len(hist) == 2
    assert hist[1]["from"] == "v1"
    current = json.loads(run_cli("show", "clf", "--json", registry=reg).stdout)["version"]
    assert hist[1]["to"] == current


def test_concurrent_promotes_keep_the_log_a_chain(race_url: str, onnx_file: Path) -> None:
    """Eight unguarded promotes at once: one event per successful move, each from the last to."""
    reg = race_url
    results = eight_promotes_at_once(reg, onnx_file)
    moved = sum(r.returncode == 0 for r in results)
    for r in results:
        assert r.returncode == 0 or "error: " in r.stderr
    hist = json.loads(run_cli("history", "clf", "--json", registry=reg).stdout)
    assert len(hist) == 1 + moved
    for before, after in itertools.pairwise(hist):
        assert after["from"] == before["to"]
    current = json.loads(run_cli("show", "clf", "--json", registry=reg).stdout)["version"]
    assert hist[-1]["to"] == current


def test_shared_flags_work_before_or_after_the_command(tmp_path: Path, onnx_file: Path) -> None:
    """--registry given before the command name is not reset by the command's default."""
    reg = str(tmp_path / "reg")
    assert (
        run_cli("--registry", reg, "publish", "clf", str(onnx_file), registry="unused").returncode
        == 0
    )
    listed = run_cli("versions", "clf", "--registry", reg, registry="unused")
    assert listed.stdout.splitlines()[1].startswith("v1 ")


@pytest.mark.parametrize(
    ("command", "env", "fragment"),
    [
        ("gc", {"MODELSWAP_GC_KEEP": "abc"}, "MODELSWAP_GC_KEEP='abc'"),
        ("versions", {"MODELSWAP_JSON": "maybe"}, "boolean"),
    ],
)
def test_bad_environment_values_are_usage_errors(
    tmp_path: Path, command: str, env: dict[str, str], fragment: str
) -> None:
    """A malformed MODELSWAP_* variable of the command being run names itself, exits 2."""
    result = run_cli(command, "clf", registry=str(tmp_path), env=env)
    _assert_error(result, fragment)
    assert result.returncode == 2


def test_variables_apply_only_to_the_command_being_run_and_mean_one_thing(
    tmp_path: Path, model_file: Callable[[str, bytes], Path]
) -> None:
    """MODELSWAP_PORT=abc (an agent flag) does not break `versions`; the agent's
    MODELSWAP_KEEP does not reach gc's --keep, nor MODELSWAP_VERSION (a hook variable)
    publish's --version."""
    reg = str(tmp_path / "r")
    env = {"MODELSWAP_PORT": "abc", "MODELSWAP_KEEP": "abc", "MODELSWAP_VERSION": "v9"}
    published = run_cli("publish", "clf", str(model_file("m", b"1")), registry=reg, env=env)
    assert (published.returncode, published.stdout.strip()) == (0, "v1"), published.stderr
    listed = run_cli("versions", "clf", registry=reg, env=env)
    assert listed.returncode == 0, listed.stderr
    assert run_cli("gc", "clf", "--dry-run", registry=reg, env=env).returncode == 0
    agent = run_cli("agent", "clf", "--dest", str(tmp_path / "d"), "--once", registry=reg, env=env)
    assert agent.returncode == 2  # the agent has both flags: it names one of them
    assert agent.stderr.split("=")[0] in ("error: MODELSWAP_PORT", "error: MODELSWAP_KEEP")


def test_registry_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    """--registry pointing at a regular file is a clear error, not a crash."""
    target = tmp_path / "file"
    target.write_text("x")
    _assert_error(run_cli("versions", "clf", registry=str(target)), "is not a folder")
