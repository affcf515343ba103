"""Deadlines: a store that stalls, trickles or never answers costs seconds, never a hang.

Made for real with modelswap/testing/faultproxy.py between the command (or agent) and SeaweedFS.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelswap import download
from modelswap.download import FetchStats, fetch_version
from modelswap.errors import StoreUnavailable
from modelswap.pointers import Move, move_pointer
from modelswap.publish import PublishRequest
from modelswap.publish import publish as publish_request
from modelswap.registry import Registry
from modelswap.store import StoreOptions, open_store
from modelswap.testing.agents import AgentProc
from modelswap.testing.faultproxy import Fault, FaultProxy
from tests.conftest import BUCKET, run_cli, wait_until


@pytest.fixture
def proxy(s3_server: Any) -> Iterator[FaultProxy]:
    with FaultProxy(s3_server.endpoint) as p:
        yield p


@pytest.fixture
def s3_registry() -> tuple[str, Registry]:
    url = f"s3://{BUCKET}/d-{uuid.uuid4().hex[:12]}"
    return url, Registry(open_store(url))


def _publish(reg: Registry, tmp_path: Path, version: str, data: bytes) -> None:
    path = tmp_path / uuid.uuid4().hex[:8] / "f.bin"
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    publish_request(reg, PublishRequest(model="clf", files={"f.bin": path}, version=version))


def test_cli_against_an_endpoint_that_never_answers_fails_within_seconds(
    proxy: FaultProxy, s3_registry: tuple[str, Registry]
) -> None:
    """Every request accepted and never answered: `versions` fails in seconds with a hint."""
    url, _ = s3_registry
    proxy.add(Fault("stall", times=0))
    started = time.monotonic()
    r = run_cli("versions", "clf", registry=url, env={"AWS_ENDPOINT_URL": proxy.endpoint})
    elapsed = time.monotonic() - started
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["error", "hint"], r.stderr
    assert elapsed < 15, f"took {elapsed:.1f} s"


def test_trickling_download_is_abandoned_and_the_agent_keeps_answering(
    proxy: FaultProxy, s3_registry: tuple[str, Registry], tmp_path: Path
) -> None:
    """A store trickling 2 KB/s: the pass is abandoned, probes and /refresh answer, and the
    agent follows the pointer once the store is healthy again."""
    url, reg = s3_registry
    _publish(reg, tmp_path, "v1", b"one" * 1000)
    _publish(reg, tmp_path, "v2", b"two" * 300_000)
    move_pointer(reg, Move("clf", "CURRENT", "v1", "promote", "t"))
    agent = AgentProc(
        url,
        "clf",
        tmp_path / "dest",
        "--interval",
        "0.5",
        "--store-timeout",
        "1",
        env={"AWS_ENDPOINT_URL": proxy.endpoint},
    ).wait_started()
    try:
        wait_until(lambda: agent.status()["active_version"] == "v1", timeout=20)
        trickle = proxy.add(Fault("trickle", method="GET", path=r"/v2/f\.bin", rate=2048, times=0))
        move_pointer(reg, Move("clf", "CURRENT", "v2", "promote", "t"))
        wait_until(lambda: "too slow" in str(agent.status()["last_error"]), timeout=20)
        assert agent.get("/healthz")[0] == 200
        assert agent.status()["active_version"] == "v1"
        agent.refresh()  # answered while the store misbehaves
        proxy.clear()
        agent.refresh()
        wait_until(lambda: agent.status()["active_version"] == "v2", timeout=20)
        assert proxy.fired(trickle) >= 1
        assert (tmp_path / "dest" / "clf" / "current" / "f.bin").read_bytes() == b"two" * 300_000
    finally:
        assert agent.stop() == 0


def test_sigterm_during_a_stalled_download_exits_within_a_second(
    proxy: FaultProxy, s3_registry: tuple[str, Registry], tmp_path: Path
) -> None:
    """A ranged download whose parts stall: SIGTERM still ends the agent within a second."""
    url, reg = s3_registry
    _publish(reg, tmp_path, "v1", b"one")
    _publish(reg, tmp_path, "v2", bytes(40 << 20))  # large: parallel ranged parts
    move_pointer(reg, Move("clf", "CURRENT", "v1", "promote", "t"))
    agent = AgentProc(
        url, "clf", tmp_path / "dest", "--interval", "0.5", env={"AWS_ENDPOINT_URL": proxy.endpoint}
    ).wait_started()
    wait_until(lambda: agent.status()["active_version"] == "v1", timeout=20)
    stall = proxy.add(Fault("stall_body", method="GET", path=r"/v2/f\.bin", times=0))
    move_pointer(reg, Move("clf", "CURRENT", "v2", "promote", "t"))
    wait_until(lambda: proxy.fired(stall) >= 2, timeout=20)
    started = time.monotonic()
    code = agent.stop(signal.SIGTERM)
    elapsed = time.monotonic() - started
    assert (code, elapsed < 1.0) == (0, True), f"exit {code} after {elapsed:.2f} s"
    assert (tmp_path / "dest" / "clf" / "current" / "f.bin").read_bytes() == b"one"


def test_a_failed_ranged_download_never_writes_into_a_reused_descriptor(
    proxy: FaultProxy,
    s3_registry: tuple[str, Registry],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first part of a 40 MB download fails while the others still trickle in: once
    the fetch has failed, the late parts never write through descriptors the process has
    since opened for something else."""
    url, reg = s3_registry
    data = os.urandom(40 << 20)
    _publish(reg, tmp_path, "v1", data)
    meta = reg.metadata("clf", "v1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    store = open_store(url, StoreOptions(read_timeout_s=5))
    proxy.add(
        Fault(
            "503_before",
            method="GET",
            path=r"/v1/f\.bin",
            header="Range",
            value=r"bytes=0-",
            times=0,
        )
    )
    trickle = proxy.add(
        Fault(
            "trickle",
            method="GET",
            path=r"/v1/f\.bin",
            header="Range",
            value=r"bytes=[1-9]",
            rate=8 << 20,
            times=0,
        )
    )
    staging = tmp_path / "staging"
    staging.mkdir()
    with pytest.raises(StoreUnavailable):
        fetch_version(
            store=store,
            model="clf",
            meta=meta,
            metadata_bytes=meta.to_json(),
            staging=staging,
            cancel=threading.Event(),
            stats=FetchStats(),
        )
    # What the process opens next gets the lowest free descriptors: the ones just closed.
    others = [tmp_path / f"other-{i}" for i in range(16)]
    fds = [os.open(p, os.O_RDWR | os.O_CREAT, 0o644) for p in others]
    try:
        wait_until(lambda: proxy.fired(trickle) >= download.THREADS - 1, timeout=10)
        time.sleep(2.5)  # the trickled parts (16 MB at 8 MB/s) arrive and would be written
        assert [p.stat().st_size for p in others] == [0] * 16
        assert not staging.exists()
    finally:
        for fd in fds:
            os.close(fd)
