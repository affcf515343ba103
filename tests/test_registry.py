"""Registry behaviour on both backends: publish, pointers, events, rollback, verify, gc."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from modelswap import keys
from modelswap.cleanup import collect_garbage
from modelswap.errors import (
    Busy,
    IntegrityError,
    InvalidMetadata,
    InvalidPointer,
    PointerMoved,
    VersionExists,
    VersionNotFound,
)
from modelswap.locks import acquire
from modelswap.pointers import Move, history, move_pointer, read_pointer, rollback_target
from modelswap.publish import PublishRequest
from modelswap.publish import publish as publish_request
from modelswap.registry import Registry

MakeFile = Callable[[str, bytes], Path]


def publish(registry: Registry, make: MakeFile, data: bytes, version: str | None = None) -> str:
    req = PublishRequest(
        model="clf",
        files={"model.onnx": make("model.onnx", data)},
        version=version,
        metrics={"validation_accuracy": 0.9},
        actor="tester",
    )
    return publish_request(registry, req).version


def promote(registry: Registry, version: str, **kw: str) -> dict[str, object] | None:
    return move_pointer(registry, Move("clf", "CURRENT", version, "promote", "tester", **kw))


def test_publish_numbers_versions_and_records_checksums(
    registry: Registry, model_file: MakeFile
) -> None:
    """Each publish without --version takes the next vN; metadata holds sha256 and size."""
    assert publish(registry, model_file, b"one") == "v1"
    assert publish(registry, model_file, b"two") == "v2"
    meta = registry.metadata("clf", "v2")
    entry = meta.files["model.onnx"]
    assert (entry.size, entry.sha256[:8]) == (3, "3fc4ccfe")
    assert meta.metrics == {"validation_accuracy": 0.9}


def test_publishing_an_existing_version_is_refused(
    registry: Registry, model_file: MakeFile
) -> None:
    """A second publish of v1 fails and the stored bytes stay the first ones."""
    publish(registry, model_file, b"one", version="v1")
    with pytest.raises(VersionExists):
        publish(registry, model_file, b"other", version="v1")
    assert registry.verify("clf", "v1") == []
    assert next(registry.store.iter_chunks("clf/v1/model.onnx")) == b"one"


def test_interrupted_publish_leaves_no_version_and_can_be_rerun(
    registry: Registry, model_file: MakeFile
) -> None:
    """Files without metadata.json are not a version; re-running the publish completes it."""
    registry.store.put("clf/v1/model.onnx", b"partial")
    with pytest.raises(VersionNotFound, match="incomplete"):
        registry.metadata("clf", "v1")
    assert publish(registry, model_file, b"full", version="v1") == "v1"
    assert registry.verify("clf", "v1") == []


def test_publish_while_another_holds_the_version_lock_is_busy(
    registry: Registry, model_file: MakeFile
) -> None:
    """A live publish lock on v3 makes a second publisher of v3 fail with Busy."""
    with (
        acquire(registry.store, keys.publish_lock("clf", "v3"), "v3", actor="other"),
        pytest.raises(Busy, match="locked by other"),
    ):
        publish(registry, model_file, b"x", version="v3")


def test_promote_moves_pointer_and_logs_one_event(registry: Registry, model_file: MakeFile) -> None:
    """promote writes the version into CURRENT and appends from/to/actor/reason."""
    publish(registry, model_file, b"one")
    publish(registry, model_file, b"two")
    promote(registry, "v1", reason="first")
    event = promote(registry, "v2", reason="better")
    assert event is not None
    assert (event.seq, event.from_version, event.to, event.type) == (2, "v1", "v2", "promote")
    assert registry.store.read("clf/CURRENT").data == b"v2\n"
    assert [e.to for e in history(registry, "clf")] == ["v1", "v2"]


def test_promote_of_missing_or_incomplete_version_is_refused(
    registry: Registry, model_file: MakeFile
) -> None:
    """The pointer never names a version that does not exist or has no metadata.json."""
    publish(registry, model_file, b"one")
    promote(registry, "v1")
    registry.store.put("clf/v2/model.onnx", b"half")
    for target in ("v2", "v9"):
        with pytest.raises(VersionNotFound):
            promote(registry, target)
    assert registry.store.read("clf/CURRENT").data == b"v1\n"


@pytest.fixture
def three_versions(registry: Registry, model_file: MakeFile) -> Registry:
    """clf v1, v2, v3 published, nothing promoted."""
    for data in (b"1", b"2", b"3"):
        publish(registry, model_file, data)
    return registry


def test_promote_with_stale_expectation_is_refused(three_versions: Registry) -> None:
    """--expect guards a scripted move: a pointer that moved on is not overwritten."""
    registry = three_versions
    promote(registry, "v1")
    promote(registry, "v2")
    with pytest.raises(PointerMoved):
        promote(registry, "v3", expect="v1")
    assert read_pointer(registry, "clf", "CURRENT").version == "v2"  # type: ignore[union-attr]


def test_rollback_returns_to_the_previous_version(three_versions: Registry) -> None:
    """rollback with no target goes back to the version the last move replaced."""
    registry = three_versions
    for v in ("v1", "v2", "v3"):
        promote(registry, v)
    assert rollback_target(registry, "clf", "CURRENT") == "v2"


def test_hand_edited_pointer_is_honoured_and_logged_out_of_band(three_versions: Registry) -> None:
    """A pointer edited by hand shows as out-of-band in history and is logged at the next move."""
    registry = three_versions
    promote(registry, "v1")
    registry.store.put("clf/CURRENT", b"v2\n")  # echo v2 | aws s3 cp - .../CURRENT
    shown = history(registry, "clf")
    assert [(e.seq, e.from_version, e.to, e.type) for e in shown][-1] == (
        None,
        "v1",
        "v2",
        "out-of-band",
    )
    assert rollback_target(registry, "clf", "CURRENT") == "v1"
    promote(registry, "v3")
    logged = [(e.seq, e.from_version, e.to, e.type) for e in history(registry, "clf")]
    assert logged == [
        (1, None, "v1", "promote"),
        (2, "v1", "v2", "out-of-band"),
        (3, "v2", "v3", "promote"),
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"   \n", "empty"),
        (b"v1 v2\n", "not a version name"),
        (b"../../etc/passwd", "not a version name"),
        (b"\xff\xfe\x00", "not UTF-8"),
        (b"v" * 300, "bytes"),
        (b"x" * (1 << 20), "bytes"),
    ],
)
def test_malformed_pointer_content_is_refused(
    registry: Registry, model_file: MakeFile, content: bytes, message: str
) -> None:
    """Garbage, paths, non-UTF-8 and oversized pointers raise InvalidPointer, naming why."""
    publish(registry, model_file, b"1")
    registry.store.put("clf/CURRENT", content)
    with pytest.raises(InvalidPointer, match=message):
        read_pointer(registry, "clf", "CURRENT")
    with pytest.raises(InvalidPointer):
        promote(registry, "v1")
    assert registry.store.read("clf/CURRENT", max_bytes=1 << 21).data == content


@pytest.mark.parametrize(
    "doc",
    [
        b"{not json",
        b"[]",
        json.dumps({"version": "v1", "created": "2026-01-01T00:00:00Z", "files": {}}).encode(),
        json.dumps(
            {
                "version": "v1",
                "created": "2026-01-01T00:00:00Z",
                "files": {"../../etc/passwd": {"sha256": "0" * 64, "size": 1}},
            }
        ).encode(),
        json.dumps(
            {
                "version": "v2",
                "created": "2026-01-01T00:00:00Z",
                "files": {"m.onnx": {"sha256": "0" * 64, "size": 1}},
            }
        ).encode(),
    ],
)
def test_malformed_metadata_is_refused(registry: Registry, doc: bytes) -> None:
    """Bad JSON, empty file lists, unsafe paths or a wrong version name raise InvalidMetadata."""
    registry.store.put("clf/v1/metadata.json", doc)
    with pytest.raises(InvalidMetadata):
        registry.metadata("clf", "v1")
    with pytest.raises(InvalidMetadata):
        promote(registry, "v1")


def test_unknown_metadata_keys_are_kept(registry: Registry, model_file: MakeFile) -> None:
    """Keys modelswap does not know survive a round trip through metadata.json."""
    req = PublishRequest(
        model="clf",
        files={"model.onnx": model_file("model.onnx", b"1")},
        extra={"owner": "team-a", "labels": {"tier": 1}},
    )
    publish_request(registry, req)
    raw = registry.metadata("clf", "v1").raw
    assert (raw["owner"], raw["labels"]) == ("team-a", {"tier": 1})


def test_verify_detects_changed_bytes_of_same_size(
    registry: Registry, model_file: MakeFile
) -> None:
    """A stored file rewritten with other bytes of the same size fails verification."""
    publish(registry, model_file, b"abcd")
    registry.store.put("clf/v1/model.onnx", b"abce")
    problems = registry.verify("clf", "v1")
    assert len(problems) == 1
    assert problems[0].startswith("model.onnx: sha256")
    with pytest.raises(IntegrityError):
        registry.require_intact("clf", "v1")


def test_gc_keeps_pointed_recent_and_logged_versions(
    registry: Registry, model_file: MakeFile
) -> None:
    """gc deletes only versions no pointer, recent event or newest-N rule protects."""
    for i in range(6):
        publish(registry, model_file, str(i).encode())
    promote(registry, "v1")
    promote(registry, "v2")
    registry.store.put("clf/v9/model.onnx", b"leftover of a dead publish")
    report = collect_garbage(registry, "clf", keep=1, dry_run=False, actor="t")
    assert sorted(report.deleted) == ["v3", "v4", "v5"]
    assert report.partial == ("v9",)
    assert sorted(report.kept) == ["v1", "v2", "v6"]
    assert registry.version_names("clf") == ["v1", "v2", "v6"]


def test_malformed_metadata_is_listed_and_never_collected(
    registry: Registry, model_file: MakeFile
) -> None:
    """A version with a broken metadata.json shows as invalid and gc keeps it for a human."""
    for i in range(3):
        publish(registry, model_file, str(i).encode())
    promote(registry, "v3")
    registry.store.put("clf/v1/metadata.json", b"{broken")
    metas = registry.all_metadata("clf")
    assert isinstance(metas["v1"], InvalidMetadata)
    report = collect_garbage(registry, "clf", keep=1, dry_run=False, actor="t")
    assert (report.deleted, report.partial) == (("v2",), ())
    assert registry.version_names("clf") == ["v1", "v3"]


def test_a_second_rollback_goes_to_the_last_known_good_version(three_versions: Registry) -> None:
    """v1 -> v2 -> v3 (bad), rollback to v2, rollback again: v1, never v3 back live."""
    registry = three_versions
    for v in ("v1", "v2", "v3"):
        promote(registry, v)
    move_pointer(registry, Move("clf", "CURRENT", "v2", "rollback", "oncall"))
    assert rollback_target(registry, "clf", "CURRENT") == "v1"
    move_pointer(registry, Move("clf", "CURRENT", "v1", "rollback", "oncall"))
    with pytest.raises(VersionNotFound):
        rollback_target(registry, "clf", "CURRENT")  # v2 and v3 were both rolled back from


def test_a_version_promoted_again_after_a_rollback_counts_as_good_again(
    three_versions: Registry,
) -> None:
    """v1 -> v2, rollback to v1, v2 promoted again, v3: rollback goes to v2, the live one
    before v3 (a later deliberate promote clears the earlier rollback)."""
    registry = three_versions
    for v in ("v1", "v2"):
        promote(registry, v)
    move_pointer(registry, Move("clf", "CURRENT", "v1", "rollback", "oncall"))
    for v in ("v2", "v3"):
        promote(registry, v)
    assert rollback_target(registry, "clf", "CURRENT") == "v2"
