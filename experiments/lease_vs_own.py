"""Lease or own? The same demand served for three years on rented GPU-hours, on owned
hardware in leased co-location, and on a mix; plus the break-even utilisation.

    PYTHONPATH=. python experiments/lease_vs_own.py [--years 3] [--peak-gpus 64] [--out results/lease_vs_own]

Method
------
1. **Tokens per busy GPU-second** come from the serving engine: a short run of
   ``experiments/scenarios/lease_vs_own_probe.toml`` (Mixtral 8x7B, TP2) at a load where the
   SLA holds; ``(prompt + output tokens) / busy GPU-seconds``.
2. **Demand** for ``years`` years, hourly, in GPUs busy: ``peak_gpus x growth x diurnal x
   weekly`` (shape parameters below, all `assumption`).
3. Each strategy runs the capacity layer (``sim.economics.capacity.CapacityManager``, forecast policy
   with a perfect forecast) and the ledger (``sim.economics.ledger.Ledger``) in one SimPy clock:
   served = min(demand, GPUs in force); owned GPUs are filled first (their power follows the
   busy share); revenue = served tokens x the default price.
   * ``rent_on_demand``: on-demand rental following demand hour by hour (lead 1 h, step 2);
   * ``rent_committed``: 12-month committed rental sized to the coming year's peak;
   * ``own``: owned servers in colo sized to the peak (12-week lead, 3-year colo term);
   * ``mix``: owned base sized to the coming year's median demand + on-demand for the rest.
4. **Break-even utilisation**: flat demand ``u x 64`` GPUs, a 64-GPU owned fleet versus
   on-demand rental of exactly the busy GPU-hours; the ``u`` where cost per served GPU-hour
   is equal (interpolated on a ledger sweep), checked against the closed form
   :func:`sim.economics.contracts.break_even_utilisation`.

   The crossing reproduces the closed form by construction (flat demand, linear terms): it is
   the formula's arithmetic, not evidence beyond it.
5. **Growing fleet, by simulation** (``--growing-replications``, default 4; 0 skips it): the
   36-month forecast (``years`` x 12 months) of the ``small`` market at one site (Paris) from
   4 GPUs, its threshold capacity policy ordering owned servers in colo or committed rental
   as request utilisation crosses 60 %; the same seed for both strategies in each replication
   (paired), the own - rent differences of cost and margin with 95 % CIs
   (``growing.csv``, ``summary.json`` ``growing_fleet``).  About 30 CPU-seconds per forecast.

Outputs: ``table.csv``, ``table.md``, ``breakeven.csv``, ``growing.csv``, ``summary.json``,
``lease_vs_own.png``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import simpy

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sim.economics.capacity import CapacityManager, PolicyParams  # noqa: E402
from sim.economics.contracts import (DAY_S, HOUR_S, YEAR_S, Tranche, break_even_utilisation, d, owned_terms, rental_terms)
from sim.economics.ledger import Ledger, Price, default_credit_tiers  # noqa: E402

SITE = "par-1"
JURISDICTION = "FR"

# Demand shape: every number an assumption (no fitted market model yet).
GROWTH_START = 0.5       # assumption: demand at t=0 is half the final peak, growing linearly
DIURNAL_TROUGH = 0.3     # assumption: 03:00 demand is 30% of the 15:00 peak
WEEKEND_FACTOR = 0.5     # assumption: Saturday/Sunday demand is half a weekday's


def demand_gpus(t: float, peak: float, years: float) -> float:
    """GPUs busy needed at time ``t`` (seconds)."""
    growth = GROWTH_START + (1.0 - GROWTH_START) * min(t / (years * YEAR_S), 1.0)
    h = (t % DAY_S) / HOUR_S
    diurnal = DIURNAL_TROUGH + (1.0 - DIURNAL_TROUGH) * 0.5 * (1.0 - math.cos(2 * math.pi * (h - 3.0) / 24.0))
    weekday = int(t // DAY_S) % 7
    weekly = WEEKEND_FACTOR if weekday >= 5 else 1.0
    return peak * growth * diurnal * weekly


def probe_tokens_per_busy_gpu_s(path: Path) -> tuple[float, float, dict]:
    """Run the engine on the probe scenario: tokens per busy GPU-second, and the share of
    output tokens among them."""
    from sim.study.run import run
    from sim.scenario import load_scenario
    sc = load_scenario(path)
    res = run(sc)
    s = res.summary
    busy_gpu_s = s["gpu_utilisation"] * s["gpus"] * s["duration_s"]
    tokens = s["prompt_tokens_total"] + s["completed_output_tokens"]
    info = {k: s[k] for k in ("arrivals", "completed", "gpu_utilisation", "sla_attainment",
                              "prompt_tokens_total", "completed_output_tokens", "gpus", "duration_s")}
    info["step_time"] = sc.deployments[0].step_time.kind
    return tokens / busy_gpu_s, s["completed_output_tokens"] / tokens, info


@dataclass
class Outcome:
    strategy: str
    report: dict
    served_gpu_h: float
    demand_gpu_h: float
    capacity_gpu_h: float
    owned_busy_share: float | None


class _Busy:
    key = 1
    site = SITE
    gpus = 1

    def __init__(self):
        self.busy_s = 0.0


def simulate(strategy: str, years: float, demand, tokens_per_gpu_s: float, out_share: float,
             fixed_owned: int | None = None) -> Outcome:
    env = simpy.Environment()
    busy = _Busy()
    owned_busy = [0.0]
    led = Ledger(fleet=lambda: [busy])
    led.set_price("all", Price.from_eur_per_mtok(d("price_input_eur_per_mtok"), d("price_output_eur_per_mtok"),
                                                  default_credit_tiers(0.99)))
    od = rental_terms("on_demand", "on_demand")
    cm = rental_terms("committed", "committed")
    own = owned_terms("owned", JURISDICTION)
    horizon = years * YEAR_S
    step = HOUR_S

    n_h = int(round(horizon / step))
    dem_h = np.array([demand(k * step) for k in range(n_h)])   # hourly demand, GPUs busy
    from functools import lru_cache

    def _h(t):
        return min(max(int(t // step), 0), n_h - 1)

    @lru_cache(maxsize=None)
    def _peak(h0, h1):
        return float(dem_h[h0:max(h1, h0 + 1)].max())

    @lru_cache(maxsize=None)
    def _median(h0, h1):
        return float(np.median(dem_h[h0:max(h1, h0 + 1)]))

    def peak_until(t0, t1):  # the forecast the planner has (perfect, hourly)
        return _peak(_h(t0), _h(t1) + 1)

    def median_until(t0, t1):
        return _median(_h(t0), _h(t1) + 1)

    managers: list[CapacityManager] = []
    owned_mgr = None

    def start(terms, gpus_needed, step_gpus):
        # capacity contracted before t = 0 for the first period, so lead times do not leave
        # the first weeks unserved (the same for every strategy)
        g = int(math.ceil(gpus_needed / step_gpus - 1e-9) * step_gpus)
        return [Tranche(SITE, terms, g, 0.0)] if g > 0 else []

    week = 7 * DAY_S
    if strategy == "rent_on_demand":
        managers.append(CapacityManager(env, led, SITE, od, PolicyParams("forecast", HOUR_S, step_gpus=2, headroom=0.0),
                                        forecast_gpus=lambda t: demand(min(t, horizon - 1)),
                                        initial=start(od, demand(0.0), 2)))
    elif strategy == "rent_committed":
        managers.append(CapacityManager(env, led, SITE, cm, PolicyParams("forecast", week, step_gpus=8, headroom=0.0),
                                        forecast_gpus=lambda t: peak_until(t, t + YEAR_S),
                                        initial=start(cm, peak_until(0.0, YEAR_S), 8)))
    elif strategy == "own":
        owned_mgr = CapacityManager(env, led, SITE, own, PolicyParams("forecast", week, step_gpus=8, headroom=0.0),
                                    forecast_gpus=lambda t: peak_until(t, t + 2 * week),
                                    initial=start(own, peak_until(0.0, own.lead_time_s + 2 * week), 8))
        managers.append(owned_mgr)
    elif strategy == "mix":
        owned_mgr = CapacityManager(env, led, SITE, own, PolicyParams("forecast", week, step_gpus=8, headroom=0.0),
                                    forecast_gpus=lambda t: median_until(t, t + YEAR_S),
                                    initial=start(own, median_until(0.0, YEAR_S), 8))
        managers.append(owned_mgr)
        managers.append(CapacityManager(
            env, led, SITE, od, PolicyParams("forecast", HOUR_S, step_gpus=2, headroom=0.0),
            forecast_gpus=lambda t: max(0.0, demand(min(t, horizon - 1)) - owned_mgr.gpus_in_force(t)),
            initial=start(od, max(0.0, demand(0.0) - owned_mgr.gpus_in_force(0.0)), 2)))
    elif strategy == "own_fixed":      # break-even sweep: a fixed owned fleet
        tr = Tranche(SITE, own, fixed_owned, 0.0)
        owned_mgr = CapacityManager(env, led, SITE, own, PolicyParams("fixed"), initial=[tr])
        managers.append(owned_mgr)
    elif strategy == "rent_exact":     # break-even sweep: rent exactly what is busy
        managers.append(CapacityManager(env, led, SITE, od, PolicyParams("forecast", HOUR_S, step_gpus=1, headroom=0.0),
                                        forecast_gpus=lambda t: demand(min(t, horizon - 1)),
                                        initial=[Tranche(SITE, od, math.ceil(demand(0.0)), 0.0)]))
    else:
        raise ValueError(strategy)

    acc = {"served": 0.0, "demand": 0.0, "cap": 0.0}

    def hourly():
        while env.now < horizon:
            t = env.now
            cap = sum(m.gpus_in_force(t) for m in managers)
            dem = demand(t)
            served = min(dem, cap)
            busy.busy_s += served * step
            if owned_mgr is not None:
                owned_busy[0] += min(served, owned_mgr.gpus_in_force(t)) * step
            acc["served"] += served * step
            acc["demand"] += dem * step
            acc["cap"] += cap * step
            tokens = served * step * tokens_per_gpu_s
            out_tok = int(tokens * out_share)
            yield env.timeout(step)
            led.advance(env.now)
            led.record_request(env.now - 1e-6, "all", "all", SITE, int(tokens) - out_tok, out_tok, True)

    env.process(hourly())
    env.run(until=horizon)
    led.close(horizon)
    owned_cap_s = sum(tr.gpus * (min(tr.end_s or horizon, horizon) - tr.start_s)
                      for tr in (owned_mgr.tranches if owned_mgr else []) if tr.start_s < horizon)
    return Outcome(strategy, led.report(), acc["served"] / HOUR_S, acc["demand"] / HOUR_S, acc["cap"] / HOUR_S,
                   owned_busy[0] / owned_cap_s if owned_cap_s else None)


# The growing fleet (section 5): a forecast whose capacity policy buys owned tranches or rents.
GROW_START_GPUS = 4        # assumption: a small first site (2 Mixtral TP2 replicas)
GROW_HIGH_UTIL = 0.6       # assumption: order when last month's request utilisation exceeds 60 %
GROW_LOW_UTIL = 0.1        # assumption: release under 10 %
GROW_STEP_GPUS = 4         # assumption: tranches of 4 GPUs (two TP2 replicas)


def growing_scenario(strategy: str, months: int):
    """The ``small`` scenario cut to its Paris site, starting at ``GROW_START_GPUS`` GPUs, whose
    threshold policy orders owned servers in colo (``own``) or committed rental (``rent``)."""
    from sim.scenario import load_scenario, scenario_from_dict
    d = load_scenario("small").model_dump(mode="python")
    d["sites"] = [s_ for s_ in d["sites"] if s_["name"] == SITE]
    contract = ({"kind": "owned_colo", "name": "own", "gpus": GROW_START_GPUS} if strategy == "own" else
                {"kind": "rental", "name": "rent", "term": "committed", "gpus": GROW_START_GPUS})
    d["sites"][0]["contracts"] = [contract]
    d["deployments"] = [dep for dep in d["deployments"] if dep["site"] == SITE]
    d["deployments"][0]["replicas"] = GROW_START_GPUS // d["deployments"][0]["tp"]
    d["capacity_policy"] = dict(d["capacity_policy"], kind="threshold", contract=contract["name"],
                                high_utilisation=GROW_HIGH_UTIL, low_utilisation=GROW_LOW_UTIL,
                                step_gpus=GROW_STEP_GPUS, min_gpus=GROW_START_GPUS,
                                deployment=d["deployments"][0]["name"])
    d["forecast"] = dict(d["forecast"], months=months)
    d["name"] = f"lease_vs_own_growing_{strategy}"
    return scenario_from_dict(d, d["name"])


def growing_fleet(months: int, replications: int) -> tuple[list[dict], dict]:
    """Lease vs own answered by simulation: the same market (seed ``r`` for both strategies:
    common random numbers) on a fleet the threshold policy grows with owned tranches or with
    committed rental; per replication the horizon's cost, margin, owned/leased cost, mean
    request utilisation and final GPUs; the paired own - rent differences with 95 % CIs."""
    from sim.core.stats import mean_ci
    from sim.forecast.forecast import run_forecast
    rows = []
    for r in range(replications):
        for strat in ("own", "rent"):
            res = run_forecast(growing_scenario(strat, months), seed=1000 + r, figures=False)
            m, su = res.monthly, res.summary
            rows.append({"strategy": strat, "replication": r, "cost_eur": su["cost_eur"],
                         "gross_margin_eur": su["gross_margin_eur"], "owned_cost_eur": su["owned_cost_eur"],
                         "leased_cost_eur": su["leased_cost_eur"], "sla_credits_eur": su["sla_credits_eur"],
                         "request_utilisation_mean": su["request_utilisation_mean"],
                         "sla_attainment_mean": su["sla_attainment_mean"],
                         "gpus_start": int(m["gpus_in_force"].iloc[0]), "gpus_end": int(m["gpus_in_force"].iloc[-1]),
                         "cost_eur_per_mtok": su["cost_eur_per_mtok"]})
            print(f"growing fleet, {strat:>4} replication {r}: cost EUR {su['cost_eur']:,.0f}, margin EUR "
                  f"{su['gross_margin_eur']:,.0f}, GPUs {rows[-1]['gpus_start']} -> {rows[-1]['gpus_end']}, "
                  f"request utilisation {su['request_utilisation_mean']:.3f}")
    out = {"months": months, "replications": replications, "start_gpus": GROW_START_GPUS,
           "high_utilisation": GROW_HIGH_UTIL, "low_utilisation": GROW_LOW_UTIL, "step_gpus": GROW_STEP_GPUS}
    for key in ("cost_eur", "gross_margin_eur", "request_utilisation_mean", "sla_attainment_mean", "gpus_end"):
        own = [x[key] for x in rows if x["strategy"] == "own"]
        rent = [x[key] for x in rows if x["strategy"] == "rent"]
        for name, v in (("own", own), ("rent", rent), ("own_minus_rent", [a - b for a, b in zip(own, rent)])):
            ci = mean_ci(v)
            out[f"{name}_{key}"] = {"mean": ci.mean, "ci_low": ci.low, "ci_high": ci.high, "n": ci.n}
    return rows, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--years", type=float, default=3.0)
    ap.add_argument("--peak-gpus", type=float, default=64.0)
    ap.add_argument("--probe", default=str(ROOT / "experiments" / "scenarios" / "lease_vs_own_probe.toml"))
    ap.add_argument("--out", default=str(ROOT / "results" / "lease_vs_own"))
    ap.add_argument("--growing-replications", type=int, default=4,
                    help="replications of the growing-fleet forecasts (section 5; 0 = skip)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tok_s, out_share, probe = probe_tokens_per_busy_gpu_s(Path(args.probe))
    print(f"probe: {tok_s:.1f} tokens per busy GPU-second (output share {out_share:.3f}); {probe}")

    def dem(t):
        return demand_gpus(t, args.peak_gpus, args.years)

    rows = []
    for strat in ("rent_on_demand", "rent_committed", "own", "mix"):
        o = simulate(strat, args.years, dem, tok_s, out_share)
        r = o.report
        toks = r["prompt_tokens"] + r["output_tokens"]
        rows.append({
            "strategy": strat,
            "costs_eur": r["costs_eur"],
            "revenue_eur": r["revenue_eur"],
            "margin_eur": r["margin_eur"],
            "margin_share": r["margin_share"],
            "cost_eur_per_mtok": r["cost_eur_per_mtok"],
            "cost_eur_per_mtok_output": r["cost_eur_per_mtok_output"],
            "cost_eur_per_served_gpu_h": r["costs_eur"] / o.served_gpu_h,
            "served_share": o.served_gpu_h / o.demand_gpu_h,
            "fleet_utilisation": o.served_gpu_h / o.capacity_gpu_h,
            "owned_busy_share": o.owned_busy_share,
            "tokens": toks,
            **{f"{ln}_eur": r[f"{ln}_cents"] / 100 for ln in ("rental", "depreciation", "colocation", "power")},
        })
        print(f"{strat:>15}: costs EUR {r['costs_eur']:,.0f}  cost/Mtok {r['cost_eur_per_mtok']:.4f}  "
              f"served {o.served_gpu_h / o.demand_gpu_h:.4f}  fleet util {o.served_gpu_h / o.capacity_gpu_h:.3f}")

    # break-even sweep: flat demand u x N on N owned GPUs vs renting exactly the busy GPU-hours
    n_fixed = 64
    be_years = 1.0
    sweep = []
    for u in np.round(np.arange(0.1, 1.0001, 0.1), 2):
        flat = (lambda u: (lambda t: u * n_fixed))(float(u))
        own_o = simulate("own_fixed", be_years, flat, tok_s, out_share, fixed_owned=n_fixed)
        rent_o = simulate("rent_exact", be_years, flat, tok_s, out_share)
        sweep.append({"utilisation": float(u),
                      "own_eur_per_served_gpu_h": own_o.report["costs_eur"] / own_o.served_gpu_h,
                      "rent_eur_per_served_gpu_h": rent_o.report["costs_eur"] / rent_o.served_gpu_h,
                      "own_eur_per_mtok": own_o.report["cost_eur_per_mtok"],
                      "rent_eur_per_mtok": rent_o.report["cost_eur_per_mtok"]})
    diff = [s["own_eur_per_served_gpu_h"] - s["rent_eur_per_served_gpu_h"] for s in sweep]
    be_sim = None
    for a, b, sa, sb in zip(diff, diff[1:], sweep, sweep[1:]):
        if a > 0 >= b:
            be_sim = sa["utilisation"] + (sb["utilisation"] - sa["utilisation"]) * a / (a - b)
            break
    od, own, cm = rental_terms("od"), owned_terms("own", JURISDICTION), rental_terms("cm", "committed")
    be_formula = break_even_utilisation(od, own)
    ratio_full = od.cost_eur_per_gpu_h(1.0) / own.cost_eur_per_gpu_h(1.0)
    ratio_half = od.cost_eur_per_gpu_h(1.0) / own.cost_eur_per_gpu_h(0.5)
    summary = {
        "probe": probe, "tokens_per_busy_gpu_s": tok_s, "output_token_share": out_share,
        "years": args.years, "peak_gpus": args.peak_gpus,
        "strategies": rows, "breakeven_sweep": sweep,
        "breakeven_utilisation_simulated": be_sim, "breakeven_utilisation_formula": be_formula,
        "eur_per_gpu_h": {"rent_on_demand": od.cost_eur_per_gpu_h(1.0),
                          "rent_committed": cm.cost_eur_per_gpu_h(1.0),
                          "own_fixed_part": own.fixed_eur_per_gpu_h,
                          "own_at_full_busy": own.cost_eur_per_gpu_h(1.0),
                          "own_at_half_busy": own.cost_eur_per_gpu_h(0.5)},
        "rent_over_own_ratio_full_busy": ratio_full, "rent_over_own_ratio_half_busy": ratio_half,
    }
    if args.growing_replications > 0:
        g_rows, g_sum = growing_fleet(max(2, round(args.years * 12)), args.growing_replications)
        summary["growing_fleet"] = g_sum
        import pandas as pd
        pd.DataFrame(g_rows).to_csv(out / "growing.csv", index=False, float_format="%.6g")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    import pandas as pd
    pd.DataFrame(rows).to_csv(out / "table.csv", index=False, float_format="%.6g")
    pd.DataFrame(sweep).to_csv(out / "breakeven.csv", index=False, float_format="%.6g")
    md = ["| strategy | costs EUR | cost EUR/Mtok | cost EUR/Mtok output | EUR per served GPU-h | fleet utilisation | served share | margin share |",
          "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        md.append(f"| {r['strategy']} | {r['costs_eur']:,.0f} | {r['cost_eur_per_mtok']:.4f} | "
                  f"{r['cost_eur_per_mtok_output']:.3f} | {r['cost_eur_per_served_gpu_h']:.3f} | "
                  f"{r['fleet_utilisation']:.3f} | {r['served_share']:.4f} | {r['margin_share']:.3f} |")
    md.append("")
    md.append(f"Break-even utilisation (own vs elastic on-demand rental): closed form {be_formula:.3f} "
              f"(the flat-demand ledger sweep reproduces its arithmetic: {be_sim:.3f}). Rent/own cost per GPU-hour: {ratio_full:.2f}x at full busy, "
              f"{ratio_half:.2f}x at half busy.")
    md.append(f"Probe: {tok_s:.0f} tokens per busy GPU-second ({probe['step_time']} step-time model).")
    if "growing_fleet" in summary:
        g = summary["growing_fleet"]

        def ci(k):
            x = g[k]
            return f"{x['mean']:,.0f} (95 % CI {x['ci_low']:,.0f} to {x['ci_high']:,.0f})"
        md.append("")
        md.append(f"Growing fleet, simulated ({g['months']}-month forecast of the small market at one site from "
                  f"{g['start_gpus']} GPUs, threshold policy at {g['high_utilisation']:.0%} request utilisation, "
                  f"{g['replications']} paired replications): own - rent cost EUR {ci('own_minus_rent_cost_eur')}, "
                  f"margin EUR {ci('own_minus_rent_gross_margin_eur')}; GPUs at the end own "
                  f"{g['own_gpus_end']['mean']:.1f}, rent {g['rent_gpus_end']['mean']:.1f}.")
    (out / "table.md").write_text("\n".join(md) + "\n")
    plot(rows, sweep, be_sim, be_formula, out / "lease_vs_own.png")
    print("\n".join(md))
    print(f"wrote {out} in {time.perf_counter() - t0:.1f} s")
    return 0


def plot(rows, sweep, be_sim, be_formula, path: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    names = [r["strategy"].replace("_", "\n", 1) for r in rows]
    lines = ("rental", "depreciation", "colocation", "power")
    bottom = np.zeros(len(rows))
    for ln in lines:
        vals = np.array([r[f"{ln}_eur"] for r in rows]) / 1e6
        a.bar(names, vals, bottom=bottom, label=ln)
        bottom += vals
    for i, r in enumerate(rows):
        a.text(i, bottom[i], f"{r['cost_eur_per_mtok']:.3f}\nEUR/Mtok", ha="center", va="bottom", fontsize=8)
    a.set_ylabel("cost over the horizon, EUR million")
    a.set_title("Same demand, four ways to hold capacity")
    a.set_ylim(0, bottom.max() * 1.25)
    a.legend(fontsize=8)
    u = [s["utilisation"] for s in sweep]
    b.plot(u, [s["own_eur_per_served_gpu_h"] for s in sweep], "o-", label="own in colo (64 GPUs)")
    b.plot(u, [s["rent_eur_per_served_gpu_h"] for s in sweep], "s-", label="rent on demand (exactly what is busy)")
    if be_sim is not None:
        b.axvline(be_sim, color="grey", ls="--", label=f"break-even {be_sim:.2f} (formula {be_formula:.2f})")
    b.set_xlabel("average busy share of the owned fleet")
    b.set_ylabel("EUR per served GPU-hour")
    b.set_title("Break-even utilisation")
    b.set_ylim(0, None)
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
