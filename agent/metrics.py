"""`--metrics-url`: scrape the app's request counters (the loader's /metrics, or any Prometheus
endpoint with the same names) and keep, per version, what was counted since this agent started.

The fleet report carries those totals (with `since`, so a restarted agent is told apart) and the
last interval's deltas; the rollout controller subtracts the totals it saw when its judging
window opened. The first scrape only sets the starting point: what the app counted before this
agent ran is never attributed to a window. A counter that goes down means the app restarted:
everything it counts from then on is new (Prometheus' reading of a reset).

The text is parsed by prometheus_client's parser, the reference one, not by hand.
"""

from __future__ import annotations

import math
import time
import urllib.request
from collections import OrderedDict
from typing import Any

from modelswap.metadata import utc_now
from modelswap.redact import redact
from modelswap.traffic import Traffic

TIMEOUT_S = 2.0
MAX_BYTES = 4 << 20
KEEP_VERSIONS = 4
REQUESTS, ERRORS = "modelswap_requests_total", "modelswap_request_errors_total"
SECONDS = "modelswap_request_seconds"
QUALITY = "modelswap_quality"


def parse(text: str) -> dict[str, Traffic]:
    """Per version label, the counters as the endpoint exports them now."""
    raw: dict[str, dict[str, Any]] = {}

    def of(version: str) -> dict[str, Any]:
        return raw.setdefault(
            version,
            {"requests": None, "errors": 0, "sum": 0.0, "le": {}, "quality": {}},
        )

    # Imported here: only an agent with --metrics-url scrapes (~20 ms of every other start)
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    for family in text_string_to_metric_families(text):
        for s in family.samples:
            version = s.labels.get("version")
            if not version or not math.isfinite(s.value) or s.value < 0:
                continue
            if s.name == REQUESTS:
                of(version)["requests"] = int(s.value)
            elif s.name == ERRORS:
                of(version)["errors"] = int(s.value)
            elif s.name == SECONDS + "_bucket" and "le" in s.labels:
                of(version)["le"][float(s.labels["le"])] = int(s.value)
            elif s.name == SECONDS + "_sum":
                of(version)["sum"] = s.value
            elif s.name.startswith(QUALITY + "_") and s.labels.get("name"):
                q = of(version)["quality"].setdefault(s.labels["name"], [0, 0.0, None])
                part = s.name[len(QUALITY) + 1 :]
                if part in ("count", "sum", "sumsq"):
                    q[("count", "sum", "sumsq").index(part)] = s.value
    out = {}
    for version, r in raw.items():
        le = r["le"]
        bounds = tuple(sorted(b for b in le if math.isfinite(b)))
        finite = [le[b] for b in bounds]
        top = le.get(math.inf)
        if top is None:  # no +Inf bucket (or no histogram): nothing timed beyond the bounds
            top = finite[-1] if finite else (r["requests"] or 0)
        counts = [*finite, top]
        for i in range(1, len(counts)):  # a scrape torn between two requests: never decreasing
            counts[i] = max(counts[i], counts[i - 1])
        # the counter says how many requests (an endpoint may time only its successes); the
        # histogram's count stands in only when there is no counter
        requests = max(r["requests"] if r["requests"] is not None else counts[-1], counts[-1])
        quality = {n: (int(q[0]), float(q[1]), q[2]) for n, q in r["quality"].items() if q[0]}
        out[version] = Traffic(
            requests, min(r["errors"], requests), r["sum"], bounds, tuple(counts), quality
        )
    return out


class Scraper:
    def __init__(self, url: str) -> None:
        self.url = url
        self.since = utc_now()  # the totals count from here (a new agent starts them anew)
        self.error: str | None = "not scraped yet"
        self.scraped: str | None = None
        self._last: dict[str, Traffic] | None = None  # the endpoint's counters, last read
        self.totals: OrderedDict[str, Traffic] = OrderedDict()
        self._at_report: dict[str, Traffic] = {}
        self._report_t = time.monotonic()
        self.scrapes = self.failures = 0  # for the agent's /metrics

    def scrape(self) -> None:
        """One read of the endpoint; a failure is kept for the report, never raised."""
        self.scrapes += 1
        try:
            with urllib.request.urlopen(self.url, timeout=TIMEOUT_S) as r:  # noqa: S310
                text = r.read(MAX_BYTES + 1)
            if len(text) > MAX_BYTES:
                raise ValueError(f"more than {MAX_BYTES} bytes")
            now = parse(text.decode("utf-8"))
        except (OSError, ValueError) as e:  # unreachable, not Prometheus text, too large
            self.error = redact(f"{self.url}: {type(e).__name__}: {e}")
            self.failures += 1
            return
        last, self._last = self._last, now
        self.error, self.scraped = None, utc_now()
        if last is None:
            return
        for version, counters in now.items():
            before = last.get(version)
            new = counters.since(before) if before is not None else counters
            if new.empty:
                continue
            self.totals[version] = self.totals[version] + new if version in self.totals else new
            self.totals.move_to_end(version)
            while len(self.totals) > KEEP_VERSIONS:
                self.totals.popitem(last=False)

    def report(self) -> dict[str, Any]:
        """The `metrics` of a fleet report: totals since `since`, and this interval's deltas."""
        now = time.monotonic()
        interval = {
            v: t.since(self._at_report[v]) if v in self._at_report else t
            for v, t in self.totals.items()
        }
        out = {
            "url": redact(self.url),
            "since": self.since,
            "scraped": self.scraped,
            "error": self.error,
            "interval_s": round(now - self._report_t, 3),
            "versions": {v: t.to_json() for v, t in self.totals.items()},
            "interval": {v: t.to_json() for v, t in interval.items() if not t.empty},
        }
        self._at_report, self._report_t = dict(self.totals), now
        return out
