"""One core, two front ends: what the structure promises, checked on the tree itself, and the
typed records that replaced hand-built dicts."""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

import modelswap
from modelswap import keys
from modelswap.agent.config import AgentConfig
from modelswap.cli.parser import build_parser
from modelswap.records import Event, FleetReport, GateRecord
from modelswap.testing.faultproxy import FaultProxy
from tests.conftest import BUCKET, run_cli

ROOT = Path(__file__).resolve().parents[1]
OWN = [ROOT / "src", ROOT / "agent", ROOT / "loader"]
# What a front end may lean on: the API and its results, configuration, and rendering.
CLI_MAY_IMPORT = {
    "modelswap",  # __version__
    "modelswap.api",
    "modelswap.errors",
    "modelswap.config",
    "modelswap.agent.config",
    "modelswap.agent.run",  # `modelswap agent` hands its config to the agent's main
    "modelswap.agent.server",  # only to say "install modelswap[agent]" before starting
    "modelswap.render",
    "modelswap.redact",
    "modelswap.progress",
    "modelswap.ui",  # `modelswap ui`: the dashboard, itself a front end of the API
}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


def test_the_cli_imports_only_the_api_config_and_rendering() -> None:
    """No store, gate, pointer or registry module is imported by a front-end module."""
    for path in sorted((ROOT / "src/modelswap/cli").glob("*.py")):
        ours = {m for m in _imports(path) if m.split(".")[0] == "modelswap"}
        ours = {m for m in ours if not m.startswith("modelswap.cli")}
        assert ours <= CLI_MAY_IMPORT, (path.name, sorted(ours - CLI_MAY_IMPORT))


def test_the_ui_reads_through_the_api_alone() -> None:
    """The dashboard is a front end like the CLI: no store, pointer or registry module, and
    nothing that writes."""
    for path in sorted((ROOT / "src/modelswap/ui").glob("*.py")):
        ours = {m for m in _imports(path) if m.split(".")[0] == "modelswap"}
        ours = {m for m in ours if not m.startswith("modelswap.ui")}
        allowed = {"modelswap.api", "modelswap.config", "modelswap.errors", "modelswap.render"}
        assert ours <= allowed, path.name


def test_no_module_is_over_the_house_limit() -> None:
    """STYLE: modules stay small (~400 lines)."""
    everything = [*OWN, ROOT / "tests", ROOT / "bench", ROOT / "examples", ROOT / "scripts"]
    sizes = {
        str(p.relative_to(ROOT)): len(p.read_text().splitlines())
        for base in everything
        for p in base.rglob("*.py")
    }
    assert {p: n for p, n in sizes.items() if n > 420} == {}


def test_nothing_outside_the_tests_imports_them() -> None:
    """Benchmarks, examples, scripts and the package use modelswap.testing, never tests.*."""
    users = [*OWN, ROOT / "bench", ROOT / "examples", ROOT / "scripts"]
    offenders = [
        str(p.relative_to(ROOT))
        for base in users
        for p in base.rglob("*.py")
        if any(m == "tests" or m.startswith("tests.") for m in _imports(p))
    ]
    assert offenders == []


def test_registry_keys_are_spelled_in_keys_py_only() -> None:
    """No store call outside the store layer builds its key from an f-string literal."""
    call = re.compile(r"(store|self)\.(read|put|put_new|put_if_match|delete|head|objects)\(f\"")
    offenders = [
        f"{p.relative_to(ROOT)}:{n}"
        for base in OWN
        for p in base.rglob("*.py")
        if p.parent.name != "store"  # the store layer joins its root and the key
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if call.search(line)
    ]
    assert offenders == []
    assert keys.event("clf", 7) == "clf/events/0000000007.json"
    assert keys.name_under(keys.fleet_prefix("clf"), keys.fleet_report("clf", "pod-1"), ".json")
    assert keys.lock_name(keys.publish_lock("clf", "v3")) == "publish-v3"


def test_the_volume_module_needs_only_the_standard_library() -> None:
    """modelswap.volume is imported by serving processes: no boto3, numpy or aiohttp."""
    code = (
        "import sys, modelswap.volume\n"
        "heavy = {'boto3', 'botocore', 'numpy', 'onnxruntime', 'aiohttp', 'structlog'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_agent_flags_default_to_agent_config() -> None:
    """`modelswap agent`'s defaults are AgentConfig's fields, so the two cannot drift."""
    parser = build_parser()
    args = parser.parse_args(["agent", "clf", "--dest", "/tmp/x"])
    defaults = {f.name: f.default for f in dataclasses.fields(AgentConfig)}
    flags = {
        "interval": "interval_s",
        "jitter": "jitter",
        "keep": "keep",
        "host": "host",
        "port": "port",
        "pointer": "pointer",
        "report_interval": "report_interval_s",
        "scrub_interval": "scrub_interval_s",
        "refresh_min_interval": "refresh_min_interval_s",
        "store_timeout": "store_timeout_s",
        "min_rate": "min_rate_bps",
    }
    assert {f: getattr(args, f) for f in flags} == {f: defaults[k] for f, k in flags.items()}


def test_an_event_survives_a_round_trip_with_keys_it_does_not_know() -> None:
    raw = {
        "seq": 4,
        "time": "2026-12-01T10:00:00Z",
        "actor": "ci@pipeline",
        "pointer": "CURRENT",
        "from": "v2",
        "to": "v3",
        "reason": "more data",
        "gate": {"passed": True, "forced": False, "forced_by": None, "ticket": "ML-1"},
        "type": "promote",
        "move_id": "abc",
        "written_by_a_newer_modelswap": [1, 2],
    }
    event = Event.from_json(raw)
    assert (event.from_version, event.to, event.move_id) == ("v2", "v3", "abc")
    assert event.gate is not None
    assert event.gate.extra == {"ticket": "ML-1"}
    assert event.to_json() == raw
    assert Event.from_json(event.to_json()) == event


def test_a_forced_gate_that_could_not_judge_records_its_error() -> None:
    record = GateRecord(passed=False, forced=True, forced_by="oncall", error="eval set missing")
    assert record.to_json() == {
        "error": "eval set missing",
        "passed": False,
        "forced": True,
        "forced_by": "oncall",
    }
    assert GateRecord.from_json(record.to_json()) == record
    assert record.summary() == "FORCED by oncall"


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"last_error": {"code": 5}}, "last_error is {'code': 5}, not text"),
        ({"instance": "pod-2"}, "names instance 'pod-2' but is stored as 'pod-1'"),
        ({"ready": "yes"}, "ready is 'yes', not true or false"),
        ({"pointer": None}, "names no pointer"),
        ({"heartbeat": 5}, "heartbeat 5 is not an RFC 3339 time with a zone"),
    ],
)
def test_a_fleet_report_says_what_is_wrong_with_it(change: dict[str, object], problem: str) -> None:
    good = FleetReport("pod-1", "CURRENT", "v2", "v2", True, None, None, "2026-12-01T10:00:00Z")
    assert FleetReport.from_json(good.to_json(), "pod-1") == good
    assert FleetReport.from_json({**good.to_json(), **change}, "pod-1") == problem
    assert json.loads(json.dumps(good.to_json())) == good.to_json()


def test_versions_reads_each_pointer_once(s3_server: Any, tmp_path: Path) -> None:
    """`versions` rows and its warnings come from one listing of the pointers (it read every
    pointer twice: once for the rows, once more for the malformed ones)."""
    url = f"s3://{BUCKET}/one-{uuid.uuid4().hex[:12]}"
    reg = modelswap.Registry(url, actor="tester@test")
    (tmp_path / "m.bin").write_bytes(b"weights")
    reg.publish("clf", [tmp_path / "m.bin"])
    reg.promote("clf", "v1")
    with FaultProxy(s3_server.endpoint) as proxy:
        r = run_cli("versions", "clf", registry=url, env={"AWS_ENDPOINT_URL": proxy.endpoint})
        assert r.returncode == 0, r.stderr
        assert proxy.count("GET", r"/clf/CURRENT(\?|$)") == 1


def test_agent_without_aiohttp_is_one_error_and_once_needs_none(tmp_path: Path) -> None:
    """The HTTP server is imported late (so --once does without it); a running agent without
    it still says what to install instead of dying with a traceback."""
    reg = str(tmp_path / "reg")
    (tmp_path / "m.bin").write_bytes(b"weights")
    assert run_cli("publish", "clf", str(tmp_path / "m.bin"), registry=reg).returncode == 0
    assert run_cli("promote", "clf", "v1", registry=reg).returncode == 0

    def agent(*flags: str) -> subprocess.CompletedProcess[str]:
        code = (
            "import sys\nsys.modules['aiohttp'] = None  # not installed\n"
            "from modelswap.cli import main\n"
            f"sys.exit(main(['agent', 'clf', '--dest', {str(tmp_path / 'd')!r}, '--registry', "
            f"{reg!r}, '--port', '0', *{list(flags)!r}]))\n"
        )
        return subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=False
        )

    r = agent()
    assert r.returncode == 2, r.stderr
    assert r.stderr.splitlines() == [
        "error: the agent needs packages that are not installed (aiohttp)",
        "hint: pip install 'modelswap[agent]'",
    ]
    assert agent("--once").returncode == 0


def test_promote_checks_its_gate_options_before_the_store(tmp_path: Path) -> None:
    """A bad --metric is a usage error even when the store cannot be reached (it was read
    only after the pointer, so the user saw "cannot reach" instead)."""
    r = run_cli(
        "promote", "clf", "v2", "--eval-set", "e.npz", "--metric", "accuracy:sideways",
        registry="s3://modelswap-tests/x", env={"AWS_ENDPOINT_URL": "http://127.0.0.1:9"},
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "accuracy:sideways" in r.stderr.splitlines()[0]


def test_gate_records_keep_what_they_do_not_type() -> None:
    """A hand-edited gate record survives a read and re-write: fields without a metric are
    kept, and a known field of another type stays as it was, in extra."""
    raw = {"candidate": "v2", "new": 0.5, "passed": True, "forced_by": 5}
    record = GateRecord.from_json(raw)
    assert record.to_json() == {**raw, "forced": False}
    assert record.extra == {"forced_by": 5}
    assert record.forced_by is None
