"""One-at-a-time sensitivity of the 36-month outcome to each market assumption (tornado).

Every row of models/market/parameters.csv with a ``low``/``high`` range is a candidate.
Rows that share a (block, key) — the same parameter for each vertical or each competitor —
move together, each to its own low (then high) value: "all verticals' churn base rate at its
low end". For every group and end, ``--reps`` replications (seeds 1..reps, the same seeds as
the base case: common random numbers, so the differences are much less noisy than the
levels) give the mean cumulative gross margin over the horizon; the tornado shows the
change from the base case, largest swing on top, with 95% CI half-widths of the paired
differences in the CSV.

Modes as in sovereignty_gap.py: by default each run is ``sim.forecast.forecast.run_forecast``; with
``--market-only`` the market layer alone with a CONSTANT assumed delivered SLA (``--sla``)
and a fluid leased-GPU fleet, whose own parameters (block 'fallback') are then varied too.

Output (``--out``, default results/market/): ``tornado.png``, ``sensitivity.csv``.

Run:  PYTHONPATH=$PWD python experiments/sensitivity.py --market-only --reps 8
"""
from __future__ import annotations

import argparse
import json
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

from market_common import add_common_args, base_scenario, check_args, main_guard, mean_ci, run_all, with_market
from sim.scenario.market import _parse, fallback_parameters, read_table, set_parameter
from sim.study.glossary import parameter_label

OUTCOMES = {
    "cum_margin_eur": ("gross_margin_eur", "sum"),
    "cum_revenue_eur": ("revenue_eur", "sum"),
    "final_share": ("share", "last"),
    "mean_utilisation": ("gpu_utilisation", "mean"),
}


def groups(market_only: bool) -> "OrderedDict[tuple, list[dict]]":
    g: OrderedDict = OrderedDict()
    for r in read_table():
        if r["low"] == "" or r["high"] == "":
            continue
        if r["block"] == "fallback" and not market_only:
            continue
        key = r["key"]
        if r["block"] == "competitor" and key.startswith("sovereignty."):
            key = "sovereignty.*." + key.split(".")[-1]          # one group per curve parameter
        if r["block"] == "sovereign" and key.startswith("sovereignty."):
            continue
        g.setdefault((r["block"], key), []).append(r)
    return g


def apply(spec, fallback: dict, rows: list[dict], end: str):
    fb = dict(fallback)
    for r in rows:
        v = _parse(r[end])
        if r["block"] == "fallback":
            fb[r["key"]] = v
        else:
            cur = _parse(r["value"])
            if isinstance(cur, int) and not isinstance(cur, bool):
                v = int(round(float(v)))
            spec = set_parameter(spec, r["block"], r["name"], r["key"], v)
    return spec, fb


def outcome(df, col: str, how: str) -> float:
    x = df[col].to_numpy(dtype=float)
    if how == "sum":
        return float(np.nansum(x))
    if how == "last":
        return float(x[-1])
    return float(np.nanmean(x))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.set_defaults(reps=8)
    args = p.parse_args()
    check_args(args)
    import pandas as pd

    base = base_scenario(args.scenario)
    fb0 = fallback_parameters()
    G = groups(args.market_only)
    points = [("base", "base", base, fb0)]
    for gk, rows in G.items():
        for end in ("low", "high"):
            spec, fb = apply(base.market, fb0, rows, end)
            points.append((gk, end, with_market(base, spec), fb))
    tasks = [(sc, seed, args.market_only, args.months, args.sla, fb)
             for (_, _, sc, fb) in points for seed in range(1, args.reps + 1)]
    t0 = time.perf_counter()
    frames = run_all(tasks, args.workers)
    wall = time.perf_counter() - t0
    R = args.reps
    values = {}   # (group, end) -> {outcome: array over seeds}
    for i, (gk, end, _, _) in enumerate(points):
        dfs = frames[i * R:(i + 1) * R]
        values[(gk, end)] = {o: np.array([outcome(d, c, h) for d in dfs]) for o, (c, h) in OUTCOMES.items()}
    basev = values[("base", "base")]
    rows = []
    for gk, members in G.items():
        row = {"block": gk[0], "parameter": gk[1], "names": ";".join(r["name"] for r in members),
               "low": ";".join(r["low"] for r in members), "high": ";".join(r["high"] for r in members),
               "base_value": ";".join(r["value"] for r in members)}
        for o in OUTCOMES:
            for end in ("low", "high"):
                d = values[(gk, end)][o] - basev[o]
                m, h = mean_ci(d)
                row[f"{o}_{end}"] = float(np.mean(values[(gk, end)][o]))
                row[f"d_{o}_{end}"] = float(m)
                row[f"d_{o}_{end}_ci95"] = float(h)
        row["swing_cum_margin_eur"] = abs(row["d_cum_margin_eur_high"] - row["d_cum_margin_eur_low"])
        rows.append(row)
    table = pd.DataFrame(rows).sort_values("swing_cum_margin_eur", ascending=False)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "sensitivity.csv", index=False)
    mode = "market-only (constant SLA %.3f, fluid fleet)" % args.sla if args.market_only else "full forecast"
    months = len(frames[0])
    base_margin = float(np.mean(basev["cum_margin_eur"]))
    (out / "sensitivity_meta.json").write_text(json.dumps(
        {"mode": mode, "reps": R, "months": months, "runs": len(tasks), "wall_s": round(wall, 1),
         "base_cum_margin_eur": base_margin,
         "base_cum_margin_eur_ci95": float(mean_ci(basev["cum_margin_eur"])[1])}, indent=1))
    tornado(table, out / "tornado.png", base_margin, mode, R, months)
    print(f"{mode}: {len(tasks)} runs in {wall:.1f} s; base {months}-month cumulative gross margin "
          f"{base_margin/1e6:.2f} M EUR")
    show = table[["block", "parameter", "d_cum_margin_eur_low", "d_cum_margin_eur_high", "swing_cum_margin_eur"]].head(12).copy()
    for c in show.columns[2:]:
        show[c] = (show[c] / 1e6).map(lambda v: f"{v:+.2f} M")
    print(show.to_string(index=False))
    print(f"wrote {out}/tornado.png, sensitivity.csv")
    return 0


def tornado(table, path: Path, base: float, mode: str, reps: int, months: int, top: int = 20):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = table.head(top).iloc[::-1]
    fig, ax = plt.subplots(figsize=(10, 0.38 * len(t) + 1.8))
    y = np.arange(len(t))
    lo = t["d_cum_margin_eur_low"].to_numpy() / 1e6
    hi = t["d_cum_margin_eur_high"].to_numpy() / 1e6
    ax.barh(y, lo, color="#d95f02", alpha=0.85, label="parameter at its low end")
    ax.barh(y, hi, color="#1b9e77", alpha=0.85, label="parameter at its high end")
    ax.errorbar(lo, y, xerr=t["d_cum_margin_eur_low_ci95"].to_numpy() / 1e6, fmt="none", ecolor="k", lw=0.8)
    ax.errorbar(hi, y, xerr=t["d_cum_margin_eur_high_ci95"].to_numpy() / 1e6, fmt="none", ecolor="k", lw=0.8)
    ax.set_yticks(y)
    ax.set_yticklabels([parameter_label(b, p) for b, p in zip(t["block"], t["parameter"])], fontsize=8)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel(f"change of {months}-month cumulative gross margin vs base ({base/1e6:.2f} M EUR), M EUR")
    ax.set_title(f"One-at-a-time sensitivity ({reps} paired replications, 95% CI)\n{mode}", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main_guard(main)
