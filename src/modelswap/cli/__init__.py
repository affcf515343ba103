"""`modelswap`: the registry verbs. Errors print `error:` and `hint:` and exit non-zero.

This package only parses and prints: each module maps one group of verbs' arguments to a call
of modelswap.api (or the agent) and the result to text or --json (versions.py, moves.py,
fleet.py), parser.py declares every flag with its MODELSWAP_* variable, common.py holds what
they share.
"""

from __future__ import annotations

import sys

from modelswap import redact
from modelswap.cli.parser import build_parser
from modelswap.config import resolve_env, retired_variables, secret_values
from modelswap.errors import ModelswapError

__all__ = ["build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    redact.install(secret_values())
    try:
        parser = build_parser()
        args = resolve_env(parser.parse_args(argv))
        errors, warnings = retired_variables(args.command)
        for w in warnings:
            print(f"warning: {w}", file=sys.stderr)
            print(f"hint: {w.hint}", file=sys.stderr)
        if errors:
            raise errors[0]
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
