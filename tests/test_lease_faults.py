"""Leases and gc under faults and races, through the real CLI on both backends: gc racing a
move of a new pointer, dead movers' leases and their take-over, and (on S3, through the fault
proxy) a lease that cannot be confirmed."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from modelswap import keys
from modelswap.errors import ModelswapError
from modelswap.events import EventLog
from modelswap.metadata import rfc3339
from modelswap.pointers import Move, move_pointer
from modelswap.registry import Registry
from modelswap.store import open_store
from modelswap.testing.faultproxy import Fault, FaultProxy
from tests.conftest import BUCKET, run_cli, wait_until
from tests.registry_faults_helpers import (
    MODEL,
    ROLLBACK_INTENT,
    MakeFile,
    assert_invariants,
    cli_move,
    dead_lease,
    event_count,
    exists,
    finish,
    history_json,
    moves,
    ok,
    plant_event,
    pointer_version,
    promote_api,
    publish,
    publish_three,
    start_cli,
)


def test_gc_waits_for_a_move_of_a_new_pointer_and_keeps_its_version(
    registry_url: str, registry: Registry, model_file: MakeFile, request: pytest.FixtureRequest
) -> None:
    """gc --keep 1 during a promote of a new CANARY to old v1: gc waits, then keeps v1."""
    for i in range(3):
        publish(registry, model_file, f"weights {i}".encode())
    promote_api(registry, "v3")
    lock_key = keys.moves_lock(MODEL)

    if registry_url.startswith("s3://"):
        server = request.getfixturevalue("s3_server")
        with FaultProxy(server.endpoint) as proxy:
            # The promote's second GET of v1's metadata.json is made under the move lease
            # (the first is the size check before it); trickling it holds the lease ~4 s.
            path = rf"/{MODEL}/v1/metadata\.json"
            slow = proxy.add(Fault("trickle", method="GET", path=path, nth=2, rate=200))
            promote = start_cli(
                "promote", MODEL, "v1", "--pointer", "CANARY", url=registry_url,
                env={"AWS_ENDPOINT_URL": proxy.endpoint},
            )  # fmt: skip
            wait_until(lambda: proxy.count("GET", path) >= 2, timeout=30)
            holder = json.loads(registry.store.read(lock_key).data)
            assert holder["intent"]["pointer"] == "CANARY"
            assert promote.poll() is None  # still holding the lease
            gc = start_cli("gc", MODEL, "--keep", "1", url=registry_url)  # straight to the store
            promote_rc, promote_out, promote_err = finish(promote)
            gc_rc, gc_out, gc_err = finish(gc)
            assert proxy.fired(slow) == 1
    else:
        # No proxy for a folder: start gc once the promote holds the lease (or has finished).
        promote = start_cli("promote", MODEL, "v1", "--pointer", "CANARY", url=registry_url)
        wait_until(
            lambda: promote.poll() is not None or exists(registry, lock_key),
            timeout=30,
            interval=0.002,
        )
        gc = start_cli("gc", MODEL, "--keep", "1", url=registry_url)
        promote_rc, promote_out, promote_err = finish(promote)
        gc_rc, gc_out, gc_err = finish(gc)

    assert promote_rc == 0, promote_err
    assert gc_rc == 0, gc_err
    assert promote_out.strip().startswith(f"{MODEL}/CANARY: (none) -> v1")
    gc_lines = gc_out.splitlines()
    assert "deleted v2" in gc_lines
    assert "kept v1 (named by CANARY)" in gc_lines
    assert pointer_version(registry, "CANARY") == "v1"
    assert pointer_version(registry, "CURRENT") == "v3"
    assert sorted(v for v, m in registry.all_metadata(MODEL).items() if m) == ["v1", "v3"]
    assert registry.verify(MODEL, "v1") == []
    assert_invariants(registry)


def test_move_that_waited_for_gc_fails_cleanly_when_gc_deleted_its_target(
    s3_server: Any, tmp_path: Path, model_file: MakeFile
) -> None:
    """Mirror race: gc holds the lease first and deletes v1; the CANARY promote moves nothing."""
    url = f"s3://{BUCKET}/gc-first-{tmp_path.name}"
    registry = Registry(open_store(url))
    for i in range(3):
        publish(registry, model_file, f"weights {i}".encode())
    promote_api(registry, "v3")
    with FaultProxy(s3_server.endpoint) as proxy:
        # gc reads every version's metadata.json under the move lease; trickling v2's holds it.
        path = rf"/{MODEL}/v2/metadata\.json"
        slow = proxy.add(Fault("trickle", method="GET", path=path, rate=200))
        via_proxy = {"AWS_ENDPOINT_URL": proxy.endpoint}
        gc = start_cli("gc", MODEL, "--keep", "1", url=url, env=via_proxy)
        wait_until(lambda: proxy.count("GET", path) >= 1, timeout=30)
        holder = json.loads(registry.store.read(keys.moves_lock(MODEL)).data)
        assert holder["intent"] is None  # gc's lease, not a move's
        promote = start_cli("promote", MODEL, "v1", "--pointer", "CANARY", url=url)
        promote_rc, _out, promote_err = finish(promote)
        gc_rc, gc_out, gc_err = finish(gc)
        assert proxy.fired(slow) == 1
    assert gc_rc == 0, gc_err
    assert sorted(ln for ln in gc_out.splitlines() if ln.startswith("deleted")) == [
        "deleted v1",
        "deleted v2",
    ]
    assert promote_rc != 0
    assert promote_err.startswith(f"error: version {MODEL}/v1 does not exist"), promote_err
    assert pointer_version(registry, "CANARY") is None
    assert event_count(registry) == 1
    assert_invariants(registry)


def test_dead_movers_lease_is_settled_by_the_next_promote(
    registry_url: str, registry: Registry, model_file: MakeFile
) -> None:
    """A dead rollback whose swap landed is logged (its type, reason, actor) before the new move."""
    publish_three(registry, model_file)
    promote_api(registry, "v2")
    lease = dead_lease("dead1", "dead@mover", ROLLBACK_INTENT)
    registry.store.put(keys.moves_lock(MODEL), lease)
    registry.store.put(f"{MODEL}/CURRENT", b"v1\n")  # the dead mover's swap landed

    ok(cli_move(registry_url, registry, "promote", "v3", "--reason", "v3 fixes it"))
    events = history_json(registry_url)
    got = [(e["from"], e["to"], e["type"], e["reason"], e["actor"]) for e in events]
    assert got == [
        (None, "v1", "promote", None, "setup@test"),
        ("v1", "v2", "promote", None, "setup@test"),
        ("v2", "v1", "rollback", "bad v2", "dead@mover"),
        ("v1", "v3", "promote", "v3 fixes it", "tester@test"),
    ]
    assert events[2]["recovered"] is True
    assert pointer_version(registry) == "v3"
    assert not exists(registry, keys.moves_lock(MODEL))
    assert_invariants(registry)


def test_racers_taking_over_one_stale_lease_settle_it_once(
    registry_url: str, registry: Registry, model_file: MakeFile
) -> None:
    """Four movers break one dead lease at once: the dead move is logged exactly once."""
    publish_three(registry, model_file)
    promote_api(registry, "v2")
    lease = dead_lease("dead1", "dead@mover", ROLLBACK_INTENT)
    registry.store.put(keys.moves_lock(MODEL), lease)
    registry.store.put(f"{MODEL}/CURRENT", b"v1\n")

    barrier = threading.Barrier(4)
    outcomes: list[str] = []
    mu = threading.Lock()

    def mover(n: int) -> None:
        own = Registry(open_store(registry_url))  # each racer its own client, as a process
        own.store.connect()
        barrier.wait()
        try:
            event = move_pointer(own, Move(MODEL, "CURRENT", "v3", "promote", f"racer{n}"))
            outcome = "moved" if event is not None else "already"
        except ModelswapError as e:
            outcome = type(e).__name__
        with mu:
            outcomes.append(outcome)

    threads = [threading.Thread(target=mover, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert outcomes.count("moved") == 1, outcomes
    assert set(outcomes) <= {"moved", "already", "PointerMoved"}, outcomes
    events = EventLog(registry.store, MODEL).all()
    assert [(e.from_version, e.to, e.type, e.recovered) for e in events] == [
        (None, "v1", "promote", None),
        ("v1", "v2", "promote", None),
        ("v2", "v1", "rollback", True),
        ("v1", "v3", "promote", None),
    ]
    assert pointer_version(registry) == "v3"
    assert_invariants(registry)


def test_publish_whose_lease_confirmation_fails_leaves_no_version(
    s3_server: Any, tmp_path: Path, model_file: MakeFile
) -> None:
    """Every If-Match refresh of the publish lease answers 503: exit non-zero, no version."""
    url = f"s3://{BUCKET}/lease-{tmp_path.name}"
    registry = Registry(open_store(url))
    weights = model_file("model.onnx", b"weights that must not become a version")
    with FaultProxy(s3_server.endpoint) as proxy:
        refused = proxy.add(
            Fault("503_before", method="PUT", path=r"/\.locks/publish-", header="If-Match", times=0)
        )
        result = run_cli(
            "publish", MODEL, str(weights), registry=url, env={"AWS_ENDPOINT_URL": proxy.endpoint}
        )
        assert proxy.fired(refused) >= 1
    assert result.returncode != 0
    assert result.stderr.startswith("error: could not confirm the lock"), result.stderr
    listed = run_cli("versions", MODEL, "--json", registry=url)
    if listed.returncode == 0:  # something of the model is left (a lease, a leftover file)
        assert [v["version"] for v in json.loads(listed.stdout) if v["complete"]] == []
    else:  # nothing of the model is left at all
        assert listed.stderr.startswith(f"error: model {MODEL!r} does not exist"), listed.stderr
    keys = [o.key for o in registry.store.objects(f"{MODEL}/")]
    assert [k for k in keys if k.endswith("/metadata.json")] == []
    assert [k for k in keys if k.startswith(f"{MODEL}/v")] == []  # the upload was undone too


@pytest.mark.parametrize("landed", [True, False], ids=["swap landed", "swap never landed"])
def test_gc_that_breaks_a_dead_movers_lease_settles_the_dead_move(
    registry_url: str, registry: Registry, model_file: MakeFile, landed: bool
) -> None:
    """gc taking over a dead mover's lease settles its intent, as a move would: one event a move."""
    publish_three(registry, model_file)
    promote_api(registry, "v2")
    registry.store.put(keys.moves_lock(MODEL), dead_lease("dead1", "dead@mover", ROLLBACK_INTENT))
    if landed:  # its swap landed and no event of it was kept: CURRENT names v1
        registry.store.put(f"{MODEL}/CURRENT", b"v1\n")
        expected = [
            (1, "CURRENT", None, "v1", "promote"),
            (2, "CURRENT", "v1", "v2", "promote"),
            (3, "CURRENT", "v2", "v1", "rollback"),
        ]
    else:  # killed after writing its event, before the swap: CURRENT still names v2
        event = {
            "time": rfc3339(datetime.now(UTC)),
            "actor": "dead@mover",
            "move_id": "dead1",
            **ROLLBACK_INTENT,
        }
        plant_event(registry, 3, json.dumps(event).encode())
        expected = [
            (1, "CURRENT", None, "v1", "promote"),
            (2, "CURRENT", "v1", "v2", "promote"),
        ]

    ok(run_cli("gc", MODEL, "--keep", "1", registry=registry_url))
    assert not exists(registry, keys.moves_lock(MODEL))
    assert moves(history_json(registry_url)) == expected
    assert_invariants(registry)


def test_a_lease_whose_intent_names_no_version_is_not_settled(
    registry_url: str, registry: Registry, model_file: MakeFile
) -> None:
    """A lease left with an intent that is not a mover's (its `to` not a version name) is
    taken over without logging anything for it (it logged a CANARY move from null to null)."""
    publish_three(registry, model_file)
    bogus = {"pointer": "CANARY", "from": None, "to": 5, "type": "promote", "stray": 1}
    registry.store.put(keys.moves_lock(MODEL), dead_lease("dead1", "dead@mover", bogus))
    ok(cli_move(registry_url, registry, "promote", "v2", "--reason", "after the dead one"))
    assert [e["pointer"] for e in history_json(registry_url)] == ["CURRENT", "CURRENT"]
    assert_invariants(registry)
