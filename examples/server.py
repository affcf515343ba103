"""A small model server that serves whatever version the agent has linked.

    python examples/server.py --link DEST/digits/current --port 8080 --health-port 9102
    python examples/server.py --link ... --workers 4 --shared   # 4 processes, one weight copy

POST /predict {"inputs": [[64 floats], ...]} -> {"version": "v2", "predictions": [3, ...]}.
Every answer names the version that computed it. The ModelLoader swaps versions under the
server without dropping a request; /health on the health port says what is loaded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
from typing import Any

import numpy as np
from aiohttp import web

from modelswap.loader import ModelLoader, ModelNotLoaded

LOADER = web.AppKey("loader", ModelLoader)


def predict_sync(loader: ModelLoader, inputs: Any) -> dict[str, Any]:
    x = np.asarray(inputs, dtype=np.float32)
    with loader.session() as live:  # one version for the whole request
        outputs = live.model.run(None, {live.model.get_inputs()[0].name: x})
        return {"version": live.version, "predictions": outputs[0].tolist()}


async def predict(request: web.Request) -> web.Response:
    try:
        body = await request.json()
        inputs = body["inputs"]
    except (ValueError, KeyError, TypeError):
        return web.json_response({"error": 'send {"inputs": [[...], ...]}'}, status=400)
    try:
        result = await asyncio.to_thread(predict_sync, request.app[LOADER], inputs)
    except ModelNotLoaded as e:
        return web.json_response({"error": str(e)}, status=503)
    except Exception as e:  # noqa: BLE001 - a bad input must not take the server down
        return web.json_response({"error": str(e)[:200]}, status=400)
    return web.json_response(result)


def serve(
    link: str, host: str, port: int, health_port: int, *, shared: bool, reuse_port: bool
) -> None:
    loader = ModelLoader(link, health_port=health_port, poll_interval_s=0.5, shared=shared).start()
    app = web.Application()
    app[LOADER] = loader
    app.router.add_post("/predict", predict)

    async def on_cleanup(_: web.Application) -> None:
        loader.stop()

    app.on_cleanup.append(on_cleanup)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # graceful stop on SIGTERM too
    web.run_app(app, host=host, port=port, print=None, access_log=None, reuse_port=reuse_port)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--link", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--health-port", type=int, default=9102, help="worker i uses this + i")
    ap.add_argument("--workers", type=int, default=1, help="processes sharing the port")
    ap.add_argument("--shared", action="store_true", help="one prepared weight copy per host")
    args = ap.parse_args()
    if args.workers == 1:
        serve(
            args.link, args.host, args.port, args.health_port, shared=args.shared, reuse_port=False
        )
        return
    children = []
    for i in range(args.workers):
        pid = os.fork()
        if pid == 0:  # a worker: its own loader, the port shared through SO_REUSEPORT
            serve(
                args.link,
                args.host,
                args.port,
                args.health_port + i,
                shared=args.shared,
                reuse_port=True,
            )
            os._exit(0)
        children.append(pid)

    def forward(signum: int, _: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for child in children:
        os.waitpid(child, 0)


if __name__ == "__main__":
    main()
