"""The judge on synthetic traffic with known answers, and the counters it reads: the loader's
export, the agent's parse of it, and the sums across instances."""

from __future__ import annotations

import bisect
import random

import pytest
from agent.metrics import parse
from loader.traffic import Counters

from modelswap.judge import Criteria, MetricRule, judge
from modelswap.traffic import BUCKETS_S, BadTraffic, Traffic, total


def traffic(n: int, *, error_rate: float = 0.0, ms: float = 10.0, seed: int = 1,
            quality: tuple[str, float] | None = None) -> Traffic:  # fmt: skip
    """n requests as a loader counts them: lognormal latency around `ms`, Bernoulli errors."""
    rng = random.Random(seed)
    c = Counters()
    for _ in range(n):
        c.request("v", rng.lognormvariate(0, 0.3) * ms / 1000, rng.random() < error_rate)
        if quality:
            c.observe("v", quality[0], 1.0 if rng.random() < quality[1] else 0.0)
    return parse(c.render())["v"]


def run(c: Criteria, canary: Traffic, baseline: Traffic | None) -> dict:
    return judge(c, canary, baseline, canary_instances=2, baseline_instances=2).to_json()


def test_loader_export_reads_back_exactly() -> None:
    c = Counters()
    for s in (0.0004, 0.001, 0.0101, 2.0, 99.0):
        c.request("v1", s, error=s > 1)
    c.observe("v1", "accuracy", 1.0)
    c.observe("v1", "accuracy", 0.0)
    t = parse(c.render())["v1"]
    assert (t.requests, t.errors) == (5, 2)
    assert t.bounds == BUCKETS_S
    per = t.per_bucket()
    for s in (0.0004, 0.001, 0.0101, 2.0):
        assert per[bisect.bisect_left(BUCKETS_S, s)] >= 1
    assert per[-1] == 1  # 99 s: only in +Inf
    assert t.quality == {"accuracy": (2, 1.0, 1.0)}
    assert Traffic.from_json(t.to_json()) == t


def test_an_endpoint_that_times_only_its_successes_still_counts_its_errors() -> None:
    """requests_total and errors from the counters; the histogram times fewer (successes)."""
    text = "\n".join([
        'modelswap_requests_total{version="v"} 100',
        'modelswap_request_errors_total{version="v"} 100',
        'modelswap_request_seconds_bucket{version="v",le="0.1"} 0',
        'modelswap_request_seconds_bucket{version="v",le="+Inf"} 0',
        'modelswap_request_seconds_count{version="v"} 0',
    ]) + "\n"  # fmt: skip
    t = parse(text)["v"]
    assert (t.requests, t.errors, t.counts) == (100, 100, (0, 0))
    assert Traffic.from_json(t.to_json()) == t
    v = run(Criteria(max_error_rate=0.01, max_p99_ms=50, min_requests=50), t, None)
    assert v["result"] == "fail"  # every request failed: not hidden by an empty histogram
    assert {ch["check"]: ch["result"] for ch in v["checks"]}["p99"] == "inconclusive"


def test_a_reset_counter_counts_everything_after_it() -> None:
    a, b = traffic(500, seed=1), traffic(200, seed=2)
    assert (a + b).since(a).requests == 200
    assert b.since(a) == b  # went down: the app restarted, all of b is new
    # more requests than before, but a bucket went down: also a restart, never a histogram
    # that is not cumulative
    before = Traffic(10, 0, 0.1, (0.01,), (0, 10))
    after = Traffic(12, 0, 0.1, (0.01,), (12, 12))
    assert after.since(before) == after
    assert Traffic.from_json(after.since(before).to_json()) == after


def test_histograms_with_other_bounds_add_on_the_shared_ones() -> None:
    a = traffic(100)
    coarse = a.on(BUCKETS_S[::2])
    s = a + coarse
    assert s.bounds == BUCKETS_S[::2]
    assert s.requests == 200
    assert s.counts[-1] == 200


@pytest.mark.parametrize(
    "raw",
    [
        {"requests": 3, "errors": 4, "bounds": [1.0], "counts": [3, 3]},
        {"requests": 3, "errors": 0, "bounds": [1.0, 0.5], "counts": [1, 2, 3]},
        {"requests": 3, "errors": 0, "bounds": [1.0], "counts": [3, 2]},
        {"requests": -1, "errors": 0, "bounds": [], "counts": [-1]},
        {"requests": 1, "errors": 0, "bounds": [float("nan")], "counts": [1, 1]},
        {"requests": 1, "errors": 0, "bounds": [], "counts": [1], "quality": {"a": [1, 2]}},
        [],
    ],
)
def test_metrics_that_are_not_counts_are_refused(raw: object) -> None:
    with pytest.raises(BadTraffic):
        Traffic.from_json(raw)


def test_too_little_traffic_is_inconclusive_not_pass_or_fail() -> None:
    c = Criteria(max_error_ratio=2, max_error_rate=0.01, min_requests=200)
    v = run(c, traffic(50, error_rate=0.5), traffic(1000))
    assert v["result"] == "inconclusive"
    assert "50 of the 200" in v["why"]
    v = run(c, traffic(1000), traffic(30))
    assert v["result"] == "inconclusive"
    assert "30 of the 200" in v["why"]
    # no baseline can come (a step taken by hand recorded none): skipped, and said
    alone = run(c, traffic(1000), None)
    assert alone["result"] == "pass"
    assert [ch["result"] for ch in alone["checks"]] == ["pass", "skipped"]
    assert "1 skipped" in alone["why"]
    # comparisons only, and no baseline: nothing was judged, which is no pass
    nothing = run(Criteria(max_error_ratio=2), traffic(1000), None)
    assert nothing["result"] == "inconclusive"
    assert "nothing to judge" in nothing["why"]


def test_five_percent_errors_against_none_fails_with_evidence() -> None:
    v = run(Criteria(max_error_ratio=2), traffic(1000, error_rate=0.05), traffic(1000, seed=9))
    assert v["result"] == "fail"
    (check,) = [c for c in v["checks"] if c["check"] == "error-ratio"]
    assert check["baseline_errors"] == 0
    assert check["canary_errors"] > 20
    assert check["method"] == "fisher-exact"
    assert check["p_value"] < 1e-6
    assert v["canary"]["error_rate"] > 0.02
    assert v["baseline"]["error_rate"] == 0


def test_sparse_errors_are_not_a_significant_regression() -> None:
    # 1 error in 300 against none: ratio 3 but p = 0.5 -- noise, not a rollback
    canary = Traffic.from_json({**traffic(300).to_json(), "errors": 1})
    v = run(Criteria(max_error_ratio=2), canary, traffic(300, seed=4))
    assert v["result"] == "pass"


def test_sparse_but_real_errors_of_a_service_that_has_none_fail() -> None:
    """Kayenta's issue 426: a service whose error rate is usually zero, a canary with a few
    errors. Pooled counts, not a rank test on per-interval rates: 10 errors in 2,000 against
    none in 2,000 is p = 0.5^10, a failure; 4 against 0 (p = 1/16 by any test: the chance
    that all four land in the canary) is not yet evidence at alpha 0.01."""
    c = Criteria(max_error_ratio=2)
    canary = Traffic.from_json({**traffic(2000).to_json(), "errors": 10})
    v = run(c, canary, traffic(2000, seed=5))
    assert v["result"] == "fail"
    assert v["checks"][0]["p_value"] == pytest.approx(0.5**10, rel=0.05)
    four = Traffic.from_json({**traffic(2000).to_json(), "errors": 4})
    assert run(c, four, traffic(2000, seed=5))["checks"][0]["p_value"] == pytest.approx(
        1 / 16, rel=0.05
    )


def test_worse_on_the_numbers_but_not_yet_significant_holds_rather_than_passes() -> None:
    """A canary with 5% errors measured on too few requests to prove it (3 in 150 against
    none, p = 1/8): not a fail yet, and not a pass either, or the controller would step or
    promote it on the first look (the live rollout test once promoted such a canary to the
    whole fleet, and only the bake after promotion caught it). More traffic decides."""
    c = Criteria(max_error_ratio=2, min_requests=150)
    three = Traffic.from_json({**traffic(150).to_json(), "errors": 3})
    v = run(c, three, traffic(150, seed=4))
    assert v["result"] == "inconclusive"
    (check,) = v["checks"]
    assert check["result"] == "inconclusive"
    assert 0.1 < check["p_value"] < 0.2
    assert "not yet significant at 0.01" in v["why"]
    # the same rate on enough traffic: significant, a fail
    thirty = Traffic.from_json({**traffic(600).to_json(), "errors": 30})
    assert run(c, thirty, traffic(600, seed=4))["result"] == "fail"
    # within the limit on the numbers: a pass, significant or not
    assert run(c, traffic(150), traffic(150, seed=4))["result"] == "pass"
    # a stray error or two against none is as likely anywhere: no hold (p = 1/2, 1/4)
    for errors in (1, 2):
        stray = Traffic.from_json({**traffic(300).to_json(), "errors": errors})
        assert run(c, stray, traffic(300, seed=4))["result"] == "pass"


def test_slower_or_less_accurate_on_the_numbers_only_holds_too() -> None:
    few = Criteria(max_p99_ratio=1.5, min_requests=10)
    v = run(few, traffic(12, ms=13, seed=2), traffic(12, ms=10, seed=102))  # 12 requests a side
    (check,) = v["checks"]
    assert check["ratio"] > 1.5
    assert few.alpha <= check["p_value"] < 0.2
    assert check["result"] == "inconclusive"
    c = Criteria(metrics=(MetricRule.parse("accuracy:min:0.05"),), min_requests=40)
    v = run(c, traffic(40, quality=("accuracy", 0.8)), traffic(40, quality=("accuracy", 0.95)))
    (check,) = v["checks"]
    assert check["baseline_mean"] - check["canary_mean"] > 0.05
    assert c.alpha <= check["p_value"] < 0.2
    assert check["result"] == "inconclusive"


def test_twice_as_slow_fails_p99_ratio_and_alike_passes() -> None:
    c = Criteria(max_p99_ratio=1.5)
    slow = run(c, traffic(1000, ms=20, seed=2), traffic(1000, ms=10, seed=3))
    assert slow["result"] == "fail"
    (check,) = slow["checks"]
    assert check["ratio"] > 1.6
    assert check["effect"] > 0.9
    assert check["method"] == "mann-whitney"
    same = run(c, traffic(1000, ms=10, seed=2), traffic(1000, ms=10, seed=3))
    assert same["result"] == "pass"


def test_quality_drop_beyond_tolerance_fails() -> None:
    c = Criteria(metrics=(MetricRule.parse("accuracy:min:0.05"),))
    bad = run(c, traffic(800, quality=("accuracy", 0.61)), traffic(800, quality=("accuracy", 0.96)))
    assert bad["result"] == "fail"
    assert "accuracy" in bad["why"]
    ok = run(c, traffic(800, quality=("accuracy", 0.95)), traffic(800, quality=("accuracy", 0.96)))
    assert ok["result"] == "pass"
    none = run(c, traffic(800), traffic(800, quality=("accuracy", 0.96)))
    assert none["result"] == "inconclusive"


def test_a_small_real_drop_within_tolerance_passes_on_a_large_sample() -> None:
    """93% against 95% with tolerance 0.05: significantly worse, but not by more than the
    tolerance, so it passes however large the sample (the test is against the margin)."""
    c = Criteria(metrics=(MetricRule.parse("accuracy:min:0.05"),))
    v = run(
        c, traffic(20000, quality=("accuracy", 0.93)), traffic(20000, quality=("accuracy", 0.95))
    )
    assert v["result"] == "pass"
    (check,) = v["checks"]
    assert check["p_value"] > 0.5  # H0 "worse by at most 0.05" stands


def test_a_quality_mean_without_spread_is_not_evidence() -> None:
    """An endpoint exporting only _count and _sum (a plain Prometheus summary): the means are
    shown, the check is inconclusive, never a rollback on a mean alone."""
    c = Criteria(metrics=(MetricRule.parse("accuracy:min:0.05"),))
    bad = traffic(800, quality=("accuracy", 0.5))
    good = traffic(800, quality=("accuracy", 0.96))
    no_sq = [
        Traffic.from_json(
            {**t.to_json(), "quality": {"accuracy": [*t.quality["accuracy"][:2], None]}}
        )
        for t in (bad, good)
    ]
    v = run(c, no_sq[0], no_sq[1])
    assert v["result"] == "inconclusive"
    assert "no spread to test" in v["why"]


def test_guard_rails_judge_the_canary_alone() -> None:
    c = Criteria(max_error_rate=0.01, max_p99_ms=15)
    assert run(c, traffic(1000, error_rate=0.05), None)["result"] == "fail"
    assert run(c, traffic(1000, ms=30), None)["result"] == "fail"
    assert run(c, traffic(1000, ms=5), None)["result"] == "pass"


def test_criteria_round_trip_and_refuse_nonsense() -> None:
    c = Criteria(max_error_ratio=2, metrics=(MetricRule.parse("loss:max:0.1"),), fail_checks=2)
    assert Criteria.from_json(c.to_json()) == c
    assert not Criteria().active
    assert c.active
    for bad in ("accuracy", "accuracy:up:1", "a b:min:1"):
        with pytest.raises(Exception, match="NAME:min:TOL"):
            MetricRule.parse(bad)
    with pytest.raises(ValueError, match="not a number"):
        Criteria.from_json({"max_error_ratio": "2"})
    with pytest.raises(Exception, match="--alpha"):
        Criteria(alpha=0.7).check()


def test_total_of_nothing_is_empty() -> None:
    assert total([]).empty
