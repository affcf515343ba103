"""The agent's HTTP side: /healthz (the loop is alive), /readyz (a verified version is linked),
/status (JSON), /metrics (Prometheus text), POST /refresh (poll now)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from .state import AgentState


def make_app(
    state: AgentState, refresh: asyncio.Event, loop_task: asyncio.Task[None]
) -> web.Application:
    """Liveness is the main loop still running; answering at all proves the event loop is not
    blocked (downloads run in a thread, so a long one never makes the agent look dead)."""
    app = web.Application()

    async def healthz(_: web.Request) -> web.Response:
        alive = not loop_task.done()
        return web.json_response({"alive": alive}, status=200 if alive else 503)

    async def readyz(_: web.Request) -> web.Response:
        st = state.status()
        body = {"ready": st["ready"], "active_version": st["active_version"]}
        return web.json_response(body, status=200 if st["ready"] else 503)

    async def status(_: web.Request) -> web.Response:
        return web.json_response(state.status())

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=state.metrics(), content_type="text/plain", charset="utf-8")

    async def do_refresh(_: web.Request) -> web.Response:
        refresh.set()
        return web.json_response({"refresh": "scheduled"}, status=202)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/refresh", do_refresh)
    return app


async def start(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server  # aiohttp exposes the bound port only here
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, int(bound)
