"""The append-only log of pointer moves: <model>/events/<seq>.json, one object a move.

Every event is a create-only write at the next free sequence number, so sequence numbers are
unique per model and the key order is the order of the log. Writers hold the pointer's lock
(pointers.py), so for each pointer every event's `from` is the previous event's `to`.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
from dataclasses import dataclass
from typing import Any

from modelswap.errors import InvalidMetadata, ObjectExists, ObjectNotFound
from modelswap.store import Store

EVENTS_DIR = "events"
_KEY_RE = re.compile(r"(\d{10})\.json")
FIELDS = ("seq", "time", "actor", "pointer", "from", "to", "reason", "gate", "type")


@dataclass(frozen=True)
class EventRef:
    seq: int
    key: str


class EventLog:
    def __init__(self, store: Store, model: str) -> None:
        self.store = store
        self.model = model
        self.prefix = f"{model}/{EVENTS_DIR}/"

    def refs(self) -> list[EventRef]:
        out = []
        for info in self.store.objects(self.prefix):
            m = _KEY_RE.fullmatch(info.key[len(self.prefix) :])
            if m:  # anything else under events/ is not ours; leave it alone
                out.append(EventRef(int(m.group(1)), info.key))
        return sorted(out, key=lambda r: r.seq)

    def read(self, ref: EventRef) -> dict[str, Any]:
        blob = self.store.read(ref.key, max_bytes=1 << 20)
        try:
            event = json.loads(blob.data)
        except ValueError as e:
            raise InvalidMetadata(f"event {ref.key} is not valid JSON") from e
        if not isinstance(event, dict):
            raise InvalidMetadata(f"event {ref.key} is not a JSON object")
        event["seq"] = ref.seq
        return event

    def all(self) -> list[dict[str, Any]]:
        refs = self.refs()
        if not refs:
            return []
        with concurrent.futures.ThreadPoolExecutor(min(16, len(refs))) as pool:
            return list(pool.map(self.read, refs))

    def last(self, pointer: str) -> dict[str, Any] | None:
        """The pointer's latest event, read newest first (usually one or two GETs)."""
        for ref in reversed(self.refs()):
            event = self.read(ref)
            if event.get("pointer") == pointer:
                return event
        return None

    def append(self, event: dict[str, Any]) -> dict[str, Any]:
        """Write event at the next free sequence number; returns it with `seq` set."""
        refs = self.refs()
        seq = refs[-1].seq + 1 if refs else 1
        body = {k: event.get(k) for k in FIELDS if k != "seq"}
        body.update({k: v for k, v in event.items() if k not in FIELDS})
        for _ in range(1000):
            key = f"{self.prefix}{seq:010d}.json"
            try:
                self.store.put_new(key, (json.dumps(body, sort_keys=True) + "\n").encode())
                return {"seq": seq, **body}
            except ObjectExists:
                seq += 1  # another pointer of this model moved at the same moment
        raise ObjectNotFound(f"could not find a free event number under {self.prefix}")
