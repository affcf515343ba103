"""gs:// and az:// registries for real: fake-gcs-server and Azurite on loopback, real agent
processes, the fault proxy between the command and the emulator, and the errors a user meets."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import modelswap
from modelswap.config import secret_values
from modelswap.testing import emulators
from modelswap.testing.agents import AgentProc
from modelswap.testing.faultproxy import Fault, FaultProxy
from tests.conftest import run_cli, wait_until

FAST = ("--interval", "0.3", "--max-backoff", "1")


def _versions_of(tmp_path: Path, reg: modelswap.Registry, *datas: bytes) -> None:
    for i, data in enumerate(datas, 1):
        f = tmp_path / f"f{i}" / "model.onnx"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data)
        reg.publish("clf", [f])


def test_an_agent_follows_promote_and_rollback(cloud_registry_url: str, tmp_path: Path) -> None:
    """A real agent process on a gs:// or az:// registry links v1, follows a promote to v2
    and a rollback to v1 (from its cache), with each copy verified."""
    reg = modelswap.Registry(cloud_registry_url, actor="tester@test")
    _versions_of(tmp_path, reg, b"one" * 50_000, b"two" * 50_000)
    reg.promote("clf", "v1")
    dest = tmp_path / "dest"
    agent = AgentProc(cloud_registry_url, "clf", dest, *FAST).wait_started()
    try:
        link = dest / "clf" / "current"
        wait_until(lambda: os.path.realpath(link).endswith("/versions/v1"), timeout=20)
        reg.promote("clf", "v2", reason="better")
        wait_until(lambda: os.path.realpath(link).endswith("/versions/v2"), timeout=20)
        assert (link / "model.onnx").read_bytes() == b"two" * 50_000
        reg.rollback("clf", reason="p99")
        wait_until(lambda: os.path.realpath(link).endswith("/versions/v1"), timeout=20)
        wait_until(lambda: agent.status()["last_error"] is None, timeout=10)
        assert agent.status()["active_version"] == "v1"
    finally:
        agent.stop()
    assert [(e.from_version, e.to, e.type) for e in reg.history("clf").events] == [
        (None, "v1", "promote"),
        ("v1", "v2", "promote"),
        ("v2", "v1", "rollback"),
    ]


def test_gate_download_and_verify_work_on_both(cloud_registry_url: str, tmp_path: Path) -> None:
    """The verbs that read every byte (verify, download, the gate's downloads) on gs/az. v1
    is 20 MiB: a resumable upload on GCS, block staging on Azure, and the parallel ranged
    download path (16 MiB and over)."""
    reg = modelswap.Registry(cloud_registry_url, actor="tester@test")
    _versions_of(tmp_path, reg, os.urandom(20 << 20), b"small")
    assert reg.verify("clf") == {"v1": [], "v2": []}
    copy = reg.download("clf", "v1", tmp_path / "copy")
    assert (copy / "model.onnx").read_bytes() == (tmp_path / "f1" / "model.onnx").read_bytes()
    result = reg.gate(
        "clf",
        "v2",
        against="v1",
        eval_set=tmp_path / "f2" / "model.onnx",
        evaluator=lambda model_dir, _eval: {"accuracy": float(len(list(model_dir.iterdir())))},
    )
    assert result.passed  # both folders hold model.onnx and metadata.json


@pytest.fixture(params=["gcs", "azure"])
def proxied(request: pytest.FixtureRequest) -> Iterator[tuple[str, FaultProxy, dict[str, str]]]:
    """(registry URL, a fault proxy in front of the emulator, the variables that route the
    commands through it)."""
    emu: emulators.Emulator = request.getfixturevalue(f"{request.param}_server")
    host = re.match(r"http://[^/]+", emu.endpoint)
    assert host is not None
    with FaultProxy(host.group(0)) as proxy:
        if request.param == "gcs":
            env = {"STORAGE_EMULATOR_HOST": proxy.endpoint}
            url = f"gs://{emu.bucket}/faults-{os.urandom(4).hex()}"
        else:
            conn = emu.env["AZURE_STORAGE_CONNECTION_STRING"]
            env = {"AZURE_STORAGE_CONNECTION_STRING": conn.replace(host.group(0), proxy.endpoint)}
            url = f"az://{emu.container}/faults-{os.urandom(4).hex()}"
        yield url, proxy, env


@pytest.mark.parametrize("action", ["drop_reply", "503_after"])
def test_a_lost_reply_to_a_promote_is_settled_by_reading_back(
    proxied: tuple[str, FaultProxy, dict[str, str]], tmp_path: Path, action: str
) -> None:
    """The pointer write of a promote lands but its reply is lost (or turned into a 503): the
    command reads the pointer back, finds its own write and says so, exit 0, one event."""
    url, proxy, env = proxied
    reg = modelswap.Registry(url, actor="tester@test")
    _versions_of(tmp_path, reg, b"one", b"two")
    reg.promote("clf", "v1")
    if url.startswith("az://"):
        fault = proxy.add(Fault(action, method="PUT", path="/clf/CURRENT"))
    else:  # a GCS upload names its object in the body: the pointer's is the one swap
        fault = proxy.add(Fault(action, method="POST", path=r"ifGenerationMatch=[1-9]"))
    r = run_cli("promote", "clf", "v2", registry=url, env=env)
    assert proxy.fired(fault) == 1
    assert r.returncode == 0, r.stderr
    assert "clf/CURRENT: v1 -> v2" in r.stdout
    events = reg.history("clf").events
    assert [(e.from_version, e.to) for e in events] == [(None, "v1"), ("v1", "v2")]
    assert reg.pointer_version("clf") == "v2"


def test_a_publish_whose_metadata_reply_is_lost_exists_exactly_once(
    proxied: tuple[str, FaultProxy, dict[str, str]], tmp_path: Path
) -> None:
    """metadata.json lands, its reply is dropped: publish reports v1, and v1 verifies."""
    url, proxy, env = proxied
    (tmp_path / "m.bin").write_bytes(b"weights" * 1000)
    if url.startswith("az://"):
        fault = proxy.add(Fault("drop_reply", method="PUT", path="metadata.json"))
    else:  # create-only uploads: the publish lease, the file, then metadata.json
        fault = proxy.add(Fault("drop_reply", method="POST", path=r"ifGenerationMatch=0$", nth=3))
    r = run_cli("publish", "clf", str(tmp_path / "m.bin"), registry=url, env=env)
    assert proxy.fired(fault) == 1
    assert (r.returncode, r.stdout.strip()) == (0, "v1"), r.stderr
    reg = modelswap.Registry(url)
    assert [v.version for v in reg.versions("clf")] == ["v1"]
    assert reg.verify("clf", "v1") == {"v1": []}


def _one_error(r: subprocess.CompletedProcess[str]) -> tuple[str, str]:
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["error", "hint"], lines
    return lines[0], lines[1]


def test_gcs_errors_name_the_problem_within_seconds(gcs_server: emulators.Emulator) -> None:
    """A missing bucket, an unreachable endpoint, no credentials: one error and one hint each.
    (The emulator accepts any credentials, so wrong ones are only checked on Azure.)"""
    started = time.monotonic()
    err, hint = _one_error(run_cli("versions", "clf", registry="gs://no-such-bucket/x"))
    assert "bucket 'no-such-bucket' does not exist" in err
    assert "gcloud storage buckets create" in hint
    env = {"STORAGE_EMULATOR_HOST": "http://127.0.0.1:9"}
    err, hint = _one_error(run_cli("versions", "clf", registry="gs://bkt/x", env=env))
    assert "cannot reach the GCS registry gs://bkt/x at http://127.0.0.1:9" in err
    # No emulator and no credentials; the metadata server is pointed at loopback too.
    env = {
        "STORAGE_EMULATOR_HOST": "",
        "GOOGLE_APPLICATION_CREDENTIALS": "",
        "HOME": "/nonexistent",
    }
    env |= {"GCE_METADATA_HOST": "127.0.0.1:9", "GCE_METADATA_IP": "127.0.0.1:9"}
    err, hint = _one_error(run_cli("versions", "clf", registry="gs://bkt/x", env=env))
    assert "no Google Cloud credentials" in err
    assert "workload identity" in hint
    assert time.monotonic() - started < 30


def test_azure_errors_name_the_problem_within_seconds(azure_server: emulators.Emulator) -> None:
    """A missing container, wrong credentials, an unreachable endpoint, no account at all."""
    conn = azure_server.env["AZURE_STORAGE_CONNECTION_STRING"]
    url = f"az://{azure_server.container}/x"
    started = time.monotonic()
    err, hint = _one_error(run_cli("versions", "clf", registry="az://no-such-container/x"))
    assert "container 'no-such-container' does not exist" in err
    wrong = {"AZURE_STORAGE_CONNECTION_STRING": conn.replace("AccountKey=Eby8", "AccountKey=AAAA")}
    err, hint = _one_error(run_cli("versions", "clf", registry=url, env=wrong))
    assert "Azure refused to list" in err
    assert "Storage Blob Data Contributor" in hint
    port = re.search(r"127\.0\.0\.1:(\d+)", conn)
    assert port is not None
    down = {"AZURE_STORAGE_CONNECTION_STRING": conn.replace(port.group(1), "9")}
    err, _ = _one_error(run_cli("versions", "clf", registry=url, env=down))
    assert "cannot reach the Azure registry" in err
    none = {"AZURE_STORAGE_CONNECTION_STRING": "", "AZURE_STORAGE_ACCOUNT": ""}
    err, hint = _one_error(run_cli("versions", "clf", registry=url, env=none))
    assert "no Azure storage account" in err
    assert "DefaultAzureCredential" in hint
    assert time.monotonic() - started < 30


def test_an_azure_account_key_never_shows(azure_server: emulators.Emulator) -> None:
    """The key inside AZURE_STORAGE_CONNECTION_STRING counts as a secret (masked in every
    log line, status and error, like AWS_SECRET_ACCESS_KEY), and a refused key is not
    printed."""
    conn = azure_server.env["AZURE_STORAGE_CONNECTION_STRING"]
    planted = "UGxhbnRlZEtleS0xZjNj" * 4
    wrong = re.sub(r"AccountKey=[^;]+", f"AccountKey={planted}", conn)
    url = f"az://{azure_server.container}/planted"
    r = run_cli("versions", "clf", registry=url, env={"AZURE_STORAGE_CONNECTION_STRING": wrong})
    assert r.returncode == 1
    assert planted not in r.stdout + r.stderr
    os.environ["MODELSWAP_TEST_CONNECTION_STRING"] = wrong
    try:
        assert planted in secret_values()
    finally:
        del os.environ["MODELSWAP_TEST_CONNECTION_STRING"]
