"""Fixtures: a real SeaweedFS on loopback for the session, and a fresh registry per test on
either backend, so every registry test runs against the local folder and S3 alike."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest

from modelswap.registry import Registry
from modelswap.store import Store, open_store
from modelswap.testing import emulators, seaweed
from tests.agent_helpers import promote, publish

BUCKET = "modelswap-tests"
SERVER_LOGS: list[Path] = []  # read by pytest_terminal_summary when tests fail


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """After failures, SeaweedFS's own error lines: an InternalError from S3 says nothing of
    why, and CI keeps only this output (once it was "no free volumes left")."""
    if not terminalreporter.stats.get("failed") and not terminalreporter.stats.get("error"):
        return
    for log in SERVER_LOGS:
        if log.exists():
            errors = [ln for ln in log.read_text(errors="replace").splitlines() if ln[:1] == "E"]
            if errors:
                terminalreporter.write_sep("-", f"last SeaweedFS errors in {log}")
                terminalreporter.write_line("\n".join(errors[-15:]))


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[seaweed.Seaweed]:
    server = seaweed.start(tmp_path_factory.mktemp("seaweed"))
    SERVER_LOGS.append(server.log_path)
    with seaweed.aws_env(server):  # boto3 reads the standard AWS variables, as users' do
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield server
        server.stop()


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[emulators.Emulator]:
    """fake-gcs-server on loopback; STORAGE_EMULATOR_HOST set for this process and children."""
    emu = emulators.start_fake_gcs(tmp_path_factory.mktemp("fake-gcs"))
    with emulators.environment(emu):
        yield emu
    emu.stop()


@pytest.fixture(scope="session")
def azure_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[emulators.Emulator]:
    """Azurite on loopback; AZURE_STORAGE_CONNECTION_STRING set for this process and children."""
    emu = emulators.start_azurite(tmp_path_factory.mktemp("azurite"))
    with emulators.environment(emu):
        yield emu
    emu.stop()


def backend_url(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> str:
    """A fresh registry root on one of the four backends (its server started on first use)."""
    root = f"t-{uuid.uuid4().hex[:12]}"
    if backend == "local":
        return str(tmp_path / "registry")
    if backend == "s3":
        request.getfixturevalue("s3_server")
        return f"s3://{BUCKET}/{root}"
    if backend == "gcs":
        return f"gs://{request.getfixturevalue('gcs_server').bucket}/{root}"
    return f"az://{request.getfixturevalue('azure_server').container}/{root}"


@pytest.fixture(params=["gcs", "azure"])
def cloud_registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """gs:// and az:// registries, for the tests that prove the guarantees there too."""
    return backend_url(request, request.param, tmp_path)


@pytest.fixture(params=["local", "s3"])
def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "registry")
    request.getfixturevalue("s3_server")
    return f"s3://{BUCKET}/t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def store(registry_url: str) -> Store:
    return open_store(registry_url)


@pytest.fixture
def registry(store: Store) -> Registry:
    return Registry(store)


@pytest.fixture
def model_file(tmp_path: Path) -> Callable[[str, bytes], Path]:
    def make(name: str, data: bytes) -> Path:
        path = tmp_path / "files" / uuid.uuid4().hex[:8] / name
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
        return path

    return make


def run_cli(
    *args: str, registry: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real `modelswap` command in a child process."""
    full_env = dict(os.environ, MODELSWAP_REGISTRY=registry, MODELSWAP_ACTOR="tester@test")
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "modelswap", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full_env,
        timeout=60,
        check=False,
    )


@contextlib.contextmanager
def mounted_tmpfs(point: Path, opts: str) -> Iterator[Path]:
    """A real tmpfs at point (root only, as in CI and the image build): a disk that really
    fills up, runs out of inodes or goes read-only. Skips the test where mounting is refused."""
    point.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)


def wait_until(predicate: Callable[[], bool], timeout: float = 10, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


@pytest.fixture
def two_versions(registry: Registry, model_file: Callable[[str, bytes], Path]) -> Registry:
    """clf with v1 and v2 (30 kB each), CURRENT on v1: where most agent tests start."""
    publish(registry, model_file, b"one" * 10_000, "v1")
    publish(registry, model_file, b"two" * 10_000, "v2")
    promote(registry, "v1")
    return registry
