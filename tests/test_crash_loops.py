"""Crash loops for real: kill -9 a publish or a promote at random points, again and again.

After every kill the registry's invariants hold (tests/invariants.py): no version is listed
complete unless it verifies, and once the next mover has settled the dead one's lease, every
pointer's events form one chain that ends where the pointer is.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from modelswap.metadata import Metadata
from modelswap.registry import Registry
from tests import invariants
from tests.conftest import run_cli

KILLS = 20


def _spawn(url: str, *args: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, MODELSWAP_REGISTRY=url, MODELSWAP_ACTOR="crash@test")
    return subprocess.Popen(
        [sys.executable, "-m", "modelswap", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _kill_after(proc: subprocess.Popen[bytes], delay: float) -> int | None:
    """SIGKILL after delay unless it already ended; its exit code if it ended by itself."""
    try:
        return proc.wait(delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return None


def test_publish_killed_at_random_points_never_leaves_a_broken_version(
    registry_url: str, registry: Registry, tmp_path: Path
) -> None:
    """20 publishes SIGKILLed anywhere: each version is absent, incomplete or intact."""
    rng = random.Random(14)
    big = tmp_path / "model.bin"
    big.write_bytes(os.urandom(20 << 20))  # multipart on S3
    started = time.monotonic()
    assert _spawn(registry_url, "publish", "clf", str(big), "--version", "v0").wait(60) == 0
    span = time.monotonic() - started
    finished = 0
    for i in range(1, KILLS + 1):
        code = _kill_after(
            _spawn(registry_url, "publish", "clf", str(big), "--version", f"v{i}"),
            rng.uniform(0.3 * span, span),  # past start-up, before the end
        )
        metas = registry.all_metadata("clf")
        if code == 0:
            finished += 1
            assert isinstance(metas.get(f"v{i}"), Metadata)
        invariants.assert_sound(registry, "clf", leases=False)
    # A killed name can be published again by the same command.
    killed = [
        v for v, m in registry.all_metadata("clf").items() if not isinstance(m, Metadata)
    ] or [f"v{KILLS + 1}"]
    r = run_cli("publish", "clf", str(big), "--version", killed[0], registry=registry_url)
    assert r.returncode == 0, r.stderr
    invariants.assert_sound(registry, "clf", leases=False)
    print(f"publish crash loop: {KILLS - finished} killed, {finished} finished first")


def test_promote_killed_at_random_points_leaves_one_chain(
    registry_url: str, registry: Registry, tmp_path: Path
) -> None:
    """Promotes SIGKILLed anywhere: the next promote settles the lease; the log stays a chain."""
    rng = random.Random(15)
    for v in ("v1", "v2"):
        (tmp_path / v).write_bytes(v.encode())
        assert run_cli("publish", "clf", str(tmp_path / v), "--version", v, registry=registry_url)
    started = time.monotonic()
    assert _spawn(registry_url, "promote", "clf", "v2").wait(60) == 0
    span = time.monotonic() - started
    killed = 0
    for i in range(KILLS // 2):
        target = ("v1", "v2")[i % 2]
        proc = _spawn(registry_url, "promote", "clf", target)
        code = _kill_after(proc, rng.uniform(0.5 * span, span))
        killed += code is None
        other = ("v2", "v1")[i % 2]  # from wherever the killed one left the pointer
        r = run_cli("promote", "clf", other, registry=registry_url)
        assert r.returncode == 0, r.stderr
        invariants.assert_sound(registry, "clf", leases=False)
    print(f"promote crash loop: {killed} of {KILLS // 2} killed mid-command")
