"""The command line itself: every verb, its flags, and the MODELSWAP_* variable of each."""

from __future__ import annotations

import argparse
import dataclasses
import socket
from collections.abc import Callable

from modelswap import __version__
from modelswap.agent.config import AgentConfig
from modelswap.api import (
    DEFAULT_POINTER,
    DEFAULT_TOLERANCE,
    GC_KEEP,
    STALE_AFTER_S,
    STORE_TIMEOUT_S,
)
from modelswap.cli.common import _Parser
from modelswap.cli.fleet import cmd_agent, cmd_status
from modelswap.cli.moves import cmd_gate, cmd_history, cmd_promote, cmd_rollback
from modelswap.cli.rollouts import add_parser as rollout_commands
from modelswap.cli.versions import (
    cmd_diff,
    cmd_download,
    cmd_gc,
    cmd_publish,
    cmd_show,
    cmd_verify,
    cmd_versions,
)
from modelswap.config import (
    DEFAULT_REGISTRY,
    UI_HOST,
    UI_PORT,
    add_flag,
    default_actor,
    env,
)

Command = Callable[[str, Callable[[argparse.Namespace], int], str], _Parser]
# The agent's flags default to AgentConfig's fields: one source for the CLI, the chart's
# docs and anyone building an AgentConfig in Python.
AGENT = {f.name: f.default for f in dataclasses.fields(AgentConfig)}


def build_parser() -> argparse.ArgumentParser:
    # The shared flags go on the top parser and on every command, so they may stand before or
    # after the command name; on commands they default to SUPPRESS so a flag given before the
    # command is not reset by the command's own default.
    top, common = _Parser(add_help=False), _Parser(add_help=False)
    for p, default_registry, default_actor_ in (
        (top, DEFAULT_REGISTRY, default_actor()),
        (common, argparse.SUPPRESS, argparse.SUPPRESS),
    ):
        add_flag(
            p,
            "--registry",
            default=default_registry,
            help="s3://bucket/prefix, file:///path or a folder",
        )
        add_flag(p, "--actor", default=default_actor_, help="who is acting, for the event log")
        add_flag(
            p,
            "--quiet",
            action="store_true",
            default=False if p is top else argparse.SUPPRESS,
            help="no progress lines (they are only shown on a terminal anyway)",
        )
        add_flag(
            p,
            "--store-timeout",
            type=float,
            default=STORE_TIMEOUT_S if p is top else argparse.SUPPRESS,
            help="seconds a network store may stay silent before a request fails",
        )
    parser = _Parser(prog="modelswap", description=__doc__, parents=[top])
    parser.add_argument("--version", action="version", version=f"modelswap {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name: str, fn: Callable[[argparse.Namespace], int], help: str) -> _Parser:
        p: _Parser = sub.add_parser(name, help=help, description=help, parents=[common])
        p.set_defaults(fn=fn)
        return p

    p = command("publish", cmd_publish, "upload a new immutable version; prints its name")
    p.add_argument("model")
    p.add_argument("files", nargs="+", metavar="FILE", help="files or folders to store")
    add_flag(
        p,
        "--version",
        env_var="MODELSWAP_PUBLISH_VERSION",  # MODELSWAP_VERSION is what hooks are told
        help="version name (default: the next vN)",
    )
    add_flag(p, "--training-data", help="where the training data came from")
    add_flag(p, "--notes", help="free text")
    add_flag(
        p,
        "--metric",
        env_var="MODELSWAP_PUBLISH_METRIC",  # the gate's --metric is NAME:max|min
        action="append",
        default=[],
        help="K=V, a number (repeatable)",
    )
    add_flag(p, "--meta", action="append", default=[], help="K=V, kept in metadata.json")
    add_flag(p, "--git-sha", help="commit to record (default: HEAD of the work tree, if any)")
    add_flag(
        p,
        "--sign-key",
        help="elliptic-curve private key (PEM): sign the version (model.sig, OpenSSF model "
        "signing); an encrypted key reads MODELSWAP_SIGN_KEY_PASSWORD",
    )

    for name, fn, what in (
        ("versions", cmd_versions, "list versions with pointers"),
        ("history", cmd_history, "the event log of pointer moves"),
    ):
        p = command(name, fn, what)
        p.add_argument("model")
        add_flag(p, "--json", action="store_true", help="stable JSON for scripts")

    p = command("show", cmd_show, "one version's metadata (default: the one CURRENT names)")
    p.add_argument("model")
    p.add_argument("version", nargs="?")
    add_flag(p, "--json", action="store_true", help="print metadata.json as stored")

    p = command("diff", cmd_diff, "what changed between two versions")
    p.add_argument("model")
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    add_flag(p, "--json", action="store_true", help="the changes as JSON: metadata, metrics, files")

    _add_move_commands(command)

    p = command("rollback", cmd_rollback, "move a pointer back to the version live before")
    p.add_argument("model")
    add_flag(p, "--to", help="version to go back to (default: the previous one, by the log)")
    add_flag(p, "--pointer", default=DEFAULT_POINTER, help="pointer to move")
    add_flag(p, "--reason", help="why, for the event log")

    _add_copy_commands(command)
    _add_gc_command(command)
    _add_fleet_commands(command)
    rollout_commands(sub, common)
    p = command("ui", _cmd_ui, "serve a read-only dashboard of the registry")
    add_flag(p, "--host", env_var="MODELSWAP_UI_HOST", default=UI_HOST, help="address to bind")
    add_flag(
        p,
        "--port",
        env_var="MODELSWAP_UI_PORT",
        type=int,
        default=UI_PORT,
        help="port to bind (0: any free one)",
    )
    return parser


def _cmd_ui(args: argparse.Namespace) -> int:
    """The UI's server (asyncio, aiohttp, jinja2) is imported only by `modelswap ui`."""
    from modelswap.cli.ui import cmd_ui  # noqa: PLC0415

    return cmd_ui(args)


def _add_trust_key(p: _Parser) -> None:
    add_flag(
        p,
        "--trust-key",
        action="append",
        default=[],
        help="public key (PEM) or folder of keys; only versions one of them signed pass "
        "(repeatable)",
    )


def _add_copy_commands(command: Command) -> None:
    p = command("download", cmd_download, "a verified copy of a version in a new folder")
    p.add_argument("model")
    p.add_argument("version", metavar="VERSION|POINTER", help="e.g. v3 or CURRENT")
    p.add_argument("dest", metavar="DEST", help="folder to create (must not exist)")
    _add_trust_key(p)

    p = command("verify", cmd_verify, "re-read stored files and check size and sha256")
    p.add_argument("model")
    p.add_argument("version", nargs="?", help="default: every version")
    _add_trust_key(p)
    add_flag(p, "--json", action="store_true", help="problems and signer per version as JSON")


def _add_gc_command(command: Command) -> None:
    p = command("gc", cmd_gc, "delete old versions no pointer or recent event names")
    p.add_argument("model")
    add_flag(
        p,
        "--keep",
        env_var="MODELSWAP_GC_KEEP",  # the agent's --keep (MODELSWAP_KEEP) counts local copies
        type=int,
        required=False,
        default=GC_KEEP,
        help="keep this many newest versions and the versions of the last N events",
    )
    add_flag(p, "--dry-run", action="store_true", help="only say what would be deleted")
    add_flag(p, "--json", action="store_true", help="deleted, partial and kept as JSON")


def _add_gate_flags(p: _Parser) -> None:
    add_flag(p, "--eval-set", help="fixed evaluation set (.npz with X and y for the built-in)")
    add_flag(
        p,
        "--metric",
        env_var="MODELSWAP_GATE_METRIC",  # publish's --metric is K=V
        help="NAME or NAME:max|min (default accuracy:max)",
    )
    add_flag(p, "--tolerance", type=float, help=f"allowed loss (default {DEFAULT_TOLERANCE})")
    add_flag(p, "--evaluator", help="module:function(model_dir, eval_set) -> {metric: value}")
    add_flag(p, "--min", type=float, help="bound the candidate must meet (first promotion)")


def _add_move_commands(command: Command) -> None:
    p = command("promote", cmd_promote, "move a pointer to a version (compare-and-swap)")
    p.add_argument("model")
    p.add_argument("version")
    add_flag(p, "--pointer", default=DEFAULT_POINTER, help="pointer to move")
    add_flag(p, "--reason", help="why, for the event log")
    add_flag(p, "--expect", help="refuse unless the pointer names this version now")
    _add_gate_flags(p)
    add_flag(
        p, "--force", action="store_true", help="move even if the gate refuses (needs --reason)"
    )
    add_flag(
        p,
        "--verify",
        action="store_true",
        help="re-hash every stored file first (stored sizes are always checked)",
    )
    add_flag(
        p,
        "--require-gate",
        action="store_true",
        help="refuse an ungated promote of CURRENT (set it in CI's environment)",
    )

    p = command("gate", cmd_gate, "evaluate candidate and current on one eval set; exit 1 if worse")
    p.add_argument("model")
    p.add_argument("version", metavar="CANDIDATE")
    _add_gate_flags(p)
    add_flag(p, "--against", help="version to compare with (default: the one CURRENT names)")
    add_flag(p, "--json", action="store_true", help="the gate result as JSON")


def _add_fleet_commands(command: Command) -> None:
    p = command("status", cmd_status, "the fleet: which instance serves which version")
    p.add_argument("model")
    add_flag(p, "--pointer", default=DEFAULT_POINTER, help="pointer the fleet follows")
    add_flag(
        p,
        "--stale-after",
        type=float,
        default=STALE_AFTER_S,
        help="seconds without a heartbeat before an instance counts as stale",
    )
    add_flag(p, "--json", action="store_true", help="stable JSON for scripts")
    add_flag(
        p,
        "--check",
        action="store_true",
        help="exit 1 unless the fleet is converged (for scripts and CI)",
    )

    p = command("agent", cmd_agent, "run the sidecar: follow a pointer into a local link")
    p.add_argument("model")
    add_flag(
        p, "--dest", required=env("--dest") is None, help="shared volume for versions and the link"
    )
    add_flag(p, "--pointer", default=AGENT["pointer"], help="pointer to follow")
    add_flag(p, "--interval", type=float, default=AGENT["interval_s"], help="seconds between polls")
    add_flag(
        p,
        "--jitter",
        type=float,
        default=AGENT["jitter"],
        help="fraction of random spread per poll",
    )
    add_flag(
        p,
        "--keep",
        type=int,
        default=AGENT["keep"],
        help="local versions to keep, the linked one included",
    )
    add_flag(p, "--once", action="store_true", help="sync once and exit (init containers)")
    add_flag(p, "--host", default=AGENT["host"], help="address of the HTTP endpoints")
    add_flag(
        p,
        "--port",
        type=int,
        default=AGENT["port"],
        help="port of the HTTP endpoints (0: any free)",
    )
    add_flag(p, "--instance-id", default=socket.gethostname(), help="name in fleet reports")
    add_flag(p, "--report", action="store_true", help="write fleet reports to the registry")
    add_flag(
        p,
        "--report-interval",
        type=float,
        default=AGENT["report_interval_s"],
        help="seconds between heartbeats",
    )
    add_flag(
        p, "--max-backoff", type=float, help="cap of the retry delay (default max(60, interval))"
    )
    add_flag(p, "--on-swap-command", help="run after every swap (env: MODELSWAP_VERSION, ...)")
    add_flag(p, "--on-swap-url", help="POST {model, version, previous_version, path} after a swap")
    add_flag(
        p,
        "--on-swap-url-file",
        help="file holding the --on-swap-url (a mounted Secret); keeps credentials off argv",
    )
    add_flag(
        p,
        "--scrub-interval",
        type=float,
        default=AGENT["scrub_interval_s"],
        help="seconds between full re-hashes of the linked copy (stat checks run every poll)",
    )
    add_flag(
        p,
        "--refresh-min-interval",
        type=float,
        default=AGENT["refresh_min_interval_s"],
        help="seconds between two polls asked for by POST /refresh or SIGHUP",
    )
    add_flag(
        p,
        "--refresh-token-file",
        help="file with the bearer token POST /refresh needs from non-loopback peers "
        "(else MODELSWAP_REFRESH_TOKEN; without either, only loopback may refresh)",
    )
    _add_trust_key(p)
    add_flag(
        p,
        "--loader-url",
        help="the app's loader /health: a version it refuses to load is reported as refused "
        "(a rollout rolls it back)",
    )
    add_flag(
        p,
        "--metrics-url",
        help="the app's /metrics (modelswap_requests_total, ...): per-version request counts, "
        "errors and latency go into the fleet report for a rollout's judge",
    )
    add_flag(
        p,
        "--reload",
        action="append",
        default=[],
        help="KIND=URL (mlserver, triton, torchserve): after each swap ask that server to load "
        "the linked version and check it serves it; a refusal is reported (repeatable)",
    )
    add_flag(p, "--server-model", help="the model's name on the --reload servers (default: MODEL)")
    add_flag(
        p,
        "--reload-timeout",
        type=float,
        default=AGENT["reload_timeout_s"],
        help="seconds a --reload server may take to load a version",
    )
    add_flag(
        p,
        "--tfserving-dir",
        help="also keep DIR/MODEL/<n> -> the linked version, n growing with every swap "
        "(TensorFlow Serving, Triton)",
    )
    add_flag(
        p,
        "--tfserving-grace",
        type=float,
        default=AGENT["tfserving_grace_s"],
        help="seconds a superseded --tfserving-dir number stays for the server to move off it",
    )
    add_flag(
        p,
        "--min-rate",
        type=int,
        default=AGENT["min_rate_bps"],
        help="bytes/s below which a download is abandoned and retried (over 2 x --store-timeout)",
    )
