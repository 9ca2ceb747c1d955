"""Contracts vs traffic: what each vertical buys, what it sends, and what it earns.

The full 36-month forecast of the small scenario (16 GPUs, Mixtral 8x7B), replicated, under two
contract sizings (``size_basis`` of models/market/parameters_contracts.csv, sim/market/sizing.py):

* ``tokens`` (the default): an RFP asks for a token volume; its request rate follows from the
  vertical's own lengths, so a healthcare contract (Mooncake-like clinical records, ~10,200
  tokens per request) of the same volume as a chat contract sends ~7.5x fewer requests;
* ``requests`` (the former sizing): every RFP asks for a request rate of the table's size,
  whatever the lengths, so a healthcare tenant sends ~7.5x the tokens its RFP was sized with.

Per vertical and sizing, summed over 36 months (mean and 95 % t interval over replications,
the same seeds in both sizings): revenue, contracted and served tokens, requests, SLA
attainment against the vertical's own SLA class (finance interactive 450 ms / 40 ms,
healthcare standard 2 s / 200 ms, public sector relaxed 5 s / 200 ms at 95 %), SLA credits,
and margin (revenue - credits - the fleet's cost shared by served tokens, the ledger's
allocation rule).  Writes ``results/verticals/verticals.csv`` and ``verticals.png``.

    python experiments/verticals.py                 # 2 sizings x 3 replications
    python experiments/verticals.py --quick         # 2 months, 1 replication (seconds)
"""
from __future__ import annotations

import time
from collections import defaultdict

import numpy as np

from _common import executor, main_wrapper, out_dir, parser, save_png, write_csv, write_report
from sim.core.stats import mean_ci
from sim.forecast.forecast import run_forecast
from sim.market.market import MONTH_S, SOVEREIGN
from sim.scenario import load_scenario, with_overrides
from sim.scenario.market import MarketSpec

VERTICALS = ("finance", "healthcare", "public_sector")
SIZINGS = ("tokens", "requests")
REPLICATIONS = 3
QUICK = {"forecast.months": 2, "forecast.windows_per_month": 2, "forecast.window_s": 20.0, "forecast.warmup_s": 5.0}
METRICS = ("revenue_eur", "contracted_tokens", "tokens", "requests", "sla_attainment", "sla_credits_eur", "margin_eur")


def scenario(sizing: str, quick: bool):
    sc = load_scenario("small")
    spec = MarketSpec.model_validate({"verticals": [{"name": v, "size_basis": sizing} for v in VERTICALS]})
    sc = sc.model_copy(update={"market": spec})
    return with_overrides(sc, QUICK) if quick else sc


def per_vertical(result) -> dict[str, dict[str, float]]:
    """The forecast's totals per vertical (see the module docstring)."""
    ledger, market, monthly = result.ledger, result.market, result.monthly
    vert_of = {f"c{c.id}": c.vertical for c in market.contracts}
    out = {v: dict.fromkeys(METRICS, 0.0) for v in VERTICALS}
    by_v = ledger.report()["by_vertical"]
    for v in VERTICALS:
        out[v]["revenue_eur"] = by_v.get(v, {}).get("revenue_cents", 0) / 100
        out[v]["sla_credits_eur"] = by_v.get(v, {}).get("sla_credits_cents", 0) / 100
    tok = defaultdict(float)                     # (month, vertical) -> served tokens
    for (m, _site, v), (p, o) in ledger.tokens.items():
        tok[(m, v)] += p + o
    measured = defaultdict(float)                # (month, vertical) -> requests measured in the windows
    met = defaultdict(float)
    for (m, wl), (n, k) in ledger.sla_counts.items():
        measured[(m, vert_of[wl])] += n
        met[(m, vert_of[wl])] += k
    for m in range(len(monthly)):
        row = monthly.iloc[m]
        tok_m = sum(tok[(m, v)] for v in VERTICALS)
        meas_m = sum(measured[(m, v)] for v in VERTICALS)
        t_mid = (m + 0.5) * MONTH_S
        for v in VERTICALS:
            out[v]["tokens"] += tok[(m, v)]
            if tok_m > 0:
                out[v]["margin_eur"] -= row["cost_eur"] * tok[(m, v)] / tok_m
            if meas_m > 0:   # the month's requests (arrivals x window scale) split as measured
                out[v]["requests"] += row["requests"] * measured[(m, v)] / meas_m
            out[v]["contracted_tokens"] += MONTH_S * sum(
                c.contracted_tokens_per_s for c in market.contracts
                if c.provider == SOVEREIGN and c.vertical == v and c.start_s <= t_mid < c.end_s)
    for v in VERTICALS:
        n = sum(measured[(m, v)] for m in range(len(monthly)))
        out[v]["sla_attainment"] = sum(met[(m, v)] for m in range(len(monthly))) / n if n else float("nan")
        out[v]["margin_eur"] += out[v]["revenue_eur"] - out[v]["sla_credits_eur"]
    return out


def task(sizing: str, seed: int, quick: bool) -> dict:
    return per_vertical(run_forecast(scenario(sizing, quick), seed=seed, figures=False))


def targets() -> dict[str, float]:
    spec = MarketSpec.model_validate({})
    return {v.name: v.sla.attainment_target for v in spec.verticals}


def plot(summary, out, reps: int, months: int):
    import matplotlib.pyplot as plt

    panels = [("revenue_eur", 1e3, "revenue, kEUR"), ("tokens", 1e9, "served tokens, billions"),
              ("requests", 1e6, "requests, millions"), ("sla_attainment", 1.0, "SLA attainment (own class)"),
              ("sla_credits_eur", 1e3, "SLA credits, kEUR"), ("margin_eur", 1e3, "margin (cost shared by tokens), kEUR")]
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5))
    x = np.arange(len(VERTICALS))
    w = 0.38
    tg = targets()
    for ax, (col, div, label) in zip(axes.flat, panels):
        for i, sizing in enumerate(SIZINGS):
            sub = summary[summary.sizing == sizing].set_index("vertical").loc[list(VERTICALS)]
            ax.bar(x + (i - 0.5) * w, sub[col] / div, w, yerr=np.nan_to_num(sub[col + "_ci95"] / div),
                   capsize=3, label=f"sized in {sizing}")
        if col == "sla_attainment":
            for j, v in enumerate(VERTICALS):
                ax.hlines(tg[v], j - 0.45, j + 0.45, colors="k", linestyles="--", lw=1)
            lo = float(np.nanmin(summary[col] - summary[col + "_ci95"].fillna(0.0)))
            ax.set_ylim(min(0.9, lo - 0.01), 1.002)
        ax.set_xticks(x, VERTICALS)
        ax.set_title(label)
        ax.axhline(0, color="k", lw=0.5)
    axes[0, 0].legend()
    fig.suptitle(f"Contracts vs traffic per vertical: small scenario, {months} months, {reps} replication(s), "
                 "95% CI (dashed: the vertical's attainment target)")
    fig.tight_layout()
    return save_png(fig, out, "verticals")


def main() -> int:
    import pandas as pd

    args = parser(__file__, __doc__).parse_args()
    reps = args.replications or (1 if args.quick else REPLICATIONS)
    jobs = [(s, args.seed + r) for s in SIZINGS for r in range(reps)]
    t0 = time.perf_counter()
    with executor(args) as ex:
        if ex is None:
            results = [task(s, seed, args.quick) for s, seed in jobs]
        else:
            results = list(ex.map(task, [s for s, _ in jobs], [seed for _, seed in jobs], [args.quick] * len(jobs)))
    rows = []
    for sizing in SIZINGS:
        runs = [r for (s, _), r in zip(jobs, results) if s == sizing]
        for v in VERTICALS:
            row = {"sizing": sizing, "vertical": v, "replications": len(runs)}
            for col in METRICS:
                ci = mean_ci([r[v][col] for r in runs])
                row[col] = ci.mean
                row[col + "_ci95"] = ci.half_width
            row["tokens_per_request"] = row["tokens"] / row["requests"] if row["requests"] else float("nan")
            row["served_over_contracted"] = row["tokens"] / row["contracted_tokens"] if row["contracted_tokens"] else float("nan")
            row["sla_target"] = targets()[v]
            rows.append(row)
    summary = pd.DataFrame(rows)
    out = out_dir(args)
    write_csv(summary, out, "verticals")
    months = int(scenario("tokens", args.quick).forecast.months)
    png = plot(summary, out, reps, months)
    headline = {f"{r['sizing']}/{r['vertical']}": {k: r[k] for k in ("revenue_eur", "tokens_per_request", "served_over_contracted",
                                                                     "sla_attainment", "sla_target", "margin_eur")}
                for r in summary.to_dict("records")}
    write_report(out, "Contracts vs traffic per vertical", headline,
                 [(f"Per vertical and contract sizing ({months} months, {reps} replication(s), 95 % CI)", png)],
                 scenario("tokens", args.quick))
    print(f"{len(jobs)} forecasts in {time.perf_counter() - t0:.0f} s wall")
    pd.set_option("display.width", 220)
    show = summary[["sizing", "vertical", "revenue_eur", "tokens", "requests", "tokens_per_request",
                    "served_over_contracted", "sla_attainment", "sla_target", "sla_credits_eur", "margin_eur"]]
    print(show.to_string(index=False, float_format=lambda f: f"{f:,.4g}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main_wrapper(main))
