"""The agent's lifecycle: start-up -> one visible main loop -> shutdown.

Each pass of the loop re-reads the world (pointer, link, local copies), so a crash at any
point is recovered by the next start. Signal handlers only set events. The blocking sync runs
in a daemon thread; on SIGTERM the loop stops waiting for it, tells it to stop at the next
chunk, and exits, leaving at worst a staging folder that the next start removes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from modelswap import redact
from modelswap.errors import Cancelled, LocalIOError, ModelswapError
from modelswap.fleet import write_report
from modelswap.registry import Registry
from modelswap.store import Store, StoreOptions, open_store
from modelswap.volume import Layout

from .config import AgentConfig
from .hooks import SwapHooks
from .log import log, structlog
from .metrics import Scraper
from .servers import ServerReloads
from .state import AgentState
from .sync import Syncer, SyncResult

T = TypeVar("T")


def configure_logging() -> None:
    renderer: Any = (
        structlog.dev.ConsoleRenderer()
        if sys.stderr.isatty()
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            redact.structlog_processor,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


def backoff_s(failures: int, base: float, cap: float) -> float:
    """Capped exponential backoff with full jitter in its upper half."""
    delay = min(cap, base * 2 ** max(0, failures - 1))
    return float(delay / 2 + random.random() * delay / 2)  # noqa: S311 - jitter, not security


def jittered(interval: float, jitter: float) -> float:
    return float(interval * (1 + random.uniform(-jitter, jitter)))  # noqa: S311


async def in_thread(fn: Callable[[], T], stop: asyncio.Event) -> T:
    """Run fn in a daemon thread; raise Cancelled as soon as stop is set, without waiting."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def settle(value: Any, error: BaseException | None) -> None:
        if not fut.done():
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(value)

    def target() -> None:
        try:
            value, error = fn(), None
        except BaseException as e:  # noqa: BLE001 - handed to the awaiting coroutine
            value, error = None, e
        with contextlib.suppress(RuntimeError):  # the loop closed: we are exiting anyway
            loop.call_soon_threadsafe(settle, value, error)

    threading.Thread(target=target, daemon=True, name="modelswap-sync").start()
    stopper = asyncio.ensure_future(stop.wait())
    waiters: list[asyncio.Future[Any]] = [fut, stopper]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if fut.done():
        return fut.result()
    raise Cancelled("stopping")


async def sleep_or_wake(stop: asyncio.Event, refresh: asyncio.Event, delay: float) -> None:
    waits = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(refresh.wait())}
    _, pending = await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()


class Agent:
    def __init__(self, cfg: AgentConfig, store: Store) -> None:
        self.cfg = cfg
        self.registry = Registry(store)
        self.state = AgentState(model=cfg.model, pointer=cfg.pointer, instance=cfg.instance_id)
        trusted = cfg.trusted
        self.state.trust_keys = [k.fingerprint for k in trusted]
        self.cancel = threading.Event()
        self.syncer = Syncer(
            store,
            Layout(cfg.dest, cfg.model),
            self.state,
            cfg.keep,
            self.cancel,
            scrub_interval_s=cfg.scrub_interval_s,
            trust=trusted,
            # Taking part in rollouts needs the controller to see us: --report on CURRENT.
            follow_rollouts=cfg.report and cfg.pointer == "CURRENT",
            loader_url=cfg.loader_url,
            server_checks=bool(cfg.reload),
        )
        self.last_failure: ModelswapError | None = None
        self.stop = asyncio.Event()
        self.refresh = asyncio.Event()
        self.port: int | None = None
        self.hooks = SwapHooks(cfg.on_swap_command, cfg.on_swap_url)
        self.scraper = Scraper(cfg.metrics_url) if cfg.metrics_url else None
        self.servers = ServerReloads(cfg, self.state, self.syncer.layout)

    async def sync(self) -> SyncResult | None:
        """One pass with its bookkeeping; returns None when it failed (already logged)."""
        try:
            result = await in_thread(self.syncer.sync_once, self.stop)
        except Cancelled:
            return None
        except ModelswapError as e:
            self.last_failure = e
            self.state.poll_done(error=str(e), hint=e.hint)
            log.warning(
                "sync.failed",
                error=str(e),
                hint=e.hint,
                failures=self.state.consecutive_failures,
                active_version=self.state.active_version,
            )
            return None
        self.state.poll_done(error=None)
        if result.swapped:
            log.info(
                "sync.swapped",
                version=result.active,
                previous_version=result.previous,
                downloaded_bytes=result.downloaded_bytes,
                duration_s=round(result.duration_s, 3),
            )
            await self.call_hooks(result)
        if self.servers.wanted(result):
            with contextlib.suppress(Cancelled):
                await in_thread(lambda: self.servers.follow(result), self.stop)
        return result

    async def call_hooks(self, result: SyncResult) -> None:
        if not (self.hooks.command or self.hooks.url):
            return
        link = self.syncer.layout.link
        try:
            errors = await in_thread(
                lambda: self.hooks.run(self.cfg.model, result.active, result.previous, link),
                self.stop,
            )
        except Cancelled:
            return
        for error in errors:
            with self.state.lock:
                self.state.counters.hook_failures += 1
            log.warning("hook.failed", error=error, version=result.active)
        if not errors:
            log.info("hook.done", version=result.active)

    async def report(self) -> None:
        scraper = self.scraper
        if scraper is not None:
            with contextlib.suppress(Cancelled):
                await in_thread(scraper.scrape, self.stop)
            metrics = scraper.report()
            with self.state.lock:
                self.state.app_metrics = metrics
                self.state.counters.metrics_scrapes = scraper.scrapes
                self.state.counters.metrics_scrape_failures = scraper.failures
        if not self.cfg.report:
            return
        status = self.state.status()
        try:
            await in_thread(lambda: write_report(self.registry, self.cfg.model, status), self.stop)
        except ModelswapError as e:
            log.warning("report.failed", error=str(e), hint=e.hint)

    async def startup(self) -> None:
        for problem in await in_thread(self.syncer.startup, self.stop):
            log.warning("startup.cleanup", detail=problem)

    async def run(self) -> None:
        with contextlib.suppress(Cancelled):
            await self.startup()
            await self.main_loop()

    async def main_loop(self) -> None:
        loop = asyncio.get_running_loop()
        failures, last_report = 0, -1e9
        # Start of the last pass a /refresh (or SIGHUP) woke. Only those are spaced by
        # --refresh-min-interval: a refresh just after a periodic poll is served at once (a
        # promote's push reached half a fleet a whole second late), and a flood still costs
        # one pass per min interval on top of the polls.
        woken_at = -1e9
        while not self.stop.is_set():
            # Cleared as the pass starts: a /refresh during the pass queues exactly one more,
            # and any number of them while one is queued add nothing (server.py counts them).
            self.refresh.clear()
            result = await self.sync()
            if self.stop.is_set():
                break
            if result is None and self.last_failure is not None and not self.last_failure.transient:
                # The store answered; what it holds is wrong (a pointer naming a missing
                # version, a malformed one). Polls are cheap: look again at the interval, so
                # the fix is followed at once instead of after a growing backoff.
                failures += 1
                delay = jittered(self.cfg.interval_s, self.cfg.jitter)
                log.info("sync.retry", retry_in_s=round(delay, 2), failures=failures)
            elif result is None:
                failures += 1
                delay = backoff_s(failures, self.cfg.interval_s, self.cfg.max_backoff_s)
                log.info("sync.retry", retry_in_s=round(delay, 2), failures=failures)
            else:
                if failures:
                    log.info("sync.recovered", previous_failures=failures)
                failures, delay = 0, jittered(self.cfg.interval_s, self.cfg.jitter)
            if (result is not None and result.swapped) or (
                loop.time() - last_report >= self.cfg.report_interval_s
            ):
                await self.report()
                last_report = loop.time()
            await sleep_or_wake(self.stop, self.refresh, delay)
            if not self.refresh.is_set() or self.stop.is_set():
                continue  # the interval passed: a poll, never held back
            spacing = self.cfg.refresh_min_interval_s - (loop.time() - woken_at)
            if spacing > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), spacing)
            woken_at = loop.time()


async def serve(cfg: AgentConfig) -> int:
    store = open_store(
        cfg.registry,
        StoreOptions(read_timeout_s=cfg.store_timeout_s, min_rate_bps=cfg.min_rate_bps),
    )
    store.connect()
    agent = Agent(cfg, store)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, agent.stop.set)
    loop.add_signal_handler(signal.SIGHUP, agent.refresh.set)
    if cfg.once:
        await agent.startup()
        return await run_once(agent)
    # The HTTP server (aiohttp, ~0.2 s to import) only for a running agent: an init
    # container's `--once` waits for nothing it does not use.
    from . import server  # noqa: PLC0415

    # The start-up check (a full re-hash of every local copy) runs inside the loop's task,
    # with the HTTP server already up: /healthz answers while large copies are hashed.
    loop_task = asyncio.ensure_future(agent.run())
    app = server.make_app(agent.state, agent.refresh, loop_task, token=cfg.refresh_token)
    try:
        runner, agent.port = await server.start(app, cfg.host, cfg.port)
    except OSError as e:
        loop_task.cancel()
        raise LocalIOError(
            f"cannot listen on {cfg.host}:{cfg.port}: {e.strerror}",
            hint="choose another --port (0 picks a free one) or stop what holds it",
        ) from e
    log.info(
        "agent.started",
        model=cfg.model,
        pointer=cfg.pointer,
        registry=store.url,
        dest=str(cfg.dest),
        host=cfg.host,
        port=agent.port,
        interval_s=cfg.interval_s,
        active_version=agent.state.active_version,
    )
    try:
        await loop_task
    finally:
        agent.cancel.set()
        await runner.cleanup()
        log.info("agent.stopped", active_version=agent.state.active_version)
    return 0


async def run_once(agent: Agent) -> int:
    try:
        result = await in_thread(agent.syncer.sync_once, agent.stop)
    except ModelswapError as e:
        print(f"error: {e}", file=sys.stderr)
        print(f"hint: {e.hint}", file=sys.stderr)
        return 1
    log.info(
        "sync.once",
        version=result.active,
        swapped=result.swapped,
        downloaded_bytes=result.downloaded_bytes,
        duration_s=round(result.duration_s, 3),
    )
    agent.state.poll_done(error=None)
    if result.active is not None:  # an init container: the server starts on this number
        agent.servers.number(result.active)
    await agent.report()
    return 0


def main(cfg: AgentConfig) -> int:
    configure_logging()
    code = asyncio.run(serve(cfg))
    if not cfg.once and any(t.daemon and t.is_alive() for t in threading.enumerate()):
        # A download thread still blocked in a socket read at SIGTERM: finalizing the
        # interpreter under it crashed the agent once in a few hundred stops (exit -11, seen
        # in test_sigterm_mid_download_exits_within_a_second). Everything on disk is already
        # consistent (staging is cleared at start-up); only stdio is left to flush.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
