"""/health and /metrics on a local port, with the standard library only: the loader lives in
someone else's process and must not bring a web framework with it."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class HealthServer:
    def __init__(
        self,
        host: str,
        port: int,
        health: Callable[[], tuple[int, dict[str, Any]]],
        metrics: Callable[[], str],
    ) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] == "/health":
                    code, body = health()
                    self._send(code, "application/json", json.dumps(body).encode())
                elif self.path.split("?")[0] == "/metrics":
                    self._send(200, "text/plain; version=0.0.4", metrics().encode())
                else:
                    self._send(404, "application/json", b'{"error": "not found"}')

            def _send(self, code: int, ctype: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return  # the host app owns its logs; health probes would flood them

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": 0.2},
            daemon=True,
            name="modelswap-health",
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
