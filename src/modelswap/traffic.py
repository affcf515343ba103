"""What one version served: requests, errors, a latency histogram, and live quality signals.

The loader counts it (loader/traffic.py), the agent scrapes and sums it per interval
(agent/metrics.py) into its fleet report, and the controller adds the reports of a cohort and
judges them (judge.py). The histogram is cumulative like Prometheus' own (`counts[i]` is the
number of requests that took <= `bounds[i]` seconds, the last entry is +Inf: the timed
requests, all of them for the loader, perhaps only the successful ones for another endpoint),
so two histograms with different bounds still add up exactly on the bounds they share.
Everything here is read from reports other processes wrote: from_json refuses anything that
is not a plain, consistent set of counts.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# Fixed latency buckets (seconds), about 1.5x apart: fine enough for a 2x slowdown to land in
# another bucket from 1 ms to 10 s, and a fixed set so that every loader's histograms add up.
BUCKETS_S: tuple[float, ...] = (
    0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05,
    0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 30.0,
)  # fmt: skip
MAX_BOUNDS = 64
MAX_QUALITY = 16  # live quality signals per version
MAX_COUNT = 2**53  # beyond this a count is no count (and a float of it is no longer exact)
MAX_SUM = 1e100  # a sum beyond this is no measurement; two of them still add up to a finite one
Quality = tuple[int, float, float | None]  # (count, sum, sum of squares or None if unknown)


class BadTraffic(ValueError):
    """A report's metrics are not counts this module would have written."""


@dataclass(frozen=True)
class Traffic:
    requests: int = 0
    errors: int = 0
    seconds_sum: float = 0.0
    bounds: tuple[float, ...] = BUCKETS_S
    counts: tuple[int, ...] = (0,) * (len(BUCKETS_S) + 1)
    quality: dict[str, Quality] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return self.requests == 0 and not any(q[0] for q in self.quality.values())

    def per_bucket(self) -> list[int]:
        return [c - (self.counts[i - 1] if i else 0) for i, c in enumerate(self.counts)]

    def on(self, bounds: tuple[float, ...]) -> Traffic:
        """The same histogram on a subset of its bounds (exact: the counts are cumulative)."""
        if bounds == self.bounds:
            return self
        index = {b: i for i, b in enumerate(self.bounds)}
        counts = (*(self.counts[index[b]] for b in bounds), self.counts[-1])
        return Traffic(
            self.requests, self.errors, self.seconds_sum, bounds, counts, dict(self.quality)
        )

    def __add__(self, other: Traffic) -> Traffic:
        shared = tuple(sorted(set(self.bounds) & set(other.bounds)))
        a, b = self.on(shared), other.on(shared)
        quality = dict(a.quality)
        for name, (n, s, q) in b.quality.items():
            n0, s0, q0 = quality.get(name, (0, 0.0, 0.0))
            quality[name] = (n0 + n, s0 + s, None if q is None or q0 is None else q0 + q)
        return Traffic(
            a.requests + b.requests,
            a.errors + b.errors,
            a.seconds_sum + b.seconds_sum,
            shared,
            tuple(x + y for x, y in zip(a.counts, b.counts, strict=True)),
            quality,
        )

    def since(self, earlier: Traffic) -> Traffic:
        """What was counted after `earlier` (the same counters, read before). A counter that
        went down was reset (the app restarted): then all of this one is new, as Prometheus'
        rate() reads a reset. Bounds that changed are compared on those both have."""
        if self.bounds != earlier.bounds:
            shared = tuple(sorted(set(self.bounds) & set(earlier.bounds)))
            return self.on(shared).since(earlier.on(shared))
        if self.requests < earlier.requests:
            return self
        counts = tuple(x - y for x, y in zip(self.counts, earlier.counts, strict=True))
        if (
            self.errors < earlier.errors
            or min(counts) < 0
            or any(a > b for a, b in itertools.pairwise(counts))
            or counts[-1] > self.requests - earlier.requests
        ):
            return self  # not one set of counters grown since: a reset in between
        quality: dict[str, Quality] = {}
        for name, (n, s, q) in self.quality.items():
            n0, s0, q0 = earlier.quality.get(name, (0, 0.0, 0.0))
            if n < n0:
                return self
            if n > n0:
                quality[name] = (n - n0, s - s0, None if q is None or q0 is None else q - q0)
        return Traffic(
            self.requests - earlier.requests,
            self.errors - earlier.errors,
            max(0.0, self.seconds_sum - earlier.seconds_sum),
            self.bounds,
            counts,
            quality,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "seconds_sum": round(self.seconds_sum, 6),
            "bounds": list(self.bounds),
            "counts": list(self.counts),
            "quality": {k: list(v) for k, v in sorted(self.quality.items())},
        }

    @classmethod
    def from_json(cls, raw: Any) -> Traffic:
        if not isinstance(raw, dict):
            raise BadTraffic("metrics are not a JSON object")
        bounds = tuple(_number(b, "a bucket bound") for b in _list(raw.get("bounds"), "bounds"))
        counts = tuple(_count(c, "a bucket count") for c in _list(raw.get("counts"), "counts"))
        if len(bounds) > MAX_BOUNDS or list(bounds) != sorted(set(bounds)):
            raise BadTraffic("bucket bounds must rise, at most 64 of them")
        if len(counts) != len(bounds) + 1 or any(a > b for a, b in itertools.pairwise(counts)):
            raise BadTraffic("bucket counts must be cumulative, one per bound and one for +Inf")
        requests, errors = (
            _count(raw.get("requests"), "requests"),
            _count(raw.get("errors"), "errors"),
        )
        if errors > requests or counts[-1] > requests:  # an endpoint may time fewer (successes)
            raise BadTraffic(f"{errors} errors or {counts[-1]} timed in {requests} requests")
        quality_raw = raw.get("quality", {})
        if not isinstance(quality_raw, dict) or len(quality_raw) > MAX_QUALITY:
            raise BadTraffic(f"quality is not an object of at most {MAX_QUALITY} signals")
        quality: dict[str, Quality] = {}
        for name, value in quality_raw.items():
            v = _list(value, f"quality {name!r}")
            if len(v) != 3 or not isinstance(name, str) or not 0 < len(name) <= 64:
                raise BadTraffic(f"quality {name!r} is not [count, sum, sumsq]")
            sumsq = None if v[2] is None else _number(v[2], "a sum of squares")
            quality[name] = (_count(v[0], "a count"), _number(v[1], "a sum"), sumsq)
        seconds = _number(raw.get("seconds_sum", 0.0), "seconds_sum")
        return cls(requests, errors, seconds, bounds, counts, quality)


def total(parts: Iterable[Traffic]) -> Traffic:
    out: Traffic | None = None
    for part in parts:
        out = part if out is None else out + part
    return out if out is not None else Traffic()


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise BadTraffic(f"{what} is not a list")
    return value


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise BadTraffic(f"{what} is {str(value)[:40]!r}, not a count")
    return value


def _number(value: Any, what: str) -> float:
    """A finite float no larger than MAX_SUM in size (sums of them stay finite)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadTraffic(f"{what} is {str(value)[:40]!r}, not a number")
    try:
        number = float(value)  # a 400-digit integer: OverflowError
    except OverflowError as e:
        raise BadTraffic(f"{what} is too large") from e
    if not math.isfinite(number) or abs(number) > MAX_SUM:
        raise BadTraffic(f"{what} is {number!r}, not a finite number below {MAX_SUM:g}")
    return number
