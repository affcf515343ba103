"""Faults x operations: every command, its every write or read hit once by every kind of fault.

A proxy of our own (modelswap.testing.faultproxy) sits between the real `modelswap` command and
a real SeaweedFS and loses a reply after forwarding, resets the request mid-body, resets the
reply, stalls, trickles or answers 503 after forwarding. After each fault the command must
report the truth (exit 0 exactly when the store holds the result) and the registry's invariants
must hold (tests/invariants.py). Each case's outcome is written to the test's output for the
record.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modelswap.pointers import Move, move_pointer, read_pointer
from modelswap.publish import PublishRequest, publish
from modelswap.registry import Registry
from modelswap.store import open_store
from modelswap.testing.faultproxy import Fault, FaultProxy
from tests import invariants
from tests.conftest import BUCKET, run_cli

ACTIONS = ["drop_reply", "reset_request", "reset_response", "stall", "trickle", "503_after"]


@dataclass(frozen=True)
class Target:
    """One request of an operation that a fault hits."""

    op: str
    name: str
    method: str
    path: str
    header: str | None = None
    nth: int = 1


TARGETS = [
    Target("publish", "lease", "PUT", r"/\.locks/publish-v2\.lock", header="If-None-Match"),
    Target("publish", "data file", "PUT", r"/v2/f\.bin"),
    Target("publish", "lease confirm", "PUT", r"/\.locks/publish-v2\.lock", header="If-Match"),
    Target("publish", "metadata.json", "PUT", r"/v2/metadata\.json"),
    Target("publish-multipart", "complete upload", "POST", r"/v2/big\.bin\?uploadId="),
    Target("publish-multipart", "metadata.json", "PUT", r"/v2/metadata\.json"),
    Target("promote", "move lease", "PUT", r"/\.locks/moves\.lock", header="If-None-Match"),
    Target("promote", "event", "PUT", r"/events/"),
    Target("promote", "pointer", "PUT", r"/CURRENT"),
    Target("promote", "lease release", "DELETE", r"/\.locks/moves\.lock"),
    Target("rollback", "event", "PUT", r"/events/"),
    Target("rollback", "pointer", "PUT", r"/CURRENT"),
    Target("gc", "tombstone", "PUT", r"/\.deleted/v1\.json"),
    Target("gc", "metadata delete", "DELETE", r"/v1/metadata\.json"),
    Target("gc", "data delete", "DELETE", r"/v1/f\.bin"),
    Target("fleet-report", "report", "PUT", r"/fleet/i1\.json"),
    Target("agent-sync", "pointer read", "GET", r"/CURRENT"),
    Target("agent-sync", "metadata read", "GET", r"/v2/metadata\.json"),
    Target("agent-sync", "data read", "GET", r"/v2/f\.bin"),
]


@pytest.fixture(scope="module")
def proxy(s3_server: Any) -> Iterator[FaultProxy]:
    with FaultProxy(s3_server.endpoint) as p:
        yield p


@pytest.fixture
def faulty(proxy: FaultProxy) -> Iterator[FaultProxy]:
    proxy.clear()
    yield proxy
    proxy.clear()


@dataclass
class Case:
    url: str
    registry: Registry
    files: Path
    proxy: FaultProxy

    def cli(self, *args: str) -> tuple[int, str, str]:
        env = {"AWS_ENDPOINT_URL": self.proxy.endpoint, "MODELSWAP_STORE_TIMEOUT": "1"}
        r = run_cli(*args, registry=self.url, env=env)
        return r.returncode, r.stdout, r.stderr

    def file(self, name: str, data: bytes) -> Path:
        path = self.files / uuid.uuid4().hex[:8] / name
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
        return path

    def publish(self, version: str, data: bytes, name: str = "f.bin") -> None:
        files = {name: self.file(name, data)}
        publish(self.registry, PublishRequest(model="clf", files=files, version=version))

    def promote(self, version: str) -> None:
        move_pointer(self.registry, Move("clf", "CURRENT", version, "promote", "setup"))

    def pointer(self) -> str | None:
        state = read_pointer(self.registry, "clf", "CURRENT")
        return state.version if state else None


def _moves(reg: Registry) -> list[tuple[Any, ...]]:
    from modelswap.pointers import history  # noqa: PLC0415

    return [(e.from_version, e.to, e.actor, e.type) for e in history(reg, "clf")]


def run_publish(c: Case, big: bool) -> str:
    c.publish("v1", b"one")
    path = c.file("big.bin" if big else "f.bin", os.urandom(20 << 20) if big else b"two" * 300)
    code, out, err = c.cli("publish", "clf", str(path), "--version", "v2")
    complete = "v2" in {v for v, m in c.registry.all_metadata("clf").items() if m is not None}
    assert (code == 0) == complete, err
    if code == 0:
        assert out.strip() == "v2"
        assert c.registry.verify("clf", "v2") == []
    return f"exit {code}, v2 {'complete' if complete else 'absent'}"


def run_promote(c: Case) -> str:
    c.publish("v1", b"one")
    c.publish("v2", b"two")
    c.promote("v1")
    code, _, err = c.cli("promote", "clf", "v2", "--reason", "faults")
    assert (code == 0) == (c.pointer() == "v2"), err
    if code == 0:
        assert _moves(c.registry)[-1] == ("v1", "v2", "tester@test", "promote")
    return f"exit {code}, CURRENT={c.pointer()}"


def run_rollback(c: Case) -> str:
    c.publish("v1", b"one")
    c.publish("v2", b"two")
    c.promote("v1")
    c.promote("v2")
    code, _, err = c.cli("rollback", "clf", "--reason", "faults")
    assert (code == 0) == (c.pointer() == "v1"), err
    if code == 0:
        assert _moves(c.registry)[-1] == ("v2", "v1", "tester@test", "rollback")
    return f"exit {code}, CURRENT={c.pointer()}"


def run_gc(c: Case) -> str:
    for i in (1, 2, 3):
        c.publish(f"v{i}", f"{i}".encode() * 100)
    c.promote("v3")
    code, out, err = c.cli("gc", "clf", "--keep", "1")
    left = sorted(v for v, m in c.registry.all_metadata("clf").items() if m is not None)
    assert (code == 0) == (left == ["v3"]), f"{out}\n{err}"
    if code == 0:
        assert set(c.registry.tombstones("clf")) == {"v1", "v2"}
    return f"exit {code}, complete {left}"


def run_agent(c: Case, dest: Path, report: bool) -> str:
    c.publish("v1", b"one")
    c.publish("v2", b"two" * 1000)
    c.promote("v2")
    args = ["agent", "clf", "--dest", str(dest), "--once", "--instance-id", "i1"]
    code, _, err = c.cli(*args, *(["--report"] if report else []))
    link = dest / "clf" / "current"
    linked = link.is_symlink() and (link / "f.bin").read_bytes() == b"two" * 1000
    assert (code == 0) == linked, err
    outcome = f"exit {code}, link {'v2' if linked else 'none'}"
    if report:
        key = "clf/fleet/i1.json"
        stored = json.loads(c.registry.store.read(key).data) if code == 0 else None
        if code == 0:
            assert stored is not None
            assert stored["active_version"] == "v2"
        outcome += ", report written" if stored else ""
    return outcome


RUNNERS: dict[str, Callable[[Case, Path], str]] = {
    "publish": lambda c, _d: run_publish(c, big=False),
    "publish-multipart": lambda c, _d: run_publish(c, big=True),
    "promote": lambda c, _d: run_promote(c),
    "rollback": lambda c, _d: run_rollback(c),
    "gc": lambda c, _d: run_gc(c),
    "fleet-report": lambda c, d: run_agent(c, d, report=True),
    "agent-sync": lambda c, d: run_agent(c, d, report=False),
}


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("target", TARGETS, ids=lambda t: f"{t.op}:{t.name}")
def test_fault_leaves_the_truth_and_the_invariants(
    faulty: FaultProxy, tmp_path: Path, target: Target, action: str
) -> None:
    """One fault on one request: the exit code matches the store and the invariants hold."""
    url = f"s3://{BUCKET}/f-{uuid.uuid4().hex[:12]}"
    case = Case(url, Registry(open_store(url)), tmp_path / "files", faulty)
    fault = faulty.add(
        Fault(
            action,
            method=target.method,
            path=target.path,
            header=target.header,
            nth=target.nth,
            rate=512.0,
        )
    )
    outcome = RUNNERS[target.op](case, tmp_path / "dest")
    assert faulty.fired(fault) == 1, f"the fault never hit {target}"
    invariants.assert_sound(case.registry, "clf")
    print(f"OUTCOME {target.op} | {target.name} | {action} | {outcome}")
