"""What the real-model-server tests share: free loopback ports (the emulators' helper), one
HTTP call that never raises, and steady traffic that records which version answered each
request and every failure."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from modelswap.testing.emulators import free_port

__all__ = ["Traffic", "call", "free_port"]


def call(
    url: str, body: Any = None, method: str | None = None, raw: bytes | None = None
) -> tuple[int, Any]:
    """(status, JSON or text); status 0 when nothing answered (not listening, a reset)."""
    data = json.dumps(body).encode() if body is not None else raw
    headers = {"Content-Type": "application/json"} if body is not None else {}
    req = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310 - loopback only
            text = r.read().decode()
            status = r.status
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError as e:
        return 0, str(e)
    try:
        return status, json.loads(text) if text else None
    except ValueError:
        return status, text


class Traffic:
    """A thread sending `send()` every 10 ms: `served` holds which() of each answer, `failures`
    every request that did not answer 200 once one had (before, there may be no model yet)."""

    def __init__(self, send: Callable[[], tuple[int, Any]], which: Callable[[Any], str]) -> None:
        self.send, self.which = send, which
        self.served: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Traffic:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            code, answer = self.send()
            if code == 200:
                self.served.append(self.which(answer))
            elif self.served:
                self.failures.append(f"{code}: {answer}")
            time.sleep(0.01)

    def last(self) -> str | None:
        return self.served[-1] if self.served else None

    def only_since(self, count: int, more: int = 20) -> set[str]:
        """Which versions answered the next `more` requests after the first `count`."""
        deadline = time.monotonic() + 30
        while len(self.served) < count + more and time.monotonic() < deadline:
            time.sleep(0.05)
        return set(self.served[count:])
