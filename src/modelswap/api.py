"""The Python API: every registry verb for pipelines, without a shell (PRODUCT.md section 7).

    import modelswap
    reg = modelswap.Registry("s3://bucket/models", actor="ci@pipeline")
    meta = reg.publish("classifier", ["model.onnx"], metrics={"accuracy": 0.94})
    reg.promote("classifier", meta.version, eval_set="eval.npz", reason="more data")

Results are frozen dataclasses; failures raise the same ModelswapError subclasses the CLI
prints as `error:` and `hint:`. The CLI is a view of this class.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from modelswap import rollouts
from modelswap.api_rollouts import RolloutStatus, RolloutVerbs
from modelswap.api_versions import GC_KEEP, VersionVerbs, is_pointer_name
from modelswap.cleanup import GcReport
from modelswap.config import DEFAULT_REGISTRY, default_actor
from modelswap.errors import (
    GateRefused,
    ModelswapError,
    UsageError,
)
from modelswap.evaluate import EvaluationError
from modelswap.fleet import fleet_status
from modelswap.gate import (
    DEFAULT_TOLERANCE,
    GateError,
    GateResult,
    GateSpec,
    parse_metric,
    run_gate,
)
from modelswap.judge import (
    DEFAULT_ALPHA,
    DEFAULT_FAIL_CHECKS,
    DEFAULT_MIN_REQUESTS,
    Criteria,
    MetricRule,
    Verdict,
)
from modelswap.metadata import Metadata
from modelswap.names import check_model, check_pointer_name, check_version
from modelswap.pointers import (
    DEFAULT_POINTER,
    Move,
    history,
    move_pointer,
    read_pointer,
    rollback_plan,
)
from modelswap.publish import METADATA_KEYS
from modelswap.records import Event, FleetStatus, GateRecord
from modelswap.registry import Registry as _Versions
from modelswap.results import History, ProgressSink, PromoteResult, SignatureInfo, VersionInfo
from modelswap.store import StoreOptions, open_store

Evaluator = Callable[[Path, Path], dict[str, float]]
STALE_AFTER_S = 90.0  # an instance silent this long is stale in `status`
STORE_TIMEOUT_S = StoreOptions.read_timeout_s


class Registry(VersionVerbs, RolloutVerbs):
    """A registry at `url` (s3://bucket/prefix, file:///path or a folder), acting as `actor`
    (default `$USER@host`), recorded in every event."""

    def __init__(
        self,
        url: str | os.PathLike[str] = DEFAULT_REGISTRY,
        *,
        actor: str | None = None,
        store_timeout_s: float = STORE_TIMEOUT_S,
    ) -> None:
        options = StoreOptions(read_timeout_s=store_timeout_s)
        problems = options.validate()
        if problems:
            raise UsageError(problems[0].replace("--store-timeout", "store_timeout_s"))
        self.url = os.fspath(url)
        self.actor = actor or default_actor()
        self._versions = _Versions(open_store(self.url, options))

    @property
    def store_url(self) -> str:
        return self._versions.store.url

    # -- pointers --------------------------------------------------------------------------

    def gate(
        self,
        model: str,
        candidate: str,
        *,
        eval_set: str | os.PathLike[str],
        metric: str = "accuracy",
        tolerance: float = DEFAULT_TOLERANCE,
        evaluator: str | Evaluator | None = None,
        minimum: float | None = None,
        against: str | None = None,
        pointer: str = DEFAULT_POINTER,
        progress: ProgressSink | None = None,
    ) -> GateResult:
        """Evaluate candidate and `against` (default: what the pointer names) on one eval
        set; `.passed` says whether the candidate may go live. `progress` is told the bytes
        of both versions' downloads."""
        return self._gate(
            model,
            candidate,
            GateSpec(Path(eval_set), *parse_metric(metric), tolerance, evaluator, minimum),
            against=against,
            pointer=pointer,
            progress=progress,
        )

    def _gate(
        self,
        model: str,
        candidate: str,
        spec: GateSpec,
        *,
        against: str | None,
        pointer: str,
        progress: ProgressSink | None = None,
        for_promote: bool = False,
    ) -> GateResult:
        return run_gate(
            self._versions,
            check_model(model),
            check_version(candidate),
            spec,
            against=check_version(against) if against else None,
            pointer=check_pointer_name(pointer),
            progress=progress,
            for_promote=for_promote,
        )

    def promote(
        self,
        model: str,
        version: str,
        *,
        pointer: str = DEFAULT_POINTER,
        reason: str | None = None,
        expect: str | None = None,
        verify: bool = False,
        eval_set: str | os.PathLike[str] | None = None,
        metric: str = "accuracy",
        tolerance: float = DEFAULT_TOLERANCE,
        evaluator: str | Evaluator | None = None,
        minimum: float | None = None,
        force: bool = False,
    ) -> PromoteResult:
        """Move the pointer to version by compare-and-swap, gated when eval_set is given. A
        refusing gate raises GateRefused (carrying the result) unless force=True, which needs
        a reason and is recorded in the event."""
        model, pointer = check_model(model), check_pointer_name(pointer)
        version = check_version(version)
        if force and not reason:
            raise UsageError("force needs a reason", hint='e.g. reason="hotfix, eval set stale"')
        expect = check_version(expect) if expect else None
        # The gate's options are checked before the store is touched.
        spec = (
            GateSpec(Path(eval_set), *parse_metric(metric), tolerance, evaluator, minimum)
            if eval_set is not None
            else None
        )
        quarantined = rollouts.quarantined(self._versions, model, version)
        if quarantined is not None and not force:
            raise rollouts.quarantine_error(model, version, quarantined)
        if force and spec is None and quarantined is None:
            raise UsageError(
                "--force overrides a gate or a quarantine; give the gate's --eval-set too",
                hint="without gate options promote is not gated and needs no --force",
            )
        gate_record: GateRecord | None = None
        result: GateResult | None = None
        if spec is not None:
            state = read_pointer(self._versions, model, pointer)
            against = state.version if state else None
            try:
                result = self._gate(
                    model, version, spec, against=against, pointer=pointer, for_promote=True
                )
            except (GateError, EvaluationError) as e:  # a gate that cannot judge refuses...
                if not force:  # ...unless forced, and then the error is what is recorded
                    if "--force" not in e.hint:
                        e.hint += "; or promote anyway with --force --reason (recorded)"
                    raise
                gate_record = GateRecord(
                    passed=False, forced=True, forced_by=self.actor, error=str(e)
                )
            else:
                if not result.passed and not force:
                    raise GateRefused(result, model, pointer, against)
                gate_record = result.record(forced_by=self.actor if not result.passed else None)
            expect = expect or against  # the pointer must not move while we evaluated
        move = Move(
            model,
            pointer,
            version,
            "promote",
            self.actor,
            reason,
            gate_record,
            expect,
            verify,
            extra={"quarantine_overridden": quarantined} if quarantined else {},
        )
        event = move_pointer(self._versions, move)
        forced = gate_record is not None and gate_record.forced
        return PromoteResult(model, pointer, version, event, result, forced)

    def rollback(
        self,
        model: str,
        *,
        to: str | None = None,
        pointer: str = DEFAULT_POINTER,
        reason: str | None = None,
    ) -> PromoteResult:
        """Move the pointer back to the version live before (by the log), or to `to`."""
        model, pointer = check_model(model), check_pointer_name(pointer)
        if to:
            target, expect = check_version(to), None
        else:  # back from exactly the version the log was read for
            target, expect = rollback_plan(self._versions, model, pointer)
        move = Move(model, pointer, target, "rollback", self.actor, reason, None, expect)
        return PromoteResult(model, pointer, target, move_pointer(self._versions, move))

    def history(self, model: str) -> History:
        problems: list[ModelswapError] = []
        events = history(self._versions, check_model(model), problems)
        return History(tuple(events), tuple(problems))

    def status(
        self, model: str, *, pointer: str = DEFAULT_POINTER, stale_after_s: float = STALE_AFTER_S
    ) -> FleetStatus:
        """Every agent's report for the pointer and whether the fleet converged on it."""
        return fleet_status(
            self._versions, check_model(model), check_pointer_name(pointer), stale_after_s
        )


__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_FAIL_CHECKS",
    "DEFAULT_MIN_REQUESTS",
    "DEFAULT_POINTER",
    "DEFAULT_TOLERANCE",
    "GC_KEEP",
    "METADATA_KEYS",
    "STALE_AFTER_S",
    "STORE_TIMEOUT_S",
    "Criteria",
    "Evaluator",
    "Event",
    "FleetStatus",
    "GateRecord",
    "GateResult",
    "GcReport",
    "History",
    "Metadata",
    "MetricRule",
    "ProgressSink",
    "PromoteResult",
    "Registry",
    "RolloutStatus",
    "SignatureInfo",
    "Verdict",
    "VersionInfo",
    "is_pointer_name",
]
