"""Importing a library without the optional packages it only probes for.

Some libraries try an optional package at import time and do without it when it is missing:
botocore takes urllib3's plain SSLContext from urllib3.contrib.pyopenssl (~70 ms with pyOpenSSL
installed, which the sign extra brings), structlog looks for rich to draw tracebacks (sigstore
brings it). What they would get from them the agent and the CLI never use, and every command
and every init container pays for the import at start.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def without(*names: str) -> Iterator[None]:
    """Within the block, importing any of `names` fails with ImportError, unless the process
    has imported it already (then it may have configured it, and everyone must see that);
    after it, they import normally. sys.modules is the process's: another thread importing one
    of `names` during the block would fail too, so it wraps module-level imports only."""
    blocked = [n for n in names if n not in sys.modules]
    for n in blocked:
        sys.modules[n] = None  # type: ignore[assignment]  # None here means "cannot import"
    try:
        yield
    finally:
        for n in blocked:
            if n in sys.modules and sys.modules[n] is None:
                del sys.modules[n]
