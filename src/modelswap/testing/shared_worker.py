"""One worker process for the shared-mode tests: serve the link nonstop, report to a file."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from modelswap.loader import ModelLoader


def report(out: Path, loader: ModelLoader, **fields: Any) -> None:
    """Replace the worker's status file in one rename, so a reader never sees half of it."""
    health = loader.health()[1]
    status = {
        "pid": os.getpid(),
        "version": loader.version,
        "shared": health["shared"],
        "shared_error": health["shared_error"],
        **fields,
    }
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(status))
    tmp.replace(out)


def main() -> None:
    link, out = Path(sys.argv[1]), Path(sys.argv[2])
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    loader = ModelLoader(link, shared=True, poll_interval_s=0.05).start()
    served: dict[str, int] = {}
    failures, last_write = 0, 0.0
    x = np.ones((1, 600), dtype=np.float32)
    while not stop:
        try:
            with loader.session() as live:
                y = live.model.run(None, {"input": x})[0]
                expected = {"v1": 1.0, "v2": 2.0}[live.version]
                if not np.all(y == expected):
                    raise AssertionError(f"{live.version} answered {y[0, 0]}")
                served[live.version] = served.get(live.version, 0) + 1
        except Exception:  # noqa: BLE001 - counted and reported: that is the test
            failures += 1
        if time.monotonic() - last_write > 0.02:
            report(out, loader, served=served, failures=failures)
            last_write = time.monotonic()
    loader.stop()


if __name__ == "__main__":
    main()
