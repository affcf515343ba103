"""Download + verify of one version: the agent against s5cmd, aws s3 cp, KServe's storage
initializer and rclone (each followed by a sha256 check, which none of them does against
our metadata), and against this machine's limits, all in one run on one SeaweedFS.

    .venv/bin/python -m bench.peers_bench [--json out.json] [--sizes 300,1024] [--small 50]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3

from bench.common import emit, mark
from modelswap.pointers import Move, move_pointer
from modelswap.publish import PublishRequest
from modelswap.publish import publish as publish_request
from modelswap.registry import Registry
from modelswap.store import open_store
from modelswap.testing import seaweed

BIN = Path(sys.executable).parent
# `make bench` installs KServe's storage initializer apart: it pins google-cloud-storage < 3.
KSERVE_PYTHON = Path(__file__).resolve().parents[1] / ".tools" / "kserve" / "bin" / "python"
URL = "s3://bench/models"


def sha256_tree(folder: Path) -> None:
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "metadata.json"):
        h = hashlib.sha256()
        with open(f, "rb") as src:
            while chunk := src.read(1 << 20):
                h.update(chunk)


def timed(fn: Callable[[], None], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.monotonic()
        fn()
        times.append(time.monotonic() - t)
    return statistics.median(times)


def run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, **(env or {})})


def tools(
    server: seaweed.Seaweed, model: str, out: Path, sync_seconds: list[float]
) -> dict[str, Callable[[], None]]:
    prefix = f"models/{model}/v1"
    rclone_env = {
        "RCLONE_CONFIG_SW_TYPE": "s3",
        "RCLONE_CONFIG_SW_PROVIDER": "Other",
        "RCLONE_CONFIG_SW_ENDPOINT": server.endpoint,
        "RCLONE_CONFIG_SW_ACCESS_KEY_ID": seaweed.ACCESS_KEY,
        "RCLONE_CONFIG_SW_SECRET_ACCESS_KEY": seaweed.SECRET_KEY,
    }

    def fresh() -> Path:
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        return out

    def modelswap() -> None:
        fresh()
        cmd = [
            sys.executable,
            "-m",
            "modelswap",
            "agent",
            model,
            "--dest",
            str(out),
            "--once",
            "--registry",
            URL,
        ]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        event = next(json.loads(x) for x in done.stderr.splitlines() if '"sync.once"' in x)
        sync_seconds.append(event["duration_s"])

    def s5cmd() -> None:
        run(
            [
                str(BIN / "s5cmd"),
                "--endpoint-url",
                server.endpoint,
                "cp",
                f"s3://bench/{prefix}/*",
                str(fresh()) + "/",
            ]
        )
        sha256_tree(out)

    def awscli() -> None:
        run(
            [
                str(BIN / "aws"),
                "s3",
                "cp",
                "--recursive",
                "--endpoint-url",
                server.endpoint,
                f"s3://bench/{prefix}/",
                str(fresh()),
            ]
        )
        sha256_tree(out)

    def kserve() -> None:
        code = (
            "from kserve_storage import Storage; import sys; "
            "Storage.download(sys.argv[1], sys.argv[2])"
        )
        run(
            [str(KSERVE_PYTHON), "-c", code, f"s3://bench/{prefix}/", str(fresh())],
            env={"S3_ENDPOINT": server.endpoint.removeprefix("http://"), "S3_USE_HTTPS": "0"},
        )
        sha256_tree(out)

    def rclone() -> None:
        run(
            [str(BIN / "rclone"), "copy", "--transfers", "8", f"sw:bench/{prefix}", str(fresh())],
            env=rclone_env,
        )
        sha256_tree(out)

    return {
        "modelswap agent --once": modelswap,
        "s5cmd": s5cmd,
        "aws s3 cp": awscli,
        "kserve-storage": kserve,
        "rclone": rclone,
    }


def limits(model: str, folder: Path, out: Path) -> dict[str, Callable[[], None]]:
    client = boto3.client("s3")
    keys = [
        o["Key"]
        for o in client.list_objects_v2(Bucket="bench", Prefix=f"models/{model}/v1/")["Contents"]
        if not o["Key"].endswith("metadata.json")
    ]

    def raw_get() -> None:
        for key in keys:
            body = client.get_object(Bucket="bench", Key=key)["Body"]
            for _ in body.iter_chunks(1 << 20):
                pass

    def sha() -> None:
        sha256_tree(folder)

    def copy() -> None:
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(folder, out)

    return {
        "plain GET to /dev/null": raw_get,
        "sha256 of the files (page cache)": sha,
        "plain local copy to the destination": copy,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="300,1024", help="single-file versions, MB")
    ap.add_argument("--small", type=int, default=50, help="files in the many-small-files version")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="modelswap-peers-"))
    server = seaweed.start(work / "weed")
    results: dict[str, Any] = {}
    try:
        with seaweed.aws_env(server):
            boto3.client("s3").create_bucket(Bucket="bench")
            reg = Registry(open_store(URL))
            cases: dict[str, Path] = {}
            for mb in (int(s) for s in args.sizes.split(",")):
                folder = work / "src" / f"single-{mb}mb"
                folder.mkdir(parents=True)
                with open(folder / "model.onnx", "wb") as f:
                    block = os.urandom(1 << 20)
                    for _ in range(mb):
                        f.write(block)
                cases[f"one {mb} MB file"] = folder
            small = work / "src" / "small"
            small.mkdir(parents=True)
            for i in range(args.small):
                (small / f"shard-{i:03d}.bin").write_bytes(os.urandom(256 << 10))
            cases[f"{args.small} files of 256 KB"] = small
            for i, (name, folder) in enumerate(cases.items()):
                model = f"m{i}"
                files = {p.name: p for p in folder.iterdir()}
                publish_request(reg, PublishRequest(model=model, files=files, version="v1"))
                move_pointer(reg, Move(model, "CURRENT", "v1", "promote", "bench"))
                size_mb = sum(p.stat().st_size for p in folder.iterdir()) / (1 << 20)
                out = work / "out"
                row = {}
                sync_seconds: list[float] = []
                candidates = {
                    **tools(server, model, out, sync_seconds),
                    **limits(model, folder, out),
                }
                for tool, fn in candidates.items():
                    seconds = timed(fn, args.repeats)
                    row[tool] = {"seconds": round(seconds, 3), "MBps": round(size_mb / seconds, 1)}
                    print(f"{name:>22} {tool:<36} {row[tool]['MBps']:>8} MB/s", flush=True)
                # The same runs seen from inside: one sync pass of a running agent, no start-up.
                sync = statistics.median(sync_seconds)
                row["modelswap agent, sync pass only"] = {
                    "seconds": round(sync, 3),
                    "MBps": round(size_mb / sync, 1),
                }
                print(f"{name:>22} {'modelswap sync pass only':<36} {size_mb / sync:>8.1f} MB/s")
                results[name] = row
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    emit(results, args.json)


NOTES = [
    "Why we lose where we lose. `agent --once` is a Python process: the interpreter, modelswap,",
    "boto3 and botocore's S3 client (whose service model alone is ~100 ms of JSON parsing) take",
    "about 0.5 s before the first byte; s5cmd and rclone are Go binaries that start in a few ms.",
    "That is most of the gap for 300 MB and nearly all of it for 50 small files (the sync-pass",
    "row is the same run without the start: 55-83 MB/s in three runs, rclone's whole command",
    "66-103). Inside the pass, 16 MB parts come in on 2 threads through boto3/urllib3 and are",
    "hashed as they arrive, at 377-632 MB/s, against the store's 762-1,487 MB/s raw GET that",
    "neither writes nor hashes (both vary a lot between runs on this shared machine).",
    "Issue #17 cut the start: the image shipped no compiled modules (importing the CLI and",
    "the S3 store took 1.47 s, 0.36 s with them; the editable install here compiled none of",
    "modelswap's), pyOpenSSL, rich and the Prometheus parser are no longer imported by --once,",
    "and one boto3 session serves both clients. Three runs since, all targets on `--once`",
    "missed: against s5cmd + sha256 0.68x, 0.80x, 0.55x at 300 MB and 0.68x, 0.64x, 0.86x at",
    "1 GB; against rclone for 50 x 256 KB 0.25x, 0.22x, 0.26x. The sync pass against the raw",
    "GET: 0.34x, 0.50x, 0.25x at 300 MB (met once), 0.51x, 0.40x, 0.55x at 1 GB (met twice),",
    "1.20x, 0.88x, 1.29x for the small files (met).",
    "A native data path, measured (`python -m bench.native_probe`, one object, fetched to",
    "disk and hashed in one process, 2026-12-04 and -05): at 300 MB the agent's path 384, 496,",
    "418 and 531 MB/s in four runs, obstore (Rust, no GIL while reading) 658-762 MB/s on 4",
    "parts, boto3's CRT client (awscrt, parts in parallel in C) 583 and 504 MB/s when it hands",
    "each part to Python in order to hash and write, 325 and 291 MB/s when it writes the file",
    "itself and sha256 reads it back, s5cmd + sha256 485, 455, 389 and 499; at 1 GB the agent",
    "490 and 584, obstore 505-598, awscrt 407 (hashed as it lands) and 316 (to file), s5cmd +",
    "sha256 504 and 572 MB/s (the disk decides). Inside the process the agent's path is",
    "0.79-1.09x s5cmd + sha256 at 300 MB and 0.97-1.02x at 1 GB; what `--once` loses is mostly",
    "its Python start (~0.36 s) and the requests around the data. obstore would cut 0.2-0.35 s",
    "from a 300 MB fetch and little at 1 GB, awscrt nothing it keeps across runs: they would",
    "narrow the gap, not close it, and bring their own retries, timeouts and credentials",
    "outside the fault tests, so neither is used. We are",
    "ahead of `aws s3 cp` and",
    "KServe's storage initializer, also Python. What none of the peers do: every byte is",
    "checked against the sha256 in metadata.json before the version can be linked, and the",
    "switch is one atomic rename.",
    "",
]


def render(peers: dict[str, Any]) -> list[str]:
    """The section of docs/benchmarks.md (bench/report.py)."""
    lines = [
        "## Download + verify against the tools people use (`python -m bench.peers_bench`)",
        "",
        "Whole commands, median of 3, same SeaweedFS, same objects, same run. Every peer is followed",
        "by a sha256 of what it wrote (none of them checks the bytes against metadata.json); the",
        "agent's figure includes its own verification, the link swap and process start-up.",
        "",
    ]
    for case, row in peers.items():
        ours = row["modelswap agent --once"]["MBps"]
        sync = row["modelswap agent, sync pass only"]["MBps"]
        raw = row["plain GET to /dev/null"]["MBps"]
        # The targets of issue #17: s5cmd + sha256 for single files, rclone for many small ones
        peer = "rclone" if case.endswith("KB") else "s5cmd"
        lines += [f"### {case}", "", "| tool | MB/s | time | vs modelswap |", "|---|---|---|---|"]
        for tool, r in row.items():
            lines.append(f"| {tool} | {r['MBps']} | {r['seconds']} s | {r['MBps'] / ours:.2f}x |")
        lines += [
            "",
            f"Targets: `agent --once` at least as fast as {peer} + sha256 ({row[peer]['MBps']} MB/s): "
            f"{ours} MB/s, {ours / row[peer]['MBps']:.2f}x, {mark(ours >= row[peer]['MBps'])}; a running agent's sync "
            f"pass at >= 0.5x the raw GET ({raw} MB/s): {sync} MB/s, {sync / raw:.2f}x, {mark(sync >= 0.5 * raw)}.",
            "",
        ]
    lines += NOTES
    return lines


if __name__ == "__main__":
    main()
