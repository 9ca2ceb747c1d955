"""``sovsim fit-demand``: parse and print; the fitting is :mod:`sim.calibration.demand_fit`."""
from __future__ import annotations

from pathlib import Path

from sim.calibration import demand_fit
from sim.calibration.outputs import refit_models_dir, results_dir
from sim.core.errors import UserError


def register(sub) -> None:
    p = sub.add_parser("fit-demand", help="Re-fit length laws, weekly profiles and burstiness from models/traces.",
                       description=demand_fit.__doc__.split("\n\n")[0])
    p.add_argument("--traces", type=Path, default=None, help="folder of traces (default: models/traces of the package)")
    p.add_argument("--models-out", type=Path, default=None,
                   help="the folder to write the fitted tables into (default: DIR/demand with --out, else the "
                        "models/demand of the source checkout you are in)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="write the refitted models into DIR/demand (DIR laid out as models/); default: the "
                        "checkout's models/. Never into an installed package: outside a checkout, --out is required.")
    p.add_argument("--results", type=Path, default=None, help="figures and tables folder (default: results/demand_fit of the checkout you are in, else of this folder)")
    p.add_argument("--no-figures", action="store_true", help="skip the matplotlib figures")
    p.set_defaults(func=cmd_fit_demand)


def cmd_fit_demand(args) -> int:
    models_out = args.models_out or refit_models_dir(args.out, "fit-demand") / "demand"
    summary, out, res = demand_fit.fit_demand(args.traces, models_out, results_dir(args.results, "results/demand_fit"),
                                              figures=not args.no_figures)
    print(summary)
    print(f"wrote {out} and {res}")
    return 0


def main(argv=None) -> int:  # `python -m sim.cli.demand` (same as `sovsim fit-demand`)
    import argparse
    import sys
    parser = argparse.ArgumentParser(prog="sovsim")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["fit-demand", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except UserError as err:
        print(f"sovsim: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
