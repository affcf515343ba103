"""The git commit a version was published from, when publish runs inside a work tree."""

from __future__ import annotations

import subprocess
from pathlib import Path


def _git(cwd: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def head_sha(cwd: Path) -> tuple[str | None, bool]:
    """(sha, dirty) of the work tree at cwd, or (None, False) outside one."""
    sha = _git(cwd, "rev-parse", "--verify", "HEAD")
    if not sha:
        return None, False
    status = _git(cwd, "status", "--porcelain", "--untracked-files=no")
    return sha, bool(status)
