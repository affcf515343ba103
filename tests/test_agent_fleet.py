"""The sidecar agent in a fleet and through outages: twenty agents, a full disk, a store
that goes away, swap hooks for servers without the loader."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from modelswap.registry import Registry
from modelswap.store import open_store
from modelswap.testing import seaweed
from modelswap.testing.agents import AgentProc
from tests.agent_helpers import FAST, MakeFile, linked, promote, publish
from tests.conftest import BUCKET, mounted_tmpfs, run_cli, wait_until


def test_twenty_agents_converge_and_status_shows_it(
    s3_server: object, model_file: MakeFile, tmp_path: Path
) -> None:
    """20 agent processes on one pointer all link v2 after a promote; status says converged."""
    url = f"s3://{BUCKET}/fleet-{tmp_path.name}"
    reg = Registry(open_store(url))
    publish(reg, model_file, b"one", "v1")
    publish(reg, model_file, b"two", "v2")
    promote(reg, "v1")
    agents = [
        AgentProc(
            url,
            "clf",
            tmp_path / f"d{i}",
            "--interval",
            "1",
            "--report",
            "--report-interval",
            "2",
            "--instance-id",
            f"pod-{i:02d}",
        )
        for i in range(20)
    ]
    try:
        for a in agents:
            a.wait_started(timeout=60)
        wait_until(
            lambda: all(linked(tmp_path / f"d{i}") == "versions/v1" for i in range(20)), timeout=30
        )
        promote(reg, "v2")
        wait_until(
            lambda: all(linked(tmp_path / f"d{i}") == "versions/v2" for i in range(20)), timeout=30
        )

        def converged() -> bool:
            view = json.loads(run_cli("status", "clf", "--json", registry=url).stdout)
            return view["converged"] and len(view["instances"]) == 20

        wait_until(converged, timeout=20, interval=0.5)
        table = run_cli("status", "clf", registry=url).stdout
        assert table.splitlines()[0] == "clf/CURRENT -> v2: converged, 20 instance(s)"
    finally:
        for a in agents:
            a.stop()


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MB tmpfs, so the disk really fills."""
    with mounted_tmpfs(tmp_path / "small", "size=2m") as mount:
        yield mount


def test_full_disk_keeps_the_link_and_recovers_when_space_returns(
    registry_url: str, registry: Registry, model_file: MakeFile, small_volume: Path
) -> None:
    """v2 does not fit the volume: ENOSPC is reported with a hint, v1 keeps its link and
    nothing half-written is left; once the volume grows the agent links v2 by itself."""
    publish(registry, model_file, b"one" * 10_000, "v1")
    publish(registry, model_file, os.urandom(3 << 20), "v2")
    promote(registry, "v1")
    dest = small_volume / "dest"
    agent = AgentProc(registry_url, "clf", dest, *FAST).wait_started()
    try:
        wait_until(lambda: linked(dest) == "versions/v1")
        promote(registry, "v2")
        wait_until(lambda: "no space left" in (agent.status()["last_error"] or ""), timeout=10)
        assert linked(dest) == "versions/v1"
        assert agent.get("/readyz")[0] == 200
        assert sorted(p.name for p in (dest / "clf/versions").iterdir()) == ["v1"]
        wait_until(lambda: list((dest / "clf/.staging").iterdir()) == [])
        failure = next(e for e in agent.events if e.get("event") == "sync.failed")
        assert "lower --keep" in failure["hint"]
        subprocess.run(["mount", "-o", "remount,size=16m", str(small_volume)], check=True)
        wait_until(lambda: linked(dest) == "versions/v2", timeout=10)
        wait_until(lambda: agent.status()["last_error"] is None)
        assert agent.proc.poll() is None
    finally:
        agent.stop()


def test_store_outage_keeps_the_link_and_recovers_without_restart(
    tmp_path: Path, model_file: MakeFile
) -> None:
    """SeaweedFS stopped for several polls: link kept, error reported; back up: converges."""
    server = seaweed.start(tmp_path / "weed")
    try:
        with seaweed.aws_env(server):
            boto3.client("s3").create_bucket(Bucket="outage")
            url = "s3://outage/models"
            reg = Registry(open_store(url))
            publish(reg, model_file, b"one", "v1")
            publish(reg, model_file, b"two", "v2")
            promote(reg, "v1")
            dest = tmp_path / "dest"
            agent = AgentProc(url, "clf", dest, *FAST).wait_started()
            try:
                wait_until(lambda: linked(dest) == "versions/v1")
                server.stop()
                wait_until(lambda: agent.status()["consecutive_failures"] >= 3, timeout=30)
                status = agent.status()
                assert status["active_version"] == "v1"
                assert "cannot reach" in status["last_error"]
                assert agent.get("/readyz")[0] == 200
                assert agent.get("/healthz")[0] == 200
                assert linked(dest) == "versions/v1"
                server = seaweed.start(tmp_path / "weed", ports=server.ports)
                wait_until(lambda: agent.status()["last_error"] is None, timeout=30)
                promote(Registry(open_store(url)), "v2")
                wait_until(lambda: linked(dest) == "versions/v2", timeout=10)
                assert any(e.get("event") == "sync.recovered" for e in agent.events)
                assert agent.proc.poll() is None
            finally:
                agent.stop()
    finally:
        server.stop()  # the restarted server too: `server` is rebound above


def test_swap_hooks_tell_a_server_without_the_loader(
    registry_url: str, two_versions: Registry, tmp_path: Path
) -> None:
    """After each swap the agent runs --on-swap-command and POSTs to --on-swap-url."""
    import http.server  # noqa: PLC0415

    posts: list[dict[str, object]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    marker = tmp_path / "swaps.txt"
    dest = tmp_path / "dest"
    command = f"sh -c 'echo $MODELSWAP_VERSION $MODELSWAP_PREVIOUS_VERSION >> {marker}'"
    agent = AgentProc(
        registry_url,
        "clf",
        dest,
        *FAST,
        "--on-swap-command",
        command,
        "--on-swap-url",
        f"http://127.0.0.1:{server.server_address[1]}/reload",
    )
    try:
        agent.wait_started()
        promote(two_versions, "v2")
        wait_until(lambda: len(posts) == 2, timeout=10)
        assert marker.read_text().splitlines() == ["v1", "v2 v1"]
        assert [(p["version"], p["previous_version"]) for p in posts] == [
            ("v1", None),
            ("v2", "v1"),
        ]
        assert str(posts[1]["path"]).endswith("clf/current")
        assert agent.metric("hook_failures_total") == 0
    finally:
        agent.stop()
        server.shutdown()
