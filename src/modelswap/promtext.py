"""Prometheus text exposition for the agent's and the loader's /metrics, with no client
library: both are a handful of counters and gauges, and the loader must stay light."""

from __future__ import annotations

Row = tuple[str, str, str, float]  # (counter|gauge, name, help, value)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(prefix: str, rows: list[Row], info: dict[str, str]) -> str:
    """`# HELP`/`# TYPE`/sample lines for each row, then `<prefix>_info{labels} 1`."""
    out = []
    for kind, name, help_text, value in rows:
        out += [
            f"# HELP {prefix}_{name} {help_text}",
            f"# TYPE {prefix}_{name} {kind}",
            f"{prefix}_{name} {value}",
        ]
    labels = ",".join(f'{k}="{_escape(v)}"' for k, v in info.items())
    out += [
        f"# HELP {prefix}_info the versions in play",
        f"# TYPE {prefix}_info gauge",
        f"{prefix}_info{{{labels}}} 1",
    ]
    return "\n".join(out) + "\n"
