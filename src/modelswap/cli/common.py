"""What every verb shares: building the registry from the flags, printing JSON, warnings and
the gate, parsing K=V flags. No decisions: those live in modelswap.api and below."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, NoReturn

from modelswap import api, redact, render
from modelswap.api import METADATA_KEYS, GateResult
from modelswap.errors import ModelswapError, UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message, hint=f"see `{self.prog} --help`")


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


def _gate_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """The keyword arguments of api.Registry.gate asked for by the gate flags, or None when
    none was given."""
    if args.eval_set is None:
        given = [
            f for f in ("metric", "evaluator", "tolerance", "min") if getattr(args, f) is not None
        ]
        if given:
            raise UsageError(f"--{given[0]} needs --eval-set", hint="e.g. --eval-set eval.npz")
        return None
    options: dict[str, Any] = {"eval_set": Path(args.eval_set), "minimum": args.min}
    if args.metric is not None:
        options["metric"] = args.metric
    if args.tolerance is not None:
        options["tolerance"] = args.tolerance
    if args.evaluator is not None:
        options["evaluator"] = args.evaluator
    return options


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


def _api(args: argparse.Namespace) -> api.Registry:
    return api.Registry(args.registry, actor=args.actor, store_timeout_s=args.store_timeout)


def _print_result(result: api.PromoteResult) -> None:
    if result.event is None:
        print(f"{result.model}/{result.pointer} already names {result.version}; nothing to do")
    else:
        event = result.event
        was = event.from_version or "(none)"
        print(f"{result.model}/{result.pointer}: {was} -> {event.to} (event {event.seq})")
