"""The ``sovsim`` command line.

Each group of subcommands lives in its own module with a ``register(subparsers)`` function
that adds its parsers and sets ``func(args) -> int`` on each.  Bad input raises
:class:`sim.errors.UserError`; it is printed as one line and the exit code is 2.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from sim import __version__
from sim.core.errors import UserError
from sim.scenario.estimate import ENV as WORK_ENV

# modules contributing subcommands, in help order
COMMAND_MODULES = [
    "sim.cli.run",
    "sim.cli.demand",
    "sim.cli.perf",
    "sim.cli.econ",
    "sim.cli.sweep",
    "sim.cli.validate",
    "sim.cli.frontier",
]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage dump
        self.exit(2, f"sovsim: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sovsim", description="Simulate a sovereign European AI inference cloud.")
    parser.add_argument("--version", action="version", version=f"sovsim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    saved = os.environ.get(WORK_ENV)   # --max-work sets it for this command only
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"sovsim: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into head & co.
        return 0
    except KeyboardInterrupt:
        print("sovsim: interrupted", file=sys.stderr)
        return 130
    finally:
        if saved is None:
            os.environ.pop(WORK_ENV, None)
        else:
            os.environ[WORK_ENV] = saved


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
