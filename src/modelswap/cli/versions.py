"""Verbs about versions: publish, versions, show, diff, verify, download, gc. Each maps its
arguments to one modelswap.api call and prints the result."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from modelswap import render
from modelswap.api import SignatureInfo, is_pointer_name
from modelswap.cli.common import _api, _meta, _metrics, _print_json, _warn
from modelswap.errors import ModelswapError
from modelswap.progress import Progress


def cmd_publish(args: argparse.Namespace) -> int:
    reg = _api(args)
    new_folder = reg.creates_folder
    bar = Progress.on_terminal(f"publish {args.model}", quiet=args.quiet)
    meta = reg.publish(
        args.model,
        args.files,
        version=args.version,
        metrics=_metrics(args.metric),
        training_data=args.training_data,
        notes=args.notes,
        meta=_meta(args.meta),
        git_sha=args.git_sha,
        progress=bar,
        sign_key=args.sign_key,
    )
    bar.close()
    print(meta.version)
    if new_folder:
        print(f"note: created the registry folder {reg.store_url}", file=sys.stderr)
    return 0


def cmd_versions(args: argparse.Namespace) -> int:
    reg = _api(args)
    warnings: list[ModelswapError] = []
    rows = reg.versions(args.model, warnings=warnings)  # one listing of the pointers
    _warn(warnings)
    if args.json:
        _print_json([r.to_json() for r in rows])
        return 0
    print(
        render.table(
            ["VERSION", "CREATED", "SIZE", "POINTERS", "METRICS"],
            [
                [
                    r.version,
                    r.created or f"({r.problem})",
                    render.size_str(r.size),
                    ",".join(r.pointers),
                    render.metrics_str(r.metrics),
                ]
                for r in rows
            ],
        )
    )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    reg = _api(args)
    meta = reg.show(args.model, args.version)
    if args.json:
        _print_json(meta.raw)
    else:
        named = reg.pointer_names(args.model).get(meta.version, [])
        print(render.show(args.model, meta, named))
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    reg = _api(args)
    a, b = reg.show(args.model, args.a), reg.show(args.model, args.b)
    if args.json:
        _print_json({"model": args.model, "a": args.a, "b": args.b, **render.diff_json(a, b)})
        return 0
    lines = render.diff(a, b)
    print(f"{args.model}: {args.a} -> {args.b}")
    print("\n".join(lines) if lines else "  (no differences)")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    reg = _api(args)
    bar = Progress.on_terminal(f"verify {args.model}", quiet=args.quiet)
    results = reg.verify(args.model, args.version, progress=bar, trust_keys=args.trust_key)
    bar.close()
    failed = 0
    rows = []
    for v, problems in results.items():
        incomplete = bool(problems) and problems[0].startswith(("INVALID", "INCOMPLETE"))
        sig = None if incomplete else reg.signature(args.model, v, args.trust_key)
        rows.append(
            {
                "version": v,
                "ok": not problems,
                "problems": problems,
                "signature": sig.to_json() if sig else None,
            }
        )
        if incomplete:
            failed += 1
            if not args.json:
                print(f"{v}: {problems[0]}")
        elif problems:
            failed += 1
            if not args.json:
                print(f"{v}: FAILED")
                for p in problems:
                    print(f"  {p}")
        elif not args.json:
            meta = reg.show(args.model, v)
            size = f"{len(meta.files)} file(s), {render.size_str(meta.size)}"
            print(f"{v}: ok ({size}; {_signed(sig)})")
    if args.json:
        _print_json(rows)
    if failed:
        raise ModelswapError(
            f"{failed} of {len(results)} version(s) failed verification",
            hint="never promote a failed version; re-publish it under a new version",
        )
    return 0


def _signed(sig: SignatureInfo | None) -> str:
    if sig is None or not sig.signed:
        return "unsigned"
    if sig.verified:
        return f"signed by {sig.key}, trusted key {sig.trusted_key}"
    return f"signed by {sig.key or 'an unnamed key'}, not checked: no --trust-key"


def cmd_download(args: argparse.Namespace) -> int:
    reg = _api(args)
    version = args.version
    if is_pointer_name(version):
        version = reg.pointer_version(args.model, version)
    bar = Progress.on_terminal(f"download {args.model}/{version}", quiet=args.quiet)
    path = reg.download(args.model, version, args.dest, bar, trust_keys=args.trust_key)
    bar.close()
    print(path)
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    report = _api(args).gc(args.model, keep=args.keep, dry_run=args.dry_run)
    if args.json:
        _print_json({"dry_run": args.dry_run, **report.to_json()})
        return 0
    verb = "would delete" if args.dry_run else "deleted"
    lines: list[Any] = [f"{verb} {v}" for v in report.deleted]
    lines += [f"{verb} {v} (partial upload)" for v in report.partial]
    lines += [f"kept {v} ({why})" for v, why in sorted(report.kept.items())]
    if not report.deleted and not report.partial:
        lines.append("nothing to delete")
    print("\n".join(lines))
    return 0
