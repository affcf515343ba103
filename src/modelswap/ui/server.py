"""The UI's HTTP side: GET pages only, rendered on the server from the Python API.

Read-only by construction: every route is a GET, so any other method is 405 and nothing here
calls a verb that writes. What the store holds is untrusted (a note, a reason, an instance
name): the templates escape everything (Jinja2's autoescape, on for every template), no script
is served at all, and the Content-Security-Policy forbids any that might slip in.
"""

from __future__ import annotations

import asyncio
import sys
import traceback
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import jinja2
from aiohttp import web

from modelswap.api import DEFAULT_POINTER, Registry
from modelswap.errors import (
    InvalidName,
    ModelNotFound,
    ModelswapError,
    ObjectNotFound,
    PointerNotFound,
    StoreUnavailable,
    UsageError,
    VersionNotFound,
)
from modelswap.render import size_str
from modelswap.ui import views

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}
REFRESH_S = 5  # the fleet and rollout pages reload themselves this often
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("modelswap.ui", "templates"),
        autoescape=True,  # every template, whatever its name
        # Store contents are any JSON at all (a hand edit, another tool): a field a page
        # expects and the store lacks shows as empty, never as a failed page.
        undefined=jinja2.ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["age"] = views.age
    env.filters["size"] = size_str
    env.filters["num"] = lambda v: "-" if isinstance(v, jinja2.Undefined) else views.number(v)
    return env


def _status_of(e: ModelswapError) -> int:
    if isinstance(e, ModelNotFound | VersionNotFound | PointerNotFound | ObjectNotFound):
        return 404
    if isinstance(e, UsageError | InvalidName):
        return 400
    if isinstance(e, StoreUnavailable):
        return 502  # the store failed to answer: not the page's fault
    return 500  # the store holds something that is not what modelswap writes (shown as text)


def host_allowed(host: str, allowed_hosts: frozenset[str] | None) -> bool:
    """Whether the Host header names one of `allowed_hosts` (None: any name)."""
    if allowed_hosts is None:
        return True
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return name.strip("[]").lower() in allowed_hosts


def make_app(reg: Registry, allowed_hosts: frozenset[str] | None = None) -> web.Application:  # noqa: PLR0915 - one closure per page
    """`allowed_hosts`: the Host header names the dashboard answers to (None: any, as when
    it is bound to a non-loopback address on purpose)."""

    env = templates()
    css = resources.files("modelswap.ui").joinpath("static/style.css").read_bytes()

    def page(template: str, code: int = 200, **context: Any) -> web.Response:
        html = env.get_template(template).render(registry=reg.store_url, **context)
        return web.Response(text=html, status=code, content_type="text/html", charset="utf-8")

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            if not host_allowed(request.host, allowed_hosts):
                # DNS rebinding: a page elsewhere resolving its own name to 127.0.0.1 would
                # otherwise read the dashboard through the user's browser.
                raise web.HTTPMisdirectedRequest(reason=f"unexpected Host {request.host[:60]}")
            response = await handler(request)
        except web.HTTPException as e:
            response = page("error.html", e.status, title=e.reason, error=e.reason, hint=None)
            if "Allow" in e.headers:
                response.headers["Allow"] = e.headers["Allow"]
        except ModelswapError as e:
            response = page(
                "error.html", _status_of(e), title="error", error=str(e), hint=e.hint or None
            )
        except Exception:  # noqa: BLE001 - a page that fails must not take the server down
            traceback.print_exc(file=sys.stderr)
            response = page(
                "error.html", 500, title="error", error="the page failed", hint="see the log"
            )
        response.headers.update(HEADERS)
        return response

    async def run(template: str, build: Callable[[], dict[str, Any]], **extra: Any) -> web.Response:
        # The API blocks on the store: a thread keeps the server answering meanwhile.
        context = await asyncio.to_thread(build)
        return page(template, **context, **extra)

    def q(request: web.Request, name: str) -> str | None:
        return request.query.get(name) or None

    async def index(_: web.Request) -> web.Response:
        return await run("models.html", lambda: {"models": views.models(reg)}, title="models")

    async def model(request: web.Request) -> web.Response:
        name = request.match_info["model"]
        return await run(
            "model.html", lambda: views.model(reg, name, q(request, "metric")), title=name
        )

    async def timeline(request: web.Request) -> web.Response:
        name = request.match_info["model"]
        try:
            number = int(request.query.get("page", "1"))
        except ValueError:
            raise UsageError(
                f"page {request.query.get('page')!r} is not a number", hint="e.g. ?page=2"
            ) from None
        return await run(
            "timeline.html",
            lambda: views.timeline(reg, name, number, q(request, "type")),
            title=f"{name} timeline",
        )

    async def version(request: web.Request) -> web.Response:
        name, v = request.match_info["model"], request.match_info["version"]
        return await run("version.html", lambda: views.version(reg, name, v), title=f"{name}/{v}")

    async def diff(request: web.Request) -> web.Response:
        name = request.match_info["model"]
        return await run(
            "diff.html",
            lambda: views.diff(reg, name, q(request, "a"), q(request, "b")),
            title=f"{name} diff",
        )

    async def fleet(request: web.Request) -> web.Response:
        name = request.match_info["model"]
        pointer = request.query.get("pointer") or DEFAULT_POINTER
        return await run(
            "fleet.html",
            lambda: views.fleet(reg, name, pointer),
            title=f"{name} fleet",
            refresh=REFRESH_S,
        )

    async def rollout(request: web.Request) -> web.Response:
        name = request.match_info["model"]
        return await run(
            "rollout.html",
            lambda: views.rollout(reg, name),
            title=f"{name} rollout",
            refresh=REFRESH_S,
        )

    async def style(_: web.Request) -> web.Response:
        return web.Response(body=css, content_type="text/css", charset="utf-8")

    app = web.Application(middlewares=[guard])
    app.router.add_get("/", index)
    app.router.add_get("/static/style.css", style)
    app.router.add_get("/models/{model}", model)
    app.router.add_get("/models/{model}/timeline", timeline)
    app.router.add_get("/models/{model}/versions/{version}", version)
    app.router.add_get("/models/{model}/diff", diff)
    app.router.add_get("/models/{model}/fleet", fleet)
    app.router.add_get("/models/{model}/rollout", rollout)
    return app
