"""Notice when the link changes: inotify on the link's parent directory (a watch on the link
itself goes deaf after the first swap, since the swap replaces the link), plus a readlink
timer as a fallback. Every event is only a hint to re-resolve."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any


class LinkWatcher:
    def __init__(self, link: Path, hint: threading.Event) -> None:
        self.link = link
        self.hint = hint
        self._observer: Any = None
        self.native = False

    def start(self) -> None:
        try:
            from watchdog.events import FileSystemEvent, FileSystemEventHandler  # noqa: PLC0415
            from watchdog.observers import Observer  # noqa: PLC0415
        except ImportError:
            return  # polling alone still works
        hint, name = self.hint, self.link.name

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                paths = {str(event.src_path), str(getattr(event, "dest_path", "") or "")}
                if any(Path(p).name == name for p in paths if p):
                    hint.set()

        parent = self.link.parent
        if not parent.is_dir():
            return  # the timer re-checks; the watch starts with the next loader start
        try:
            observer = Observer()
            observer.schedule(Handler(), str(parent), recursive=False)
            observer.daemon = True
            observer.start()
        except OSError:
            return  # e.g. inotify watches exhausted: fall back to the timer
        self._observer, self.native = observer, True

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=2)
