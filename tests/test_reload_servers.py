"""`agent --reload triton=` and `--reload torchserve=` with real agent processes, against
stand-ins of the two servers' HTTP APIs (tests/recording_servers.py says why not the real
ones): the exact calls, promote and rollback followed, a refusal reported as a refusal of the
version (in /status and the fleet report) and retried until the server takes it."""

from __future__ import annotations

import io
import json
import os
import socket
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from modelswap.publish import PublishRequest
from modelswap.publish import publish as publish_request
from modelswap.registry import Registry
from modelswap.store import open_store
from modelswap.testing.agents import AgentProc
from tests.agent_helpers import FAST, promote
from tests.conftest import run_cli, wait_until
from tests.recording_servers import recording

MakeFile = Callable[[str, bytes], Path]


def _publish(reg: Registry, make: MakeFile, version: str, **files: bytes) -> None:
    paths = {name: make(name, data) for name, data in files.items()}
    publish_request(reg, PublishRequest(model="clf", files=paths, version=version))


def _mar(version: str) -> bytes:
    """A model archive as torch-model-archiver writes one: a zip with MAR-INF/MANIFEST.json."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        manifest = {"model": {"modelName": "clf", "modelVersion": version, "handler": "h.py"}}
        z.writestr("MAR-INF/MANIFEST.json", json.dumps(manifest))
        z.writestr("model.pt", f"weights {version}")
    return buf.getvalue()


def _report(reg: Registry) -> dict[str, object]:
    try:
        return json.loads(reg.store.read("clf/fleet/pod-a.json").data)  # type: ignore[no-any-return]
    except Exception:  # noqa: BLE001 - not written yet
        return {}


@pytest.fixture
def local(tmp_path: Path) -> Registry:
    return Registry(open_store(str(tmp_path / "registry")))


def test_triton_loads_every_swap_as_a_new_version_and_a_refusal_is_reported(
    local: Registry, model_file: MakeFile, tmp_path: Path
) -> None:
    config = b'name: "clf"\nbackend: "onnxruntime"\n'
    for v in ("v1", "v2"):
        _publish(local, model_file, v, **{"model.onnx": v.encode(), "config.pbtxt": config})
    repo = tmp_path / "triton"
    with recording("triton", repo) as triton:
        promote(local, "v1")
        agent = AgentProc(
            local.store.url,
            "clf",
            tmp_path / "dest",
            *FAST,
            "--report",
            "--instance-id",
            "pod-a",
            "--reload",
            f"triton={triton.url}",
            "--tfserving-dir",
            str(repo),
        ).wait_started()
        try:
            wait_until(lambda: agent.status()["served_version"] == "v1")
            assert triton.calls == [
                ("POST", "/v2/repository/models/clf/load"),
                ("GET", "/v2/models/clf/versions/1/ready"),
            ]
            assert os.readlink(repo / "clf" / "config.pbtxt") == "1/config.pbtxt"
            promote(local, "v2")
            wait_until(lambda: triton.loaded.get("clf") == 2)
            promote(local, "v1", "rollback")  # back to a cached version: a new number, 3
            wait_until(lambda: agent.status()["served_version"] == "v1")
            assert triton.loaded["clf"] == 3
            assert (repo / "clf" / "3" / "model.onnx").read_bytes() == b"v1"

            triton.refuse = "failed to load 'clf' version 4: onnxruntime: invalid model"
            promote(local, "v2")
            wait_until(lambda: agent.status()["refused_version"] == "v2")
            st = agent.status()
            assert "invalid model" in st["refusal"]
            assert st["last_error"] == st["refusal"]
            assert st["served_version"] == "v1"  # the server kept what it had
            wait_until(lambda: _report(local).get("refused_version") == "v2")
            assert agent.metric("reload_failures_total") >= 1

            triton.refuse = None  # retried at the next pass, without another promote
            wait_until(lambda: agent.status()["served_version"] == "v2")
            assert agent.status()["refused_version"] is None
            assert triton.loaded["clf"] >= 4

            triton.loaded.clear()  # Triton restarted on its own and lost what it had loaded
            wait_until(lambda: triton.loaded.get("clf") == 4)  # the agent noticed, loaded again
        finally:
            assert agent.stop() == 0


def test_torchserve_registers_sets_default_then_unregisters_the_old(
    local: Registry, model_file: MakeFile, tmp_path: Path
) -> None:
    for v, mv in (("v1", "1.0"), ("v2", "2.0"), ("v3", "3.0")):
        _publish(local, model_file, v, **{"clf.mar": _mar(mv)})
    with recording("torchserve") as ts:
        promote(local, "v1")
        agent = AgentProc(
            local.store.url, "clf", tmp_path / "dest", *FAST, "--reload", f"torchserve={ts.url}"
        ).wait_started()
        try:
            wait_until(lambda: agent.status()["served_version"] == "v1")
            mar = tmp_path / "dest" / "clf" / ".torchserve" / "clf-v1.mar"  # a name per version
            assert mar.resolve() == (tmp_path / "dest/clf/versions/v1/clf.mar").resolve()
            methods = [(m, p.split("?")[0]) for m, p in ts.calls]
            assert methods == [
                ("GET", "/models/clf/all"),
                ("POST", "/models"),
                ("GET", "/models/clf/1.0"),
                ("PUT", "/models/clf/1.0/set-default"),  # only once a worker is READY
            ]
            assert f"url={mar.as_uri().replace('/', '%2F').replace(':', '%3A')}" in ts.calls[1][1]
            assert "model_name=clf" in ts.calls[1][1]
            assert "synchronous=true" in ts.calls[1][1]
            ts.calls.clear()
            promote(local, "v2")
            wait_until(lambda: agent.status()["served_version"] == "v2")
            # unregistered only after 2.0 was the default and requests on 1.0 had drained
            wait_until(lambda: ("DELETE", "/models/clf/1.0") in ts.calls, timeout=20)
            deleted = ts.calls.index(("DELETE", "/models/clf/1.0"))
            assert ts.calls.index(("PUT", "/models/clf/2.0/set-default")) < deleted
            assert (ts.default["clf"], sorted(ts.versions["clf"])) == ("2.0", ["2.0"])

            ts.refuse = "Worker died."
            promote(local, "v3")
            wait_until(lambda: agent.status()["refused_version"] == "v3")
            assert "Worker died." in agent.status()["refusal"]
            assert ts.default["clf"] == "2.0"
            wait_until(lambda: ("DELETE", "/models/clf/3.0") in ts.calls)  # never the default
            assert ts.default["clf"] == "2.0"
            promote(local, "v2", "rollback")  # moved on from the refused version: cleared
            wait_until(lambda: agent.status()["refused_version"] is None)
            assert agent.status()["served_version"] == "v2"
        finally:
            assert agent.stop() == 0


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--reload", "nginx=http://127.0.0.1:1"], "is not KIND=URL with KIND one of mlserver"),
        (["--reload", "mlserver=ftp://x"], "needs an http:// or https:// URL"),
        (["--reload", "triton=http://127.0.0.1:1"], "--reload triton= needs --tfserving-dir"),
        (["--reload-timeout", "0"], "--reload-timeout must be greater than 0"),
        (["--tfserving-dir", "DEST"], "would put its clf/ on the agent's own"),
        (["--tfserving-dir", "TF", "--keep", "1"], "--keep must be at least 2 with"),
    ],
)
def test_reload_flags_are_checked_before_anything_starts(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    flags = [{"DEST": str(tmp_path / "dest"), "TF": str(tmp_path / "tf")}.get(f, f) for f in flags]
    result = run_cli(
        "agent", "clf", "--dest", str(tmp_path / "dest"), *flags, registry=str(tmp_path / "r")
    )
    assert result.returncode == 2, result
    first, second = result.stderr.splitlines()[:2]
    assert first.startswith("error: ")
    assert message in first
    assert second.startswith("hint: ")
    assert not (tmp_path / "dest").exists()


def test_torchserve_refuses_two_registry_versions_with_one_archive_version(
    local: Registry, model_file: MakeFile, tmp_path: Path
) -> None:
    """TorchServe tells versions apart by the archive's own version: v2 archived again as
    1.0 would be reported as served while TorchServe serves v1's archive."""
    for v in ("v1", "v2"):
        _publish(local, model_file, v, **{"clf.mar": _mar("1.0")})
    with recording("torchserve") as ts:
        promote(local, "v1")
        agent = AgentProc(
            local.store.url, "clf", tmp_path / "dest", *FAST, "--reload", f"torchserve={ts.url}"
        ).wait_started()
        try:
            wait_until(lambda: agent.status()["served_version"] == "v1")
            promote(local, "v2")
            wait_until(lambda: agent.status()["refused_version"] == "v2")
            assert "give each archive its own --version" in agent.status()["refusal"]
            assert agent.status()["served_version"] == "v1"
        finally:
            assert agent.stop() == 0


def test_a_server_that_does_not_speak_http_is_a_refusal_not_a_crash(
    local: Registry, model_file: MakeFile, tmp_path: Path
) -> None:
    """--reload pointed at a port that answers garbage (a gRPC port, say): the agent stays up
    and reports it, every pass."""
    _publish(local, model_file, "v1", **{"model.onnx": b"v1"})
    promote(local, "v1")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def garbage() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                with conn:
                    conn.recv(65536)
                    conn.sendall(b"\x00\x00\x06\x04 not http\r\n\r\n")

        threading.Thread(target=garbage, daemon=True).start()
        agent = AgentProc(
            local.store.url,
            "clf",
            tmp_path / "dest",
            *FAST,
            "--reload",
            f"mlserver=http://127.0.0.1:{port}",
        ).wait_started()
        try:
            wait_until(lambda: agent.status()["refused_version"] == "v1")
            assert "did not answer" in agent.status()["refusal"]
            wait_until(lambda: agent.metric("reload_failures_total") >= 3)  # each pass
            assert agent.proc.poll() is None
        finally:
            assert agent.stop() == 0
