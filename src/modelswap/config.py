"""The one place that reads os.environ: every flag's default comes from MODELSWAP_<FLAG>."""

from __future__ import annotations

import argparse
import getpass
import os
import socket
from typing import Any

from modelswap.errors import UsageError

DEFAULT_REGISTRY = "./registry"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_name(flag: str) -> str:
    return "MODELSWAP_" + flag.lstrip("-").upper().replace("-", "_")


def env(flag: str) -> str | None:
    return os.environ.get(env_name(flag))


def add_flag(parser: argparse.ArgumentParser, flag: str, **kw: Any) -> None:
    """add_argument whose default comes from MODELSWAP_<FLAG>; the help names both."""
    raw = env(flag)
    action = kw.get("action")
    if raw is not None:
        if action == "store_true":
            value: Any = raw.strip().lower() in _TRUE
            if raw.strip().lower() not in _TRUE | _FALSE:
                raise UsageError(f"{env_name(flag)}={raw!r} is not a boolean", hint="use 1 or 0")
        elif action == "append":
            value = [v for v in raw.split(",") if v]
        else:
            value = raw
            conv = kw.get("type")
            if conv is not None:
                try:
                    value = conv(raw)
                except ValueError as e:
                    raise UsageError(
                        f"{env_name(flag)}={raw!r} is not a valid {flag}",
                        hint=f"see `modelswap --help` for what {flag} takes",
                    ) from e
        if kw.get("default") is not argparse.SUPPRESS:
            kw["default"] = value
    kw["help"] = f"{kw.get('help', '')} [env: {env_name(flag)}]".strip()
    parser.add_argument(flag, **kw)


def default_actor() -> str:
    user = os.environ.get("USER") or os.environ.get("LOGNAME")
    if not user:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "unknown"
    return f"{user}@{socket.gethostname()}"
