"""``sovsim run`` for a scenario with ``[cells]``: the fleet as cells, exactly or sampled."""
from __future__ import annotations

import json
import sys
import time

import pandas as pd

from sim.core.runfolder import check_out_dir, default_out, run_folder
from sim.core.serialise import json_default
from sim.scenario import resolved_config
from sim.study.cells import run_cells
from sim.study.report import scenario_sources_rows, write_html_report
from sim.study.sweep import make_executor
from sim.study.warnings import scenario_warnings


def _ci(d: dict, scale: float = 1.0, fmt: str = "{:,.0f}") -> str:
    v = d["value"]
    if v is None:
        return "-"
    txt = fmt.format(v * scale)
    if d["ci_low"] is not None and d["ci_high"] != d["ci_low"]:
        txt += f" ({fmt.format(d['ci_low'] * scale)} to {fmt.format(d['ci_high'] * scale)})"
    return txt


def format_cells(s: dict) -> str:
    how = ("every cell" if s["cells_simulated"] == s["cells"] else
           f"{s['cells_simulated']} of {s['cells']} cells sampled ({s['groups']} groups of exchangeable cells)")
    win = f", each from {s['windows']} windows of {s['window_s']:.0f} s" if s["windows"] else ""
    lines = [f"scenario {s['scenario']}  seed {s['seed']}  {s['cells']} cells of <= {s['max_replicas_per_cell']} replicas: "
             f"{how}{win}; 95 % intervals from the cell-to-cell spread" + (
                 "; burst states drawn per cell (an approximation)" if s["bursts_independent"] else ""),
             f"requests      {_ci(s['arrivals'])} arrived, {_ci(s['completed'])} completed, {_ci(s['rejected'])} rejected",
             f"load          request utilisation {_ci(s['request_utilisation'], 100, '{:.1f}')} %   "
             f"(busy share {_ci(s['gpu_utilisation'], 100, '{:.1f}')} %)",
             f"service       SLA attainment {_ci(s['sla_attainment'], 100, '{:.2f}')} %",
             f"latency       TTFT p50 {_ci(s['ttft_s']['p50'], 1e3, '{:.0f}')} ms, p99 {_ci(s['ttft_s']['p99'], 1, '{:.2f}')} s;"
             f"  TPOT p50 {_ci(s['tpot_s']['p50'], 1e3, '{:.0f}')} ms, p99 {_ci(s['tpot_s']['p99'], 1e3, '{:.0f}')} ms",
             f"money         revenue {_ci(s['revenue_eur'])} EUR, costs {_ci(s['costs_eur'])} EUR, "
             f"margin {_ci(s['margin_eur'])} EUR",
             f"tokens        {_ci(s['prompt_tokens_total'], 1e-9, '{:,.1f}')} bn prompt + "
             f"{_ci(s['completed_output_tokens'], 1e-9, '{:,.1f}')} bn output; residency violations "
             f"{s['residency_violations']['value']:.0f}"]
    if s["sla_attainment"]["value"] is not None and s["sla_attainment"]["value"] < 0.95:
        lines.append("warning: fleet SLA attainment is under 95 %: some cells are saturated in their busiest hours")
    for w in s.get("warnings", []):
        lines.append(f"warning: {w}")
    return "\n".join(lines)


def run_cells_command(args, scenario) -> int:
    """Run ``scenario`` as cells, write its folder, print the headline (with intervals)."""
    seed = scenario.simulation.seed if args.seed is None else int(args.seed)
    out = check_out_dir(args.out) if args.out else default_out(scenario.name)
    c = scenario.cells
    with run_folder(out, "run (cells)", resolved_config(scenario, seed)) as folder:
        ex, close = make_executor(getattr(args, "workers", None))
        t0 = time.perf_counter()
        try:
            res = run_cells(scenario, seed, max_replicas=c.max_replicas, sample=c.sample, executor=ex,
                            windows=c.windows, window_s=c.window_s, warmup_s=c.warmup_s,
                            max_work=getattr(args, "max_work", None),
                            progress=False if getattr(args, "quiet", False) else None)
        finally:
            close()
        wall = time.perf_counter() - t0
        s = res.summary
        s["warnings"] = scenario_warnings(scenario)   # deployments and sites no tenant can use
        folder.write_json("summary.json", s)
        rows = [dict(cell=i, site=res.cells[i].site, replicas=sum(res.cells[i].replicas), **r["totals"])
                for i, r in sorted(res.per_cell.items())]
        folder.write_with("cells.csv", lambda t: pd.DataFrame(rows).to_csv(t, index=False))
        write_html_report(out, f"sovsim cells: {scenario.name} (seed {seed})", s, [],
                          resolved_config(scenario, seed), scenario_sources_rows(scenario))
        folder.adopt("report.html")
    if args.json:
        print(json.dumps(s, default=json_default))
    elif not args.quiet:
        print(format_cells(s))
        print(f"\nwrote {out}/: config.json, summary.json, cells.csv, report.html   ({wall:.1f} s wall)",
              file=sys.stdout)
    return 0
