"""The judge's statistics against scipy on synthetic data with known answers (stats.py imports
no scipy; these tests do, to check it)."""

from __future__ import annotations

import random

import pytest
from scipy import stats as sp

from modelswap import stats


@pytest.mark.parametrize(
    ("c_err", "c_n", "b_err", "b_n"),
    [(0, 1000, 0, 1000), (3, 1000, 0, 1000), (50, 1000, 0, 1000), (1, 100, 0, 100),
     (7, 400, 5, 600), (0, 50, 4, 50), (120, 2000, 100, 2000)],
)  # fmt: skip
def test_fisher_exact_matches_scipy(c_err: int, c_n: int, b_err: int, b_n: int) -> None:
    table = [[c_err, c_n - c_err], [b_err, b_n - b_err]]
    expected = sp.fisher_exact(table, alternative="greater").pvalue
    assert stats.fisher_greater(c_err, c_n, b_err, b_n) == pytest.approx(expected, rel=1e-9)


def test_error_rates_zero_against_zero_is_no_evidence() -> None:
    t = stats.error_rates(0, 5000, 0, 5000)
    assert t.p_value == pytest.approx(1.0)
    assert t.ratio == pytest.approx(1.0, rel=1e-3)
    assert t.method == "fisher-exact"


def test_error_rates_five_percent_against_none_is_decisive() -> None:
    t = stats.error_rates(50, 1000, 0, 1000)
    assert t.p_value < 1e-12
    assert t.ratio > 50  # finite although the baseline had no error
    assert t.canary_rate == 0.05
    assert t.baseline_rate == 0.0


def test_error_rates_many_errors_use_the_z_test_and_agree_with_fisher() -> None:
    t = stats.error_rates(1300, 20000, 1100, 20000)
    assert t.method == "two-proportion-z"
    exact = sp.fisher_exact([[1300, 18700], [1100, 18900]], alternative="greater").pvalue
    assert t.p_value == pytest.approx(exact, rel=0.25)  # the normal approximation, close


def test_error_rates_refuse_impossible_counts() -> None:
    with pytest.raises(ValueError, match="not error counts"):
        stats.error_rates(5, 3, 0, 10)
    with pytest.raises(ValueError, match="not error counts"):
        stats.error_rates(0, 0, 0, 10)


def _binned(values: list[float], bounds: list[float]) -> list[int]:
    counts = [0] * (len(bounds) + 1)
    for v in values:
        counts[next((i for i, b in enumerate(bounds) if v <= b), len(bounds))] += 1
    return counts


@pytest.mark.parametrize("shift", [1.0, 1.1, 2.0])
def test_rank_test_matches_scipy_with_ties(shift: float) -> None:
    rng = random.Random(7)
    bounds = [0.001 * 1.5**k for k in range(20)]
    base = [rng.lognormvariate(-5, 0.5) for _ in range(800)]
    canary = [shift * rng.lognormvariate(-5, 0.5) for _ in range(600)]
    cb, bb = _binned(canary, bounds), _binned(base, bounds)
    # each request stands for its bucket: the ties scipy sees are the ones we count
    expand = [i for i, c in enumerate(cb) for _ in range(c)]
    expand_b = [i for i, c in enumerate(bb) for _ in range(c)]
    ref = sp.mannwhitneyu(expand, expand_b, alternative="greater", method="asymptotic")
    t = stats.rank_test(cb, bb)
    assert t.u == pytest.approx(ref.statistic)
    assert t.p_value == pytest.approx(ref.pvalue, rel=1e-6, abs=1e-300)
    if shift >= 2:
        assert t.p_value < 1e-20
        assert t.effect > 0.8
    if shift == 1.0:
        assert 0.4 < t.effect < 0.6


def test_rank_test_one_bucket_says_nothing() -> None:
    t = stats.rank_test([0, 10, 0], [0, 30, 0])
    assert t.p_value == 1.0
    assert t.effect == 0.5


def test_quantile_interpolates_like_histogram_quantile() -> None:
    bounds = [0.1, 0.2, 0.4]
    cumulative = [10, 60, 100, 100]
    # rank 99 of 100 falls in (0.2, 0.4], 39 of the 40 in it: 0.2 + 0.2 * 39/40
    assert stats.quantile(bounds, cumulative, 0.99) == pytest.approx(0.395)
    assert stats.quantile(bounds, cumulative, 0.5) == pytest.approx(0.1 + 0.1 * 40 / 50)
    assert stats.quantile(bounds, [0, 0, 0, 5], 0.99) == 0.4  # +Inf: the highest bound
    assert stats.quantile(bounds, [0, 0, 0, 0], 0.99) is None


def test_mean_shift_matches_welch() -> None:
    rng = random.Random(3)
    a = [1.0 if rng.random() < 0.61 else 0.0 for _ in range(500)]
    b = [1.0 if rng.random() < 0.96 else 0.0 for _ in range(700)]
    t = stats.mean_shift(
        (len(a), sum(a), sum(x * x for x in a)),
        (len(b), sum(b), sum(x * x for x in b)),
        higher_is_better=True,
    )
    ref = sp.ttest_ind(b, a, equal_var=False, alternative="greater")
    assert t.z == pytest.approx(ref.statistic, rel=1e-9)
    assert t.p_value is not None
    assert t.p_value < 1e-30
    assert t.canary_mean == pytest.approx(sum(a) / len(a))
    # against a margin: worse by more than 0.05? (the baseline's values shifted down by it)
    m = stats.mean_shift(
        (len(a), sum(a), sum(x * x for x in a)),
        (len(b), sum(b), sum(x * x for x in b)),
        higher_is_better=True,
        margin=0.05,
    )
    ref = sp.ttest_ind([x - 0.05 for x in b], a, equal_var=False, alternative="greater")
    assert m.z == pytest.approx(ref.statistic, rel=1e-9)
    assert m.z is not None
    assert t.z is not None
    assert m.z < t.z


def test_mean_shift_without_squares_has_no_test() -> None:
    t = stats.mean_shift((10, 5.0, None), (10, 9.0, None), higher_is_better=True)
    assert t.z is None
    assert t.p_value is None
    assert (t.canary_mean, t.baseline_mean) == (0.5, 0.9)
