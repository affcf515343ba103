"""Nothing leaks and nothing can be poked: planted secrets used for real never show, and a
flood of POST /refresh costs a bounded number of store requests while probes keep answering."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from modelswap.agent.server import refresh_allowed
from modelswap.pointers import Move, move_pointer
from modelswap.publish import PublishRequest, publish
from modelswap.registry import Registry
from modelswap.store import open_store
from modelswap.testing import seaweed
from modelswap.testing.agents import AgentProc
from modelswap.testing.faultproxy import Fault, FaultProxy
from tests.conftest import BUCKET, run_cli, wait_until

PLANTED = {
    "endpoint userinfo": "EndpointSecret-1f3c",
    "hook userinfo": "HookSecret-9a7e",
    "hook query signature": "SigSecret-44d1",
    "registry query signature": "QuerySecret-0b2a",
    "argv userinfo": "ArgvSecret-77c3",
    "AWS secret key": seaweed.SECRET_KEY,
}


class _Failing(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.send_response(500)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        return


@pytest.fixture
def hook_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


@pytest.fixture
def s3_model(s3_server: Any, tmp_path: Path) -> tuple[str, Registry]:
    url = f"s3://{BUCKET}/s-{uuid.uuid4().hex[:12]}"
    reg = Registry(open_store(url))
    for v in ("v1", "v2"):
        path = tmp_path / v / "f.bin"
        path.parent.mkdir()
        path.write_bytes(v.encode() * 100)
        publish(reg, PublishRequest(model="clf", files={"f.bin": path}, version=v))
    move_pointer(reg, Move("clf", "CURRENT", "v1", "promote", "t"))
    return url, reg


def _leaks(text: str) -> list[str]:
    return [what for what, value in PLANTED.items() if value in text]


def test_planted_secrets_never_reach_logs_status_reports_hooks_or_errors(
    s3_server: Any, s3_model: tuple[str, Registry], hook_server: int, tmp_path: Path
) -> None:
    """Secrets in the endpoint, the hook URL, a registry URL, argv and the AWS key, used for
    real, appear in no log line, /status, fleet report, hook environment or error output."""
    url, reg = s3_model
    hook_env = tmp_path / "hook-env.txt"
    with FaultProxy(s3_server.endpoint) as proxy:
        endpoint = proxy.endpoint.replace(
            "http://", f"http://admin:{PLANTED['endpoint userinfo']}@"
        )
        hook_url = (
            f"http://hook:{PLANTED['hook userinfo']}@127.0.0.1:{hook_server}/load"
            f"?X-Amz-Signature={PLANTED['hook query signature']}"
        )
        command = f"sh -c 'env > {hook_env}; env >&2; exit 1'"
        agent = AgentProc(
            url,
            "clf",
            tmp_path / "dest",
            "--interval",
            "0.3",
            "--max-backoff",
            "1",
            "--store-timeout",
            "1",
            "--report",
            "--report-interval",
            "0.5",
            "--instance-id",
            "i1",
            "--on-swap-command",
            command,
            env={"AWS_ENDPOINT_URL": endpoint, "MODELSWAP_ON_SWAP_URL": hook_url},
        ).wait_started()
        try:
            wait_until(lambda: agent.status()["active_version"] == "v1", timeout=20)
            move_pointer(reg, Move("clf", "CURRENT", "v2", "promote", "t"))
            wait_until(lambda: agent.metric("hook_failures_total") >= 2, timeout=20)
            # Reads that break carry the endpoint URL into the error, /status and the report.
            proxy.add(Fault("reset_request", method="GET", path=r"/CURRENT", times=0))
            move_pointer(reg, Move("clf", "CURRENT", "v1", "promote", "t"))
            wait_until(lambda: "127.0.0.1" in str(agent.status()["last_error"]), timeout=20)
            status = json.dumps(agent.status())
            wait_until(lambda: _report_has_error(reg), timeout=20)
            report = reg.store.read("clf/fleet/i1.json").data.decode()
        finally:
            agent.stop()
    logs = "\n".join(json.dumps(e) for e in agent.events)
    assert "***@127.0.0.1" in status  # the endpoint is shown, its userinfo is not
    assert "hook.failed" in logs
    bad_registry = run_cli(
        "versions",
        "clf",
        registry=f"s3://{BUCKET}/x?X-Amz-Signature={PLANTED['registry query signature']}",
    )
    argv = run_cli(
        "agent",
        "clf",
        "--dest",
        str(tmp_path / "d2"),
        "--on-swap-url",
        f"http://u:{PLANTED['argv userinfo']}@127.0.0.1:9/load",
        registry=url,
    )
    assert (bad_registry.returncode, argv.returncode) == (1, 2)
    assert "--on-swap-url-file" in argv.stderr
    names = {line.split("=", 1)[0] for line in hook_env.read_text().splitlines() if "=" in line}
    hook_vars = {"MODELSWAP_MODEL", "MODELSWAP_VERSION", "MODELSWAP_PREVIOUS_VERSION"}
    assert hook_vars | {"PATH", "MODELSWAP_PATH"} <= names
    assert names - hook_vars - {"PATH", "MODELSWAP_PATH"} <= {"PWD", "SHLVL", "_"}  # sh's own
    where = {
        "agent log": logs,
        "/status": status,
        "fleet report": report,
        "hook environment": hook_env.read_text(),
        "CLI errors": bad_registry.stderr + argv.stderr,
    }
    assert {name: _leaks(text) for name, text in where.items()} == {name: [] for name in where}


def _report_has_error(reg: Registry) -> bool:
    try:
        body = json.loads(reg.store.read("clf/fleet/i1.json").data)
    except Exception:  # noqa: BLE001 - not written yet
        return False
    return "127.0.0.1" in str(body.get("last_error"))


def test_refresh_flood_costs_bounded_store_reads_while_probes_answer(
    s3_server: Any, s3_model: tuple[str, Registry], tmp_path: Path
) -> None:
    """Thousands of POST /refresh in 4 s: at most one pointer read per second reaches the
    store (plus the start-up pass), every probe answers in time, and the surplus is counted."""
    url, _ = s3_model
    with FaultProxy(s3_server.endpoint) as proxy:
        agent = AgentProc(
            url,
            "clf",
            tmp_path / "dest",
            "--interval",
            "60",
            env={"AWS_ENDPOINT_URL": proxy.endpoint},
        ).wait_started()
        try:
            wait_until(lambda: agent.status()["active_version"] == "v1", timeout=20)
            before = proxy.count("GET", r"/CURRENT")
            probes: list[float] = []
            stop = threading.Event()

            def probe() -> None:
                while not stop.is_set():
                    started = time.monotonic()
                    assert agent.get("/healthz")[0] == 200
                    probes.append(time.monotonic() - started)
                    time.sleep(0.05)

            prober = threading.Thread(target=probe, daemon=True)
            prober.start()
            sent, seconds = asyncio.run(_flood(f"http://127.0.0.1:{agent.port}/refresh", 4.0))
            stop.set()
            prober.join(5)
            reads = proxy.count("GET", r"/CURRENT") - before
            scheduled = agent.metric("refresh_scheduled_total")
            coalesced = agent.metric("refresh_coalesced_total")
        finally:
            assert agent.stop() == 0
    print(
        f"FLOOD {sent} POST /refresh in {seconds:.1f} s -> {reads} pointer GETs; "
        f"{scheduled:.0f} scheduled, {coalesced:.0f} coalesced; probes max "
        f"{max(probes) * 1000:.0f} ms over {len(probes)}"
    )
    assert sent > 1000
    assert reads <= seconds / 1.0 + 2
    assert scheduled + coalesced == sent
    assert len(probes) > 20
    assert max(probes) < 1.0


async def _flood(url: str, seconds: float) -> tuple[int, float]:
    sent = 0
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            nonlocal sent
            while time.monotonic() - started < seconds:
                async with session.post(url) as r:
                    assert r.status == 202
                    sent += 1

        await asyncio.gather(*(worker() for _ in range(16)))
    return sent, time.monotonic() - started


def test_refresh_with_a_token_refuses_callers_without_it(
    registry_url: str, tmp_path: Path, model_file: Any, registry: Registry
) -> None:
    """With MODELSWAP_REFRESH_TOKEN set, POST /refresh needs the bearer token, loopback too."""
    publish(registry, PublishRequest(model="clf", files={"m": model_file("m", b"1")}, version="v1"))
    move_pointer(registry, Move("clf", "CURRENT", "v1", "promote", "t"))
    agent = AgentProc(
        registry_url, "clf", tmp_path / "dest", env={"MODELSWAP_REFRESH_TOKEN": "tok-3f9a7c"}
    ).wait_started()
    try:
        url = f"http://127.0.0.1:{agent.port}/refresh"
        codes = []
        for header in (
            {},
            {"Authorization": "Bearer wrong-token"},
            {"Authorization": "Bearer tok-3f9a7c"},
        ):
            req = urllib.request.Request(url, method="POST", headers=header)
            try:
                with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310 - loopback
                    codes.append(r.status)
            except urllib.error.HTTPError as e:
                codes.append(e.code)
        assert codes == [401, 401, 202]
        assert agent.metric("refresh_refused_total") == 2
    finally:
        assert agent.stop() == 0


@pytest.mark.parametrize(
    ("remote", "token", "header", "allowed"),
    [
        ("127.0.0.1", None, None, True),
        ("127.8.9.10", None, None, True),
        ("::1", None, None, True),
        ("10.1.2.3", None, None, False),
        ("192.168.0.7", None, None, False),
        (None, None, None, False),
        ("10.1.2.3", "t0k3n-xyz", "Bearer t0k3n-xyz", True),
        ("127.0.0.1", "t0k3n-xyz", None, False),
    ],
)
def test_refresh_policy_is_loopback_only_unless_a_token_is_given(
    remote: str | None, token: str | None, header: str | None, allowed: bool
) -> None:
    """Without a token only loopback peers may refresh; with one, exactly its bearers may."""
    assert refresh_allowed(remote, token, header) is allowed
