"""``sovsim validate``: the engine against every public end-to-end measurement family."""
from __future__ import annotations


from sim.calibration.outputs import results_dir
from sim.calibration.validate import FAMILIES, validate


def register(sub) -> None:
    p = sub.add_parser("validate", help="Score the full engine against the public end-to-end measurements "
                                        "(offline, online, MLPerf Server and Interactive, NIM concurrency, AIConfigurator serving points, "
                                        "vLLM trace replay, MoE kernel).")
    p.add_argument("--quick", action="store_true", help="A small stratified subset (CI; well under a minute).")
    p.add_argument("--family", action="append", default=None,
                   help=f"Only this family (repeatable): {', '.join(FAMILIES)}.")
    p.add_argument("--results", default=None, help="Folder for validation.csv, the figure and README.md (default: results/validation of the checkout you are in, else of this folder).")
    p.set_defaults(func=cmd_validate)


def cmd_validate(args) -> int:
    out = validate(quick=args.quick, families=tuple(args.family or FAMILIES), results_dir=results_dir(args.results, "results/validation"))
    s = out["summary"]
    s = s[(s["class"] == "(all)") & (s.gpu == "(all)")]
    for scope in ("held_out", "all"):
        print(f"{scope}:")
        for r in s[s.scope == scope].itertuples(index=False):
            print(f"  {r.family:16s} {r.metric:13s} n={r.n:4d}  MdAPE {100 * r.mdape:5.1f}%  bias {100 * r.bias:+6.1f}%")
    return 0
