"""Shared mode on a hostile host: prepared artifacts planted by another uid (chown 65534),
folders others can write (chmod 1777), DONE files that do not bind the version, an app uid that
cannot create the folder. Every fault is made for real, with real models and processes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelswap.loader import ModelLoader, shared
from modelswap.testing.onnx_models import scale_model, swap_link, version_dir

pytestmark = pytest.mark.timeout(90)
NOBODY = 65534
WIDE = np.ones((1, 600), dtype=np.float32)


def published(base: Path, version: str, model: Path) -> Path:
    """A version folder as the agent installs it: metadata.json lists the model's sha256."""
    data = model.read_bytes()
    files = {"model.onnx": {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}}
    return version_dir(base, version, model, files=files)


def plant(root: Path, version: str, model: Path, metadata: dict[str, Any], uid: int) -> Path:
    """What another user can do without any secret: compute the artifact's name from public
    inputs and write a convincing artifact (a DONE bound to the right sha256) under it."""
    sha = shared.source_sha256(model, metadata)
    final = root / f"{version}-{shared.host_key(sha)}"
    final.mkdir(mode=0o755)
    evil = scale_model(final / "model.onnx", 666.0, width=600).read_bytes()
    files = {"model.onnx": {"size": len(evil), "sha256": hashlib.sha256(evil).hexdigest()}}
    done = {"format": shared.FORMAT, "version": version, "source_sha256": sha, "files": files}
    (final / "DONE").write_text(json.dumps(done))
    for p in (final, final / "model.onnx", final / "DONE"):
        os.chown(p, uid, uid)
    return final


def one_version(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    base = tmp_path / "clf"
    folder = published(base, "v1", scale_model(tmp_path / "m1.onnx", 1.0, width=600))
    swap_link(base, "v1")
    return base, json.loads((folder / "metadata.json").read_text())


def serve_once(base: Path) -> tuple[float, dict[str, Any]]:
    with ModelLoader(base / "current", shared=True, poll_interval_s=0.05) as loader:
        out = float(loader.run(None, {"input": WIDE})[0][0, 0])
        return out, loader.health()[1]


@pytest.mark.parametrize(
    ("root_mode", "root_uid", "planted_uid", "reason"),
    [
        (0o1777, 0, NOBODY, "has mode 1777: group or others can write it"),  # as the agent made it
        (0o700, 0, NOBODY, "is owned by uid 65534, not by this process's uid 0"),
        (0o700, NOBODY, NOBODY, ".prepared is owned by uid 65534"),
        (0o777, 0, 0, "has mode 0777"),  # even an artifact of our own uid, in an open folder
    ],
    ids=["root-1777", "artifact-of-nobody", "root-of-nobody", "root-0777"],
)
def test_artifact_another_uid_could_have_written_is_never_used(
    tmp_path: Path, root_mode: int, root_uid: int, planted_uid: int, reason: str
) -> None:
    """A planted artifact (named right, DONE bound to the right sha256, output 666) is refused
    when the folder is open to others or the artifact is not ours: private load, reason shown."""
    base, metadata = one_version(tmp_path)
    root = base / ".prepared"
    root.mkdir()
    root.chmod(root_mode)
    final = plant(root, "v1", base / "versions/v1/model.onnx", metadata, planted_uid)
    os.chown(root, root_uid, root_uid)
    out, health = serve_once(base)
    assert out == 1.0  # the real v1, not the planted 666
    assert health["shared"] is False
    assert health["shared_error"].startswith("v1: loaded privately, shared copy unavailable: ")
    assert reason in health["shared_error"]
    assert "prepared_dir=" in health["shared_error"]
    assert sorted(p.name for p in final.iterdir()) == ["DONE", "model.onnx"]  # left alone


@pytest.mark.parametrize("damage", ["source-sha256", "old-format-done", "graph-replaced"])
def test_own_artifact_not_bound_to_the_version_is_prepared_again(
    tmp_path: Path, damage: str
) -> None:
    """DONE is never trusted on its own: an artifact of ours whose DONE names another source
    sha256, or is of the old unbound format, or whose graph is not the one DONE records, is
    set aside and prepared again; the real model serves, shared."""
    base, _ = one_version(tmp_path)
    out, health = serve_once(base)
    assert (out, health["shared"]) == (1.0, True)
    (final,) = [p for p in (base / ".prepared").iterdir() if p.is_dir()]
    done = json.loads((final / "DONE").read_text())
    assert (
        done["source_sha256"]
        == json.loads((base / "versions/v1/metadata.json").read_text())["files"]["model.onnx"][
            "sha256"
        ]
    )
    graph = final / "model.onnx"
    graph.unlink()
    evil = scale_model(graph, 666.0, width=600).read_bytes()
    if damage == "source-sha256":  # consistent files, bound to other bytes than v1's
        done["source_sha256"] = hashlib.sha256(b"another model").hexdigest()
        done["files"]["model.onnx"] = {
            "size": len(evil),
            "sha256": hashlib.sha256(evil).hexdigest(),
        }
    elif damage == "old-format-done":  # what the loader wrote before: trusted on sight
        done = {"pid": 1, "host": "h", "seconds": 0.1}
    (final / "DONE").chmod(0o644)
    (final / "DONE").write_text(json.dumps(done))
    out, health = serve_once(base)
    assert (out, health["shared"], health["shared_error"]) == (1.0, True, None)
    log = (base / ".prepared" / "prepare.log").read_text().splitlines()
    assert [line.split()[0] for line in log] == ["v1", "v1"]
    assert sorted(p.name for p in (base / ".prepared").iterdir() if p.is_dir()) == [final.name]


def test_source_that_does_not_match_its_sha256_is_never_prepared(tmp_path: Path) -> None:
    """The artifact is bound to the version's sha256: a copy whose bytes differ from it (same
    size, still loads) is not prepared for the other workers; the reason is in /health."""
    base, _ = one_version(tmp_path)
    scale_model(base / "versions/v1/model.onnx", 9.0, width=600)
    _, health = serve_once(base)
    assert health["shared"] is False
    assert "model.onnx does not match its sha256 in metadata.json" in health["shared_error"]
    assert [p.name for p in (base / ".prepared").iterdir() if p.is_dir()] == []


def test_prepared_folder_is_made_private_and_only_in_shared_mode(tmp_path: Path) -> None:
    """shared=False creates nothing; shared=True creates .prepared with mode 0700 itself;
    a prepared_dir it cannot create falls back with a hint that names prepared_dir=."""
    base, _ = one_version(tmp_path)
    with ModelLoader(base / "current") as loader:
        assert loader.version == "v1"
    assert not (base / ".prepared").exists()
    out, health = serve_once(base)
    assert (out, health["shared"]) == (1.0, True)
    st = (base / ".prepared").stat()
    assert (st.st_mode & 0o7777, st.st_uid) == (0o700, os.geteuid())
    (tmp_path / "a-file").write_text("x")
    with ModelLoader(
        base / "current", shared=True, prepared_dir=tmp_path / "a-file" / "prepared"
    ) as loader:
        error = loader.health()[1]["shared_error"]
    assert "cannot create the prepared folder" in error
    assert "prepared_dir=" in error


def test_app_uid_that_cannot_create_the_prepared_folder_falls_back_naming_prepared_dir(
    tmp_path: Path,
) -> None:
    """An app running as uid 65534 on a volume root owns (0755): it cannot create .prepared,
    so it serves a private copy and the hint names the uid and prepared_dir=."""
    volume = Path(tempfile.mkdtemp(dir="/tmp"))  # tmp_path's parents are closed to uid 65534
    try:
        volume.chmod(0o755)
        base, _ = one_version(volume)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the app, as another uid: modules are loaded, the files are readable
            try:
                signal.alarm(30)  # never outlive the test, whatever happens in here
                os.close(read)
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                out, health = serve_once(base)
                os.write(write, json.dumps({"out": out, **health}).encode())
            finally:
                os._exit(0)
        os.close(write)
        with os.fdopen(read) as pipe:
            report = json.loads(pipe.read() or "{}")
        os.waitpid(pid, 0)
    finally:
        shutil.rmtree(volume)
    assert (report["out"], report["shared"]) == (1.0, False)
    assert (
        f"cannot create the prepared folder {base / '.prepared'}: Permission denied"
        in (report["shared_error"])
    )
    assert (
        "make its parent writable by uid 65534, or pass ModelLoader(..., prepared_dir="
        in (report["shared_error"])
    )
