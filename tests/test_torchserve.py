"""A real TorchServe 0.12 (Java frontend, Python workers, in `.tools/torchserve` that `make test`
builds) on 127.0.0.1, with archives made by the real torch-model-archiver. The agent with
`--reload torchserve=...` registers each version's archive, makes it the default and
unregisters the old one under steady traffic with no failed request; an archive whose handler
cannot start is refused while the old version serves."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelswap.publish import PublishRequest
from modelswap.publish import publish as publish_request
from modelswap.registry import Registry
from modelswap.store import open_store
from modelswap.testing.agents import AgentProc
from tests.agent_helpers import FAST, promote
from tests.conftest import wait_until
from tests.server_traffic import Traffic, call, free_port

BIN = Path(__file__).resolve().parents[1] / ".tools" / "torchserve" / "bin"
HANDLER = """{broken}

def handle(data, context):
    if data is None:
        return None
    return [{answer!r} for _ in data]
"""


def _archive(tmp_path: Path, name: str, version: str, broken: bool = False) -> dict[str, Path]:
    build = tmp_path / "build" / name
    build.mkdir(parents=True)
    handler = build / "handler.py"
    crash = 'raise RuntimeError("weights do not match the graph")' if broken else ""
    handler.write_text(HANDLER.format(broken=crash, answer=name))
    out = build / "out"
    out.mkdir()
    subprocess.run(
        [
            str(BIN / "torch-model-archiver"),
            "--model-name",
            "clf",
            "--version",
            version,
            "--handler",
            str(handler),
            "--export-path",
            str(out),
        ],
        check=True,
        timeout=60,
    )
    return {"clf.mar": out / "clf.mar"}


@pytest.fixture
def torchserve(tmp_path: Path) -> Iterator[tuple[str, str]]:
    assert (BIN / "torchserve").exists(), "TorchServe is missing: `make install` builds it"
    http, management, metrics = free_port(), free_port(), free_port()
    home = tmp_path / "torchserve"
    (home / "store").mkdir(parents=True)
    tmp = home / "tmp"
    tmp.mkdir()
    (home / "config.properties").write_text(
        f"inference_address=http://127.0.0.1:{http}\n"
        f"management_address=http://127.0.0.1:{management}\n"
        f"metrics_address=http://127.0.0.1:{metrics}\n"
        "default_workers_per_model=1\nallowed_urls=file://.*\n"
        "disable_system_metrics=true\ninstall_py_dep_per_model=false\n"
    )
    log = open(home / "torchserve.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            str(BIN / "torchserve"),
            "--start",
            "--foreground",
            "--ncs",
            "--model-store",
            str(home / "store"),
            "--ts-config",
            str(home / "config.properties"),
            "--disable-token-auth",
            "--enable-model-api",
        ],
        cwd=home,
        stdout=log,
        stderr=subprocess.STDOUT,
        # TMPDIR of its own: TorchServe keeps its pid file there, and refuses to start while
        # the pid in another test's file is alive
        env=dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", TMPDIR=str(tmp)),
        start_new_session=True,  # the Java frontend and its workers go with it
    )
    base = f"http://127.0.0.1:{http}"
    try:
        try:
            wait_until(lambda: call(f"{base}/ping")[0] == 200, timeout=90, interval=0.5)
        except AssertionError:
            log.flush()
            raise AssertionError((home / "torchserve.log").read_text()[-3000:]) from None
        yield base, f"http://127.0.0.1:{management}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.mark.timeout(300)  # a TorchServe worker takes seconds to start, and each version has one
def test_torchserve_follows_promotes_by_registering_and_keeps_serving_past_a_broken_archive(
    tmp_path: Path, torchserve: tuple[str, str]
) -> None:
    inference, management = torchserve
    reg = Registry(open_store(str(tmp_path / "registry")))
    for name, version, broken in (("v1", "1.0", False), ("v2", "2.0", False), ("v3", "3.0", True)):
        files = _archive(tmp_path, name, version, broken)
        publish_request(reg, PublishRequest(model="clf", files=files, version=name))
    promote(reg, "v1")
    agent = AgentProc(
        reg.store.url, "clf", tmp_path / "dest", *FAST, "--reload", f"torchserve={management}"
    ).wait_started()
    traffic = Traffic(
        lambda: call(f"{inference}/predictions/clf", method="POST", raw=b"x"), str
    ).start()
    try:
        wait_until(lambda: traffic.last() == "v1", timeout=120)
        wait_until(lambda: agent.status()["served_version"] == "v1", timeout=60)
        promote(reg, "v2")
        wait_until(lambda: traffic.last() == "v2", timeout=120)
        wait_until(lambda: call(f"{management}/models/clf/1.0")[0] == 404, timeout=30)

        promote(reg, "v3")  # its handler raises as the worker imports it
        wait_until(lambda: agent.status()["refused_version"] == "v3", timeout=120)
        assert "torchserve refused the registration" in agent.status()["refusal"]
        assert traffic.only_since(len(traffic.served)) == {"v2"}
        code, models = call(f"{management}/models/clf")
        assert code == 200
        assert [m["modelVersion"] for m in models] == ["2.0"]
    finally:
        traffic.stop()
        assert agent.stop() == 0
    assert traffic.failures == [], traffic.failures[:5]
    assert len(traffic.served) > 50
