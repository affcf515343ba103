"""Crashes done for real: a publish killed mid-upload, a mover that died holding its lease."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from modelswap import keys
from modelswap.metadata import rfc3339
from modelswap.pointers import Move, history, move_pointer
from modelswap.publish import PublishRequest, publish
from modelswap.registry import Registry
from tests.conftest import run_cli, wait_until


def test_killed_publish_leaves_no_version_and_rerun_completes(
    registry_url: str, registry: Registry, tmp_path: Path
) -> None:
    """SIGKILL during a large upload: no version is visible; the same command then succeeds."""
    big = tmp_path / "model.onnx"
    big.write_bytes(os.urandom(1 << 20) * 300)
    env = dict(os.environ, MODELSWAP_REGISTRY=registry_url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelswap", "publish", "clf", str(big), "--version", "v1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    lock = keys.publish_lock("clf", "v1")
    wait_until(lambda: any(o.key == lock for o in registry.store.objects("clf/")), timeout=30)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert registry.all_metadata("clf") in ({}, {"v1": None})
    result = run_cli("publish", "clf", str(big), "--version", "v1", registry=registry_url)
    assert result.returncode == 0, result.stderr
    assert registry.verify("clf", "v1") == []


def test_move_that_died_after_the_swap_gets_its_event_written(
    registry: Registry, model_file: Callable[[str, bytes], Path]
) -> None:
    """A lease left by a dead mover whose swap landed: the next move logs it, then its own."""
    for v in ("v1", "v2", "v3"):
        files = {"m": model_file("m", v.encode())}
        publish(registry, PublishRequest(model="clf", files=files, version=v))
    move_pointer(registry, Move("clf", "CURRENT", "v1", "promote", "alice"))
    # What a mover leaves if it is killed between swapping CURRENT and appending its event:
    registry.store.put("clf/CURRENT", b"v2\n")
    dead = {
        "owner": "x",
        "actor": "bob",
        "host": "elsewhere",
        "pid": 1,
        "acquired": rfc3339(datetime.now(UTC) - timedelta(minutes=10)),
        "expires": rfc3339(datetime.now(UTC) - timedelta(minutes=8)),
        "intent": {"pointer": "CURRENT", "from": "v1", "to": "v2"},
    }
    registry.store.put(keys.moves_lock("clf"), json.dumps(dead).encode())
    move_pointer(registry, Move("clf", "CURRENT", "v3", "promote", "carol"))
    log = [(e.from_version, e.to, e.actor, e.type) for e in history(registry, "clf")]
    assert log == [
        (None, "v1", "alice", "promote"),
        ("v1", "v2", "bob", "promote"),
        ("v2", "v3", "carol", "promote"),
    ]
