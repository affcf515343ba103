"""What signing costs on a 1 GB version (local folder registry, page cache warm): publish with
and without --sign-key, `agent --once` with and without --trust-key, the bytes each agent
read, and the reference CLI (`model_signing sign key` / `verify key`), which hashes every file
again, for comparison.

    .venv/bin/python -m bench.signing_bench [--json out.json] [--size-mb 1024] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bench.common import emit
from modelswap import signing
from modelswap.api import Registry
from modelswap.registry import Registry as Versions
from modelswap.store import open_store

# Runs the agent and prints /proc/self/io at exit: rchar counts every byte read() returned.
_WITH_IO = (
    "import atexit, runpy, sys\n"
    "atexit.register(lambda: sys.stderr.write('IO ' + open('/proc/self/io').read()))\n"
    "sys.argv = ['modelswap', *sys.argv[1:]]\n"
    "runpy.run_module('modelswap', run_name='__main__')\n"
)


def keys(work: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = work / "release.pem", work / "release.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def timed(fn: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def agent_once(url: str, work: Path, version: str, *extra: str) -> tuple[float, int]:
    """Seconds for `agent --once` of `version`, and the bytes it read."""
    dest = work / "dest"
    Registry(url, actor="bench").promote("clf", version, reason="bench")
    t = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-c", _WITH_IO, "agent", "clf", "--dest", str(dest), "--once", *extra],
        env={**os.environ, "MODELSWAP_REGISTRY": url},
        capture_output=True,
        text=True,
        check=True,
    )
    elapsed = time.perf_counter() - t
    io = dict(line.split(": ") for line in r.stderr.split("IO ", 1)[1].splitlines() if ": " in line)
    shutil.rmtree(dest)
    return elapsed, int(io["rchar"])


def reference(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "model_signing", *cmd],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - t


def import_s(runs: int) -> float:
    def once(code: str) -> float:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        return time.perf_counter() - t

    base = statistics.median(once("import modelswap.api") for _ in range(runs))
    code = "import modelswap.api; from modelswap import signing; signing._library()"
    return max(0.0, statistics.median(once(code) for _ in range(runs)) - base)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="signing-bench-"))
    try:
        private, public = keys(work)
        model = work / "model.bin"
        with open(model, "wb") as f:
            for _ in range(args.size_mb):
                f.write(os.urandom(1 << 20))
        url = str(work / "registry")
        reg = Registry(url, actor="bench")
        plain, signed = [], []
        for i in range(args.runs):
            plain.append(timed(lambda i=i: reg.publish("clf", [model], version=f"p{i}"))[0])
            signed.append(
                timed(lambda i=i: reg.publish("clf", [model], version=f"s{i}", sign_key=private))[0]
            )
        versions = Versions(open_store(url))
        key = signing.load_signing_key(private)
        trusted = signing.load_trusted_keys([public])
        meta = versions.metadata("clf", "s0")
        sign_s = statistics.median(
            timed(lambda: signing.sign(key, "clf", "s0", meta))[0] for _ in range(5)
        )
        sig = versions.signature("clf", "s0")
        check_s = statistics.median(
            timed(lambda: signing.check(trusted, "clf", "s0", meta, sig))[0] for _ in range(5)
        )
        once_plain = [agent_once(url, work, f"p{i}") for i in range(args.runs)]
        once_signed = [
            agent_once(url, work, f"s{i}", "--trust-key", str(public)) for i in range(args.runs)
        ]
        copy = work / "copy"
        reg.download("clf", "s0", copy)
        ref_sign = [
            reference(
                [
                    "sign",
                    "key",
                    str(copy),
                    "--signature",
                    str(work / "ref.sig"),
                    "--private_key",
                    str(private),
                ]
            )
            for _ in range(args.runs)
        ]
        ref_verify = [
            reference(
                [
                    "verify",
                    "key",
                    str(copy),
                    "--signature",
                    str(copy / "model.sig"),
                    "--public_key",
                    str(public),
                ]
            )
            for _ in range(args.runs)
        ]
        results = {
            "size_mb": args.size_mb,
            "runs": args.runs,
            "publish_s": [round(x, 2) for x in plain],
            "publish_signed_s": [round(x, 2) for x in signed],
            "sign_step_ms": round(sign_s * 1000, 2),
            "check_step_ms": round(check_s * 1000, 2),
            "library_import_s": round(import_s(args.runs), 3),
            "agent_once_s": [round(t, 2) for t, _ in once_plain],
            "agent_once_trusted_s": [round(t, 2) for t, _ in once_signed],
            "agent_read_mb": round(statistics.median(b for _, b in once_plain) / 2**20, 1),
            "agent_trusted_read_mb": round(statistics.median(b for _, b in once_signed) / 2**20, 1),
            "model_signing_sign_s": [round(x, 2) for x in ref_sign],
            "model_signing_verify_s": [round(x, 2) for x in ref_verify],
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    emit(results, args.json)


def render(r: dict[str, Any]) -> list[str]:
    """The section of docs/benchmarks.md (bench/report.py)."""
    med = statistics.median
    size = f"{r['size_mb'] / 1024:.0f} GB" if r["size_mb"] >= 1024 else f"{r['size_mb']} MB"
    return [
        "## Signing (`python -m bench.signing_bench`)",
        "",
        f"One {size} version in a local folder registry (page cache warm), median of "
        f"{r['runs']}. Signing and checking use the sha256 digests modelswap computes anyway "
        "(publish while uploading, the agent while streaming), so neither reads a file twice; "
        "the reference CLI hashes the folder itself.",
        "",
        "| step | unsigned | signed / trusted | cost |",
        "|---|---|---|---|",
        f"| publish | {med(r['publish_s']):.2f} s | {med(r['publish_signed_s']):.2f} s | "
        f"{med(r['publish_signed_s']) - med(r['publish_s']):+.2f} s |",
        f"| agent --once (download, verify, link) | {med(r['agent_once_s']):.2f} s | "
        f"{med(r['agent_once_trusted_s']):.2f} s | "
        f"{med(r['agent_once_trusted_s']) - med(r['agent_once_s']):+.2f} s |",
        f"| bytes the agent read | {r['agent_read_mb']} MiB | {r['agent_trusted_read_mb']} MiB | "
        f"{r['agent_trusted_read_mb'] - r['agent_read_mb']:+.1f} MiB |",
        "",
        f"- the signing step itself (manifest from metadata.json, ECDSA P-256): "
        f"{r['sign_step_ms']} ms; the check (bundle, signature, manifest against metadata.json, "
        f"names): {r['check_step_ms']} ms.",
        f"- importing model_signing (and sigstore under it): {r['library_import_s']:.2f} s, paid "
        "once per process, only when a key is given.",
        f"- for comparison, the reference CLI on a downloaded copy: `model_signing sign key` "
        f"{med(r['model_signing_sign_s']):.2f} s, `model_signing verify key` "
        f"{med(r['model_signing_verify_s']):.2f} s (each hashes the whole folder again).",
        "",
    ]


if __name__ == "__main__":
    main()
