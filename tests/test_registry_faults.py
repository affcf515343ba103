"""The registry under faults and races, through the real CLI on both backends: unreadable and
hand-made events, deleted names, racing publishes and damaged stored files."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from modelswap.errors import ModelswapError
from modelswap.events import EventLog
from modelswap.metadata import Metadata, rfc3339
from modelswap.registry import Registry
from modelswap.store import open_store
from tests.conftest import run_cli
from tests.registry_faults_helpers import (
    MODEL,
    MakeFile,
    assert_invariants,
    cli_move,
    event_count,
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


def test_garbage_newest_event_is_reported_and_every_command_still_works(
    registry_url: str, registry: Registry, model_file: MakeFile
) -> None:
    """Garbage at the newest events/ seq: promote, rollback, history and gc work; history warns."""
    publish_three(registry, model_file)
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
    publish_three(registry, model_file)
    plant_event(registry, 9999999999, b"garbage")
    plant_event(registry, 10000000000, b'{"note": "valid JSON, but not an event"}')
    plant_event(registry, 99999999999, b"")

    ok(cli_move(registry_url, registry, "promote", "v2"))
    assert moves([e.to_json() for e in EventLog(registry.store, MODEL).all()])[-1] == (
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
    assert [(e.from_version, e.to) for e in readable] == [
        (None, "v1"),
        ("v1", "v2"),
        ("v2", "v3"),
        ("v3", "v1"),
    ]
    assert_invariants(registry)


# -- 3, 4: gc against moves and publishes --------------------------------------------------


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
