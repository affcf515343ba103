"""ModelLoader: serve whichever version the link names, hot-swapped off the request path.

Requests read one reference (`live = self._live`) and keep it for the whole call, so a swap
never changes a model under a running request. The swapper thread builds and warms the new
model first and only then replaces that reference. The old model is retired: the swapper
waits until no request uses it, drops it and hands its memory back to the OS, all on its own
thread, so neither the session's teardown nor malloc_trim ever runs on a request path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from modelswap import promtext, volume
from modelswap.errors import ModelswapError

from . import build, memory, shared
from .attempts import Identity, Retry
from .build import Loaded
from .health import HealthServer
from .onnx_model import WARMUP_MAX_BYTES
from .traffic import Counters
from .watch import LinkWatcher

log = logging.getLogger("modelswap.loader")
RETIRE_POLL_S = 0.005


class ModelNotLoaded(ModelswapError):
    default_hint = "the link has no loadable version yet; check the agent and /health"


class ModelLoader:
    def __init__(
        self,
        link: str | os.PathLike[str],
        *,
        health_port: int | None = None,
        health_host: str = "127.0.0.1",
        load: Callable[[Path], Any] | None = None,
        warmup: bool | Callable[[Any], None] = True,
        on_change: str = "swap",
        model_file: str | None = None,
        session_options: Any = None,
        providers: list[str] | None = None,
        poll_interval_s: float = 1.0,
        allow_signature_change: bool = False,
        on_restart: Callable[[], None] | None = None,
        shared: bool = False,
        prepared_dir: str | os.PathLike[str] | None = None,
        warmup_max_bytes: int = WARMUP_MAX_BYTES,
        retry_backoff_s: float = 1.0,
        retry_max_backoff_s: float = 60.0,
    ) -> None:
        if on_change not in ("swap", "restart"):
            raise ValueError("on_change must be 'swap' or 'restart'")
        if not 0 < retry_backoff_s <= retry_max_backoff_s:
            raise ValueError("need 0 < retry_backoff_s <= retry_max_backoff_s")
        if warmup_max_bytes < 0:
            raise ValueError("warmup_max_bytes must be >= 0")
        self.link = Path(link)
        self.health_port, self.health_host = health_port, health_host
        self._load_fn, self._warmup = load, warmup
        self.on_change, self.model_file = on_change, model_file
        self.session_options, self.providers = session_options, providers
        self.poll_interval_s = poll_interval_s
        self.allow_signature_change = allow_signature_change
        self._on_restart = on_restart or (lambda: os.kill(os.getpid(), signal.SIGTERM))
        self.shared = shared
        self.prepared_root = (
            Path(prepared_dir) if prepared_dir else self.link.parent / volume.PREPARED_DIR
        )
        self.shared_error: str | None = None
        self.warmup_max_bytes = warmup_max_bytes
        self._live: Loaded | None = None
        self._retiring: list[Loaded] = []  # swapped out, freed once no request holds them
        self._retry = Retry(retry_backoff_s, retry_max_backoff_s)  # the identity that failed
        self._restart_for: Identity | None = None  # the identity on_restart was called for
        self.last_error: str | None = None
        self.swaps = 0
        self.swap_failures = 0
        self.requests = 0
        self.traffic = Counters()  # by version: what a rollout's judge compares (traffic.py)
        self.last_swap_s: float | None = None
        self._hint = threading.Event()
        self._loaded = threading.Event()  # set once a first version serves
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._watcher = LinkWatcher(self.link, self._hint)
        self._health: HealthServer | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> ModelLoader:
        """Bind and serve /health, load what the link names now (a missing or bad link is
        reported, not raised), then watch it. A health port that cannot be bound raises
        HealthPortUnavailable before anything is loaded or started."""
        if self.health_port is not None:
            self._health = HealthServer(
                self.health_host, self.health_port, self.health, self.metrics
            )
            self.health_port = self._health.port
        try:
            if self._health is not None:
                self._health.start()  # answers 503 no_model while the first version loads
            self._check()
            self._watcher.start()
            self._thread = threading.Thread(
                target=self._loop, daemon=True, name="modelswap-swapper"
            )
            self._thread.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._hint.set()
        self._watcher.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._health is not None:
            self._health.stop()
            self._health = None

    def __enter__(self) -> ModelLoader:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- serving ---------------------------------------------------------------------------

    def _current(self) -> Loaded:
        live = self._live
        if live is None:
            raise ModelNotLoaded(f"no model loaded from {self.link}: {self.last_error}")
        return live

    @contextlib.contextmanager
    def session(self) -> Iterator[Loaded]:
        """Hold one version for a whole request: every call inside sees the same model.
        Use `live.model` only inside the block; once retired, the version's model is gone.
        Each block is one request in /metrics, timed, an error if it raises."""
        while True:
            live = self._current()
            if live.acquire():
                break
            # swapped and retired between the read and the acquire: _live is newer already
        started, failed = time.perf_counter(), False
        try:
            yield live
        except Exception:  # a cancelled or interrupted request is not the model's error
            failed = True
            raise
        finally:
            live.release()
            self.traffic.request(live.version, time.perf_counter() - started, failed)

    def observe(self, name: str, value: float, *, version: str | None = None) -> None:
        """A live quality signal (a label that arrived later: 1.0 for a right answer, 0.0 for a
        wrong one), for the version that served it (default: the live one). Exported as
        `modelswap_quality{name=...}`; `rollout start --metric NAME:min:TOL` judges it."""
        version = version or self.version
        if version is None:
            raise ModelNotLoaded(f"no model loaded from {self.link}: nothing to observe for")
        self.traffic.observe(version, name, value)

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """InferenceSession.run on the live version (or call a custom-loaded model)."""
        with self.session() as live:
            self.requests += 1
            model = live.model
            return model.run(*args, **kwargs) if hasattr(model, "run") else model(*args, **kwargs)

    async def arun(self, *args: Any, **kwargs: Any) -> Any:
        """run() for asyncio apps: the inference runs in a worker thread."""
        return await asyncio.to_thread(self.run, *args, **kwargs)

    @property
    def version(self) -> str | None:
        live = self._live
        return live.version if live else None

    @property
    def metadata(self) -> dict[str, Any]:
        live = self._live
        return dict(live.metadata) if live else {}

    def is_ready(self) -> bool:
        return self._live is not None

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until a first version serves (True), or timeout seconds pass (False): for an
        app that must not accept traffic before it has a model. /health says why meanwhile."""
        return self._loaded.wait(timeout)

    # -- watching and swapping -------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping.is_set():
            wait = RETIRE_POLL_S if self._retiring else self.poll_interval_s
            retry_in = self._retry.retry_in_s()
            if retry_in is not None:
                wait = min(wait, max(retry_in, RETIRE_POLL_S))
            self._hint.wait(wait)
            self._hint.clear()
            if self._stopping.is_set():
                return
            self._retire()
            try:
                self._check()
            except Exception as e:
                log.exception("loader.check_failed")
                self.last_error = f"unexpected: {e}"

    def _resolve(self) -> Path | None:
        if not os.path.lexists(self.link):
            self.last_error = f"link {self.link} does not exist"
            return None
        target = Path(os.path.realpath(self.link))
        if not target.is_dir():
            self.last_error = f"link {self.link} points at {target}, which is not a folder"
            return None
        return target

    def _check(self) -> None:
        """Re-resolve the link; build, warm and swap in a version whose identity is new to us,
        or retry one that failed once its backoff is over."""
        target = self._resolve()
        if target is None:
            return
        try:
            identity = Identity.of(target)
        except OSError as e:
            self.last_error = f"{target.name}: cannot read the version folder: {e}"
            return
        live = self._live
        if live is not None and live.identity == identity:
            self._retry.clear()
            self.last_error = None  # the link is back on what we serve
            return
        if not self._retry.due(identity):
            return
        if live is not None and self.on_change == "restart":
            if identity != self._restart_for:
                self._restart_for = identity
                log.warning("loader.restart", extra={"target": str(target)})
                self._on_restart()
            return
        started = time.monotonic()
        try:
            built = build.build(target, identity, self._options(), live)
        except (ModelswapError, OSError) as e:
            if identity != self._retry.identity:
                self.swap_failures += 1  # counted once per identity; retries are attempts
            delay = self._retry.failed(identity)
            self.last_error = f"{target.name}: {e}"
            log.warning(
                "loader.swap_refused: %s (attempt %d, next in %.1fs)",
                self.last_error,
                self._retry.failures,
                delay,
            )
            return
        if self._retry.failures:
            log.info("loader.recovered after %d failed attempts", self._retry.failures)
        self._retry.clear()
        if self.shared:
            self.shared_error = built.shared_error
        new = built.loaded
        old, self._live = self._live, new
        self._loaded.set()
        self.last_swap_s = time.monotonic() - started
        self.last_error = None
        if old is not None:
            self.swaps += 1
            self._retiring.append(old)
            del old
            self._retire()
        log.info("loader.swapped to %s in %.3fs", new.version, self.last_swap_s)

    def _options(self) -> build.Options:
        return build.Options(
            load=self._load_fn,
            warmup=self._warmup,
            warmup_max_bytes=self.warmup_max_bytes,
            model_file=self.model_file,
            session_options=self.session_options,
            providers=self.providers,
            allow_signature_change=self.allow_signature_change,
            shared=self.shared,
            prepared_root=self.prepared_root,
        )

    def _retire(self) -> None:
        """Drop retired versions no request holds any more, then return their memory."""
        models = [model for old in self._retiring for model in old.retire()]
        self._retiring = [old for old in self._retiring if not old.retired]
        if not models:
            return
        models.clear()  # the last references: the sessions are torn down here, on this thread
        memory.trim()
        live = self._live
        if self.shared and live is not None:
            shared.remove_stale(
                self.prepared_root, self.link.parent / volume.VERSIONS_DIR, {live.version}
            )

    # -- health ----------------------------------------------------------------------------

    def health(self) -> tuple[int, dict[str, Any]]:
        live = self._live
        status = "no_model" if live is None else "degraded" if self.last_error else "ok"
        body = {
            "status": status,
            "model_version": live.version if live else None,
            "model_loaded": live is not None,
            "loaded_at": live.loaded_at if live else None,
            "metadata": live.metadata if live else None,
            # read per request (a small file): an agent that stops vouching shows at once
            "signed_by": volume.signer_of(live.path) if live else None,
            "last_error": self.last_error,
            "failed_attempts": self._retry.failures,
            "retry_in_s": self._retry.retry_in_s(),
            "swaps": self.swaps,
            "swap_failures": self.swap_failures,
            "link": str(self.link),
            "path": str(live.path) if live else None,
            "watch": "inotify+poll" if self._watcher.native else "poll",
            "shared": self.shared and self.shared_error is None,
            "shared_error": self.shared_error,
        }
        return (200 if live is not None else 503), body

    def metrics(self) -> str:
        live = self._live
        rows: list[promtext.Row] = [
            ("gauge", "model_loaded", "1 when a model is serving", int(live is not None)),
            ("counter", "swaps_total", "versions swapped in", self.swaps),
            ("counter", "swap_failures_total", "versions refused", self.swap_failures),
            (
                "gauge",
                "failed_attempts",
                "consecutive failed builds of what the link names",
                self._retry.failures,
            ),
            ("counter", "requests_total", "run() calls", self.requests),
            (
                "gauge",
                "last_swap_seconds",
                "build+warm time of the last swap",
                self.last_swap_s or 0,
            ),
        ]
        info = {"version": live.version if live else ""}
        return promtext.render("modelswap_loader", rows, info) + self.traffic.render()
