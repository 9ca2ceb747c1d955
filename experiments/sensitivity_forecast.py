"""One-at-a-time sensitivity of the 36-month margin on the FULL forecast (tornado): market,
simulated traffic and ledger, not the market layer alone.

experiments/sensitivity.py ``--market-only`` (results/market/tornado.png) varies the market
table on the market layer with a constant assumed SLA and a fluid fleet cost; this script
varies the same table on the forecast itself (``sim.forecast.forecast.simulate_forecast`` of
the 16-GPU ``small`` scenario, or ``--scenario``): tenants' traffic is served in windows, the
delivered SLA feeds churn, and every euro comes out of the ledger (revenue from the tokens
served, the fleet's contracts, SLA credits, marketplace fees and hosting).

Parameters: every row of the market table (models/market/parameters.csv and its
``parameters_*.csv`` companions: contracts, channels, public sector) with a ``low``/``high``
range, grouped as in sensitivity.py: rows sharing a (block, key) -- one per vertical, per
competitor or per marketplace -- move together to their own low (then high) end.  For each
group and end, ``--replications`` seeds, the same seeds as the base case (common random
numbers: the differences are paired by seed); the tornado shows the change of the mean
36-month cumulative gross margin against the base case with the 95 % t interval of the paired
differences, largest swing on top.

Parameters with no effect at the default, by construction, are handled so:

* the marketplace parameters other than ``reach`` (fee, hosting fee, hosted attainment,
  migration, lock-in) act only on marketplace tenants, and the default reach is 0 (no buyer is
  bound, sim/market/channels.py draws nothing): they are measured **conditionally**, around
  the run with every reach at its high end (0.3 each), and labelled so in the figure and the
  CSV (``condition``); with a reach above 0 in the base scenario they are ordinary groups;
* the public-capacity parameters (``capacity_*``) act only with ``capacity_access = true``
  (default false): skipped and listed in the CSV as ``inert`` (experiments/public_sector.py
  measures public capacity);
* an end equal to the default (reach's low end 0) is the base run itself: change 0, not rerun.

Traffic windows are fewer and shorter than the forecast's defaults (``WINDOWS``: one window of
30 s after a 10 s warm-up per month, instead of 12 of 80 s; the window's hour of the week moves
from month to month) to keep the 273 forecasts (91 points x 3 seeds) within ~12 CPU-minutes
(1121 s wall with 1 worker on the shared machine); the money comes from the same ledger.
Each window drains after its horizon (sim.forecast.windows.drain_window): every request that
arrived after the warm-up is run to completion and billed, so short windows no longer lose the
requests still generating at their end (before the drain, 10-15 s windows read the small scenario's margin 20-50 % low).  Writes ``results/sensitivity_forecast/``: ``tornado_forecast.png``,
``sensitivity_forecast.csv`` (one row per group: ends, base value, mean outcomes and paired
changes with CIs), ``sensitivity_forecast_runs.csv`` (every forecast) and ``report.html``.

Run:  python experiments/sensitivity_forecast.py [--quick] [--replications N] [--workers N]
"""
from __future__ import annotations

import math
import time

import _common  # noqa: F401  (puts the project root on sys.path, sets the Agg backend)
from _common import ROOT, executor, main_wrapper, out_dir, parser, save_png, write_csv, write_report

REPLICATIONS = 3
MONTHS = 36
WINDOWS = {"forecast.windows_per_month": 1, "forecast.window_s": 30.0, "forecast.warmup_s": 10.0}
QUICK_GROUPS = ("sovereign.price_eur_per_mtok_in", "vertical.beta_sovereignty", "channel.reach", "channel.fee_share")
OUTCOMES = {   # outcome -> (monthly column, how)
    "cum_margin_eur": ("gross_margin_eur", "sum"),
    "cum_revenue_eur": ("revenue_eur", "sum"),
    "cum_cost_eur": ("cost_eur", "sum"),
    "final_share": ("share", "tail12"),
    "mean_request_utilisation": ("request_utilisation", "mean"),
    "mean_sla_attainment": ("sla_attainment", "mean"),
}


def base_scenario(path: str | None, months: int, sets: tuple = ()):
    from sim.scenario import load_scenario, with_overrides
    from sim.scenario.market import default_market_spec
    from sim.study.sweep import apply_sets

    sc = load_scenario(path or "small")
    if sc.market is None:
        sc = with_market(sc, default_market_spec())
    sc = with_overrides(sc, dict(WINDOWS, **{"forecast.months": months}))
    return apply_sets(sc, list(sets)) if sets else sc


def with_market(sc, spec):
    from sim.scenario import scenario_from_dict

    d = sc.model_dump(mode="python")
    d["market"] = spec.model_dump(mode="python")
    return scenario_from_dict(d, sc.name)


def plan(spec, only=None):
    """``(groups, inert)``: groups ``[(block, key), rows, condition]`` to run, where
    ``condition`` is None (around the base) or the (block, key, end) of the group whose run is
    the conditional base; ``inert``: ``[(block, key), rows, reason]`` not run."""
    from sensitivity import groups as table_groups

    reach0 = all(mk.reach == 0 for mk in spec.channels.marketplaces)
    ps = spec.public_sector
    run, inert = [], []
    for gk, rows in table_groups(False).items():
        name = f"{gk[0]}.{gk[1]}"
        if only is not None and name not in only:
            continue
        block, key = gk
        if block == "public_sector" and not ps.enabled:
            inert.append((gk, rows, "market.public_sector.enabled = false"))
        elif block == "public_sector" and key.startswith("capacity_") and not ps.capacity_access:
            inert.append((gk, rows, "acts only with market.public_sector.capacity_access = true (default false)"))
        elif block == "channel" and key != "reach" and reach0:
            run.append((gk, rows, ("channel", "reach", "high")))
        else:
            run.append((gk, rows, None))
    return run, inert


def variant(base, rows, end: str, cond_rows=None, cond_end=None):
    """The scenario with ``rows`` at ``end`` (on top of the condition's rows at ``cond_end``),
    or None when ``rows`` change nothing (every value already at that end: the run is its
    reference's)."""
    from sensitivity import apply
    from sim.scenario.market import _parse

    if all(_parse(r[end]) == _parse(r["value"]) for r in rows):
        return None
    spec = base.market
    if cond_rows is not None:
        spec, _ = apply(spec, {}, cond_rows, cond_end)
    spec, _ = apply(spec, {}, rows, end)
    return with_market(base, spec)


def one(task) -> dict:
    """One forecast: (label, end, seed, scenario) -> its outcomes."""
    import numpy as np
    from sim.forecast.forecast import simulate_forecast

    label, end, seed, sc = task
    m = simulate_forecast(sc, seed).monthly
    row = {"group": label, "end": end, "seed": seed}
    for o, (col, how) in OUTCOMES.items():
        x = m[col].to_numpy(dtype=float)
        row[o] = (float(np.nansum(x)) if how == "sum" else float(np.nanmean(x[-12:])) if how == "tail12"
                  else float(np.nanmean(x)))
    return row


def tornado(table, path_out, base_margin: float, base_ci: float, reps: int, months: int, forecasts: int,
            scenario_name: str, top: int = 24):
    import matplotlib.pyplot as plt
    import numpy as np
    from sim.study.glossary import parameter_label

    t = table[table.status == "run"].head(top).iloc[::-1]
    fig, ax = plt.subplots(figsize=(10.5, 0.36 * len(t) + 2.2))
    y = np.arange(len(t))
    lo = t["d_cum_margin_eur_low"].to_numpy(dtype=float) / 1e6
    hi = t["d_cum_margin_eur_high"].to_numpy(dtype=float) / 1e6
    ax.barh(y, lo, color="#d95f02", alpha=0.85, label="parameter at its low end")
    ax.barh(y, hi, color="#1b9e77", alpha=0.85, label="parameter at its high end")
    ax.errorbar(lo, y, xerr=np.nan_to_num(t["d_cum_margin_eur_low_ci95"].to_numpy(dtype=float)) / 1e6, fmt="none",
                ecolor="k", lw=0.8)
    ax.errorbar(hi, y, xerr=np.nan_to_num(t["d_cum_margin_eur_high_ci95"].to_numpy(dtype=float)) / 1e6, fmt="none",
                ecolor="k", lw=0.8)
    labels = [parameter_label(b, p) + (" [at marketplace reach 0.3 each]" if c else "")
              for b, p, c in zip(t["block"], t["parameter"], t["condition"])]
    ax.set_yticks(y, labels, fontsize=8)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel(f"change of {months}-month cumulative gross margin vs base ({base_margin/1e6:.2f} ± {base_ci/1e6:.2f} M EUR), "
                  "M EUR, paired by seed", fontsize=9)
    rest = int((table.status == "run").sum()) - len(t)
    ax.set_title(f"One-at-a-time sensitivity on the FULL FORECAST ({scenario_name} scenario: market + simulated traffic + "
                 f"ledger)\n{reps} paired seeds per end, 95 % CI of the change; {forecasts} forecasts"
                 + (f"; {rest} smaller swings in the CSV" if rest > 0 else ""), fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return save_png(fig, path_out, "tornado_forecast")


def main() -> int:
    import numpy as np
    import pandas as pd
    from sim.core.errors import UserError
    from sim.core.stats import mean_ci

    p = parser(__file__, __doc__)
    p.set_defaults(out=ROOT / "results" / "sensitivity_forecast")
    p.add_argument("--scenario", default=None, help="scenario to start from (default: small)")
    p.add_argument("--months", type=int, default=None, help=f"horizon (default {MONTHS}; --quick 2)")
    p.add_argument("--groups", default=None, help="comma list of BLOCK.KEY groups to run (default: all; --quick: "
                                                  + ",".join(QUICK_GROUPS) + ")")
    args = p.parse_args()
    reps = args.replications or (2 if args.quick else REPLICATIONS)
    months = args.months or (2 if args.quick else MONTHS)
    if reps < 1 or months < 1:
        raise UserError("--replications and --months must be >= 1")
    only = (set(g.strip() for g in args.groups.split(",")) if args.groups else set(QUICK_GROUPS) if args.quick else None)
    base = base_scenario(args.scenario, months, tuple(args.set))
    groups, inert = plan(base.market, only)
    if only is not None:
        known = {f"{gk[0]}.{gk[1]}" for gk, _, _ in groups + inert}
        if only - known:
            raise UserError(f"--groups: unknown {sorted(only - known)} (BLOCK.KEY of a table row with low/high)")
    by_key = {gk: rows for gk, rows, _ in groups}
    seeds = [args.seed + i for i in range(reps)]
    points = {("base", "base"): base}           # (label, end) -> scenario
    alias = {}                                   # (label, end) -> the point it equals
    cond_rows = {}
    for _, _, cond in groups:
        if cond is not None and cond[:2] not in cond_rows:
            cond_rows[cond[:2]] = by_key.get(cond[:2]) or plan(base.market, {f"{cond[0]}.{cond[1]}"})[0][0][1]
    for cond in {c for _, _, c in groups if c is not None}:   # the conditional base: that group at that end
        points[(f"{cond[0]}.{cond[1]}", cond[2])] = variant(base, cond_rows[cond[:2]], cond[2])
    for gk, rows, cond in groups:
        label = f"{gk[0]}.{gk[1]}"
        for end in ("low", "high"):
            if (label, end) in points:
                continue
            sc = variant(base, rows, end, *((cond_rows[cond[:2]], cond[2]) if cond else ()))
            if sc is None:
                alias[(label, end)] = ("base", "base") if cond is None else (f"{cond[0]}.{cond[1]}", cond[2])
            else:
                points[(label, end)] = sc
    tasks = [(label, end, seed, sc) for (label, end), sc in points.items() for seed in seeds]
    t0 = time.perf_counter()
    with executor(args) as ex:
        rows_out = list(ex.map(one, tasks)) if ex is not None else [one(t) for t in tasks]
    wall = time.perf_counter() - t0
    runs = pd.DataFrame(rows_out)

    def values(label, end):
        k = alias.get((label, end), (label, end))
        g = runs[(runs.group == k[0]) & (runs.end == k[1])].set_index("seed").reindex(seeds)
        return {o: g[o].to_numpy(dtype=float) for o in OUTCOMES}

    basev = values("base", "base")
    table = []
    for gk, rows, cond in groups:
        label = f"{gk[0]}.{gk[1]}"
        ref = basev if cond is None else values(f"{cond[0]}.{cond[1]}", cond[2])
        row = {"block": gk[0], "parameter": gk[1], "status": "run",
               "condition": "" if cond is None else f"{cond[0]}.{cond[1]} at its {cond[2]} end",
               "names": ";".join(r["name"] for r in rows), "low": ";".join(r["low"] for r in rows),
               "high": ";".join(r["high"] for r in rows), "base_value": ";".join(r["value"] for r in rows)}
        for o in OUTCOMES:
            for end in ("low", "high"):
                v = values(label, end)[o]
                d = mean_ci(v - ref[o])
                row[f"{o}_{end}"] = float(np.mean(v))
                row[f"d_{o}_{end}"] = d.mean
                row[f"d_{o}_{end}_ci95"] = 0.0 if (label, end) in alias else d.half_width
        row["swing_cum_margin_eur"] = abs(row["d_cum_margin_eur_high"] - row["d_cum_margin_eur_low"])
        table.append(row)
    for gk, rows, why in inert:
        table.append({"block": gk[0], "parameter": gk[1], "status": "inert", "condition": why,
                      "names": ";".join(r["name"] for r in rows), "low": ";".join(r["low"] for r in rows),
                      "high": ";".join(r["high"] for r in rows), "base_value": ";".join(r["value"] for r in rows)})
    table = pd.DataFrame(table)
    table["_order"] = table["swing_cum_margin_eur"].fillna(-1.0)
    table = table.sort_values("_order", ascending=False, kind="stable").drop(columns="_order").reset_index(drop=True)
    out = out_dir(args)
    write_csv(table, out, "sensitivity_forecast")
    write_csv(runs.drop_duplicates(), out, "sensitivity_forecast_runs")
    bm = mean_ci(basev["cum_margin_eur"])
    png = tornado(table, out, bm.mean, bm.half_width if math.isfinite(bm.half_width) else 0.0, reps, months,
                  len(tasks), base.name)
    top = table[table.status == "run"].head(10)
    headline = {"mode": "full forecast (market + simulated traffic + ledger)", "scenario": base.name,
                "forecasts": len(tasks), "replications": reps, "months": months, "wall_s": round(wall, 1),
                "base_cum_margin_eur": bm.mean, "base_cum_margin_eur_ci95": bm.half_width,
                **{f"swing_{r['block']}.{r['parameter']}": r["swing_cum_margin_eur"] for _, r in top.iterrows()}}
    write_report(out, "Tornado on the full forecast: 36-month margin per market parameter", headline,
                 [("Change of the 36-month cumulative margin, each parameter at its low and high end (paired seeds, 95 % CI)",
                   png)], base)
    show = top[["block", "parameter", "condition", "d_cum_margin_eur_low", "d_cum_margin_eur_low_ci95",
                "d_cum_margin_eur_high", "d_cum_margin_eur_high_ci95", "swing_cum_margin_eur"]].copy()
    for c in show.columns[3:]:
        show[c] = (show[c] / 1e6).map(lambda v: f"{v:+.3f} M")
    pd.set_option("display.width", 240)
    print(f"full forecast ({base.name}): {len(tasks)} forecasts in {wall:.1f} s wall; base {months}-month cumulative "
          f"margin {bm.mean/1e6:.2f} ± {bm.half_width/1e6:.2f} M EUR")
    print(show.to_string(index=False))
    print(f"wrote {out}/tornado_forecast.png, sensitivity_forecast.csv, sensitivity_forecast_runs.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main_wrapper(main))
