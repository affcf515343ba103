"""/health and /metrics on a local port, with the standard library only: the loader lives in
someone else's process and must not bring a web framework with it.

One thread runs a selectors loop over non-blocking sockets, so the server's cost is bounded
whatever its clients do: at most `max_clients` connections are held (a new one evicts the
oldest, so clients that connect and send nothing cannot lock a probe out), each is closed
`client_timeout_s` after it was accepted, and a request is at most 8 KiB of headers. A client
that goes away mid-request or mid-response is simply closed: nothing is printed into the host
app's stderr, and sends use MSG_NOSIGNAL so an app that restored SIGPIPE is not killed by it.
"""

from __future__ import annotations

import contextlib
import http
import json
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from modelswap.errors import ModelswapError

log = logging.getLogger("modelswap.loader")
MAX_REQUEST_BYTES = 8192
MAX_BUFFERED_BYTES = 64 << 20  # replies held for clients that do not read them (metadata is big)
_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)


class HealthPortUnavailable(ModelswapError):
    default_hint = (
        "another process (or another ModelLoader in this one) listens there: pass a free "
        "health_port=, health_port=0 for any free port, or health_port=None for no /health"
    )


@dataclass
class _Client:
    sock: socket.socket
    deadline: float
    inbox: bytearray = field(default_factory=bytearray)
    outbox: memoryview | None = None


class HealthServer:
    """Bound (listening) when constructed, serving once started; stop() joins its thread."""

    def __init__(
        self,
        host: str,
        port: int,
        health: Callable[[], tuple[int, dict[str, Any]]],
        metrics: Callable[[], str],
        *,
        max_clients: int = 64,
        client_timeout_s: float = 5.0,
    ) -> None:
        self._health, self._metrics = health, metrics
        self.max_clients, self.client_timeout_s = max_clients, client_timeout_s
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self._listener = socket.create_server((host, port), family=family, backlog=128)
        except OSError as e:
            why = os.strerror(e.errno) if e.errno else str(e)
            raise HealthPortUnavailable(f"/health cannot listen on {host}:{port}: {why}") from e
        self._listener.setblocking(False)
        self.port = int(self._listener.getsockname()[1])
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._clients: dict[socket.socket, _Client] = {}  # insertion order: oldest first
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, daemon=True, name="modelswap-health")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for client in list(self._clients.values()):
            self._close(client)
        self._selector.close()
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()

    # -- the loop --------------------------------------------------------------------------

    def _serve(self) -> None:
        while not self._stopping:
            try:
                for key, mask in self._selector.select(timeout=0.25):
                    if key.fileobj is self._listener:
                        self._accept()
                    elif key.fileobj is self._wake_r:
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(64)
                    else:
                        self._service(key.data, mask)
                self._expire()
            except Exception:  # the loop outlives any bug in one pass (logged)
                log.exception("loader.health_loop_failed")
                time.sleep(0.1)

    def _accept(self) -> None:
        for _ in range(self.max_clients):  # then give the connections already held a turn
            try:
                sock, _addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # e.g. EMFILE: the pending connection waits in the backlog
                log.debug("loader.health_accept_failed: %s", e)
                return
            while len(self._clients) >= self.max_clients:
                self._close(next(iter(self._clients.values())))  # evict the oldest
            sock.setblocking(False)
            client = _Client(sock, time.monotonic() + self.client_timeout_s)
            self._clients[sock] = client
            self._selector.register(sock, selectors.EVENT_READ, client)

    def _expire(self) -> None:
        now = time.monotonic()
        for client in [c for c in self._clients.values() if c.deadline <= now]:
            self._close(client)

    def _service(self, client: _Client, mask: int) -> None:
        try:
            if mask & selectors.EVENT_READ and client.outbox is None:
                self._read(client)
            if client.outbox is not None:
                self._write(client, client.outbox)
        except OSError:  # reset, broken pipe, ...: the client went away; nothing to report
            self._close(client)

    def _read(self, client: _Client) -> None:
        data = client.sock.recv(4096)
        if not data:
            self._close(client)
            return
        client.inbox += data
        end = client.inbox.find(b"\r\n\r\n")
        if end < 0:
            end = client.inbox.find(b"\n\n")
        if end < 0:
            if len(client.inbox) > MAX_REQUEST_BYTES:
                self._respond(client, 431, "application/json", b'{"error": "request too large"}')
            return
        line = bytes(client.inbox[: client.inbox.find(b"\n")]).decode("latin-1").split()
        self._route(client, line)

    def _route(self, client: _Client, line: list[str]) -> None:
        if len(line) != 3 or not line[2].startswith("HTTP/"):
            self._respond(client, 400, "application/json", b'{"error": "bad request"}')
            return
        method, path = line[0], line[1].split("?")[0]
        if method not in ("GET", "HEAD"):
            self._respond(client, 405, "application/json", b'{"error": "GET only"}')
            return
        try:
            if path == "/health":
                code, body = self._health()
                reply = code, "application/json", json.dumps(body).encode()
            elif path == "/metrics":
                reply = 200, "text/plain; version=0.0.4", self._metrics().encode()
            else:
                reply = 404, "application/json", b'{"error": "not found"}'
        except Exception:  # a bug in the payload is logged; the server lives on
            log.exception("loader.health_failed")
            reply = 500, "application/json", b'{"error": "internal error"}'
        self._respond(client, *reply, method)

    def _respond(
        self, client: _Client, code: int, ctype: str, body: bytes, method: str = "GET"
    ) -> None:
        head = (
            f"HTTP/1.1 {code} {http.HTTPStatus(code).phrase}\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        reply = head + (b"" if method == "HEAD" else body)
        held = [c for c in self._clients.values() if c.outbox is not None and c is not client]
        buffered = sum(len(c.outbox) for c in held if c.outbox is not None)
        for oldest in held:  # readers that stall do not get to pile replies up in our memory
            if buffered + len(reply) <= MAX_BUFFERED_BYTES:
                break
            buffered -= len(oldest.outbox) if oldest.outbox is not None else 0
            self._close(oldest)
        client.outbox = memoryview(reply)
        self._selector.modify(client.sock, selectors.EVENT_WRITE, client)

    def _write(self, client: _Client, outbox: memoryview) -> None:
        try:
            sent = client.sock.send(outbox, _NOSIGNAL)
        except (BlockingIOError, InterruptedError):
            return
        client.outbox = outbox[sent:]
        if not client.outbox:
            with contextlib.suppress(OSError):
                client.sock.shutdown(socket.SHUT_WR)
            self._close(client)

    def _close(self, client: _Client) -> None:
        if self._clients.pop(client.sock, None) is None:
            return
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(client.sock)
        client.sock.close()
