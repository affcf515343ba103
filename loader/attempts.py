"""What the loader has tried: the identity of a version folder, and the backoff for one that
failed to load.

The path a link resolves to is not enough to say "tried that already": the agent repairs a
damaged copy in place (a new file renamed over the old one, or a whole new install of the
folder), and a copy truncated by a crash looks like any other path. The identity is the
folder's inode and the (inode, size, mtime, ctime) of every entry in it: the kernel moves ctime
on every write, truncate, chmod or rename and no call sets it back, and a replaced file or
folder has a new inode, so any repair is a new identity, which is tried at once (for the live
version too: a copy repaired under the version that serves is swapped in). The folder's own
times are left out: they move only when entries come and go, which the entries show, or when
the agent touches the folder to mark it recently used, which changes no byte. A build that
failed on an unchanged identity is retried too (the cause may have been transient: memory,
file descriptors, a volume that hiccuped), with capped exponential backoff.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

Stat = tuple[str, int, int, int, int]


@dataclass(frozen=True)
class Identity:
    path: str
    stats: tuple[Stat, ...]

    @classmethod
    def of(cls, folder: Path) -> Identity:
        """The folder's identity now (raises OSError when it cannot be read)."""

        def entry(name: str, st: os.stat_result) -> Stat:
            return (name, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

        stats: list[Stat] = [(".", os.stat(folder).st_ino, 0, 0, 0)]
        with os.scandir(folder) as it:
            for e in it:
                stats.append(entry(e.name, e.stat(follow_symlinks=False)))
        return cls(str(folder), tuple(sorted(stats)))


def backoff_s(failures: int, base: float, cap: float) -> float:
    """base, 2 base, 4 base, ... up to cap, for the 1st, 2nd, 3rd ... consecutive failure."""
    return float(min(cap, base * 2.0 ** min(max(failures - 1, 0), 62)))


class Retry:
    """Consecutive failed builds of one identity, and when to try it again."""

    def __init__(self, base_s: float, cap_s: float) -> None:
        self.base_s, self.cap_s = base_s, cap_s
        self.identity: Identity | None = None
        self.failures = 0
        self._due = 0.0

    def due(self, identity: Identity) -> bool:
        """Whether to build `identity` now: a new one at once, a failed one when its wait ends."""
        return identity != self.identity or time.monotonic() >= self._due

    def failed(self, identity: Identity) -> float:
        """Record a failed build; returns the seconds until the next attempt."""
        self.failures = self.failures + 1 if identity == self.identity else 1
        self.identity = identity
        delay = backoff_s(self.failures, self.base_s, self.cap_s)
        self._due = time.monotonic() + delay
        return delay

    def clear(self) -> None:
        self.identity, self.failures = None, 0

    def retry_in_s(self) -> float | None:
        if self.identity is None:
            return None
        return round(max(0.0, self._due - time.monotonic()), 3)
