"""The preparer of shared mode, run as a short-lived child: `python -m modelswap.loader.prepare`.

Why a child. onnxruntime reads the whole model into the heap to optimise and prepack it; in
the serving process that heap stayed allocated after the session was dropped (glibc keeps
freed arenas), so the worker that prepared a version held a private copy of the weights as
large as a private worker's, for as long as it lived, and again after every swap. A child
returns all of it to the system when it exits, and runs at a lower priority, so the serving
threads of every worker on the host keep the cores while it works.

Usage (internal): python -m modelswap.loader.prepare MODEL_FILE OUT_DIR
Exit 0 with the prepared files in OUT_DIR, or 1 with one line on stderr saying why.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

GRAPH = "model.onnx"
WEIGHTS = "weights.bin"
NICE = 10  # below the serving threads, which are at the app's own priority


def prepare(model_file: Path, out: Path) -> None:
    import onnxruntime as ort  # noqa: PLC0415 - only the child needs it loaded

    so = ort.SessionOptions()
    so.log_severity_level = 3  # the "hardware specific" warning is the point of this artifact
    so.optimized_model_filepath = str(out / GRAPH)
    so.add_session_config_entry("session.optimized_model_external_initializers_file_name", WEIGHTS)
    so.add_session_config_entry(
        "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
    )
    so.add_session_config_entry("session.save_external_prepacked_constant_initializers", "1")
    ort.InferenceSession(str(model_file), so, providers=["CPUExecutionProvider"])


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m modelswap.loader.prepare MODEL_FILE OUT_DIR", file=sys.stderr)
        return 2
    with contextlib.suppress(OSError):  # a sandbox that forbids it: the app's own priority
        os.nice(NICE)
    try:
        prepare(Path(argv[0]), Path(argv[1]))
    except Exception as e:  # noqa: BLE001 - one line for the parent's /health, not a traceback
        print(f"{type(e).__name__}: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
