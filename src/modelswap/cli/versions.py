"""Verbs about versions: publish, versions, show, diff, verify, download, gc."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from modelswap import render
from modelswap.cleanup import collect_garbage
from modelswap.cli.common import _api, _meta, _metrics, _pointer_names, _print_json, _registry
from modelswap.errors import (
    InvalidMetadata,
    ModelswapError,
)
from modelswap.gitinfo import head_sha
from modelswap.metadata import Metadata
from modelswap.names import POINTER_RE, check_model, check_version
from modelswap.pointers import (
    DEFAULT_POINTER,
    require_pointer,
)
from modelswap.progress import Progress
from modelswap.registry import PublishRequest, collect_files
from modelswap.store.local import LocalStore


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
