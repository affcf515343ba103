"""The append-only log of pointer moves: <model>/events/<seq>.json, one object a move.

Every event is a create-only write at one past the highest sequence number in the log, made
while holding the model's move lease (pointers.py), so the log's order is the order in which
pointers really moved and, for each pointer, every event's `from` is the previous event's `to`.
Sequence numbers are read as numbers of ten digits or more, so a hand-made key such as
9999999999.json cannot hide the events after it or reorder them; a key of another shape is
reported and ignored. An object under events/ that is not an event
(garbage, a partial hand edit) is reported with its key and skipped, never a wall.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import re
from dataclasses import dataclass
from typing import Any

from modelswap import keys
from modelswap.errors import (
    Busy,
    InvalidMetadata,
    ObjectExists,
    ObjectNotFound,
    PreconditionFailed,
)
from modelswap.names import NAME_RE, POINTER_RE
from modelswap.records import Event
from modelswap.store import Store

EVENT_MAX_BYTES = 1 << 20
_KEY_RE = re.compile(r"(\d{10,})\.json")
# Planted keys at the next numbers could keep a writer busy; past this many it gives up.
APPEND_ATTEMPTS = 20


@dataclass(frozen=True)
class EventRef:
    seq: int
    key: str
    etag: str = ""


def _version_or_none(value: Any) -> bool:
    return value is None or (isinstance(value, str) and NAME_RE.fullmatch(value) is not None)


class EventLog:
    def __init__(
        self, store: Store, model: str, cache: dict[str, tuple[str, Event]] | None = None
    ) -> None:
        self.store = store
        self.model = model
        # key -> (ETag, Event) of events read before (Registry.event_cache); an event is
        # create-only, so a listing with the same key and ETag is the same event.
        self.cache = cache
        self.prefix = keys.events_prefix(model)
        self.problems: list[InvalidMetadata] = []  # unreadable events met so far, each once

    def refs(self) -> list[EventRef]:
        out = []
        for info in self.store.objects(self.prefix):
            m = _KEY_RE.fullmatch(info.key[len(self.prefix) :])
            if m:
                out.append(EventRef(int(m.group(1)), info.key, info.etag))
            else:  # not a key modelswap writes: left alone, but said, never silently
                self._problem(
                    InvalidMetadata(
                        f"{self.store.url}/{info.key} is not named like an event "
                        "(<10 or more digits>.json); ignored",
                        hint=f"move or delete {self.store.url}/{info.key} by hand",
                    )
                )
        return sorted(out, key=lambda r: r.seq)

    def _problem(self, error: InvalidMetadata) -> None:
        if str(error) not in {str(p) for p in self.problems}:
            self.problems.append(error)

    def read(self, ref: EventRef) -> Event:
        """One event; InvalidMetadata (naming the object) when it is not one."""
        where = f"{self.store.url}/{ref.key}"
        hint = f"fix or delete {where} by hand; until then it is skipped"
        blob = self.store.read(ref.key, max_bytes=EVENT_MAX_BYTES)
        if blob.truncated:
            raise InvalidMetadata(f"event {where} is {blob.size} bytes, not an event", hint=hint)
        try:
            event = json.loads(blob.data)
        except (UnicodeDecodeError, ValueError) as e:
            raise InvalidMetadata(f"event {where} is not valid JSON", hint=hint) from e
        if not isinstance(event, dict):
            raise InvalidMetadata(f"event {where} is not a JSON object", hint=hint)
        pointer = event.get("pointer")
        if not isinstance(pointer, str) or not POINTER_RE.fullmatch(pointer):
            raise InvalidMetadata(f"event {where} names no valid pointer", hint=hint)
        if not _version_or_none(event.get("to")) or not _version_or_none(event.get("from")):
            raise InvalidMetadata(f"event {where} has an invalid 'from' or 'to'", hint=hint)
        return Event.from_json({**event, "seq": ref.seq})  # its place in the log, not its text

    def _read_or_skip(self, ref: EventRef) -> Event | None:
        cached = self.cache.get(ref.key) if self.cache is not None and ref.etag else None
        if cached is not None and cached[0] == ref.etag:
            return cached[1]
        try:
            event = self.read(ref)
        except InvalidMetadata as e:
            self._problem(e)
            return None
        except ObjectNotFound:
            return None  # removed between the listing and the read (a failed move's event)
        if self.cache is not None and ref.etag:
            self.cache[ref.key] = (ref.etag, event)
        return event

    def all(self) -> list[Event]:
        """Every readable event, oldest first; unreadable ones land in self.problems."""
        refs = self.refs()
        if not refs:
            return []
        if self.store.parallel_reads <= 1:
            events = [self._read_or_skip(r) for r in refs]
        else:
            with concurrent.futures.ThreadPoolExecutor(
                min(self.store.parallel_reads, len(refs))
            ) as pool:
                events = list(pool.map(self._read_or_skip, refs))
        return [e for e in events if e is not None]

    def last(self, pointer: str) -> Event | None:
        """The pointer's latest readable event, read newest first (usually one or two GETs)."""
        for ref in reversed(self.refs()):
            event = self._read_or_skip(ref)
            if event is not None and event.pointer == pointer:
                return event
        return None

    def find_move(self, move_id: str, within: int = 50) -> Event | None:
        """The newest event among the last `within` that the move `move_id` wrote."""
        for ref in list(reversed(self.refs()))[:within]:
            event = self._read_or_skip(ref)
            if event is not None and event.move_id == move_id:
                return event
        return None

    def append(self, event: Event) -> Event:
        """Write event one past the highest sequence number; returns it with `seq` set."""
        refs = self.refs()
        seq = refs[-1].seq + 1 if refs else 1
        body = event.to_json()
        body.pop("seq")  # the key says it; a stored copy could only disagree
        data = (json.dumps(body, sort_keys=True) + "\n").encode()
        for _ in range(APPEND_ATTEMPTS):
            try:
                self.store.put_new(self.key(seq), data)
                return event.with_seq(seq)
            except ObjectExists:
                seq += 1  # a key planted by hand since our listing
        raise Busy(
            f"could not write an event under {self.store.url}/{self.prefix}: the next "
            f"{APPEND_ATTEMPTS} numbers were taken while trying",
            hint="something else is writing under events/; nothing was moved",
        )

    def remove(self, event: Event) -> None:
        """Delete an event written for a move that did not happen: only if the object at its
        key is still that move's (same move_id), so a number reused since is never touched."""
        if event.seq is None:
            return
        key = self.key(event.seq)
        try:
            blob = self.store.read(key, max_bytes=EVENT_MAX_BYTES)
            stored = json.loads(blob.data)
        except ObjectNotFound:
            return
        except ValueError:
            return  # not an event we wrote
        if isinstance(stored, dict) and stored.get("move_id") == event.move_id:
            with contextlib.suppress(PreconditionFailed):  # replaced meanwhile: not ours
                self.store.delete(key, if_match=blob.etag)

    def key(self, seq: int) -> str:
        return keys.event(self.model, seq)
