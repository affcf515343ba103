"""The judge's statistics, and nothing else: pure functions on counts, no I/O, no clock.

Each test is one-sided: it asks whether the canary is *worse* than the baseline, never merely
different, and each returns its statistic, its p-value and an effect size so that a verdict
can show its evidence. Checked against scipy on synthetic data (tests/test_stats.py); scipy is
not imported here (the controller should not carry it).

- Error counts: Fisher's exact test on the 2x2 table while the errors are few (it is exact at
  0 errors against 0, or 3 against 0, where a normal approximation says nothing useful), the
  pooled two-proportion z-test once they are many (where the two agree).
- Latency: the Mann-Whitney rank test on two histograms with the same bucket bounds; every
  request in a bucket ties with the others there, and the variance carries the tie correction.
- Quality: Welch's z on two means from (count, sum, sum of squares), against a margin: is the
  canary worse by more than the tolerance (a non-inferiority test), not merely worse.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

FISHER_MAX_ERRORS = 2000  # above this many errors in all, the z-test (exact enough, and O(1))


def norm_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


@dataclass(frozen=True)
class ProportionTest:
    """Is the canary's error rate higher than the baseline's?"""

    canary_rate: float
    baseline_rate: float
    ratio: float  # canary over baseline, each with half an error added (finite at 0 errors)
    p_value: float
    statistic: float  # z, or for Fisher's test the canary's error count
    method: str  # "fisher-exact" | "two-proportion-z"


def error_rates(c_err: int, c_n: int, b_err: int, b_n: int) -> ProportionTest:
    if c_n <= 0 or b_n <= 0 or not (0 <= c_err <= c_n and 0 <= b_err <= b_n):
        raise ValueError(f"counts {c_err}/{c_n} and {b_err}/{b_n} are not error counts")
    c_rate, b_rate = c_err / c_n, b_err / b_n
    ratio = ((c_err + 0.5) / (c_n + 1)) / ((b_err + 0.5) / (b_n + 1))
    if c_err + b_err <= FISHER_MAX_ERRORS:
        p = fisher_greater(c_err, c_n, b_err, b_n)
        return ProportionTest(c_rate, b_rate, ratio, p, float(c_err), "fisher-exact")
    pooled = (c_err + b_err) / (c_n + b_n)
    se = math.sqrt(pooled * (1 - pooled) * (1 / c_n + 1 / b_n))
    z = (c_rate - b_rate) / se if se > 0 else 0.0
    return ProportionTest(c_rate, b_rate, ratio, norm_sf(z), z, "two-proportion-z")


def fisher_greater(c_err: int, c_n: int, b_err: int, b_n: int) -> float:
    """One-sided Fisher exact p: P(the canary has >= c_err of all the errors) when both
    cohorts share one error rate, i.e. the upper tail of a hypergeometric distribution."""
    total, errors = c_n + b_n, c_err + b_err
    top = min(errors, c_n)

    def log_pmf(x: int) -> float:
        return _log_choose(errors, x) + _log_choose(total - errors, c_n - x)

    logs = [log_pmf(x) for x in range(c_err, top + 1)]
    if not logs:
        return 1.0
    peak = max(logs)
    tail = peak + math.log(sum(math.exp(v - peak) for v in logs))
    return min(1.0, math.exp(tail - _log_choose(total, c_n)))


def _log_choose(n: int, k: int) -> float:
    if k < 0 or k > n:
        return -math.inf
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


@dataclass(frozen=True)
class RankTest:
    """Are the canary's latencies stochastically larger than the baseline's?"""

    u: float  # the canary's Mann-Whitney U
    z: float
    p_value: float
    effect: float  # P(canary slower) + P(tie)/2: 0.5 when alike, 1.0 when always slower


def rank_test(canary: Sequence[int], baseline: Sequence[int]) -> RankTest:
    """Mann-Whitney U from per-bucket (not cumulative) counts over the same bounds, with the
    tie correction and a continuity correction (scipy's `mannwhitneyu(..., 'greater')`)."""
    if len(canary) != len(baseline):
        raise ValueError("the two histograms have different buckets")
    n1, n2 = sum(canary), sum(baseline)
    if n1 <= 0 or n2 <= 0:
        raise ValueError("a rank test needs requests on both sides")
    u, below, ties = 0.0, 0, 0
    for c, b in zip(canary, baseline, strict=True):
        u += c * (below + b / 2)
        below += b
        t = c + b
        ties += t**3 - t
    n = n1 + n2
    var = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
    mean = n1 * n2 / 2
    effect = u / (n1 * n2)
    if var <= 0:  # every request in one bucket: nothing to tell them apart
        return RankTest(u, 0.0, 1.0, effect)
    z = (u - mean - 0.5) / math.sqrt(var)
    return RankTest(u, z, norm_sf(z), effect)


def quantile(bounds: Sequence[float], cumulative: Sequence[int], q: float) -> float | None:
    """The q-quantile of a histogram as Prometheus' histogram_quantile computes it: linear
    inside the bucket it falls in; in the last (+Inf) bucket, the highest finite bound.
    `cumulative[i]` counts observations <= bounds[i]; the last entry is the +Inf bucket."""
    if len(cumulative) != len(bounds) + 1 or not 0 <= q <= 1:
        raise ValueError("a histogram has one count per bound and one for +Inf")
    total = cumulative[-1]
    if total <= 0:
        return None
    rank = q * total
    for i, count in enumerate(cumulative):
        if count >= rank:
            if i == len(bounds):
                return bounds[-1] if bounds else None
            lower = bounds[i - 1] if i > 0 else 0.0
            before = cumulative[i - 1] if i > 0 else 0
            inside = count - before
            return lower + (bounds[i] - lower) * ((rank - before) / inside if inside else 1.0)
    return bounds[-1] if bounds else None


@dataclass(frozen=True)
class MeanTest:
    """Is the canary's mean worse than the baseline's by more than `margin` (lower, when
    `higher_is_better`)?"""

    canary_mean: float
    baseline_mean: float
    z: float | None  # None when either side has no spread to measure (fewer than 2, or sumsq)
    p_value: float | None


def mean_shift(
    canary: tuple[int, float, float | None],
    baseline: tuple[int, float, float | None],
    *,
    higher_is_better: bool,
    margin: float = 0.0,
) -> MeanTest:
    """Welch's z on (count, sum, sum of squares) for H0: worse by at most `margin`; the sum
    of squares may be unknown (then no test, only the means)."""
    (cn, cs, cq), (bn, bs, bq) = canary, baseline
    if cn <= 0 or bn <= 0:
        raise ValueError("a mean needs at least one observation on each side")
    cm, bm = cs / cn, bs / bn
    if cq is None or bq is None or cn < 2 or bn < 2:
        return MeanTest(cm, bm, None, None)
    cv = max(0.0, (cq - cs * cs / cn) / (cn - 1))
    bv = max(0.0, (bq - bs * bs / bn) / (bn - 1))
    se = math.sqrt(cv / cn + bv / bn)
    worse = ((bm - cm) if higher_is_better else (cm - bm)) - margin
    if se == 0:
        return MeanTest(cm, bm, None, 0.0 if worse > 0 else 1.0)
    z = worse / se
    return MeanTest(cm, bm, z, norm_sf(z))
