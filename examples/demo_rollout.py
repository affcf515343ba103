"""The rollout act (`make demo-rollout`): ten pods, a controller, and no command typed after
each rollout starts.

Each pod is a real ModelLoader serving a digits classifier to steady traffic whose labels come
back afterwards (`loader.observe("accuracy", ...)`), beside a real sidecar agent that scrapes
the loader's /metrics into its fleet report. v2 (better) is rolled out 30% then 100% and
promoted by the controller on its live metrics; v3 loads fine and passes its checksum, but
learned from shuffled labels: the canary share serves it, its live accuracy falls, and the
controller rolls it back by itself; v4's stored bytes are damaged: the canary share refuses
them and the controller rolls it back too. Prints who was on which version when, from the
agents' own /status.

    python -m examples.demo_rollout [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from examples.train import train
from modelswap.testing.agents import ControllerProc

T0 = time.monotonic()
PODS = [f"pod-{i}" for i in range(10)]
# The judge, and a salt that puts three pods in the 30% share and three in its baseline
# cohort (a random one leaves a 30% share of ten pods empty 3% of the time, and it would wait).
JUDGE = (
    "--max-error-ratio", "2", "--max-p99-ratio", "3", "--metric", "accuracy:min:0.05",
    "--min-requests", "150", "--fail-checks", "2", "--salt", "demo-3",
)  # fmt: skip


def say(text: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {text}", flush=True)


class Act:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.registry = str(work / "registry")
        self.env = dict(os.environ, MODELSWAP_REGISTRY=self.registry, MODELSWAP_ACTOR="demo")
        self.procs: list[subprocess.Popen[str]] = []
        self.controller: ControllerProc | None = None
        self.ports: dict[str, int] = {}
        self.loaders: dict[str, int] = {}
        self.seen: dict[str, str | None] = {}
        self.refused: dict[str, str | None] = {}
        self.timeline: list[tuple[float, str, str | None, str | None, str]] = []

    def cli(self, *args: str) -> str:
        say("$ modelswap " + " ".join(args))
        r = subprocess.run(
            [sys.executable, "-m", "modelswap", *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        for line in (r.stdout + r.stderr).strip().splitlines():
            print(f"    {line}", flush=True)
        if r.returncode != 0:
            raise SystemExit(f"demo: `modelswap {' '.join(args)}` failed")
        return r.stdout

    def start_app(self, eval_set: Path) -> None:
        """Ten ModelLoaders in one process, each serving 40 requests/s once its link exists."""
        app = subprocess.Popen(
            [sys.executable, "-m", "modelswap.testing.traffic_app", str(self.work), *PODS,
             "--eval", str(eval_set), "--rate", "40"],
            env=self.env, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.procs.append(app)
        first = app.stdout.readline() if app.stdout else ""
        if not first:
            raise SystemExit("demo: the loaders' app did not start")
        self.loaders = json.loads(first)["ports"]
        say("ten pods' loaders serving /health and /metrics; traffic with labels coming back")

    def start_agents(self) -> None:
        for pod in PODS:
            loader = f"http://127.0.0.1:{self.loaders[pod]}"
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "modelswap",
                    "agent",
                    "clf",
                    "--dest",
                    str(self.work / pod),
                    "--instance-id",
                    pod,
                    "--report",
                    "--report-interval",
                    "0.5",
                    "--interval",
                    "0.5",
                    "--port",
                    "0",
                    "--loader-url",
                    f"{loader}/health",
                    "--metrics-url",
                    f"{loader}/metrics",
                ],
                env=self.env,
                stderr=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                text=True,
            )
            self.procs.append(proc)
            for line in proc.stderr or []:
                event = json.loads(line)
                if event.get("event") == "agent.started":
                    self.ports[pod] = int(event["port"])
                    break
        say(f"ten agents running ({', '.join(PODS)}), each with --report and --metrics-url")

    def status(self, pod: str) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.ports[pod]}/status"
        with urllib.request.urlopen(url, timeout=5) as r:
            body: dict[str, Any] = json.loads(r.read())
        return body

    def watch(self) -> None:
        """Record every change of what an agent serves (and why it follows what it does)."""
        for pod in PODS:
            s = self.status(pod)
            now = s["active_version"]
            t = time.monotonic() - T0
            if self.seen.get(pod, "unset") != now:
                self.timeline.append((t, pod, self.seen.get(pod), now, s["follows"] or ""))
                self.seen[pod] = now
            refused = s["refused_version"]
            if refused and self.refused.get(pod) != refused:
                why = f"({s['follows']}) REFUSED {refused}: {s['refusal']}"
                self.timeline.append((t, pod, now, now, why))
                self.refused[pod] = refused

    def rollout(self) -> dict[str, Any]:
        out = subprocess.run(
            [sys.executable, "-m", "modelswap", "rollout", "status", "clf", "--json"],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return dict(json.loads(out)["rollout"])

    def wait_for(self, state: str, timeout: float = 120) -> None:
        """Until the rollout is in `state` (and, promoted, done with the bake after it)."""
        deadline = time.monotonic() + timeout
        while (r := self.rollout())["state"] != state or r["watch_until"]:
            self.watch()
            if time.monotonic() > deadline:
                raise SystemExit(f"demo: the rollout did not become {state}")
            time.sleep(0.2)
        for _ in range(15):  # let the fleet settle, still recording
            self.watch()
            time.sleep(0.2)

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def first_rollout(act: Act, models: Path) -> ControllerProc:
    act.cli("publish", "clf", str(models / "v1" / "model.onnx"), "--quiet")
    act.cli("promote", "clf", "v1", "--reason", "first release")
    act.start_app(models / "eval.npz")
    act.start_agents()
    for pod in PODS:
        act.seen[pod] = None
    act.watch()
    while any(v != "v1" for v in act.seen.values()):
        time.sleep(0.2)
        act.watch()
    controller = act.controller = ControllerProc(act.registry, "clf", interval="0.5", env=act.env)
    say("the controller runs (`modelswap rollout run clf`); from here on nobody types")
    act.cli("publish", "clf", str(models / "v2" / "model.onnx"), "--quiet")
    act.cli("rollout", "start", "clf", "v2", "--steps", "30,100", "--bake", "2s", *JUDGE,
            "--reason", "more training data")  # fmt: skip
    act.wait_for("promoted")
    say("v2 promoted by the controller on its live metrics, and baked")
    return controller


def quiet_regression(act: Act, models: Path) -> None:
    """v3 is a valid model that loads and answers: only live traffic shows it is worse."""
    act.cli("publish", "clf", str(models / "v3" / "model.onnx"), "--quiet")
    say("v3: a valid model (checksum fine, loads, answers); it learned from shuffled labels")
    act.cli("rollout", "start", "clf", "v3", "--steps", "30,100", "--bake", "2s", *JUDGE)
    act.wait_for("rolled-back")
    verdict = act.rollout()["verdict"]
    (check,) = [c for c in verdict["checks"] if c["check"].startswith("accuracy")]
    say(
        f"v3 rolled back by live metrics, with no command typed: live accuracy "
        f"{check['canary_mean']:.2f} on v3 against {check['baseline_mean']:.2f} on v2 "
        f"({check['canary_n']} and {check['baseline_n']} labels, p={check['p_value']:.2g})"
    )
    act.cli("rollout", "status", "clf")  # the verdict and each check's evidence


def bad_rollout(act: Act, models: Path) -> None:
    act.cli("publish", "clf", str(models / "v1" / "model.onnx"), "--version", "v4", "--quiet")
    stored = Path(act.registry) / "clf" / "v4" / "model.onnx"
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size: bit rot, or tampering
    stored.chmod(0o644)
    stored.write_bytes(bytes(data))
    say("v4's stored model.onnx had one byte flipped after publish (same size)")
    act.cli("rollout", "start", "clf", "v4", "--steps", "30,100", "--bake", "2s", *JUDGE)
    act.wait_for("rolled-back")
    say("v4 rolled back and quarantined by the controller, with no command typed")
    act.cli("rollout", "status", "clf")
    act.cli("history", "clf")


def story(act: Act, controller: ControllerProc) -> bool:
    print("\nwho was on which version when (from each agent's /status):", flush=True)
    for t, pod, old, new, follows in act.timeline:
        if old == new:
            print(f"  {t:6.1f}s  {pod:6}  {follows}")
        else:
            print(f"  {t:6.1f}s  {pod:6}  {old or '-':>3} -> {new or '-':3}  ({follows})")
    on = sorted({v for v in act.seen.values() if v})
    print(
        f"\nnow every agent serves {', '.join(on)}; v3 was served by the canary share only, "
        "v4 by nobody"
    )
    refused = subprocess.run(
        [sys.executable, "-m", "modelswap", "promote", "clf", "v3"],
        env=act.env,
        capture_output=True,
        text=True,
        check=False,
    )
    print(f"`modelswap promote clf v3` now: {refused.stderr.strip().splitlines()[0]}")
    controller.stop()
    print("\nthe controller said:")
    for line in controller.lines:
        print(f"    {line}")
    return on == ["v2"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="modelswap-rollout-"))
    act = Act(work)
    try:
        train(work / "models")
        controller = first_rollout(act, work / "models")
        quiet_regression(act, work / "models")
        bad_rollout(act, work / "models")
        return 0 if story(act, controller) else 1
    finally:
        act.stop()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
