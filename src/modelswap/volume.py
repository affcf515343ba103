"""The shared volume's layout, owned here and imported by the agent, the loader and tests.

    DIR/<model>/versions/<v>/...      complete, verified copies only (they arrive by rename)
    DIR/<model>/versions/<v>/metadata.json
    DIR/<model>/current -> versions/<v>
    DIR/<model>/.staging/<v>-<rand>/  downloads in progress; removed at start-up
    DIR/<model>/.trash/               versions being deleted; removed at start-up
    DIR/<model>/.prepared/            the loader's shared-mode artifacts (created by the app)
    DIR/<model>/.signers/<v>.json     which trusted key signed <v>, written by an agent that
                                      checked it (the loader's /health shows it)

A folder under versions/ only ever appears by renaming a fully verified staging folder, so
its presence means complete. Files inside it are never rewritten: a loaded model may be
memory-mapping them. Deleting goes through .trash so a crash never leaves half a version.

Standard library only: the loader imports it inside serving processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import uuid
from pathlib import Path

from modelswap.metadata import METADATA_FILE
from modelswap.names import NAME_RE

VERSIONS_DIR = "versions"
LINK_NAME = "current"
STAGING_DIR = ".staging"
TRASH_DIR = ".trash"
PREPARED_DIR = ".prepared"
SIGNERS_DIR = ".signers"
TMP_LINK_PREFIX = ".current-tmp-"


def link_target(version: str) -> str:
    """What `current` holds: a relative path, so the volume can be mounted anywhere."""
    return f"{VERSIONS_DIR}/{version}"


def version_of_target(target: str) -> str | None:
    """The version a `current` link's target names, or None if it is not versions/<v>."""
    head, _, name = target.rpartition("/")
    return name if head == VERSIONS_DIR and NAME_RE.fullmatch(name) else None


def swap_link(root: Path, version: str) -> None:
    """Point root/current at versions/<version>: a relative temp link renamed over the live
    one, so readers see the old or the new target and never no link at all."""
    tmp = root / f"{TMP_LINK_PREFIX}{uuid.uuid4().hex[:8]}"
    os.symlink(link_target(version), tmp)
    try:
        os.replace(tmp, root / LINK_NAME)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(root)


class Layout:
    def __init__(self, dest: Path, model: str) -> None:
        self.root = dest / model
        self.versions = self.root / VERSIONS_DIR
        self.link = self.root / LINK_NAME
        self.staging = self.root / STAGING_DIR
        self.trash = self.root / TRASH_DIR
        self.signers = self.root / SIGNERS_DIR
        # No .prepared here: the loader's shared mode creates its own folder, owned by the
        # app's uid and writable by nobody else (a world-writable one let any uid plant
        # weights that root's loader then served).

    def prepare(self) -> list[str]:
        """Create the folders and clear what a crash left behind; returns what was removed.
        Raises OSError when --dest cannot hold them (the caller says so in one line)."""
        for d in (self.root, self.versions, self.staging, self.trash, self.signers):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o755)
        removed = []
        for leftover in [*self.staging.iterdir(), *self.trash.iterdir()]:
            _remove(leftover)
            removed.append(str(leftover.relative_to(self.root)))
        for entry in self.root.iterdir():
            if entry.name.startswith(TMP_LINK_PREFIX):
                entry.unlink(missing_ok=True)
                removed.append(entry.name)
        if self.repair_link():
            removed.append("current (not a link)")
        for name in os.listdir(self.versions):
            if not self.has(name):  # a link or a file: removed, never followed
                _remove(self.versions / name)
                removed.append(f"{VERSIONS_DIR}/{name} (not a folder)")
        for record in self.signers.iterdir():
            if not self.has(record.name.removesuffix(".json")):
                _remove(record)
        return removed

    def record_signer(self, version: str, fingerprint: str, key: str) -> None:
        """Say that `version` was checked as signed by `fingerprint` (written whole, by rename,
        before the link moves to it)."""
        body = {"version": version, "signed_by": fingerprint, "trust_key": key}
        tmp = self.signers / f".{version}-{uuid.uuid4().hex[:8]}"
        tmp.write_text(json.dumps(body, sort_keys=True) + "\n")
        os.replace(tmp, self.signers / f"{version}.json")

    def forget_signer(self, version: str | None = None) -> None:
        """Drop the record of one version (or of all): a version no longer vouched for."""
        records = [self.signers / f"{version}.json"] if version else list(self.signers.glob("*"))
        for record in records:
            record.unlink(missing_ok=True)

    def repair_link(self) -> bool:
        """Move a `current` that is a real folder or file out of the way (into .trash), so
        the next swap can put the link back; True when there was one."""
        try:
            st = os.lstat(self.link)
        except FileNotFoundError:
            return False
        if stat.S_ISLNK(st.st_mode):
            return False
        os.rename(self.link, self.trash / f"current-{uuid.uuid4().hex[:8]}")
        _remove_all(self.trash)
        return True

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
        name = version_of_target(target)
        return name if name is not None and self.has(name) else None

    def local_versions(self) -> list[str]:
        try:
            return sorted(
                e.name
                for e in os.scandir(self.versions)
                if e.is_dir(follow_symlinks=False) and NAME_RE.fullmatch(e.name)
            )
        except FileNotFoundError:
            return []

    def has(self, version: str) -> bool:
        """A real folder under versions/: a symlink planted there is never followed."""
        try:
            return stat.S_ISDIR(os.lstat(self.versions / version).st_mode)
        except OSError:
            return False

    def install(self, staging: Path, version: str) -> None:
        """Move a verified staging folder into versions/ (atomic rename on one volume). A
        link or file planted under that name is removed first, never followed."""
        target = self.versions / version
        if os.path.lexists(target) and not self.has(version):
            target.unlink()
        os.rename(staging, target)

    def swap(self, version: str) -> None:
        """Point `current` at versions/<version>: a relative temp link renamed over the live
        one, so readers see the old or the new target and never no link at all."""
        self.repair_link()
        swap_link(self.root, version)

    def remove_version(self, version: str) -> None:
        self.forget_signer(version)
        dst = self.trash / f"{version}-{uuid.uuid4().hex[:8]}"
        os.rename(self.versions / version, dst)
        _remove(dst)


def signer_of(folder: Path) -> str | None:
    """The key fingerprint an agent recorded for the version in `folder` (versions/<v>),
    or None when no agent checked its signature."""
    record = folder.parent.parent / SIGNERS_DIR / f"{folder.name}.json"
    try:
        body = json.loads(record.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(body, dict) or body.get("version") != folder.name:
        return None
    value = body.get("signed_by")
    return value if isinstance(value, str) else None


def _remove_all(folder: Path) -> None:
    for entry in folder.iterdir():
        _remove(entry)


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


__all__ = [
    "LINK_NAME",
    "METADATA_FILE",
    "PREPARED_DIR",
    "SIGNERS_DIR",
    "STAGING_DIR",
    "TMP_LINK_PREFIX",
    "TRASH_DIR",
    "VERSIONS_DIR",
    "Layout",
    "link_target",
    "signer_of",
    "swap_link",
    "version_of_target",
]
