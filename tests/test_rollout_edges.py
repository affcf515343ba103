"""Rollouts beyond the ten-agent fleet: a canary the loader cannot load, a share that never
gets ready (a full disk), the bucket formula, bad flags and a malformed ROLLOUT, and promote
past a quarantine. Real agents, real loaders, a real tmpfs, real controller processes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from modelswap import keys, rollouts
from modelswap.api import Registry as Api
from modelswap.loader import ModelLoader
from modelswap.registry import Registry
from modelswap.store import open_store
from modelswap.testing.agents import AgentProc
from modelswap.testing.onnx_models import scale_model
from tests.conftest import mounted_tmpfs, wait_until
from tests.test_rollouts import PODS, Controller, Fleet, expected_bucket


def test_a_canary_the_loader_cannot_load_is_rolled_back(tmp_path: Path) -> None:
    """Three agents beside three real in-app loaders (--loader-url): a version whose bytes are
    intact but are no ONNX model is linked by the canary share, refused by its loaders (which
    keep serving the old one), reported, and rolled back by the controller."""
    url = str(tmp_path / "registry")
    api = Api(url, actor="tester")
    api.publish("clf", [scale_model(tmp_path / "a" / "model.onnx", 1.0)], version="v1")
    api.promote("clf", "v1")
    bad = tmp_path / "b" / "model.onnx"
    bad.parent.mkdir()
    bad.write_bytes(b"these bytes are intact, and they are not an ONNX model")
    api.publish("clf", [bad], version="v2")
    fleet = Fleet(url, tmp_path, {})
    loaders = []
    try:
        for pod in PODS[:3]:
            link = tmp_path / pod / "clf" / "current"
            loader = ModelLoader(link, health_port=0, poll_interval_s=0.1).start()
            loaders.append(loader)
            fleet.agents[pod] = AgentProc(
                url, "clf", tmp_path / pod, "--instance-id", pod, "--report",
                "--report-interval", "0.3", "--interval", "0.3",
                "--loader-url", f"http://127.0.0.1:{loader.health_port}/health",
            ).wait_started()  # fmt: skip
        wait_until(lambda: all(loader.version == "v1" for loader in loaders), timeout=30)
        fleet.start("v2", "--steps", "100", "--bake", "1s")
        controller = Controller(fleet, "controller@ci")
        try:
            wait_until(lambda: fleet.rollout().state == "rolled-back", timeout=60)
        finally:
            controller.stop()
        assert "the loader refused it" in (fleet.rollout().stopped or "")
        assert all(loader.version == "v1" for loader in loaders)  # never stopped serving
        assert fleet.pointer("CANARY") == "v1"
        wait_until(lambda: fleet.all_on("v1"), timeout=30)
    finally:
        for agent in fleet.agents.values():
            agent.stop()
        for loader in loaders:
            loader.stop()


def test_the_bucket_formula_and_bad_rollouts_are_refused_clearly(tmp_path: Path) -> None:
    """The formula against fixed values (computed once, by hand-checked code, and frozen here);
    bad flags and states are one error and one hint;
    ROLLOUT is never shown or moved as a pointer; a malformed ROLLOUT moves no agent."""
    assert rollouts.bucket("salt", "clf", "pod-0") == 0.8067677799047407
    assert rollouts.bucket("a1b2", "churn", "web-7") == 0.8922470507865576
    assert rollouts.bucket("s", "m", "i") == expected_bucket("s", "m", "i")
    digest = hashlib.sha256(b"salt|clf|pod-0").digest()
    assert rollouts.bucket("salt", "clf", "pod-0") == int.from_bytes(digest[:8], "big") / 2**64
    url = str(tmp_path / "registry")
    fleet = Fleet(url, tmp_path, {})
    fleet.publish("v1", b"one")
    fleet.publish("v2", b"two")
    assert fleet.cli("promote", "clf", "v1").returncode == 0
    for flags, why in [
        (("--steps", "50,20,100"), "steps must rise"),
        (("--steps", "10,50"), "the last step must be 100"),
        (("--steps", "0,100"), "each step is a percent in 1..100"),
        (("--steps", "x"), "--steps"),
        (("--bake", "soon"), "--bake"),
        (("--salt", "x" * 200), "--salt must be 1 to 128 characters"),
    ]:
        r = fleet.cli("rollout", "start", "clf", "v2", *flags)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert why in lines[0], r.stderr
        assert lines[1].startswith("hint: ")
    r = fleet.cli("rollout", "start", "clf", "v1")
    assert r.returncode == 2
    assert "already names v1" in r.stderr
    assert fleet.cli("rollout", "status", "clf").stdout.startswith("clf: no rollout")
    fleet.start("v2", "--steps", "100")
    # A report whose heartbeat has no zone (a hand edit, another tool): judged as `status`
    # judges it, never a traceback of the controller (it once subtracted it from an aware time)
    report = {
        "instance": "pod-x",
        "pointer": "CURRENT",
        "ready": True,
        "heartbeat": "2026-12-01T00:00:00",
    }
    open_store(url).put(keys.fleet_report("clf", "pod-x"), json.dumps(report).encode())
    once = fleet.cli("rollout", "run", "clf", "--once")
    assert once.returncode == 0, once.stderr
    assert "waiting" in once.stdout
    assert fleet.cli("rollout", "status", "clf").returncode == 0
    r = fleet.cli("rollout", "start", "clf", "v2")
    assert r.returncode == 1
    assert "is running" in r.stderr
    assert fleet.cli("promote", "clf", "v2", "--pointer", "ROLLOUT").returncode == 1
    versions = fleet.cli("versions", "clf")
    assert versions.returncode == 0
    assert "warning" not in versions.stderr  # ROLLOUT is JSON, not a malformed pointer
    open_store(url).put(keys.rollout("clf"), b"{not json")
    r = fleet.cli("rollout", "status", "clf")
    assert r.returncode == 1
    assert "ROLLOUT is not valid JSON" in r.stderr
    once = fleet.cli(
        "agent", "clf", "--dest", str(tmp_path / "d"), "--once", "--report", "--instance-id", "x"
    )
    assert once.returncode == 0, once.stderr
    assert json.loads(open_store(url).read(keys.fleet_report("clf", "x")).data)["follows"] == (
        "CURRENT"
    )


def test_a_share_that_never_gets_ready_is_rolled_back_at_the_deadline(tmp_path: Path) -> None:
    """The canary's --dest is a real 1 MiB tmpfs and the candidate is 2 MiB: the agent cannot
    link it (a full disk is no refusal of the version, so it keeps trying), the share stays
    unready, and the controller rolls back at the progress deadline, saying so."""
    url = str(tmp_path / "registry")
    fleet = Fleet(url, tmp_path, {})
    fleet.publish("v1", b"small")
    assert fleet.cli("promote", "clf", "v1").returncode == 0
    fleet.publish("v2", b"x" * (2 << 20))
    with mounted_tmpfs(tmp_path / "disk", "size=1m") as disk:
        fleet.agents["pod-0"] = AgentProc(
            url, "clf", disk, "--instance-id", "pod-0", "--report", "--report-interval",
            "0.3", "--interval", "0.3", "--max-backoff", "0.5",
        ).wait_started()  # fmt: skip
        try:
            wait_until(lambda: fleet.all_on("v1"), timeout=30)
            fleet.start("v2", "--steps", "100", "--progress-deadline", "3s")
            controller = Controller(fleet, "controller@ci")
            errors: set[str] = set()

            def rolled_back() -> bool:
                # Read while it fails: once rolled back, the agent's next poll (0.3 s) follows
                # CURRENT again, succeeds and clears last_error
                errors.add(fleet.agents["pod-0"].status()["last_error"] or "")
                return fleet.rollout().state == "rolled-back"

            try:
                wait_until(rolled_back, timeout=60)
            finally:
                controller.stop()
            stopped = fleet.rollout().stopped or ""
            assert "not on v2 after 3 s (progress deadline): pod-0" in stopped
            assert any("no space left" in e for e in errors), errors
            assert fleet.agents["pod-0"].status()["refused_version"] is None
            wait_until(lambda: fleet.all_on("v1"), timeout=30)
        finally:
            fleet.agents["pod-0"].stop()


def test_promote_past_a_quarantine_needs_force_and_a_reason(tmp_path: Path) -> None:
    url = str(tmp_path / "registry")
    fleet = Fleet(url, tmp_path, {})
    fleet.publish("v1", b"one")
    fleet.publish("v2", b"two")
    assert fleet.cli("promote", "clf", "v1").returncode == 0
    api = Api(url, actor="ops")
    r = api.rollout_start("clf", "v2", steps=[100])
    rollouts.quarantine(Registry(open_store(url)), r, "pod-9 refused v2", {"why": "test"})
    assert api.rollout_abort("clf", reason="bad").state == "aborted"
    assert fleet.pointer("CANARY") == "v1"
    refused = fleet.cli("promote", "clf", "v2")
    assert refused.returncode == 1
    assert "clf/v2 is quarantined: pod-9 refused v2" in refused.stderr
    assert "--force" in refused.stderr
    no_reason = fleet.cli("promote", "clf", "v2", "--force")
    assert no_reason.returncode == 2
    assert fleet.cli("promote", "clf", "v2", "--force", "--reason", "fixed").returncode == 0
    event = fleet.events()[-1]
    assert (event["to"], event["reason"]) == ("v2", "fixed")
    assert event["quarantine_overridden"]["rollout"] == r.id
    status = api.rollout_status("clf").to_json()
    assert (status["rollout"]["state"], status["current"]) == ("aborted", "v2")


def test_a_crashed_start_is_finished_and_a_stale_canary_is_never_followed(
    tmp_path: Path,
) -> None:
    """ROLLOUT written by a `rollout start` that died before moving CANARY, while CANARY still
    names another version (v3): the agent in the share keeps following CURRENT (never links
    v3), and the controller finishes the start (CANARY to v2) and then promotes."""
    url = str(tmp_path / "registry")
    fleet = Fleet(url, tmp_path, {})
    for v in ("v1", "v2", "v3"):
        fleet.publish(v, f"version {v}".encode())
    assert fleet.cli("promote", "clf", "v1").returncode == 0
    assert fleet.cli("promote", "clf", "v3", "--pointer", "CANARY").returncode == 0
    long_ago = "2026-01-01T00:00:00.000Z"
    crashed = rollouts.Rollout(
        id="crashed00001",
        model="clf",
        version="v2",
        baseline="v1",
        salt="s",
        steps=(100,),
        step=0,
        state="running",
        started=long_ago,
        updated=long_ago,
        step_started=long_ago,
        actor="ci@dead",
        bake_s=0.0,
        deadline_s=600.0,
        pending={"action": "start", "actor": "ci@dead", "reason": None, "at": long_ago},
    )
    rollouts.write(Registry(open_store(url)), crashed, None)
    agent = AgentProc(
        url, "clf", tmp_path / "pod-0", "--instance-id", "pod-0", "--report",
        "--report-interval", "0.3", "--interval", "0.3",
    ).wait_started()  # fmt: skip
    fleet.agents["pod-0"] = agent
    try:
        # the rollout is seen in the pass's follow step, the version linked at its end
        wait_until(
            lambda: (
                agent.status()["rollout"] == "crashed00001"
                and agent.status()["active_version"] is not None
            ),
            timeout=20,
        )
        status = agent.status()
        assert (status["follows"], status["active_version"]) == ("CURRENT", "v1")
        assert "CANARY names v3, not the rollout's v2" in status["follow_reason"]
        controller = Controller(fleet, "controller@ci")
        try:
            controller.wait(lambda: fleet.rollout().state == "promoted", timeout=60)
        finally:
            controller.stop()
        wait_until(lambda: controller.said("recover: finished the start by ci@dead"), timeout=5)
        assert "v3" not in agent.status()["local_versions"]
        started = [e for e in fleet.events() if e.get("rollout", {}).get("id") == "crashed00001"]
        assert [e["type"] for e in started] == ["rollout-step", "rollout-promote"]
        assert (started[0]["from"], started[0]["to"], started[0]["actor"]) == (
            "v3",
            "v2",
            "ci@dead",
        )
        wait_until(lambda: fleet.all_on("v2"), timeout=30)
    finally:
        agent.stop()
