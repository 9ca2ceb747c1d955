"""Sovereignty-gap experiment: what happens to share, utilisation and margin when US
hyperscalers close the sovereignty gap faster or slower, with and without a price war.

Grid: gap-closing speed {never, slow, base, fast} x price scenario {no war; hyperscalers cut
25% at months 6 and 18 while the sovereign provider holds its price; the same war with the
sovereign provider matching every cut}; ``--reps`` replications each (seeds 1..reps, common
random numbers across the grid). Output in ``--out`` (default results/market/):
``sovereignty_gap.png`` (share, utilisation and monthly gross margin, mean and 95% band),
``sovereignty_gap_summary.csv`` (per cell: cumulative margin, final share, mean utilisation
with 95% CI half-widths, and the change of cumulative margin against the base-gap/no-war
cell paired by seed) and ``sovereignty_gap_monthly.csv``.

Two modes:

* default: each point is ``sim.forecast.forecast.run_forecast(scenario, seed)`` — the
  multi-year forecast (market + capacity + windowed serving), whose delivered SLA feeds
  churn.
* ``--market-only``: the market layer alone (``sim.market.market.market_only_forecast``) with a
  CONSTANT assumed delivered SLA (``--sla``, default 0.99), revenue = contracted demand at
  contract prices, and a fluid leased-GPU fleet (block 'fallback' of
  models/market/parameters.csv) for cost and utilisation: fast, for wide sweeps; its
  figures say "market-only" in the title.

Run:  PYTHONPATH=$PWD python experiments/sovereignty_gap.py --market-only --reps 10
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from market_common import (add_common_args, base_scenario, check_args, main_guard, mean_ci, run_all,
                           with_market)
from sim.scenario.market import MarketSpec, fallback_parameters

GAP_SPEEDS = {
    # name -> midpoint month of every hyperscaler curve (None: keep the table's; "never": no closing)
    "never": "never",
    "slow": 36.0,
    "base": None,
    "fast": 9.0,
}
PRICE_SCENARIOS = ("no_war", "war_hold", "war_match")
WAR_MONTHS = (6.0, 18.0)
WAR_FACTOR = 0.75


def variant(spec: MarketSpec, gap: str, price: str) -> MarketSpec:
    d = spec.model_dump(mode="python")
    mid = GAP_SPEEDS[gap]
    for c in d["competitors"]:
        if c["kind"] != "hyperscaler":
            continue
        for curve in c["sovereignty"].values():
            if mid == "never":
                curve["fit_end"] = curve["fit_start"]
            elif mid is not None:
                curve["midpoint_month"] = mid
    if price != "no_war":
        events = list(d.get("events", []))
        for c in d["competitors"]:
            if c["kind"] == "hyperscaler":
                events += [{"month": m, "kind": "price_cut", "provider": c["name"], "factor": WAR_FACTOR,
                            "duration_months": 0.0} for m in WAR_MONTHS]
        d["events"] = events
        d["sovereign"]["price_response"] = 1.0 if price == "war_match" else 0.0
    return MarketSpec.model_validate(d)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    args = p.parse_args()
    check_args(args)
    import pandas as pd

    base = base_scenario(args.scenario)
    fb = fallback_parameters()
    cells = [(g, pr) for pr in PRICE_SCENARIOS for g in GAP_SPEEDS]
    tasks, keys = [], []
    for g, pr in cells:
        sc = with_market(base, variant(base.market, g, pr))
        for seed in range(1, args.reps + 1):
            tasks.append((sc, seed, args.market_only, args.months, args.sla, fb))
            keys.append((g, pr, seed))
    t0 = time.perf_counter()
    frames = run_all(tasks, args.workers)
    wall = time.perf_counter() - t0
    monthly = pd.concat([f.assign(gap=g, price=pr, seed=s) for f, (g, pr, s) in zip(frames, keys)], ignore_index=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mode = "market-only (constant SLA %.3f, fluid fleet)" % args.sla if args.market_only else "full forecast"
    cols = ["month", "gap", "price", "seed", "share", "gpu_utilisation", "gross_margin_eur", "revenue_eur",
            "cost_eur", "contracts_active", "contracts_won", "contracts_lost", "sla_attainment"]
    if "request_utilisation" in monthly.columns:   # the load measure (gpu_utilisation is the busy share)
        cols.insert(cols.index("gpu_utilisation"), "request_utilisation")
    monthly[cols].to_csv(out / "sovereignty_gap_monthly.csv", index=False, float_format="%.6g")

    def cum_margin(g, pr):
        sub = monthly[(monthly.gap == g) & (monthly.price == pr)]
        return sub.groupby("seed").gross_margin_eur.sum().sort_index().to_numpy()

    ref = cum_margin("base", "no_war")
    rows = []
    for g, pr in cells:
        sub = monthly[(monthly.gap == g) & (monthly.price == pr)]
        per_seed = sub.groupby("seed")
        cum = per_seed.gross_margin_eur.sum().to_numpy()
        last = sub[sub.month == sub.month.max()].sort_values("seed")
        share = last.share.to_numpy()
        util = per_seed[util_column(monthly)].mean().to_numpy()
        rev = per_seed.revenue_eur.sum().to_numpy()
        row = {"gap": g, "price": pr, "reps": len(cum)}
        for name, x in (("cum_margin_eur", cum), ("final_share", share), ("mean_utilisation", util), ("cum_revenue_eur", rev)):
            m, h = mean_ci(x)
            row[name] = float(m)
            row[name + "_ci95"] = float(h)
        # paired by seed (common random numbers): the change against (base gap, no war)
        m, h = mean_ci(cum - ref)
        row["d_cum_margin_vs_base_eur"] = float(m)
        row["d_cum_margin_vs_base_eur_ci95"] = float(h)
        rows.append(row)
    summary = pd.DataFrame(rows)
    summary.to_csv(out / "sovereignty_gap_summary.csv", index=False)
    (out / "sovereignty_gap_meta.json").write_text(json.dumps(
        {"mode": mode, "reps": args.reps, "months": int(monthly.month.max()) + 1,
         "gap_midpoints": GAP_SPEEDS, "war_months": WAR_MONTHS, "war_factor": WAR_FACTOR}, indent=1))
    plot(monthly, out / "sovereignty_gap.png", mode, args.reps)
    pd.set_option("display.width", 200)
    print(f"{mode}: {len(tasks)} runs in {wall:.1f} s")
    fmt = summary.copy()
    for c in ("cum_margin_eur", "cum_revenue_eur", "d_cum_margin_vs_base_eur"):
        fmt[c] = [f"{m/1e6:.2f} ± {h/1e6:.2f} M" for m, h in zip(summary[c], summary[c + '_ci95'])]
    for c in ("final_share", "mean_utilisation"):
        fmt[c] = [f"{m:.3f} ± {h:.3f}" for m, h in zip(summary[c], summary[c + '_ci95'])]
    print(fmt[["gap", "price", "reps", "cum_margin_eur", "d_cum_margin_vs_base_eur", "final_share", "mean_utilisation"]].to_string(index=False))
    print(f"wrote {out}/sovereignty_gap.png, sovereignty_gap_summary.csv, sovereignty_gap_monthly.csv")
    return 0


def util_column(monthly) -> str:
    """The load measure when the table has it (the forecast's request utilisation), else the busy share."""
    return "request_utilisation" if "request_utilisation" in monthly.columns else "gpu_utilisation"


def plot(monthly, path: Path, mode: str, reps: int):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    util_label = ("request utilisation (load)" if util_column(monthly) == "request_utilisation"
                  else "busy share (time with any request in flight; not a load measure)")
    metrics = [("share", "sovereign share of contracted demand"), (util_column(monthly), util_label),
               ("gross_margin_eur", "gross margin, kEUR / month")]
    fig, axes = plt.subplots(len(metrics), len(PRICE_SCENARIOS), figsize=(13, 9), sharex=True, sharey="row")
    colors = dict(zip(GAP_SPEEDS, ["#1b9e77", "#7570b3", "#444444", "#d95f02"]))
    for j, pr in enumerate(PRICE_SCENARIOS):
        for i, (col, label) in enumerate(metrics):
            ax = axes[i, j]
            for g in GAP_SPEEDS:
                sub = monthly[(monthly.gap == g) & (monthly.price == pr)]
                wide = sub.pivot(index="seed", columns="month", values=col).to_numpy(dtype=float)
                scale = 1e-3 if col == "gross_margin_eur" else 1.0
                m, h = mean_ci(wide * scale)
                x = np.arange(wide.shape[1])
                ax.plot(x, m, color=colors[g], label=f"gap closes: {g}")
                lo, hi = m - h, m + h
                if col != "gross_margin_eur":          # shares and utilisations live in [0, 1]
                    lo, hi = np.clip(lo, 0, 1), np.clip(hi, 0, 1)
                ax.fill_between(x, lo, hi, color=colors[g], alpha=0.2, lw=0)
            if i == 0:
                ax.set_title({"no_war": "no price war", "war_hold": "hyperscaler price war, sovereign holds",
                              "war_match": "price war, sovereign matches"}[pr], fontsize=10)
            if j == 0:
                ax.set_ylabel(label, fontsize=9)
            if i == len(metrics) - 1:
                ax.set_xlabel("month")
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"Sovereignty gap and price war: mean and 95% band over {reps} replications — {mode}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main_guard(main)
