"""The one place that reads os.environ: every flag's default comes from MODELSWAP_<FLAG>."""

from __future__ import annotations

import argparse
import getpass
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from modelswap.errors import UsageError

DEFAULT_REGISTRY = "./registry"
# `modelswap ui`'s defaults, here so the CLI need not import the UI's server for them
UI_HOST = "127.0.0.1"
UI_PORT = 9100
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_name(flag: str) -> str:
    return "MODELSWAP_" + flag.lstrip("-").upper().replace("-", "_")


def env(flag: str) -> str | None:
    return os.environ.get(env_name(flag))


@dataclass(frozen=True)
class FromEnv:
    """A flag's default taken from a variable, converted only if the command being run has
    that flag: a bad MODELSWAP_PORT must not break `modelswap versions`."""

    name: str
    raw: str
    flag: str
    boolean: bool = False
    conv: Callable[[str], Any] | None = None

    def value(self) -> Any:
        if self.boolean:
            word = self.raw.strip().lower()
            if word not in _TRUE | _FALSE:
                raise UsageError(f"{self.name}={self.raw!r} is not a boolean", hint="use 1 or 0")
            return word in _TRUE
        if self.conv is None:
            return self.raw
        try:
            return self.conv(self.raw)
        except ValueError as e:
            raise UsageError(
                f"{self.name}={self.raw!r} is not a valid {self.flag}",
                hint=f"unset {self.name} or see `modelswap COMMAND --help` for what {self.flag} "
                "takes",
            ) from e

    def __str__(self) -> str:
        return f"{self.raw} from {self.name}"


def add_flag(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    flag: str,
    *,
    env_var: str | None = None,
    **kw: Any,
) -> None:
    """add_argument whose default comes from a MODELSWAP_ variable (MODELSWAP_<FLAG> unless
    env_var names another, for flags whose name means two things in two commands); the help
    names the variable and the default."""
    name = env_var or env_name(flag)
    raw = os.environ.get(name)
    action = kw.get("action")
    default = kw.get("default")
    if raw is not None and default is not argparse.SUPPRESS:
        if action == "append":  # a list cannot fail to parse: split it now
            kw["default"] = [v for v in raw.split(",") if v]
        else:
            kw["default"] = FromEnv(name, raw, flag, action == "store_true", kw.get("type"))
    shown = "" if default in (None, False, [], argparse.SUPPRESS) else f" (default: {default})"
    kw["help"] = f"{kw.get('help', '')}{shown} [env: {name}]".strip()
    parser.add_argument(flag, **kw)


def resolve_env(args: argparse.Namespace) -> argparse.Namespace:
    """Convert the env-given defaults of the command being run (errors name the variable)."""
    for key, value in vars(args).items():
        if isinstance(value, FromEnv):
            setattr(args, key, value.value())
    return args


# Variables that meant two things and are no longer read by some commands: command -> what it
# reads now. MODELSWAP_METRIC was K=V to publish and NAME:max to the gate, so a value left in
# CI's environment would now be ignored and the gate would silently use its default: an error.
# MODELSWAP_KEEP (the agent's --keep) and MODELSWAP_VERSION (what on-swap hooks are told) still
# mean something elsewhere, so a command that no longer reads them only says so.
RETIRED: dict[str, tuple[bool, dict[str, str]]] = {
    "MODELSWAP_METRIC": (
        True,
        {
            "publish": "MODELSWAP_PUBLISH_METRIC (K=V)",
            "gate": "MODELSWAP_GATE_METRIC (NAME or NAME:max|min)",
            "promote": "MODELSWAP_GATE_METRIC (NAME or NAME:max|min)",
        },
    ),
    "MODELSWAP_KEEP": (False, {"gc": "MODELSWAP_GC_KEEP"}),
    "MODELSWAP_VERSION": (False, {"publish": "MODELSWAP_PUBLISH_VERSION"}),
}


def retired_variables(command: str) -> tuple[list[UsageError], list[UsageError]]:
    """(errors, warnings) for set variables that `command` no longer reads."""
    errors: list[UsageError] = []
    warnings: list[UsageError] = []
    for name, (fatal, readers) in RETIRED.items():
        now = readers.get(command)
        if now is None or not os.environ.get(name):
            continue
        problem = UsageError(
            f"{command} does not read {name}; it reads {now.split()[0]}",
            hint=f"rename it {now}, or unset {name}",
        )
        (errors if fatal else warnings).append(problem)
    return errors, warnings


# Environment variables whose values are secrets: masked wherever they would be shown.
_SECRET_NAME = re.compile(
    r"SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|SESSION|CONNECTION_STRING"
    r"|(?<!_ID)(?<!_SIGN)(?<!_TRUST)_KEY$"  # --sign-key and --trust-key take paths, not keys
)
# The secret parts of an Azure connection string, masked on their own too.
_SECRET_PARTS = re.compile(r"(?:AccountKey|SharedAccessSignature)=([^;]+)", re.IGNORECASE)


def secret_values() -> list[str]:
    """The values of this process's secret-looking variables (AWS_SECRET_ACCESS_KEY,
    AZURE_STORAGE_CONNECTION_STRING and the key inside it, ...)."""
    found = [v for k, v in os.environ.items() if _SECRET_NAME.search(k.upper()) and v]
    return found + [m.group(1) for v in found for m in _SECRET_PARTS.finditer(v)]


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
