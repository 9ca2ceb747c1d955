"""The multi-year forecast: market and capacity run continuously, traffic in sampled windows.

Requests at full scale cannot be simulated for three years, so (DESIGN.md, "Long horizons"):

* the customer market (:mod:`sim.market`) runs continuously on the month scale, in its own
  SimPy environment whose clock is the forecast's (seconds from the start);
* each month, traffic is simulated in ``windows_per_month`` windows of ``window_s`` seconds
  (after ``warmup_s`` of warm-up), one tenant per sovereign contract in force, on the
  month's fleet.  Window ``k`` starts at hour-of-week ``(k + u) * 168 / windows_per_month``
  with ``u`` uniform per month (stratified sampling of the week, so the diurnal and weekly
  profile is covered without bias); ``continuous = true`` instead simulates the whole month;
* window statistics scale to the month by ``MONTH_S / (windows_per_month * window_s)``:
  requests, tokens and revenue are sums, utilisation and attainment are ratios of sums;
* each tenant's delivered SLA attainment is fed back to the market (renewal, churn and the
  provider's track record), closing the loop between service quality and contracts;
* costs per month come from the capacity contracts (:mod:`sim.contracts`) with power drawn
  from the simulated busy share.

Windows are independent simulations (queues start empty, warm-up discarded); the test
``tests/test_forecast.py`` checks that windowed and continuous runs agree on stationary demand.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import simpy

from sim.market import MONTH_S, SOVEREIGN, Market
from sim.rng import RandomStreams
from sim.runner import World, _json_default, resolved_config
from sim.scenario import Scenario, scenario_from_dict

HOUR_S = 3600.0
WEEK_H = 168.0


@dataclass
class ForecastResult:
    monthly: pd.DataFrame
    summary: dict
    scenario: Scenario
    seed: int
    out_dir: Path | None = None
    wall_s: float = 0.0
    files: list[str] = field(default_factory=list)
    market: object = None


class _Delivered:
    """Each tenant's delivered SLA: requests measured and met, over its whole life and
    over the last simulated month (what the market's ``attainment_of`` returns)."""

    def __init__(self):
        self.life: dict[str, list[float]] = {}
        self.last: dict[str, float] = {}

    def add(self, cid: str, measured: float, met: float):
        acc = self.life.setdefault(cid, [0.0, 0.0])
        acc[0] += measured
        acc[1] += met

    def close_month(self, month_acc: dict[str, list[float]]):
        for cid, (n, met) in month_acc.items():
            if n > 0:
                self.last[cid] = met / n

    def attainment_of(self, contract) -> float | None:
        acc = self.life.get(contract.id)
        if not acc or acc[0] <= 0:
            return None
        return acc[1] / acc[0]


def _tenant(contract, hour_of_week: float, spec) -> dict:
    """A workload table for one sovereign contract (the vertical's demand defaults)."""
    from sim.demand import vertical_workload
    w = vertical_workload(contract.vertical, f"c{contract.id}", contract.rate_per_s)
    w["arrivals"]["start_hour_of_week"] = hour_of_week % WEEK_H
    w["sla"] = {"ttft_s": contract.sla.ttft_s, "tpot_s": contract.sla.tpot_s,
                "attainment_target": contract.sla.attainment_target}
    if spec.model is not None:
        w["model"] = spec.model
    return w


def window_scenario(base: Scenario, contracts, hour_of_week: float, window_s: float,
                    warmup_s: float) -> Scenario | None:
    """The serving scenario of one traffic window: the base scenario's sites, fleet and
    router, one tenant per contract."""
    if not contracts:
        return None
    spec = base.forecast
    d = base.model_dump(mode="python", exclude={"market", "forecast", "workloads"})
    d["simulation"] = dict(d["simulation"])
    d["simulation"].update({"horizon_s": warmup_s + window_s, "warmup_s": warmup_s,
                            "request_sample_size": 0,
                            "timeseries_interval_s": warmup_s + window_s})
    d["workloads"] = [_tenant(c, hour_of_week - warmup_s / HOUR_S, spec) for c in contracts]
    served = {dep["model"] for dep in d["deployments"]}
    d["workloads"] = [w for w in d["workloads"] if w["model"] in served]
    if not d["workloads"]:
        return None
    return scenario_from_dict(d, "forecast window")


def _window_seed(streams: RandomStreams, month: int, k: int) -> int:
    return int(streams.seed_sequence(f"forecast/window/{month}/{k}").generate_state(1)[0])


def _month_cost_eur(scenario: Scenario, busy_share: float, hours: float) -> dict:
    """Capacity cost of the month: each deployment's GPUs under its site's contract terms
    (rental by default), power from the simulated busy share."""
    from sim.contracts import default_terms_for
    total = {"fixed_eur": 0.0, "power_eur": 0.0}
    sites = {s.name: s for s in scenario.sites}
    for dep in scenario.deployments:
        site = sites.get(dep.site) if dep.site else None
        terms = default_terms_for(scenario, site)
        total["fixed_eur"] += dep.gpus * terms.fixed_eur_per_gpu_h * hours
        total["power_eur"] += dep.gpus * terms.power_eur_per_gpu_s(busy_share) * hours * HOUR_S
    return total


def run_forecast(scenario: Scenario, seed: int | None = None, out_dir: str | Path | None = None,
                 progress: bool = False, figures: bool = True) -> ForecastResult:
    """The monthly forecast of ``scenario`` (which needs ``[forecast]``; ``[market]`` is
    optional: without it the market's defaults apply)."""
    spec = scenario.forecast
    if spec is None:
        from sim.errors import UserError
        raise UserError("forecast: the scenario has no [forecast] block (months, window_s, ...)")
    seed = scenario.simulation.seed if seed is None else int(seed)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(resolved_config(scenario, seed), indent=2) + "\n")
    t_start = time.perf_counter()
    streams = RandomStreams(seed)
    env = simpy.Environment()
    delivered = _Delivered()
    market = Market(env, scenario.market, streams, delivered.attainment_of)
    rng_phase = streams.generator("forecast/phase")
    months = spec.months
    W = 1 if spec.continuous else spec.windows_per_month
    window_s = MONTH_S if spec.continuous else spec.window_s
    scale = MONTH_S / (W * window_s)
    hours = MONTH_S / HOUR_S
    rows = []
    bar = None
    if progress:
        from tqdm import tqdm
        import sys
        bar = tqdm(total=months, unit="month", delay=2.0, file=sys.stderr)
    for m in range(months):
        t0 = m * MONTH_S
        env.run(until=t0 + MONTH_S)
        u = float(rng_phase.random())
        month_acc: dict[str, list[float]] = {}
        agg = {"arrivals": 0, "completed": 0, "rejected": 0, "measured": 0, "sla_met": 0,
               "prompt_tokens": 0, "output_tokens": 0, "revenue_eur": 0.0, "busy": 0.0,
               "gpu_s": 0.0, "ttft_p99": [], "residency_violations": 0}
        for k in range(W):
            t_mid = t0 + (k + 0.5) * MONTH_S / W
            contracts = market.sovereign_contracts(t_mid)
            how = (k + u) * WEEK_H / W
            wsc = window_scenario(scenario, contracts, how, window_s, spec.warmup_s)
            if wsc is None:
                agg["gpu_s"] += sum(d.gpus for d in scenario.deployments) * window_s
                continue
            world = World(wsc, _window_seed(streams, m, k))
            world.run()
            s = world.summary()
            by_id = {f"c{c.id}": c for c in contracts}
            for name, ws in s["workloads"].items():
                c = by_id[name]
                measured = ws["measured"] + ws.get("rejected", 0)
                met = (ws["sla_attainment"] or 0.0) * measured
                acc = month_acc.setdefault(c.id, [0.0, 0.0])
                acc[0] += measured
                acc[1] += met
                agg["revenue_eur"] += (ws["completed_prompt_tokens"] * c.price_eur_per_mtok_in +
                                       ws["completed_output_tokens"] * c.price_eur_per_mtok_out) / 1e6
                agg["prompt_tokens"] += ws["completed_prompt_tokens"]
                agg["output_tokens"] += ws["completed_output_tokens"]
            agg["arrivals"] += s["arrivals"]
            agg["completed"] += s["completed"]
            agg["rejected"] += s["rejected"]
            agg["residency_violations"] += s["residency_violations"]
            agg["busy"] += s["gpu_utilisation"] * s["gpus"] * window_s
            agg["gpu_s"] += s["gpus"] * window_s
            if s["ttft_s"]["p99"] is not None:
                agg["ttft_p99"].append(s["ttft_s"]["p99"])
        for cid, (n, met) in month_acc.items():
            delivered.add(cid, n, met)
        measured = sum(a[0] for a in month_acc.values())
        met = sum(a[1] for a in month_acc.values())
        util = agg["busy"] / agg["gpu_s"] if agg["gpu_s"] else 0.0
        cost = _month_cost_eur(scenario, util, hours)
        revenue = agg["revenue_eur"] * scale
        cost_total = cost["fixed_eur"] + cost["power_eur"]
        log = market.monthly_log[m] if m < len(market.monthly_log) else {}
        tokens = (agg["prompt_tokens"] + agg["output_tokens"]) * scale
        rows.append({
            "month": m,
            "contracts_active": len(market.sovereign_contracts(t0 + MONTH_S - 1.0)),
            "contracts_won": log.get("won", 0),
            "contracts_lost": log.get("lost", 0),
            "contracts_churned": log.get("churned", 0),
            "share": log.get("share"),
            "requests": agg["arrivals"] * scale,
            "rejected_share": agg["rejected"] / agg["arrivals"] if agg["arrivals"] else 0.0,
            "tokens": tokens,
            "gpus": sum(d.gpus for d in scenario.deployments),
            "gpu_utilisation": util,
            "sla_attainment": met / measured if measured else None,
            "ttft_p99_s": float(np.max(agg["ttft_p99"])) if agg["ttft_p99"] else None,
            "revenue_eur": revenue,
            "capacity_cost_eur": cost["fixed_eur"],
            "power_cost_eur": cost["power_eur"],
            "cost_eur": cost_total,
            "gross_margin_eur": revenue - cost_total,
            "gross_margin_share": (revenue - cost_total) / revenue if revenue > 0 else None,
            "cost_eur_per_mtok": cost_total / (tokens / 1e6) if tokens > 0 else None,
            "residency_violations": agg["residency_violations"],
            "simulated_requests": agg["arrivals"],
        })
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    monthly = pd.DataFrame(rows)
    summary = _summary(scenario, seed, monthly, market)
    result = ForecastResult(monthly=monthly, summary=summary, scenario=scenario, seed=seed,
                            out_dir=out, market=market)
    result.wall_s = time.perf_counter() - t_start
    if out is not None:
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default) + "\n")
        monthly.to_parquet(out / "monthly.parquet", index=False)
        monthly.to_csv(out / "monthly.csv", index=False)
        result.files = ["config.json", "summary.json", "monthly.parquet", "monthly.csv"]
        if figures:
            result.files += forecast_figures(result)
    return result


def _summary(scenario, seed, monthly: pd.DataFrame, market) -> dict:
    rev = float(monthly["revenue_eur"].sum())
    cost = float(monthly["cost_eur"].sum())
    tokens = float(monthly["tokens"].sum())
    att = monthly["sla_attainment"].dropna()
    return {
        "scenario": scenario.name,
        "seed": seed,
        "months": int(len(monthly)),
        "revenue_eur": rev,
        "cost_eur": cost,
        "gross_margin_eur": rev - cost,
        "gross_margin_share": (rev - cost) / rev if rev > 0 else None,
        "cost_eur_per_mtok": cost / (tokens / 1e6) if tokens > 0 else None,
        "tokens": tokens,
        "gpu_utilisation_mean": float(monthly["gpu_utilisation"].mean()),
        "sla_attainment_mean": float(att.mean()) if len(att) else None,
        "contracts": {"won": market.won, "lost": market.lost, "active": market.active,
                      "expired": market.expired, "churned": market.churned, "renewed": market.renewed},
        "final_share": monthly["share"].dropna().iloc[-1] if monthly["share"].notna().any() else None,
        "residency_violations": int(monthly["residency_violations"].sum()),
        "simulated_requests": int(monthly["simulated_requests"].sum()),
    }


def forecast_figures(result: ForecastResult) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    df = result.monthly
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    ax = axes[0, 0]
    ax.plot(df["month"], df["revenue_eur"] / 1e3, label="revenue")
    ax.plot(df["month"], df["cost_eur"] / 1e3, label="cost")
    ax.plot(df["month"], df["gross_margin_eur"] / 1e3, label="gross margin")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_ylabel("kEUR per month")
    ax.legend()
    ax.set_title("Money")
    ax = axes[0, 1]
    ax.plot(df["month"], df["gpu_utilisation"], label="GPU utilisation")
    ax.plot(df["month"], df["sla_attainment"], label="SLA attainment")
    ax.set_ylim(0, 1.05)
    ax.legend()
    ax.set_title("Service")
    ax = axes[1, 0]
    ax.plot(df["month"], df["contracts_active"], label="active")
    ax.bar(df["month"], df["contracts_won"], alpha=0.5, label="won")
    ax.bar(df["month"], -df["contracts_lost"], alpha=0.5, label="lost (RFPs)")
    ax.set_title("Contracts")
    ax.legend()
    ax = axes[1, 1]
    ax.plot(df["month"], df["share"], label="sovereign share of contracted demand")
    ax.set_ylim(0, 1)
    ax.set_title("Market share")
    for a in axes.flat:
        a.set_xlabel("month")
    fig.suptitle(f"{result.summary['scenario']}: {len(df)}-month forecast (seed {result.seed})")
    fig.tight_layout()
    fig.savefig(result.out_dir / "forecast.png", dpi=110)
    plt.close(fig)
    return ["forecast.png"]
