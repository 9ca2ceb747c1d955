"""``sovsim econ``: run a scenario with the ledger and faults; print the economics defaults.

* ``sovsim econ run [SCENARIO]`` -- simulate, then print margin, cost per million tokens
  and availability (and ``--json`` the whole summary with its ``economics`` block);
* ``sovsim econ defaults`` -- the table of every default number and its source;
* ``sovsim econ rates`` -- the failure-rate arithmetic from the Llama 3 table.
"""
from __future__ import annotations

import json
from sim.cli.run import scenario_from_args
from sim.economics.contracts import DEFAULTS
from sim.economics.faults import GPU_ROWS, NODE_ROWS, llama3_rates
from sim.core.runfolder import add_to_manifest, check_out_dir, default_out
from sim.study.report import write_run_report
from sim.study.run import _json_default, run


def register(sub):
    p = sub.add_parser("econ", help="economics: run with the ledger and faults, list defaults",
                       description="Run a scenario with capacity contracts, tenant prices, faults "
                                   "and the ledger; or print the economics defaults.")
    esub = p.add_subparsers(dest="econ_command", metavar="ECON_COMMAND")
    r = esub.add_parser("run", help="simulate a scenario and report margin, cost per Mtok, availability")
    r.add_argument("scenario", nargs="?", help="scenario TOML file (default: the shipped default)")
    r.add_argument("--seed", type=int, help="root seed (default: the scenario's simulation.seed)")
    r.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a scenario field by dotted path (as in `sovsim run`)")
    r.add_argument("--out", help="output folder (default: runs/<scenario name>), as in `sovsim run`")
    r.add_argument("--quiet", action="store_true", help="no table")
    r.add_argument("--json", action="store_true", help="print the whole summary as JSON")
    r.set_defaults(func=cmd_run)
    d = esub.add_parser("defaults", help="print every economics default with its unit and source (Markdown)")
    d.set_defaults(func=cmd_defaults)
    f = esub.add_parser("rates", help="print the failure-rate derivation from the Llama 3 table")
    f.set_defaults(func=cmd_rates)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_with_economics(scenario, seed: int | None = None, out_dir=None, progress=False) -> dict:
    """The engine summary with its ``economics`` block (:func:`sim.study.run.run` attaches
    the ledger, and faults when enabled, to every run); with ``out_dir``, its run folder.
    ``progress``: :mod:`sim.core.progress` (None: the command line's settings)."""
    result = run(scenario, seed=seed, out_dir=out_dir, progress=progress)
    if out_dir is not None:
        write_run_report(result)
        add_to_manifest(out_dir, ["report.html"])
    return result.summary


def cmd_run(args) -> int:

    scenario = scenario_from_args(args)
    out = check_out_dir(args.out) if args.out else default_out(scenario.name)
    s = run_with_economics(scenario, args.seed, out, progress=False if args.quiet else None)
    if args.json:
        print(json.dumps(s, default=_json_default))
        return 0
    if not args.quiet:
        print(format_economics(s["economics"], s))
        print(f"\nwrote {out}/")
    return 0


def format_economics(e: dict, s: dict | None = None) -> str:
    lines = []
    if s is not None:
        lines.append(f"completed {s['completed']} / arrivals {s['arrivals']}, rejected {s['rejected']}, "
                     f"SLA attainment {s['sla_attainment']}, request utilisation "
                     + ("-" if s.get("request_utilisation") is None else f"{s['request_utilisation'] * 100:.1f} %")
                     + ("" if s.get("throughput_utilisation") is None else
                        f", throughput utilisation {s['throughput_utilisation'] * 100:.1f} %"))
    lines.append(f"revenue  EUR {e['revenue_eur']:>14,.2f}")
    for ln in ("rental", "partner", "depreciation", "colocation", "power", "sla_credits"):
        lines.append(f"  {ln:<13}EUR {e[ln + '_cents'] / 100:>14,.2f}")
    lines.append(f"costs    EUR {e['costs_eur']:>14,.2f}")
    share = e["margin_share"]
    lines.append(f"margin   EUR {e['margin_eur']:>14,.2f}" + (f"  ({share:.1%} of revenue)" if share is not None else ""))
    cpm = e["cost_eur_per_mtok"]
    lines.append("cost per million tokens (prompt + output): " + (f"EUR {cpm:.4f}" if cpm is not None else "n/a (no tokens)"))
    cpo = e["cost_eur_per_mtok_output"]
    lines.append("cost per million output tokens: " + (f"EUR {cpo:.4f}" if cpo is not None else "n/a"))
    av = e["availability"]
    lines.append(f"replica availability {av['replica_availability']:.5f}; failures {av['failures']}")
    if e.get("contracts_implicit"):
        lines.append("(no [[sites.contracts]]: every deployed GPU costed as on-demand rental)")
    return "\n".join(lines)


def defaults_markdown() -> str:
    rows = ["| name | value | unit | source |", "|---|---|---|---|"]
    for k, v in DEFAULTS.items():
        rows.append(f"| `{k}` | {v.value:.6g} | {v.unit} | {v.source} |")
    return "\n".join(rows)


def cmd_defaults(args) -> int:
    print(defaults_markdown())
    return 0


def cmd_rates(args) -> int:
    r = llama3_rates()
    print("GPU rows: " + " + ".join(f"{k} {r.rows[k]}" for k in GPU_ROWS) + f" = {r.gpu_events}")
    print(f"  / ({r.gpu_days:,} GPU-days) = {r.gpu_per_gpu_day:.4e} per GPU-day")
    print("Node rows: " + " + ".join(f"{k} {r.rows[k]}" for k in NODE_ROWS) + f" = {r.node_events}")
    print(f"  / ({r.node_days:,} node-days) = {r.node_per_node_day:.4e} per node-day")
    return 0
