"""What the app's loader serves (`--loader-url`, its /health): a linked version the loader
refused to load is a refusal of that version, reported like a failed verification, so a
rollout's controller rolls it back. A loader that does not answer says nothing (it may be
starting): silence is never read as a refusal."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from .state import AgentState

TIMEOUT_S = 2.0


def ask(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as r:  # noqa: S310 - http(s) checked
            body = json.loads(r.read(1 << 20))
    except urllib.error.HTTPError as e:  # 503 while no model is loaded still has a body
        try:
            body = json.loads(e.read(1 << 20))
        except ValueError:
            return None
    except (OSError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def check(state: AgentState, url: str) -> None:
    """Record what the loader serves, and a refusal of the linked version if it has one."""
    body = ask(url)
    with state.lock:
        active = state.active_version
        if body is None:
            state.served_version = None
            return
        served = body.get("model_version")
        error = body.get("last_error")
        state.served_version = served if isinstance(served, str) else None
        if active is None:
            return
        if state.served_version == active:
            state.refused_version, state.refusal = None, None
        elif isinstance(error, str) and error.startswith(f"{active}:"):
            # the loader's errors start with the folder it tried: only this version's count,
            # never a leftover error about an earlier one
            state.refused_version, state.refusal = active, f"the loader refused it: {error}"
