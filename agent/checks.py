"""Knowing that a local copy is still the one that was verified, without reading it again.

A snapshot is every file's (inode, size, mtime, ctime) taken right after the copy's sha256
was checked. It cannot be faked by a same-size rewrite: the kernel sets ctime on every write,
truncate, chmod or rename over the file, and no system call lets a process set ctime back
(utime sets mtime and atime only, and itself moves ctime); replacing the file changes its
inode. So an unchanged snapshot means unchanged bytes, short of a raw write to the block
device or a clock set backwards, and a changed one sends the copy to a full re-hash.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from modelswap.errors import LocalIOError
from modelswap.metadata import Metadata

Snapshot = tuple[tuple[str, int, int, int, int], ...]


def snapshot(folder: Path, meta: Metadata) -> Snapshot | None:
    """The copy's files as they are now; None when one is missing or not a regular file."""
    out = []
    for name in sorted(meta.files):
        try:
            st = os.lstat(folder / name)  # lstat: a file swapped for a link counts as changed
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        out.append((name, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(out)


_HINTS = {
    errno.ENOSPC: "free space (or inodes) on the --dest volume, or lower --keep; the linked "
    "version is untouched",
    errno.EDQUOT: "raise the quota of the --dest volume, or lower --keep",
    errno.EROFS: "--dest must be on a writable volume",
    errno.EACCES: "--dest must be writable by the agent's uid",
    errno.EPERM: "--dest must be writable by the agent's uid",
    errno.ENAMETOOLONG: "the version's file names exceed this filesystem's limits; re-publish "
    "with shorter names",
    errno.ENOTDIR: "a path under --dest that must be a folder is a file; remove it",
    errno.EEXIST: "a path under --dest is in the way; remove it",
}


def local_error(e: OSError, doing: str) -> LocalIOError:
    """One line naming the path and the errno, with what to do about it."""
    code = errno.errorcode.get(e.errno or 0, str(e.errno))
    where = f": {e.filename}" if e.filename else ""
    return LocalIOError(
        f"{doing}{where}: {e.strerror or e} ({code})",
        hint=_HINTS.get(e.errno or 0, "check the --dest volume; the linked version is untouched"),
    )
