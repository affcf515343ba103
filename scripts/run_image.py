"""Run the built agent image against a SeaweedFS on 127.0.0.1 until it links a version, then
promote v2 and watch the container swap. Called by scripts/build-image.sh."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import boto3

from modelswap.pointers import Move, move_pointer
from modelswap.publish import PublishRequest
from modelswap.publish import publish as publish_request
from modelswap.registry import Registry
from modelswap.store import open_store
from modelswap.testing import seaweed


def main() -> int:
    runtime, image = os.environ["RUNTIME"], os.environ["IMAGE"]
    work = Path(tempfile.mkdtemp(prefix="modelswap-image-"))
    server = seaweed.start(work / "weed")
    os.environ.update(server.env())
    container = None
    try:
        boto3.client("s3").create_bucket(Bucket="image-test")
        reg = Registry(open_store("s3://image-test/models"))
        for v in ("v1", "v2"):
            f = work / v / "model.onnx"
            f.parent.mkdir()
            f.write_bytes(os.urandom(1 << 20))
            publish_request(reg, PublishRequest(model="clf", files={"model.onnx": f}, version=v))
        move_pointer(reg, Move("clf", "CURRENT", "v1", "promote", "image-test"))
        dest = work / "volume"
        dest.mkdir()
        os.chown(dest, 10001, 10001)
        port = 19101
        args = [
            "podman",
            "--runtime",
            runtime,
            "run",
            "--rm",
            "-d",
            "--network",
            "host",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            "--read-only",
            "-v",
            f"{dest}:/models",
            "-e",
            f"AWS_ENDPOINT_URL={server.endpoint}",
            "-e",
            f"AWS_ACCESS_KEY_ID={seaweed.ACCESS_KEY}",
            "-e",
            f"AWS_SECRET_ACCESS_KEY={seaweed.SECRET_KEY}",
            "-e",
            "MODELSWAP_REGISTRY=s3://image-test/models",
            image,
            "agent",
            "clf",
            "--interval",
            "1",
            "--port",
            str(port),
        ]
        container = subprocess.run(args, capture_output=True, text=True, check=True).stdout.strip()
        print(f"container {container[:12]} started (read-only root, uid 10001)")
        for target in ("v1", "v2"):
            if target == "v2":
                move_pointer(reg, Move("clf", "CURRENT", "v2", "promote", "image-test"))
                print("promoted v2")
            deadline = time.monotonic() + 60
            while os.path.realpath(dest / "clf" / "current") != str(dest / "clf/versions" / target):
                if time.monotonic() > deadline:
                    raise SystemExit(f"the container did not link {target}")
                time.sleep(0.2)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as r:
                status = json.loads(r.read())
            print(
                f"linked {target}: current -> {os.readlink(dest / 'clf' / 'current')}; /status "
                f"active={status['active_version']} desired={status['desired_version']} "
                f"last_error={status['last_error']}"
            )
        logs = subprocess.run(
            ["podman", "logs", container], capture_output=True, text=True, check=False
        )
        print("agent log:")
        for line in (logs.stdout + logs.stderr).splitlines()[:8]:
            print(f"  {line}")
        return 0
    finally:
        if container:
            subprocess.run(
                ["podman", "stop", "-t", "2", container], capture_output=True, check=False
            )
        server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
