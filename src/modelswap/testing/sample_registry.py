"""A big, realistic local-folder registry written straight to disk, in the layout PRODUCT.md
section 1 gives: for the UI's tests and its benchmark (500 versions, 10,000 events).

Written file by file rather than through publish and promote, which take a lease per move:
10,000 moves that way take minutes, and what is measured is reading, not writing.
"""

from __future__ import annotations

import hashlib
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from modelswap import keys

START = datetime(2026, 1, 1, tzinfo=UTC)


def _stamp(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _write(root: Path, key: str, data: bytes) -> None:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def build(
    root: Path, model: str = "clf", versions: int = 500, events: int = 10_000, seed: int = 7
) -> dict[str, Any]:
    """Write `versions` versions and `events` pointer moves of `model` under `root`; returns
    what was written (the live version, the number of each event type)."""
    rng = random.Random(seed)
    names = [f"v{i}" for i in range(1, versions + 1)]
    accuracy = 0.80
    for i, v in enumerate(names):
        body = f"{model} {v}".encode()
        accuracy = min(0.99, max(0.5, accuracy + rng.uniform(-0.01, 0.012)))
        meta = {
            "created": _stamp(START + timedelta(hours=6 * i)),
            "files": {
                "model.onnx": {"sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}
            },
            "git_sha": f"{rng.getrandbits(160):040x}",
            "metrics": {"accuracy": round(accuracy, 4), "latency_ms": round(rng.uniform(3, 9), 2)},
            "model": model,
            "notes": f"nightly build {i + 1}",
            "published_by": "ci@pipeline",
            "training_data": f"s3://data/{model}/2026-{1 + i % 12:02d}",
            "version": v,
        }
        _write(root, keys.version_file(model, v, "model.onnx"), body)
        _write(root, keys.metadata(model, v), json.dumps(meta, indent=2).encode())
    counts: dict[str, int] = {}
    live: str | None = None
    seen: list[str] = []
    step = timedelta(hours=6 * versions) / max(1, events)
    for seq in range(1, events + 1):
        kind = rng.choices(["promote", "rollback", "auto-rollback"], weights=[16, 3, 1])[0]
        gate = None
        newest = names[min(len(names) - 1, int(len(names) * seq / events))]
        back = [v for v in seen[-6:] if v != live]
        if kind != "promote" and back:
            target = back[-1]
        else:
            kind = "promote"  # the newest version, or one of the few before it again
            recent = names[max(0, names.index(newest) - 3) : names.index(newest) + 1]
            target = newest if newest != live else rng.choice(recent)
            passed = rng.random() < 0.9  # else a refused gate someone forced past
            gate = {
                "candidate": target,
                "against": live,
                "metric": "accuracy",
                "direction": "max",
                "new": round(rng.uniform(0.85, 0.95), 4),
                "current": round(rng.uniform(0.85, 0.95), 4),
                "tolerance": 0.005,
                "passed": passed,
                "forced": not passed,
                "forced_by": None if passed else "alice@laptop",
            }
        event = {
            "actor": rng.choice(["ci@pipeline", "alice@laptop", "controller@rollout"]),
            "from": live,
            "gate": gate,
            "pointer": "CURRENT",
            "reason": f"move {seq}",
            "time": _stamp(START + step * seq),
            "to": target,
            "type": kind,
        }
        live = target
        seen.append(target)
        counts[kind] = counts.get(kind, 0) + 1
        _write(root, keys.event(model, seq), json.dumps(event).encode())
    if live is not None:
        _write(root, keys.pointer(model, "CURRENT"), f"{live}\n".encode())
    return {"model": model, "current": live, "versions": versions, "events": counts}
