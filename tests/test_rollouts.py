"""Rollouts with ten real agent processes on a local folder and on SeaweedFS: the bucketed share
follows CANARY at each step, the controller (a real `modelswap rollout run` process) promotes a
good canary, rolls back and quarantines a corrupted one, stops when a human moves a pointer,
and two controllers never both act, a killed one being resumed by the other."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modelswap import keys, rollouts
from modelswap.api import Registry as Api
from modelswap.registry import Registry
from modelswap.store import open_store
from modelswap.testing.agents import AgentProc, ControllerProc
from tests.conftest import BUCKET, run_cli, wait_until

N = 10
PODS = [f"pod-{i}" for i in range(N)]


def expected_bucket(salt: str, model: str, instance: str) -> float:
    """PRODUCT.md section 10, computed here on its own: sha256 of `salt|model|instance`, the
    first 8 bytes as a big-endian integer, over 2^64."""
    digest = hashlib.sha256(f"{salt}|{model}|{instance}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def share_salt(steps: list[int], pods: list[str] = PODS) -> str:
    for n in range(1000):
        salt = f"salt-{n}"
        shares = [
            sum(expected_bucket(salt, "clf", p) < s / 100 for p in pods) for s in steps if s < 100
        ]
        if all(0 < k < len(pods) for k in shares):
            return salt
    raise AssertionError("no salt found")


@dataclass
class Fleet:
    url: str
    root: Path
    agents: dict[str, AgentProc]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, registry=self.url)

    def publish(self, version: str, data: bytes) -> None:
        path = self.root / uuid.uuid4().hex[:8] / "model.onnx"
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
        Api(self.url, actor="tester").publish("clf", [path], version=version, git_sha="0" * 40)

    def rollout(self) -> rollouts.Rollout:
        found = rollouts.read(Registry(open_store(self.url)), "clf")
        assert found is not None
        return found[0]

    def pointer(self, name: str) -> str:
        return Api(self.url).pointer_version("clf", name)

    def events(self) -> list[dict[str, Any]]:
        r = self.cli("history", "clf", "--json")
        assert r.returncode == 0, r.stderr
        rows: list[dict[str, Any]] = json.loads(r.stdout)
        return rows

    def all_on(self, version: str) -> bool:
        return all(a.status()["active_version"] == version for a in self.agents.values())

    def start(self, version: str, *flags: str) -> rollouts.Rollout:
        """rollout start, with a salt that puts some but not all instances in every step's
        share below 100% (a random one leaves a 10% share of ten instances empty often)."""
        steps = [int(s) for s in flags[flags.index("--steps") + 1].split(",")]
        r = self.cli("rollout", "start", "clf", version, *flags, "--salt", share_salt(steps))
        assert r.returncode == 0, r.stderr
        return self.rollout()


class Controller(ControllerProc):
    """The controller of the fleet's registry, with the tests' interval and staleness."""

    def __init__(self, fleet: Fleet, name: str) -> None:
        super().__init__(fleet.url, "clf", "--stale-after", "15", actor=name)

    def wait(self, predicate: Callable[[], bool], timeout: float) -> None:
        """wait_until, and on a timeout the controller's last lines in the failure."""
        try:
            wait_until(predicate, timeout=timeout)
        except AssertionError as e:
            raise AssertionError(
                f"{e}; the controller said:\n" + "\n".join(self.lines[-15:])
            ) from e


@pytest.fixture(scope="module", params=["local", "s3"])
def fleet(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp(f"rollout-{request.param}")
    if request.param == "local":
        url = str(root / "registry")
    else:
        request.getfixturevalue("s3_server")
        url = f"s3://{BUCKET}/rollout-{uuid.uuid4().hex[:8]}"
    f = Fleet(url, root, {})
    f.publish("v1", b"version one")
    assert f.cli("promote", "clf", "v1").returncode == 0
    for pod in PODS:
        f.agents[pod] = AgentProc(
            url, "clf", root / pod, "--instance-id", pod, "--report", "--report-interval",
            "0.3", "--interval", "0.3", "--max-backoff", "1",
        )  # fmt: skip
    try:
        for agent in f.agents.values():
            agent.wait_started(timeout=60)
        wait_until(lambda: f.all_on("v1"), timeout=60)
        yield f
    finally:
        for agent in f.agents.values():
            agent.stop()


@pytest.fixture(autouse=True)
def settled(fleet: Fleet) -> Iterator[None]:
    """After each test, no rollout left running or paused: a test that fails midway must not
    make the next one fail with Busy."""
    yield
    found = rollouts.read(Registry(open_store(fleet.url)), "clf")
    if found is not None and (found[0].active or found[0].watching):
        fleet.cli("rollout", "abort", "clf", "--reason", "test cleanup")


def test_each_step_moves_exactly_the_bucketed_share(fleet: Fleet) -> None:
    """Stepped by hand: at each step exactly the instances whose bucket is below the step's
    fraction follow CANARY (a share that only grows), the rest CURRENT; the last step
    promotes, and then everyone follows CURRENT on the new version."""
    base = fleet.pointer("CURRENT")
    fleet.publish("v2", b"version two")
    r = fleet.start("v2", "--steps", "20,50,100", "--bake", "1h")
    buckets = {pod: expected_bucket(r.salt, "clf", pod) for pod in PODS}
    previous: set[str] = set()
    for step, percent in enumerate((20, 50, 100)):
        share = {pod for pod, b in buckets.items() if b < percent / 100}
        assert previous <= share
        previous = share

        def placed(share: set[str] = share) -> bool:
            for pod, agent in fleet.agents.items():
                s = agent.status()
                want = ("CANARY", "v2") if pod in share else ("CURRENT", base)
                if (s["follows"], s["active_version"], s["rollout"]) != (*want, r.id):
                    return False
            return True

        wait_until(placed, timeout=30)
        # `status` judges each instance against the pointer it follows: converged mid-rollout
        wait_until(lambda: fleet.cli("status", "clf", "--check").returncode == 0, timeout=15)
        for pod, agent in fleet.agents.items():
            assert agent.status()["bucket"] == pytest.approx(buckets[pod])
        assert fleet.rollout().step == step
        assert fleet.cli("rollout", "step", "clf", "--reason", f"step {step}").returncode == 0
    assert fleet.rollout().state == "promoted"
    assert fleet.pointer("CURRENT") == "v2"
    wait_until(lambda: all(a.status()["follows"] == "CURRENT" for a in fleet.agents.values()))
    assert fleet.all_on("v2")
    types = [e["type"] for e in fleet.events() if e["type"].startswith("rollout")]
    assert types[-4:] == ["rollout-step", "rollout-step", "rollout-step", "rollout-promote"]
    wait_until(lambda: fleet.cli("status", "clf", "--check").returncode == 0, timeout=15)


def test_the_controller_promotes_a_good_canary(fleet: Fleet) -> None:
    fleet.publish("v3", b"version three")
    fleet.start("v3", "--steps", "30,100", "--bake", "1s", "--reason", "more data")
    controller = Controller(fleet, "controller@ci")
    try:
        controller.wait(lambda: fleet.rollout().state == "promoted", timeout=60)
    finally:
        controller.stop()
    assert fleet.pointer("CURRENT") == "v3"
    wait_until(lambda: fleet.all_on("v3"), timeout=30)
    last = fleet.events()[-1]
    assert (last["type"], last["pointer"], last["to"], last["actor"]) == (
        "rollout-promote",
        "CURRENT",
        "v3",
        "controller@ci",
    )
    assert "held" in last["reason"]
    # the reader thread may still hold the last lines when the process has exited
    wait_until(lambda: controller.said("promote:"), timeout=5)


def test_a_corrupted_canary_is_rolled_back_quarantined_and_recorded(fleet: Fleet) -> None:
    """Bytes changed in the store after publish (same size, so promote's size check passes):
    the canary share refuses it, the controller rolls back with no one typing anything."""
    base = fleet.pointer("CURRENT")
    fleet.publish("v4", b"version four")
    store = open_store(fleet.url)
    store.put(keys.version_file("clf", "v4", "model.onnx"), b"version FOUR")
    r = fleet.start("v4", "--steps", "30,100", "--bake", "1s")
    controller = Controller(fleet, "controller@ci")
    try:
        controller.wait(lambda: fleet.rollout().state == "rolled-back", timeout=60)
    finally:
        controller.stop()
    assert fleet.pointer("CANARY") == base
    assert fleet.pointer("CURRENT") == base
    record = json.loads(store.read(keys.quarantine("clf", "v4")).data)
    assert record["rollout"] == r.id
    assert "refused v4" in record["reason"]
    assert any(i["refused_version"] == "v4" for i in record["evidence"]["instances"])
    event = fleet.events()[-1]
    assert (event["type"], event["pointer"], event["from"], event["to"]) == (
        "auto-rollback",
        "CANARY",
        "v4",
        base,
    )
    assert event["rollout"]["evidence"]["why"] == record["reason"]
    wait_until(lambda: fleet.all_on(base), timeout=30)
    for agent in fleet.agents.values():
        assert "v4" not in agent.status()["local_versions"]
    refused = fleet.cli("promote", "clf", "v4")
    assert refused.returncode == 1
    assert "clf/v4 is quarantined" in refused.stderr
    again = fleet.cli("rollout", "start", "clf", "v4")
    assert again.returncode == 1
    assert "quarantined" in again.stderr


def test_a_human_move_stops_the_controller_and_is_never_overwritten(fleet: Fleet) -> None:
    base = fleet.pointer("CURRENT")
    fleet.publish("v5", b"version five")
    fleet.publish("v6", b"version six")
    fleet.start("v5", "--steps", "50,100", "--bake", "1h")
    controller = Controller(fleet, "controller@ci")
    try:
        controller.wait(lambda: fleet.rollout().converged_since is not None, timeout=60)
        assert fleet.cli("promote", "clf", "v6", "--reason", "hotfix").returncode == 0
        wait_until(lambda: fleet.rollout().state == "paused", timeout=30)
        assert "CURRENT names v6" in (fleet.rollout().stopped or "")
        # said once the halt's event is written, a moment after ROLLOUT shows it
        wait_until(lambda: controller.said("halt:"), timeout=10)
        wait_until(lambda: len([line for line in controller.lines if "idle" in line]) > 0)
        assert fleet.pointer("CURRENT") == "v6"
        assert fleet.pointer("CANARY") == "v5"
    finally:
        controller.stop()
    assert fleet.events()[-1]["type"] == "rollout-halt"
    resumed = fleet.cli("rollout", "resume", "clf")
    assert resumed.returncode == 1  # CURRENT is not the rollout's baseline any more
    assert "CURRENT names v6" in resumed.stderr
    assert fleet.cli("rollout", "abort", "clf", "--reason", "superseded").returncode == 0
    assert fleet.pointer("CANARY") == "v6"  # back on what CURRENT names
    wait_until(lambda: fleet.all_on("v6"), timeout=30)
    assert base != "v6"


def test_two_controllers_never_both_act_and_a_killed_one_is_resumed(fleet: Fleet) -> None:
    fleet.publish("v7", b"version seven")
    r = fleet.start("v7", "--steps", "30,60,100", "--bake", "1s")
    first, second = Controller(fleet, "first@ci"), Controller(fleet, "second@ci")
    try:
        wait_until(lambda: first.said("holding the lease") or second.said("holding"), timeout=20)
        holder, standby = (first, second) if first.said("holding the lease") else (second, first)
        wait_until(lambda: standby.said("standby"), timeout=10)
        wait_until(lambda: fleet.rollout().step >= 1, timeout=60)
        holder.stop(signal.SIGKILL)  # mid-rollout, no chance to release the lease
        wait_until(lambda: standby.said("holding the lease"), timeout=20)
        wait_until(lambda: fleet.rollout().state == "promoted", timeout=90)
    finally:
        first.stop()
        second.stop()
    ours = [e for e in fleet.events() if e.get("rollout", {}).get("id") == r.id]
    assert [e["type"] for e in ours] == [
        "rollout-step",
        "rollout-step",
        "rollout-step",
        "rollout-promote",
    ]
    assert [e["rollout"]["step"] for e in ours] == [1, 2, 3, 3]
    assert fleet.pointer("CURRENT") == "v7"
