"""Which pointer this instance follows: CURRENT, or CANARY while a rollout's fraction covers its
bucket (PRODUCT.md section 10). ROLLOUT is read with a conditional GET in the same pass as the
pointer, so an unchanged rollout costs one 304; no rollout at all costs one 404."""

from __future__ import annotations

from dataclasses import dataclass

from modelswap import keys, rollouts
from modelswap.errors import ModelswapError, ObjectNotFound
from modelswap.store import Store

from .state import AgentState


@dataclass(frozen=True)
class Choice:
    pointer: str
    reason: str
    rollout: str | None = None
    bucket: float | None = None
    version: str | None = None  # the rollout's candidate: CANARY is followed only to it


class Follower:
    def __init__(self, store: Store, state: AgentState, *, enabled: bool) -> None:
        self.store = store
        self.state = state
        self.enabled = enabled  # --report and --pointer CURRENT: the controller can see us
        self._etag: str | None = None
        self._rollout: rollouts.Rollout | None = None
        self._problem: str | None = None

    def choose(self) -> Choice:
        if not self.enabled:
            return Choice(self.state.pointer, f"--pointer {self.state.pointer}")
        self._read()
        r = self._rollout
        if self._problem is not None:  # a broken ROLLOUT must not move anyone off CURRENT
            return Choice(rollouts.CURRENT, self._problem)
        if r is None:
            return Choice(rollouts.CURRENT, "no rollout")
        pointer, bucket, why = r.follows(self.state.instance)
        return Choice(pointer, why, r.id, bucket, r.version)

    def _read(self) -> None:
        key = keys.rollout(self.state.model)
        try:
            blob = self.store.get(
                key, if_none_match=self._etag, max_bytes=rollouts.ROLLOUT_MAX_BYTES
            )
        except ObjectNotFound:
            self._etag, self._rollout, self._problem = None, None, None
            return
        finally:
            with self.state.lock:
                self.state.counters.rollout_polls += 1
        if blob is None:
            with self.state.lock:
                self.state.counters.rollout_not_modified += 1
            return
        self._etag = blob.etag
        where = f"{self.store.url}/{key}"
        try:
            if blob.truncated:
                raise rollouts.InvalidRollout(f"{where} is {blob.size} bytes, too large")
            self._rollout, self._problem = rollouts.parse(blob.data, where), None
        except ModelswapError as e:
            self._rollout, self._problem = None, f"ROLLOUT ignored: {e}"
