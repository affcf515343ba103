"""The agent's HTTP side: /healthz (the loop is alive), /readyz (a verified version is linked),
/status (JSON), /metrics (Prometheus text), POST /refresh (poll now).

Who may do what: the read-only endpoints answer anyone who can reach the port (the kubelet's
probes, Prometheus). POST /refresh, the one that makes the agent act, answers only loopback
peers (the app in the same pod) unless a token is configured, and then only requests that
carry it (`Authorization: Bearer <token>`). However often it is called, it wakes the main loop
at most once per --refresh-min-interval (a refresh after a plain poll acts at once): a request
while one is queued is coalesced.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress

from aiohttp import web

from .state import AgentState


def refresh_allowed(remote: str | None, token: str | None, authorization: str | None) -> bool:
    """Whether a POST /refresh from `remote` with that Authorization header may act."""
    if token is not None:
        given = (authorization or "").removeprefix("Bearer ").strip()
        return hmac.compare_digest(given.encode(), token.encode())
    try:
        return remote is not None and ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False  # a unix socket or an unparsable peer is not known to be local


def make_app(
    state: AgentState,
    refresh: asyncio.Event,
    loop_task: asyncio.Task[None],
    token: str | None = None,
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

    async def do_refresh(request: web.Request) -> web.Response:
        if not refresh_allowed(request.remote, token, request.headers.get("Authorization")):
            with state.lock:
                state.counters.refresh_refused += 1
            why = "a valid bearer token" if token else "a loopback peer"
            return web.json_response(
                {
                    "error": f"POST /refresh needs {why}",
                    "hint": "call it from inside the pod, or configure and send the token "
                    "(--refresh-token-file / MODELSWAP_REFRESH_TOKEN)",
                },
                status=401 if token else 403,
            )
        with state.lock:
            queued = refresh.is_set()
            if queued:
                state.counters.refresh_coalesced += 1
            else:
                state.counters.refresh_scheduled += 1
        refresh.set()
        return web.json_response({"refresh": "coalesced" if queued else "scheduled"}, status=202)

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
