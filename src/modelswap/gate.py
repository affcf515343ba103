"""The evaluation gate: a candidate must not be worse than the live version on a fixed set.

Both versions are downloaded (verified), evaluated on the same eval set in the same run, and
compared on one declared metric. The eval set's sha256 is part of every result, so a result
only ever stands next to another computed on the very same bytes.
"""

from __future__ import annotations

import hashlib
import math
import tempfile
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from modelswap.download import FetchStats, fetch_version
from modelswap.errors import ModelswapError, UsageError
from modelswap.evaluate import EvaluationError, load_evaluator
from modelswap.pointers import read_pointer
from modelswap.progress import ProgressSink
from modelswap.records import GateRecord
from modelswap.registry import Registry

# Directions of metrics whose meaning is settled; any other metric must be declared NAME:max|min.
KNOWN_DIRECTIONS = {
    "accuracy": "max",
    "validation_accuracy": "max",
    "f1": "max",
    "auc": "max",
    "precision": "max",
    "recall": "max",
    "log_loss": "min",
    "rmse": "min",
    "mae": "min",
    "mse": "min",
}
DEFAULT_TOLERANCE = 0.005


class GateError(ModelswapError):
    default_hint = "the gate refuses when it cannot decide; fix the cause"


def parse_metric(spec: str) -> tuple[str, str]:
    name, _, direction = spec.partition(":")
    if direction:
        if direction not in ("max", "min"):
            raise UsageError(
                f"--metric {spec!r}: direction must be max or min",
                hint="e.g. --metric rmse:min or --metric accuracy:max",
            )
        return name, direction
    if name not in KNOWN_DIRECTIONS:
        raise UsageError(
            f"--metric {name!r} has no known direction",
            hint=f"declare it: --metric {name}:max (higher is better) or {name}:min",
        )
    return name, KNOWN_DIRECTIONS[name]


@dataclass(frozen=True)
class GateSpec:
    eval_set: Path
    metric: str = "accuracy"
    direction: str = "max"
    tolerance: float = DEFAULT_TOLERANCE
    evaluator: str | Callable[[Path, Path], dict[str, float]] | None = None
    floor: float | None = None  # --min: the bound a candidate must meet with nothing to compare


@dataclass
class GateResult:
    passed: bool
    candidate: str
    against: str | None
    metric: str
    direction: str
    new: float
    current: float | None
    tolerance: float
    floor: float | None
    eval_set: str
    eval_set_sha256: str
    verdict: str
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)

    def record(self, forced_by: str | None = None) -> GateRecord:
        """What an event keeps of this verdict; forced_by names who overrode a refusal."""
        return GateRecord.from_json(
            {**asdict(self), "forced": forced_by is not None, "forced_by": forced_by}
        )

    def line(self) -> str:
        current = "none" if self.current is None else f"{self.current:.4f}"
        return f"new={self.new:.4f} current={current}"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except OSError as e:
        raise UsageError(f"cannot read --eval-set {path}: {e.strerror}") from e
    return digest.hexdigest()


def _metric(metrics: dict[str, float], name: str, version: str) -> float:
    if not isinstance(metrics, dict) or name not in metrics:
        have = sorted(metrics) if isinstance(metrics, dict) else type(metrics).__name__
        raise GateError(
            f"the evaluator returned no {name!r} for {version} (it returned {have})",
            hint="choose a metric the evaluator computes with --metric",
        )
    value = metrics[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise GateError(f"{name} of {version} is {value!r}, not a finite number")
    return float(value)


def run_gate(
    registry: Registry,
    model: str,
    candidate: str,
    spec: GateSpec,
    *,
    against: str | None,
    pointer: str = "CURRENT",
    progress: ProgressSink | None = None,
    for_promote: bool = False,
) -> GateResult:
    """Evaluate candidate and `against` on spec's eval set. for_promote: the hints name
    promote's flags (--force) instead of gate's (--against)."""
    if spec.tolerance < 0 or not math.isfinite(spec.tolerance):
        raise UsageError("--tolerance must be a finite number >= 0")
    if against is None:
        state = read_pointer(registry, model, pointer)
        against = state.version if state else None
    if against is None and spec.floor is None:
        raise GateError(
            f"{model} has no {pointer} yet, so there is nothing to compare {candidate} against",
            hint="give the bound a first promotion must meet with --min 0.9, or move without "
            "a comparison with --force --reason"
            if for_promote
            else "give a bound the candidate must meet with --min 0.9, or compare it with "
            "--against VERSION",
        )
    evaluate = load_evaluator(spec.evaluator)
    sha = file_sha256(spec.eval_set)
    metrics: dict[str, dict[str, float]] = {}
    versions = list(dict.fromkeys(v for v in (candidate, against) if v is not None))
    metas = {v: registry.metadata(model, v) for v in versions}
    if progress is not None:
        progress.start(sum(m.size for m in metas.values()))
    with tempfile.TemporaryDirectory(prefix="modelswap-gate-") as tmp:
        for version, meta in metas.items():
            folder = Path(tmp) / version
            folder.mkdir()
            fetch_version(
                store=registry.store,
                model=model,
                meta=meta,
                metadata_bytes=meta.stored_bytes,
                staging=folder,
                cancel=threading.Event(),
                stats=FetchStats(on_bytes=progress.add if progress is not None else None),
            )
            try:
                metrics[version] = evaluate(folder, spec.eval_set)
            except ModelswapError:
                raise
            except Exception as e:
                raise EvaluationError(
                    f"the evaluator failed on {version}: {type(e).__name__}: {e}"
                ) from e
    new = _metric(metrics[candidate], spec.metric, candidate)
    current = _metric(metrics[against], spec.metric, against) if against is not None else None
    passed, verdict = _decide(spec, candidate, against, new, current)
    return GateResult(
        passed=passed,
        candidate=candidate,
        against=against,
        metric=spec.metric,
        direction=spec.direction,
        new=new,
        current=current,
        tolerance=spec.tolerance,
        floor=spec.floor,
        eval_set=str(spec.eval_set),
        eval_set_sha256=sha,
        verdict=verdict,
        metrics=metrics,
    )


def _decide(
    spec: GateSpec, candidate: str, against: str | None, new: float, current: float | None
) -> tuple[bool, str]:
    better = ">=" if spec.direction == "max" else "<="
    if spec.floor is not None:
        meets = new >= spec.floor if spec.direction == "max" else new <= spec.floor
        if not meets:
            return False, f"{spec.metric} {new:.4f} of {candidate} misses --min {spec.floor:.4f}"
    if current is None:
        return True, f"{spec.metric} {new:.4f} of {candidate} meets --min {spec.floor}"
    if spec.direction == "max":
        ok = new >= current - spec.tolerance
    else:
        ok = new <= current + spec.tolerance
    bound = current - spec.tolerance if spec.direction == "max" else current + spec.tolerance
    if ok:
        return True, (
            f"{candidate} is not worse than {against} on {spec.metric} "
            f"({new:.4f} {better} {bound:.4f})"
        )
    return False, (
        f"{candidate} is worse than {against} on {spec.metric}: {new:.4f} vs "
        f"{current:.4f}, beyond the tolerance {spec.tolerance}"
    )
