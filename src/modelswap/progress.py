"""Progress of long transfers on a terminal: bytes, rate and time left, redrawn in place on
stderr the way `aws s3 cp` and pip do, and nothing at all when stderr is not a terminal."""

from __future__ import annotations

import sys
import threading
import time
from typing import Protocol, TextIO

from modelswap.render import size_str

REDRAW_S = 0.2


class ProgressSink(Protocol):
    """Told the size of a long transfer, then every chunk's (Progress below draws them)."""

    def start(self, total: int) -> None: ...

    def add(self, nbytes: int) -> None: ...


class Progress:
    def __init__(self, what: str, total: int, stream: TextIO | None = None, *, enabled: bool):
        self.what, self.total = what, total
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.done = 0
        self._started = time.monotonic()
        self._drawn = 0.0
        self._mu = threading.Lock()  # parts arrive on several threads

    @classmethod
    def on_terminal(cls, what: str, total: int = 0, *, quiet: bool = False) -> Progress:
        return cls(what, total, enabled=not quiet and sys.stderr.isatty())

    def start(self, total: int) -> None:
        """The size of the whole job, once the caller (the API) knows it."""
        self.total = total

    def add(self, nbytes: int) -> None:
        if not self.enabled:
            return
        with self._mu:
            self.done += nbytes
            now = time.monotonic()
            if now - self._drawn >= REDRAW_S:
                self._drawn = now
                self._draw(now)

    def _draw(self, now: float, end: str = "") -> None:
        elapsed = max(now - self._started, 1e-6)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        line = (
            f"{self.what}: {size_str(self.done)} / {size_str(self.total)}  "
            f"{size_str(int(rate))}/s  {int(left) // 60}:{int(left) % 60:02d} left"
        )
        self.stream.write(f"\r{line:<78}{end}")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            with self._mu:
                self._draw(time.monotonic(), end="\n")
