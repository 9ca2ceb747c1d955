"""Marketplace vs direct: what does selling through the hyperscalers' marketplaces do to the
36-month margin and to the sovereign share?

Cells on the 16-GPU ``small`` forecast (market + windowed serving + ledger), each with
``--replications`` seeds paired across cells (common random numbers):

* ``reach`` -- the share of RFPs from buyers bound to a hyperscaler platform (they buy only
  through its marketplace): 0, 0.2, 0.4, 0.6, split equally over aws, azure and gcp
  (assumption: no per-platform split of European AI buyers in the sources);
* ``listing`` -- ``listed``: the provider's offer is listed on the three marketplaces (a bound
  buyer may choose it, as a marketplace contract: 3 % fee, served on the platform's GPUs at a
  hosting fee, non-sovereign, lock-in with yearly migration to direct;
  models/market/parameters_channels.csv); ``unlisted``: a bound buyer never sees the sovereign
  offer; ``listed_fleet``: listed, but the marketplace traffic runs on the sovereign fleet
  (``hosted = false``: fee only, counts as sovereign).

Reach 0 is today's direct-only market (listed or not: nobody is bound).  Per run: the
36-month cumulative gross margin and its direct and marketplace parts, marketplace revenue
as a share of revenue, the sovereign share of contracted demand (mean of the last 12
months; hosted marketplace demand counts as non-sovereign), marketplace contracts in force
at the end and migrations to direct; per cell the mean with a 95 % t interval, the change
against reach 0 and (listed cells) the value of listing, listed - not listed, paired by seed.
Reach 0 is one cell (``reach0``): with nobody bound the listing changes nothing.

Traffic windows are fewer and shorter than the forecast's defaults (``WINDOWS``: 2 windows of
30 s per month) to keep 10 cells x reps forecasts within ~10-15 CPU-minutes; the money comes
from the same ledger.  Writes ``results/channels/``: ``channels.png``,
``channels_summary.csv``, ``channels_runs.csv``, ``channels_monthly.csv`` (mean per month
and cell), ``report.html``.

Run:  python experiments/channels.py [--quick] [--replications N] [--workers N]
"""
from __future__ import annotations

import time

import _common  # noqa: F401  (puts the project root on sys.path, sets the Agg backend)
from _common import executor, main_wrapper, out_dir, parser, save_png, write_csv, write_report

REPLICATIONS = 12
MONTHS = 36
WINDOWS = {"forecast.windows_per_month": 2, "forecast.window_s": 30.0, "forecast.warmup_s": 10.0}
PLATFORMS = ("aws", "azure", "gcp")
REACHES = (0.0, 0.2, 0.4, 0.6)
LISTINGS = {"listed": (True, True), "unlisted": (False, True), "listed_fleet": (True, False)}   # name: (listed, hosted)
CELLS = [("reach0", 0.0, "listed")] + [(f"reach{r:g}_{kind}", r, kind) for r in REACHES[1:] for kind in LISTINGS]
COLUMNS = ("month", "share", "revenue_eur", "gross_margin_eur", "direct_revenue_eur", "marketplace_revenue_eur",
           "marketplace_fee_eur", "marketplace_hosting_cost_eur", "direct_margin_eur", "marketplace_margin_eur",
           "marketplace_contracts_active", "marketplace_share", "channel_migrations", "contracts_active",
           "sla_attainment")


def scenario_for(cell: str, months: int, sets: tuple = ()):
    from sim.scenario import load_scenario, with_overrides
    from sim.study.sweep import apply_sets

    _, reach, kind = next(c for c in CELLS if c[0] == cell)
    listed, hosted = LISTINGS[kind]
    over = dict(WINDOWS, **{"forecast.months": months})
    for i, _name in enumerate(PLATFORMS):
        over[f"market.channels.marketplaces.{i}.reach"] = reach / len(PLATFORMS)
        over[f"market.channels.marketplaces.{i}.listed"] = listed
        over[f"market.channels.marketplaces.{i}.hosted"] = hosted
    sc = with_overrides(load_scenario("small"), over)
    return apply_sets(sc, list(sets)) if sets else sc


def one(task):
    """One forecast: (cell, seed, months, sets) -> its monthly table (the columns above)."""
    from sim.forecast.forecast import simulate_forecast

    cell, seed, months, sets = task
    r = simulate_forecast(scenario_for(cell, months, sets), seed)
    df = r.monthly[list(COLUMNS)].copy()
    df.insert(0, "seed", seed)
    df.insert(0, "cell", cell)
    return df


def per_run(monthly):
    import pandas as pd

    rows = []
    for (cell, seed), g in monthly.groupby(["cell", "seed"], sort=False):
        g = g.sort_values("month")
        tail = g.tail(min(12, len(g)))
        rev = float(g["revenue_eur"].sum())
        rows.append({"cell": cell, "seed": seed,
                     "cum_margin_eur": float(g["gross_margin_eur"].sum()),
                     "cum_direct_margin_eur": float(g["direct_margin_eur"].sum()),
                     "cum_marketplace_margin_eur": float(g["marketplace_margin_eur"].sum()),
                     "cum_revenue_eur": rev,
                     "marketplace_revenue_share": float(g["marketplace_revenue_eur"].sum()) / rev if rev > 0 else 0.0,
                     "sovereign_share": float(tail["share"].mean()),
                     "marketplace_contracts_end": int(g["marketplace_contracts_active"].iloc[-1]),
                     "migrations": int(g["channel_migrations"].sum())})
    return pd.DataFrame(rows)


STATS = ("cum_margin_eur", "cum_direct_margin_eur", "cum_marketplace_margin_eur", "cum_revenue_eur",
         "marketplace_revenue_share", "sovereign_share", "marketplace_contracts_end", "migrations")


def summarise(runs):
    import pandas as pd
    from sim.core.stats import mean_ci

    base = runs[runs.cell == "reach0"].set_index("seed")
    out = []
    for cell, reach, kind in CELLS:
        g = runs[runs.cell == cell].set_index("seed").sort_index()
        row = {"cell": cell, "reach": reach, "listing": kind, "reps": len(g)}
        for col in STATS:
            r = mean_ci(g[col].to_numpy(dtype=float))
            row[col], row[col + "_ci95"] = r.mean, r.half_width
        other = (runs[runs.cell == f"reach{reach:g}_unlisted"].set_index("seed")
                 if kind != "unlisted" and reach > 0 else None)
        for col in ("cum_margin_eur", "sovereign_share"):
            r = mean_ci((g[col] - base[col].reindex(g.index)).to_numpy(dtype=float))
            row[f"d_{col}_vs_reach0"], row[f"d_{col}_vs_reach0_ci95"] = r.mean, r.half_width
            # the value of listing at this reach: listed - not listed, paired by seed
            r = mean_ci((g[col] - other[col].reindex(g.index)).to_numpy(dtype=float)) if other is not None else None
            row[f"d_{col}_listed_vs_unlisted"] = r.mean if r is not None else float("nan")
            row[f"d_{col}_listed_vs_unlisted_ci95"] = r.half_width if r is not None else float("nan")
        out.append(row)
    return pd.DataFrame(out)


def plot(summary, out, reps: int, months: int):
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    base = summary[summary.cell == "reach0"].iloc[0]
    for kind, style, label in (("listed", "o-", "listed, hosted on the platform's GPUs"), ("unlisted", "s--", "not listed"),
                               ("listed_fleet", "^:", "listed, served on the sovereign fleet")):
        g = summary[(summary.listing == kind) & (summary.reach > 0)]
        g = [base] + [r for _, r in g.iterrows()]
        x = np.array([r["reach"] for r in g])
        for ax, col, scale in ((axes[0], "cum_margin_eur", 1e6), (axes[1], "sovereign_share", 0.01),
                               (axes[2], "marketplace_revenue_share", 0.01)):
            y = np.array([r[col] for r in g]) / scale
            e = np.nan_to_num(np.array([r[col + "_ci95"] for r in g], dtype=float)) / scale
            ax.errorbar(x, y, yerr=e, fmt=style, capsize=4, label=label)
    axes[0].set_ylabel("M EUR")
    axes[0].set_title(f"{months}-month cumulative gross margin")
    axes[1].set_ylabel("%")
    axes[1].set_title("Sovereign share of contracted demand (last 12 months)")
    axes[2].set_ylabel("%")
    axes[2].set_title("Marketplace share of revenue")
    for ax in axes:
        ax.set_xlabel("marketplace reach (share of RFPs from platform-bound buyers)")
        ax.legend(fontsize=8)
    fig.suptitle(f"Marketplace vs direct on the 16-GPU forecast: {reps} paired seeds per cell, mean and 95 % CI")
    fig.tight_layout()
    return save_png(fig, out, "channels")


def main() -> int:
    import pandas as pd

    p = parser(__file__, __doc__)
    args = p.parse_args()
    reps = args.replications or (1 if args.quick else REPLICATIONS)
    months = 3 if args.quick else MONTHS
    sets = tuple(args.set)          # --set FIELD=VALUE on every cell's scenario (after the cell's own fields)
    scenario_for("reach0", months, sets)   # a bad --set is refused before any run
    tasks = [(cell, args.seed + i, months, sets) for cell, _, _ in CELLS for i in range(reps)]
    t0 = time.perf_counter()
    with executor(args) as ex:
        frames = list(ex.map(one, tasks)) if ex is not None else [one(t) for t in tasks]
    wall = time.perf_counter() - t0
    monthly = pd.concat(frames, ignore_index=True)
    runs = per_run(monthly)
    summary = summarise(runs)
    out = out_dir(args)
    mean_monthly = monthly.drop(columns=["seed"]).groupby(["cell", "month"], sort=False).mean().reset_index()
    write_csv(summary, out, "channels_summary")
    write_csv(runs, out, "channels_runs")
    write_csv(mean_monthly, out, "channels_monthly")
    png = plot(summary, out, reps, months)
    headline = {r["cell"]: {k: r[k] for k in ("cum_margin_eur", "d_cum_margin_eur_vs_reach0",
                                              "d_cum_margin_eur_vs_reach0_ci95", "d_cum_margin_eur_listed_vs_unlisted",
                                              "d_cum_margin_eur_listed_vs_unlisted_ci95", "sovereign_share",
                                              "d_sovereign_share_vs_reach0", "marketplace_revenue_share",
                                              "migrations")}
                for r in summary.to_dict("records")}
    write_report(out, "Marketplace vs direct: margin and sovereign share", headline,
                 [("36-month margin, sovereign share and marketplace revenue share by reach", png)],
                 scenario_for("reach0.4_listed", months, sets))   # the resolved scenario of one cell
    pd.set_option("display.width", 240)
    show = summary[["cell", "cum_margin_eur", "cum_margin_eur_ci95", "d_cum_margin_eur_vs_reach0",
                    "d_cum_margin_eur_vs_reach0_ci95", "sovereign_share", "d_sovereign_share_vs_reach0",
                    "d_sovereign_share_vs_reach0_ci95", "d_cum_margin_eur_listed_vs_unlisted",
                    "d_cum_margin_eur_listed_vs_unlisted_ci95", "marketplace_revenue_share", "migrations"]]
    print(show.to_string(index=False, float_format=lambda v: f"{v:,.3g}"))
    print(f"{len(tasks)} forecasts in {wall:.1f} s wall; wrote {out}/channels.png, channels_summary.csv, "
          "channels_runs.csv, channels_monthly.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main_wrapper(main))
