"""The rollout judge: absolute guard rails on the canary, then the canary against its baseline.

A verdict is `pass`, `fail` or `inconclusive`, with one entry of evidence per check (counts,
rates, statistic, p-value, effect size). Below `min_requests` on either side a check is
inconclusive: silence never passes and never fails. A comparison fails only when the canary
is both materially worse (past the ratio or tolerance the user set) and significantly worse
(one-sided p below `alpha`; for quality metrics, significantly worse by more than the
tolerance): a large fleet makes tiny differences significant, a small one
makes large differences noise, and either alone would roll back good versions. Materially
worse on the numbers but not yet significantly (one-sided p below LEANS_WORSE_P, 0.2) is
inconclusive, not a pass: the step or the promotion waits for the traffic that decides, so a
canary with 3 errors in 150 requests against none is not promoted merely because 150 requests
cannot yet prove it bad. The statistics are in stats.py; the controller decides what a verdict
does (controller.py, analysis.py).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from modelswap import stats
from modelswap.errors import UsageError
from modelswap.traffic import Traffic

DEFAULT_MIN_REQUESTS = 200
DEFAULT_FAIL_CHECKS = 3
DEFAULT_ALPHA = 0.01
# Past the limit on the numbers with a one-sided p below this, the data lean towards "worse"
# and the check waits for more traffic rather than pass. Not 0.5: one error against none has
# p = the canary's share of the requests, and a stray error must not hold a step for ever.
LEANS_WORSE_P = 0.2
_METRIC = re.compile(r"([A-Za-z_][A-Za-z0-9_.:-]{0,63}):(max|min):(\d+(?:\.\d+)?)")


@dataclass(frozen=True)
class MetricRule:
    """`NAME:min:TOL`: the canary's mean must stay at least the baseline's minus TOL (a score
    to keep high); `NAME:max:TOL`: at most the baseline's plus TOL (a cost to keep low)."""

    name: str
    bound: str  # "min" | "max"
    tolerance: float

    def __str__(self) -> str:
        return f"{self.name}:{self.bound}:{self.tolerance:g}"

    @classmethod
    def parse(cls, text: str) -> MetricRule:
        m = _METRIC.fullmatch(text.strip())
        if not m or not math.isfinite(float(m.group(3))):
            raise UsageError(
                f"--metric {text!r} is not NAME:min:TOL or NAME:max:TOL",
                hint="e.g. --metric accuracy:min:0.02 (fail if 0.02 below the baseline)",
            )
        return cls(m.group(1), m.group(2), float(m.group(3)))


@dataclass(frozen=True)
class Criteria:
    max_error_rate: float | None = None
    max_p99_ms: float | None = None
    max_error_ratio: float | None = None
    max_p99_ratio: float | None = None
    metrics: tuple[MetricRule, ...] = ()
    min_requests: int = DEFAULT_MIN_REQUESTS
    fail_checks: int = DEFAULT_FAIL_CHECKS
    alpha: float = DEFAULT_ALPHA

    @property
    def active(self) -> bool:
        return any(
            v is not None
            for v in (
                self.max_error_rate,
                self.max_p99_ms,
                self.max_error_ratio,
                self.max_p99_ratio,
            )
        ) or bool(self.metrics)

    @property
    def compares(self) -> bool:
        """Has checks that need a baseline (not only guard rails)."""
        return (
            self.max_error_ratio is not None or self.max_p99_ratio is not None or bool(self.metrics)
        )

    def check(self) -> Criteria:
        problems = []
        if self.max_error_rate is not None and not 0 <= self.max_error_rate < 1:
            problems.append("--max-error-rate is a fraction in [0, 1), e.g. 0.01 for 1%")
        for flag, v in (
            ("--max-p99-ms", self.max_p99_ms),
            ("--max-error-ratio", self.max_error_ratio),
            ("--max-p99-ratio", self.max_p99_ratio),
        ):
            if v is not None and not (math.isfinite(v) and v > 0):
                problems.append(f"{flag} must be a number above 0")
        if not (0 < self.min_requests < 2**31 and 0 < self.fail_checks < 2**31):
            problems.append("--min-requests and --fail-checks must be at least 1 (and < 2^31)")
        if not 0 < self.alpha < 0.5:
            problems.append("--alpha must be in (0, 0.5), e.g. 0.01")
        if problems:
            raise UsageError(problems[0], hint="see `modelswap rollout start --help`")
        return self

    def to_json(self) -> dict[str, Any]:
        return {
            "max_error_rate": self.max_error_rate,
            "max_p99_ms": self.max_p99_ms,
            "max_error_ratio": self.max_error_ratio,
            "max_p99_ratio": self.max_p99_ratio,
            "metrics": [str(m) for m in self.metrics],
            "min_requests": self.min_requests,
            "fail_checks": self.fail_checks,
            "alpha": self.alpha,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Criteria:
        """From ROLLOUT's `judge` (a rollout without one judges nothing). ValueError if it is
        not what `rollout start` writes."""

        def num(name: str) -> float | None:
            v = raw.get(name)
            if v is None:
                return None
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ValueError(f"judge {name} is {str(v)[:40]!r}, not a number")
            try:
                return float(v)  # a 400-digit integer: OverflowError
            except OverflowError as e:
                raise ValueError(f"judge {name} is too large") from e

        def whole(name: str, default: int) -> int:
            v = raw.get(name)
            if v is None:
                return default
            if isinstance(v, bool) or not isinstance(v, int) or not 0 < v < 2**31:
                raise ValueError(f"judge {name} is {str(v)[:40]!r}, not a positive integer")
            return v

        rules = raw.get("metrics") or []
        if not isinstance(rules, list) or not all(isinstance(m, str) for m in rules):
            raise ValueError("judge metrics is not a list of NAME:min|max:TOL")
        try:
            return cls(
                max_error_rate=num("max_error_rate"),
                max_p99_ms=num("max_p99_ms"),
                max_error_ratio=num("max_error_ratio"),
                max_p99_ratio=num("max_p99_ratio"),
                metrics=tuple(MetricRule.parse(m) for m in rules),
                min_requests=whole("min_requests", DEFAULT_MIN_REQUESTS),
                fail_checks=whole("fail_checks", DEFAULT_FAIL_CHECKS),
                alpha=DEFAULT_ALPHA if (a := num("alpha")) is None else a,
            ).check()
        except UsageError as e:
            raise ValueError(str(e)) from e


@dataclass(frozen=True)
class Verdict:
    result: str  # pass | fail | inconclusive
    why: str
    checks: tuple[dict[str, Any], ...]
    canary: dict[str, Any]
    baseline: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        return {
            "result": self.result,
            "why": self.why,
            "checks": list(self.checks),
            "canary": self.canary,
            "baseline": self.baseline,
        }


def summary(t: Traffic, instances: int) -> dict[str, Any]:
    p99 = stats.quantile(t.bounds, t.counts, 0.99)
    return {
        "instances": instances,
        "requests": t.requests,
        "errors": t.errors,
        "error_rate": _r(t.errors / t.requests) if t.requests else None,
        "p99_ms": _r(p99 * 1000) if p99 is not None else None,
        "quality": {k: {"n": n, "mean": _r(s / n)} for k, (n, s, _q) in t.quality.items() if n},
    }


def judge(
    c: Criteria,
    canary: Traffic,
    baseline: Traffic | None,
    *,
    canary_instances: int,
    baseline_instances: int,
    baseline_label: str = "baseline cohort",
) -> Verdict:
    """The verdict on `canary` against `baseline`. None: no baseline can come (the last step or
    the bake after a step taken by hand recorded none): each comparison is skipped and says
    so, and the guard rails alone judge; an empty or small baseline is inconclusive."""
    checks: list[dict[str, Any]] = []
    low = c.min_requests
    canary_ok = canary.requests >= low
    base_ok = baseline is not None and baseline.requests >= low
    if canary_ok:
        if c.max_error_rate is not None:
            rate = canary.errors / canary.requests
            checks.append(
                _check(
                    "error-rate", rate > c.max_error_rate, value=_r(rate), limit=c.max_error_rate
                )
            )
        p99 = stats.quantile(canary.bounds, canary.counts, 0.99)
        if c.max_p99_ms is not None and p99 is None:
            why = "no latency histogram (modelswap_request_seconds) from the canary"
            checks.append({"check": "p99", "result": "inconclusive", "why": why})
        elif c.max_p99_ms is not None and p99 is not None:
            checks.append(
                _check(
                    "p99", p99 * 1000 > c.max_p99_ms, value_ms=_r(p99 * 1000), limit_ms=c.max_p99_ms
                )
            )
    compare = [
        name
        for name, wanted in (
            ("error-ratio", c.max_error_ratio),
            ("p99-ratio", c.max_p99_ratio),
        )
        if wanted is not None
    ] + [str(m) for m in c.metrics]
    if canary_ok and baseline is None:
        why = f"no {baseline_label} to compare with: only the guard rails judge"
        checks += [{"check": name, "result": "skipped", "why": why} for name in compare]
    elif not canary_ok or baseline is None or not base_ok:
        why = _short(canary, baseline, low, baseline_label)
        checks += [{"check": name, "result": "inconclusive", "why": why} for name in compare]
        if not canary_ok:
            checks.append({"check": "sample", "result": "inconclusive", "why": why})
    else:
        if c.max_error_ratio is not None:
            checks.append(_error_ratio(c, canary, baseline))
        if c.max_p99_ratio is not None:
            checks.append(_p99_ratio(c, canary, baseline))
        checks += [_metric(c, rule, canary, baseline) for rule in c.metrics]
    failed = [ch for ch in checks if ch["result"] == "fail"]
    unsure = [ch for ch in checks if ch["result"] == "inconclusive"]
    if failed:
        result, why = "fail", "; ".join(ch["why"] for ch in failed)
    elif unsure:
        result, why = "inconclusive", unsure[0]["why"]
    elif not any(ch["result"] == "pass" for ch in checks):  # every check skipped
        result = "inconclusive"
        why = f"nothing to judge: no {baseline_label} to compare with, and no guard rail"
    else:
        ran = [ch for ch in checks if ch["result"] == "pass"]
        skipped = len(checks) - len(ran)
        result, why = (
            "pass",
            f"{len(ran)} check(s) passed on {canary.requests} requests"
            + (f" ({skipped} skipped: no baseline)" if skipped else ""),
        )
    return Verdict(
        result,
        why,
        tuple(checks),
        summary(canary, canary_instances),
        summary(baseline, baseline_instances) if baseline is not None else None,
    )


def _short(canary: Traffic, baseline: Traffic | None, low: int, label: str) -> str:
    if canary.requests < low:
        return f"canary has {canary.requests} of the {low} requests a verdict needs"
    if baseline is None:
        return f"no {label} to compare with"
    return f"{label} has {baseline.requests} of the {low} requests a verdict needs"


def _check(name: str, failed: bool, **evidence: Any) -> dict[str, Any]:
    limit = evidence.get("limit", evidence.get("limit_ms"))
    value = evidence.get("value", evidence.get("value_ms"))
    word = "above" if failed else "within"
    return {
        "check": name,
        "result": "fail" if failed else "pass",
        "why": f"{name} {value} {word} {limit}",
        **evidence,
    }


def _outcome(c: Criteria, material: bool, p_value: float) -> tuple[str, str]:
    """fail: materially and significantly worse; inconclusive: materially worse on the
    numbers and leaning worse, not yet significant; pass otherwise. The second part is said."""
    if material and p_value < c.alpha:
        return "fail", ""
    if material and p_value < LEANS_WORSE_P:
        return "inconclusive", f": worse on the numbers, not yet significant at {c.alpha:g}"
    return "pass", ""


def _error_ratio(c: Criteria, canary: Traffic, baseline: Traffic) -> dict[str, Any]:
    t = stats.error_rates(canary.errors, canary.requests, baseline.errors, baseline.requests)
    result, more = _outcome(c, t.ratio > (c.max_error_ratio or math.inf), t.p_value)
    return {
        "check": "error-ratio",
        "result": result,
        "why": f"error rate {t.canary_rate:.4f} vs {t.baseline_rate:.4f} (ratio {t.ratio:.2f}, "
        f"limit {c.max_error_ratio:g}; p={t.p_value:.2g}){more}",
        "canary_errors": canary.errors,
        "canary_requests": canary.requests,
        "baseline_errors": baseline.errors,
        "baseline_requests": baseline.requests,
        "ratio": _r(t.ratio),
        "method": t.method,
        "statistic": _r(t.statistic),
        "p_value": _p(t.p_value),
        "effect": _r(t.canary_rate - t.baseline_rate),
    }


def _p99_ratio(c: Criteria, canary: Traffic, baseline: Traffic) -> dict[str, Any]:
    shared = tuple(sorted(set(canary.bounds) & set(baseline.bounds)))
    a, b = canary.on(shared), baseline.on(shared)
    pa, pb = stats.quantile(shared, a.counts, 0.99), stats.quantile(shared, b.counts, 0.99)
    if pa is None or pb is None or not a.counts[-1] or not b.counts[-1]:
        why = "no latency histogram (modelswap_request_seconds) on both sides to compare"
        return {"check": "p99-ratio", "result": "inconclusive", "why": why}
    t = stats.rank_test(a.per_bucket(), b.per_bucket())
    ratio = (pa / pb) if pb else math.inf
    result, more = _outcome(c, ratio > (c.max_p99_ratio or math.inf), t.p_value)
    return {
        "check": "p99-ratio",
        "result": result,
        "why": f"p99 {_ms(pa)} vs {_ms(pb)} ms (ratio {ratio:.2f}, limit {c.max_p99_ratio:g}; "
        f"Mann-Whitney p={t.p_value:.2g}){more}",
        "canary_p99_ms": _r(pa * 1000) if pa is not None else None,
        "baseline_p99_ms": _r(pb * 1000) if pb is not None else None,
        "ratio": _r(ratio),
        "method": "mann-whitney",
        "statistic": _r(t.z),
        "u": _r(t.u),
        "p_value": _p(t.p_value),
        "effect": _r(t.effect),  # P(canary slower) + ties/2
    }


def _metric(c: Criteria, rule: MetricRule, canary: Traffic, baseline: Traffic) -> dict[str, Any]:
    name = str(rule)
    cq, bq = canary.quality.get(rule.name), baseline.quality.get(rule.name)
    low = c.min_requests
    if cq is None or bq is None or cq[0] < low or bq[0] < low:
        have = f"{cq[0] if cq else 0} and {bq[0] if bq else 0}"
        why = f"{rule.name}: {have} observations, a verdict needs {low} on each side"
        return {"check": name, "result": "inconclusive", "why": why}
    t = stats.mean_shift(cq, bq, higher_is_better=rule.bound == "min", margin=rule.tolerance)
    if t.p_value is None:  # a mean alone is not evidence
        cause = (
            "the endpoint exports no modelswap_quality_sumsq"
            if cq[2] is None or bq[2] is None
            else "fewer than 2 observations on a side"
        )
        why = (
            f"{rule.name}: {t.canary_mean:.4g} vs {t.baseline_mean:.4g}, but no spread to test "
            f"({cause})"
        )
        return {"check": name, "result": "inconclusive", "why": why}
    worse = (
        (t.baseline_mean - t.canary_mean)
        if rule.bound == "min"
        else (t.canary_mean - t.baseline_mean)
    )
    result, more = _outcome(c, worse > rule.tolerance, t.p_value)
    return {
        "check": name,
        "result": result,
        "why": f"{rule.name} {t.canary_mean:.4g} vs {t.baseline_mean:.4g} (tolerance "
        f"{rule.tolerance:g}, p={_p(t.p_value)}){more}",
        "canary_mean": _r(t.canary_mean),
        "baseline_mean": _r(t.baseline_mean),
        "canary_n": cq[0],
        "baseline_n": bq[0],
        "method": "welch-z",
        "statistic": _r(t.z) if t.z is not None else None,
        "p_value": _p(t.p_value),
        "effect": _r(-worse),
    }


def _r(x: float) -> float | None:
    return round(x, 6) if math.isfinite(x) else None  # JSON has no infinity


def _p(p: float | None) -> float | None:
    return None if p is None else float(f"{p:.3g}")


def _ms(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds * 1000:.1f}"
