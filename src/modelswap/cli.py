"""`modelswap`: the registry verbs. Errors print `error:` and `hint:` and exit non-zero."""

from __future__ import annotations

import argparse
import json
import math
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from modelswap import __version__, api, redact, render
from modelswap.cleanup import collect_garbage
from modelswap.config import (
    DEFAULT_REGISTRY,
    add_flag,
    default_actor,
    env,
    on_swap_url_from_file,
    refresh_token,
    resolve_env,
    secret_values,
)
from modelswap.errors import (
    GateRefused,
    InvalidMetadata,
    InvalidPointer,
    ModelswapError,
    UsageError,
)
from modelswap.gate import (
    DEFAULT_TOLERANCE,
    GateResult,
    GateSpec,
    parse_metric,
    run_gate,
)
from modelswap.gitinfo import head_sha
from modelswap.metadata import Metadata
from modelswap.names import POINTER_RE, check_model, check_pointer_name, check_version
from modelswap.pointers import (
    DEFAULT_POINTER,
    history,
    list_pointers,
    require_pointer,
)
from modelswap.progress import Progress
from modelswap.registry import METADATA_KEYS, PublishRequest, Registry, collect_files
from modelswap.store import StoreOptions, open_store
from modelswap.store.local import LocalStore


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message, hint=f"see `{self.prog} --help`")


def _store_options(args: argparse.Namespace) -> StoreOptions:
    options = StoreOptions(read_timeout_s=args.store_timeout)
    problems = options.validate()
    if problems:
        raise UsageError(problems[0], hint="e.g. --store-timeout 5")
    return options


def _registry(args: argparse.Namespace) -> Registry:
    return Registry(open_store(args.registry, _store_options(args)))


def _warn(problems: list[ModelswapError]) -> None:
    for p in problems:
        print(f"warning: {redact.redact(str(p))}", file=sys.stderr)
        print(f"hint: {redact.redact(p.hint)}", file=sys.stderr)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def _key_value(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} {item!r} is not KEY=VALUE", hint=f"e.g. {flag} accuracy=0.94")
        out[key] = value
    return out


def _metrics(items: list[str]) -> dict[str, float]:
    out = {}
    for key, value in _key_value(items, "--metric").items():
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise UsageError(f"--metric {key}={value!r} is not a finite number")
        out[key] = number
    return out


def _meta(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in _key_value(items, "--meta").items():
        if key in METADATA_KEYS:
            raise UsageError(
                f"--meta {key}=... would overwrite a field modelswap sets",
                hint=f"use the --{key.replace('_', '-')} flag instead",
            )
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


# -- commands ------------------------------------------------------------------------------


def cmd_publish(args: argparse.Namespace) -> int:
    reg = _registry(args)
    sha, dirty = (args.git_sha, False) if args.git_sha else head_sha(Path.cwd())
    extra = _meta(args.meta)
    if dirty:
        extra.setdefault("git_dirty", True)
    check_model(args.model)
    files = collect_files([Path(f) for f in args.files])
    bar = Progress.on_terminal(
        f"publish {args.model}", sum(p.stat().st_size for p in files.values()), quiet=args.quiet
    )
    req = PublishRequest(
        model=check_model(args.model),
        files=files,
        version=args.version,
        training_data=args.training_data,
        notes=args.notes,
        metrics=_metrics(args.metric),
        extra=extra,
        git_sha=sha,
        actor=args.actor,
        progress=bar.add,
    )
    new_folder = isinstance(reg.store, LocalStore) and not reg.store.root.exists()
    meta = reg.publish(req)
    bar.close()
    print(meta.version)
    if new_folder:
        print(f"note: created the registry folder {reg.store.url}", file=sys.stderr)
    return 0


def _pointer_names(reg: Registry, model: str) -> dict[str, list[str]]:
    """Which pointers name each version; a malformed pointer is warned about, not hidden."""
    named: dict[str, list[str]] = {}
    bad: list[ModelswapError] = []
    for name, state in list_pointers(reg, model).items():
        if isinstance(state, InvalidPointer):
            bad.append(state)
        else:
            named.setdefault(state.version, []).append(name)
    _warn(bad)
    return named


def cmd_versions(args: argparse.Namespace) -> int:
    reg = _registry(args)
    metas = reg.all_metadata(check_model(args.model))
    named = _pointer_names(reg, args.model)
    rows: list[dict[str, Any]] = []
    for v, m in metas.items():
        ok = isinstance(m, Metadata)
        rows.append(
            {
                "version": v,
                "created": m.created if isinstance(m, Metadata) else None,
                "metrics": m.metrics if isinstance(m, Metadata) else {},
                "size": m.size if isinstance(m, Metadata) else 0,
                "pointers": sorted(named.get(v, [])),
                "complete": ok,
                "problem": None if ok else ("invalid metadata.json" if m else "incomplete"),
            }
        )
    if args.json:
        _print_json(rows)
        return 0
    print(
        render.table(
            ["VERSION", "CREATED", "SIZE", "POINTERS", "METRICS"],
            [
                [
                    r["version"],
                    r["created"] or f"({r['problem']})",
                    render.size_str(r["size"]),
                    ",".join(r["pointers"]),
                    render.metrics_str(r["metrics"]),
                ]
                for r in rows
            ],
        )
    )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    reg = _registry(args)
    check_model(args.model)
    version = args.version or require_pointer(reg, args.model, DEFAULT_POINTER).version
    meta = reg.metadata(args.model, check_version(version))
    if args.json:
        _print_json(meta.raw)
    else:
        print(render.show(args.model, meta, _pointer_names(reg, args.model).get(version, [])))
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    reg = _registry(args)
    a, b = reg.metadata(check_model(args.model), args.a), reg.metadata(args.model, args.b)
    if args.json:
        _print_json({"model": args.model, "a": args.a, "b": args.b, **render.diff_json(a, b)})
        return 0
    lines = render.diff(a, b)
    print(f"{args.model}: {args.a} -> {args.b}")
    print("\n".join(lines) if lines else "  (no differences)")
    return 0


def _gate_spec(args: argparse.Namespace) -> GateSpec | None:
    """The gate asked for by promote's or gate's flags, or None when none was given."""
    if args.eval_set is None:
        given = [
            f for f in ("metric", "evaluator", "tolerance", "min") if getattr(args, f) is not None
        ]
        if given:
            raise UsageError(f"--{given[0]} needs --eval-set", hint="e.g. --eval-set eval.npz")
        return None
    name, direction = parse_metric(args.metric or "accuracy")
    return GateSpec(
        eval_set=Path(args.eval_set),
        metric=name,
        direction=direction,
        tolerance=DEFAULT_TOLERANCE if args.tolerance is None else args.tolerance,
        evaluator=args.evaluator,
        floor=args.min,
    )


def _print_gate(result: GateResult, forced_by: str | None = None) -> None:
    print(f"{result.line()}  ({result.metric}:{result.direction}, tolerance {result.tolerance})")
    for version, metrics in result.metrics.items():
        role = "candidate" if version == result.candidate else "current"
        print(f"  {role:<9} {version}: {render.metrics_str(metrics)}")
    if result.passed:
        print(f"PASS: {result.verdict}")
    elif forced_by:
        print(f"FORCED by {forced_by} past a refusing gate: {result.verdict} (recorded)")
    else:
        print(f"REFUSED: {result.verdict}")
    print(f"  eval set {result.eval_set} sha256:{result.eval_set_sha256[:16]}")


def cmd_gate(args: argparse.Namespace) -> int:
    reg = _registry(args)
    spec = _gate_spec(args)
    if spec is None:
        raise UsageError(
            "gate needs --eval-set PATH", hint="modelswap gate MODEL VERSION --eval-set eval.npz"
        )
    result = run_gate(
        reg,
        check_model(args.model),
        check_version(args.version),
        spec,
        against=check_version(args.against) if args.against else None,
    )
    if args.json:
        _print_json(result.event())
    else:
        _print_gate(result)
    return 0 if result.passed else 1


def _api(args: argparse.Namespace) -> api.Registry:
    return api.Registry(args.registry, actor=args.actor, store_timeout_s=args.store_timeout)


def _print_result(result: api.PromoteResult) -> None:
    if result.event is None:
        print(f"{result.model}/{result.pointer} already names {result.version}; nothing to do")
    else:
        event = result.event
        was = event.from_version or "(none)"
        print(f"{result.model}/{result.pointer}: {was} -> {event.to} (event {event.seq})")


def cmd_promote(args: argparse.Namespace) -> int:
    if args.force and not args.reason:
        raise UsageError(
            "--force needs --reason", hint='e.g. --force --reason "hotfix, eval set stale"'
        )
    spec = _gate_spec(args)
    if args.force and spec is None:
        raise UsageError(
            "--force overrides a gate; give the gate's --eval-set too",
            hint="without gate options promote is not gated and needs no --force",
        )
    gate_options: dict[str, Any] = {}
    if spec is None and args.require_gate and args.pointer == DEFAULT_POINTER:
        raise UsageError(
            f"promotes of {DEFAULT_POINTER} must be gated here (--require-gate / "
            "MODELSWAP_REQUIRE_GATE)",
            hint="add --eval-set PATH (and --min for a first promotion), or unset "
            "MODELSWAP_REQUIRE_GATE",
        )
    if spec is not None:
        gate_options = {
            "eval_set": spec.eval_set,
            "metric": f"{spec.metric}:{spec.direction}",
            "tolerance": spec.tolerance,
            "evaluator": spec.evaluator,
            "minimum": spec.floor,
            "force": args.force,
        }
    try:
        result = _api(args).promote(
            args.model,
            args.version,
            pointer=args.pointer,
            reason=args.reason,
            expect=args.expect,
            verify=args.verify,
            **gate_options,
        )
    except GateRefused as e:
        _print_gate(e.result)
        print(e.not_moved)
        return 1
    if result.gate is not None:
        _print_gate(result.gate, forced_by=args.actor if result.forced else None)
    elif result.forced:
        print(f"FORCED by {args.actor}: the gate could not run (recorded)")
    _print_result(result)
    if spec is None and result.moved:
        print(
            f"note: not gated (no --eval-set); {args.model}/{args.pointer} moved without an "
            "evaluation",
            file=sys.stderr,
        )
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    result = _api(args).rollback(args.model, to=args.to, pointer=args.pointer, reason=args.reason)
    _print_result(result)
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    problems: list[ModelswapError] = []
    events = history(_registry(args), check_model(args.model), problems)
    _warn(problems)
    if args.json:
        _print_json(events)
    else:
        print(render.history(events) if events else f"{args.model}: no pointer moves yet")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    reg = _registry(args)
    check_model(args.model)
    versions = [check_version(args.version)] if args.version else None
    metas: dict[str, Metadata | InvalidMetadata | None] = (
        {v: reg.metadata(args.model, v) for v in versions}
        if versions
        else reg.all_metadata(args.model)
    )
    failed = 0
    total = sum(m.size for m in metas.values() if isinstance(m, Metadata))
    bar = Progress.on_terminal(f"verify {args.model}", total, quiet=args.quiet)
    for v, meta in metas.items():
        if not isinstance(meta, Metadata):
            print(f"{v}: {'INVALID: ' + str(meta) if meta else 'INCOMPLETE (no metadata.json)'}")
            failed += 1
            continue
        problems = reg.verify(args.model, v, bar.add)
        if problems:
            failed += 1
            print(f"{v}: FAILED")
            for p in problems:
                print(f"  {p}")
        else:
            print(f"{v}: ok ({len(meta.files)} file(s), {render.size_str(meta.size)})")
    bar.close()
    if failed:
        raise ModelswapError(
            f"{failed} of {len(metas)} version(s) failed verification",
            hint="never promote a failed version; re-publish it under a new version",
        )
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    reg = _api(args)
    version = args.version
    if POINTER_RE.fullmatch(version):
        version = reg.pointer_version(args.model, version)
    meta = reg.show(args.model, version)
    bar = Progress.on_terminal(f"download {args.model}/{meta.version}", meta.size, quiet=args.quiet)
    path = reg.download(args.model, meta.version, args.dest, bar.add)
    bar.close()
    print(path)
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    report = collect_garbage(
        _registry(args),
        check_model(args.model),
        keep=args.keep,
        dry_run=args.dry_run,
        actor=args.actor,
    )
    verb = "would delete" if args.dry_run else "deleted"
    for v in report.deleted:
        print(f"{verb} {v}")
    for v in report.partial:
        print(f"{verb} {v} (partial upload)")
    for v, why in sorted(report.kept.items()):
        print(f"kept {v} ({why})")
    if not report.deleted and not report.partial:
        print("nothing to delete")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from modelswap.fleet import fleet_status  # noqa: PLC0415

    view = fleet_status(
        _registry(args), check_model(args.model), check_pointer_name(args.pointer), args.stale_after
    )
    code = 1 if args.check and not view["converged"] else 0
    if not view["instances"]:
        print(
            f"note: no agent reports under {args.model}/fleet/; run the agents with --report "
            "(the chart's agent.report) so status can see them",
            file=sys.stderr,
        )
    if args.json:
        _print_json(view)
        return code
    state = "converged" if view["converged"] else "NOT converged"
    print(
        f"{args.model}/{view['pointer']} -> {view['version'] or '(unset)'}: {state}, "
        f"{len(view['instances'])} instance(s)"
    )
    rows = [
        [
            str(i["instance"]) + (" (MALFORMED)" if i.get("malformed") else ""),
            str(i["active_version"] or "-"),
            str(i["desired_version"] or "-"),
            "yes" if i["ready"] else "no",
            str(i["last_change"] or "-"),
            str(i["heartbeat"]) + (" (STALE)" if i["stale"] else ""),
            str(i["last_error"] or ""),
        ]
        for i in view["instances"]
    ]
    if rows:
        print(
            render.table(
                ["INSTANCE", "ACTIVE", "DESIRED", "READY", "LAST CHANGE", "HEARTBEAT", "ERROR"],
                rows,
            )
        )
    return code


def _on_swap_url(args: argparse.Namespace) -> str | None:
    """The webhook URL, from --on-swap-url-file, MODELSWAP_ON_SWAP_URL or the flag; a URL
    carrying credentials is refused on the command line, where `ps` shows it to everyone."""
    if args.on_swap_url_file:
        return on_swap_url_from_file(args.on_swap_url_file)
    url: str | None = args.on_swap_url
    if url and url != env("--on-swap-url") and redact.redact(url) != url:
        raise UsageError(
            "--on-swap-url carries credentials (userinfo or a query string) on the command "
            "line, where any user of the host can read them",
            hint="put the URL in a file and pass --on-swap-url-file, or set "
            "MODELSWAP_ON_SWAP_URL (the chart mounts it from a Secret)",
        )
    return url


def cmd_agent(args: argparse.Namespace) -> int:
    try:
        from modelswap.agent.config import AgentConfig  # noqa: PLC0415 - needs modelswap[agent]
        from modelswap.agent.run import main as agent_main  # noqa: PLC0415
    except ImportError as e:
        raise UsageError(
            f"the agent needs packages that are not installed ({e.name})",
            hint="pip install 'modelswap[agent]'",
        ) from e
    from modelswap.fleet import check_instance  # noqa: PLC0415

    cfg = AgentConfig(
        registry=args.registry,
        model=check_model(args.model),
        dest=Path(args.dest).absolute(),
        pointer=check_pointer_name(args.pointer),
        interval_s=args.interval,
        jitter=args.jitter,
        keep=args.keep,
        once=args.once,
        host=args.host,
        port=args.port,
        instance_id=check_instance(args.instance_id),
        report=args.report,
        report_interval_s=args.report_interval,
        max_backoff_s=args.max_backoff
        if args.max_backoff is not None
        else max(60.0, args.interval),
        on_swap_command=args.on_swap_command,
        on_swap_url=_on_swap_url(args),
        store_timeout_s=args.store_timeout,
        min_rate_bps=args.min_rate,
        refresh_min_interval_s=args.refresh_min_interval,
        scrub_interval_s=args.scrub_interval,
        refresh_token=refresh_token(args.refresh_token_file),
    )
    problems = cfg.validate()
    if problems:
        raise UsageError(problems[0], hint="see `modelswap agent --help`")
    open_store(cfg.registry)  # a malformed --registry fails here, before any start-up work
    return agent_main(cfg)


# -- parser --------------------------------------------------------------------------------


Command = Callable[[str, Callable[[argparse.Namespace], int], str], _Parser]


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
            default=StoreOptions.read_timeout_s if p is top else argparse.SUPPRESS,
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

    p = command("download", cmd_download, "a verified copy of a version in a new folder")
    p.add_argument("model")
    p.add_argument("version", metavar="VERSION|POINTER", help="e.g. v3 or CURRENT")
    p.add_argument("dest", metavar="DEST", help="folder to create (must not exist)")

    p = command("verify", cmd_verify, "re-read stored files and check size and sha256")
    p.add_argument("model")
    p.add_argument("version", nargs="?", help="default: every version")

    p = command("gc", cmd_gc, "delete old versions no pointer or recent event names")
    p.add_argument("model")
    add_flag(
        p,
        "--keep",
        env_var="MODELSWAP_GC_KEEP",  # the agent's --keep (MODELSWAP_KEEP) counts local copies
        type=int,
        required=False,
        default=5,
        help="keep this many newest versions and the versions of the last N events",
    )
    add_flag(p, "--dry-run", action="store_true", help="only say what would be deleted")

    _add_fleet_commands(command)
    return parser


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
        default=90.0,
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
    add_flag(p, "--pointer", default=DEFAULT_POINTER, help="pointer to follow")
    add_flag(p, "--interval", type=float, default=10.0, help="seconds between polls")
    add_flag(p, "--jitter", type=float, default=0.1, help="fraction of random spread per poll")
    add_flag(
        p, "--keep", type=int, default=3, help="local versions to keep, the linked one included"
    )
    add_flag(p, "--once", action="store_true", help="sync once and exit (init containers)")
    add_flag(p, "--host", default="127.0.0.1", help="address of the HTTP endpoints")
    add_flag(p, "--port", type=int, default=9101, help="port of the HTTP endpoints (0: any free)")
    add_flag(p, "--instance-id", default=socket.gethostname(), help="name in fleet reports")
    add_flag(p, "--report", action="store_true", help="write fleet reports to the registry")
    add_flag(p, "--report-interval", type=float, default=30.0, help="seconds between heartbeats")
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
        default=3600.0,
        help="seconds between full re-hashes of the linked copy (stat checks run every poll)",
    )
    add_flag(
        p,
        "--refresh-min-interval",
        type=float,
        default=1.0,
        help="seconds between two polls asked for by POST /refresh or SIGHUP",
    )
    add_flag(
        p,
        "--refresh-token-file",
        help="file with the bearer token POST /refresh needs from non-loopback peers "
        "(else MODELSWAP_REFRESH_TOKEN; without either, only loopback may refresh)",
    )
    add_flag(
        p,
        "--min-rate",
        type=int,
        default=64 << 10,
        help="bytes/s below which a download is abandoned and retried (over 2 x --store-timeout)",
    )


def main(argv: list[str] | None = None) -> int:
    redact.install(secret_values())
    try:
        parser = build_parser()
        args = resolve_env(parser.parse_args(argv))
        code: int = args.fn(args)
        return code
    except ModelswapError as e:
        print(f"error: {redact.redact(str(e))}", file=sys.stderr)
        print(f"hint: {redact.redact(e.hint)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted; nothing half-written is visible", file=sys.stderr)
        print("hint: re-run the command", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
