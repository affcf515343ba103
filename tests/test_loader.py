"""The in-app loader with real ONNX models, real symlinks, real threads and real HTTP."""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelswap.loader import ModelLoader, ModelNotLoaded
from modelswap.testing.onnx_models import failing_model, scale_model, swap_link, version_dir
from tests.conftest import wait_until

ONES = np.ones((2, 4), dtype=np.float32)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A volume with v1 (outputs 1.0) and v2 (outputs 2.0), current -> v1."""
    base = tmp_path / "clf"
    version_dir(base, "v1", scale_model(tmp_path / "m1.onnx", 1.0), created="t1")
    version_dir(base, "v2", scale_model(tmp_path / "m2.onnx", 2.0), created="t2")
    swap_link(base, "v1")
    return base


def get_health(loader: ModelLoader) -> tuple[int, dict[str, Any]]:
    url = f"http://127.0.0.1:{loader.health_port}/health"
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_loads_current_and_reports_health(root: Path) -> None:
    """start() loads the linked version; /health shows it with its metadata."""
    with ModelLoader(root / "current", health_port=0, poll_interval_s=0.1) as loader:
        assert loader.version == "v1"
        assert float(loader.run(None, {"input": ONES})[0][0, 0]) == 1.0
        code, body = get_health(loader)
        assert code == 200
        assert (body["status"], body["model_version"], body["model_loaded"]) == ("ok", "v1", True)
        assert body["metadata"] == {"version": "v1", "created": "t1"}
        assert body["last_error"] is None


def test_sessions_do_not_spin_unless_the_app_asks(root: Path) -> None:
    """Idle intra-op threads sleep by default (a spinning pool starves the next build);
    session_options from the app are used as given."""
    import onnxruntime as ort  # noqa: PLC0415

    key = "session.intra_op.allow_spinning"
    with ModelLoader(root / "current") as loader, loader.session() as live:
        assert live.model.get_session_options().get_session_config_entry(key) == "0"
    mine = ort.SessionOptions()
    mine.add_session_config_entry(key, "1")
    mine.intra_op_num_threads = 1
    with ModelLoader(root / "current", session_options=mine) as loader, loader.session() as live:
        used = live.model.get_session_options()
        assert (used.get_session_config_entry(key), used.intra_op_num_threads) == ("1", 1)


def test_retired_version_is_torn_down_even_if_the_app_keeps_it(root: Path) -> None:
    """An app that keeps `live` after its request would otherwise free the old session on its
    own thread at its next request; the swapper drops the model itself once no request holds it."""
    with ModelLoader(root / "current", poll_interval_s=0.05) as loader:
        with loader.session() as kept:
            session = weakref.ref(kept.model)
        swap_link(root, "v2")
        wait_until(lambda: loader.version == "v2", timeout=10, interval=0.005)
        wait_until(lambda: kept.retired, timeout=10, interval=0.005)
        assert kept.model is None
        assert session() is None  # torn down although `kept` is still referenced here
        assert not kept.acquire()  # a request that read it just before the swap moves on
        assert float(loader.run(None, {"input": ONES})[0][0, 0]) == 2.0


def test_twenty_swaps_under_load_drop_no_request(root: Path) -> None:
    """4 threads request nonstop while the link flips 20 times: no failure, no mixed answer."""
    loader = ModelLoader(root / "current", poll_interval_s=0.05).start()
    stop = threading.Event()
    failures: list[BaseException] = []
    served: list[tuple[str, float]] = []
    lock = threading.Lock()

    def client() -> None:
        while not stop.is_set():
            try:
                with loader.session() as live:
                    out = live.model.run(None, {"input": ONES})[0]
                    first = live.model.run(None, {"input": ONES})[0]
                values = set(np.unique(np.concatenate([out, first])).tolist())
                if len(values) != 1:
                    raise AssertionError(f"mixed outputs {values}")
                with lock:
                    served.append((live.version, values.pop()))
            except BaseException as e:  # noqa: BLE001 - every failure is the finding
                failures.append(e)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for i in range(20):
            target = "v2" if i % 2 == 0 else "v1"
            swap_link(root, target)
            wait_until(lambda t=target: loader.version == t, timeout=10, interval=0.005)
            time.sleep(0.02)
    finally:
        stop.set()
        for t in threads:
            t.join()
        loader.stop()
    assert failures == []
    assert dict(served) == {"v1": 1.0, "v2": 2.0}
    assert loader.version == "v1"
    assert loader.swaps == 20
    assert len(served) > 100


@pytest.mark.parametrize("kind", ["garbage", "fails-warmup", "incompatible"])
def test_broken_version_is_refused_and_fixing_the_link_recovers(
    root: Path, tmp_path: Path, kind: str
) -> None:
    """A bad model never replaces the good one; /health shows why; a good link recovers."""
    if kind == "garbage":
        bad = version_dir(root, "v3")
        (bad / "model.onnx").write_bytes(os.urandom(4096))
    elif kind == "fails-warmup":
        version_dir(root, "v3", failing_model(tmp_path / "f.onnx"))
    else:
        version_dir(root, "v3", scale_model(tmp_path / "w.onnx", 3.0, input_name="features"))
    with ModelLoader(root / "current", health_port=0, poll_interval_s=0.05) as loader:
        swap_link(root, "v3")
        wait_until(lambda: loader.swap_failures == 1, timeout=10)
        assert loader.version == "v1"
        assert float(loader.run(None, {"input": ONES})[0][0, 0]) == 1.0
        code, body = get_health(loader)
        assert (code, body["status"], body["model_version"]) == (200, "degraded", "v1")
        assert body["last_error"].startswith("v3: ")
        swap_link(root, "v2")
        wait_until(lambda: loader.version == "v2", timeout=10)
        assert get_health(loader)[1]["last_error"] is None


def test_missing_link_at_start_reports_and_recovers(tmp_path: Path) -> None:
    """No link at start: /health is 503 and run() raises clearly; the link appears: it serves."""
    base = tmp_path / "clf"
    with ModelLoader(base / "current", health_port=0, poll_interval_s=0.05) as loader:
        code, body = get_health(loader)
        assert (code, body["status"], body["model_loaded"]) == (503, "no_model", False)
        assert "does not exist" in body["last_error"]
        with pytest.raises(ModelNotLoaded):
            loader.run(None, {"input": ONES})
        version_dir(base, "v1", scale_model(tmp_path / "m.onnx", 1.0))
        swap_link(base, "v1")
        wait_until(loader.is_ready, timeout=10)
        assert get_health(loader)[0] == 200


def test_dangling_or_removed_link_keeps_serving_and_says_so(root: Path) -> None:
    """A link removed or pointing nowhere: the loaded model serves on, /health says why."""
    with ModelLoader(root / "current", health_port=0, poll_interval_s=0.05) as loader:
        (root / "current").unlink()
        wait_until(lambda: loader.last_error is not None, timeout=5)
        assert float(loader.run(None, {"input": ONES})[0][0, 0]) == 1.0
        (root / "current").symlink_to("versions/v9")
        wait_until(lambda: "not a folder" in (loader.last_error or ""), timeout=5)
        assert get_health(loader)[1]["model_version"] == "v1"
        swap_link(root, "v1")
        wait_until(lambda: loader.last_error is None, timeout=5)


def test_restart_mode_calls_restart_instead_of_swapping(root: Path) -> None:
    """on_change='restart' keeps the loaded version and asks for a restart on a new one."""
    calls: list[str] = []
    with ModelLoader(
        root / "current",
        on_change="restart",
        poll_interval_s=0.05,
        on_restart=lambda: calls.append("restart"),
    ) as loader:
        swap_link(root, "v2")
        wait_until(lambda: calls == ["restart"], timeout=5)
        assert loader.version == "v1"


def test_custom_load_function_swaps_like_onnx(tmp_path: Path) -> None:
    """A user-supplied load(path) serves non-ONNX models with the same swap and health."""
    base = tmp_path / "clf"
    for v, factor in (("v1", 10), ("v2", 20)):
        folder = version_dir(base, v)
        (folder / "model.json").write_text(json.dumps({"factor": factor}))
    swap_link(base, "v1")

    def load(folder: Path) -> Any:
        factor = json.loads((folder / "model.json").read_text())["factor"]
        return lambda x: x * factor

    with ModelLoader(base / "current", load=load, health_port=0, poll_interval_s=0.05) as loader:
        assert loader.run(2) == 20
        swap_link(base, "v2")
        wait_until(lambda: loader.version == "v2", timeout=5)
        assert loader.run(2) == 40
        assert get_health(loader)[1]["swaps"] == 1


def test_loader_import_stays_light() -> None:
    """Importing the loader pulls in neither boto3 nor aiohttp nor the agent."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    code = (
        "import sys, modelswap.loader\n"
        "heavy = [m for m in ('boto3', 'botocore', 'aiohttp', 'structlog', 'modelswap.agent')"
        " if m in sys.modules]\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_wait_ready_blocks_until_the_first_version_serves(tmp_path: Path) -> None:
    """No link yet: wait_ready times out False; once the agent links v1 it returns True."""
    base = tmp_path / "clf"
    version_dir(base, "v1", scale_model(tmp_path / "m1.onnx", 1.0), created="t1")
    with ModelLoader(base / "current", poll_interval_s=0.05) as loader:
        started = time.monotonic()
        assert loader.wait_ready(0.3) is False
        assert time.monotonic() - started >= 0.3
        threading.Timer(0.2, swap_link, (base, "v1")).start()
        assert loader.wait_ready(10) is True
        assert loader.version == "v1"
