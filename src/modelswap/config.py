"""The one place that reads os.environ: every flag's default comes from MODELSWAP_<FLAG>."""

from __future__ import annotations

import argparse
import getpass
import os
import re
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


# Environment variables whose values are secrets: masked wherever they would be shown.
_SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|SESSION|(?<!_ID)_KEY$")


def secret_values() -> list[str]:
    """The values of this process's secret-looking variables (AWS_SECRET_ACCESS_KEY, ...)."""
    return [v for k, v in os.environ.items() if _SECRET_NAME.search(k.upper()) and v]


def hook_environment(extra: dict[str, str]) -> dict[str, str]:
    """What an on-swap command gets: PATH and the documented MODELSWAP_* hook variables,
    never the agent's own credentials."""
    return {"PATH": os.environ.get("PATH", os.defpath), **extra}


def secret_file(path: str, flag: str) -> str:
    """A secret read from a file (a mounted Kubernetes Secret), so it never rides on argv."""
    try:
        with open(path, encoding="utf-8") as f:
            value = f.read().strip()
    except OSError as e:
        raise UsageError(
            f"cannot read {flag} {path}: {e.strerror}",
            hint="mount the file (a Kubernetes Secret) or unset the flag",
        ) from e
    if not value:
        raise UsageError(f"{flag} {path} is empty", hint="write the value into the file")
    return value


def refresh_token(path: str | None) -> str | None:
    """POST /refresh's bearer token: from --refresh-token-file, else MODELSWAP_REFRESH_TOKEN."""
    if path:
        return secret_file(path, "--refresh-token-file")
    return os.environ.get("MODELSWAP_REFRESH_TOKEN") or None


def on_swap_url_from_file(path: str) -> str:
    return secret_file(path, "--on-swap-url-file")


def default_actor() -> str:
    user = os.environ.get("USER") or os.environ.get("LOGNAME")
    if not user:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "unknown"
    return f"{user}@{socket.gethostname()}"
