"""The host is hostile too: the agent's volume fails, lies and is tampered with, for real
(tmpfs volumes that fill up or go read-only, planted links and folders, rewritten bytes)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelswap.pointers import Move, move_pointer
from modelswap.publish import PublishRequest
from modelswap.publish import publish as publish_request
from modelswap.registry import Registry
from modelswap.store import open_store
from modelswap.testing.agents import AgentProc
from tests.conftest import mounted_tmpfs, wait_until

FAST = ("--interval", "0.3", "--max-backoff", "1")


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    return Registry(open_store(str(tmp_path / "registry")))


def publish(reg: Registry, tmp_path: Path, version: str, data: bytes, name: str = "m.bin") -> None:
    path = tmp_path / "files" / version / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    publish_request(reg, PublishRequest(model="clf", files={name: path}, version=version))


def promote(reg: Registry, version: str) -> None:
    move_pointer(reg, Move("clf", "CURRENT", version, "promote", "t"))


def linked(dest: Path) -> str | None:
    try:
        return os.readlink(dest / "clf" / "current")
    except OSError:
        return None


def served(dest: Path, name: str = "m.bin") -> bytes:
    return (dest / "clf" / "current" / name).read_bytes()


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A real 1 MB tmpfs with 64 inodes; yields (mount point, mount options)."""
    opts = "size=1m,nr_inodes=64"
    with mounted_tmpfs(tmp_path / "vol", opts) as point:
        yield point, opts


@contextlib.contextmanager
def running(tmp_path: Path, dest: Path) -> Iterator[AgentProc]:
    """An agent following the test registry, once it has linked v1; stopped cleanly after."""
    agent = AgentProc(str(tmp_path / "registry"), "clf", dest, *FAST).wait_started()
    try:
        wait_until(lambda: linked(dest) == "versions/v1")
        yield agent
    finally:
        assert agent.stop() == 0


def _remount(point: Path, opts: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{opts}", str(point)], check=True)


def _alive_with_error(agent: AgentProc, fragment: str) -> None:
    wait_until(lambda: fragment in str(agent.status()["last_error"]), timeout=15)
    assert agent.proc.poll() is None
    assert agent.get("/healthz")[0] == 200


def test_no_space_for_metadata_json_is_a_failed_pass_not_a_dead_agent(
    reg: Registry, tmp_path: Path, tmpfs: tuple[Path, str]
) -> None:
    """v2's data fits the volume exactly, its metadata.json does not: ENOSPC naming the file,
    the agent alive, v1 still linked; with room again v2 is linked."""
    point, _ = tmpfs
    publish(reg, tmp_path, "v1", b"1")
    promote(reg, "v1")
    dest = point / "dest"
    with running(tmp_path, dest) as agent:
        free = os.statvfs(point).f_bavail * os.statvfs(point).f_frsize
        publish(reg, tmp_path, "v2", os.urandom(free - 1))  # every free block, none left
        promote(reg, "v2")
        _alive_with_error(agent, "ENOSPC")
        assert "metadata.json" in agent.status()["last_error"]
        assert linked(dest) == "versions/v1"
        _remount(point, "size=4m,nr_inodes=64")
        wait_until(lambda: linked(dest) == "versions/v2", timeout=15)


def test_no_inodes_for_staging_is_a_failed_pass_not_a_dead_agent(
    reg: Registry, tmp_path: Path, tmpfs: tuple[Path, str]
) -> None:
    """Every inode used: mkdir under .staging fails with ENOSPC, the agent stays up."""
    point, _ = tmpfs
    publish(reg, tmp_path, "v1", b"1")
    publish(reg, tmp_path, "v2", b"2")
    promote(reg, "v1")
    dest = point / "dest"
    with running(tmp_path, dest) as agent:
        filler = point / "filler"
        filler.mkdir()
        for i in range(100):
            try:
                (filler / str(i)).touch()
            except OSError:
                break
        promote(reg, "v2")
        _alive_with_error(agent, "ENOSPC")
        assert linked(dest) == "versions/v1"


def test_read_only_dest_fails_at_start_in_one_line_and_mid_run_as_a_pass(
    reg: Registry, tmp_path: Path, tmpfs: tuple[Path, str]
) -> None:
    """A read-only --dest: at start one error + hint line and exit 1; gone read-only while
    running: EROFS reported, link kept, agent alive."""
    point, opts = tmpfs
    publish(reg, tmp_path, "v1", b"1")
    publish(reg, tmp_path, "v2", b"2")
    promote(reg, "v1")
    _remount(point, f"ro,{opts}")
    once = subprocess.run(
        [sys.executable, "-m", "modelswap", "agent", "clf", "--dest", str(point / "d"), "--once"],
        env=dict(os.environ, MODELSWAP_REGISTRY=str(tmp_path / "registry")),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = once.stderr.strip().splitlines()
    assert once.returncode == 1
    assert [line.split(":")[0] for line in lines] == ["error", "hint"], once.stderr
    assert "EROFS" in lines[0]
    _remount(point, f"rw,{opts}")
    dest = point / "dest"
    with running(tmp_path, dest) as agent:
        _remount(point, f"ro,{opts}")
        promote(reg, "v2")
        _alive_with_error(agent, "EROFS")
        assert linked(dest) == "versions/v1"


@pytest.mark.parametrize("where", ["a file", "/sys"])
def test_unusable_dest_is_one_error_line(reg: Registry, tmp_path: Path, where: str) -> None:
    """--dest that is a file, or under /sys: one error + hint line, no traceback."""
    publish(reg, tmp_path, "v1", b"1")
    promote(reg, "v1")
    dest = tmp_path / "a-file"
    dest.write_text("x")
    target = str(dest) if where == "a file" else "/sys/modelswap-test"
    done = subprocess.run(
        [sys.executable, "-m", "modelswap", "agent", "clf", "--dest", target, "--port", "0"],
        env=dict(os.environ, MODELSWAP_REGISTRY=str(tmp_path / "registry")),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    errors = [json.loads(x) if x.startswith("{") else x for x in done.stderr.strip().splitlines()]
    plain = [x for x in errors if isinstance(x, str)]
    assert done.returncode == 1
    assert [x.split(":")[0] for x in plain] == ["error", "hint"], done.stderr
    assert "Traceback" not in done.stderr


def test_current_replaced_by_a_folder_is_repaired_also_after_a_restart(
    reg: Registry, tmp_path: Path
) -> None:
    """Someone puts a real folder where the link was: the next pass puts the link back."""
    publish(reg, tmp_path, "v1", b"1")
    promote(reg, "v1")
    dest = tmp_path / "dest"
    for _ in range(2):  # once while running, once across a restart
        agent = AgentProc(str(tmp_path / "registry"), "clf", dest, *FAST).wait_started()
        try:
            wait_until(lambda: linked(dest) == "versions/v1")
            (dest / "clf" / "current").unlink()
            (dest / "clf" / "current").mkdir()
            (dest / "clf" / "current" / "junk").write_text("x")
            agent.refresh()
            wait_until(lambda: linked(dest) == "versions/v1", timeout=15)
            assert served(dest) == b"1"
        finally:
            assert agent.stop() == 0
        (dest / "clf" / "current").unlink()
        (dest / "clf" / "current").mkdir()


def test_metadata_whose_paths_collide_or_are_too_long_is_refused_cleanly(
    reg: Registry, tmp_path: Path
) -> None:
    """A hand-made metadata.json listing `a` and `a/b`, or a 300-byte name: the agent
    reports invalid metadata and keeps serving v1."""
    publish(reg, tmp_path, "v1", b"1")
    promote(reg, "v1")
    dest = tmp_path / "dest"
    with running(tmp_path, dest) as agent:
        good = json.loads(reg.store.read("clf/v1/metadata.json").data)
        entry = next(iter(good["files"].values()))
        for version, files in (
            ("v2", {"a": entry, "a/b": entry}),
            ("v3", {"x" * 300: entry}),
        ):
            raw = dict(good, version=version, files=files)
            reg.store.put(f"clf/{version}/metadata.json", json.dumps(raw).encode())
            promote_by_hand = f"{version}\n".encode()
            reg.store.put("clf/CURRENT", promote_by_hand)
            fragment = "file and a folder" if version == "v2" else "bytes"
            _alive_with_error(agent, fragment)
            assert linked(dest) == "versions/v1"


def test_cached_copy_rewritten_with_the_same_size_is_not_linked_again(
    reg: Registry, tmp_path: Path
) -> None:
    """v1's cached bytes rewritten (same size), then a rollback to v1: fresh bytes served."""
    publish(reg, tmp_path, "v1", b"good" * 1000)
    publish(reg, tmp_path, "v2", b"two")
    promote(reg, "v1")
    dest = tmp_path / "dest"
    with running(tmp_path, dest):
        promote(reg, "v2")
        wait_until(lambda: linked(dest) == "versions/v2")
        cached = dest / "clf" / "versions" / "v1" / "m.bin"
        cached.chmod(0o644)
        cached.write_bytes(b"evil" * 1000)
        promote(reg, "v1")
        wait_until(lambda: linked(dest) == "versions/v1", timeout=15)
        assert served(dest) == b"good" * 1000


def test_a_version_folder_replaced_by_a_link_outside_dest_is_never_followed(
    reg: Registry, tmp_path: Path
) -> None:
    """versions/v1 swapped for a symlink to a folder outside --dest: rolling back to v1
    downloads a real copy; the outside folder is never linked or touched."""
    publish(reg, tmp_path, "v1", b"good")
    publish(reg, tmp_path, "v2", b"two")
    promote(reg, "v1")
    dest = tmp_path / "dest"
    outside = tmp_path / "outside"
    with running(tmp_path, dest):
        promote(reg, "v2")
        wait_until(lambda: linked(dest) == "versions/v2")
        planted = dest / "clf" / "versions" / "v1"
        os.rename(planted, tmp_path / "old-v1")
        outside.mkdir()
        (outside / "m.bin").write_bytes(b"evil")
        (outside / "metadata.json").write_bytes(
            (tmp_path / "old-v1" / "metadata.json").read_bytes()
        )
        planted.symlink_to(outside)
        promote(reg, "v1")
        wait_until(lambda: linked(dest) == "versions/v1", timeout=15)
        assert served(dest) == b"good"
        assert not (dest / "clf" / "versions" / "v1").is_symlink()
        assert (outside / "m.bin").read_bytes() == b"evil"


def test_a_file_removed_from_the_linked_copy_is_restored_within_a_poll(
    reg: Registry, tmp_path: Path
) -> None:
    """The linked copy loses a file: the next pass notices (stat checks), re-fetches, relinks."""
    publish(reg, tmp_path, "v1", b"good")
    promote(reg, "v1")
    dest = tmp_path / "dest"
    with running(tmp_path, dest):
        (dest / "clf" / "current" / "m.bin").unlink()
        wait_until((dest / "clf" / "current" / "m.bin").exists, timeout=10)
        assert served(dest) == b"good"


def test_healthz_answers_while_the_start_up_check_hashes_large_copies(
    reg: Registry, tmp_path: Path
) -> None:
    """A restart with a large cached copy: /healthz answers before the re-hash is done."""
    publish(reg, tmp_path, "v1", os.urandom(1 << 20) * 600)
    promote(reg, "v1")
    dest = tmp_path / "dest"
    agent = AgentProc(str(tmp_path / "registry"), "clf", dest, "--once").proc
    assert agent.wait(120) == 0
    restarted = AgentProc(str(tmp_path / "registry"), "clf", dest, *FAST).wait_started()
    try:
        code, _ = restarted.get("/healthz")
        still_checking = restarted.status()["local_versions"] == []
        assert (code, still_checking) == (200, True)
        wait_until(lambda: restarted.status()["local_versions"] == ["v1"], timeout=60)
    finally:
        assert restarted.stop() == 0


def test_a_pointer_to_a_missing_version_is_rechecked_at_the_poll_interval(
    reg: Registry, tmp_path: Path
) -> None:
    """CURRENT names a version that does not exist for 6 s, then is fixed: followed within
    about one interval, not after a backoff that grew during the outage."""
    publish(reg, tmp_path, "v1", b"1")
    publish(reg, tmp_path, "v2", b"2")
    promote(reg, "v1")
    dest = tmp_path / "dest"
    agent = AgentProc(
        str(tmp_path / "registry"), "clf", dest, "--interval", "0.5", "--max-backoff", "30"
    ).wait_started()
    try:
        wait_until(lambda: linked(dest) == "versions/v1")
        reg.store.put("clf/CURRENT", b"v9\n")
        wait_until(lambda: "v9" in str(agent.status()["last_error"]), timeout=10)
        time.sleep(6)
        reg.store.put("clf/CURRENT", b"v2\n")
        fixed = time.monotonic()
        wait_until(lambda: linked(dest) == "versions/v2", timeout=30)
        assert time.monotonic() - fixed < 2.0
    finally:
        assert agent.stop() == 0


def test_the_linked_copy_rewritten_with_the_same_size_is_replaced_within_a_poll(
    reg: Registry, tmp_path: Path
) -> None:
    """Someone rewrites the served file in place, same size: the next pass sees its changed
    ctime, re-hashes, re-fetches and relinks the real bytes."""
    publish(reg, tmp_path, "v1", b"good" * 1000)
    promote(reg, "v1")
    dest = tmp_path / "dest"
    with running(tmp_path, dest):
        served_file = dest / "clf" / "current" / "m.bin"
        served_file.chmod(0o644)
        with open(served_file, "r+b") as f:
            f.write(b"evil")
        wait_until(lambda: served(dest) == b"good" * 1000, timeout=10)
