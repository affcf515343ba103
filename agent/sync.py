"""One straight sync pass: read the pointer, compare, fetch, verify, swap. Never sleeps, never
retries: the loop in run.py owns time and backoff."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from modelswap import signing
from modelswap.download import FetchStats, fetch_version, verify_local
from modelswap.errors import (
    IntegrityError,
    InvalidMetadata,
    ModelswapError,
    ObjectNotFound,
    SignatureError,
    VersionNotFound,
)
from modelswap.metadata import Metadata, rfc3339, utc_now
from modelswap.names import POINTER_MAX_BYTES, parse_pointer
from modelswap.pointers import pointer_key
from modelswap.registry import Registry
from modelswap.store import Store
from modelswap.volume import Layout

from . import served
from .checks import Snapshot, local_error, snapshot
from .follow import Choice, Follower
from .state import AgentState

# Failures that say the desired version cannot be served (not that the store or disk failed).
REFUSALS = (IntegrityError, SignatureError, InvalidMetadata, VersionNotFound)


@dataclass(frozen=True)
class SyncResult:
    desired: str
    active: str
    swapped: bool
    downloaded_bytes: int
    duration_s: float
    previous: str | None


class Syncer:
    def __init__(
        self,
        store: Store,
        layout: Layout,
        state: AgentState,
        keep: int,
        cancel: threading.Event,
        *,
        scrub_interval_s: float = 3600.0,
        trust: list[signing.TrustedKey] | None = None,
        follow_rollouts: bool = False,
        loader_url: str | None = None,
        server_checks: bool = False,
    ) -> None:
        self.loader_url = loader_url
        # A loader or a --reload server says whether the linked version is served; its
        # refusal stays until it serves it (run.py and served.py clear it), not until this
        # pass links it.
        self.server_checks = server_checks or bool(loader_url)
        self.scrub_interval_s = scrub_interval_s
        self.trust = list(trust or [])
        self._signers: dict[str, signing.TrustedKey] = {}  # checked by this process
        self.store = store
        self.registry = Registry(store)
        self.layout = layout
        self.state = state
        self.keep = keep
        self.cancel = cancel
        self._etag: dict[str, str | None] = {}  # per pointer: CURRENT, and CANARY in a rollout
        self._parsed: dict[str, str | ModelswapError | None] = {}
        self.follower = Follower(store, state, enabled=follow_rollouts)
        self._broken: set[str] = set()
        self._verified: dict[str, Snapshot] = {}  # version -> files as they were when hashed
        self._scrubbed = time.monotonic()

    def startup(self) -> list[str]:
        """Clear crash leftovers and check every local copy; returns what was found wrong.
        Raises LocalIOError (one line, with a hint) when --dest cannot be used."""
        try:
            found = [f"removed leftover {x}" for x in self.layout.prepare()]
            if not self.trust:
                self.layout.forget_signer()  # an agent that checks no signature vouches for none
        except OSError as e:
            raise local_error(e, f"cannot use --dest {self.layout.root.parent}") from e
        for version in self.layout.local_versions():
            problem = self._verify(version)
            if problem:
                found.append(f"local copy of {version} is damaged: {problem}")
                if version == self.layout.linked_version():
                    self._broken.add(version)  # replaced by a fresh copy on the next sync
                else:
                    with contextlib.suppress(OSError):
                        self.layout.remove_version(version)
        self._publish_local()
        return found

    def _verify(self, version: str, meta: Metadata | None = None) -> str | None:
        """Re-hash a local copy in full (against `meta`, else its own metadata.json); None
        when intact, and then its snapshot is recorded."""
        folder = self.layout.versions / version
        try:
            if meta is None:
                path = folder / "metadata.json"
                meta = Metadata.parse(path.read_bytes(), str(path), version)
            problems = verify_local(folder, meta, full=True)
        except (OSError, ModelswapError) as e:
            problems = [str(e)]
        if problems or meta is None:
            self._verified.pop(version, None)
            return problems[0] if problems else "no metadata"
        snap = snapshot(folder, meta)
        if snap is not None:
            self._verified[version] = snap
        return None

    def _unchanged(self, version: str, meta: Metadata) -> bool:
        """Whether a local copy is still the bytes that were verified: by its snapshot
        (stat calls only), else by a full re-hash."""
        snap = self._verified.get(version)
        if snap is not None and snapshot(self.layout.versions / version, meta) == snap:
            return True
        return self._verify(version, meta) is None

    def _scrub(self, linked: str) -> None:
        """Check the linked copy every pass (stat calls) and re-hash it every scrub interval;
        a copy found damaged is re-fetched and relinked by this same pass."""
        path = self.layout.versions / linked / "metadata.json"
        try:
            meta = Metadata.parse(path.read_bytes(), str(path), linked)
        except (OSError, ModelswapError):
            self._broken.add(linked)
            return
        due = time.monotonic() - self._scrubbed >= self.scrub_interval_s
        if due:
            self._scrubbed = time.monotonic()
            self._verified.pop(linked, None)
        if not self._unchanged(linked, meta):
            self._broken.add(linked)

    def _desired(self) -> str:
        """The version the followed pointer names: CURRENT, or CANARY for an instance in a
        rollout's share (CURRENT again if CANARY is not set)."""
        choice = self.follower.choose()
        try:
            desired = self._read_pointer(choice.pointer)
        except ObjectNotFound:
            if choice.pointer == self.state.pointer:
                raise
            choice = Choice(self.state.pointer, f"{choice.pointer} is not set; {choice.reason}")
            desired = self._read_pointer(choice.pointer)
        canary = choice.pointer != self.state.pointer
        if canary and choice.version is not None and desired != choice.version:
            # A CANARY the rollout has not set (yet, or a stale one): never followed.
            why = f"{choice.pointer} names {desired}, not the rollout's {choice.version}"
            choice = Choice(self.state.pointer, why, choice.rollout, choice.bucket)
            desired = self._read_pointer(choice.pointer)
        with self.state.lock:
            self.state.follows = choice.pointer
            self.state.follow_reason = choice.reason
            self.state.rollout = choice.rollout
            self.state.bucket = choice.bucket
        return desired

    def _read_pointer(self, name: str) -> str:
        key = pointer_key(self.state.model, name)
        blob = self.store.get(key, if_none_match=self._etag.get(name), max_bytes=POINTER_MAX_BYTES)
        with self.state.lock:
            self.state.counters.polls += 1
            if blob is None:
                self.state.counters.not_modified += 1
        if blob is not None:
            self._etag[name] = blob.etag
            where = f"{self.store.url}/{key}"
            try:
                if blob.truncated:
                    parse_pointer(b"x" * blob.size, where)  # raises the "too large" error
                self._parsed[name] = parse_pointer(blob.data, where)
            except ModelswapError as e:
                self._parsed[name] = e
        parsed = self._parsed.get(name)
        if isinstance(parsed, ModelswapError):
            raise parsed
        if parsed is None:
            self._etag[name] = None  # never parsed: force a full read next time
            raise ModelswapError("pointer not read yet")
        return parsed

    def sync_once(self) -> SyncResult:
        """One pass; every OSError of the local volume becomes a LocalIOError naming the path
        and errno, so the loop backs off and keeps the old link instead of dying."""
        try:
            result = self._sync_once()
        except OSError as e:
            raise local_error(e, "sync failed on the --dest volume") from e
        except REFUSALS as e:
            with self.state.lock:  # the version itself is wrong: a rollout rolls it back
                self.state.refused_version, self.state.refusal = self.state.desired_version, str(e)
            raise
        with self.state.lock:
            if not self.server_checks:  # linked what it refused, or the pointer moved on
                self.state.refused_version, self.state.refusal = None, None
        if self.loader_url:
            served.check(self.state, self.loader_url)
        return result

    def _sync_once(self) -> SyncResult:
        started = time.monotonic()
        desired = self._desired()
        with self.state.lock:
            self.state.desired_version = desired
        previous = self.layout.linked_version()
        if previous is not None and desired == previous:
            self._scrub(previous)
        # With --trust-key a linked version this process has not checked yet (it was linked
        # before a restart, or by an agent without keys) is checked like a new one.
        checked = not self.trust or desired in self._signers
        if desired == previous and desired not in self._broken and checked:
            return SyncResult(desired, desired, False, 0, time.monotonic() - started, previous)
        meta = self.registry.metadata(self.state.model, desired)
        signature = self._signature(desired, meta, linked=desired == previous)
        if desired == previous and desired not in self._broken:
            if self._same_metadata(desired, meta):  # checked just now; nothing to fetch
                self._vouch(desired)
                self._publish_local()
                return SyncResult(desired, desired, False, 0, time.monotonic() - started, previous)
            self._broken.add(desired)  # the local copy is not the registry's: fetch that
        stats = FetchStats()
        cached = (
            self.layout.has(desired)
            and desired not in self._broken
            and self._same_metadata(desired, meta)
            and self._unchanged(desired, meta)
        )
        if not cached:
            staging = self.layout.new_staging(desired)
            try:
                fetch_version(
                    store=self.store,
                    model=self.state.model,
                    meta=meta,
                    metadata_bytes=meta.stored_bytes,
                    staging=staging,
                    cancel=self.cancel,
                    stats=stats,
                    signature=signature,
                )
            except IntegrityError:
                with self.state.lock:
                    self.state.counters.verify_failures += 1
                raise
            finally:
                with self.state.lock:
                    self.state.counters.download_bytes += stats.bytes
            if self.layout.has(desired):  # a damaged copy: replace it, then relink at once
                self.layout.remove_version(desired)
            self.layout.install(staging, desired)
            self._broken.discard(desired)
            snap = snapshot(self.layout.versions / desired, meta)
            if snap is not None:
                self._verified[desired] = snap  # verified while streaming, just now
            with self.state.lock:
                self.state.counters.downloads += 1
        os.utime(self.layout.versions / desired)  # most recently used, for pruning
        self._vouch(desired)  # before the link moves, so a loader sees the record with it
        self.layout.swap(desired)
        with self.state.lock:
            self.state.counters.swaps += 1
            self.state.last_change = utc_now()
        self._publish_local()
        self._prune(desired)
        return SyncResult(desired, desired, True, stats.bytes, time.monotonic() - started, previous)

    def _signature(self, version: str, meta: Metadata, *, linked: bool) -> bytes | None:
        """The version's model.sig; with --trust-key, checked first: a refusal raises before
        anything is downloaded, and never touches the link (if this version is the linked
        one, it stays linked, and is no longer shown as signed)."""
        sig = self.registry.signature(self.state.model, version)
        if not self.trust:
            return sig
        try:
            self._signers[version] = signing.check(self.trust, self.state.model, version, meta, sig)
        except SignatureError:
            self._signers.pop(version, None)
            with self.state.lock:
                self.state.counters.signature_refusals += 1
            if linked:
                self.layout.forget_signer(version)
                self._publish_local()
            raise
        return sig

    def _vouch(self, version: str) -> None:
        key = self._signers.get(version)
        if key is not None:
            self.layout.record_signer(version, key.fingerprint, str(key.path))

    def _same_metadata(self, version: str, meta: Metadata) -> bool:
        """Whether the cached copy is of the registry's version of that name now: a name can
        only come back with other bytes if someone bypassed gc's tombstone, and then the
        cached copy must not be linked (its checksums are the old version's)."""
        path = self.layout.versions / version / "metadata.json"
        try:
            local = Metadata.parse(path.read_bytes(), str(path), version)
        except (OSError, ModelswapError):
            return False
        return local.raw == meta.raw

    def _prune(self, linked: str) -> None:
        others = [v for v in self.layout.local_versions() if v != linked]
        others.sort(key=lambda v: (self.layout.versions / v).stat().st_mtime, reverse=True)
        for v in others[max(0, self.keep - 1) :]:
            self.layout.remove_version(v)
            self._verified.pop(v, None)
        self._publish_local()

    def _publish_local(self) -> None:
        linked = self.layout.linked_version()
        signer = self._signers.get(linked) if linked else None
        with self.state.lock:
            self.state.active_version = linked
            self.state.signed_by = signer.fingerprint if signer else None
            self.state.local_versions = self.layout.local_versions()
            if linked is not None and self.state.last_change is None:
                since = os.lstat(self.layout.link).st_mtime  # linked before this process started
                self.state.last_change = rfc3339(datetime.fromtimestamp(since, tz=UTC))
