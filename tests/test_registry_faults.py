"""The registry under faults and races, through the real CLI on both backends: unreadable and
hand-made events, gc racing a move, deleted names, racing publishes, damaged stored files, dead
movers' leases, and (on S3, through the fault proxy) slow reads and failed lease confirmations."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from modelswap.errors import InvalidPointer, ModelswapError, ObjectNotFound
from modelswap.events import EventLog
from modelswap.metadata import Metadata, rfc3339
from modelswap.pointers import Move, list_pointers, move_pointer, read_pointer
from modelswap.registry import PublishRequest, Registry
from modelswap.store import open_store
from tests.conftest import BUCKET, run_cli, wait_until
from tests.faultproxy import Fault, FaultProxy

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
    meta = registry.publish(req)
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
    events = EventLog(registry.store, MODEL).all()
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


def test_garbage_newest_event_is_reported_and_every_command_still_works(
    registry_url: str, registry: Registry, model_file: MakeFile
) -> None:
    """Garbage at the newest events/ seq: promote, rollback, history and gc work; history warns."""
    for i in range(3):
        publish(registry, model_file, f"weights {i}".encode())
    promote_api(registry, "v1")
    promote_api(registry, "v2")
    garbage_key = plant_event(registry, 3, b"not json")  # the next seq a move would take

    ok(cli_move(registry_url, registry, "promote", "v3"))
    assert pointer_version(registry) == "v3"
    ok(cli_move(registry_url, registry, "rollback", "--reason", "v3 is slow"))
    assert pointer_version(registry) == "v2"

    result = run_cli("history", MODEL, "--json", registry=registry_url)
    events = json.loads(ok(result))
    assert moves(events) == [
        (1, "CURRENT", None, "v1", "promote"),
        (2, "CURRENT", "v1", "v2", "promote"),
        (4, "CURRENT", "v2", "v3", "promote"),
        (5, "CURRENT", "v3", "v2", "rollback"),
    ]
    lines = result.stderr.splitlines()
    warnings = [ln for ln in lines if ln.startswith("warning:")]
    assert len(warnings) == 1, result.stderr
    assert garbage_key in warnings[0]
    assert lines[lines.index(warnings[0]) + 1].startswith("hint: "), result.stderr

    gc = ok(run_cli("gc", MODEL, "--keep", "1", registry=registry_url))
    assert "deleted v1" in gc.splitlines()
    assert sorted(registry.all_metadata(MODEL)) == ["v2", "v3"]
    assert registry.store.read(garbage_key).data == b"not json"  # reported, never removed
    assert_invariants(registry)


@pytest.mark.parametrize("kind", ["hand-logged event", "garbage"])
def test_events_after_a_hand_made_high_key_stay_visible_and_in_order(
    registry_url: str, registry: Registry, model_file: MakeFile, kind: str
) -> None:
    """After a hand-made events/9999999999.json every later event shows, in move order."""
    for i in range(4):
        publish(registry, model_file, f"weights {i}".encode())
    promote_api(registry, "v1")
    promote_api(registry, "v2")
    if kind == "garbage":
        plant_event(registry, 9999999999, b"\x00\xff{not an event")
        live_before_v4 = "v2"
        planted = []
    else:  # an operator moved CURRENT by hand and logged it by hand, at a key of their choice
        registry.store.put(f"{MODEL}/CURRENT", b"v3\n")
        hand = {
            "time": rfc3339(datetime.now(UTC)),
            "actor": "ops@hand",
            "pointer": "CURRENT",
            "from": "v2",
            "to": "v3",
            "reason": "hotfix by hand",
            "gate": None,
            "type": "promote",
        }
        plant_event(registry, 9999999999, json.dumps(hand).encode())
        live_before_v4 = "v3"
        planted = [(9999999999, "CURRENT", "v2", "v3", "promote")]

    ok(cli_move(registry_url, registry, "promote", "v4"))
    ok(cli_move(registry_url, registry, "rollback"))
    assert pointer_version(registry) == live_before_v4
    assert moves(history_json(registry_url)) == [
        (1, "CURRENT", None, "v1", "promote"),
        (2, "CURRENT", "v1", "v2", "promote"),
        *planted,
        (10000000000, "CURRENT", live_before_v4, "v4", "promote"),
        (10000000001, "CURRENT", "v4", live_before_v4, "rollback"),
    ]
    assert_invariants(registry)


def test_promote_works_after_several_high_keys_and_never_moves_when_it_fails(
    registry_url: str, registry: Registry, model_file: MakeFile
) -> None:
    """High keys 9999999999, 10000000000, 99999999999 (and more planted while moves run)."""
    for i in range(3):
        publish(registry, model_file, f"weights {i}".encode())
    promote_api(registry, "v1")
    plant_event(registry, 9999999999, b"garbage")
    plant_event(registry, 10000000000, b'{"note": "valid JSON, but not an event"}')
    plant_event(registry, 99999999999, b"")

    ok(cli_move(registry_url, registry, "promote", "v2"))
    assert moves(EventLog(registry.store, MODEL).all())[-1] == (
        100000000000,
        "CURRENT",
        "v1",
        "v2",
        "promote",
    )

    # Refused moves exit non-zero and change nothing (cli_move checks pointer and log).
    missing = cli_move(registry_url, registry, "promote", "v9")
    assert missing.returncode != 0
    stale = cli_move(registry_url, registry, "promote", "v3", "--expect", "v1")
    assert stale.returncode != 0
    assert pointer_version(registry) == "v2"

    # Someone keeps planting keys at the very next numbers while moves run: each move still
    # lands with exactly one event, or exits non-zero having moved nothing.
    stop = threading.Event()
    planter_store = open_store(registry_url)
    planted: list[int] = []

    def plant() -> None:
        log = EventLog(planter_store, MODEL)
        while not stop.is_set() and len(planted) < 60:
            refs = log.refs()
            seq = refs[-1].seq + 1
            try:
                planter_store.put_new(f"{MODEL}/events/{seq}.json", b"planted by hand")
                planted.append(seq)
            except ModelswapError:
                pass
            time.sleep(0.02)

    planter = threading.Thread(target=plant, daemon=True)
    planter.start()
    try:
        outcomes = {}
        for target in ("v3", "v1"):
            result = cli_move(registry_url, registry, "promote", target)
            outcomes[target] = result.returncode
            if result.returncode == 0:
                assert pointer_version(registry) == target
    finally:
        stop.set()
        planter.join()
    assert planted, "the planter never planted a key"
    assert outcomes == {"v3": 0, "v1": 0}
    assert pointer_version(registry) == "v1"
    readable = EventLog(registry.store, MODEL).all()
    assert [(e["from"], e["to"]) for e in readable] == [
        (None, "v1"),
        ("v1", "v2"),
        ("v2", "v3"),
        ("v3", "v1"),
    ]
    assert_invariants(registry)


# -- 3, 4: gc against moves and publishes --------------------------------------------------


def test_gc_waits_for_a_move_of_a_new_pointer_and_keeps_its_version(
    registry_url: str, registry: Registry, model_file: MakeFile, request: pytest.FixtureRequest
) -> None:
    """gc --keep 1 during a promote of a new CANARY to old v1: gc waits, then keeps v1."""
    for i in range(3):
        publish(registry, model_file, f"weights {i}".encode())
    promote_api(registry, "v3")
    lock_key = registry.lock_key(MODEL, "moves")

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
        holder = json.loads(registry.store.read(registry.lock_key(MODEL, "moves")).data)
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


def test_a_name_gc_deleted_is_never_published_again(
    registry_url: str, registry: Registry, model_file: MakeFile
) -> None:
    """After gc deleted v1 and v3, `publish --version` of them fails; auto-numbering skips them."""
    publish(registry, model_file, b"three", version="v3")  # oldest, yet the highest number
    publish(registry, model_file, b"one", version="v1")
    publish(registry, model_file, b"two", version="v2")
    promote_api(registry, "v2")
    gc = ok(run_cli("gc", MODEL, "--keep", "1", registry=registry_url)).splitlines()
    assert sorted(ln for ln in gc if ln.startswith("deleted")) == ["deleted v1", "deleted v3"]
    assert sorted(registry.tombstones(MODEL)) == ["v1", "v3"]

    for name in ("v1", "v3"):
        again = model_file("model.onnx", b"other bytes than before")
        result = run_cli("publish", MODEL, str(again), "--version", name, registry=registry_url)
        assert result.returncode != 0
        assert result.stderr.startswith(f"error: version {MODEL}/{name} was deleted by gc")
        assert "hint: " in result.stderr

    fresh = model_file("model.onnx", b"fresh bytes")
    assert ok(run_cli("publish", MODEL, str(fresh), registry=registry_url)).strip() == "v4"
    assert sorted(v for v, m in registry.all_metadata(MODEL).items() if m) == ["v2", "v4"]
    assert_invariants(registry)


# -- 5: racing auto-numbered publishes of large files --------------------------------------


@pytest.mark.timeout(420)
def test_eight_racing_auto_numbered_publishes_of_40_mb_all_land(
    registry_url: str, registry: Registry, tmp_path: Path
) -> None:
    """Eight publishes without --version at once: eight distinct versions, each intact."""
    files, digests = [], {}
    for i in range(8):
        path = tmp_path / f"p{i}" / "model.onnx"
        path.parent.mkdir()
        data = os.urandom(40 << 20)
        path.write_bytes(data)
        files.append(path)
        digests[hashlib.sha256(data).hexdigest()] = i
        del data
    procs = [start_cli("publish", MODEL, str(f), url=registry_url) for f in files]
    results = [finish(p, timeout=360) for p in procs]
    for rc, _out, err in results:
        assert rc == 0, err
    names = [out.strip() for _rc, out, _err in results]
    assert len(set(names)) == 8, names
    assert sorted(names, key=lambda v: int(v[1:])) == [f"v{n}" for n in range(1, 9)]
    metas = registry.all_metadata(MODEL)
    assert sorted(metas) == sorted(names)
    for i, name in enumerate(names):
        meta = metas[name]
        assert isinstance(meta, Metadata)
        entry = meta.files["model.onnx"]
        assert (entry.size, digests.get(entry.sha256)) == (40 << 20, i)  # each its own file
        assert registry.verify(MODEL, name) == []


# -- 6: promote refuses damaged versions ---------------------------------------------------


def test_promote_refuses_a_version_whose_stored_file_was_damaged(
    registry_url: str, registry: Registry, model_file: MakeFile
) -> None:
    """A stored file of the wrong size is refused; one of the right size with --verify."""
    publish(registry, model_file, b"a" * 1000)
    publish(registry, model_file, b"b" * 1000)
    publish(registry, model_file, b"c" * 1000)
    promote_api(registry, "v1")
    registry.store.put(f"{MODEL}/v2/model.onnx", b"B" * 999)
    registry.store.put(f"{MODEL}/v3/model.onnx", b"C" * 1000)

    wrong_size = cli_move(registry_url, registry, "promote", "v2")
    assert wrong_size.returncode != 0
    assert wrong_size.stderr.startswith(f"error: {MODEL}/v2 cannot be promoted: model.onnx: size")
    assert pointer_version(registry) == "v1"

    # Without --verify only the cheap size check runs (one listing, no bytes read), so the
    # same-size v3 would pass it; --verify re-hashes every stored file and refuses it.
    wrong_bytes = cli_move(registry_url, registry, "promote", "v3", "--verify")
    assert wrong_bytes.returncode != 0
    assert wrong_bytes.stderr.startswith(
        f"error: {MODEL}/v3 cannot be promoted: model.onnx: sha256"
    )
    assert pointer_version(registry) == "v1"
    assert event_count(registry) == 1
    assert_invariants(registry, damaged=frozenset({"v2", "v3"}))


# -- 7: leases -----------------------------------------------------------------------------


def test_dead_movers_lease_is_settled_by_the_next_promote(
    registry_url: str, registry: Registry, model_file: MakeFile
) -> None:
    """A dead rollback whose swap landed is logged (its type, reason, actor) before the new move."""
    for i in range(3):
        publish(registry, model_file, f"weights {i}".encode())
    promote_api(registry, "v1")
    promote_api(registry, "v2")
    lease = dead_lease("dead1", "dead@mover", ROLLBACK_INTENT)
    registry.store.put(registry.lock_key(MODEL, "moves"), lease)
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
    assert not exists(registry, registry.lock_key(MODEL, "moves"))
    assert_invariants(registry)


def test_racers_taking_over_one_stale_lease_settle_it_once(
    registry_url: str, registry: Registry, model_file: MakeFile
) -> None:
    """Four movers break one dead lease at once: the dead move is logged exactly once."""
    for i in range(3):
        publish(registry, model_file, f"weights {i}".encode())
    promote_api(registry, "v1")
    promote_api(registry, "v2")
    lease = dead_lease("dead1", "dead@mover", ROLLBACK_INTENT)
    registry.store.put(registry.lock_key(MODEL, "moves"), lease)
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
    assert [(e["from"], e["to"], e["type"], e.get("recovered")) for e in events] == [
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
    for i in range(3):
        publish(registry, model_file, f"weights {i}".encode())
    promote_api(registry, "v1")
    promote_api(registry, "v2")
    registry.store.put(
        registry.lock_key(MODEL, "moves"), dead_lease("dead1", "dead@mover", ROLLBACK_INTENT)
    )
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
    assert not exists(registry, registry.lock_key(MODEL, "moves"))
    assert moves(history_json(registry_url)) == expected
    assert_invariants(registry)
