"""--tfserving-dir on a real filesystem: every swap, rollbacks included, gets a higher number
(TensorFlow Serving loads only a higher one), numbers survive a restart, superseded ones go
after the grace period, and nothing is left dangling."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from modelswap.agent.numbered import STATE_FILE, NumberedLinks


def _versions(tmp_path: Path, *names: str) -> dict[str, Path]:
    out = {}
    for name in names:
        d = tmp_path / "dest" / "clf" / "versions" / name
        d.mkdir(parents=True)
        (d / "saved_model.pb").write_bytes(name.encode())
        out[name] = d
    return out


def _links(root: Path) -> dict[str, str]:
    folder = root / "clf"
    return {
        n: os.readlink(folder / n) for n in sorted(os.listdir(folder)) if (folder / n).is_symlink()
    }


def test_every_swap_gets_a_higher_number_rollbacks_included(tmp_path: Path) -> None:
    v = _versions(tmp_path, "v1", "v2")
    tf = tmp_path / "tfserving"
    links = NumberedLinks(tf, "clf", grace_s=3600)
    assert links.follow(v["v1"]) == 1
    assert links.follow(v["v1"]) == 1  # the same version again: no new number, no reload
    assert links.follow(v["v2"]) == 2
    assert links.follow(v["v1"]) == 3  # a rollback is a higher number, never `1` again
    assert [links.target(n) for n in links.numbers()] == [
        v["v1"].resolve(),
        v["v2"].resolve(),
        v["v1"].resolve(),
    ]
    # relative links: they resolve wherever the volume is mounted
    assert all(not os.path.isabs(t) for t in _links(tf).values())
    assert (tf / "clf" / "3" / "saved_model.pb").read_bytes() == b"v1"


def test_numbers_never_go_back_across_a_restart_or_removed_links(tmp_path: Path) -> None:
    v = _versions(tmp_path, "v1", "v2")
    tf = tmp_path / "tfserving"
    NumberedLinks(tf, "clf", grace_s=0).follow(v["v1"])
    NumberedLinks(tf, "clf", grace_s=0).follow(v["v2"])  # 1 expires at once (grace 0)
    assert _links(tf) == {"2": os.path.relpath(v["v2"], tf / "clf")}
    (tf / "clf" / "2").unlink()  # even with every link gone, the next number is 3
    assert NumberedLinks(tf, "clf", grace_s=0).follow(v["v1"]) == 3
    assert json.loads((tf / "clf" / STATE_FILE).read_text())["last"] == 3


def test_a_superseded_number_stays_for_the_grace_period_then_goes(tmp_path: Path) -> None:
    v = _versions(tmp_path, "v1", "v2")
    tf = tmp_path / "tfserving"
    links = NumberedLinks(tf, "clf", grace_s=0.5)
    links.follow(v["v1"])
    links.follow(v["v2"])
    assert links.numbers() == [1, 2]  # the server still needs 1 until 2 is loaded
    time.sleep(0.6)
    links.follow(v["v2"])
    assert links.numbers() == [2]


def test_a_pruned_version_leaves_no_dangling_number(tmp_path: Path) -> None:
    v = _versions(tmp_path, "v1", "v2")
    tf = tmp_path / "tfserving"
    links = NumberedLinks(tf, "clf", grace_s=3600)
    links.follow(v["v1"])
    links.follow(v["v2"])
    (v["v1"] / "saved_model.pb").unlink()
    v["v1"].rmdir()  # the agent's --keep pruned it
    links.follow(v["v2"])
    assert links.numbers() == [2]
    assert all((tf / "clf" / n).exists() for n in _links(tf))


def test_triton_config_is_linked_beside_the_numbers_and_a_folder_of_ours_is_kept(
    tmp_path: Path,
) -> None:
    v = _versions(tmp_path, "v1", "v2")
    (v["v2"] / "config.pbtxt").write_text('name: "clf"\n')
    tf = tmp_path / "triton"
    (tf / "clf" / "7").mkdir(parents=True)  # someone's own folder: never removed
    links = NumberedLinks(tf, "clf", grace_s=0)
    assert links.follow(v["v1"]) == 8
    assert not (tf / "clf" / "config.pbtxt").exists()
    assert links.follow(v["v2"]) == 9
    assert (tf / "clf" / "config.pbtxt").read_text() == 'name: "clf"\n'
    assert os.readlink(tf / "clf" / "config.pbtxt") == "9/config.pbtxt"
    assert (tf / "clf" / "7").is_dir()
    assert links.follow(v["v1"]) == 10
    assert not (tf / "clf" / "config.pbtxt").exists()  # v1 has none: no stale config


def test_the_number_a_server_confirmed_stays_until_a_newer_one_is(tmp_path: Path) -> None:
    """A refused newest version must not leave the server with nothing: the confirmed number
    outlives the grace period until another is confirmed."""
    v = _versions(tmp_path, "v1", "v2", "v3")
    tf = tmp_path / "triton"
    links = NumberedLinks(tf, "clf", grace_s=0)
    assert links.follow(v["v1"]) == 1
    assert links.follow(v["v2"], keep=1) == 2  # v2 not confirmed yet: 1 stays
    assert links.follow(v["v3"], keep=1) == 3
    assert links.numbers() == [1, 3]  # 2 was never confirmed: gone after its grace
    assert links.follow(v["v3"], keep=3) == 3
    assert links.numbers() == [3]
