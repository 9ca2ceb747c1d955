"""Shared machinery of the experiment scripts: arguments, output folder, writers, executor.

Every script is runnable as ``python experiments/NAME.py [--quick]`` and writes
``results/NAME/`` (CSV tables, PNG figures and a self-contained ``report.html``).  Seeds are
fixed (``--seed``, default 1) so ``sovsim figures`` regenerates the same bytes.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a source tree without installing
    sys.path.insert(0, str(ROOT))

import matplotlib  # noqa: E402

matplotlib.use("Agg")


def parser(script: str, doc: str | None) -> argparse.ArgumentParser:
    """The arguments every experiment takes; ``script`` is ``__file__``."""
    name = Path(script).stem
    p = argparse.ArgumentParser(prog=f"experiments/{name}.py", description=(doc or "").strip().splitlines()[0] if doc else None)
    p.add_argument("--quick", action="store_true", help="tiny version for smoke tests (seconds); not for conclusions")
    p.add_argument("--out", type=Path, default=ROOT / "results" / name, help=f"output folder (default results/{name}/)")
    p.add_argument("--seed", type=int, default=1, help="root seed of the replication seeds (default 1)")
    p.add_argument("--replications", type=int, default=None, help="override the script's replications")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--workers", type=int, default=None, help="local worker processes (default: all cores; 0 = in this process)")
    g.add_argument("--scheduler", default=None, metavar="ADDRESS", help="run the sweep on this Dask scheduler")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a dotted field of the experiment's base scenario (repeatable)")
    p.add_argument("--cache", type=Path, default=None,
                   help="keep the sweep's per-run files here and reuse them on the next run (default: a temporary folder)")
    return p


@contextlib.contextmanager
def executor(args):
    """The executor the flags ask for (None = in-process), closed on exit."""
    from sim.study.sweep import make_executor

    ex, close = make_executor(args.workers, args.scheduler)
    try:
        yield ex
    finally:
        close()


@contextlib.contextmanager
def sweep_dir(args, name: str):
    """``--cache`` if given, else a temporary folder removed afterwards (fresh results)."""
    if args.cache is not None:
        path = Path(args.cache) / name
        path.mkdir(parents=True, exist_ok=True)
        yield path
    else:
        with tempfile.TemporaryDirectory(prefix=f"sovsim-{name}-") as tmp:
            yield Path(tmp)


def out_dir(args) -> Path:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_csv(df, out: Path, name: str) -> Path:
    """A CSV with stable formatting (so unchanged numbers give unchanged bytes)."""
    path = Path(out) / f"{name}.csv"
    df.to_csv(path, index=False, float_format="%.6g", lineterminator="\n")
    return path


def save_png(fig, out: Path, name: str, dpi: int = 120) -> Path:
    """A PNG without the matplotlib version stamp (byte-stable across runs)."""
    import matplotlib.pyplot as plt

    path = Path(out) / f"{name}.png"
    fig.savefig(path, dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path


def write_report(out: Path, title: str, summary: dict, figures, scenario, extra_sources: list[dict] | None = None) -> Path:
    """``out/report.html``: figures, headline numbers, sources table and resolved scenario."""
    from sim.study.report import scenario_sources_rows, write_html_report
    from sim.study.sweep import resolved_json

    rows = list(extra_sources or []) + scenario_sources_rows(scenario)
    return write_html_report(out, title, summary, figures, resolved_json(scenario), rows)


def apply_sets(scenario, args):
    """The scenario with the ``--set FIELD=VALUE`` overrides applied (validated)."""
    from sim.study.sweep import apply_sets as _apply

    return _apply(scenario, args.set)


def main_wrapper(main):
    """Run ``main(argv)``; a UserError prints one line and exits 2, like ``sovsim``."""
    from sim.core.errors import UserError

    try:
        return main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
