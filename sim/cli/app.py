"""The ``sovsim`` command line.

Each group of subcommands lives in its own module with a ``register(subparsers)`` function
that adds its parsers and sets ``func(args) -> int`` on each.  Bad input raises
:class:`sim.errors.UserError`; it is printed as one line and the exit code is 2.

Every command (every leaf of the parser tree) takes the same two output flags, added here by
:func:`add_output_flags` after the modules registered theirs:

* ``--quiet``: nothing but errors and warnings (no progress, no table; a command that defines its own
  ``--quiet``, as ``run`` does, keeps it, and prints ``--json`` output if asked);
* ``-v`` / ``--verbose``: a progress line after every step when not on a terminal, and the
  ``sim`` loggers at INFO.

Progress (:mod:`sim.core.progress`): a bar on a terminal, else a heartbeat line every ~10 s on
stderr; ``--no-progress`` (where a command has it) turns only the progress off.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys

from sim.core.version import VERSION as __version__
from sim.core import progress as progress_mod
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
    add_output_flags(parser)
    return parser


def leaf_parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """``(command path, parser)`` of every subcommand that runs something, depth first."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs and path:
        yield path, parser
    for action in subs:
        for name, p in action.choices.items():
            yield from leaf_parsers(p, path + (name,))
        if path:   # a group (`econ`) also runs: it prints its help
            yield path, parser


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    """``--quiet`` and ``-v/--verbose`` on every command that lacks them (module docstring)."""
    seen = set()
    for _, p in leaf_parsers(parser):
        if id(p) in seen:
            continue
        seen.add(id(p))
        opts = p._option_string_actions
        if "--quiet" not in opts:
            p.add_argument("--quiet", action="store_true", help="nothing but errors and warnings (no progress, no output)")
            p.set_defaults(_quiet_here=True)
        else:   # the command's own --quiet (it may still print --json); not a group's default
            p.set_defaults(_quiet_here=False)
        if "--verbose" not in opts and "-v" not in opts:
            p.add_argument("-v", "--verbose", action="store_true",
                           help="more detail: a progress line after every step, INFO log messages")


def progress_from_args(args) -> progress_mod.Progress:
    """The progress settings the output flags ask for (also for commands' own ``--quiet``)."""
    if getattr(args, "quiet", False) or getattr(args, "no_progress", False):
        return progress_mod.Progress(mode="off")
    return progress_mod.Progress(verbose=bool(getattr(args, "verbose", False)))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    saved = os.environ.get(WORK_ENV)   # --max-work sets it for this command only
    old_progress = progress_mod.set_default(progress_from_args(args))
    sim_log = logging.getLogger("sim")
    old_level = sim_log.level
    sim_log.setLevel(logging.INFO if getattr(args, "verbose", False) else logging.WARNING)
    if getattr(args, "verbose", False) and not logging.getLogger().handlers:
        logging.basicConfig(format="%(name)s: %(message)s", stream=sys.stderr)
    try:
        with contextlib.ExitStack() as stack:
            if getattr(args, "quiet", False) and getattr(args, "_quiet_here", False):
                stack.enter_context(contextlib.redirect_stdout(stack.enter_context(open(os.devnull, "w"))))
            return int(args.func(args) or 0)
    except UserError as err:
        print(f"sovsim: error: {err}", file=sys.stderr)
        return 2
    except MemoryError:   # work allowed past the estimate's limit (--max-work) that does not fit
        print("sovsim: error: out of memory; allowed: less work (a shorter horizon, fewer replicas, wider "
              "timeseries bins, a smaller request sample) or a machine with more memory", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into head & co.
        return 0
    except KeyboardInterrupt:
        print("sovsim: interrupted", file=sys.stderr)
        return 130
    finally:
        progress_mod.set_default(old_progress)
        sim_log.setLevel(old_level)
        if saved is None:
            os.environ.pop(WORK_ENV, None)
        else:
            os.environ[WORK_ENV] = saved


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
