"""Would a native data path make the agent's download faster? One object on one SeaweedFS,
fetched to disk and hashed by: a raw boto3 GET that neither writes nor hashes, the agent's
own path (modelswap.download, boto3, ranged parts on 2 threads), obstore (Rust, the GIL let go
while it reads) with ranged parts on 2 or 4 threads and with one stream, boto3's CRT client
(awscrt: parts in parallel in C, written to the file by it or handed to Python in order), and
s5cmd followed by sha256. Every variant checks the sha256 before it counts. A probe for issue
#17, not part of `make bench`'s report: the agent uses neither native client
(docs/benchmarks.md says why).

    .venv/bin/python -m bench.native_probe [--mb 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import boto3
import obstore
from awscrt.auth import AwsCredentialsProvider
from awscrt.http import HttpHeaders, HttpRequest
from awscrt.io import ClientBootstrap, DefaultHostResolver, EventLoopGroup
from awscrt.s3 import S3Client, S3RequestTlsMode, S3RequestType
from obstore.store import S3Store as NativeS3

from modelswap import download
from modelswap.store import open_store
from modelswap.testing import seaweed

KEY = "m/model.bin"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def native_ranged(
    native: NativeS3, size: int, want: str, out: Path, *, threads: int, part: int
) -> Callable[[], None]:
    """Parts on `threads` threads, each written at its offset, hashed in order (as the agent)."""

    def run() -> None:
        target = out / "native.bin"
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        digest = hashlib.sha256()

        def fetch(offset: int) -> memoryview:
            data = memoryview(
                obstore.get_range(native, KEY, start=offset, length=min(part, size - offset))
            )
            os.pwrite(fd, data, offset)
            return data

        try:
            with concurrent.futures.ThreadPoolExecutor(threads) as pool:
                parts = collections.deque(pool.submit(fetch, o) for o in range(0, size, part))
                while parts:
                    digest.update(parts.popleft().result())
        finally:
            os.close(fd)
        assert digest.hexdigest() == want
        target.unlink()

    return run


def crt_client(part: int) -> S3Client:
    loops = EventLoopGroup(2)
    return S3Client(
        bootstrap=ClientBootstrap(loops, DefaultHostResolver(loops)),
        region="us-east-1",
        credential_provider=AwsCredentialsProvider.new_static(
            seaweed.ACCESS_KEY, seaweed.SECRET_KEY
        ),
        tls_mode=S3RequestTlsMode.DISABLED,
        part_size=part,
        throughput_target_gbps=10,
    )


def crt_get(
    client: S3Client, host: str, want: str, out: Path, *, to_file: bool
) -> Callable[[], None]:
    """awscrt writes the file itself (then sha256 reads it back, as after s5cmd), or hands
    each part to Python in order, which hashes and writes it (as the agent would)."""

    def run() -> None:
        target = out / "crt.bin"
        request = HttpRequest("GET", f"/bench/{KEY}", HttpHeaders([("Host", host)]))
        if to_file:
            client.make_request(
                type=S3RequestType.GET_OBJECT, request=request, recv_filepath=str(target)
            ).finished_future.result()
            assert sha256_file(target) == want
        else:
            digest = hashlib.sha256()
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)

            def on_body(chunk: bytes, offset: int, **_: object) -> None:
                digest.update(chunk)
                os.pwrite(fd, chunk, offset)

            try:
                client.make_request(
                    type=S3RequestType.GET_OBJECT, request=request, on_body=on_body
                ).finished_future.result()
            finally:
                os.close(fd)
            assert digest.hexdigest() == want
        target.unlink()

    return run


def measure(cases: dict[str, Callable[[], None]], repeats: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):  # round robin: drift falls on every case
        for name, fn in cases.items():
            started = time.monotonic()
            fn()
            times[name].append(time.monotonic() - started)
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    size = args.mb << 20
    work = Path(tempfile.mkdtemp(prefix="native-probe-"))
    server = seaweed.start(work / "weed")
    try:
        with seaweed.aws_env(server):
            s3 = boto3.client("s3", endpoint_url=server.endpoint)
            s3.create_bucket(Bucket="bench")
            blob = os.urandom(size)
            want = hashlib.sha256(blob).hexdigest()
            s3.put_object(Bucket="bench", Key=KEY, Body=blob)
            del blob
            out = work / "out"
            out.mkdir()
            store = open_store("s3://bench")
            native = NativeS3(
                "bench",
                endpoint=server.endpoint,
                access_key_id=seaweed.ACCESS_KEY,
                secret_access_key=seaweed.SECRET_KEY,
                region="us-east-1",
                client_options={"allow_http": True},
            )
            crt, host = crt_client(16 << 20), server.endpoint.split("://", 1)[1]

            def raw() -> None:
                body = s3.get_object(Bucket="bench", Key=KEY)["Body"]
                while body.read(1 << 20):
                    pass

            def agent_path() -> None:
                target = out / "agent.bin"
                download._download(
                    store=store, key=KEY, target=target, size=size, sha256=want,
                    cancel=threading.Event(), stats=download.FetchStats(),
                )  # fmt: skip
                target.unlink()

            def native_stream() -> None:
                target, digest = out / "stream.bin", hashlib.sha256()
                with open(target, "wb") as f:
                    for chunk in obstore.get(native, KEY).stream(min_chunk_size=4 << 20):
                        view = memoryview(chunk)
                        digest.update(view)
                        f.write(view)
                assert digest.hexdigest() == want
                target.unlink()

            def s5cmd() -> None:
                target = out / "s5cmd.bin"
                cmd = [str(Path(sys.executable).parent / "s5cmd"), "--endpoint-url"]
                subprocess.run(
                    [*cmd, server.endpoint, "cp", f"s3://bench/{KEY}", str(target)],
                    check=True,
                    capture_output=True,
                )
                assert sha256_file(target) == want
                target.unlink()

            cases: dict[str, Callable[[], None]] = {
                "raw boto3 GET (no write, no hash)": raw,
                "agent path (boto3, 2 x 16 MB parts)": agent_path,
                "obstore, 2 x 16 MB parts": native_ranged(
                    native, size, want, out, threads=2, part=16 << 20
                ),
                "obstore, 4 x 16 MB parts": native_ranged(
                    native, size, want, out, threads=4, part=16 << 20
                ),
                "obstore, 4 x 8 MB parts": native_ranged(
                    native, size, want, out, threads=4, part=8 << 20
                ),
                "obstore, one stream": native_stream,
                "awscrt 16 MB parts, to file + sha256": crt_get(crt, host, want, out, to_file=True),
                "awscrt 16 MB parts, hashed in on_body": crt_get(
                    crt, host, want, out, to_file=False
                ),
                "s5cmd + sha256": s5cmd,
            }
            times = measure(cases, args.repeats)
        for name, runs in times.items():
            print(f"{name:38} {size / statistics.median(runs) / 1e6:7.1f} MB/s")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
