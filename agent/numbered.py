"""`--tfserving-dir DIR`: the linked version as DIR/<model>/<n>, n growing with every swap.

TensorFlow Serving loads only a *higher* version number than the one it serves, so pointing
`1` at another folder never reloads anything and a rollback to an older folder is ignored.
Here every swap, rollbacks included, gets the next number: DIR/<model>/<n> -> the version's
folder on the volume (a relative link, so it resolves wherever the volume is mounted). Triton
reads the same layout (its `<model>/<version>/` folders), and then a reload is a new version
folder rather than a modification time Triton may or may not see as changed.

Numbers never go back, across restarts too: the highest one ever given is kept in
DIR/<model>/.modelswap-next. A superseded number stays for `grace_s` (the server needs the old
version until the new one is loaded) and is then removed; a link whose version was pruned from
the volume is removed at once (never left dangling).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

STATE_FILE = ".modelswap-next"
CONFIG_FILE = "config.pbtxt"  # Triton's model configuration, linked beside the numbers


class NumberedLinks:
    def __init__(self, root: Path, model: str, grace_s: float) -> None:
        self.dir = root / model
        self.grace_s = grace_s

    def numbers(self) -> list[int]:
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        return sorted(
            int(n) for n in names if n.isascii() and n.isdigit() and not n.startswith("0")
        )

    def target(self, n: int) -> Path | None:
        link = self.dir / str(n)
        if not link.is_symlink():
            return None
        return (self.dir / os.readlink(link)).resolve()

    def follow(self, version_dir: Path, keep: int | None = None) -> int:
        """Make the newest number name version_dir (a new number unless it already does),
        drop what has expired but `keep` (the last number a server confirmed); returns the
        newest number."""
        self.dir.mkdir(parents=True, exist_ok=True)
        numbers = self.numbers()
        newest = numbers[-1] if numbers else None
        wanted = version_dir.resolve()
        if newest is None or self.target(newest) != wanted:
            newest = max(self._last_given(), newest or 0) + 1
            self._save(newest, numbers)
            self._link(str(newest), os.path.relpath(wanted, self.dir))
        self._link_config(newest, wanted)
        self._expire(newest, keep)
        return newest

    def _link(self, name: str, target: str) -> None:
        tmp = self.dir / f".{name}.tmp-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target)
        os.replace(tmp, self.dir / name)  # atomic: a reader sees the old link or the new one

    def _link_config(self, newest: int, wanted: Path) -> None:
        link = self.dir / CONFIG_FILE
        if (wanted / CONFIG_FILE).is_file():
            self._link(CONFIG_FILE, f"{newest}/{CONFIG_FILE}")
        elif link.is_symlink():
            link.unlink()

    def _state(self) -> dict[str, object]:
        try:
            body = json.loads((self.dir / STATE_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return body if isinstance(body, dict) else {}

    def _last_given(self) -> int:
        value = self._state().get("last")
        return value if isinstance(value, int) and value > 0 else 0

    def _save(self, last: int, superseded: list[int]) -> None:
        retired = self._retired()
        now = time.time()
        for n in superseded:
            retired.setdefault(str(n), now)
        self._write(last, retired)

    def _write(self, last: int, retired: dict[str, float]) -> None:
        tmp = self.dir / f"{STATE_FILE}.tmp-{os.getpid()}"
        tmp.write_text(json.dumps({"last": last, "retired": retired}))
        os.replace(tmp, self.dir / STATE_FILE)

    def _retired(self) -> dict[str, float]:
        raw = self._state().get("retired")
        if not isinstance(raw, dict):
            return {}
        return {k: float(v) for k, v in raw.items() if isinstance(v, int | float)}

    def _expire(self, newest: int, protect: int | None) -> None:
        retired, now = self._retired(), time.time()
        keep: dict[str, float] = {}
        for n in self.numbers():
            if n == newest or not (self.dir / str(n)).is_symlink():
                continue  # a folder someone put here is theirs, never removed
            target = self.target(n)
            since = retired.get(str(n), now)  # not recorded (written by hand?): from now
            dangling = target is None or not target.is_dir()
            if dangling or (n != protect and now - since >= self.grace_s):
                with contextlib.suppress(FileNotFoundError):
                    (self.dir / str(n)).unlink()
            else:
                keep[str(n)] = since
        if keep != retired:
            self._write(max(self._last_given(), newest), keep)
