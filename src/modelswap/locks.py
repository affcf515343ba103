"""Leases in the store itself: a create-only lock object that says who holds it, and until when.

Terraform's S3 lock file works the same way. The holder refreshes the lease while it works; a
lease that expired, or whose holder was a process on this host that no longer exists, is
broken with a conditional delete, so two breakers cannot both win. The lock body also carries
the holder's intent, which lets the next operator finish a pointer move whose process died
between moving the pointer and logging the event.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from modelswap.errors import Busy, ObjectExists, ObjectNotFound, PreconditionFailed, StoreError
from modelswap.metadata import parse_time, rfc3339
from modelswap.store import Store

LEASE_TTL_S = 120.0
REFRESH_EVERY_S = 30.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(body: dict[str, Any], now: datetime) -> bool:
    try:
        expires = parse_time(str(body["expires"]))
    except (KeyError, ValueError):
        return True  # an unreadable lock protects nothing
    if expires < now:
        return True
    pid = body.get("pid")
    return body.get("host") == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid)


class Lease:
    """A held lock object. Use as a context manager; release() is idempotent."""

    def __init__(self, store: Store, key: str, body: dict[str, Any], etag: str) -> None:
        self.store, self.key, self.body, self.etag = store, key, body, etag
        self.lost: str | None = None
        self._stop = threading.Event()
        self._mu = threading.Lock()
        self._thread: threading.Thread | None = None

    def keep_alive(self) -> Lease:
        """Refresh the lease in the background, for work that may outlast LEASE_TTL_S."""
        self._thread = threading.Thread(target=self._refresh_loop, daemon=True)
        self._thread.start()
        return self

    def _refresh_loop(self) -> None:
        while not self._stop.wait(REFRESH_EVERY_S):
            with self._mu:
                body = dict(self.body, expires=rfc3339(_expiry()))
                try:
                    self.etag = self.store.put_if_match(self.key, _encode(body), self.etag)
                    self.body = body
                except PreconditionFailed:
                    self.lost = "the lock was broken by another operator"
                    return
                except StoreError:
                    continue  # the store is down; try again next round, the TTL has margin

    def check(self) -> None:
        if self.lost:
            raise Busy(f"lost the lock {self.key}: {self.lost}", hint="retry the command")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._mu, contextlib.suppress(StoreError):
            self.store.delete(self.key, if_match=self.etag)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _expiry() -> datetime:
    return datetime.now(UTC) + timedelta(seconds=LEASE_TTL_S)


def _encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True).encode()


def acquire(
    store: Store,
    key: str,
    what: str,
    *,
    actor: str,
    intent: dict[str, Any] | None = None,
    on_stale: Callable[[dict[str, Any]], None] | None = None,
) -> Lease:
    """Take the lock at key or raise Busy naming who holds it. `what` is for messages."""
    now = datetime.now(UTC)
    body = {
        "owner": uuid.uuid4().hex,
        "actor": actor,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "acquired": rfc3339(now),
        "expires": rfc3339(_expiry()),
        "intent": intent,
    }
    for _ in range(5):
        try:
            return Lease(store, key, body, store.put_new(key, _encode(body)))
        except ObjectExists:
            pass
        try:
            held = store.read(key, max_bytes=1 << 16)
        except ObjectNotFound:
            continue  # released between our two calls
        try:
            held_body = json.loads(held.data)
            if not isinstance(held_body, dict):
                held_body = {}
        except ValueError:
            held_body = {}
        if not is_stale(held_body, datetime.now(UTC)):
            raise Busy(
                f"{what} is locked by {held_body.get('actor', '?')} on "
                f"{held_body.get('host', '?')} (pid {held_body.get('pid', '?')}) "
                f"since {held_body.get('acquired', '?')}",
                hint=f"wait for that command to finish; if it died, the lock expires at "
                f"{held_body.get('expires', '?')}",
            )
        if on_stale is not None:
            on_stale(held_body)
        with contextlib.suppress(PreconditionFailed):
            store.delete(key, if_match=held.etag)
        time.sleep(0.01)
    raise Busy(f"{what} is contended: could not take its lock", hint="retry the command")
