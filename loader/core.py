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
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelswap import promtext
from modelswap.errors import ModelswapError

from . import memory, onnx_model, shared
from .health import HealthServer
from .onnx_model import ModelLoadError, Signature
from .shared import PREPARED_DIR
from .watch import LinkWatcher

log = logging.getLogger("modelswap.loader")
RETIRE_POLL_S = 0.005


class ModelNotLoaded(ModelswapError):
    default_hint = "the link has no loadable version yet; check the agent and /health"


@dataclass
class Loaded:
    """One loaded version, replaced whole on a swap. Its model is dropped when it is retired,
    so the teardown runs on the swapper thread even if the app still holds this object."""

    version: str
    path: Path
    model: Any
    metadata: dict[str, Any]
    loaded_at: str
    signature: Signature | None = None
    users: int = field(default=0, repr=False, compare=False)
    retired: bool = field(default=False, repr=False, compare=False)
    _mu: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def acquire(self) -> bool:
        with self._mu:
            if self.retired:
                return False
            self.users += 1
            return True

    def release(self) -> None:
        with self._mu:
            self.users -= 1

    def retire(self) -> list[Any]:
        """The model, handed over for teardown, if no request holds it now; else []."""
        with self._mu:
            if self.users or self.retired:
                return []
            self.retired = True
            model, self.model = self.model, None
        return [model]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
    ) -> None:
        if on_change not in ("swap", "restart"):
            raise ValueError("on_change must be 'swap' or 'restart'")
        self.link = Path(link)
        self.health_port, self.health_host = health_port, health_host
        self._load_fn, self._warmup = load, warmup
        self.on_change, self.model_file = on_change, model_file
        self.session_options, self.providers = session_options, providers
        self.poll_interval_s = poll_interval_s
        self.allow_signature_change = allow_signature_change
        self._on_restart = on_restart or (lambda: os.kill(os.getpid(), signal.SIGTERM))
        self.shared = shared
        self.prepared_root = Path(prepared_dir) if prepared_dir else self.link.parent / PREPARED_DIR
        self.shared_error: str | None = None
        self._live: Loaded | None = None
        self._retiring: list[Loaded] = []  # swapped out, freed once no request holds them
        self._target: str | None = None  # resolved path of the last version tried
        self.last_error: str | None = None
        self.swaps = 0
        self.swap_failures = 0
        self.requests = 0
        self.last_swap_s: float | None = None
        self._hint = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._watcher = LinkWatcher(self.link, self._hint)
        self._health: HealthServer | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> ModelLoader:
        """Load what the link names now (a missing or bad link is reported, not raised),
        then watch it and serve /health."""
        self._check()
        self._watcher.start()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="modelswap-swapper")
        self._thread.start()
        if self.health_port is not None:
            self._health = HealthServer(
                self.health_host, self.health_port, self.health, self.metrics
            )
            self.health_port = self._health.port
            self._health.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._hint.set()
        self._watcher.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._health is not None:
            self._health.stop()

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
        Use `live.model` only inside the block; once retired, the version's model is gone."""
        while True:
            live = self._current()
            if live.acquire():
                break
            # swapped and retired between the read and the acquire: _live is newer already
        try:
            yield live
        finally:
            live.release()

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

    # -- watching and swapping -------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._hint.wait(RETIRE_POLL_S if self._retiring else self.poll_interval_s)
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
        """Re-resolve the link; build, warm and swap in a version that is new to us."""
        target = self._resolve()
        if target is None:
            return
        if str(target) == self._target:
            live = self._live
            if live is not None and live.path == target:
                self.last_error = None  # the link is back on what we serve
            return
        self._target = str(target)
        if self._live is not None and self.on_change == "restart":
            log.warning("loader.restart", extra={"target": str(target)})
            self._on_restart()
            return
        started = time.monotonic()
        try:
            new = self._build(target)
        except ModelswapError as e:
            self.swap_failures += 1
            self.last_error = f"{target.name}: {e}"
            log.warning("loader.swap_refused: %s", self.last_error)
            return
        old, self._live = self._live, new
        self.last_swap_s = time.monotonic() - started
        self.last_error = None
        if old is not None:
            self.swaps += 1
            self._retiring.append(old)
            del old
            self._retire()
        log.info("loader.swapped to %s in %.3fs", new.version, self.last_swap_s)

    def _shared_session(self, path: Path, version: str, metadata: dict[str, Any]) -> Any:
        """A session on this host's prepared copy, or None (and why, in /health) to load
        privately instead."""
        try:
            prepared = shared.prepared_model(path, version, metadata, self.prepared_root)
            session = onnx_model.create_session(prepared, self.session_options, self.providers)
        except Exception as e:  # noqa: BLE001 - any failure to share falls back to a private load
            self.shared_error = f"{version}: loaded privately, shared copy unavailable: {e}"
            log.warning("loader.shared_fallback: %s", self.shared_error)
            return None
        self.shared_error = None
        return session

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
            shared.remove_stale(self.prepared_root, self.link.parent / "versions", {live.version})

    def _build(self, folder: Path) -> Loaded:
        metadata = _read_metadata(folder)
        version = str(metadata.get("version") or folder.name)
        if self._load_fn is not None:
            try:
                model = self._load_fn(folder)
            except Exception as e:
                raise ModelLoadError(f"load() failed: {e}") from e
            if callable(self._warmup):
                try:
                    self._warmup(model)
                except Exception as e:
                    raise ModelLoadError(f"warm-up failed: {e}") from e
            return Loaded(version, folder, model, metadata, _now())
        path = onnx_model.find_model_file(folder, self.model_file)
        session = self._shared_session(path, version, metadata) if self.shared else None
        if session is None:
            session = onnx_model.create_session(path, self.session_options, self.providers)
        sig = onnx_model.signature(session)
        live = self._live
        if live is not None and live.signature is not None and not self.allow_signature_change:
            why = live.signature.incompatibility(sig)
            if why:
                raise ModelLoadError(
                    f"incompatible signature: {why}",
                    hint="publish a compatible model, or allow_signature_change=True",
                )
        if callable(self._warmup):
            try:
                self._warmup(session)
            except Exception as e:
                raise ModelLoadError(f"warm-up failed: {e}") from e
        elif self._warmup:
            onnx_model.warm_up(session)
        return Loaded(version, folder, session, metadata, _now(), sig)

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
            "last_error": self.last_error,
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
            ("counter", "requests_total", "run() calls", self.requests),
            (
                "gauge",
                "last_swap_seconds",
                "build+warm time of the last swap",
                self.last_swap_s or 0,
            ),
        ]
        return promtext.render("modelswap_loader", rows, {"version": live.version if live else ""})


def _read_metadata(folder: Path) -> dict[str, Any]:
    try:
        value = json.loads((folder / "metadata.json").read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
