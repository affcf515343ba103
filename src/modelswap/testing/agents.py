"""Run `modelswap agent` as a real child process and talk to its HTTP endpoints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any


class AgentProc:
    def __init__(
        self, registry: str, model: str, dest: Path, *extra: str, env: dict[str, str] | None = None
    ) -> None:
        args = [
            sys.executable,
            "-m",
            "modelswap",
            "agent",
            model,
            "--dest",
            str(dest),
            "--registry",
            registry,
            "--port",
            "0",
            *extra,
        ]
        self.events: list[dict[str, Any]] = []
        self.port: int | None = None
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, **(env or {})),
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "raw", "line": line.rstrip()}
            self.events.append(event)
            if event.get("event") == "agent.started":
                self.port = int(event["port"])

    def wait_started(self, timeout: float = 20) -> AgentProc:
        deadline = time.monotonic() + timeout
        while self.port is None:
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited {self.proc.returncode}: {self.events}")
            if time.monotonic() > deadline:
                raise AssertionError(f"agent did not start: {self.events}")
            time.sleep(0.02)
        return self

    def get(self, path: str) -> tuple[int, str]:
        try:
            url = f"http://127.0.0.1:{self.port}{path}"
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def status(self) -> dict[str, Any]:
        return json.loads(self.get("/status")[1])  # type: ignore[no-any-return]

    def metric(self, name: str) -> float:
        for line in self.get("/metrics")[1].splitlines():
            if line.startswith(f"modelswap_agent_{name} "):
                return float(line.split()[-1])
        raise AssertionError(f"no metric {name}")

    def refresh(self) -> None:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/refresh", method="POST")
        urllib.request.urlopen(req, timeout=5).close()  # noqa: S310 - a fixed http:// URL

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


class ControllerProc:
    """`modelswap rollout run` as a real child process; its output lines are collected as they
    come (`lines`), for tests and the rollout demo."""

    def __init__(
        self,
        registry: str,
        model: str,
        *extra: str,
        actor: str = "controller",
        interval: str = "0.3",
        env: dict[str, str] | None = None,
    ) -> None:
        args = [sys.executable, "-m", "modelswap", "rollout", "run", model, "--interval", interval]
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [*args, "--registry", registry, "--actor", actor, *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=dict(os.environ, **(env or {})),
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    def said(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)
