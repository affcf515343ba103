"""Rollouts judged on live traffic: six real agents (`--metrics-url`, `--loader-url`), six real
ModelLoaders serving steady traffic in one app process, and a real controller process. A canary
with 5% errors against none is rolled back with its evidence, one twice as slow at p99 too; one
with too little traffic holds as inconclusive and never promotes; a good one promotes and
bakes; a regression during the bake after promotion moves CURRENT back. Each test starts from
whatever CURRENT names, so any one of them runs alone."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modelswap import rollouts
from modelswap.api import Registry as Api
from modelswap.registry import Registry
from modelswap.store import open_store
from modelswap.testing.agents import AgentProc
from tests.conftest import run_cli, wait_until
from tests.test_rollouts import Controller, expected_bucket

PODS = [f"pod-{i}" for i in range(6)]
# 20 ms a request: long beside the GIL's 5 ms switch interval, which a busy 2-core machine
# adds to every measured latency (at 5 ms the 2x-slower canary measured only ~1.4x at p99)
GOOD = {"delay_ms": 20, "error_rate": 0.0, "accuracy": 0.95}
JUDGE = (
    "--steps", "30,100", "--bake", "2s", "--min-requests", "150", "--fail-checks", "2",
    "--max-error-ratio", "2", "--max-p99-ratio", "1.5", "--metric", "accuracy:min:0.1",
)  # fmt: skip


def judged_salt() -> str:
    """A salt with at least two instances in the 30% canary and two in its baseline cohort."""
    for n in range(2000):
        salt = f"salt-{n}"
        b = [expected_bucket(salt, "clf", p) for p in PODS]
        if sum(x < 0.3 for x in b) >= 2 and sum(0.3 <= x < 0.6 for x in b) >= 2:
            return salt
    raise AssertionError("no salt found")


@dataclass
class Live:
    url: str
    root: Path
    app: subprocess.Popen[str]
    agents: dict[str, AgentProc]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, registry=self.url)

    def publish(self, version: str, **behaviour: Any) -> None:
        path = self.root / uuid.uuid4().hex[:8] / "behaviour.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({**GOOD, **behaviour}))
        Api(self.url, actor="tester").publish("clf", [path], version=version, git_sha="0" * 40)

    def rollout(self) -> rollouts.Rollout:
        found = rollouts.read(Registry(open_store(self.url)), "clf")
        assert found is not None
        return found[0]

    def current(self) -> str:
        return Api(self.url).pointer_version("clf", "CURRENT")

    def events(self, type_: str) -> list[dict[str, Any]]:
        r = self.cli("history", "clf", "--json")
        assert r.returncode == 0, r.stderr
        return [e for e in json.loads(r.stdout) if e["type"] == type_]

    def start(self, version: str, *flags: str) -> rollouts.Rollout:
        r = self.cli("rollout", "start", "clf", version, *JUDGE, *flags, "--salt", judged_salt())
        assert r.returncode == 0, r.stderr
        return self.rollout()

    def override(self, behaviours: dict[str, dict[str, Any]]) -> None:
        (self.root / "overrides.json").write_text(json.dumps(behaviours))


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    root = tmp_path_factory.mktemp("live-rollouts")
    url = str(root / "registry")
    app = subprocess.Popen(
        [sys.executable, "-m", "modelswap.testing.traffic_app", str(root), *PODS, "--rate", "30"],
        stdout=subprocess.PIPE,
        text=True,
    )
    f = Live(url, root, app, {})
    try:
        assert app.stdout is not None
        ports = json.loads(app.stdout.readline())["ports"]
        f.publish("v1")
        assert f.cli("promote", "clf", "v1").returncode == 0
        for pod in PODS:
            base = f"http://127.0.0.1:{ports[pod]}"
            f.agents[pod] = AgentProc(
                url, "clf", root / pod, "--instance-id", pod, "--report", "--report-interval",
                "0.3", "--interval", "0.3", "--max-backoff", "1", "--loader-url",
                f"{base}/health", "--metrics-url", f"{base}/metrics",
            )  # fmt: skip
        for agent in f.agents.values():
            agent.wait_started(timeout=60)
        wait_until(
            lambda: all(a.status()["served_version"] == "v1" for a in f.agents.values()),
            timeout=60,
        )
        yield f
    finally:
        for agent in f.agents.values():
            agent.stop()
        app.terminate()
        app.wait(10)


@pytest.fixture(autouse=True)
def settled(live: Live) -> Iterator[None]:
    """After each test, no rollout left running or watched (a failed test must not make the
    next one fail with Busy), and no override left."""
    yield
    live.override({})
    found = rollouts.read(Registry(open_store(live.url)), "clf")
    if found is not None and (found[0].active or found[0].watching):
        live.cli("rollout", "abort", "clf", "--reason", "test cleanup")


def rolled_out(live: Live, version: str, state: str, **behaviour: Any) -> None:
    """Publish `version` behaving so, start its rollout with the judge, and let a controller
    run until the rollout is in `state`."""
    live.publish(version, **behaviour)
    live.start(version)
    c = Controller(live, f"ctl-{version}")  # type: ignore[arg-type]
    try:
        c.wait(lambda: live.rollout().state == state and not live.rollout().watching, 90)
    finally:
        c.stop()


def rolled_back(live: Live, version: str, check: str) -> dict[str, Any]:
    """The auto-rollback event of `version`, whose verdict failed `check`; its evidence."""
    (event,) = [e for e in live.events("auto-rollback") if e["rollout"]["version"] == version]
    verdict = event["rollout"]["evidence"]["verdict"]
    assert verdict["result"] == "fail"
    (failed,) = [c for c in verdict["checks"] if c["check"] == check]
    assert failed["result"] == "fail"
    assert failed["p_value"] < 0.01
    assert verdict["fails"] >= 2  # it failed on consecutive checks before rolling back
    return failed


def test_a_good_canary_promotes_and_bakes(live: Live) -> None:
    rolled_out(live, "v2", "promoted")  # and baked: the watch is over
    assert live.current() == "v2"
    (step,) = [e for e in live.events("rollout-step") if e["rollout"]["version"] == "v2"][-1:]
    verdict = step["rollout"]["evidence"]["verdict"]
    assert verdict["result"] == "pass"
    assert verdict["canary"]["requests"] >= 150
    assert verdict["baseline"]["requests"] >= 150
    assert {ch["check"] for ch in verdict["checks"]} == {
        "error-ratio", "p99-ratio", "accuracy:min:0.1",
    }  # fmt: skip
    (promote,) = live.events("rollout-promote")
    assert promote["rollout"]["evidence"]["verdict"]["result"] == "pass"
    (baked,) = live.events("rollout-baked")
    assert baked["rollout"]["evidence"]["verdict"]["result"] == "pass"


def test_five_percent_errors_against_none_is_rolled_back_with_evidence(live: Live) -> None:
    base = live.current()
    rolled_out(live, "v3", "rolled-back", error_rate=0.05)
    assert live.current() == base
    failed = rolled_back(live, "v3", "error-ratio")
    # never stepped to 100% on a look too small to prove it bad (the judge holds instead)
    assert not [e for e in live.events("rollout-promote") if e["rollout"]["version"] == "v3"]
    assert failed["baseline_errors"] == 0
    assert failed["canary_errors"] > 0
    assert failed["method"] == "fisher-exact"
    status = json.loads(live.cli("rollout", "status", "clf", "--json").stdout)
    assert status["rollout"]["verdict"]["result"] == "fail"
    text = live.cli("rollout", "status", "clf").stdout
    assert "verdict fail" in text
    assert "error-ratio" in text
    assert live.cli("promote", "clf", "v3").returncode != 0  # quarantined


def test_a_canary_twice_as_slow_at_p99_is_rolled_back(live: Live) -> None:
    base = live.current()
    rolled_out(live, "v4", "rolled-back", delay_ms=40)  # twice GOOD's 20 ms
    failed = rolled_back(live, "v4", "p99-ratio")
    assert failed["ratio"] > 1.5
    assert failed["effect"] > 0.8
    assert live.current() == base


def test_too_little_traffic_holds_inconclusive_and_never_promotes(live: Live) -> None:
    base = live.current()
    live.publish("v5")
    live.start("v5", "--min-requests", "1000000")
    c = Controller(live, "ctl-quiet")  # type: ignore[arg-type]
    try:
        c.wait(lambda: c.said("holding") and c.said("inconclusive"), 60)
        time.sleep(3)  # well past the bake, many checks: still holding
        r = live.rollout()
        assert r.state == "running"
        assert r.step == 0
        assert r.verdict is not None
        assert r.verdict["result"] == "inconclusive"
        assert "of the 1000000 requests" in r.verdict["why"]
    finally:
        c.stop()
    assert live.current() == base
    assert live.cli("rollout", "abort", "clf").returncode == 0


def test_a_regression_during_the_bake_after_promotion_rolls_back(live: Live) -> None:
    base = live.current()
    live.publish("v6")
    live.start("v6", "--bake", "6s")
    c = Controller(live, "ctl-bake")  # type: ignore[arg-type]
    try:
        c.wait(lambda: live.rollout().watching, 90)
        assert live.current() == "v6"
        live.override({"v6": {"error_rate": 0.1}})  # the world turns against v6
        c.wait(lambda: live.rollout().state == "rolled-back", 60)
    finally:
        c.stop()
        live.override({})
    assert live.current() == base  # CURRENT back, from exactly v6
    (event,) = [
        e
        for e in live.events("auto-rollback")
        if e["pointer"] == "CURRENT" and e["rollout"]["version"] == "v6"
    ]
    assert (event["from"], event["to"]) == ("v6", base)
    verdict = event["rollout"]["evidence"]["verdict"]
    assert verdict["phase"] == "bake"
    assert verdict["result"] == "fail"
    wait_until(lambda: all(a.status()["served_version"] == base for a in live.agents.values()), 30)


def test_an_endpoint_that_does_not_answer_is_reported_not_fatal(live: Live) -> None:
    """--metrics-url on a port nobody listens on: the agent keeps serving, /status and the
    report say why, and the failures are counted."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/metrics"  # bound, never listening
        agent = AgentProc(
            live.url, "clf", live.root / "lonely", "--instance-id", "lonely", "--interval",
            "0.3", "--report-interval", "0.3", "--metrics-url", dead,
        ).wait_started()  # fmt: skip
        try:
            wait_until(lambda: agent.metric("metrics_scrape_failures_total") >= 2, timeout=30)
            status = agent.status()
            assert status["ready"] is True
            assert dead in status["metrics"]["error"]
            assert status["metrics"]["versions"] == {}
            assert agent.metric("metrics_scrapes_total") >= 2
        finally:
            agent.stop()
