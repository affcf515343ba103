"""What each page shows, read through the Python API (the same calls as the CLI's --json) and
shaped for the templates. No HTML here: the templates escape, charts.py draws.

Everything read from the store is untrusted text; it stays plain data until a template or
a chart escapes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from modelswap.api import DEFAULT_POINTER, Event, Registry
from modelswap.errors import ModelswapError
from modelswap.render import diff as metadata_diff
from modelswap.render import size_str
from modelswap.ui import charts

PAGE_SIZE = 50
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def age(text: str | None, now: datetime) -> str:
    t = parse_time(text)
    if t is None:
        return "-"
    s = max(0.0, (now - t).total_seconds())
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 172800:
        return f"{s / 3600:.0f} h"
    return f"{s / 86400:.0f} d"


@dataclass(frozen=True)
class EventRow:
    """One timeline row: the event as logged, and the label a person reads first."""

    event: Event
    kind: str  # promote, forced, rollback, auto-rollback, out-of-band, rollout-step, ...
    gate: str  # "accuracy 0.91 vs 0.90: passed", "" when not gated


def number(v: object) -> str:
    """v formatted for people; whatever a hand edit stored (a 400-digit integer) never fails."""
    if isinstance(v, bool) or v is None:
        return "-" if v is None else str(v).lower()
    if isinstance(v, int | float):
        try:
            return f"{v:.4g}"
        except (OverflowError, ValueError):
            return f"{str(v)[:12]}..."
    return str(v)


def event_row(e: Event) -> EventRow:
    kind = e.type
    g = e.gate
    gate = ""
    if g is not None:
        if g.forced:
            kind = "forced"
        verdict = "passed" if g.passed else ("forced past a refusal" if g.forced else "refused")
        if g.metric is not None and g.new is not None:
            against = "" if g.current is None else f" vs {number(g.current)}"
            gate = f"{g.metric} {number(g.new)}{against}: {verdict}"
        elif g.error:
            gate = f"could not judge ({g.error}): {verdict}"
        else:
            gate = verdict
    return EventRow(e, kind, gate)


def models(reg: Registry) -> list[dict[str, Any]]:
    rows = []
    for name in reg.models():
        row: dict[str, Any] = {"name": name, "problem": None}
        try:  # one model the store holds nonsense for must not hide the others
            versions = reg.versions(name)
            events = reg.history(name).events
            rollout = reg.rollout_status(name).rollout
            current = next((v.version for v in versions if DEFAULT_POINTER in v.pointers), None)
            complete = [v for v in versions if v.complete]
            row.update(
                current=current,
                versions=len(complete),
                broken=len(versions) - len(complete),
                newest=complete[-1].version if complete else None,
                last=event_row(events[-1]) if events else None,
                rollout=rollout if rollout is not None and rollout.active else None,
            )
        except (ModelswapError, ValueError, OverflowError) as e:
            row["problem"] = str(e)
        rows.append(row)
    return rows


def model(reg: Registry, name: str, metric: str | None) -> dict[str, Any]:
    warnings: list[ModelswapError] = []
    versions = reg.versions(name, warnings=warnings)
    history = reg.history(name)
    warnings += history.warnings
    metric_names = sorted({k for v in versions for k in v.metrics})
    chosen = metric if metric in metric_names else (metric_names[0] if metric_names else None)
    order = [v.version for v in versions if v.complete]  # the charts' x (or y) axis
    ever: dict[str, set[str]] = {}
    moves = []
    for e in history.events:
        if e.to is not None:
            ever.setdefault(e.pointer, set()).add(e.to)
        moves.append(charts.Move(parse_time(e.time) or EPOCH, e.pointer, e.to, e.type, e.seq))
    now = {p: v.version for v in versions for p in v.pointers}
    for p, v in now.items():
        ever.setdefault(p, set()).add(v)
    chart = None
    if chosen is not None:
        values = {v.version: v.metrics[chosen] for v in versions if chosen in v.metrics}
        chart = charts.metric_chart(order, values, chosen, ever, now)
    moves.sort(key=lambda m: m.time)
    rollout = reg.rollout_status(name)
    return {
        "name": name,
        "versions": list(reversed(versions)),  # newest first, as people look for them
        "pointers": sorted(now.items(), key=lambda kv: (kv[0] != DEFAULT_POINTER, kv[0])),
        "metric_names": metric_names,
        "metric": chosen,
        "chart": chart,
        "live_chart": charts.live_chart(order, moves),
        "moves_total": len(moves),
        "moves_shown": min(len(moves), charts.MAX_MOVES),
        "recent": [event_row(e) for e in reversed(history.events[-10:])],
        "events_total": len(history.events),
        "warnings": [str(w) for w in warnings],
        "rollout": rollout.rollout if rollout.rollout is not None else None,
    }


def timeline(reg: Registry, name: str, page: int, kind: str | None) -> dict[str, Any]:
    history = reg.history(name)
    rows = [event_row(e) for e in reversed(history.events)]  # newest first
    kinds = sorted({r.kind for r in rows})
    if kind:
        rows = [r for r in rows if r.kind == kind]
    pages = max(1, -(-len(rows) // PAGE_SIZE))
    page = min(max(1, page), pages)
    return {
        "name": name,
        "rows": rows[(page - 1) * PAGE_SIZE : page * PAGE_SIZE],
        "page": page,
        "pages": pages,
        "total": len(rows),
        "kind": kind or "",
        "kinds": kinds,
        "warnings": [str(w) for w in history.warnings],
    }


def version(reg: Registry, name: str, version_name: str) -> dict[str, Any]:
    meta = reg.show(name, version_name)
    row = next((v for v in reg.versions(name) if v.version == version_name), None)
    known = {"version", "created", "files", "metrics", "model", "notes", "git_sha"}
    return {
        "name": name,
        "meta": meta,
        "notes": meta.raw.get("notes"),
        "git_sha": meta.raw.get("git_sha"),
        "files": sorted(meta.files.items()),
        "metrics": sorted(meta.metrics.items()),
        "extra": sorted((k, v) for k, v in meta.raw.items() if k not in known),
        "pointers": row.pointers if row else (),
        "signed": row.signed if row else False,
        "size": size_str(meta.size),
    }


def diff(reg: Registry, name: str, a: str | None, b: str | None) -> dict[str, Any]:
    names = [v.version for v in reg.versions(name) if v.complete]
    out: dict[str, Any] = {"name": name, "names": names, "a": a, "b": b, "lines": None}
    if a and b:
        left, right = reg.show(name, a), reg.show(name, b)  # read once for both tables
        out["lines"] = metadata_diff(left, right)
        ma, mb = left.metrics, right.metrics
        out["metrics"] = [(k, ma.get(k), mb.get(k)) for k in sorted(set(ma) | set(mb))]
    return out


def fleet(reg: Registry, name: str, pointer: str) -> dict[str, Any]:
    status = reg.status(name, pointer=pointer)
    now = datetime.now(UTC)
    fresh = [i for i in status.instances if not i.stale]
    on_it = [i for i in fresh if i.ready and i.active_version == status.version]
    return {
        "name": name,
        "pointer": pointer,
        "status": status,
        "rows": [(i, age(i.heartbeat, now)) for i in status.instances],
        "converged_n": len(on_it),
        "fresh_n": len(fresh),
    }


def rollout(reg: Registry, name: str) -> dict[str, Any]:
    status = reg.rollout_status(name)
    r = status.rollout
    verdict = None
    if r is not None:
        verdict = status.judging if (r.active or r.watching) else r.verdict
    return {
        "name": name,
        "status": status,
        "r": r,
        "verdict": verdict if isinstance(verdict, dict) else None,
        "checks": [c for c in (verdict or {}).get("checks") or [] if isinstance(c, dict)]
        if isinstance(verdict, dict)
        else [],
    }
