"""What the agent knows about itself, for /status, /metrics and the fleet report."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from modelswap import promtext
from modelswap.metadata import utc_now
from modelswap.redact import redact


@dataclass
class Counters:
    polls: int = 0
    not_modified: int = 0
    failures: int = 0
    downloads: int = 0
    download_bytes: int = 0
    verify_failures: int = 0
    signature_refusals: int = 0
    rollout_polls: int = 0
    rollout_not_modified: int = 0
    swaps: int = 0
    hook_failures: int = 0
    reload_failures: int = 0
    refresh_scheduled: int = 0
    refresh_coalesced: int = 0
    refresh_refused: int = 0
    metrics_scrapes: int = 0
    metrics_scrape_failures: int = 0


@dataclass
class AgentState:
    model: str
    pointer: str
    instance: str
    desired_version: str | None = None
    active_version: str | None = None
    local_versions: list[str] = field(default_factory=list)
    last_poll: str | None = None
    last_success: float | None = None
    last_change: str | None = None
    signed_by: str | None = None  # the trusted key that signed the active version
    trust_keys: list[str] = field(default_factory=list)  # fingerprints of --trust-key
    follows: str | None = None  # the pointer followed now (CANARY for a rollout's share)
    follow_reason: str | None = None
    rollout: str | None = None
    bucket: float | None = None
    refused_version: str | None = None  # the last version this instance would not serve
    refusal: str | None = None
    served_version: str | None = None  # what the app's loader says it serves (--loader-url)
    app_metrics: dict[str, Any] | None = None  # the app's counters per version (--metrics-url)
    last_error: str | None = "no poll yet"
    last_hint: str | None = None
    consecutive_failures: int = 0
    counters: Counters = field(default_factory=Counters)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def ready(self) -> bool:
        return self.active_version is not None

    def status(self) -> dict[str, Any]:
        with self.lock:
            return {
                "model": self.model,
                "pointer": self.pointer,
                "instance": self.instance,
                "desired_version": self.desired_version,
                "active_version": self.active_version,
                "local_versions": list(self.local_versions),
                "ready": self.ready,
                "last_poll": self.last_poll,
                "last_change": self.last_change,
                "signed_by": self.signed_by,
                "trust_keys": list(self.trust_keys),
                "follows": self.follows,
                "follow_reason": self.follow_reason,
                "rollout": self.rollout,
                "bucket": self.bucket,
                "refused_version": self.refused_version,
                "refusal": self.refusal,
                "served_version": self.served_version,
                "metrics": self.app_metrics,
                "last_error": self.last_error,
                "hint": self.last_hint,
                "consecutive_failures": self.consecutive_failures,
            }

    def poll_done(self, *, error: str | None, hint: str | None = None) -> None:
        with self.lock:
            self.last_poll = utc_now()
            if error is None:
                self.consecutive_failures = 0
                self.last_success = time.time()
                self.last_error, self.last_hint = self._staleness(), None
            else:
                self.consecutive_failures += 1
                self.counters.failures += 1
                # Redacted here, so /status and the fleet report never hold a secret.
                self.last_error = redact(error)
                self.last_hint = redact(hint) if hint else None

    def _staleness(self) -> str | None:
        if self.active_version is None:
            return "no version linked yet"
        if self.desired_version != self.active_version:
            return f"linked {self.active_version}, pointer names {self.desired_version}"
        return None

    def metrics(self) -> str:
        with self.lock:
            c = self.counters
            info = {
                "model": self.model,
                "pointer": self.pointer,
                "active_version": self.active_version or "",
                "desired_version": self.desired_version or "",
            }
            rows: list[promtext.Row] = [
                ("counter", "polls_total", "pointer polls", c.polls),
                ("counter", "polls_not_modified_total", "polls answered 304", c.not_modified),
                ("counter", "rollout_polls_total", "reads of ROLLOUT", c.rollout_polls),
                (
                    "counter",
                    "rollout_polls_not_modified_total",
                    "reads of ROLLOUT answered 304",
                    c.rollout_not_modified,
                ),
                ("counter", "sync_failures_total", "failed syncs", c.failures),
                ("counter", "downloads_total", "versions downloaded", c.downloads),
                ("counter", "download_bytes_total", "bytes downloaded", c.download_bytes),
                (
                    "counter",
                    "verify_failures_total",
                    "checksum or size mismatches",
                    c.verify_failures,
                ),
                (
                    "counter",
                    "signature_refusals_total",
                    "versions refused: not signed by a --trust-key under their name",
                    c.signature_refusals,
                ),
                ("counter", "swaps_total", "link swaps", c.swaps),
                ("counter", "metrics_scrapes_total", "reads of --metrics-url", c.metrics_scrapes),
                (
                    "counter",
                    "metrics_scrape_failures_total",
                    "reads of --metrics-url that failed (unreachable, not Prometheus text)",
                    c.metrics_scrape_failures,
                ),
                ("counter", "hook_failures_total", "failed on-swap hooks", c.hook_failures),
                (
                    "counter",
                    "reload_failures_total",
                    "--reload servers that refused or did not answer, and --tfserving-dir errors",
                    c.reload_failures,
                ),
                (
                    "counter",
                    "refresh_scheduled_total",
                    "POST /refresh that queued a poll",
                    c.refresh_scheduled,
                ),
                (
                    "counter",
                    "refresh_coalesced_total",
                    "POST /refresh folded into an already queued poll",
                    c.refresh_coalesced,
                ),
                (
                    "counter",
                    "refresh_refused_total",
                    "POST /refresh refused (not loopback, or no valid token)",
                    c.refresh_refused,
                ),
                (
                    "gauge",
                    "consecutive_failures",
                    "failed syncs in a row",
                    self.consecutive_failures,
                ),
                ("gauge", "ready", "1 when a verified version is linked", int(self.ready)),
                (
                    "gauge",
                    "last_success_timestamp_seconds",
                    "time of the last good sync",
                    self.last_success or 0,
                ),
            ]
        return promtext.render("modelswap_agent", rows, info)
