"""The agent's files on the shared volume.

    DIR/<model>/versions/<v>/...      complete, verified copies only (they arrive by rename)
    DIR/<model>/current -> versions/<v>
    DIR/<model>/.staging/<v>-<rand>/  downloads in progress; removed at start-up
    DIR/<model>/.trash/               versions being deleted; removed at start-up

A folder under versions/ only ever appears by renaming a fully verified staging folder, so
its presence means complete. Files inside it are never rewritten: a loaded model may be
memory-mapping them. Deleting goes through .trash so a crash never leaves half a version.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path

from modelswap.names import NAME_RE

TMP_LINK_PREFIX = ".current-tmp-"


class Layout:
    def __init__(self, dest: Path, model: str) -> None:
        self.root = dest / model
        self.versions = self.root / "versions"
        self.link = self.root / "current"
        self.staging = self.root / ".staging"
        self.trash = self.root / ".trash"
        # The loader's shared mode writes prepared copies here; its workers may run under
        # another uid than the agent, so the folder is world-writable and sticky, like /tmp.
        self.prepared = self.root / ".prepared"

    def prepare(self) -> list[str]:
        """Create the folders and clear what a crash left behind; returns what was removed."""
        for d in (self.root, self.versions, self.staging, self.trash):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o755)
        self.prepared.mkdir(exist_ok=True)
        self.prepared.chmod(0o1777)
        removed = []
        for leftover in [*self.staging.iterdir(), *self.trash.iterdir()]:
            _remove(leftover)
            removed.append(str(leftover.relative_to(self.root)))
        for entry in self.root.iterdir():
            if entry.name.startswith(TMP_LINK_PREFIX):
                entry.unlink(missing_ok=True)
                removed.append(entry.name)
        return removed

    def new_staging(self, version: str) -> Path:
        path = self.staging / f"{version}-{uuid.uuid4().hex[:8]}"
        path.mkdir(mode=0o755)
        return path

    def linked_version(self) -> str | None:
        """The version `current` points at, if it is a valid link into versions/."""
        try:
            target = os.readlink(self.link)
        except OSError:
            return None
        head, _, name = target.rpartition("/")
        if head != "versions" or not NAME_RE.fullmatch(name) or not (self.versions / name).is_dir():
            return None
        return name

    def local_versions(self) -> list[str]:
        try:
            return sorted(
                e.name
                for e in os.scandir(self.versions)
                if e.is_dir() and NAME_RE.fullmatch(e.name)
            )
        except FileNotFoundError:
            return []

    def has(self, version: str) -> bool:
        return (self.versions / version).is_dir()

    def install(self, staging: Path, version: str) -> None:
        """Move a verified staging folder into versions/ (atomic rename on one volume)."""
        os.rename(staging, self.versions / version)

    def swap(self, version: str) -> None:
        """Point `current` at versions/<version>: a relative temp link renamed over the live
        one, so readers see the old or the new target and never no link at all."""
        tmp = self.root / f"{TMP_LINK_PREFIX}{uuid.uuid4().hex[:8]}"
        os.symlink(f"versions/{version}", tmp)
        try:
            os.replace(tmp, self.link)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(self.root)

    def remove_version(self, version: str) -> None:
        dst = self.trash / f"{version}-{uuid.uuid4().hex[:8]}"
        os.rename(self.versions / version, dst)
        _remove(dst)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
