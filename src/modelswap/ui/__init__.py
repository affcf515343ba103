"""`modelswap ui`: a read-only dashboard of a registry (PRODUCT.md section 12).

    modelswap ui --registry s3://bucket/models      # then open http://127.0.0.1:9100

Pages: the models; per model its versions, a metric across versions with what each pointer
named, the live version over time, the event timeline (paged), a diff of two versions, the
fleet and the rollout with its verdicts. Everything is read through modelswap.Registry; the
server (aiohttp) and the templates (Jinja2) come with the `ui` extra.
"""

from __future__ import annotations

import asyncio
import ipaddress
import signal
from collections.abc import Callable

from modelswap.api import Registry
from modelswap.config import UI_HOST, UI_PORT

DEFAULT_HOST, DEFAULT_PORT = UI_HOST, UI_PORT
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _serve(reg: Registry, host: str, port: int, say: Callable[[str], None]) -> None:
    from aiohttp import web  # noqa: PLC0415 - imported once the CLI has checked the flags

    from modelswap.ui.server import make_app  # noqa: PLC0415

    # On loopback, answer only to loopback names (see server.py); elsewhere the user chose.
    allowed = LOOPBACK_NAMES | {host.lower()} if is_loopback(host) else None
    runner = web.AppRunner(make_app(reg, allowed), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    shown = f"[{host}]" if ":" in host else host
    say(f"modelswap ui: {reg.store_url} on http://{shown}:{bound}/ (read-only; Ctrl-C stops)")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def serve(
    reg: Registry,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    say: Callable[[str], None] = print,
) -> None:
    """Serve the dashboard until SIGINT or SIGTERM (port 0: any free one, printed)."""
    asyncio.run(_serve(reg, host, port, say))


__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "is_loopback", "serve"]
