"""Input that must fail closed (issue 15): mistyped URLs, missing folders, empty files, a bad
endpoint, oversize or colliding metadata, malformed pointers and fleet reports."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelswap.metadata import utc_now
from modelswap.pointers import Move, move_pointer
from modelswap.publish import PublishRequest, publish
from modelswap.registry import Registry
from modelswap.store import open_store
from tests.conftest import BUCKET, run_cli

ModelFile = Callable[[str, bytes], Path]


def _assert_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    """Exit non-zero with exactly one `error:` line holding fragment and one `hint:` line."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("error: ")
    assert fragment in lines[0], lines[0]
    assert lines[1].startswith("hint: ")


def _stored_keys(registry_url: str) -> list[str]:
    """Everything a registry holds: the local folder's files (it need not exist), or the keys
    under the S3 prefix."""
    if registry_url.startswith("s3://"):
        return [o.key for o in open_store(registry_url).objects("")]
    root = Path(registry_url)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def _publish(registry: Registry, model_file: ModelFile, data: bytes = b"weights") -> str:
    path = model_file("model.onnx", data)
    req = PublishRequest(model="clf", files={"model.onnx": path}, actor="tester@test")
    return publish(registry, req).version


def _promote(registry: Registry, version: str) -> None:
    move_pointer(
        registry, Move(model="clf", pointer="CURRENT", to=version, type="promote", actor="t@t")
    )


def _metadata(registry: Registry, version: str) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads(registry.store.read(f"clf/{version}/metadata.json").data)
    return raw


# -- registry URLs and folders ------------------------------------------------------------


@pytest.mark.parametrize("url", ["s3:/models/prod", "s3//models/prod", "gs:/b"])
def test_publish_refuses_a_mistyped_url_and_creates_no_folder(
    url: str, tmp_path: Path, model_file: ModelFile
) -> None:
    """A registry URL missing a slash or colon is refused, not used as a folder in the cwd."""
    path = model_file("model.onnx", b"weights")
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run_cli("publish", "clf", str(path), "--registry", url, registry=url, cwd=tmp_path)
    _assert_error(result, "but is not one")
    assert repr(url) in result.stderr
    assert result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_publish_to_a_missing_absolute_folder_says_it_created_it(
    tmp_path: Path, model_file: ModelFile
) -> None:
    """Publishing into a folder that did not exist names the folder it created on stderr."""
    folder = tmp_path / "does-not-exist" / "registry"
    path = model_file("model.onnx", b"weights")
    result = run_cli("publish", "clf", str(path), registry=str(folder), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "v1\n"
    assert result.stderr.splitlines() == [f"note: created the registry folder file://{folder}"]
    assert (folder / "clf" / "v1" / "metadata.json").is_file()


def test_publish_to_an_existing_folder_prints_no_note(
    tmp_path: Path, model_file: ModelFile
) -> None:
    """The second publish into a folder the first one created prints no note."""
    folder = tmp_path / "registry"
    path = model_file("model.onnx", b"weights")
    assert run_cli("publish", "clf", str(path), registry=str(folder), cwd=tmp_path).returncode == 0
    result = run_cli("publish", "clf", str(path), registry=str(folder), cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "v2\n", "")


# -- files a version cannot hold -----------------------------------------------------------


def test_publish_refuses_an_empty_file(registry_url: str, model_file: ModelFile) -> None:
    """A 0-byte model file is refused and no version (nor anything else) is stored."""
    path = model_file("model.onnx", b"")
    result = run_cli("publish", "clf", str(path), registry=registry_url)
    _assert_error(result, f"{path} is empty")
    assert result.stdout == ""
    assert _stored_keys(registry_url) == []


def test_publish_refuses_a_file_and_a_folder_of_the_same_name(
    registry_url: str, tmp_path: Path
) -> None:
    """FILE `a` plus a folder holding `a/b` would store `a` as a file and a folder: refused."""
    src = tmp_path / "src"
    (src / "d" / "a").mkdir(parents=True)
    (src / "a").write_bytes(b"file a")
    (src / "d" / "a" / "b").write_bytes(b"file a/b")
    result = run_cli("publish", "clf", str(src / "a"), str(src / "d"), registry=registry_url)
    _assert_error(result, "'a' would be stored as a file and as the folder of 'a/b'")
    assert result.stdout == ""
    assert _stored_keys(registry_url) == []


# -- the S3 endpoint ----------------------------------------------------------------------


def test_an_endpoint_without_a_scheme_is_one_error_line(
    s3_server: object, model_file: ModelFile
) -> None:
    """AWS_ENDPOINT_URL without http:// gives one error and one hint, and publishes nothing."""
    url = f"s3://{BUCKET}/t-{uuid.uuid4().hex[:12]}"
    path = model_file("model.onnx", b"weights")
    result = run_cli(
        "publish", "clf", str(path), registry=url, env={"AWS_ENDPOINT_URL": "127.0.0.1:28330"}
    )
    _assert_error(result, "the S3 endpoint is not a valid URL")
    assert "127.0.0.1:28330" in result.stderr
    assert "AWS_ENDPOINT_URL must include the scheme" in result.stderr.splitlines()[1]
    assert result.stdout == ""
    assert _stored_keys(url) == []


# -- metadata.json written by hand ----------------------------------------------------------


def test_show_says_an_oversize_metadata_json_is_too_large(
    registry_url: str, registry: Registry
) -> None:
    """A 17 MB metadata.json is reported as too large and unread, not as invalid JSON."""
    registry.store.put("clf/v1/metadata.json", b"{" + b" " * (17 << 20) + b"}")
    result = run_cli("show", "clf", "v1", registry=registry_url)
    _assert_error(result, f"is {(17 << 20) + 2} bytes, over the 16 MiB a metadata.json may have")
    assert "not valid JSON" not in result.stderr
    assert result.stdout == ""


def test_metadata_listing_a_path_part_over_255_bytes_is_invalid(
    registry_url: str, registry: Registry, model_file: ModelFile
) -> None:
    """A listed file name of 300 bytes makes show and verify report invalid metadata."""
    version = _publish(registry, model_file)
    raw = _metadata(registry, version)
    raw["files"] = {"x" * 300: raw["files"]["model.onnx"]}
    registry.store.put(f"clf/{version}/metadata.json", json.dumps(raw).encode())
    for verb in ("show", "verify"):
        result = run_cli(verb, "clf", version, registry=registry_url)
        _assert_error(result, "lists an unusable file path")
        assert "has a part of 300 bytes" in result.stderr.splitlines()[0]
        assert result.stdout == ""


def test_metadata_listing_a_file_and_a_folder_of_the_same_name_is_invalid(
    registry_url: str, registry: Registry, model_file: ModelFile
) -> None:
    """Metadata listing both `a` and `a/b` makes show and verify report invalid metadata."""
    version = _publish(registry, model_file)
    raw = _metadata(registry, version)
    entry = raw["files"]["model.onnx"]
    raw["files"] = {"a": entry, "a/b": entry}
    registry.store.put(f"clf/{version}/metadata.json", json.dumps(raw).encode())
    for verb in ("show", "verify"):
        result = run_cli(verb, "clf", version, registry=registry_url)
        _assert_error(result, "lists both 'a' and 'a/b': one path cannot be a file and a folder")
        assert result.stdout == ""


# -- malformed pointers --------------------------------------------------------------------


def _with_bad_canary(registry: Registry, model_file: ModelFile) -> None:
    v1 = _publish(registry, model_file)
    _publish(registry, model_file, b"weights 2")
    _promote(registry, v1)
    registry.store.put("clf/CANARY", b"not a version!!")


def test_versions_warns_about_a_malformed_pointer_and_lists_the_rest(
    registry_url: str, registry: Registry, model_file: ModelFile
) -> None:
    """versions names a malformed CANARY in a warning and still lists versions and CURRENT."""
    _with_bad_canary(registry, model_file)
    result = run_cli("versions", "clf", "--json", registry=registry_url)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["version"], r["pointers"], r["complete"]) for r in rows] == [
        ("v1", ["CURRENT"], True),
        ("v2", [], True),
    ]
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("warning: ")
    assert "clf/CANARY holds 'not a version!!', which is not a version name" in lines[0]
    assert lines[1].startswith("hint: ")


def test_history_warns_about_a_malformed_pointer_and_lists_the_rest(
    registry_url: str, registry: Registry, model_file: ModelFile
) -> None:
    """history names a malformed CANARY in a warning and still lists CURRENT's move."""
    _with_bad_canary(registry, model_file)
    result = run_cli("history", "clf", "--json", registry=registry_url)
    assert result.returncode == 0, result.stderr
    events = json.loads(result.stdout)
    assert [(e["seq"], e["pointer"], e["from"], e["to"]) for e in events] == [
        (1, "CURRENT", None, "v1")
    ]
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("warning: ")
    assert "clf/CANARY holds 'not a version!!', which is not a version name" in lines[0]
    assert lines[1].startswith("hint: ")


# -- fleet reports -------------------------------------------------------------------------


def _report(instance: str, **changes: object) -> bytes:
    body = {
        "instance": instance,
        "pointer": "CURRENT",
        "desired_version": "v1",
        "active_version": "v1",
        "ready": True,
        "last_change": utc_now(),
        "last_error": None,
        "heartbeat": utc_now(),
    }
    body.update(changes)
    return json.dumps(body).encode()


def _fleet(registry: Registry, model_file: ModelFile, reports: dict[str, bytes]) -> None:
    _promote(registry, _publish(registry, model_file))
    for name, data in reports.items():
        registry.store.put(f"clf/fleet/{name}.json", data)


def _good() -> bytes:
    """A fresh report, made when the test runs (a heartbeat taken at import goes stale)."""
    return _report("good")


NAIVE = _report("naive", heartbeat="2026-12-01T10:00:00")
NOT_JSON = b"{not json"


def test_status_lists_malformed_reports_as_never_ready(
    registry_url: str, registry: Registry, model_file: ModelFile
) -> None:
    """Reports with a naive heartbeat, a string `ready` or no JSON are listed as malformed and
    not ready; the fresh one with `"ready": "false"` keeps the fleet from converging."""
    reports = {"good": _good(), "naive": NAIVE, "strready": _report("strready", ready="false")}
    _fleet(registry, model_file, {**reports, "broken": NOT_JSON})
    result = run_cli("status", "clf", "--json", registry=registry_url)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    view = json.loads(result.stdout)
    got = {i["instance"]: (i["ready"], i["stale"], bool(i["malformed"])) for i in view["instances"]}
    assert got == {
        "good": (True, False, False),
        "naive": (False, True, True),
        "strready": (False, False, True),
        "broken": (False, True, True),
    }
    problems = {i["instance"]: i["malformed"] for i in view["instances"]}
    assert problems["broken"] == "not valid JSON"
    assert problems["strready"] == "ready is 'false', not true or false"
    assert "not an RFC 3339 time with a zone" in problems["naive"]
    assert (view["version"], view["converged"]) == ("v1", False)


def test_status_never_counts_a_string_ready_as_ready(
    registry_url: str, registry: Registry, model_file: ModelFile
) -> None:
    """A fresh report saying `"ready": "false"` is malformed and not ready, so not converged."""
    _fleet(registry, model_file, {"good": _good(), "strready": _report("strready", ready="false")})
    result = run_cli("status", "clf", "--json", registry=registry_url)
    assert result.returncode == 0, result.stderr
    view = json.loads(result.stdout)
    got = {i["instance"]: (i["ready"], i["malformed"]) for i in view["instances"]}
    assert got == {
        "good": (True, None),
        "strready": (False, "ready is 'false', not true or false"),
    }
    assert view["converged"] is False


def test_status_converges_when_only_stale_malformed_reports_disagree(
    registry_url: str, registry: Registry, model_file: ModelFile
) -> None:
    """A naive heartbeat and a non-JSON report are stale, so the one fresh ready instance on
    the pointer's version makes the fleet converged; neither is counted as ready."""
    _fleet(registry, model_file, {"good": _good(), "naive": NAIVE, "broken": NOT_JSON})
    result = run_cli("status", "clf", "--json", registry=registry_url)
    assert result.returncode == 0, result.stderr
    view = json.loads(result.stdout)
    ready = {i["instance"]: i["ready"] for i in view["instances"]}
    assert ready == {"good": True, "naive": False, "broken": False}
    assert (view["version"], view["converged"]) == ("v1", True)


def test_status_is_not_converged_when_the_fresh_instance_is_behind(
    registry_url: str, registry: Registry, model_file: ModelFile
) -> None:
    """With stale malformed reports beside it, a fresh instance on another version means the
    fleet is not converged."""
    behind = _report("good", active_version="v0")
    _fleet(registry, model_file, {"good": behind, "naive": NAIVE, "broken": NOT_JSON})
    result = run_cli("status", "clf", "--json", registry=registry_url)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["converged"] is False


def test_status_text_marks_malformed_reports(
    registry_url: str, registry: Registry, model_file: ModelFile
) -> None:
    """The status table shows `(MALFORMED)` and READY `no` beside each malformed report."""
    reports = {"good": _good(), "naive": NAIVE, "strready": _report("strready", ready="false")}
    _fleet(registry, model_file, {**reports, "broken": NOT_JSON})
    result = run_cli("status", "clf", registry=registry_url)
    assert (result.returncode, result.stderr) == (0, "")
    lines = result.stdout.splitlines()
    assert lines[0] == "clf/CURRENT -> v1: NOT converged, 4 instance(s)"
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert sorted(rows) == ["broken", "good", "naive", "strready"]
    assert rows["good"][1:4] == ["v1", "v1", "yes"]
    for name in ("broken", "naive", "strready"):
        assert rows[name][1] == "(MALFORMED)", lines
    assert "MALFORMED" not in " ".join(rows["good"])
    assert [rows[name][4] for name in ("naive", "strready")] == ["no", "no"]
    assert rows["broken"][2:5] == ["-", "-", "no"]


def test_status_refuses_reports_from_the_future_or_under_another_name(
    registry_url: str, registry: Registry, model_file: ModelFile
) -> None:
    """A heartbeat in 2099, a report naming another instance than its key, or one naming no
    pointer: each is malformed and stale, so none can make the fleet look converged."""
    future = _report("future", heartbeat="2099-01-01T00:00:00Z")
    body = json.loads(_report("x"))
    del body["pointer"]
    _fleet(
        registry,
        model_file,
        {
            "future": future,
            "renamed": _report("someone-else"),
            "nopointer": json.dumps(body).encode(),
        },
    )
    view = json.loads(run_cli("status", "clf", "--json", registry=registry_url).stdout)
    got = {i["instance"]: (i["ready"], bool(i["malformed"])) for i in view["instances"]}
    assert got == {"future": (False, True), "renamed": (False, True), "nopointer": (False, True)}
    assert view["converged"] is False
