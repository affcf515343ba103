"""Tell a server that does not use the loader about a swap: a command, a webhook, or both.

A hook that fails is logged and counted, never retried and never undoes the swap: the link
already names the new version, and the next swap calls the hooks again.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from modelswap.config import hook_environment
from modelswap.redact import redact

HOOK_TIMEOUT_S = 30


@dataclass(frozen=True)
class SwapHooks:
    command: str | None = None
    url: str | None = None

    def run(self, model: str, version: str, previous: str | None, link: Path) -> list[str]:
        """Call every configured hook; returns the errors (empty when all succeeded)."""
        errors = []
        if self.command:
            env = hook_environment(
                {
                    "MODELSWAP_MODEL": model,
                    "MODELSWAP_VERSION": version,
                    "MODELSWAP_PREVIOUS_VERSION": previous or "",
                    "MODELSWAP_PATH": str(link),
                }
            )
            try:
                done = subprocess.run(
                    shlex.split(self.command),
                    env=env,
                    capture_output=True,
                    timeout=HOOK_TIMEOUT_S,
                    check=False,
                )
                if done.returncode != 0:
                    tail = redact(done.stderr.decode(errors="replace").strip())[-200:]
                    errors.append(f"--on-swap-command exited {done.returncode}: {tail}")
            except (OSError, subprocess.TimeoutExpired) as e:
                errors.append(f"--on-swap-command failed: {e}")
        if self.url:
            body = json.dumps(
                {
                    "model": model,
                    "version": version,
                    "previous_version": previous,
                    "path": str(link),
                }
            ).encode()
            # The scheme is checked to be http(s) by AgentConfig.validate().
            req = urllib.request.Request(  # noqa: S310
                self.url, data=body, method="POST", headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(req, timeout=HOOK_TIMEOUT_S):  # noqa: S310
                    pass
            except (OSError, urllib.error.URLError) as e:
                errors.append(redact(f"--on-swap-url {self.url} failed: {e}"))
        return errors
