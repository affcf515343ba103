"""The rollout act (`make demo-rollout`): ten agents, a controller, and no command typed after
the rollout starts.

Publishes v1 and v2 (real classifiers) and a v3 whose stored bytes are then damaged, starts ten
sidecar agents and the rollout controller as real processes, rolls v2 out (30% then 100%: the
controller promotes it), then rolls v3 out at 30%: the canary share refuses the damaged bytes,
the controller rolls it back and quarantines it by itself. Prints who was on which version
when, from the agents' own /status.

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

    def start_agents(self) -> None:
        for pod in PODS:
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
        say(f"ten agents running ({', '.join(PODS)}), each with --report")

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

    def rollout_state(self) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "modelswap", "rollout", "status", "clf", "--json"],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return str(json.loads(out)["rollout"]["state"])

    def wait_for(self, state: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while self.rollout_state() != state:
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
    act.cli("rollout", "start", "clf", "v2", "--steps", "30,100", "--bake", "2s",
            "--reason", "more training data")  # fmt: skip
    act.wait_for("promoted")
    say("v2 promoted by the controller")
    return controller


def bad_rollout(act: Act, models: Path) -> None:
    act.cli("publish", "clf", str(models / "v3" / "model.onnx"), "--quiet")
    stored = Path(act.registry) / "clf" / "v3" / "model.onnx"
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size: bit rot, or tampering
    stored.chmod(0o644)
    stored.write_bytes(bytes(data))
    say("v3's stored model.onnx had one byte flipped after publish (same size)")
    act.cli("rollout", "start", "clf", "v3", "--steps", "30,100", "--bake", "2s")
    act.wait_for("rolled-back")
    say("v3 rolled back and quarantined by the controller, with no command typed")
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
    print(f"\nnow every agent serves {', '.join(on)}; v3 was never served by anyone")
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
