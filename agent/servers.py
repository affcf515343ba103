"""The model servers beside the agent: --tfserving-dir's numbered links and --reload's
servers, brought to the linked version after every pass that needs it.

A server that refuses (or does not answer) keeps the version it had; the agent says so as a
refusal of the linked version, in /status (`refusal`, `last_error`) and in its fleet report,
so a rollout's controller rolls that version back, and asks again at the next pass.
"""

from __future__ import annotations

from modelswap.redact import redact
from modelswap.volume import Layout

from .config import AgentConfig
from .log import log
from .numbered import NumberedLinks
from .reload import Reload, ReloadError
from .state import AgentState
from .sync import SyncResult


class ServerReloads:
    def __init__(self, cfg: AgentConfig, state: AgentState, layout: Layout) -> None:
        self.numbered = (
            NumberedLinks(cfg.tfserving_dir, cfg.model, cfg.tfserving_grace_s)
            if cfg.tfserving_dir is not None
            else None
        )
        self.reloads = [Reload.parse(text) for text in cfg.reload]
        self.name = cfg.server_model or cfg.model
        self.timeout_s = cfg.reload_timeout_s
        self.state, self.layout = state, layout
        self.confirmed: str | None = None  # the version every --reload server said it serves
        self.confirmed_number: int | None = None  # its --tfserving-dir number

    def wanted(self, result: SyncResult) -> bool:
        return result.active is not None and (self.numbered is not None or bool(self.reloads))

    def number(self, version: str) -> int | None:
        """The --tfserving-dir number naming version (a new one after a swap)."""
        if self.numbered is None:
            return None
        try:
            # The last number a server confirmed stays until a newer one is confirmed: a
            # refused version must not leave a server with nothing to fall back on.
            return self.numbered.follow(self.layout.versions / version, self.confirmed_number)
        except OSError as e:
            self._failed(version, f"--tfserving-dir {self.numbered.dir}: {e}", refuse=False)
            return None

    def follow(self, result: SyncResult) -> None:
        version = result.active
        with self.state.lock:
            if self.state.refused_version not in (None, version):
                # the pass linked `version`: a refusal of another one is over (the pointer
                # moved on), as the syncer says when no server has a say
                self.state.refused_version, self.state.refusal = None, None
        number = self.number(version)
        if self.numbered is not None and number is None:
            return  # the numbered link failed (reported): nothing new for a server to load
        if not self.reloads:
            return
        folder = self.layout.versions / version
        if self.confirmed == version and not result.swapped:
            if all(s.serves(self.name, folder, number, self.timeout_s) for s in self.reloads):
                return
            log.info("reload.again", version=version, why="a server no longer serves it")
        errors = []
        for server in self.reloads:
            try:
                said = server.load(self.name, folder, number, self.timeout_s)
            except ReloadError as e:
                errors.append(str(e))
                continue
            except Exception as e:  # noqa: BLE001 - a server's oddity never ends the agent
                errors.append(f"{server.kind} at {server.url}: {type(e).__name__}: {e}")
                continue
            log.info("reload.done", server=server.kind, version=version, detail=said)
        if errors:
            self._failed(version, "; ".join(errors), refuse=True)
            return
        self.confirmed, self.confirmed_number = version, number
        with self.state.lock:
            self.state.served_version = version
            if self.state.active_version == version:  # served now: no longer refused
                self.state.refused_version, self.state.refusal = None, None

    def _failed(self, version: str, why: str, *, refuse: bool) -> None:
        why = redact(why)
        log.warning("reload.failed", version=version, error=why)
        with self.state.lock:
            self.state.counters.reload_failures += 1
            self.state.last_error = why
            if refuse:  # the server would not serve it: a rollout rolls it back
                self.state.refused_version, self.state.refusal = version, why
