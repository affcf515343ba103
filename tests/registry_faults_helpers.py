"""Shared setup for the registry fault and lease tests: publishing, moving, planting events
and leases, and the invariants every test ends with."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from modelswap.errors import InvalidPointer, ObjectNotFound
from modelswap.events import EventLog
from modelswap.metadata import Metadata, rfc3339
from modelswap.pointers import Move, list_pointers, move_pointer, read_pointer
from modelswap.publish import PublishRequest
from modelswap.publish import publish as publish_request
from modelswap.registry import Registry
from tests.conftest import run_cli

MakeFile = Callable[[str, bytes], Path]
MODEL = "clf"


# -- helpers -------------------------------------------------------------------------------


def publish(registry: Registry, make: MakeFile, data: bytes, version: str | None = None) -> str:
    """Publish through the API (set-up only); returns the version name."""
    req = PublishRequest(
        model=MODEL,
        files={"model.onnx": make("model.onnx", data)},
        version=version,
        metrics={"validation_accuracy": 0.9},
        actor="setup@test",
    )
    meta = publish_request(registry, req)
    time.sleep(0.005)  # `created` has millisecond precision; gc orders versions by it
    return meta.version


def promote_api(registry: Registry, version: str, pointer: str = "CURRENT") -> None:
    move_pointer(registry, Move(MODEL, pointer, version, "promote", "setup@test"))


def pointer_version(registry: Registry, pointer: str = "CURRENT") -> str | None:
    state = read_pointer(registry, MODEL, pointer)
    return state.version if state else None


def event_count(registry: Registry) -> int:
    return len(EventLog(registry.store, MODEL).all())


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def cli_move(
    url: str, registry: Registry, verb: str, *args: str, pointer: str = "CURRENT"
) -> subprocess.CompletedProcess[str]:
    """`modelswap promote|rollback ...`; a move that exits non-zero must leave the pointer and
    the log as they were (PRODUCT.md section 6), whatever the test expects of it otherwise."""
    before, events_before = pointer_version(registry, pointer), event_count(registry)
    result = run_cli(verb, MODEL, *args, "--pointer", pointer, registry=url)
    if result.returncode != 0:
        assert result.stderr.startswith("error: "), result.stderr
        assert pointer_version(registry, pointer) == before
        assert event_count(registry) == events_before
    return result


def history_json(url: str) -> list[dict[str, Any]]:
    return json.loads(ok(run_cli("history", MODEL, "--json", registry=url)))


def moves(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(e["seq"], e["pointer"], e["from"], e["to"], e["type"]) for e in events]


def plant_event(registry: Registry, seq: int, data: bytes) -> str:
    key = f"{MODEL}/events/{seq:010d}.json"
    registry.store.put(key, data)
    return key


def exists(registry: Registry, key: str) -> bool:
    try:
        registry.store.head(key)
    except ObjectNotFound:
        return False
    return True


def assert_invariants(registry: Registry, damaged: frozenset[str] = frozenset()) -> None:
    """For each pointer its events chain (each `from` is the previous `to`, the first from
    nothing) and end at the version it names; every complete version but `damaged` verifies."""
    events = [e.to_json() for e in EventLog(registry.store, MODEL).all()]
    pointers = list_pointers(registry, MODEL)
    by_pointer: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_pointer.setdefault(e["pointer"], []).append(e)
    assert sorted(by_pointer) == sorted(pointers)
    for name, state in pointers.items():
        assert not isinstance(state, InvalidPointer), state
        chain = by_pointer[name]
        assert chain[0]["from"] is None, chain
        for before, after in itertools.pairwise(chain):
            assert after["from"] == before["to"], chain
        assert chain[-1]["to"] == state.version
    for v, meta in registry.all_metadata(MODEL).items():
        if isinstance(meta, Metadata) and v not in damaged:
            assert registry.verify(MODEL, v) == [], v


def dead_lease(owner: str, actor: str, intent: dict[str, Any]) -> bytes:
    """What a mover that died holding the move lease leaves behind: an expired lock object."""
    now = datetime.now(UTC)
    body = {
        "owner": owner,
        "actor": actor,
        "host": "a-host-that-is-gone",
        "pid": 1,
        "acquired": rfc3339(now - timedelta(minutes=10)),
        "expires": rfc3339(now - timedelta(minutes=8)),
        "intent": intent,
    }
    return json.dumps(body, sort_keys=True).encode()


def start_cli(*args: str, url: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full_env = dict(os.environ, MODELSWAP_REGISTRY=url, MODELSWAP_ACTOR="tester@test")
    full_env.update(env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "modelswap", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"{proc.args} did not finish in {timeout}s:\n{err}") from None
    return proc.returncode, out, err


ROLLBACK_INTENT = {
    "pointer": "CURRENT",
    "from": "v2",
    "to": "v1",
    "type": "rollback",
    "reason": "bad v2",
    "gate": None,
}


# -- 1, 2: the event log with unreadable and hand-made objects -----------------------------


def publish_three(registry: Registry, make: MakeFile) -> None:
    """v1, v2, v3 published; CURRENT on v1."""
    for i in range(3):
        publish(registry, make, f"weights {i}".encode())
    promote_api(registry, "v1")
