"""The registry's promises, checked from what the store holds (PRODUCT.md sections 1 and 6).

Run after every injected fault: every version listed complete verifies; for each pointer the
events form a chain (each `from` is the previous `to`, the first `from` is nothing) whose last
`to` is what the pointer names; and no command left a lease behind.
"""

from __future__ import annotations

from modelswap.errors import InvalidPointer, ModelswapError
from modelswap.events import EventLog
from modelswap.keys import LOCKS_DIR
from modelswap.metadata import Metadata
from modelswap.pointers import list_pointers
from modelswap.registry import Registry


def problems(registry: Registry, model: str, *, leases: bool = True) -> list[str]:
    """Every broken promise found; empty when the registry is sound."""
    found: list[str] = []
    for version, meta in registry.all_metadata(model).items():
        if isinstance(meta, Metadata):
            found += [
                f"{version} is listed complete but {p}" for p in registry.verify(model, version)
            ]
    log = EventLog(registry.store, model)
    events = [e.to_json() for e in log.all()]
    found += [f"unreadable event: {p}" for p in log.problems]
    for name, state in list_pointers(registry, model).items():
        if isinstance(state, InvalidPointer):
            found.append(f"pointer {name} is malformed: {state}")
            continue
        chain = [e for e in events if e.get("pointer") == name]
        previous = None
        for e in chain:
            if e.get("from") != previous:
                found.append(
                    f"{name} event {e['seq']} is {e.get('from')}->{e.get('to')}, "
                    f"but the one before ended at {previous}"
                )
            previous = e.get("to")
        if previous != state.version:
            found.append(f"{name} names {state.version}, its last event ends at {previous}")
    if leases:
        held = [o.key for o in registry.store.objects(f"{model}/{LOCKS_DIR}/")]
        found += [f"lease left behind: {k}" for k in held]
    return found


def assert_sound(registry: Registry, model: str, *, leases: bool = True) -> None:
    try:
        found = problems(registry, model, leases=leases)
    except ModelswapError as e:
        found = [f"the registry cannot be read: {e}"]
    assert found == [], "\n".join(found)
