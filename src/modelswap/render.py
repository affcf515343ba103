"""Human-readable output of the CLI; --json output is built in cli.py from the same data."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from modelswap.metadata import Metadata
from modelswap.records import Event


def size_str(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"


def metrics_str(metrics: dict[str, Any]) -> str:
    return " ".join(
        f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(metrics.items())
    )


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def show(model: str, meta: Metadata, pointers: list[str]) -> str:
    raw = meta.raw
    named = f"  ({', '.join(pointers)})" if pointers else ""
    lines = [f"{model} {meta.version}{named}"]
    for key in ("created", "git_sha", "training_data", "notes", "published_by"):
        if raw.get(key) is not None:
            lines.append(f"  {key:<14}{raw[key]}")
    if raw.get("git_dirty"):
        lines.append(f"  {'git_dirty':<14}true (published with uncommitted changes)")
    lines.append(f"  {'metrics':<14}{metrics_str(meta.metrics) or '-'}")
    lines.append(f"  {'size':<14}{size_str(meta.size)} in {len(meta.files)} file(s)")
    for name, entry in sorted(meta.files.items()):
        lines.append(f"    {name}  {size_str(entry.size)}  sha256:{entry.sha256[:16]}")
    known = {
        "version",
        "created",
        "git_sha",
        "git_dirty",
        "training_data",
        "notes",
        "metrics",
        "files",
        "published_by",
    }
    for key in sorted(set(raw) - known):
        lines.append(f"  {key:<14}{json.dumps(raw[key])}")
    return "\n".join(lines)


def diff(a: Metadata, b: Metadata) -> list[str]:
    lines = []
    ignore = {"version", "created", "files", "metrics"}
    for key in sorted((set(a.raw) | set(b.raw)) - ignore):
        va, vb = a.raw.get(key), b.raw.get(key)
        if va != vb:
            lines.append(f"  {key}: {json.dumps(va)} -> {json.dumps(vb)}")
    ma, mb = a.metrics, b.metrics
    for key in sorted(set(ma) | set(mb)):
        va, vb = ma.get(key), mb.get(key)
        if va is None or vb is None:
            lines.append(f"  metric {key}: {va} -> {vb}")
        elif va != vb:
            lines.append(f"  metric {key}: {va:.4f} -> {vb:.4f} ({vb - va:+.4f})")
    fa, fb = a.files, b.files
    for name in sorted(set(fa) | set(fb)):
        ea, eb = fa.get(name), fb.get(name)
        if ea is None and eb is not None:
            lines.append(f"  + {name} ({size_str(eb.size)})")
        elif eb is None and ea is not None:
            lines.append(f"  - {name} ({size_str(ea.size)})")
        elif ea is not None and eb is not None and ea != eb:
            lines.append(
                f"  ~ {name} ({size_str(ea.size)} -> {size_str(eb.size)}, content changed)"
            )
    return lines


def diff_json(a: Metadata, b: Metadata) -> dict[str, Any]:
    """diff() for scripts: every changed key as [a, b]; files as their {sha256, size} or null."""
    ignore = {"version", "created", "files", "metrics"}
    keys = sorted((set(a.raw) | set(b.raw)) - ignore)
    ma, mb = a.metrics, b.metrics
    fa, fb = a.raw["files"], b.raw["files"]
    return {
        "metadata": {k: [a.raw.get(k), b.raw.get(k)] for k in keys if a.raw.get(k) != b.raw.get(k)},
        "metrics": {
            k: [ma.get(k), mb.get(k)] for k in sorted(set(ma) | set(mb)) if ma.get(k) != mb.get(k)
        },
        "files": {
            n: [fa.get(n), fb.get(n)] for n in sorted(set(fa) | set(fb)) if fa.get(n) != fb.get(n)
        },
    }


def history(events: Sequence[Event]) -> str:
    rows = [
        [
            "-" if e.seq is None else str(e.seq),
            e.time or "-",
            e.actor or "-",
            e.pointer,
            e.from_version or "-",
            e.to or "-",
            e.type,
            e.gate.summary() if e.gate is not None else "-",
            e.reason or "",
        ]
        for e in events
    ]
    return table(["SEQ", "TIME", "ACTOR", "POINTER", "FROM", "TO", "TYPE", "GATE", "REASON"], rows)
