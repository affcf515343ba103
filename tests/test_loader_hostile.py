"""The loader on a hostile host: damaged copies repaired in place, models that declare huge
inputs, and health clients that misbehave. Every fault is made for real (truncation, rename
over, real sockets, real child processes); shared mode has its own: test_shared_hostile.py."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from modelswap.loader import HealthPortUnavailable, ModelLoader
from modelswap.loader.health import HealthServer
from modelswap.testing.onnx_models import scale_model, swap_link, version_dir
from tests.conftest import wait_until

pytestmark = pytest.mark.timeout(90)
ROOT = Path(__file__).resolve().parents[1]


def get(port: int, path: str = "/health") -> tuple[int, dict[str, Any]]:
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def published(base: Path, version: str, model: Path) -> Path:
    """A version folder as the agent installs it: metadata.json lists the model's sha256."""
    data = model.read_bytes()
    files = {"model.onnx": {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}}
    return version_dir(base, version, model, files=files)


def relu_model(path: Path, shape: list[int | str]) -> Path:
    """output = relu(input), with the input's declared shape as given (about 100 bytes)."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["input"], ["output"])],
        "relu",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save_model(model, str(path))
    return path


def vm_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


# -- 1. the loader retries what it failed on ----------------------------------------------


@pytest.mark.parametrize("repair", ["renamed-over", "rewritten-in-place", "same-size-rewrite"])
def test_damaged_copy_repaired_in_place_is_loaded_without_a_link_change(
    tmp_path: Path, repair: str
) -> None:
    """A linked copy that cannot load is loaded as soon as it is repaired under the same path:
    a repair is a new identity, tried at once (the backoff here is 60 s, so no timer did it)."""
    base = tmp_path / "clf"
    good = scale_model(tmp_path / "m1.onnx", 1.0).read_bytes()
    folder = published(base, "v1", tmp_path / "m1.onnx")
    damaged = os.urandom(len(good)) if repair == "same-size-rewrite" else good[: len(good) // 2]
    (folder / "model.onnx").write_bytes(damaged)
    swap_link(base, "v1")
    with ModelLoader(
        base / "current",
        health_port=0,
        poll_interval_s=0.05,
        retry_backoff_s=60,
        retry_max_backoff_s=60,
    ) as loader:
        code, body = get(loader.health_port)
        assert (code, body["status"], body["failed_attempts"]) == (503, "no_model", 1)
        assert body["last_error"].startswith("v1: onnxruntime cannot load model.onnx")
        assert 55 < body["retry_in_s"] <= 60
        time.sleep(0.3)  # several polls of the same damaged copy: no new attempt
        assert get(loader.health_port)[1]["failed_attempts"] == 1
        if repair == "renamed-over":  # what the agent does: new bytes renamed over the file
            (folder / ".model.onnx.tmp").write_bytes(good)
            (folder / ".model.onnx.tmp").replace(folder / "model.onnx")
        else:
            (folder / "model.onnx").write_bytes(good)
        started = time.monotonic()
        wait_until(loader.is_ready, timeout=5, interval=0.01)
        assert time.monotonic() - started < 2
        assert float(loader.run(None, {"input": np.ones((1, 4), np.float32)})[0][0, 0]) == 1.0
        code, body = get(loader.health_port)
        assert (code, body["status"], body["model_version"]) == (200, "ok", "v1")
        assert (body["last_error"], body["failed_attempts"], body["retry_in_s"]) == (None, 0, None)
        # each state seen on the way (a temporary file beside it, a half-written rewrite) is
        # a new identity too, tried and refused; what counts is that the repair is loaded
        assert loader.swap_failures >= 1


def test_live_copy_repaired_in_place_is_swapped_for_the_repaired_bytes(tmp_path: Path) -> None:
    """A linked copy damaged in a way that still loads (other weights, same size) serves
    wrong answers until the agent repairs it (a new folder renamed into place): the repair is
    a new identity and swaps in; touching the folder's times is not."""
    base = tmp_path / "clf"
    good = scale_model(tmp_path / "m1.onnx", 1.0).read_bytes()
    damaged = scale_model(tmp_path / "m9.onnx", 9.0).read_bytes()
    assert len(damaged) == len(good)
    folder = published(base, "v1", tmp_path / "m1.onnx")
    (folder / "model.onnx").write_bytes(damaged)
    swap_link(base, "v1")
    ones = np.ones((1, 4), np.float32)
    with ModelLoader(base / "current", poll_interval_s=0.05) as loader:
        assert float(loader.run(None, {"input": ones})[0][0, 0]) == 9.0
        os.utime(folder)  # the agent marks the linked folder recently used: no byte changed
        time.sleep(0.3)
        assert loader.swaps == 0
        staged = tmp_path / "staging" / "v1"  # the agent's repair: a new copy renamed in place
        staged.mkdir(parents=True)
        (staged / "model.onnx").write_bytes(good)
        (staged / "metadata.json").write_bytes((folder / "metadata.json").read_bytes())
        folder.rename(tmp_path / "trash")
        staged.rename(folder)
        wait_until(lambda: float(loader.run(None, {"input": ones})[0][0, 0]) == 1.0, timeout=5)
        assert (loader.version, loader.swaps, loader.last_error) == ("v1", 1, None)


def test_failed_build_of_an_unchanged_folder_is_retried_with_capped_backoff(
    tmp_path: Path,
) -> None:
    """A build that fails for a reason outside the folder is retried at 0.2, 0.4, 0.8, 0.8 s
    (base 0.2, cap 0.8); /health shows the attempts and the wait; it recovers on its own."""
    base = tmp_path / "clf"
    (version_dir(base, "v1") / "model.json").write_text('{"factor": 2}')
    swap_link(base, "v1")
    licence = tmp_path / "licence"  # something the app's load() needs besides the version
    attempts: list[float] = []

    def load(folder: Path) -> Any:
        attempts.append(time.monotonic())
        if not licence.exists():
            raise RuntimeError("licence server unreachable")
        factor = json.loads((folder / "model.json").read_text())["factor"]
        return lambda x: x * factor

    with ModelLoader(
        base / "current",
        load=load,
        health_port=0,
        poll_interval_s=0.05,
        retry_backoff_s=0.2,
        retry_max_backoff_s=0.8,
    ) as loader:
        wait_until(lambda: len(attempts) >= 5, timeout=10, interval=0.01)
        code, body = get(loader.health_port)
        assert (code, body["status"]) == (503, "no_model")
        assert body["last_error"] == "v1: load() failed: licence server unreachable"
        assert body["failed_attempts"] >= 5
        assert 0 <= body["retry_in_s"] <= 0.8
        gaps = [round(b - a, 2) for a, b in itertools.pairwise(attempts[:5])]
        for gap, expected in zip(gaps, [0.2, 0.4, 0.8, 0.8], strict=True):
            assert expected - 0.01 <= gap <= expected + 0.15, gaps
        assert loader.swap_failures == 1  # one version refused, retried; not five refusals
        licence.write_text("ok")
        wait_until(loader.is_ready, timeout=3, interval=0.01)
        assert loader.run(3) == 6
        body = get(loader.health_port)[1]
        assert (body["status"], body["failed_attempts"], body["retry_in_s"]) == ("ok", 0, None)


# -- 3. warm-up allocates within a bound ---------------------------------------------------


def test_model_declaring_a_huge_input_is_refused_before_warm_up_allocates(tmp_path: Path) -> None:
    """A ~100-byte model declaring a [1, 1073741824] input is refused with the input, its
    shape and the bound named; RSS stays where it was; the old version keeps serving."""
    base = tmp_path / "clf"
    version_dir(base, "v1", relu_model(tmp_path / "small.onnx", ["batch", "n"]))
    huge = relu_model(tmp_path / "huge.onnx", [1, 1073741824])
    assert huge.stat().st_size < 200
    version_dir(base, "v2", huge)
    swap_link(base, "v1")
    with ModelLoader(base / "current", health_port=0, poll_interval_s=0.05) as loader:
        assert loader.version == "v1"
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (VmHWM) to now
        before = vm_kib("VmHWM")
        swap_link(base, "v2")
        wait_until(lambda: loader.swap_failures == 1, timeout=20)
        peak = vm_kib("VmHWM")
        assert peak - before < 64 * 1024, f"peak RSS rose by {(peak - before) // 1024} MiB"
        assert loader.version == "v1"
        out = loader.run(None, {"input": -np.ones((2, 3), np.float32)})[0]
        assert out.tolist() == [[0.0] * 3] * 2
        code, body = get(loader.health_port)
        assert (code, body["status"], body["model_version"]) == (200, "degraded", "v1")
        assert body["last_error"] == (
            "v2: warm-up input 'input' of declared shape [1, 1073741824] (tensor(float)) needs "
            "4.0 GiB, above warmup_max_bytes=67108864 (64.0 MiB)"
        )


def test_warmup_bound_is_a_constructor_argument(tmp_path: Path) -> None:
    """warmup_max_bytes applies to the first version too: refused, nothing serves, 503."""
    base = tmp_path / "clf"
    version_dir(base, "v1", scale_model(tmp_path / "m1.onnx", 1.0, width=600))  # 2400 bytes in
    swap_link(base, "v1")
    with ModelLoader(base / "current", health_port=0, warmup_max_bytes=1000) as loader:
        code, body = get(loader.health_port)
        assert (code, body["status"]) == (503, "no_model")
        assert "needs 2.3 KiB, above warmup_max_bytes=1000" in body["last_error"]
    with ModelLoader(base / "current", warmup_max_bytes=2400) as loader:
        assert loader.version == "v1"


# -- 4. the health server -----------------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    base = tmp_path / "clf"
    version_dir(base, "v1", scale_model(tmp_path / "m1.onnx", 1.0))
    swap_link(base, "v1")
    return base


def test_five_hundred_slow_clients_hold_no_thread_and_health_still_answers(root: Path) -> None:
    """500 clients that connect and send nothing or half a request: not one more thread,
    and a normal client is answered within a second while they are all still connected."""
    with ModelLoader(root / "current", health_port=0, poll_interval_s=0.05) as loader:
        threads = threading.active_count()
        slow: list[socket.socket] = []
        try:
            for i in range(500):
                s = socket.create_connection(("127.0.0.1", loader.health_port), timeout=5)
                if i % 2:
                    s.sendall(b"GET /heal")
                slow.append(s)
            time.sleep(0.5)
            assert threading.active_count() == threads
            started = time.monotonic()
            code, body = get(loader.health_port)
            assert time.monotonic() - started < 1.0
            assert (code, body["model_version"]) == (200, "v1")
            assert threading.active_count() == threads
        finally:
            for s in slow:
                s.close()


def test_idle_clients_are_evicted_oldest_first_and_dropped_after_the_timeout() -> None:
    """At most max_clients connections are held (a new one evicts the oldest) and each is
    closed client_timeout_s after it was accepted."""
    server = HealthServer(
        "127.0.0.1",
        0,
        lambda: (200, {"ok": True}),
        lambda: "",
        max_clients=8,
        client_timeout_s=0.5,
    )
    server.start()
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=3) for _ in range(20)]
    try:
        time.sleep(0.2)
        for s in idle:
            s.setblocking(False)
        closed = []
        for s in idle:
            try:
                closed.append(s.recv(1) == b"")
            except BlockingIOError:
                closed.append(False)
        assert closed == [True] * 12 + [False] * 8  # the 12 oldest were evicted
        for s in idle[12:]:
            s.setblocking(True)
            s.settimeout(2)
            started = time.monotonic()
            assert s.recv(1) == b""  # dropped by the server at its deadline
            assert time.monotonic() - started < 0.6
        assert get(server.port) == (200, {"ok": True})
    finally:
        for s in idle:
            s.close()
        server.stop()


CHILD = """
import sys, time
from modelswap.loader import ModelLoader
loader = ModelLoader(sys.argv[1], health_port=0, poll_interval_s=0.05).start()
print(loader.health_port, flush=True)
sys.stdin.read()
loader.stop()
"""


def rst_close(s: socket.socket) -> None:
    """Close with a reset, as a client that crashed or gave up does."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def test_clients_that_vanish_mid_request_or_mid_response_print_nothing(tmp_path: Path) -> None:
    """The loader in a child process: clients reset mid-request, right after the request and
    in the middle of an 8 MB response; its stderr stays empty and /health still answers."""
    base = tmp_path / "clf"
    folder = version_dir(base, "v1", scale_model(tmp_path / "m1.onnx", 1.0))
    (folder / "metadata.json").write_text(json.dumps({"version": "v1", "notes": "x" * (8 << 20)}))
    swap_link(base, "v1")
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(base / "current")],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        for kind in ["half-request"] * 20 + ["after-request"] * 20 + ["mid-response"] * 10:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /heal" if kind == "half-request" else b"GET /health HTTP/1.1\r\n\r\n")
            if kind == "mid-response":
                assert s.recv(65536).startswith(b"HTTP/1.1 200 OK")
            rst_close(s)
        time.sleep(0.3)
        code, body = get(port)
        assert (code, body["model_version"], len(body["metadata"]["notes"])) == (200, "v1", 8 << 20)
        _, stderr = child.communicate("", timeout=20)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == 0
    assert stderr == ""


def test_health_port_in_use_names_it_and_leaves_no_thread_or_session(root: Path) -> None:
    """A taken health port fails start() at once, naming host:port with a hint; nothing was
    loaded (load() never called) and no thread is left behind, however often it is tried."""
    busy = socket.create_server(("127.0.0.1", 0))
    port = busy.getsockname()[1]
    calls: list[Path] = []

    def load(folder: Path) -> Any:
        calls.append(folder)
        return lambda x: x

    threads = threading.active_count()
    try:
        for _ in range(3):
            loader = ModelLoader(root / "current", health_port=port, load=load)
            with pytest.raises(HealthPortUnavailable) as err:
                loader.start()
            assert str(err.value) == f"/health cannot listen on 127.0.0.1:{port}: " + (
                "Address already in use"
            )
            assert "health_port=" in err.value.hint
    finally:
        busy.close()
    assert calls == []
    assert threading.active_count() == threads
    with ModelLoader(root / "current", health_port=port, load=load) as loader:  # port freed
        assert get(loader.health_port)[0] == 200
    assert len(calls) == 1
