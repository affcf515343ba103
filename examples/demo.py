"""The main job (`make demo`): a model regression turned from a crisis into a pointer change.

Trains three real classifiers, publishes them, starts the sidecar agent and a model server
as real processes, sends steady traffic, promotes through the gate, forces a bad model in,
notices live accuracy drop, rolls back, and reports that no request failed.

    python -m examples.demo [--fast] [--registry URL | --s3-local] [--keep]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from examples.train import train

T0 = time.monotonic()
BOLD, DIM, RED, GREEN, RESET = (
    ("\033[1m", "\033[2m", "\033[31m", "\033[32m", "\033[0m") if sys.stdout.isatty() else ("",) * 5
)


def say(text: str) -> None:
    print(f"{DIM}[{time.monotonic() - T0:6.1f}s]{RESET} {text}", flush=True)


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - http://127.0.0.1 only
        return json.loads(r.read())


class Demo:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.work = args, work
        self.registry = args.registry or str(work / "registry")
        self.env = dict(os.environ, MODELSWAP_REGISTRY=self.registry, MODELSWAP_ACTOR="demo")
        self.procs: list[subprocess.Popen[bytes]] = []
        self.dest = work / "volume"
        self.agent_port, self.server_port, self.health_port = free_port(), free_port(), free_port()
        self.interval = "0.5" if args.fast else "1"

    # -- processes -------------------------------------------------------------------------

    def cli(self, *args: str, show: bool = True, ok: tuple[int, ...] = (0,)) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "modelswap", *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if show:
            print(f"    {BOLD}$ modelswap {shlex.join(args)}{RESET}")
            for line in (result.stdout + result.stderr).rstrip().splitlines():
                print(f"      {line}")
        if result.returncode not in ok:
            raise SystemExit(f"modelswap {args[0]} exited {result.returncode}")
        return result.stdout

    def spawn(self, name: str, *cmd: str) -> None:
        log = open(self.work / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
        self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=log, env=self.env))

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()

    # -- the story -------------------------------------------------------------------------

    def run(self) -> int:
        say(f"registry {self.registry}")
        acc = train(self.work / "trained")
        say(
            f"trained three digit classifiers: v1 {acc['v1']:.3f}, v2 {acc['v2']:.3f}, "
            f"v3 {acc['v3']:.3f} (v3 learned from 80% shuffled labels)"
        )
        evalset = str(self.work / "trained" / "eval.npz")
        notes = {
            "v1": "a third of the data, strong regularisation",
            "v2": "all the data",
            "v3": "experimental branch",
        }
        for v in ("v1", "v2"):
            self.cli(
                "publish",
                "digits",
                str(self.work / "trained" / v / "model.onnx"),
                "--version",
                v,
                "--metric",
                f"accuracy={acc[v]:.4f}",
                "--training-data",
                "sklearn digits, train split",
                "--notes",
                notes[v],
            )
        say("first release: v1, gated against an explicit floor")
        self.cli(
            "promote",
            "digits",
            "v1",
            "--eval-set",
            evalset,
            "--min",
            "0.85",
            "--reason",
            "first release",
        )

        self.spawn(
            "agent",
            sys.executable,
            "-m",
            "modelswap",
            "agent",
            "digits",
            "--dest",
            str(self.dest),
            "--interval",
            self.interval,
            "--port",
            str(self.agent_port),
            "--report",
            "--report-interval",
            "1",
            "--instance-id",
            "demo-pod-1",
        )
        self.spawn(
            "server",
            sys.executable,
            "examples/server.py",
            "--link",
            str(self.dest / "digits" / "current"),
            "--port",
            str(self.server_port),
            "--health-port",
            str(self.health_port),
        )
        self.wait(lambda: self.health().get("model_version") == "v1", 30, "server serving v1")
        # The loader's /health answers once the model is loaded, a moment before the app's own
        # port is bound: traffic starts when that port takes connections too.
        self.wait(lambda: accepts(self.server_port), 30, "server accepting connections")
        say(f"agent (:{self.agent_port}) linked v1; server (:{self.server_port}) serves it")
        traffic = Traffic(self.server_port, self.work / "trained" / "eval.npz", self.args.fast)
        traffic.start()
        time.sleep(1.5 if self.args.fast else 3)
        say(f"steady traffic: {traffic.summary()}")

        swaps = {}
        say("promote v2 through the gate")
        swaps["v1 -> v2 (gated promote)"] = self.move(
            traffic,
            "v2",
            "promote",
            "digits",
            "v2",
            "--eval-set",
            evalset,
            "--reason",
            "trained on all the data",
        )
        self.cli("status", "digits")

        v3 = str(self.work / "trained" / "v3" / "model.onnx")
        self.cli(
            "publish",
            "digits",
            v3,
            "--version",
            "v3",
            "--metric",
            f"accuracy={acc['v3']:.4f}",
            "--notes",
            notes["v3"],
        )
        say("the gate refuses v3")
        self.cli("gate", "digits", "v3", "--eval-set", evalset, ok=(1,))
        say(f"{RED}a bad deploy: v3 forced past the gate{RESET}")
        swaps["v2 -> v3 (forced)"] = self.move(
            traffic,
            "v3",
            "promote",
            "digits",
            "v3",
            "--eval-set",
            evalset,
            "--force",
            "--reason",
            "hotfix from a branch, skipping the gate",
        )
        time.sleep(1.5 if self.args.fast else 3)
        live_v2, live_v3 = traffic.accuracy("v2"), traffic.accuracy("v3")
        say(f"{RED}ALERT: live accuracy fell from {live_v2:.3f} (v2) to {live_v3:.3f} (v3){RESET}")
        say("roll back: one pointer move")
        swaps["v3 -> v2 (rollback)"] = self.move(
            traffic, "v2", "rollback", "digits", "--reason", f"live accuracy {live_v3:.2f}"
        )
        time.sleep(1)
        traffic.stop()
        say("what the registry, the fleet and the server say now")
        self.cli("history", "digits")
        self.cli("status", "digits")
        health = self.health()
        print(
            f"    GET /health -> status={health['status']} model_version={health['model_version']} "
            f"swaps={health['swaps']} loaded_at={health['loaded_at']}"
        )
        return self.report(traffic, swaps)

    def move(self, traffic: Traffic, target: str, *args: str) -> float:
        started = time.monotonic()
        self.cli(*args)
        self.wait(lambda: traffic.last_version == target, 30, f"traffic served by {target}")
        first = traffic.first_served_after(target, started)
        took = (first or time.monotonic()) - started
        say(
            f"{GREEN}{target} is live: first request answered by {target} {took:.2f}s after the "
            f"command started{RESET}"
        )
        return took

    def health(self) -> dict[str, Any]:
        try:
            return dict(get_json(f"http://127.0.0.1:{self.health_port}/health"))
        except (OSError, ValueError):
            return {}

    def wait(self, pred: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            for p in self.procs:
                if p.poll() is not None:
                    raise SystemExit(f"a demo process exited early; see {self.work}/*.log")
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out waiting for {what}; logs in {self.work}")
            time.sleep(0.02)

    def report(self, traffic: Traffic, swaps: dict[str, float]) -> int:
        print()
        say(f"{BOLD}summary{RESET}")
        print(f"    requests sent: {traffic.sent}, failed: {traffic.failed}")
        print(f"    served by version: {traffic.by_version()}")
        for name, seconds in swaps.items():
            print(f"    {name:<26} live in {seconds:.2f}s (command start -> first answer)")
        verdict = (
            f"{GREEN}no request failed during any swap{RESET}"
            if traffic.failed == 0
            else f"{RED}{traffic.failed} requests failed{RESET} (first: {traffic.errors[0]})"
        )
        print(f"    {verdict}")
        return 0 if traffic.failed == 0 else 1


class Traffic(threading.Thread):
    """Steady POST /predict traffic with known labels, so live accuracy is measurable."""

    def __init__(self, port: int, evalset: Path, fast: bool) -> None:
        super().__init__(daemon=True)
        data = np.load(evalset)
        self.x, self.y = data["X"], data["y"]
        self.port, self.period = port, 1 / (40 if fast else 60)
        self.records: list[tuple[float, str, int, int]] = []  # (time, version, correct, n)
        self.sent = self.failed = 0
        self.errors: list[str] = []
        self.last_version = ""
        self._stop_event = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        rng = np.random.default_rng(0)
        next_at = time.monotonic()
        while not self._stop_event.is_set():
            next_at += self.period
            idx = rng.integers(0, len(self.y), 8)
            body = json.dumps({"inputs": self.x[idx].tolist()})
            self.sent += 1
            try:
                conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                payload = json.loads(resp.read())
                if resp.status != 200:
                    raise OSError(payload.get("error"))
                correct = int(np.sum(np.asarray(payload["predictions"]) == self.y[idx]))
                self.records.append((time.monotonic(), payload["version"], correct, len(idx)))
                self.last_version = payload["version"]
            except (OSError, ValueError, http.client.HTTPException) as e:
                self.failed += 1
                self.errors.append(f"{type(e).__name__}: {e}")  # said in the summary
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            time.sleep(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def first_served_after(self, version: str, t: float) -> float | None:
        return next((at for at, v, _, _ in self.records if at >= t and v == version), None)

    def accuracy(self, version: str) -> float:
        rows = [(c, n) for _, v, c, n in self.records if v == version]
        return sum(c for c, _ in rows) / max(1, sum(n for _, n in rows))

    def by_version(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, v, _, _ in self.records:
            counts[v] = counts.get(v, 0) + 1
        return counts

    def summary(self) -> str:
        return (
            f"{len(self.records)} answered, {self.failed} failed, live accuracy "
            f"{self.accuracy(self.last_version):.3f} on {self.last_version}"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--fast", action="store_true", help="shorter waits (used by the test suite)")
    ap.add_argument("--registry", help="registry URL (default: a fresh local folder)")
    ap.add_argument(
        "--s3-local",
        action="store_true",
        help="start the test suite's SeaweedFS on 127.0.0.1 and use it as the registry",
    )
    ap.add_argument("--keep", action="store_true", help="keep the work folder for a look around")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="modelswap-demo-"))
    server = None
    if args.s3_local:
        from modelswap.testing import seaweed  # noqa: PLC0415 - only this mode needs the test server

        server = seaweed.start(work / "seaweed")
        os.environ.update(server.env())
        import boto3  # noqa: PLC0415

        boto3.client("s3").create_bucket(Bucket="demo")
        args.registry = "s3://demo/models"
        env = server.env()  # a throwaway key for this loopback server, printed on purpose
        say(
            f"SeaweedFS on {server.endpoint}; to re-run the demo's commands by hand meanwhile:\n"
            f"  export AWS_ENDPOINT_URL={env['AWS_ENDPOINT_URL']} "
            f"AWS_ACCESS_KEY_ID={env['AWS_ACCESS_KEY_ID']} "
            f"AWS_SECRET_ACCESS_KEY={env['AWS_SECRET_ACCESS_KEY']} "
            f"AWS_DEFAULT_REGION={env['AWS_DEFAULT_REGION']} MODELSWAP_REGISTRY={args.registry}"
        )
    demo = Demo(args, work)
    try:
        return demo.run()
    except KeyboardInterrupt:
        say("interrupted: stopping the agent and the server")
        return 130
    finally:
        demo.stop_all()
        if server is not None:
            server.stop()
        if args.keep:
            say(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
