"""Competitors: what do competitor capacity limits, SLA variability and a price response to
share loss do to our 36-month margin and share?

Cells on the 16-GPU ``small`` forecast (market + windowed serving + ledger), each with
``--replications`` seeds paired across cells (common random numbers), switching the three
mechanisms of ``[market.competition]`` (sim/market/competition.py,
models/market/parameters_competition.csv):

* ``static``   -- as before the mechanisms: unlimited competitor capacity, each competitor's
  constant ``sla_attainment``, prices moved by list-price cuts only;
* ``capacity`` -- capacity limits only (AWS and Azure 10, eu_alt 1.5 months of the market's
  t = 0 RFP volume, ~51,800 and ~7,800 contracted tokens/s at t = 0, x1.5 a year; a
  competitor at capacity does not bid for new RFPs);
* ``sla``      -- monthly delivered-SLA draws only (Beta, mean = sla_attainment);
* ``response`` -- the price response only (multiplier (trailing 6-month award share /
  t = 0 share)^0.5 in [0.5, 1] of the t = 0 price);
* ``all``      -- the three together (the default forecast).

Per run: the 36-month cumulative gross margin, the sovereign share of contracted demand
(mean of the last 12 months), the months a competitor was at capacity and its mean price
multiplier; per cell the mean with a 95 % t interval and the change against ``static``,
paired by seed, with its 95 % interval.

Traffic windows are fewer and shorter than the forecast's defaults (``WINDOWS``: 2 windows
of 30 s per month, as experiments/channels.py) so 5 cells x 16 forecasts fit in ~10 minutes
on one core; the money comes from the same ledger.  Writes ``results/competitors/``:
``competitors.png``, ``competitors_summary.csv``, ``competitors_runs.csv``,
``competitors_monthly.csv`` (mean per month and cell), ``report.html``.

Run:  python experiments/competitors.py [--quick] [--replications N] [--workers N]
"""
from __future__ import annotations

import time

import _common  # noqa: F401  (puts the project root on sys.path, sets the Agg backend)
from _common import executor, main_wrapper, out_dir, parser, save_png, write_csv, write_report

REPLICATIONS = 16
MONTHS = 36
WINDOWS = {"forecast.windows_per_month": 2, "forecast.window_s": 30.0, "forecast.warmup_s": 10.0}
COMPETITORS = ("aws", "azure", "eu_alt")
CELLS = {   # name: (capacity_limits, sla_draws, price_response)
    "static": (False, False, False),
    "capacity": (True, False, False),
    "sla": (False, True, False),
    "response": (False, False, True),
    "all": (True, True, True),
}
COLUMNS = (("month", "share", "revenue_eur", "gross_margin_eur", "contracts_active", "sla_attainment")
           + tuple(f"{p}{c}" for c in COMPETITORS for p in ("sla_", "capacity_used_", "available_", "price_in_",
                                                          "window_share_", "award_share_")))


def scenario_for(cell: str, months: int, sets: tuple = ()):
    from sim.scenario import load_scenario, with_overrides
    from sim.study.sweep import apply_sets

    cap, sla, resp = CELLS[cell]
    over = dict(WINDOWS, **{"forecast.months": months, "market.competition.capacity_limits": cap,
                            "market.competition.sla_draws": sla, "market.competition.price_response": resp})
    sc = with_overrides(load_scenario("small"), over)
    return apply_sets(sc, list(sets)) if sets else sc


def one(task):
    """One forecast: (cell, seed, months, sets) -> its monthly table (the columns above)."""
    from sim.forecast.forecast import simulate_forecast

    cell, seed, months, sets = task
    r = simulate_forecast(scenario_for(cell, months, sets), seed)
    df = r.monthly[list(COLUMNS)].copy()
    for c in COMPETITORS:
        df[f"price_factor_{c}"] = [row[f"price_factor_{c}"] for row in r.market.monthly_log[:len(df)]]
    df.insert(0, "seed", seed)
    df.insert(0, "cell", cell)
    return df


def per_run(monthly):
    import pandas as pd

    rows = []
    for (cell, seed), g in monthly.groupby(["cell", "seed"], sort=False):
        g = g.sort_values("month")
        tail = g.tail(min(12, len(g)))
        row = {"cell": cell, "seed": seed,
               "cum_margin_eur": float(g["gross_margin_eur"].sum()),
               "cum_revenue_eur": float(g["revenue_eur"].sum()),
               "sovereign_share": float(tail["share"].mean())}
        for c in COMPETITORS:
            row[f"months_unavailable_{c}"] = int((~g[f"available_{c}"].astype(bool)).sum())
            row[f"mean_price_factor_{c}"] = float(g[f"price_factor_{c}"].mean())
        rows.append(row)
    return pd.DataFrame(rows)


STATS = (("cum_margin_eur", "cum_revenue_eur", "sovereign_share")
         + tuple(f"{k}_{c}" for c in COMPETITORS for k in ("months_unavailable", "mean_price_factor")))


def summarise(runs):
    import pandas as pd
    from sim.core.stats import mean_ci

    base = runs[runs.cell == "static"].set_index("seed")
    out = []
    for cell, (cap, sla, resp) in CELLS.items():
        g = runs[runs.cell == cell].set_index("seed").sort_index()
        row = {"cell": cell, "capacity_limits": cap, "sla_draws": sla, "price_response": resp, "reps": len(g)}
        for col in STATS:
            r = mean_ci(g[col].to_numpy(dtype=float))
            row[col], row[col + "_ci95"] = r.mean, r.half_width
        for col in ("cum_margin_eur", "sovereign_share"):
            r = mean_ci((g[col] - base[col].reindex(g.index)).to_numpy(dtype=float))
            row[f"d_{col}_vs_static"], row[f"d_{col}_vs_static_ci95"] = r.mean, r.half_width
        out.append(row)
    return pd.DataFrame(out)


def plot(summary, mean_monthly, out, reps: int, months: int):
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    cells = [c for c in CELLS if c != "static"]
    x = np.arange(len(cells))
    s = summary.set_index("cell")
    for ax, col, scale, unit, title in (
            (axes[0], "d_cum_margin_eur_vs_static", 1e3, "k EUR", f"Change of {months}-month cumulative margin vs static"),
            (axes[1], "d_sovereign_share_vs_static", 0.01, "percentage points", "Change of sovereign share (last 12 months) vs static")):
        y = np.array([s.loc[c, col] for c in cells]) / scale
        e = np.nan_to_num(np.array([s.loc[c, col + "_ci95"] for c in cells], dtype=float)) / scale
        ax.bar(x, y, yerr=e, capsize=5, color=["C1", "C2", "C3", "C4"])
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_xticks(x, cells)
        ax.set_ylabel(unit)
        ax.set_title(title, fontsize=10)
    g = mean_monthly[mean_monthly.cell == "all"]
    for c in COMPETITORS:
        axes[2].plot(g["month"], g[f"price_factor_{c}"], label=f"{c}: price multiplier")
        axes[2].plot(g["month"], 1.0 - g[f"available_{c}"].astype(float), ls=":", label=f"{c}: share of runs not bidding (capacity or shortage)")
    axes[2].set_xlabel("month")
    axes[2].set_ylim(-0.02, 1.05)
    axes[2].set_title("All mechanisms: mean price multiplier and runs not bidding", fontsize=10)
    axes[2].legend(fontsize=7)
    fig.suptitle(f"Competitor capacity, SLA draws and price response on the 16-GPU forecast: {reps} paired seeds per cell, "
                 "mean and 95 % CI", fontsize=11)
    fig.tight_layout()
    return save_png(fig, out, "competitors")


def main() -> int:
    import pandas as pd

    p = parser(__file__, __doc__)
    args = p.parse_args()
    reps = args.replications or (1 if args.quick else REPLICATIONS)
    months = 3 if args.quick else MONTHS
    sets = tuple(args.set)
    scenario_for("static", months, sets)   # a bad --set is refused before any run
    tasks = [(cell, args.seed + i, months, sets) for cell in CELLS for i in range(reps)]
    t0 = time.perf_counter()
    with executor(args) as ex:
        frames = list(ex.map(one, tasks)) if ex is not None else [one(t) for t in tasks]
    wall = time.perf_counter() - t0
    monthly = pd.concat(frames, ignore_index=True)
    for c in COMPETITORS:
        monthly[f"available_{c}"] = monthly[f"available_{c}"].astype(float)
    runs = per_run(monthly)
    summary = summarise(runs)
    out = out_dir(args)
    mean_monthly = monthly.drop(columns=["seed"]).groupby(["cell", "month"], sort=False).mean().reset_index()
    write_csv(summary, out, "competitors_summary")
    write_csv(runs, out, "competitors_runs")
    write_csv(mean_monthly, out, "competitors_monthly")
    png = plot(summary, mean_monthly, out, reps, months)
    headline = {r["cell"]: {k: r[k] for k in ("reps", "cum_margin_eur", "cum_margin_eur_ci95", "d_cum_margin_eur_vs_static",
                                              "d_cum_margin_eur_vs_static_ci95", "sovereign_share",
                                              "d_sovereign_share_vs_static", "d_sovereign_share_vs_static_ci95")}
                for r in summary.to_dict("records")}
    write_report(out, "Competitors: capacity, SLA draws and price response", headline,
                 [("Margin and share against the static competitors; price multipliers and capacity", png)],
                 scenario_for("all", months, sets))
    pd.set_option("display.width", 240)
    show = summary[["cell", "reps", "cum_margin_eur", "cum_margin_eur_ci95", "d_cum_margin_eur_vs_static",
                    "d_cum_margin_eur_vs_static_ci95", "sovereign_share", "d_sovereign_share_vs_static",
                    "d_sovereign_share_vs_static_ci95", "months_unavailable_eu_alt", "mean_price_factor_eu_alt"]]
    print(show.to_string(index=False, float_format=lambda v: f"{v:,.4g}"))
    print(f"{len(tasks)} forecasts in {wall:.1f} s wall; wrote {out}/competitors.png, competitors_summary.csv, "
          "competitors_runs.csv, competitors_monthly.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main_wrapper(main))
