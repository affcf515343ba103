"""One straight sync pass: read the pointer, compare, fetch, verify, swap. Never sleeps, never
retries: the loop in run.py owns time and backoff."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from modelswap.download import FetchStats, fetch_version, verify_local
from modelswap.errors import IntegrityError, ModelswapError
from modelswap.metadata import Metadata, rfc3339, utc_now
from modelswap.names import POINTER_MAX_BYTES, parse_pointer
from modelswap.pointers import pointer_key
from modelswap.registry import Registry
from modelswap.store import Store

from .layout import Layout
from .state import AgentState


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
        self, store: Store, layout: Layout, state: AgentState, keep: int, cancel: threading.Event
    ) -> None:
        self.store = store
        self.registry = Registry(store)
        self.layout = layout
        self.state = state
        self.keep = keep
        self.cancel = cancel
        self._etag: str | None = None
        self._parsed: str | ModelswapError | None = None
        self._broken: set[str] = set()

    def startup(self) -> list[str]:
        """Clear crash leftovers and check every local copy; returns what was found wrong."""
        found = [f"removed leftover {x}" for x in self.layout.prepare()]
        for version in self.layout.local_versions():
            meta_path = self.layout.versions / version / "metadata.json"
            try:
                meta = Metadata.parse(meta_path.read_bytes(), str(meta_path), version)
                problems = verify_local(self.layout.versions / version, meta, full=True)
            except (OSError, ModelswapError) as e:
                problems = [str(e)]
            if problems:
                found.append(f"local copy of {version} is damaged: {problems[0]}")
                if version == self.layout.linked_version():
                    self._broken.add(version)  # replaced by a fresh copy on the next sync
                else:
                    self.layout.remove_version(version)
        self._publish_local()
        return found

    def _read_pointer(self) -> str:
        key = pointer_key(self.state.model, self.state.pointer)
        blob = self.store.get(key, if_none_match=self._etag, max_bytes=POINTER_MAX_BYTES)
        with self.state.lock:
            self.state.counters.polls += 1
            if blob is None:
                self.state.counters.not_modified += 1
        if blob is not None:
            self._etag = blob.etag
            where = f"{self.store.url}/{key}"
            try:
                if blob.truncated:
                    parse_pointer(b"x" * blob.size, where)  # raises the "too large" error
                self._parsed = parse_pointer(blob.data, where)
            except ModelswapError as e:
                self._parsed = e
        if isinstance(self._parsed, ModelswapError):
            raise self._parsed
        if self._parsed is None:
            self._etag = None  # never parsed: force a full read next time
            raise ModelswapError("pointer not read yet")
        return self._parsed

    def sync_once(self) -> SyncResult:
        started = time.monotonic()
        desired = self._read_pointer()
        with self.state.lock:
            self.state.desired_version = desired
        previous = self.layout.linked_version()
        if desired == previous and desired not in self._broken:
            return SyncResult(desired, desired, False, 0, time.monotonic() - started, previous)
        meta = self.registry.metadata(self.state.model, desired)
        stats = FetchStats()
        cached = (
            self.layout.has(desired)
            and desired not in self._broken
            and self._same_metadata(desired, meta)
            and not verify_local(self.layout.versions / desired, meta, full=False)
        )
        if not cached:
            staging = self.layout.new_staging(desired)
            try:
                fetch_version(
                    store=self.store,
                    model=self.state.model,
                    meta=meta,
                    metadata_bytes=meta.to_json(),
                    staging=staging,
                    cancel=self.cancel,
                    stats=stats,
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
            with self.state.lock:
                self.state.counters.downloads += 1
        os.utime(self.layout.versions / desired)  # most recently used, for pruning
        self.layout.swap(desired)
        with self.state.lock:
            self.state.counters.swaps += 1
            self.state.last_change = utc_now()
        self._publish_local()
        self._prune(desired)
        return SyncResult(desired, desired, True, stats.bytes, time.monotonic() - started, previous)

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
        self._publish_local()

    def _publish_local(self) -> None:
        linked = self.layout.linked_version()
        with self.state.lock:
            self.state.active_version = linked
            self.state.local_versions = self.layout.local_versions()
            if linked is not None and self.state.last_change is None:
                since = os.lstat(self.layout.link).st_mtime  # linked before this process started
                self.state.last_change = rfc3339(datetime.fromtimestamp(since, tz=UTC))
