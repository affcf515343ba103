"""A fault-injecting HTTP/1.1 proxy that sits between a client (boto3) and a real S3 server.

Faults are made on the wire, not by patching boto3: a patched client passes while the real
wiring (retries, timeouts, connection handling) is broken. The proxy answers one request per
client connection and opens one upstream connection per request, so every request is a clean
unit a fault can hit: the write lands but the reply is lost, the connection resets halfway, the
server stalls or trickles, or answers 503 before or after applying the write.
"""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

ACTIONS = frozenset(
    {"drop_reply", "reset_request", "reset_response", "stall", "stall_body", "trickle"}
    | {"503_after", "503_before"}
)
_503_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>ServiceUnavailable</Code>'
    b"<Message>injected after forwarding</Message></Error>"
)
_503 = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(_503_BODY), _503_BODY)
)


@dataclass
class Fault:
    """One fault: the requests it matches, and which of those matches it hits.

    Every fault counts the requests that match it; when several faults are in range for the same
    request, the first one added is applied."""

    action: str
    method: str | None = None
    path: str = ""
    header: str | None = None
    value: str = ""  # with `header`: a regex its value must contain, e.g. r"bytes=0-"
    nth: int = 1
    times: int = 1
    rate: float = 2048.0
    _matches: int = field(default=0, init=False, repr=False)
    _fired: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown fault action {self.action!r}; one of {sorted(ACTIONS)}")

    def matches(self, method: str, target: str, headers: dict[str, str]) -> bool:
        """Whether a request has this fault's method, a target the path regex finds, the header."""
        return (
            (self.method is None or self.method.upper() == method)
            and re.search(self.path, target) is not None
            and (
                self.header is None
                or (
                    self.header.lower() in headers
                    and re.search(self.value, headers[self.header.lower()]) is not None
                )
            )
        )

    def count_match(self) -> bool:
        """Count one more match; whether this match is one the fault hits (nth, times)."""
        self._matches += 1
        return self.nth <= self._matches < self.nth + (self.times or self._matches)  # 0: all


@dataclass
class Seen:
    """A request the proxy read the head of; status is the one sent to the client, if any."""

    method: str
    target: str
    status: int | None = None
    action: str | None = None


class _Reader:
    """Buffered reads from a socket; raises ConnectionError when the peer closes early."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buf = sock, bytearray()

    def _fill(self) -> None:
        data = self.sock.recv(1 << 16)
        if not data:
            raise ConnectionError("peer closed")
        self.buf += data

    def until(self, marker: bytes) -> bytes:
        while (i := self.buf.find(marker)) < 0:
            if len(self.buf) > 1 << 16:
                raise ValueError("head too long")
            self._fill()
        return self.exact(i + len(marker))

    def exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out


def _parse_head(head: bytes) -> tuple[list[bytes], dict[str, str]]:
    lines = head[:-4].split(b"\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return lines, headers


def _rewrite(lines: list[bytes], drop: tuple[bytes, ...]) -> bytes:
    """The head with the named headers removed and `Connection: close` added: one exchange."""
    kept = [ln for ln in lines[1:] if ln.split(b":", 1)[0].strip().lower() not in drop]
    return b"\r\n".join([lines[0], *kept, b"Connection: close", b"", b""])


def _read_body(reader: _Reader, headers: dict[str, str]) -> bytes:
    """The raw body bytes; chunked bodies are kept as sent, parsed only to find their end."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raw = bytearray()
        while True:
            line = reader.until(b"\r\n")
            raw += line
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:  # trailers follow, then an empty line
                while (trailer := reader.until(b"\r\n")) != b"\r\n":
                    raw += trailer
                return bytes(raw + b"\r\n")
            raw += reader.exact(size + 2)
    return reader.exact(int(headers.get("content-length", "0") or 0))


def _rst(sock: socket.socket) -> None:
    # SO_LINGER on with a zero timeout makes close() send RST instead of FIN.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class FaultProxy:
    """The proxy; `start()` binds 127.0.0.1 on a free port and sets `endpoint`."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.endpoint = ""
        self.requests: list[Seen] = []
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._socks: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._listener: socket.socket | None = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> FaultProxy:
        """Listen and accept in a daemon thread; returns self."""
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)  # so the accept loop sees stop() promptly
        self.endpoint = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._spawn(self._accept_loop)
        return self

    def stop(self) -> None:
        """Close the listener and every open connection, and wait for the threads to end."""
        self._stop.set()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with self._lock:  # again each pass: a connection accepted meanwhile is closed too
                socks, threads = list(self._socks), list(self._threads)
            if not threads:
                break
            for s in socks:  # shutdown wakes a thread blocked in recv on that socket
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
            threads[0].join(timeout=0.05)
        if self._listener is not None:
            self._listener.close()

    def add(self, fault: Fault) -> Fault:
        """Arm a fault; returns it, to pass to `fired()` later."""
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        """Remove every fault; requests from now on pass through."""
        with self._lock:
            self._faults.clear()

    def count(self, method: str | None = None, path: str = "") -> int:
        """How many requests seen had that method (any if None) and a target the regex finds."""
        with self._lock:
            seen = list(self.requests)
        m = method and method.upper()
        return sum(1 for r in seen if m in (None, r.method) and re.search(path, r.target))

    def fired(self, fault: Fault) -> int:
        """How many times the fault was applied to a request."""
        with self._lock:
            return fault._fired

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        def run() -> None:
            try:
                target(*args)
            finally:
                with self._lock:
                    self._threads.discard(threading.current_thread())

        t = threading.Thread(target=run, daemon=True)
        with self._lock:
            self._threads.add(t)
        t.start()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._spawn(self._serve, client)

    def _track(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._socks.add(sock)
        if self._stop.is_set():  # stop() may have run before we were tracked
            sock.shutdown(socket.SHUT_RDWR)
        return sock

    def _pick(self, seen: Seen, headers: dict[str, str]) -> Fault | None:
        with self._lock:
            self.requests.append(seen)
            chosen = None
            for f in self._faults:  # every matching fault counts, the first in range applies
                if f.matches(seen.method, seen.target, headers) and f.count_match():
                    chosen = chosen or f
            if chosen is not None:
                chosen._fired += 1
                seen.action = chosen.action
            return chosen

    def _untrack(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.discard(sock)
        sock.close()

    def _serve(self, client: socket.socket) -> None:
        try:
            self._track(client).settimeout(60)  # a safety net; stop() wakes blocked reads
            self._handle(client, _Reader(client))
        except (OSError, ValueError, IndexError):
            pass  # the client went away or sent garbage: this connection ends, the proxy lives
        finally:
            self._untrack(client)

    def _forward(self, lines: list[bytes], body: bytes) -> bytes:
        """Send the request upstream on a fresh connection; the whole response, read to EOF."""
        upstream = self._track(socket.create_connection(self.upstream, timeout=30))
        try:
            upstream.sendall(_rewrite(lines, (b"connection", b"expect")) + body)
            response = bytearray()
            while chunk := upstream.recv(1 << 16):  # we sent Connection: close, so EOF ends it
                response += chunk
            return bytes(response)
        finally:
            self._untrack(upstream)

    def _handle(self, client: socket.socket, reader: _Reader) -> None:
        lines, headers = _parse_head(reader.until(b"\r\n\r\n"))
        method, target = lines[0].decode("latin-1").split(" ")[:2]
        seen = Seen(method, target)
        fault = self._pick(seen, headers)
        action = fault.action if fault else None
        if action == "stall":
            self._idle(client)
            return
        if headers.get("expect", "").lower() == "100-continue":
            client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")  # we own the exchange upstream
        if action == "reset_request":
            length = int(headers.get("content-length", "0") or 0)
            reader.exact(length // 2 if length else int("transfer-encoding" in headers))
            _rst(client)
            return
        body = _read_body(reader, headers)
        response = b"" if action == "503_before" else self._forward(lines, body)
        if action in {"503_before", "503_after"}:
            seen.status = 503
            client.sendall(_503)
            return
        if action == "drop_reply":
            _rst(client)
            return
        if (end := response.find(b"\r\n\r\n") + 4) < 4:
            raise ConnectionError("upstream closed without a response")
        rlines, _ = _parse_head(response[:end])
        rhead, rbody = _rewrite(rlines, (b"connection",)), response[end:]
        seen.status = int(rlines[0].split(b" ")[1])
        if action == "reset_response":
            client.sendall(rhead + rbody[: len(rbody) // 2])
            _rst(client)
        elif action == "stall_body":
            client.sendall(rhead + rbody[: max(1, len(rbody) // 4) if rbody else 0])
            self._idle(client)
        elif action == "trickle" and fault is not None:
            self._trickle(client, rhead + rbody, fault.rate)
        else:
            client.sendall(rhead + rbody)

    def _idle(self, client: socket.socket) -> None:
        """Hold the connection open, answering nothing, until the client closes or stop()."""
        client.settimeout(0.1)
        while not self._stop.is_set():
            try:
                if not client.recv(1 << 16):
                    return
            except TimeoutError:
                continue

    def _trickle(self, client: socket.socket, data: bytes, rate: float) -> None:
        piece = max(1, int(rate / 10))  # a piece every 0.1 s keeps the rate and stop() prompt
        for i in range(0, len(data), piece):
            client.sendall(data[i : i + piece])
            if i + piece < len(data) and self._stop.wait(0.1):
                return
