"""Verbs about the fleet: status, and the agent that reports to it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from modelswap import redact, render
from modelswap.cli.common import _api, _print_json
from modelswap.config import (
    env,
    on_swap_url_from_file,
    refresh_token,
)
from modelswap.errors import (
    UsageError,
)


def cmd_status(args: argparse.Namespace) -> int:
    view = _api(args).status(args.model, pointer=args.pointer, stale_after_s=args.stale_after)
    code = 1 if args.check and not view.converged else 0
    if not view.instances:
        print(
            f"note: no agent reports under {args.model}/fleet/; run the agents with --report "
            "(the chart's agent.report) so status can see them",
            file=sys.stderr,
        )
    if args.json:
        _print_json(view.to_json())
        return code
    state = "converged" if view.converged else "NOT converged"
    print(
        f"{args.model}/{view.pointer} -> {view.version or '(unset)'}: {state}, "
        f"{len(view.instances)} instance(s)"
    )
    rows = [
        [
            i.instance + (" (MALFORMED)" if i.malformed else ""),
            i.active_version or "-",
            i.desired_version or "-",
            "yes" if i.ready else "no",
            i.last_change or "-",
            str(i.heartbeat) + (" (STALE)" if i.stale else ""),
            i.last_error or "",
        ]
        for i in view.instances
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

        if not args.once:  # the HTTP server, imported late by the agent itself
            import modelswap.agent.server  # noqa: F401, PLC0415
    except ImportError as e:
        raise UsageError(
            f"the agent needs packages that are not installed ({e.name})",
            hint="pip install 'modelswap[agent]'",
        ) from e
    cfg = AgentConfig(
        registry=args.registry,
        model=args.model,
        dest=Path(args.dest).absolute(),
        pointer=args.pointer,
        interval_s=args.interval,
        jitter=args.jitter,
        keep=args.keep,
        once=args.once,
        host=args.host,
        port=args.port,
        instance_id=args.instance_id,
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
        trust_keys=tuple(args.trust_key),
        loader_url=args.loader_url,
        metrics_url=args.metrics_url,
        reload=tuple(args.reload),
        server_model=args.server_model,
        reload_timeout_s=args.reload_timeout,
        tfserving_dir=Path(args.tfserving_dir).absolute() if args.tfserving_dir else None,
        tfserving_grace_s=args.tfserving_grace,
    )
    return agent_main(cfg.checked())
