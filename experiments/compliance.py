"""Does obtaining BSI C5 at the German site, or SecNumCloud at the French site, pay within 36
months?

Cells on the 16-GPU ``small`` forecast (market + windowed serving + ledger), each with
``--replications`` seeds paired across cells (common random numbers):

* ``none`` -- the small scenario with neither BSI C5 at fra-1 (DE) nor SecNumCloud at par-1
  (FR): par-1 keeps HDS and ISO 27001, fra-1 and ams-1 ISO 27001.  Under the default buyer
  rules (models/market/buyer_rules.csv) the sovereign offer is then gated out of French and
  German public-sector RFPs and German healthcare RFPs;
* ``c5_de`` -- ``none`` + BSI C5 planned at fra-1 from month 0 (one-off 150 k EUR over its 12
  months to obtain, then 60 k EUR a year; models/market/certifications.csv, assumptions);
* ``snc_fr`` -- ``none`` + SecNumCloud planned at par-1 from month 0 (1,000 k EUR over 24
  months, then 100 k EUR a year);
* ``held`` -- both held from t = 0 (the small scenario as shipped; its yearly costs only): the
  value of having certified before the forecast starts.

Every cell serves each tenant where its buyer's certifications are held
(``market.compliance.tenant_residency = "buyer"``: a German healthcare tenant needing C5 runs
at fra-1, a buyer of a country without a rule at its vertical's sites without certification),
so a won contract can be served.  The gate applies at award time and the t = 0 book (docs/market.md, Compliance); public
procurement takes 18-36 months, so a certification held at month 24 reaches only the awards
after it.  Per run: the 36-month cumulative gross margin, the compliance and certification
costs, the gated awards (RFPs the gate removed the sovereign offer from), revenue and the
contracts won in the gated buyer groups; per cell the mean with a 95 % t interval and the
change against ``none``, paired by seed (the answer: does the margin delta's interval lie
above 0?).

Traffic windows are fewer and shorter than the forecast's defaults (``WINDOWS``: 2 windows of
30 s per month) to keep 4 cells x reps forecasts within ~10 CPU-minutes; the money comes
from the same ledger.  Writes ``results/compliance/``: ``compliance.png``,
``compliance_summary.csv``, ``compliance_runs.csv``, ``compliance_monthly.csv`` (mean per
month and cell), ``report.html``.

Run:  python experiments/compliance.py [--quick] [--replications N] [--workers N]
"""
from __future__ import annotations

import time

import _common  # noqa: F401  (puts the project root on sys.path, sets the Agg backend)
from _common import executor, main_wrapper, out_dir, parser, save_png, write_csv, write_report

REPLICATIONS = 24
MONTHS = 36
WINDOWS = {"forecast.windows_per_month": 2, "forecast.window_s": 30.0, "forecast.warmup_s": 10.0}
CELLS = ("none", "c5_de", "snc_fr", "held")
LABELS = {"none": "neither (gated)", "c5_de": "obtain BSI C5 at fra-1 (DE)",
          "snc_fr": "obtain SecNumCloud at par-1 (FR)", "held": "both held from t = 0"}
COLUMNS = ("month", "revenue_eur", "gross_margin_eur", "compliance_cost_eur", "certification_cost_eur",
           "ai_act_cost_eur", "dora_cost_eur", "gated_awards", "certifications_held", "contracts_active", "share")
GATED_GROUPS = (("public_sector", "FR"), ("public_sector", "DE"), ("healthcare", "DE"))


def scenario_for(cell: str, months: int, sets: tuple = ()):
    from sim.scenario import load_scenario, with_overrides
    from sim.study.sweep import apply_sets

    sc = load_scenario("small")
    idx = {s.name: i for i, s in enumerate(sc.sites)}
    # each tenant is served where its buyer's certifications are held (docs/market.md, Compliance)
    over = dict(WINDOWS, **{"forecast.months": months, "market.compliance.tenant_residency": "buyer"})
    if cell != "held":
        over[f"sites.{idx['par-1']}.certifications"] = ["HDS", "ISO27001"]
        over[f"sites.{idx['fra-1']}.certifications"] = ["ISO27001"]
    if cell == "c5_de":
        over[f"sites.{idx['fra-1']}.planned_certifications"] = [{"name": "BSI-C5", "start_month": 0}]
    if cell == "snc_fr":
        over[f"sites.{idx['par-1']}.planned_certifications"] = [{"name": "SecNumCloud", "start_month": 0}]
    sc = with_overrides(sc, over)
    return apply_sets(sc, list(sets)) if sets else sc


def one(task):
    """One forecast: (cell, seed, months, sets) -> (its monthly table, the contracts won per gated group)."""
    from sim.forecast.forecast import simulate_forecast
    from sim.market.market import SOVEREIGN

    cell, seed, months, sets = task
    r = simulate_forecast(scenario_for(cell, months, sets), seed)
    df = r.monthly[list(COLUMNS)].copy()
    df.insert(0, "seed", seed)
    df.insert(0, "cell", cell)
    won = {f"won_{v}_{c}": sum(1 for k in r.market.contracts if k.provider == SOVEREIGN and not k.initial
                               and k.vertical == v and k.buyer_country == c) for v, c in GATED_GROUPS}
    return df, dict(cell=cell, seed=seed, **won)


def per_run(monthly, won):
    import pandas as pd

    rows = []
    for (cell, seed), g in monthly.groupby(["cell", "seed"], sort=False):
        rows.append({"cell": cell, "seed": seed,
                     "cum_margin_eur": float(g["gross_margin_eur"].sum()),
                     "cum_revenue_eur": float(g["revenue_eur"].sum()),
                     "cum_compliance_cost_eur": float(g["compliance_cost_eur"].sum()),
                     "cum_certification_cost_eur": float(g["certification_cost_eur"].sum()),
                     "gated_awards": int(g["gated_awards"].sum())})
    return pd.DataFrame(rows).merge(pd.DataFrame(won), on=["cell", "seed"])


STATS = ("cum_margin_eur", "cum_revenue_eur", "cum_compliance_cost_eur", "cum_certification_cost_eur", "gated_awards",
         *(f"won_{v}_{c}" for v, c in GATED_GROUPS))


def summarise(runs):
    import pandas as pd
    from sim.core.stats import mean_ci

    base = runs[runs.cell == "none"].set_index("seed")
    out = []
    for cell in CELLS:
        g = runs[runs.cell == cell].set_index("seed").sort_index()
        row = {"cell": cell, "case": LABELS[cell], "reps": len(g)}
        for col in STATS:
            r = mean_ci(g[col].to_numpy(dtype=float))
            row[col], row[col + "_ci95"] = r.mean, r.half_width
        for col in ("cum_margin_eur", "cum_revenue_eur", "cum_compliance_cost_eur", "gated_awards"):
            r = mean_ci((g[col] - base[col].reindex(g.index)).to_numpy(dtype=float))
            row[f"d_{col}_vs_none"], row[f"d_{col}_vs_none_ci95"] = r.mean, r.half_width
        out.append(row)
    return pd.DataFrame(out)


def plot(summary, mean_monthly, out, reps: int, months: int):
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    x = np.arange(len(CELLS))
    s = summary.set_index("cell").loc[list(CELLS)]
    y = s["d_cum_margin_eur_vs_none"].to_numpy(float) / 1e3
    e = np.nan_to_num(s["d_cum_margin_eur_vs_none_ci95"].to_numpy(float)) / 1e3
    axes[0].bar(x, y, yerr=e, capsize=5, color=["0.6", "tab:blue", "tab:red", "tab:green"])
    axes[0].axhline(0, color="k", lw=0.8)
    axes[0].set_xticks(x, [LABELS[c] for c in CELLS], rotation=15, fontsize=8)
    axes[0].set_ylabel("k EUR")
    axes[0].set_title(f"{months}-month margin change vs neither (paired)")
    axes[1].bar(x, s["gated_awards"].to_numpy(float), yerr=np.nan_to_num(s["gated_awards_ci95"].to_numpy(float)),
                capsize=5, color=["0.6", "tab:blue", "tab:red", "tab:green"])
    axes[1].set_xticks(x, [LABELS[c] for c in CELLS], rotation=15, fontsize=8)
    axes[1].set_ylabel("RFP awards")
    axes[1].set_title("Gated awards (the gate removed the sovereign offer)")
    for cell, color in zip(CELLS, ["0.6", "tab:blue", "tab:red", "tab:green"]):
        g = mean_monthly[mean_monthly.cell == cell].sort_values("month")
        b = mean_monthly[mean_monthly.cell == "none"].sort_values("month")
        axes[2].plot(g["month"], (g["gross_margin_eur"].cumsum().to_numpy() - b["gross_margin_eur"].cumsum().to_numpy()) / 1e3,
                     color=color, label=LABELS[cell])
    axes[2].axhline(0, color="k", lw=0.8)
    axes[2].set_xlabel("month")
    axes[2].set_ylabel("k EUR")
    axes[2].set_title("Cumulative margin change vs neither (mean)")
    axes[2].legend(fontsize=8)
    fig.suptitle(f"Certifications as a cost and a gate on the 16-GPU forecast: {reps} paired seeds per case, mean and 95 % CI")
    fig.tight_layout()
    return save_png(fig, out, "compliance")


def main() -> int:
    import pandas as pd

    p = parser(__file__, __doc__)
    args = p.parse_args()
    reps = args.replications or (1 if args.quick else REPLICATIONS)
    months = 3 if args.quick else MONTHS
    sets = tuple(args.set)
    scenario_for("none", months, sets)   # a bad --set is refused before any run
    tasks = [(cell, args.seed + i, months, sets) for cell in CELLS for i in range(reps)]
    t0 = time.perf_counter()
    with executor(args) as ex:
        res = list(ex.map(one, tasks)) if ex is not None else [one(t) for t in tasks]
    wall = time.perf_counter() - t0
    monthly = pd.concat([r[0] for r in res], ignore_index=True)
    runs = per_run(monthly, [r[1] for r in res])
    summary = summarise(runs)
    out = out_dir(args)
    mean_monthly = monthly.drop(columns=["seed"]).groupby(["cell", "month"], sort=False).mean().reset_index()
    write_csv(summary, out, "compliance_summary")
    write_csv(runs, out, "compliance_runs")
    write_csv(mean_monthly, out, "compliance_monthly")
    png = plot(summary, mean_monthly, out, reps, months)
    headline = {r["cell"]: {k: r[k] for k in ("cum_margin_eur", "cum_margin_eur_ci95", "d_cum_margin_eur_vs_none",
                                              "d_cum_margin_eur_vs_none_ci95", "cum_certification_cost_eur",
                                              "gated_awards", "gated_awards_ci95")}
                for r in summary.to_dict("records")}
    write_report(out, "Compliance: does a certification pay within 36 months?", headline,
                 [("36-month margin change and gated awards per certification case", png)],
                 scenario_for("snc_fr", months, sets))
    pd.set_option("display.width", 240)
    show = summary[["cell", "reps", "cum_margin_eur", "cum_margin_eur_ci95", "d_cum_margin_eur_vs_none",
                    "d_cum_margin_eur_vs_none_ci95", "cum_certification_cost_eur", "gated_awards", "gated_awards_ci95",
                    "d_cum_revenue_eur_vs_none", "d_cum_revenue_eur_vs_none_ci95"]]
    print(show.to_string(index=False, float_format=lambda v: f"{v:,.4g}"))
    print(f"{len(tasks)} forecasts in {wall:.1f} s wall; wrote {out}/compliance.png, compliance_summary.csv, "
          "compliance_runs.csv, compliance_monthly.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main_wrapper(main))
