"""Shared mode: the workers of one host map one prepared copy of the weights.

The first worker to see a version prepares it, in a short-lived child process (prepare.py):
onnxruntime optimises the model and writes it with its initializers, already prepacked, to an
external file; every worker then loads that
file, and onnxruntime memory-maps the weights, so N workers hold one copy in the page cache
instead of N private ones. The prepacked layout belongs to the CPU and onnxruntime version that
made it, so both are part of the artifact's name: another host, or an upgrade, prepares again.

Artifacts are only ever created (in a temporary folder renamed into place) and deleted, never
rewritten: truncating a file that a live session maps kills that process with SIGBUS.

Why an artifact can be trusted. The artifact's name is computed from public inputs, so a name
proves nothing, and neither does a DONE file. What does: the prepared root is created by the
loader itself with mode 0700, and before an artifact is used the root, the artifact's folder
and every file in it must be owned by our euid and writable by no group or other (lstat, so a
planted link is refused too). Under those modes no other uid can create, rename or rewrite
anything in there (root aside, which is trusted anyway), so whatever is there was written by
this app's own workers, through the create-then-rename protocol below. DONE then binds the
artifact to the version: it records the sha256 of the source model (the version's sha256 from
metadata.json, checked against the source bytes when preparing) and every artifact file's size
and sha256; the worker checks the source sha256, the file list, the sizes and the graph file's
sha256 before mapping (re-hashing the weights on every map would read them all again, and the
ownership rule already excludes every writer but our own code, which never rewrites them; the
sizes catch a copy torn by a crash). An artifact that fails those content checks is ours but
stale: it is set aside and prepared again. One that fails the ownership or mode checks is
never touched: the loader falls back to a private load and /health says why.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import modelswap
from modelswap.errors import ModelswapError
from modelswap.loader.prepare import GRAPH

DONE = "DONE"
FORMAT = 2  # DONE's layout; a DONE of another format is stale (format 1 bound nothing)
_SHA256 = re.compile(r"[0-9a-f]{64}")


class SharedUnavailable(ModelswapError):
    default_hint = (
        "the version is served from a private copy meanwhile; give shared mode a folder that "
        "only this uid can write: remove the folder (the loader recreates it with mode 0700) "
        "or pass ModelLoader(..., prepared_dir=...)"
    )


class _Stale(Exception):
    """An artifact of ours that does not match the version: prepare it again."""


def listed_sha256(model_file: Path, metadata: dict[str, Any]) -> str | None:
    """The version's sha256 of its model file from metadata.json (verified by the agent)."""
    files = metadata.get("files")
    entry = files.get(model_file.name) if isinstance(files, dict) else None
    sha = entry.get("sha256") if isinstance(entry, dict) else None
    return sha if isinstance(sha, str) and _SHA256.fullmatch(sha) else None


def source_sha256(model_file: Path, metadata: dict[str, Any]) -> str:
    """The listed sha256, or, for a folder without one, the sha256 of the file's bytes now."""
    return listed_sha256(model_file, metadata) or _sha256_file(model_file)


def host_key(source_sha: str) -> str:
    """What the prepared layout depends on: CPU, onnxruntime, and the model's bytes."""
    import onnxruntime as ort  # noqa: PLC0415

    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags")):
                cpu += line
            if line.strip() == "":
                break  # the first processor describes them all
    raw = "|".join([platform.machine(), cpu, ort.__version__, source_sha])
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def ensure_root(root: Path) -> None:
    """Create the prepared root with mode 0700, or check that the one there is ours alone."""
    euid = os.geteuid()
    try:
        os.mkdir(root, 0o700)
    except FileExistsError:
        pass
    except OSError as e:
        raise SharedUnavailable(
            f"cannot create the prepared folder {root}: {e.strerror or e}",
            hint=f"make its parent writable by uid {euid}, or pass ModelLoader(..., "
            "prepared_dir=...) a folder this uid can create; a private copy serves meanwhile",
        ) from e
    else:
        os.chmod(root, 0o700)  # whatever the umask: the app's uid writes, nobody else
    check_private(root, is_dir=True)


def check_private(path: Path, *, is_dir: bool) -> None:
    """Raise SharedUnavailable unless `path` (not followed) is ours and only ours to write."""
    st = os.lstat(path)
    kind = "folder" if is_dir else "regular file"
    if not (stat.S_ISDIR(st.st_mode) if is_dir else stat.S_ISREG(st.st_mode)):
        raise SharedUnavailable(f"{path} is not a {kind} (a link, or another type)")
    if st.st_uid != os.geteuid():
        raise SharedUnavailable(
            f"{path} is owned by uid {st.st_uid}, not by this process's uid {os.geteuid()}"
        )
    if st.st_mode & 0o022:
        raise SharedUnavailable(
            f"{path} has mode {stat.S_IMODE(st.st_mode):04o}: group or others can write it"
        )


def root_is_private(root: Path) -> bool:
    try:
        check_private(root, is_dir=True)
    except (OSError, SharedUnavailable):
        return False
    return True


def prepared_model(model_file: Path, version: str, metadata: dict[str, Any], root: Path) -> Path:
    """The prepared model file for this host, preparing it once under a lock if needed.
    Raises SharedUnavailable or OSError when none can be used (the caller falls back)."""
    ensure_root(root)
    listed = listed_sha256(model_file, metadata)
    sha = listed or _sha256_file(model_file)
    name = f"{version}-{host_key(sha)}"
    final = root / name
    with contextlib.suppress(_Stale):
        found = verify(final, sha)
        if found is not None:
            return found
    with _flock(root / f".{name}.lock"):  # another worker may have finished while we waited
        try:
            found = verify(final, sha)
        except _Stale:
            _discard(final)
            found = None
        if found is not None:
            return found
        if listed is not None and _sha256_file(model_file) != listed:
            raise SharedUnavailable(
                f"{model_file} does not match its sha256 in metadata.json; not preparing it",
                hint="the agent re-verifies and repairs the copy; a private copy serves meanwhile",
            )
        _prepare_atomically(model_file, sha, version, root, final)
    found = verify(final, sha)
    if found is None:
        raise SharedUnavailable(f"{final} vanished right after it was prepared")
    return found


def verify(final: Path, source_sha: str) -> Path | None:
    """The artifact's graph file if it may be mapped; None if there is no artifact. Raises
    SharedUnavailable for one that another uid could have written, _Stale for one of ours
    that does not match the version."""
    try:
        check_private(final, is_dir=True)
    except FileNotFoundError:
        return None
    names = set(os.listdir(final))
    if DONE not in names:
        raise _Stale(f"{final} has no {DONE}")
    check_private(final / DONE, is_dir=False)
    try:
        done = json.loads((final / DONE).read_text())
        files = {str(k): dict(v) for k, v in done["files"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise _Stale(f"{final / DONE} is not a format-{FORMAT} record: {e}") from e
    if done.get("format") != FORMAT or done.get("source_sha256") != source_sha:
        raise _Stale(f"{final / DONE} is not bound to source sha256 {source_sha}")
    if names - {DONE} != set(files) or GRAPH not in files:
        raise _Stale(f"{final} holds {sorted(names)}, {DONE} lists {sorted(files)}")
    for fname, entry in files.items():
        check_private(final / fname, is_dir=False)
        if os.lstat(final / fname).st_size != entry.get("size"):
            raise _Stale(f"{final / fname} is not the size {DONE} records")
    if _sha256_file(final / GRAPH) != files[GRAPH].get("sha256"):
        raise _Stale(f"{final / GRAPH} is not the graph {DONE} records")
    return final / GRAPH


def _prepare_atomically(model_file: Path, sha: str, version: str, root: Path, final: Path) -> None:
    tmp = root / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o755)
    try:
        seconds = _prepare(model_file, tmp)
        files = {}
        for f in sorted(tmp.iterdir()):
            f.chmod(0o444)  # readable by every worker; onnx writes external data as 0600
            _fsync(f)
            files[f.name] = {"size": f.stat().st_size, "sha256": _sha256_file(f)}
        record = {
            "format": FORMAT,
            "version": version,
            "source_sha256": sha,
            "files": files,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "seconds": round(seconds, 3),
        }
        fd = os.open(tmp / DONE, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o444)
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(record, indent=1))
            out.flush()
            os.fsync(out.fileno())
        _fsync(tmp)
        os.rename(tmp, final)
        _fsync(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    with open(root / "prepare.log", "a") as log:  # one line per preparation, for audits
        log.write(
            f"{version} {final.name[len(version) + 1 :]} pid={os.getpid()} seconds={seconds:.3f}\n"
        )


def _prepare(model_file: Path, out: Path) -> float:
    """Prepare in a short-lived child (loader/prepare.py says why); its one stderr line, if
    it fails, becomes SharedUnavailable, and the caller loads a private copy meanwhile."""
    started = time.monotonic()
    # The child finds this very package even when the app put it on sys.path at run time
    # (where modelswap/ itself lies: in a source tree loader/ is reached through a symlink)
    package_root = str(Path(modelswap.__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    try:
        done = subprocess.run(  # our own interpreter and module, no shell
            [sys.executable, "-m", "modelswap.loader.prepare", str(model_file), str(out)],
            env={**os.environ, "PYTHONPATH": path},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    except OSError as e:
        raise SharedUnavailable(
            f"cannot start the preparing process {sys.executable}: {e.strerror or e}"
        ) from e
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        why = lines[-1] if lines else f"exit status {done.returncode}"
        raise SharedUnavailable(f"preparing {model_file} failed: {why}")
    if not (out / GRAPH).is_file():
        raise SharedUnavailable(f"preparing {model_file} wrote no {GRAPH}")
    return time.monotonic() - started


def _discard(final: Path) -> None:
    """Set a stale artifact aside, then delete it (a worker mapping it keeps its pages)."""
    aside = final.with_name(f".{final.name}.stale-{os.getpid()}")
    shutil.rmtree(aside, ignore_errors=True)
    os.rename(final, aside)
    shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def remove_stale(root: Path, versions_dir: Path, keep: set[str]) -> list[str]:
    """Delete artifacts of versions that are gone from versions/ (never one in `keep`).
    Only in a root that is ours alone: nothing is deleted in a folder others can write."""
    removed: list[str] = []
    if not root_is_private(root):
        return removed
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    live = {p.name for p in versions_dir.iterdir()} if versions_dir.is_dir() else set()
    for entry in entries:
        version, sep, _ = entry.name.rpartition("-")
        if not sep or entry.name.startswith(".") or not entry.is_dir():
            continue
        if version not in live and version not in keep:
            shutil.rmtree(entry, ignore_errors=True)  # deleting a mapped file is safe
            removed.append(entry.name)
    return removed
