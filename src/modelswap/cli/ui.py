"""`modelswap ui`: the read-only dashboard (the server is modelswap.ui, on the `ui` extra)."""

from __future__ import annotations

import argparse
import sys

from modelswap import ui
from modelswap.cli.common import _api
from modelswap.errors import UsageError


def cmd_ui(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port} is not a port", hint="0 to 65535; 0 picks a free one")
    try:
        import aiohttp  # noqa: F401, PLC0415 - only to say what is missing before starting
        import jinja2  # noqa: F401, PLC0415
    except ImportError as e:
        raise UsageError(
            f"modelswap ui needs {e.name}, which is not installed",
            hint="pip install 'modelswap[ui]'",
        ) from None
    reg = _api(args)
    if reg.creates_folder:
        raise UsageError(
            f"no registry at {reg.store_url}",
            hint="name one with --registry (or MODELSWAP_REGISTRY); publish creates a folder",
        )
    if not ui.is_loopback(args.host):
        print(
            f"note: serving on {args.host}: anyone who reaches it can read the registry "
            "(read-only; nothing on it can change the registry)",
            file=sys.stderr,
        )
    try:
        ui.serve(reg, args.host, args.port, say=lambda line: print(line, flush=True))
    except OSError as e:
        raise UsageError(
            f"cannot serve on {args.host}:{args.port}: {e.strerror or e}",
            hint="choose another --port (0 picks a free one) or --host",
        ) from None
    return 0
