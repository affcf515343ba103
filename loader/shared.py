"""Shared mode: the workers of one host map one prepared copy of the weights.

The first worker to see a version prepares it: onnxruntime optimises the model and writes it
with its initializers, already prepacked, to an external file; every worker then loads that
file, and onnxruntime memory-maps the weights, so N workers hold one copy in the page cache
instead of N private ones. The prepacked layout belongs to the CPU and onnxruntime version that
made it, so both are part of the artifact's name: another host, or an upgrade, prepares again.

Artifacts are only ever created (in a temporary folder renamed into place) and deleted, never
rewritten: truncating a file that a live session maps kills that process with SIGBUS.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PREPARED_DIR = ".prepared"
DONE = "DONE"


def host_key(model_file: Path, metadata: dict[str, Any]) -> str:
    """What the prepared layout depends on: CPU, onnxruntime, and the model's bytes."""
    import onnxruntime as ort  # noqa: PLC0415

    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags")):
                cpu += line
            if line.strip() == "":
                break  # the first processor describes them all
    entry = (metadata.get("files") or {}).get(model_file.name) or {}
    identity = entry.get("sha256") or f"{model_file.stat().st_size}-{model_file.stat().st_mtime_ns}"
    raw = "|".join([platform.machine(), cpu, ort.__version__, str(identity)])
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _prepare(model_file: Path, out: Path) -> float:
    import onnxruntime as ort  # noqa: PLC0415

    started = time.monotonic()
    so = ort.SessionOptions()
    so.log_severity_level = 3  # the "hardware specific" warning is the point of this artifact
    so.optimized_model_filepath = str(out / "model.onnx")
    so.add_session_config_entry(
        "session.optimized_model_external_initializers_file_name", "weights.bin"
    )
    so.add_session_config_entry(
        "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
    )
    so.add_session_config_entry("session.save_external_prepacked_constant_initializers", "1")
    ort.InferenceSession(str(model_file), so, providers=["CPUExecutionProvider"])
    for f in out.iterdir():
        f.chmod(0o444)  # readable by every worker's uid; onnx writes external data as 0600
    return time.monotonic() - started


def prepared_model(model_file: Path, version: str, metadata: dict[str, Any], root: Path) -> Path:
    """The prepared model file for this host, preparing it once under a lock if needed.
    Raises OSError when the folder cannot be written (the caller falls back)."""
    key = host_key(model_file, metadata)
    final = root / f"{version}-{key}"
    if (final / DONE).exists():
        return final / "model.onnx"
    root.mkdir(mode=0o777, parents=True, exist_ok=True)
    with _flock(root / f".{version}-{key}.lock"):
        if not (final / DONE).exists():  # another worker may have finished while we waited
            tmp = root / f".{version}-{key}.tmp-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(mode=0o755)
            try:
                seconds = _prepare(model_file, tmp)
                (tmp / DONE).write_text(
                    json.dumps(
                        {
                            "pid": os.getpid(),
                            "host": socket.gethostname(),
                            "seconds": round(seconds, 3),
                        }
                    )
                )
                (tmp / DONE).chmod(0o444)
                os.rename(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            with open(root / "prepare.log", "a") as log:  # one line per preparation, for audits
                log.write(f"{version} {key} pid={os.getpid()} seconds={seconds:.3f}\n")
    return final / "model.onnx"


def remove_stale(root: Path, versions_dir: Path, keep: set[str]) -> list[str]:
    """Delete artifacts of versions that are gone from versions/ (never one in `keep`)."""
    removed: list[str] = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    live = {p.name for p in versions_dir.iterdir()} if versions_dir.is_dir() else set()
    for entry in entries:
        version, sep, _ = entry.name.rpartition("-")
        if not sep or entry.name.startswith(".") or not entry.is_dir():
            continue
        if version not in live and version not in keep:
            shutil.rmtree(entry, ignore_errors=True)  # deleting a mapped file is safe
            removed.append(entry.name)
    return removed
