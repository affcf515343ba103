"""Leases in the store itself: a create-only lock object that says who holds it, and until when.

Terraform's S3 lock file works the same way. The holder refreshes the lease while it works and
confirms it (one synchronous refresh) before the write that makes its work visible, so a lease
cannot expire unnoticed. A lease that expired, or whose holder was a process on this host that
no longer exists, is taken over with a compare-and-swap: of several breakers exactly one wins,
and only the winner finishes what the dead holder left (its `intent`), before doing its own work.
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

from modelswap.errors import (
    Busy,
    LeaseLost,
    ObjectExists,
    ObjectNotFound,
    PreconditionFailed,
    StoreError,
)
from modelswap.metadata import parse_time, rfc3339
from modelswap.store import Store

LEASE_TTL_S = 120.0
# Refreshing four times per TTL leaves three failed refreshes of margin before expiry.
REFRESHES_PER_TTL = 4
# Stop trusting a lease this long before it expires: a write sent at that moment still lands
# while the lease holds, even on a slow store.
SAFETY_MARGIN = 0.25


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

    def __init__(
        self, store: Store, key: str, body: dict[str, Any], etag: str, *, ttl_s: float, sent: float
    ):
        self.store, self.key, self.body, self.etag = store, key, body, etag
        self.ttl_s = ttl_s
        self.lost: str | None = None
        # Counted from `sent`, the moment before the write was sent: it errs early, never late.
        self._valid_until = sent + ttl_s * (1 - SAFETY_MARGIN)
        self._stop = threading.Event()
        self._mu = threading.Lock()
        self._thread: threading.Thread | None = None
        self._released = False

    @property
    def owner(self) -> str:
        return str(self.body["owner"])

    def keep_alive(self) -> Lease:
        """Refresh the lease in the background, for work that may outlast its TTL."""
        self._thread = threading.Thread(target=self._refresh_loop, daemon=True)
        self._thread.start()
        return self

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.ttl_s / REFRESHES_PER_TTL):
            with contextlib.suppress(StoreError):  # down: try next round; check() sees expiry
                self._refresh()
            if self.lost:
                return

    def _refresh(self) -> None:
        with self._mu:
            if self.lost:
                return
            sent = time.monotonic()
            body = dict(self.body, expires=rfc3339(_expiry(self.ttl_s)))
            try:
                self.etag = self.store.put_if_match(self.key, _encode(body), self.etag)
            except PreconditionFailed:
                self.lost = "the lock was taken over by another operator after it expired"
                return
            self.body = body
            self._valid_until = sent + self.ttl_s * (1 - SAFETY_MARGIN)

    def check(self) -> None:
        """Raise Busy if the lease is lost or may have expired."""
        if not self.lost and time.monotonic() > self._valid_until:
            self.lost = f"it was not refreshed within its {self.ttl_s:g} s TTL"
        if self.lost:
            raise LeaseLost(
                f"lost the lock {self.key}: {self.lost}; stopped before making anything visible"
            )

    def confirm(self) -> None:
        """Prove the lease is held right now by refreshing it; call before the write that
        makes the work visible (metadata.json). Raises Busy if that cannot be proven."""
        self.check()
        try:
            self._refresh()
        except StoreError as e:
            raise LeaseLost(
                f"could not confirm the lock {self.key} before the final write: {e}",
                hint="nothing was made visible; retry the command",
            ) from e
        self.check()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._mu:
            if self._released or self.lost:
                return  # a lost lease is someone else's now: never delete theirs
            self._released = True
            with contextlib.suppress(StoreError):  # it expires by itself
                self.store.delete(self.key, if_match=self.etag)

    def abandon(self) -> None:
        """Stop refreshing and leave the lock in place, so whoever takes it next finishes
        the intent it records (used when the outcome of our last write is unknown)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._released = True

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _expiry(ttl_s: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=ttl_s)


def _encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True).encode()


def _parse(data: bytes) -> dict[str, Any]:
    try:
        body = json.loads(data)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def acquire(
    store: Store,
    key: str,
    what: str,
    *,
    actor: str,
    intent: dict[str, Any] | None = None,
    on_stale: Callable[[dict[str, Any], Lease], None] | None = None,
    wait_s: float = 0.0,
    ttl_s: float = LEASE_TTL_S,
) -> Lease:
    """Take the lock at key or raise Busy naming who holds it. `what` is for messages.

    A live holder is waited for up to wait_s. A stale lock is taken over by compare-and-swap;
    the winner runs on_stale(dead holder's body, its new lease) before returning."""
    now = datetime.now(UTC)
    body = {
        "owner": uuid.uuid4().hex,
        "actor": actor,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "acquired": rfc3339(now),
        "expires": rfc3339(_expiry(ttl_s)),
        "intent": intent,
    }
    deadline = time.monotonic() + wait_s
    pause = 0.02
    for _ in range(100):  # bounded: each pass either waits or lost a race that moved on
        sent = time.monotonic()
        body["expires"] = rfc3339(_expiry(ttl_s))  # from this attempt, not from before waiting
        try:
            etag = store.put_new(key, _encode(body))
        except ObjectExists:
            pass
        else:
            return Lease(store, key, body, etag, ttl_s=ttl_s, sent=sent)
        try:
            held = store.read(key, max_bytes=1 << 16)
        except ObjectNotFound:
            continue  # released between our two calls
        held_body = _parse(held.data)
        if is_stale(held_body, datetime.now(UTC)):
            sent = time.monotonic()
            body["expires"] = rfc3339(_expiry(ttl_s))
            try:
                etag = store.put_if_match(key, _encode(body), held.etag)
            except PreconditionFailed:
                continue  # another breaker won, or the holder released it
            lease = Lease(store, key, body, etag, ttl_s=ttl_s, sent=sent)
            if on_stale is not None:
                try:
                    on_stale(held_body, lease)
                except BaseException:
                    lease.release()
                    raise
            return lease
        if time.monotonic() + pause > deadline:
            raise Busy(
                f"{what} is locked by {held_body.get('actor', '?')} on "
                f"{held_body.get('host', '?')} (pid {held_body.get('pid', '?')}) "
                f"since {held_body.get('acquired', '?')}",
                hint=f"wait for that command to finish; if it died, the lock expires at "
                f"{held_body.get('expires', '?')}",
            )
        time.sleep(pause)
        pause = min(0.5, pause * 2)
    raise Busy(f"{what} is contended: could not take its lock", hint="retry the command")
