"""The rollout verbs of modelswap.Registry (PRODUCT.md section 10), as a base class; the
record is in rollouts.py, the verbs in rollout_verbs.py, the controller in controller.py."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from modelswap import analysis, controller, rollout_verbs, rollouts
from modelswap.judge import Criteria
from modelswap.names import check_model, check_version
from modelswap.pointers import read_pointer
from modelswap.registry import Registry as _Versions
from modelswap.rollouts import Rollout


@dataclass(frozen=True)
class RolloutStatus:
    """`rollout status`: the rollout (None if the model never had one), what CURRENT and
    CANARY name, and every fresh instance with its bucket and what it follows."""

    model: str
    rollout: Rollout | None
    current: str | None
    canary: str | None
    instances: tuple[controller.Instance, ...]
    judging: dict[str, Any] | None = None  # the judge's freshest verdict (its window object)

    def to_json(self) -> dict[str, Any]:
        r = self.rollout
        return {
            "model": self.model,
            "rollout": r.to_json() if r else None,
            "fraction": r.fraction if r else 0.0,
            "current": self.current,
            "canary": self.canary,
            "instances": [i.to_json() for i in self.instances],
            "judging": self.judging,
        }


class RolloutVerbs:
    _versions: _Versions
    actor: str

    def rollout_start(
        self,
        model: str,
        version: str,
        *,
        steps: Sequence[int] = rollouts.DEFAULT_STEPS,
        bake_s: float = rollouts.DEFAULT_BAKE_S,
        min_instances: int = 1,
        deadline_s: float = rollouts.DEFAULT_DEADLINE_S,
        reason: str | None = None,
        salt: str | None = None,
        judge: Criteria | None = None,
    ) -> Rollout:
        """Start rolling `version` out to a share of the fleet (CANARY names it); the
        controller (`rollout_run`) steps, promotes, or rolls it back. With `judge`, live
        metrics from the fleet's reports decide too (a step waits for a `pass`; a repeated
        `fail` rolls back), and for `bake_s` after promotion."""
        req = rollout_verbs.StartRequest(
            model=check_model(model),
            version=check_version(version),
            actor=self.actor,
            steps=tuple(steps),
            bake_s=bake_s,
            min_instances=min_instances,
            deadline_s=deadline_s,
            reason=reason,
            salt=salt,
            judge=judge or Criteria(),
        )
        return rollout_verbs.start(self._versions, req)

    def rollout_status(
        self, model: str, *, stale_after_s: float = controller.STALE_AFTER_S
    ) -> RolloutStatus:
        check_model(model)
        found = rollouts.read(self._versions, model)
        if found is None:
            self._versions.require_model(model)
        r = found[0] if found else None
        current = read_pointer(self._versions, model, rollouts.CURRENT)
        canary = read_pointer(self._versions, model, rollouts.CANARY)
        instances = controller.fleet(self._versions, r, stale_after_s) if r else []
        stored = analysis.load(self._versions, r) if r and r.judge else None
        return RolloutStatus(
            model,
            r,
            current.version if current else None,
            canary.version if canary else None,
            tuple(instances),
            stored.get("verdict") if stored else None,
        )

    def rollout_step(self, model: str, *, reason: str | None = None) -> Rollout:
        """The next step now (promotion at the last), whatever the controller would judge."""
        why = reason or f"stepped by {self.actor}"
        r, etag = rollout_verbs.require(self._versions, check_model(model))
        return rollout_verbs.advance(self._versions, r, etag, self.actor, why)

    def rollout_pause(self, model: str, *, reason: str | None = None) -> Rollout:
        return self._set(model, "paused", reason)

    def rollout_resume(self, model: str, *, reason: str | None = None) -> Rollout:
        return self._set(model, "running", reason)

    def rollout_abort(self, model: str, *, reason: str | None = None) -> Rollout:
        """Stop the rollout: everyone follows CURRENT again, CANARY goes back to it."""
        return self._set(model, "aborted", reason)

    def _set(self, model: str, state: str, reason: str | None) -> Rollout:
        why = reason or f"by {self.actor}"
        return rollout_verbs.set_state(self._versions, check_model(model), state, self.actor, why)

    def rollout_run(
        self,
        model: str,
        *,
        interval_s: float = 30.0,
        once: bool = False,
        stale_after_s: float = controller.STALE_AFTER_S,
        say: Callable[[str], None] = print,
        stop: threading.Event | None = None,
    ) -> int:
        """The controller: judge, step, promote or roll back, until `stop` is set."""
        return controller.run(
            self._versions,
            check_model(model),
            self.actor,
            interval_s=interval_s,
            once=once,
            stale_after_s=stale_after_s,
            say=say,
            stop=stop,
        )
