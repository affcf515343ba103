"""The agent's configuration: one frozen dataclass, built once from flags (see modelswap.cli)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from modelswap import signing
from modelswap.errors import UsageError
from modelswap.fleet import check_instance
from modelswap.names import check_model, check_pointer_name
from modelswap.store import open_store
from modelswap.store.base import StoreOptions

from .reload import Reload


@dataclass(frozen=True)
class AgentConfig:
    registry: str
    model: str
    dest: Path
    pointer: str = "CURRENT"
    interval_s: float = 10.0
    jitter: float = 0.1
    keep: int = 3
    once: bool = False
    host: str = "127.0.0.1"
    port: int = 9101
    instance_id: str = "localhost"
    report: bool = False
    report_interval_s: float = 30.0
    max_backoff_s: float = 60.0
    on_swap_command: str | None = None
    on_swap_url: str | None = None
    store_timeout_s: float = StoreOptions.read_timeout_s
    min_rate_bps: int = StoreOptions.min_rate_bps
    refresh_min_interval_s: float = 1.0
    scrub_interval_s: float = 3600.0
    trust_keys: tuple[str, ...] = ()  # public keys (or folders of them); any one suffices
    loader_url: str | None = None  # the app's loader /health: its refusals are reported
    metrics_url: str | None = None  # the app's /metrics: per-version counters in the report
    reload: tuple[str, ...] = ()  # KIND=URL: model servers told to load each swap (reload.py)
    server_model: str | None = None  # the model's name on those servers (default: model)
    reload_timeout_s: float = 60.0
    tfserving_dir: Path | None = None  # DIR/<model>/<n> links, n growing (numbered.py)
    tfserving_grace_s: float = 60.0  # a superseded number is removed this long after
    refresh_token: str | None = field(default=None, repr=False)  # never printed

    def checked(self) -> AgentConfig:
        """This config if every value can work; else the first problem, naming its flag, as
        an error (a malformed --registry fails here, before any start-up work)."""
        check_model(self.model)
        check_pointer_name(self.pointer)
        check_instance(self.instance_id)
        problems = self.validate()
        if problems:
            raise UsageError(problems[0], hint="see `modelswap agent --help`")
        open_store(self.registry)
        _ = self.trusted  # an unreadable or wrong key fails here, before any start-up work
        return self

    @functools.cached_property
    def trusted(self) -> list[signing.TrustedKey]:
        """The --trust-key keys, loaded once (checked() loads them, the agent uses them)."""
        return signing.load_trusted_keys(self.trust_keys) if self.trust_keys else []

    def validate(self) -> list[str]:
        """Messages naming the flag for every value that cannot work."""
        problems = []
        if self.interval_s <= 0:
            problems.append("--interval must be greater than 0 seconds")
        if not 0 <= self.jitter < 1:
            problems.append("--jitter must be a fraction in [0, 1), e.g. 0.1 for +-10%")
        if self.keep < 1:
            problems.append("--keep must be at least 1 (the linked version)")
        if not 0 <= self.port <= 65535:
            problems.append("--port must be 0..65535 (0 picks a free port)")
        if self.report_interval_s <= 0:
            problems.append("--report-interval must be greater than 0 seconds")
        if self.max_backoff_s < self.interval_s:
            problems.append("--max-backoff must be at least --interval")
        if self.store_timeout_s <= 0:
            problems.append("--store-timeout must be greater than 0 seconds")
        if self.scrub_interval_s <= 0:
            problems.append("--scrub-interval must be greater than 0 seconds")
        if self.refresh_min_interval_s < 0:
            problems.append("--refresh-min-interval must be 0 or more seconds")
        if self.min_rate_bps < 1:
            problems.append("--min-rate must be at least 1 byte per second")
        if self.on_swap_url and not self.on_swap_url.startswith(("http://", "https://")):
            problems.append("--on-swap-url must be an http:// or https:// URL")
        if self.loader_url and not self.loader_url.startswith(("http://", "https://")):
            problems.append(
                "--loader-url must be an http:// or https:// URL (the loader's /health)"
            )
        if self.metrics_url and not self.metrics_url.startswith(("http://", "https://")):
            problems.append(
                "--metrics-url must be an http:// or https:// URL (the loader's /metrics)"
            )
        for text in self.reload:
            try:
                kind = Reload.parse(text).kind
            except ValueError as e:
                problems.append(str(e))
                continue
            if kind == "triton" and self.tfserving_dir is None:
                problems.append(
                    "--reload triton= needs --tfserving-dir DIR: each swap becomes a new "
                    "version folder there, which Triton loads (it skips a folder it thinks "
                    "unmodified)"
                )
        if self.reload_timeout_s <= 0:
            problems.append("--reload-timeout must be greater than 0 seconds")
        if self.tfserving_grace_s < 0:
            problems.append("--tfserving-grace must be 0 or more seconds")
        if self.tfserving_dir is not None:
            own = (self.dest / self.model).resolve()
            mine = (self.tfserving_dir / self.model).resolve()
            if mine == own or mine.is_relative_to(own) or own.is_relative_to(mine):
                problems.append(
                    f"--tfserving-dir {self.tfserving_dir} would put its {self.model}/ on the "
                    f"agent's own {own}; use a folder beside it, e.g. {self.dest}/tfserving"
                )
            if self.keep < 2:
                problems.append(
                    "--keep must be at least 2 with --tfserving-dir: the version before stays "
                    "until the server has moved to the new number"
                )
        return problems
