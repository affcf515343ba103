"""gc: delete old versions that nothing can roll back to, and leftovers of dead publishes."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from modelswap import keys, locks
from modelswap.errors import Busy, InvalidMetadata, InvalidPointer, UsageError, VersionNotFound
from modelswap.events import EventLog
from modelswap.metadata import Metadata
from modelswap.pointers import acquire_moves, list_pointers
from modelswap.registry import Registry


@dataclass(frozen=True)
class GcReport:
    """What gc deleted (or with dry_run would delete) and why it kept the rest."""

    deleted: tuple[str, ...]
    partial: tuple[str, ...]  # leftovers of interrupted publishes
    kept: dict[str, str]  # version -> why

    def to_json(self) -> dict[str, Any]:
        return {"deleted": list(self.deleted), "partial": list(self.partial), "kept": self.kept}


@dataclass
class _Plan:
    deleted: list[str] = field(default_factory=list)
    partial: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)


def collect_garbage(
    registry: Registry, model: str, *, keep: int, dry_run: bool, actor: str
) -> GcReport:
    """Keep every version a pointer names, the `keep` newest, and those the last `keep` events
    name; delete the rest. Holds the model's move lease meanwhile, so no move of any pointer
    can land on a version while it is being deleted; a deleted name is tombstoned."""
    if keep < 1:
        raise UsageError("--keep must be at least 1", hint="e.g. --keep 5")
    registry.require_model(model)
    with contextlib.ExitStack() as stack:
        lease = None
        if not dry_run:
            # The model's move lease: no move of any pointer, existing or new, can land on a
            # version while gc decides and deletes.
            lease = stack.enter_context(acquire_moves(registry, model, actor=actor).keep_alive())
        pointers = list_pointers(registry, model)
        report = _Plan()
        for name, state in pointers.items():
            if isinstance(state, InvalidPointer):
                raise InvalidPointer(
                    f"gc refuses to run while a pointer is malformed: {state}",
                    hint=f"fix {model}/{name} first, so gc knows what is live",
                )
            report.kept.setdefault(state.version, f"named by {name}")
        for event in EventLog(registry.store, model).all()[-keep:]:
            for v in (event.from_version, event.to):
                if v is not None:
                    report.kept.setdefault(v, f"in event {event.seq}")
        metas = registry.all_metadata(model)
        complete = {v: m for v, m in metas.items() if isinstance(m, Metadata)}
        for v in sorted(complete, key=lambda v: _created(complete[v]), reverse=True)[:keep]:
            report.kept.setdefault(v, f"among the {keep} newest")
        publishing = {
            keys.lock_name(o.key).removeprefix(keys.PUBLISH_LOCK_PREFIX)
            for o in registry.store.objects(keys.publish_locks_prefix(model))
        }
        for v, m in metas.items():
            if isinstance(m, InvalidMetadata):
                report.kept.setdefault(v, "metadata.json is malformed; fix or delete it by hand")
            elif m is None and v not in publishing and v not in report.kept:
                report.partial.append(v)
            elif m is not None and v not in report.kept:
                report.deleted.append(v)
        if lease is not None:
            for v in report.deleted:
                lease.check()
                registry.delete_version(model, v, actor=actor)
            for v in list(report.partial):
                lease.check()
                if not _delete_partial(registry, model, v, actor):
                    report.partial.remove(v)
        return GcReport(tuple(report.deleted), tuple(report.partial), dict(report.kept))


def _delete_partial(registry: Registry, model: str, version: str, actor: str) -> bool:
    """Delete a dead publish's leftovers under that version's publish lease, so a publish
    that completes meanwhile is never touched; False when it is running or has completed."""
    try:
        lease = locks.acquire(
            registry.store,
            keys.publish_lock(model, version),
            f"version {model}/{version}",
            actor=actor,
            ttl_s=registry.lease_ttl_s,
        )
    except Busy:
        return False
    with lease:
        try:
            registry.metadata(model, version)
        except VersionNotFound:
            registry.delete_version(model, version, actor=actor)
            return True
        except InvalidMetadata:
            return False
        return False


def _created(meta: Metadata) -> str:
    return meta.created
