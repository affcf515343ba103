"""Inline SVG charts for the UI, drawn on the server: no script, no library, nothing to fetch.

Every text that reaches the SVG (version names, pointer names, reasons) is escaped here with
markupsafe, the same escaping the templates use; numbers are formatted, never interpolated raw.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from markupsafe import Markup, escape

WIDTH, HEIGHT = 880, 240
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 16, 40
MAX_MOVES = 1000  # the "what was live when" chart draws the last this many moves
POINTER_COLORS = {"CURRENT": "#2563eb", "CANARY": "#d97706"}
OTHER_COLORS = ("#7c3aed", "#059669", "#db2777", "#0891b2")
ROLLBACK_TYPES = ("rollback", "auto-rollback")


def pointer_color(name: str, others: Sequence[str] = ()) -> str:
    if name in POINTER_COLORS:
        return POINTER_COLORS[name]
    index = sorted(others).index(name) if name in others else 0
    return OTHER_COLORS[index % len(OTHER_COLORS)]


@dataclass(frozen=True)
class Move:
    """One logged move for the chart: when, which pointer, to which version, of what type."""

    time: datetime
    pointer: str
    to: str | None
    type: str
    seq: int | None


def _ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    if hi <= lo:
        return [lo]
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    for mult in (1, 2, 5, 10):
        if (hi - lo) / (step * mult) <= n:
            step *= mult
            break
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _svg(label: str, body: list[str]) -> Markup:
    # Safe: every text in `body` went through escape() and the rest are formatted numbers.
    return Markup(  # noqa: S704
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">'
        + "".join(body)
        + "</svg>"
    )


def _frame(y_ticks: list[tuple[float, str]], x_labels: list[tuple[float, str]]) -> list[str]:
    out = [
        f'<line class="axis" x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}" '
        f'y2="{HEIGHT - BOTTOM}"/>'
    ]
    for y, text in y_ticks:
        out.append(
            f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}"/>'
            f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(text)}</text>"
        )
    for x, text in x_labels:
        out.append(
            f'<text class="tick" x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">'
            f"{escape(text)}</text>"
        )
    return out


def _spread(n: int, most: int = 8) -> list[int]:
    """Up to `most` evenly spread indices of n, the first and the last included."""
    if n <= most:
        return list(range(n))
    return sorted({round(i * (n - 1) / (most - 1)) for i in range(most)})


def metric_chart(
    versions: Sequence[str],
    values: dict[str, float],
    metric: str,
    ever: dict[str, set[str]],
    now: dict[str, str],
) -> Markup:
    """`metric` of each version in order; versions a pointer ever named are filled in its
    colour, the one it names now is ringed and labelled."""
    # Only what a chart can place: a stored 1e308 would overflow the axis (the table shows it).
    points = [
        (i, v, float(values[v]))
        for i, v in enumerate(versions)
        if v in values and math.isfinite(values[v]) and abs(values[v]) < 1e300
    ]
    if not points:
        return Markup('<p class="empty">no version has the metric {}</p>').format(metric)
    lo, hi = min(p[2] for p in points), max(p[2] for p in points)
    pad = (hi - lo) * 0.08 or abs(hi) * 0.05 or 1.0
    lo, hi = lo - pad, hi + pad
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(i: int) -> float:
        return LEFT + (inner_w * i / (len(versions) - 1) if len(versions) > 1 else inner_w / 2)

    def y(val: float) -> float:
        return TOP + inner_h * (1 - (val - lo) / (hi - lo))

    body = _frame(
        [(y(t), _fmt(t)) for t in _ticks(lo, hi)],
        [(x(i), versions[i]) for i in _spread(len(versions))],
    )
    line = " ".join(f"{x(i):.1f},{y(val):.1f}" for i, _, val in points)
    body.append(f'<polyline class="series" points="{line}"/>')
    owners: dict[str, list[str]] = {}
    for pointer, named in ever.items():
        for v in named:
            owners.setdefault(v, []).append(pointer)
    others = [p for p in ever if p not in POINTER_COLORS]
    radius = 2.5 if len(points) > 150 else 3.5
    for i, v, val in points:
        named_by = sorted(owners.get(v, []))
        live_now = sorted(p for p, w in now.items() if w == v)
        tip = f"{v}: {metric} {_fmt(val)}"
        if named_by:
            tip += " - named by " + ", ".join(named_by)
        if live_now:
            tip += " (" + ", ".join(live_now) + " now)"
        fill = pointer_color(named_by[0], others) if named_by else "#ffffff"
        ring = ' class="now"' if live_now else ' class="dot"'
        r = radius * 2 if live_now else radius
        body.append(
            f'<circle{ring} cx="{x(i):.1f}" cy="{y(val):.1f}" r="{r}" fill="{fill}">'
            f"<title>{escape(tip)}</title></circle>"
        )
        if live_now:
            body.append(
                f'<text class="label" x="{x(i):.1f}" y="{y(val) - 10:.1f}" text-anchor="middle">'
                f"{escape(v + ' ' + '/'.join(live_now))}</text>"
            )
    return _svg(f"{metric} by version", body)


def live_chart(versions: Sequence[str], moves: Sequence[Move]) -> Markup:
    """Which version each pointer named over time: one step line per pointer (y is the
    version's place in order), rollbacks marked."""
    known = set(versions)
    shown = [m for m in moves if m.to in known][-MAX_MOVES:]
    if not shown:
        return Markup('<p class="empty">no pointer has moved yet</p>')
    # y spans the versions these moves named, in version order, not all of them: 1,000 moves
    # among the last 30 of 500 versions would otherwise be a flat line at the top.
    named = {m.to for m in shown}
    versions = [v for v in versions if v in named]
    order = {v: i for i, v in enumerate(versions)}
    t0, t1 = shown[0].time.timestamp(), shown[-1].time.timestamp()
    span = (t1 - t0) or 1.0
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top_index = max(1, len(versions) - 1)

    def x(m: Move) -> float:
        return LEFT + inner_w * (m.time.timestamp() - t0) / span

    def y(version: str) -> float:
        return TOP + inner_h * (1 - order[version] / top_index)

    y_ticks = [(y(versions[i]), versions[i]) for i in _spread(len(versions), 5)]
    stamp = "%Y-%m-%d" if span > 3 * 86400 else "%m-%d %H:%M"
    x_ticks = [(x(shown[i]), shown[i].time.strftime(stamp)) for i in _spread(len(shown), 5)]
    body = _frame(y_ticks, x_ticks)
    pointers = sorted({m.pointer for m in shown}, key=lambda p: (p != "CURRENT", p))
    others = [p for p in pointers if p not in POINTER_COLORS]
    for pointer in pointers:
        steps: list[str] = []
        for m in shown:
            if m.pointer != pointer or m.to is None:
                continue
            if steps:
                steps.append(f"{x(m):.1f},{steps[-1].split(',')[1]}")
            steps.append(f"{x(m):.1f},{y(m.to):.1f}")
        color = pointer_color(pointer, others)
        body.append(f'<polyline class="step" stroke="{color}" points="{" ".join(steps)}"/>')
    for m in shown:
        if m.type in ROLLBACK_TYPES and m.to is not None:
            tip = f"{m.time:%Y-%m-%d %H:%M} {m.type} of {m.pointer} to {m.to}"
            body.append(
                f'<circle class="rollback" cx="{x(m):.1f}" cy="{y(m.to):.1f}" r="3">'
                f"<title>{escape(tip)}</title></circle>"
            )
    return _svg("which version each pointer named over time", body)
