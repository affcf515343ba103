"""Pointers (CURRENT, CANARY, ...): plain-text objects naming a version, moved with CAS.

A move takes the model's move lease (one for all its pointers, also taken by gc), checks the
pointer still holds what the operator saw, records any hand edit it finds as an out-of-band
event, writes its own event and then swaps the pointer with If-Match (see move_pointer).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from modelswap import keys, locks
from modelswap.errors import (
    Busy,
    InvalidPointer,
    ModelswapError,
    ObjectExists,
    ObjectNotFound,
    OutcomeUnknown,
    PointerMoved,
    PointerNotFound,
    PreconditionFailed,
    StoreError,
    VersionNotFound,
)
from modelswap.events import EventLog
from modelswap.locks import Lease
from modelswap.metadata import rfc3339, utc_now
from modelswap.names import POINTER_MAX_BYTES, POINTER_RE, check_pointer_name, parse_pointer
from modelswap.records import Event, GateRecord
from modelswap.registry import MOVE_WAIT_S, Registry

DEFAULT_POINTER = "CURRENT"
ROLLBACK_TYPES = ("rollback", "auto-rollback")


@dataclass(frozen=True)
class PointerState:
    version: str
    etag: str
    modified: str


def pointer_key(model: str, pointer: str) -> str:
    return keys.pointer(model, pointer)


def read_pointer(registry: Registry, model: str, pointer: str) -> PointerState | None:
    """The pointer's version, or None when it does not exist; InvalidPointer if malformed."""
    check_pointer_name(pointer)
    key = pointer_key(model, pointer)
    try:
        blob = registry.store.read(key, max_bytes=POINTER_MAX_BYTES)
    except ObjectNotFound:
        return None
    where = f"{registry.store.url}/{key}"
    if blob.truncated:
        raise InvalidPointer(
            f"pointer {where} is {blob.size} bytes; a pointer holds one version name"
        )
    return PointerState(parse_pointer(blob.data, where), blob.etag, rfc3339(blob.modified))


def list_pointers(registry: Registry, model: str) -> dict[str, PointerState | InvalidPointer]:
    """Every pointer of the model; a malformed one maps to its error instead of hiding it."""
    out: dict[str, PointerState | InvalidPointer] = {}
    prefix = keys.model_prefix(model)
    for info in registry.store.files(prefix):
        name = keys.name_under(prefix, info.key)
        if "/" in name or not POINTER_RE.fullmatch(name) or name == keys.ROLLOUT:
            continue
        try:
            state = read_pointer(registry, model, name)
        except InvalidPointer as e:
            out[name] = e
            continue
        if state is not None:
            out[name] = state
    return out


def require_pointer(registry: Registry, model: str, pointer: str) -> PointerState:
    state = read_pointer(registry, model, pointer)
    if state is None:
        registry.require_model(model)
        raise PointerNotFound(f"{model} has no {pointer} pointer yet")
    return state


def out_of_band_event(last: Event | None, state: PointerState | None, pointer: str) -> Event | None:
    """The hand edit that explains a pointer whose value is not the log's last `to`."""
    logged = last.to if last else None
    current = state.version if state else None
    if logged == current:
        return None
    return Event(
        pointer=pointer,
        from_version=logged,
        to=current,
        type="out-of-band",
        time=state.modified if state else utc_now(),
        reason="pointer changed outside modelswap",
    )


@dataclass(frozen=True)
class Move:
    model: str
    pointer: str
    to: str
    type: str  # promote | rollback
    actor: str
    reason: str | None = None
    gate: GateRecord | None = None
    expect: str | None = None  # refuse unless the pointer names this (None: what we read)
    verify: bool = False  # re-hash every stored file of the target first (sizes always)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # more event fields


def move_pointer(registry: Registry, move: Move) -> Event | None:
    """Move the pointer; returns the event, or None when it already names move.to.

    Under the model's move lease: the event is written first, then the pointer is swapped by
    compare-and-swap. A swap that fails removes the event again, so a move is never made
    without its event and an event never stands for a move that did not happen. If this
    process dies in between, the lease (which carries the move as its intent) is taken over
    by the next mover, who settles it before its own move (_settle_dead_move)."""
    check_pointer_name(move.pointer)
    registry.check_stored(move.model, move.to, full=move.verify)
    seen = read_pointer(registry, move.model, move.pointer)
    if move.expect is not None and (seen.version if seen else None) != move.expect:
        raise PointerMoved(
            f"{move.pointer} names {seen.version if seen else 'nothing'}, not {move.expect}"
        )
    if seen is not None and seen.version == move.to:
        return None
    log = EventLog(registry.store, move.model)
    intent = Event(
        pointer=move.pointer,
        from_version=seen.version if seen else None,
        to=move.to,
        type=move.type,
        reason=move.reason,
        gate=move.gate,
    ).to_json()
    for unset in ("seq", "time", "actor"):  # the lease body says who and when
        intent.pop(unset)
    lease = acquire_moves(registry, move.model, actor=move.actor, intent=intent)
    with lease:
        now = read_pointer(registry, move.model, move.pointer)
        if (now.etag if now else None) != (seen.etag if seen else None):
            raise PointerMoved(
                f"{move.model}/{move.pointer} moved from {seen.version if seen else 'nothing'} "
                f"to {now.version if now else 'nothing'} while this command ran; nothing changed"
            )
        registry.metadata(move.model, move.to)  # again, under the lease that gc also takes
        oob = out_of_band_event(log.last(move.pointer), now, move.pointer)
        try:
            if oob is not None:
                log.append(oob)
            event = _append_move(log, move, now, lease)
        except OutcomeUnknown:
            # The event may have landed for a move that will not happen: keep the lease and
            # its intent, so the next mover finds the event by move_id and removes it.
            lease.abandon()
            raise
        _swap(registry, log, lease=lease, move=move, now=now, event=event)
        return event


def _append_move(log: EventLog, move: Move, now: PointerState | None, lease: Lease) -> Event:
    return log.append(
        Event(
            pointer=move.pointer,
            from_version=now.version if now else None,
            to=move.to,
            type=move.type,
            actor=move.actor,
            time=utc_now(),
            reason=move.reason,
            gate=move.gate,
            move_id=lease.owner,
            extra=dict(move.extra),
        )
    )


def acquire_moves(
    registry: Registry, model: str, *, actor: str, intent: dict[str, Any] | None = None
) -> Lease:
    """The lease every pointer move of the model and gc hold: moves of different pointers
    (an existing CURRENT, a new CANARY) and gc's deletes are serialized by one object, so gc
    can never delete a version a move is landing on. Whoever takes over a dead holder's lease
    settles its move first, whatever it came to do."""
    log = EventLog(registry.store, model)
    return locks.acquire(
        registry.store,
        keys.moves_lock(model),
        f"the pointers of {model}",
        actor=actor,
        intent=intent,
        on_stale=lambda held, _lease: _settle_dead_move(registry, log, model, held),
        wait_s=MOVE_WAIT_S,
        ttl_s=registry.lease_ttl_s,
    )


def _swap(
    registry: Registry,
    log: EventLog,
    *,
    lease: Lease,
    move: Move,
    now: PointerState | None,
    event: Event,
) -> None:
    data = f"{move.to}\n".encode()
    key = pointer_key(move.model, move.pointer)
    try:
        lease.check()
        if now is None:
            registry.store.put_new(key, data)
        else:
            registry.store.put_if_match(key, data, now.etag)
    except OutcomeUnknown:
        # Whether the pointer moved is unknown: keep the lease (and its intent) so the next
        # mover settles it from what the store then holds.
        lease.abandon()
        raise
    except (PreconditionFailed, ObjectExists, StoreError, Busy) as e:
        try:
            log.remove(event)
        except StoreError:
            lease.abandon()  # the next mover removes the event the pointer never followed
        if isinstance(e, PreconditionFailed | ObjectExists):
            raise PointerMoved(
                f"{move.model}/{move.pointer} changed while this command ran; nothing changed"
            ) from e
        raise


def _settle_dead_move(registry: Registry, log: EventLog, model: str, held: dict[str, Any]) -> None:
    """A lease whose holder died mid-move: make the log match the pointer again. Runs only in
    the one process that won the lease's compare-and-swap take-over."""
    raw = held.get("intent")
    if not isinstance(raw, dict) or not isinstance(raw.get("pointer"), str):
        return
    if not isinstance(raw.get("to"), str) or not isinstance(raw.get("from"), str | None):
        return  # not an intent a mover wrote: nothing to settle from it
    intent = Event.from_json(raw)
    state = read_pointer(registry, model, intent.pointer)
    current = state.version if state else None
    owner = held.get("owner")
    written = log.find_move(owner) if isinstance(owner, str) else None
    if written is not None:
        if current != intent.to and current == intent.from_version:
            log.remove(written)  # the event was written, the pointer never moved
        return
    last = log.last(intent.pointer)
    logged_to = last.to if last else None
    if current == intent.to and logged_to == intent.from_version:
        actor = held.get("actor")
        log.append(  # the pointer moved and the process died before logging it
            dataclasses.replace(
                intent,
                extra={},  # only the move's own fields, never whatever else the lease held
                actor=actor if isinstance(actor, str) else None,
                time=state.modified if state else utc_now(),
                reason=intent.reason or "recorded after the moving command died",
                recovered=True,
                move_id=owner if isinstance(owner, str) else None,
            )
        )


def rollback_target(registry: Registry, model: str, pointer: str) -> str:
    """The version live before the current one: the `from` of the move that set it."""
    return rollback_plan(registry, model, pointer)[0]


def rollback_plan(registry: Registry, model: str, pointer: str) -> tuple[str, str]:
    """(target, the version the pointer names now): the move is made only from that one."""
    state = require_pointer(registry, model, pointer)
    log = EventLog(registry.store, model)
    moves = [e for e in log.all() if e.pointer == pointer]
    oob = out_of_band_event(moves[-1] if moves else None, state, pointer)
    if oob is not None:
        moves.append(oob)
    # The last known-good version: walking back through the moves, the first `from` that is
    # neither live now nor a version some rollback already left. So a second rollback after
    # a bad v3 (v2 -> v3, v3 -> v2) goes on to v1 instead of putting v3 back.
    rolled_back: set[str | None] = set()
    for e in moves:  # rolled back from, and not deliberately promoted again since
        if e.type in ROLLBACK_TYPES:
            rolled_back.add(e.from_version)
        else:
            rolled_back.discard(e.to)
    for e in reversed(moves):
        candidate = e.from_version
        if candidate is not None and candidate != state.version and candidate not in rolled_back:
            return candidate, state.version
    raise VersionNotFound(
        f"{model}/{pointer} has no earlier version to roll back to",
        hint="name one with --to VERSION (versions already rolled back from are skipped)",
    )


def history(
    registry: Registry, model: str, problems: list[ModelswapError] | None = None
) -> list[Event]:
    """The event log, oldest first, plus a seq-less out-of-band entry for any unlogged edit.
    Unreadable events and malformed pointers are skipped and added to `problems`."""
    registry.require_model(model)
    log = EventLog(registry.store, model, registry.event_cache)
    events = log.all()
    if problems is not None:
        problems.extend(log.problems)
    last_by_pointer: dict[str, Event] = {}
    for e in events:
        last_by_pointer[e.pointer] = e
    for name, state in list_pointers(registry, model).items():
        if isinstance(state, InvalidPointer):
            if problems is not None:
                problems.append(state)
            continue
        oob = out_of_band_event(last_by_pointer.get(name), state, name)
        if oob is not None:
            events.append(oob)
    return events


__all__ = [
    "DEFAULT_POINTER",
    "POINTER_MAX_BYTES",
    "Move",
    "PointerState",
    "acquire_moves",
    "history",
    "list_pointers",
    "move_pointer",
    "read_pointer",
    "require_pointer",
    "rollback_plan",
    "rollback_target",
]
