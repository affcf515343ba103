"""`modelswap ui` as a real child process on loopback, for the tests and bench/ui_bench.py."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def serving(registry: Path, *flags: str) -> Iterator[str]:
    """The real `modelswap ui --port 0` in a child process; yields its base URL. Its stderr
    goes to <registry>.ui.log (read by the tests: a page that fails prints a traceback)."""
    env = dict(os.environ, MODELSWAP_REGISTRY=str(registry))
    log = registry.parent / f"{registry.name}.ui.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelswap", "ui", "--port", "0", *flags],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
        )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.search(r"on (http://\S+?)/ ", line)
        assert found, (line, log.read_text())
        yield found.group(1)
    finally:
        proc.terminate()
        proc.wait(10)


def server_log(registry: Path) -> str:
    return (registry.parent / f"{registry.name}.ui.log").read_text()
