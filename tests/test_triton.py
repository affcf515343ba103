"""A real Triton (the tritonserver binary nvidia-pytriton's wheel carries, CPU only, in
`.tools/triton` that `make test` builds) in explicit model-control mode, reading the agent's
--tfserving-dir as its model repository, with Python-backend models on 127.0.0.1. The agent
with `--reload triton=...` follows a promote and a rollback to a version already on disk
(a new version number, not a file time Triton must notice) under steady traffic with no failed
request, and a version whose model fails to load is refused while the old one serves."""

from __future__ import annotations

import os
import subprocess
import sys
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
TRITON = ROOT / ".tools/triton/lib/python3.11/site-packages/pytriton/tritonserver"
SITE = ROOT / ".tools/triton/lib/python3.11/site-packages"  # numpy, for the Python backend
CONFIG = """name: "clf"
backend: "python"
max_batch_size: 0
input [ { name: "x", data_type: TYPE_FP32, dims: [ -1 ] } ]
output [ { name: "y", data_type: TYPE_FP32, dims: [ -1 ] } ]
instance_group [ { kind: KIND_CPU, count: 1 } ]
"""
MODEL = """import sys
sys.path.append({site!r})
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        if {broken}:
            raise RuntimeError("weights do not match the graph")

    def execute(self, requests):
        y = np.array([{answer}], dtype=np.float32)
        return [pb_utils.InferenceResponse([pb_utils.Tensor("y", y)]) for _ in requests]
"""
ANSWERS = {1.0: "v1", 2.0: "v2"}


def _version(tmp_path: Path, name: str, answer: float, broken: bool = False) -> dict[str, Path]:
    folder = tmp_path / "build" / name
    folder.mkdir(parents=True)
    (folder / "config.pbtxt").write_text(CONFIG)
    (folder / "model.py").write_text(MODEL.format(site=str(SITE), answer=answer, broken=broken))
    return {p.name: p for p in folder.iterdir()}


@pytest.fixture
def triton(tmp_path: Path) -> Iterator[Callable[[Path], str]]:
    assert (TRITON / "bin/tritonserver").exists(), "Triton is missing: `make install` builds it"
    procs: list[subprocess.Popen[bytes]] = []
    log = tmp_path / "triton.log"

    def start(repository: Path) -> str:
        http = free_port()
        args = [
            str(TRITON / "bin/tritonserver"),
            f"--model-repository={repository}",
            "--model-control-mode=explicit",
            "--load-model=clf",
            f"--backend-directory={TRITON / 'backends'}",
            "--http-address=127.0.0.1",
            f"--http-port={http}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={free_port()}",
            "--allow-metrics=false",
            "--allow-gpu-metrics=false",
        ]
        env = dict(os.environ, LD_LIBRARY_PATH=str(TRITON.parents[1] / "nvidia_pytriton.libs"))
        with open(log, "wb") as out:
            procs.append(subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env))
        url = f"http://127.0.0.1:{http}"
        wait_until(lambda: call(f"{url}/v2/models/clf/ready")[0] == 200, timeout=60, interval=0.3)
        return url

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    print(log.read_text()[-3000:], file=sys.stderr)


def test_triton_follows_promote_and_rollback_by_version_number_with_no_failed_request(
    tmp_path: Path, triton: Callable[[Path], str]
) -> None:
    reg = Registry(open_store(str(tmp_path / "registry")))
    for name, answer, broken in (("v1", 1.0, False), ("v2", 2.0, False), ("v3", 3.0, True)):
        files = _version(tmp_path, name, answer, broken)
        publish_request(reg, PublishRequest(model="clf", files=files, version=name))
    promote(reg, "v1")
    dest, repo = tmp_path / "dest", tmp_path / "triton"
    first = AgentProc(reg.store.url, "clf", dest, "--once", "--tfserving-dir", str(repo))
    assert first.proc.wait(60) == 0  # the init container: Triton starts on version 1
    assert os.readlink(repo / "clf" / "1") == os.path.relpath(
        dest / "clf/versions/v1", repo / "clf"
    )
    url = triton(repo)
    agent = AgentProc(
        reg.store.url,
        "clf",
        dest,
        *FAST,
        "--tfserving-dir",
        str(repo),
        "--reload",
        f"triton={url}",
    ).wait_started()
    body = {"inputs": [{"name": "x", "shape": [4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    traffic = Traffic(
        lambda: call(f"{url}/v2/models/clf/infer", body),
        lambda answer: ANSWERS.get(answer["outputs"][0]["data"][0], "?"),
    ).start()
    try:
        wait_until(lambda: agent.status()["served_version"] == "v1", timeout=30)
        promote(reg, "v2")
        wait_until(lambda: traffic.last() == "v2", timeout=60)
        promote(reg, "v1", "rollback")  # on disk already: Triton sees version 3, not a time
        wait_until(lambda: traffic.last() == "v1", timeout=60)
        assert agent.status()["served_version"] == "v1"
        assert os.readlink(repo / "clf" / "3").endswith("versions/v1")

        promote(reg, "v3")  # its model raises at initialize
        wait_until(lambda: agent.status()["refused_version"] == "v3", timeout=60)
        assert "triton refused the load" in agent.status()["refusal"]
        assert traffic.only_since(len(traffic.served)) == {"v1"}  # Triton kept what it had
    finally:
        traffic.stop()
        assert agent.stop() == 0
    assert traffic.failures == [], traffic.failures[:5]
    assert len(traffic.served) > 100
    assert {"v1", "v2"} <= set(traffic.served)
