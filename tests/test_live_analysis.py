"""The controller's live analysis with fleet reports written as agents write them (no agent
processes: the reports are the input): the window and the run of failures survive a restart,
the same reports twice are one check, an agent restart is not a negative count, hostile
metrics are ignored, the judge's flags are checked, the watch after promotion can be ended;
and the agent's scraper against a real HTTP endpoint whose app restarts."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent.metrics import Scraper, parse
from loader.traffic import Counters

from modelswap import analysis, controller, rollout_verbs, rollouts
from modelswap.api import Criteria, MetricRule
from modelswap.api import Registry as Api
from modelswap.errors import Busy, UsageError
from modelswap.events import EventLog
from modelswap.fleet import write_report
from modelswap.registry import Registry
from modelswap.store import open_store
from modelswap.traffic import Traffic
from tests.conftest import run_cli
from tests.test_rollouts import expected_bucket

PODS = [f"pod-{i}" for i in range(6)]
SALT = next(
    f"s{n}"
    for n in range(5000)
    if sum(expected_bucket(f"s{n}", "clf", p) < 0.3 for p in PODS) == 2
    and sum(0.3 <= expected_bucket(f"s{n}", "clf", p) < 0.6 for p in PODS) == 2
)
JUDGE = Criteria(max_error_ratio=2, min_requests=100, fail_checks=2)


def counted(requests: int, errors: int) -> dict[str, Any]:
    """A version's totals as an agent reports them: the loader's export, parsed."""
    if requests == 0:
        return Traffic().to_json()
    c = Counters()
    for i in range(requests):
        c.request("x", 0.004, i < errors)
    return parse(c.render())["x"].to_json()


class World:
    def __init__(self, tmp: Path) -> None:
        self.url = str(tmp / "registry")
        self.api = Api(self.url, actor="tester")
        self.registry = Registry(open_store(self.url))
        for v in ("v1", "v2", "v3"):
            f = tmp / v / "m.bin"
            f.parent.mkdir()
            f.write_bytes(v.encode())
            self.api.publish("clf", [f], version=v)
        self.api.promote("clf", "v1")
        self.since = dict.fromkeys(PODS, "2026-12-01T00:00:00.000Z")

    def start(self, judge: Criteria = JUDGE, **kw: Any) -> rollouts.Rollout:
        kw.setdefault("bake_s", 0)
        kw.setdefault("steps", [30, 100])
        return self.api.rollout_start("clf", "v2", salt=SALT, judge=judge, **kw)

    def report(self, pod: str, versions: dict[str, Any], metrics: Any = None) -> None:
        r = self.rollout()
        follows = "CANARY" if expected_bucket(SALT, "clf", pod) < r.fraction else "CURRENT"
        active = "v2" if follows == "CANARY" else self.api.pointer_version("clf", "CURRENT")
        status = {
            "instance": pod, "pointer": "CURRENT", "desired_version": active,
            "active_version": active, "ready": True, "last_change": None, "last_error": None,
            "follows": follows, "rollout": r.id, "served_version": active,
            "metrics": metrics if metrics is not None
            else {"since": self.since[pod], "versions": versions},
        }  # fmt: skip
        write_report(self.registry, "clf", status)

    def all_report(self, canary: dict[str, Any], base: dict[str, Any]) -> None:
        for pod in PODS:
            on_canary = expected_bucket(SALT, "clf", pod) < self.rollout().fraction
            self.report(pod, {"v2": canary} if on_canary else {"v1": base})

    def tick(self) -> controller.Decision:
        return controller.tick(self.registry, "clf", "ctl", stale_after_s=60)

    def etag(self) -> str:
        found = rollouts.read(self.registry, "clf")
        assert found is not None
        return found[1]

    def rollout(self) -> rollouts.Rollout:
        found = rollouts.read(self.registry, "clf")
        assert found is not None
        return found[0]


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def test_failing_checks_count_once_per_new_traffic_and_survive_a_restart(world: World) -> None:
    world.start()
    world.all_report(counted(0, 0), counted(0, 0))
    assert world.tick().action == "baking"  # ready: the window opens next
    assert "inconclusive" in world.tick().detail  # every instance marked, nothing counted yet
    etag = world.etag()
    world.all_report(counted(40, 0), counted(40, 0))
    assert "canary has 80 of the 100" in world.tick().detail
    # more traffic, the same verdict: ROLLOUT (which every agent polls) is not rewritten; the
    # window object has the fresh counts
    assert world.etag() == etag
    stored = analysis.load(world.registry, world.rollout())
    assert stored is not None
    assert stored["verdict"]["canary"]["requests"] == 80
    world.all_report(counted(300, 30), counted(300, 0))
    first = world.tick()
    assert "fail" in first.detail
    assert "1 of 2 failing" in first.detail
    # the same reports again, and a new controller process (tick keeps nothing in memory):
    # not a second check
    again = world.tick()
    assert again.action != "rollback"
    assert "1 of 2 failing" in again.detail
    assert analysis.load(world.registry, world.rollout()) is not None
    world.all_report(counted(600, 60), counted(600, 0))
    decision = world.tick()
    assert decision.action == "rollback"
    r = world.rollout()
    assert r.state == "rolled-back"
    assert r.verdict is not None
    assert r.verdict["fails"] == 2
    (check,) = [c for c in r.verdict["checks"] if c["check"] == "error-ratio"]
    # only what was served after the window opened: 2 canary pods x 600
    assert check["canary_requests"] == 1200
    assert check["canary_errors"] == 120


def test_an_agent_restart_starts_its_totals_again_not_negative(world: World) -> None:
    world.start()
    world.all_report(counted(500, 0), counted(500, 0))
    world.tick()
    world.tick()  # marked at 500 each
    for pod in PODS:
        world.since[pod] = "2026-12-01T01:00:00.000Z"  # every agent restarted
    world.all_report(counted(150, 0), counted(150, 0))
    assert world.tick().action == "step"  # a pass on what came after the restarts
    r = world.rollout()
    assert r.before is not None
    assert r.before["traffic"]["requests"] == 300  # 2 baseline pods x 150 since their restart
    (step,) = [
        e
        for e in EventLog(world.registry.store, "clf").all()
        if e.extra.get("rollout", {}).get("evidence")
    ]
    verdict = step.extra["rollout"]["evidence"]["verdict"]
    assert verdict["result"] == "pass"
    assert verdict["canary"]["requests"] == 300


@pytest.mark.parametrize(
    "metrics",
    [
        {"since": 5, "versions": "x"},
        {"versions": {"v2": {"requests": -5, "errors": 0, "bounds": [], "counts": [-5]}}},
        {"versions": {"v2": {"requests": 10**400, "errors": 0, "bounds": [], "counts": [10**400]}}},
        {"versions": {"v2": {**counted(300, 0), "seconds_sum": 10**400}}},
        {"versions": {"v2": {"requests": 3000, "errors": 9000, "bounds": [], "counts": [3000]}}},
        {"versions": {"v2": {**counted(300, 0), "quality": {"a": [1, 2]}}}},
    ],
)
def test_hostile_metrics_are_ignored_and_never_pass(world: World, metrics: Any) -> None:
    """The canary pods report metrics that are no counts (huge, negative, inconsistent): they
    are left out of the cohort (0 instances with metrics), the verdict is inconclusive, and
    nothing raises; the baseline's good reports count as usual."""
    world.start()
    for pod in PODS:
        on_canary = expected_bucket(SALT, "clf", pod) < 0.3
        world.report(pod, {"v1": counted(0, 0)}, metrics=metrics if on_canary else None)
    world.tick()
    world.tick()  # the window opens
    for pod in PODS:
        if expected_bucket(SALT, "clf", pod) >= 0.3:
            world.report(pod, {"v1": counted(300, 0)})
    d = world.tick()
    assert d.action == "holding", d
    stored = analysis.load(world.registry, world.rollout())
    assert stored is not None
    verdict = stored["verdict"]
    assert verdict["result"] == "inconclusive"
    assert verdict["canary"]["instances"] == 0  # ignored, not trusted
    assert verdict["baseline"]["requests"] > 0
    r = world.rollout()
    assert r.state == "running"
    assert r.step == 0


def test_a_report_that_is_not_json_metrics_is_no_instance(world: World) -> None:
    world.start()
    for pod in PODS:
        world.report(pod, {}, metrics="nonsense")
    assert world.tick().action == "waiting"  # a malformed report is no instance at all


def test_judge_flags_are_checked_with_one_error_and_a_hint(world: World) -> None:
    for flags, fragment in [
        (["--metric", "accuracy"], "NAME:min:TOL"),
        (["--max-error-rate", "2"], "--max-error-rate"),
        (["--max-p99-ratio", "0"], "--max-p99-ratio"),
        (["--steps", "100", "--max-error-ratio", "2"], "--steps 100"),
    ]:
        r = run_cli("rollout", "start", "clf", "v2", *flags, registry=world.url)
        assert r.returncode != 0
        lines = r.stderr.strip().splitlines()
        assert lines[0].startswith("error:"), lines
        assert fragment in lines[0], lines
        assert lines[1].startswith("hint:")
        assert "Traceback" not in r.stderr
    assert rollouts.read(world.registry, "clf") is None  # nothing was written
    with pytest.raises(UsageError):
        world.start(Criteria(metrics=(MetricRule("a", "min", 0.1),)), steps=[100])


def test_the_watch_after_promotion_refuses_a_new_start_and_abort_ends_it(world: World) -> None:
    world.start(bake_s=600)
    world.api.rollout_step("clf")  # to 100%, by hand
    world.api.rollout_step("clf")  # promoted: watched for --bake (600 s) after it
    r = world.rollout()
    assert r.state == "promoted"
    assert r.watching
    with pytest.raises(Busy, match="watches it until"):
        world.api.rollout_start("clf", "v3")
    world.api.rollout_abort("clf", reason="enough")
    r = world.rollout()
    assert "the bake was ended by tester: enough" in (r.stopped or "")
    assert r.state == "promoted"
    assert not r.watching
    assert world.api.pointer_version("clf", "CURRENT") == "v2"


class _Endpoint(http.server.BaseHTTPRequestHandler):
    text = ""

    def do_GET(self) -> None:
        body = type(self).text.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    server.shutdown()


def test_scraper_counts_from_its_first_scrape_and_reads_an_app_restart(endpoint: str) -> None:
    app = Counters()
    for _ in range(1000):
        app.request("v1", 0.01, False)  # before the agent started: never attributed
    _Endpoint.text = app.render()
    s = Scraper(endpoint)
    s.scrape()
    assert s.error is None
    assert not s.totals
    for _ in range(40):
        app.request("v1", 0.01, True)
    _Endpoint.text = app.render()
    s.scrape()
    assert (s.totals["v1"].requests, s.totals["v1"].errors) == (40, 40)
    restarted = Counters()  # the app restarted: its counters start at 0 again
    for _ in range(7):
        restarted.request("v1", 0.01, False)
    _Endpoint.text = restarted.render()
    s.scrape()
    assert s.totals["v1"].requests == 47
    report = s.report()
    assert Traffic.from_json(report["versions"]["v1"]).requests == 47
    assert report["interval"]["v1"]["requests"] == 47  # the first report: all of it
    _Endpoint.text = "this is { not prometheus"
    s.scrape()
    assert s.error is not None
    assert endpoint in s.error
    assert s.totals["v1"].requests == 47  # a bad scrape changes nothing


def test_a_rollback_after_promotion_keeps_a_humans_current(world: World) -> None:
    """The bake's rollback moves CURRENT back from exactly the promoted version: if a human
    moved it in between (here: to v3), their move stays and the rollback still ends."""
    world.start(bake_s=600)
    world.api.rollout_step("clf")
    world.api.rollout_step("clf")  # promoted v2, watched
    world.api.promote("clf", "v3", reason="a human's hotfix")
    r, etag = rollouts.read(world.registry, "clf") or (None, "")
    assert r is not None
    pending = rollout_verbs.intent("rollback", "ctl", "regression after promotion", {})
    pending["current"] = True
    dying = r.but(state="rolled-back", watch_until=None, pending=pending)
    done, _ = rollout_verbs.finish(
        world.registry, dying, rollouts.write(world.registry, dying, etag), recovering=True
    )
    assert done.pending is None
    assert done.state == "rolled-back"
    assert world.api.pointer_version("clf", "CURRENT") == "v3"  # the human's, kept
    assert "CURRENT was left as it is" in (done.stopped or "")
    assert rollouts.quarantined(world.registry, "clf", "v2") is not None
    assert world.api.pointer_version("clf", "CANARY") == "v3"  # back on what CURRENT names


def test_the_watch_stops_when_a_human_moves_current(world: World) -> None:
    world.start(bake_s=600)
    world.api.rollout_step("clf")
    world.api.rollout_step("clf")  # promoted v2, watched
    world.api.promote("clf", "v3", reason="a human's call")
    d = world.tick()
    assert d.action == "halt"
    assert "CURRENT names v3" in d.detail
    r = world.rollout()
    assert not r.watching
    assert r.state == "promoted"
    assert world.api.pointer_version("clf", "CURRENT") == "v3"  # nothing moved


def test_a_watch_without_traffic_ends_after_the_deadline_keeping_the_promotion(
    world: World,
) -> None:
    world.start(bake_s=0.2, deadline_s=0.5)
    world.api.rollout_step("clf")
    world.api.rollout_step("clf")
    world.all_report(counted(0, 0), counted(0, 0))
    assert world.tick().action == "baking"  # inconclusive: keeps watching past the bake
    time.sleep(0.8)
    d = world.tick()
    assert d.action == "bake-ended", d
    assert "without a conclusive pass" in d.detail
    assert "canary has 0 of the 100 requests" in d.detail
    r = world.rollout()
    assert r.state == "promoted"
    assert not r.watching
    assert world.api.pointer_version("clf", "CURRENT") == "v2"
    types = [e.type for e in EventLog(world.registry.store, "clf").all()]
    assert types[-1] == "rollout-bake-ended"
