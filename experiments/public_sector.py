"""Public-sector anchors: what do they do to revenue visibility and risk?

Four cells on the 16-GPU ``small`` forecast (market + windowed serving + ledger), each with
``--replications`` seeds paired across cells (common random numbers):

* ``no_anchors``: the public-sector mechanisms off (no anchor awards, list price, no
  cancellations, no slips: ``market.public_sector.enabled = false``);
* ``anchors``: anchor awards and the public price, no cancellation or slip risk;
* ``anchors_risk``: the defaults (models/market/parameters_public_sector.csv): anchors, public
  price, budget-shift cancellations and start slips;
* ``anchors_risk_public``: as ``anchors_risk`` with access to public AI capacity (the EU AI
  gigafactories) for public-sector tenants from its lead time on.

Per run: the contracted backlog at the end of month 36 (``backlog_eur``), revenue visibility
as backlog coverage (backlog / mean monthly revenue of the last 12 months, in months), the
36-month cumulative revenue and gross margin, the contracted value cancelled; per cell the
mean with a 95 % t interval, the across-seed standard deviation of the margin (risk), and
the change against ``no_anchors`` paired by seed.

Traffic windows are fewer and shorter than the forecast's defaults (``WINDOWS``: 4 windows of
40 s per month instead of 12 of 80 s) to keep 4 x reps forecasts within minutes; the money
comes from the same ledger.  Writes ``results/public_sector/``: ``public_sector.png``,
``public_sector_summary.csv``, ``public_sector_monthly.csv`` (mean per month and cell).

Run:  python experiments/public_sector.py [--quick] [--replications N]
"""
from __future__ import annotations

import time

import _common  # noqa: F401  (puts the project root on sys.path, sets the Agg backend)
from _common import executor, main_wrapper, out_dir, parser, save_png, write_csv, write_report

REPLICATIONS = 8
MONTHS = 36
WINDOWS = {"forecast.windows_per_month": 4, "forecast.window_s": 40.0, "forecast.warmup_s": 10.0}
CELLS = {
    "no_anchors": {"enabled": False},
    "anchors": {"cancel_rate_per_year": 0.0, "slip_prob": 0.0},
    "anchors_risk": {},
    "anchors_risk_public": {"capacity_access": True},
}
COLUMNS = ("month", "backlog_eur", "backlog_signed_eur", "backlog_recognised_eur", "backlog_cancelled_eur",
           "contracts_cancelled", "contracts_active", "revenue_eur", "cost_eur", "sla_credits_eur",
           "gross_margin_eur", "sla_attainment", "public_capacity_gpus", "public_capacity_cost_eur")


def scenario_for(cell: str, months: int):
    from sim.scenario import load_scenario, with_overrides

    over = dict(WINDOWS, **{"forecast.months": months})
    over.update({f"market.public_sector.{k}": v for k, v in CELLS[cell].items()})
    return with_overrides(load_scenario("small"), over)


def one(task):
    """One forecast: (cell, seed, months) -> its monthly table (the columns above)."""
    from sim.forecast.forecast import simulate_forecast

    cell, seed, months = task
    r = simulate_forecast(scenario_for(cell, months), seed)
    df = r.monthly[list(COLUMNS)].copy()
    df.insert(0, "seed", seed)
    df.insert(0, "cell", cell)
    df["backlog_opening_eur"] = r.summary["backlog"]["opening_eur"]
    return df


def per_run(monthly):
    """One row per (cell, seed)."""
    import pandas as pd

    rows = []
    for (cell, seed), g in monthly.groupby(["cell", "seed"], sort=False):
        g = g.sort_values("month")
        tail = g.tail(min(12, len(g)))
        rev_month = float(tail["revenue_eur"].mean())
        end = float(g["backlog_eur"].iloc[-1])
        rows.append({"cell": cell, "seed": seed, "backlog_end_eur": end,
                     "coverage_months": end / rev_month if rev_month > 0 else float("nan"),
                     "cum_revenue_eur": float(g["revenue_eur"].sum()),
                     "cum_margin_eur": float(g["gross_margin_eur"].sum()),
                     "cancelled_eur": float(g["backlog_cancelled_eur"].sum()),
                     "contracts_cancelled": int(g["contracts_cancelled"].sum()),
                     "public_capacity_cost_eur": float(g["public_capacity_cost_eur"].sum()),
                     "sla_attainment_mean": float(g["sla_attainment"].mean())})
    return pd.DataFrame(rows)


def summarise(runs):
    import numpy as np
    import pandas as pd
    from sim.core.stats import mean_ci as _mean_ci

    def mean_ci(x):
        r = _mean_ci(x)
        return r.mean, r.half_width

    base = runs[runs.cell == "no_anchors"].set_index("seed")
    out = []
    for cell in CELLS:
        g = runs[runs.cell == cell].set_index("seed").sort_index()
        row = {"cell": cell, "reps": len(g)}
        for col in ("backlog_end_eur", "coverage_months", "cum_revenue_eur", "cum_margin_eur", "cancelled_eur",
                    "public_capacity_cost_eur", "sla_attainment_mean"):
            m, h = mean_ci(g[col].to_numpy(dtype=float))
            row[col] = m
            row[col + "_ci95"] = h
        row["cum_margin_sd_eur"] = float(np.std(g["cum_margin_eur"], ddof=1)) if len(g) > 1 else float("nan")
        for col in ("backlog_end_eur", "coverage_months", "cum_margin_eur"):
            d = (g[col] - base[col].reindex(g.index)).to_numpy(dtype=float)
            m, h = mean_ci(d)
            row[f"d_{col}_vs_no_anchors"] = m
            row[f"d_{col}_vs_no_anchors_ci95"] = h
        out.append(row)
    return pd.DataFrame(out)


def plot(monthly, summary, out, reps: int):
    import matplotlib.pyplot as plt
    import numpy as np
    from sim.core.stats import mean_ci

    colours = dict(zip(CELLS, ["0.5", "tab:blue", "tab:orange", "tab:green"]))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    for cell in CELLS:
        g = monthly[monthly.cell == cell]
        months = sorted(g.month.unique())
        stats = [mean_ci(g[g.month == k].backlog_eur.to_numpy(dtype=float)) for k in months]
        mean = np.array([s.mean for s in stats]) / 1e6
        half = np.nan_to_num(np.array([s.half_width for s in stats], dtype=float)) / 1e6
        ax.plot(months, mean, label=cell, color=colours[cell])
        ax.fill_between(months, mean - half, mean + half, alpha=0.15, color=colours[cell])
    ax.set_xlabel("month")
    ax.set_ylabel("M EUR")
    ax.set_title("Contracted backlog (backlog_eur), month end")
    ax.legend(fontsize=8)
    for ax, col, title, unit, scale in (
            (axes[1], "coverage_months", "Revenue visibility: backlog / monthly revenue", "months", 1.0),
            (axes[2], "d_cum_margin_eur_vs_no_anchors", "36-month gross margin, change vs no_anchors (paired seeds)",
             "thousand EUR", 1e3)):
        x = np.arange(len(summary))
        ax.bar(x, summary[col] / scale, yerr=np.nan_to_num(summary[col + "_ci95"] / scale), capsize=4,
               color=[colours[c] for c in summary.cell])
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xticks(x, summary.cell, rotation=20, fontsize=8)
        ax.set_ylabel(unit)
        ax.set_title(title, fontsize=10)
    fig.suptitle(f"Public-sector anchors on the 16-GPU forecast: {reps} paired seeds per cell, mean and 95 % CI")
    fig.tight_layout()
    return save_png(fig, out, "public_sector")


def main() -> int:
    import pandas as pd

    p = parser(__file__, __doc__)
    args = p.parse_args()
    reps = args.replications or (1 if args.quick else REPLICATIONS)
    months = 3 if args.quick else MONTHS
    tasks = [(cell, args.seed + i, months) for cell in CELLS for i in range(reps)]
    t0 = time.perf_counter()
    with executor(args) as ex:
        frames = list(ex.map(one, tasks)) if ex is not None else [one(t) for t in tasks]
    wall = time.perf_counter() - t0
    monthly = pd.concat(frames, ignore_index=True)
    runs = per_run(monthly)
    summary = summarise(runs)
    out = out_dir(args)
    mean_monthly = (monthly.drop(columns=["seed"]).groupby(["cell", "month"], sort=False).mean().reset_index())
    write_csv(summary, out, "public_sector_summary")
    write_csv(mean_monthly, out, "public_sector_monthly")
    png = plot(monthly, summary, out, reps)
    headline = {r["cell"]: {k: r[k] for k in ("backlog_end_eur", "coverage_months", "cum_margin_eur",
                                              "d_cum_margin_eur_vs_no_anchors", "cum_margin_sd_eur", "cancelled_eur")}
                for r in summary.to_dict("records")}
    write_report(out, "Public-sector anchors: revenue visibility and risk", headline,
                 [("Backlog, backlog coverage and 36-month margin per cell", png)], scenario_for("anchors_risk", months))
    pd.set_option("display.width", 220)
    show = summary[["cell", "backlog_end_eur", "backlog_end_eur_ci95", "coverage_months", "coverage_months_ci95",
                    "cum_margin_eur", "cum_margin_eur_ci95", "cum_margin_sd_eur", "d_cum_margin_eur_vs_no_anchors",
                    "d_cum_margin_eur_vs_no_anchors_ci95", "cancelled_eur"]]
    print(show.to_string(index=False, float_format=lambda v: f"{v:,.3g}"))
    print(f"{len(tasks)} forecasts in {wall:.1f} s wall; wrote {out}/public_sector.png, public_sector_summary.csv, "
          "public_sector_monthly.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main_wrapper(main))
