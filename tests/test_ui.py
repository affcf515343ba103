"""`modelswap ui` over real HTTP: every page, its escaping of hostile store contents, its
headers, and that nothing on it can change the registry."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from markupsafe import escape

from modelswap.judge import Criteria
from modelswap.records import Event, GateRecord
from modelswap.ui import views
from tests.ui_helpers import INSTANCE, ONERROR, SCRIPT, get, hostile_registry, server_log, serving

PAGES = [
    "/",
    "/models/clf",
    "/models/clf?metric=latency_ms",
    "/models/clf/timeline",
    "/models/clf/timeline?page=2&type=promote",
    "/models/clf/versions/v2",
    "/models/clf/diff",
    "/models/clf/diff?a=v1&b=v2",
    "/models/clf/fleet",
    "/models/clf/rollout",
]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    root = tmp_path_factory.mktemp("ui") / "reg"
    hostile_registry(root, events=60)
    with serving(root) as url:
        yield root, url


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("path", PAGES)
def test_every_page_answers_escaped_with_a_content_security_policy(
    site: tuple[Path, str], path: str
) -> None:
    root, url = site
    code, headers, body = get(url + path)
    assert code == 200, body[-500:]
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "<script" not in body.lower()  # no script at all, and none from the store
    assert "onerror=" not in body.lower().replace("onerror=&#34;", "")
    assert "Traceback" not in server_log(root)


def test_hostile_notes_and_reasons_are_shown_as_text(site: tuple[Path, str]) -> None:
    _, url = site
    _, _, version = get(url + "/models/clf/versions/v2")
    assert str(escape(SCRIPT)) in version
    _, _, timeline = get(url + "/models/clf/timeline?type=rollback")
    assert str(escape(ONERROR)) in timeline
    _, _, fleet = get(url + "/models/clf/fleet")
    assert str(escape(ONERROR)) in fleet  # the agent's last_error
    assert INSTANCE in fleet


def test_the_fleet_and_rollout_pages_reload_themselves(site: tuple[Path, str]) -> None:
    _, url = site
    for path in ("/models/clf/fleet", "/models/clf/rollout"):
        _, _, body = get(url + path)
        assert '<meta http-equiv="refresh" content="5">' in body
    _, _, fleet = get(url + "/models/clf/fleet")
    assert "converged" in fleet
    assert "1 of 1 fresh instance(s) ready on it" in fleet
    _, _, model = get(url + "/models/clf")
    assert '<meta http-equiv="refresh"' not in model


def test_a_hand_edit_and_a_forced_gate_are_labelled() -> None:
    """A pointer moved by hand is `out-of-band`; a promote forced past a refusing gate is
    `forced`, with the gate's new and current values."""
    oob = Event("STAGING", None, "v1", "out-of-band")
    assert views.event_row(oob).kind == "out-of-band"
    gate = GateRecord(passed=False, forced=True, metric="accuracy", new=0.88, current=0.95)
    row = views.event_row(Event("CURRENT", "v1", "v2", "promote", gate=gate))
    assert (row.kind, row.gate) == ("forced", "accuracy 0.88 vs 0.95: forced past a refusal")
    passed = GateRecord(passed=True, metric="accuracy", new=0.95, current=0.93)
    row = views.event_row(Event("CURRENT", "v1", "v2", "promote", gate=passed))
    assert (row.kind, row.gate) == ("promote", "accuracy 0.95 vs 0.93: passed")


def test_the_model_page_shows_versions_pointers_chart_and_problems(
    site: tuple[Path, str],
) -> None:
    _, url = site
    _, _, body = get(url + "/models/clf")
    assert "CURRENT &rarr;" in body
    assert "<svg" in body
    assert "accuracy by version" in body
    assert "What was live when" in body
    assert 'class="rollback"' in body
    assert 'v4 <span class="bad">incomplete</span>' in body
    assert 'v5 <span class="bad">invalid metadata.json</span>' in body
    assert f"{3:040x}"[:10] in body
    assert "s3://data/clf/3" in body
    assert "65 in all" in body  # 4 moves, 60 more and the hand edit
    _, _, latency = get(url + "/models/clf?metric=latency_ms")
    assert "latency_ms by version" in latency
    assert re.search(r"<option value=\"latency_ms\" selected>", latency)


def test_the_timeline_pages_newest_first_and_filters_by_type(site: tuple[Path, str]) -> None:
    _, url = site
    _, _, first = get(url + "/models/clf/timeline")
    assert "65 event(s), newest first; page 1 of 2" in first
    assert first.count("<tr>") - 1 == 50  # the header row and 50 events
    assert first.index(">64<") < first.index(">63<")
    _, _, second = get(url + "/models/clf/timeline?page=2")
    assert second.count("<tr>") - 1 == 15
    assert 'rel="prev"' in second
    assert 'rel="next"' not in second
    _, _, rollbacks = get(url + "/models/clf/timeline?type=rollback")
    assert "1 event(s)" in rollbacks
    assert "k-rollback" in rollbacks
    _, _, hand = get(url + "/models/clf/timeline?type=out-of-band")
    assert "1 event(s)" in hand
    assert "STAGING" in hand
    _, _, past = get(url + "/models/clf/timeline?page=99")
    assert "page 2 of 2" in past


def test_diff_shows_metric_changes(site: tuple[Path, str]) -> None:
    _, url = site
    _, _, body = get(url + "/models/clf/diff?a=v1&b=v3")
    assert "+0.0500" in body  # accuracy 0.90 -> 0.95
    assert "notes" in body
    assert "training_data" in body


@pytest.mark.parametrize(
    ("path", "code", "text"),
    [
        ("/models/nope", 404, "does not exist"),
        ("/models/clf/versions/v99", 404, "does not exist"),
        ("/models/a%3Cb", 400, "invalid model name &#39;a&lt;b&#39;"),
        ("/models/clf/timeline?page=x", 400, "is not a number"),
        ("/models/clf/diff?a=v1&b=v99", 404, "v99"),
        ("/nowhere", 404, "Not Found"),
        ("/models/clf/versions/v4", 404, "is incomplete: it has files but no metadata.json"),
        ("/models/clf/versions/v5", 500, "metadata.json is not valid JSON"),
    ],
)
def test_bad_requests_get_an_error_page_not_a_traceback(
    site: tuple[Path, str], path: str, code: int, text: str
) -> None:
    root, url = site
    got, headers, body = get(url + path)
    assert (got, text in body) == (code, True), body[-400:]
    assert "Content-Security-Policy" in headers
    assert "Traceback" not in server_log(root)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_no_method_but_get_is_served_and_the_registry_is_unchanged(
    site: tuple[Path, str], method: str
) -> None:
    root, url = site
    before = _tree_digest(root)
    for path in PAGES:
        code, _, _ = get(url + path.split("?")[0], method=method)
        assert code == 405, (method, path)
    assert _tree_digest(root) == before


def test_a_rollout_with_a_verdict_is_shown(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    reg = hostile_registry(root)
    r = reg.rollout_start(
        "clf", "v3", steps=(10, 100), reason="try v3", judge=Criteria(max_error_rate=0.01)
    )
    # The judge's window object as the controller writes it (analysis.save), its text hostile.
    verdict = {
        "result": "fail",
        "why": ONERROR,
        "phase": "step",
        "fails": 1,
        "fail_checks": 3,
        "canary": {"instances": 1, "requests": 900, "errors": 45, "error_rate": 0.05},
        "baseline": {"instances": 1, "requests": 910, "errors": 0, "error_rate": 0.0},
        "checks": [
            {"check": "error_rate", "result": "fail", "why": "5% > 1%", "p_value": 1e-9},
            {"check": "p99", "result": "inconclusive", "why": "no histogram"},
        ],
    }
    window = root / "clf" / ".rollout" / "window.json"
    window.parent.mkdir(parents=True, exist_ok=True)
    window.write_text(json.dumps({"rollout": r.id, "window": {}, "verdict": verdict}))
    with serving(root) as url:
        _, _, body = get(url + "/models/clf/rollout")
        _, _, index = get(url + "/")
    assert "v3</a> over" in body
    assert "running" in body
    assert 'class="now">10%' in body
    assert "try v3" in body
    assert '<span class="verdict v-fail">fail</span>' in body
    assert str(escape(ONERROR)) in body
    assert "5% &gt; 1%" in body
    assert "1e-09" in body  # the p-value
    assert ">900<" in body
    assert ">45<" in body
    assert "v3 running at 10%" in index


def test_an_empty_registry_and_a_missing_one(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with serving(empty) as url:
        code, _, body = get(url + "/")
    assert (code, "no models yet" in body) == (200, True)
    missing = tmp_path / "missing"
    result = modelswap_ui(missing)
    assert result.returncode == 2, result
    assert result.stderr.startswith("error: no registry at file://")
    assert "hint:" in result.stderr
    assert "Traceback" not in result.stderr
    assert not missing.exists()


def test_a_bad_port_is_refused(tmp_path: Path) -> None:
    result = modelswap_ui(tmp_path, "--port", "70000")
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == "error: --port 70000 is not a port"


def modelswap_ui(registry: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelswap", "ui", *flags],
        capture_output=True,
        text=True,
        timeout=30,
        env=dict(os.environ, MODELSWAP_REGISTRY=str(registry)),
        check=False,
    )


def test_a_rebound_host_name_is_refused(site: tuple[Path, str]) -> None:
    """DNS rebinding: a page elsewhere that resolves its own name to 127.0.0.1 sends its
    own Host; a dashboard on loopback answers only to loopback names."""
    _, url = site
    port = url.rsplit(":", 1)[1]
    for host, code in ((f"evil.example:{port}", 421), (f"localhost:{port}", 200)):
        request = urllib.request.Request(url + "/", headers={"Host": host})  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=10) as r:  # noqa: S310 - loopback
                got = r.status
        except urllib.error.HTTPError as e:
            got = e.code
        assert (host, got) == (host, code)


def test_numbers_no_chart_can_hold_and_odd_folders_still_render(tmp_path: Path) -> None:
    """What valid JSON can hold and a page cannot format (a 400-digit integer in an event's
    gate or a verdict, a metric of 1e308) and a folder no model could be named: every page
    still answers, and the index still lists the model."""
    root = tmp_path / "reg"
    reg = hostile_registry(root)
    r = reg.rollout_start("clf", "v3", steps=(10, 100), judge=Criteria(max_error_rate=0.01))
    huge = "1" + "0" * 400
    event = root / "clf" / "events" / "0000000099.json"
    event.write_text(
        '{"pointer": "CURRENT", "from": "v2", "to": "v2", "type": "promote", "gate": '
        f'{{"passed": true, "metric": "accuracy", "new": {huge}, "current": {huge}}}}}'
    )
    window = root / "clf" / ".rollout" / "window.json"
    window.parent.mkdir(parents=True, exist_ok=True)
    window.write_text(
        json.dumps({"rollout": r.id, "verdict": {"result": "fail", "checks": []}}).replace(
            '"checks": []', f'"checks": [{{"check": "x", "p_value": {huge}}}], "fails": {huge}'
        )
    )
    model = tmp_path / "m.onnx"
    model.write_bytes(b"big")
    reg.publish("clf", [model], metrics={"accuracy": 1.7e308}, version="v6")
    os.mkdir(os.path.join(os.fsencode(root), b"\xff-not-utf8"))
    with serving(root) as url:
        for path in ("/", "/models/clf", "/models/clf/timeline", "/models/clf/rollout"):
            code, _, body = get(url + path)
            assert (path, code) == (path, 200), body[-300:]
        assert "Traceback" not in server_log(root)
        _, _, index = get(url + "/")
    assert ">clf</a>" in index
