"""A small model server that serves whatever version the agent has linked.

    python examples/server.py --link DEST/digits/current --port 8080 --health-port 9102

POST /predict {"inputs": [[64 floats], ...]} -> {"version": "v2", "predictions": [3, ...]}.
Every answer names the version that computed it. The ModelLoader swaps versions under the
server without dropping a request; /health on the health port says what is loaded.
"""

from __future__ import annotations

import argparse
import asyncio
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--link", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--health-port", type=int, default=9102)
    args = ap.parse_args()
    loader = ModelLoader(args.link, health_port=args.health_port, poll_interval_s=0.5).start()
    app = web.Application()
    app[LOADER] = loader
    app.router.add_post("/predict", predict)

    async def on_cleanup(_: web.Application) -> None:
        loader.stop()

    app.on_cleanup.append(on_cleanup)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # graceful stop on SIGTERM too
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
