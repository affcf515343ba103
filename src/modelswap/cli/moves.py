"""Verbs that judge and move pointers: gate, promote, rollback, history."""

from __future__ import annotations

import argparse
import sys

from modelswap import render
from modelswap.api import DEFAULT_POINTER
from modelswap.cli.common import (
    _api,
    _gate_options,
    _print_gate,
    _print_json,
    _print_result,
    _warn,
)
from modelswap.errors import GateRefused, UsageError
from modelswap.progress import Progress


def cmd_gate(args: argparse.Namespace) -> int:
    options = _gate_options(args)
    if options is None:
        raise UsageError(
            "gate needs --eval-set PATH", hint="modelswap gate MODEL VERSION --eval-set eval.npz"
        )
    bar = Progress.on_terminal(f"gate {args.model}/{args.version}", quiet=args.quiet)
    try:
        result = _api(args).gate(
            args.model, args.version, against=args.against, progress=bar, **options
        )
    finally:
        bar.close()
    if args.json:
        _print_json(result.record().to_json())
    else:
        _print_gate(result)
    return 0 if result.passed else 1


def cmd_promote(args: argparse.Namespace) -> int:
    if args.force and not args.reason:
        raise UsageError(
            "--force needs --reason", hint='e.g. --force --reason "hotfix, eval set stale"'
        )
    options = _gate_options(args)
    if options is None and args.require_gate and args.pointer == DEFAULT_POINTER:
        raise UsageError(
            f"promotes of {DEFAULT_POINTER} must be gated here (--require-gate / "
            "MODELSWAP_REQUIRE_GATE)",
            hint="add --eval-set PATH (and --min for a first promotion), or unset "
            "MODELSWAP_REQUIRE_GATE",
        )
    gate_options = {**(options or {}), "force": args.force}  # also past a quarantine
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
    if options is None and result.moved:
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
    log = _api(args).history(args.model)
    _warn(list(log.warnings))
    if args.json:
        _print_json([e.to_json() for e in log.events])
    elif log.events:
        print(render.history(log.events))
    else:
        print(f"{args.model}: no pointer moves yet")
    return 0
