"""A real MLServer (1.7.1 with mlserver-sklearn, in its own environment `.tools/mlserver` that
`make test` builds) serving an sklearn model through the agent's link on 127.0.0.1. The agent
with `--reload mlserver=...` follows a promote and a rollback under steady traffic with no
failed request, and a broken version (valid checksums, a model that cannot load) keeps the old
one serving and is reported as refused."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
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

ROOT = Path(__file__).resolve().parents[1]
ENV = ROOT / ".tools" / "mlserver" / "bin"
# Each version answers one class whatever the input, so a response says which one served it
# (MLServer reports no version: model-settings.json must not set one, see below).
TRAIN = """
import sys, joblib
from sklearn.datasets import load_iris
from sklearn.dummy import DummyClassifier
X, y = load_iris(return_X_y=True)
joblib.dump(DummyClassifier(strategy="constant", constant=int(sys.argv[2])).fit(X, y), sys.argv[1])
"""
ANSWERS = {0: "v1", 2: "v2"}
ROW = [5.1, 3.5, 1.4, 0.2]


def _version(tmp_path: Path, name: str, kind: str) -> dict[str, Path]:
    folder = tmp_path / "build" / name
    folder.mkdir(parents=True)
    if kind == "broken":  # checksummed like any other, but no model at all
        (folder / "model.joblib").write_bytes(b"not a pickle")
    else:
        subprocess.run(
            [str(ENV / "python"), "-c", TRAIN, str(folder / "model.joblib"), kind],
            check=True,
            timeout=120,
        )
    # No parameters.version: with one, MLServer 1.7.1 loads a new version beside the old
    # (registered, not ready, as the default: requests fail while it loads) and never unloads
    # the old; without, a load is its reload, load-before-unload.
    settings = {
        "name": "clf",
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib"},
    }
    (folder / "model-settings.json").write_text(json.dumps(settings))
    return {p.name: p for p in folder.iterdir()}


@pytest.fixture
def mlserver_root(tmp_path: Path) -> Path:
    assert (ENV / "mlserver").exists(), "MLServer is missing: `make install` builds .tools/mlserver"
    root = tmp_path / "mlserver"
    root.mkdir()
    return root


@pytest.fixture
def mlserver(mlserver_root: Path, tmp_path: Path) -> Iterator[tuple[Callable[[], str], Path]]:
    """Started once the agent has linked a version (as the chart's init container does)."""
    http, grpc, metrics = free_port(), free_port(), free_port()
    settings = {
        "host": "127.0.0.1",
        "http_port": http,
        "grpc_port": grpc,
        "metrics_port": metrics,
        "parallel_workers": 1,
    }
    (mlserver_root / "settings.json").write_text(json.dumps(settings))
    log = tmp_path / "mlserver.log"
    state: dict[str, subprocess.Popen[bytes]] = {}

    def start() -> str:
        with open(log, "wb") as out:
            state["proc"] = subprocess.Popen(
                [str(ENV / "mlserver"), "start", str(mlserver_root)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=mlserver_root,
            )
        url = f"http://127.0.0.1:{http}"
        wait_until(lambda: call(f"{url}/v2/models/clf/ready")[0] == 200, timeout=90, interval=0.3)
        return url

    yield start, log
    proc = state.get("proc")
    if proc is not None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_mlserver_follows_promote_and_rollback_and_keeps_serving_past_a_broken_version(
    tmp_path: Path, mlserver_root: Path, mlserver: tuple[Callable[[], str], Path]
) -> None:
    start, log = mlserver
    reg = Registry(open_store(str(tmp_path / "registry")))
    for name, kind in (("v1", "0"), ("v2", "2"), ("v3", "broken")):
        files = _version(tmp_path, name, kind)
        publish_request(reg, PublishRequest(model="clf", files=files, version=name))
    promote(reg, "v1")
    dest = tmp_path / "dest"
    agent = AgentProc(
        reg.store.url, "clf", dest, *FAST, "--report", "--instance-id", "pod-a"
    ).wait_started()
    wait_until(lambda: agent.status()["active_version"] == "v1", timeout=30)
    assert agent.stop() == 0
    # MLServer's root holds only the model's link (its scan would find every cached copy).
    (mlserver_root / "clf").symlink_to(dest / "clf" / "current")
    url = start()
    agent = AgentProc(
        reg.store.url,
        "clf",
        dest,
        *FAST,
        "--report",
        "--instance-id",
        "pod-a",
        "--reload",
        f"mlserver={url}",
    ).wait_started()
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}
    traffic = Traffic(
        lambda: call(f"{url}/v2/models/clf/infer", body),
        lambda answer: ANSWERS.get(answer["outputs"][0]["data"][0], "?"),
    ).start()
    try:
        wait_until(lambda: agent.status()["served_version"] == "v1", timeout=30)
        promote(reg, "v2")
        wait_until(lambda: traffic.last() == "v2", timeout=60)
        assert agent.status()["served_version"] == "v2"
        promote(reg, "v1", "rollback")
        wait_until(lambda: traffic.last() == "v1", timeout=60)

        promote(reg, "v3")  # loads fine as bytes, fails as a model
        wait_until(lambda: agent.status()["refused_version"] == "v3", timeout=60)
        status = agent.status()
        assert status["active_version"] == "v3"  # linked: its checksums are right
        assert status["served_version"] == "v1"
        assert "mlserver refused the load" in status["refusal"]
        assert traffic.only_since(len(traffic.served)) == {"v1"}  # the old model kept serving
        wait_until(
            lambda: (
                json.loads(reg.store.read("clf/fleet/pod-a.json").data).get("refused_version")
                == "v3"
            )
        )
    finally:
        traffic.stop()
        assert agent.stop() == 0
    assert traffic.failures == [], (traffic.failures[:5], log.read_text()[-2000:])
    assert len(traffic.served) > 20  # traffic flowed throughout; how much depends on speed
    assert {"v1", "v2"} <= set(traffic.served)
