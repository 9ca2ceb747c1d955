"""The multi-year forecast: market and capacity run continuously, traffic in sampled windows,
money on the ledger.

* the customer market (:mod:`sim.market.market`) runs continuously on the month scale, in its
  own SimPy environment whose clock is the forecast's (seconds from the start);
* each month, the sovereign contracts in force at mid-month become tenants whose traffic is
  simulated in sampled windows on the month's fleet (:mod:`sim.forecast.windows`);
* each tenant's delivered SLA attainment is fed back to the market (renewal, churn and the
  provider's track record), closing the loop between service quality and contracts;
* money has one path, the ledger (:mod:`sim.forecast.fleet`): each tenant-month's tokens,
  scaled from the windows to the month, are billed at the tenant's contract price and its
  SLA count decides its credit exactly as in a single run
  (:meth:`sim.economics.ledger.Ledger.record_usage`); the fleet's contracts accrue on the
  same ledger.  The monthly table reads revenue, each cost line, the SLA credits and the
  margin from its integer-cent cells, so ``revenue - cost - credits = margin`` to the cent.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import simpy

from sim.core import progress as progress_mod
from sim.core.errors import UserError
from sim.core.rng import RandomStreams
from sim.core.runfolder import RunFolder, run_folder
from sim.economics.ledger import Price, credit_tiers_for, month_lines_eur
from sim.forecast.channels import MarketplaceBilling
from sim.forecast.compliance import ComplianceCosts
from sim.forecast.fleet import FixedFleet, PolicyFleet
from sim.forecast.sites import SiteMonths
from sim.forecast.public_capacity import PublicCapacity, public_capacity_cost_eur
from sim.forecast.windows import (HOUR_S, WEEK_H, fleet_slice, portfolio_shares, portfolio_workloads,  # noqa: F401
                                  simulate_period, simulate_window, tenant_of, tenant_workload, window_busy_gpu_s,
                                  window_scenario, window_seed, window_site_stats)
from sim.market.competition import competition_columns
from sim.market.market import MONTH_S, Market
from sim.market.pricing import model_price
from sim.scenario import Scenario, WorkloadSpec, resolved_config, with_overrides
from sim.scenario.estimate import check_work
from sim.scenario.market import default_market_spec

_tenant = tenant_workload          # the names this module had before the split
_window_seed = window_seed

#: Money columns of the monthly table, all read from the ledger (whole cents).
MONEY_COLUMNS = ("revenue_eur", "revenue_input_eur", "revenue_output_eur", "rental_cost_eur",
                 "partner_cost_eur", "depreciation_cost_eur", "colocation_cost_eur", "capacity_cost_eur",
                 "power_cost_eur", "cost_eur", "sla_credits_eur", "gross_margin_eur",
                 "marketplace_fee_eur", "marketplace_hosting_cost_eur",
                 "certification_cost_eur", "ai_act_cost_eur", "dora_cost_eur", "compliance_cost_eur")


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
    ledger: object = None
    deployments: pd.DataFrame | None = None   # month x deployment (sim/forecast/sites.py)


class _Delivered:
    """Each tenant's delivered SLA: requests measured and met over its whole life (what
    the market's ``attainment_of`` returns)."""

    def __init__(self):
        self.life: dict[str, list[float]] = {}

    def add(self, cid: str, measured: float, met: float):
        acc = self.life.setdefault(cid, [0.0, 0.0])
        acc[0] += measured
        acc[1] += met

    def attainment_of(self, contract) -> float | None:
        acc = self.life.get(contract.id)
        if not acc or acc[0] <= 0:
            return None
        return acc[1] / acc[0]


class _Tenants:
    """The prices the ledger bills a tenant at: its contract's current term price (the
    market's list price when signed or renewed) and the SLA credit tiers single runs give
    a workload like it (its ``[[pricing]]`` entry's ``sla_credits``, else the defaults
    around its attainment target)."""

    def __init__(self, scenario: Scenario, spec):
        self.scenario = scenario
        self.spec = spec
        self._tiers: dict[str, tuple] = {}
        self._market_spec = None   # the market whose price list bills each model (sim.market.pricing)

    def price(self, contract, model: str | None = None) -> Price:
        """The tenant's price for the tokens of ``model`` (None: the contract price itself):
        the contract price times the model's price-list factors (:mod:`sim.market.pricing`)."""
        if contract.id not in self._tiers:
            w = WorkloadSpec.model_validate(tenant_workload(contract, self.spec))
            self._tiers[contract.id] = credit_tiers_for(self.scenario.pricing, w)
        if model is None:
            return Price.from_eur_per_mtok(contract.price_eur_per_mtok_in, contract.price_eur_per_mtok_out,
                                           self._tiers[contract.id])
        if self._market_spec is None:
            self._market_spec = self.scenario.market if self.scenario.market is not None else default_market_spec()
        p_in, p_out = model_price(self._market_spec, contract, model)
        return Price.from_eur_per_mtok(p_in, p_out, self._tiers[contract.id])


def _bill_month(ledger, tenants: _Tenants, delivered: _Delivered, per: dict, by_name: dict, t_s: float) -> tuple[int, int]:
    """Post each tenant's month to the ledger (tokens scaled to the month, rounded to whole
    tokens; its SLA count) and feed its delivered SLA to the market; returns the unscaled
    prompt and output tokens."""
    scale = per["scale"]
    prompt = output = 0
    parts = _by_model(per["workloads"])
    for name, acc in _by_tenant(per["workloads"]).items():
        c = by_name[name]
        delivered.add(c.id, acc["measured"], acc["met"])
        # each model's tokens at its price-list price (sim.market.pricing), one SLA count per tenant
        for model, pacc in parts.get(name, [(tenants.spec.model if tenants.spec is not None else None, acc)]):
            ledger.set_price(name, tenants.price(c, model))
            ledger.record_usage(t_s, name, c.vertical, None, round(pacc["prompt_tokens"] * scale),
                                round(pacc["output_tokens"] * scale), pacc["measured"], pacc["met_requests"])
        prompt += acc["prompt_tokens"]
        output += acc["output_tokens"]
    return prompt, output


def _by_model(workloads: dict) -> dict:
    """Tenant -> [(model, sums)] for tenants spread over a portfolio (``c<id>@<model>``)."""
    out: dict = {}
    for name, acc in workloads.items():
        if "@" in name:
            tenant, model = name.split("@", 1)
            out.setdefault(tenant, []).append((model, acc))
    return out


def _by_tenant(workloads: dict) -> dict:
    """The window workloads' sums per tenant (a tenant spread over a portfolio is one
    workload per model, ``c<id>@<model>``; :func:`sim.forecast.windows.portfolio_workloads`)."""
    if not any("@" in name for name in workloads):
        return workloads
    out: dict = {}
    for name, acc in workloads.items():
        t = out.setdefault(tenant_of(name), dict.fromkeys(acc, 0))
        for k, v in acc.items():
            t[k] += v
    return out


def _month_row(m: int, contracts: list, market, fleet, base: Scenario, per: dict, prompt: int,
               output: int) -> dict:
    """The traffic and fleet columns of month ``m`` (money columns are filled from the
    ledger when it closes)."""
    scale = per["scale"]
    t_mid = (m + 0.5) * MONTH_S
    log = market.monthly_log[m] if m < len(market.monthly_log) else {}
    arrivals = per["arrivals"]
    row = {
        "month": m,
        "contracts_active": len(contracts),
        "contracts_won": log.get("won", 0),
        "contracts_lost": log.get("lost", 0),
        "contracts_churned": log.get("churned", 0),
        "share": log.get("share"),
        "contracted_rate_per_s": sum(c.rate_per_s for c in contracts),
        "requests": arrivals * scale,
        "rejected_share": per["rejected"] / arrivals if arrivals else 0.0,
        "tokens": (prompt + output) * scale,
        "gpus": sum(d.gpus for d in base.deployments),
        "gpus_in_force": fleet.gpus_at(t_mid),
        "gpus_ordered": fleet.events_in(m, "order"),
        "gpus_released": fleet.events_in(m, "release"),
        "gpu_utilisation": per["gpu_utilisation"],
        "request_utilisation": per["request_utilisation"],
        "sla_attainment": per["sla_attainment"],
        "ttft_p99_s": float(np.max(per["ttft_p99"])) if per["ttft_p99"] else None,
    }
    row.update(dict.fromkeys(MONEY_COLUMNS, 0.0))
    row.update({"gross_margin_share": None, "cost_eur_per_mtok": None,
                "residency_violations": per["residency_violations"],
                "simulated_requests": per.get("simulated_arrivals", arrivals)})
    return row


def _money_columns(monthly: pd.DataFrame, report: dict) -> pd.DataFrame:
    """Fill the money columns of ``monthly`` from the ledger's report (whole cents)."""
    lines = month_lines_eur(report, len(monthly))
    for col in MONEY_COLUMNS:
        monthly[col] = [r[col] for r in lines]
    monthly["gross_margin_share"] = [g / r if r > 0 else None for g, r in zip(monthly["gross_margin_eur"], monthly["revenue_eur"])]
    monthly["cost_eur_per_mtok"] = [c / (t / 1e6) if t > 0 else None for c, t in zip(monthly["cost_eur"], monthly["tokens"])]
    return monthly


def simulate_forecast(scenario: Scenario, seed: int, progress: "progress_mod.Progress | bool | None" = False, executor=None) -> ForecastResult:
    """The months of the forecast, market, traffic and money (no files).

    Months run in order: a month's tenants depend on the SLA delivered in earlier months
    (renewals, churn, awards) and, with a capacity policy, its fleet on earlier months'
    measurements.  The windows of one month are independent given its fleet and tenants:
    with ``executor`` (any ``concurrent.futures.Executor``) they run in parallel, with the
    same results as in this process."""
    spec = scenario.forecast
    streams = RandomStreams(seed)
    env = simpy.Environment()
    delivered = _Delivered()
    market = Market(env, scenario.market, streams, delivered.attainment_of, sites=scenario.sites)
    rng_phase = streams.generator("forecast/phase")
    fleet = PolicyFleet(scenario, env, market, spec) if scenario.capacity_policy.kind != "fixed" else FixedFleet(scenario)
    tenants = _Tenants(scenario, spec)
    public = PublicCapacity(scenario, market.spec, env, spec)   # eligible tenants on public AI capacity (off by default)
    channels = MarketplaceBilling(market, spec)   # marketplace tenants: hosted traffic, fees (sim/forecast/channels.py)
    compliance = ComplianceCosts(scenario, market)   # certification, AI Act, DORA costs; gated serving (sim/forecast/compliance.py)
    rows = []
    sites = SiteMonths(scenario)   # per-site and per-deployment columns (sim/forecast/sites.py)
    bar = progress_mod.start(progress, spec.months, "month", "forecast")   # sim.core.progress
    for m in range(spec.months):
        t0 = m * MONTH_S
        t_mid = t0 + 0.5 * MONTH_S
        env.run(until=t0 + MONTH_S)
        backlog_row = market.backlog.close_month(m)       # at the month's end (sim/market/backlog.py)
        u = float(rng_phase.random())
        contracts = market.sovereign_contracts(t_mid)    # the tenants of the month
        base = compliance.base_for(fleet.base_for(t_mid), t_mid)   # sites' certifications held now
        hosted, hosted_tokens = channels.place_hosted(m, contracts, fleet.ledger, tenants, delivered)
        served = [c for c in contracts if c.id not in hosted] if hosted else contracts
        on_public = public.place(m, served, fleet.ledger, tenants, delivered)
        on_fleet = [c for c in served if c.id not in on_public] if on_public else served
        per = simulate_period(base, portfolio_workloads([compliance.tenant(c, tenant_workload(c, spec)) for c in on_fleet],
                                                  portfolio_shares(base) if spec.model is None else {}, base),
                              MONTH_S, spec.windows_per_month, spec.window_s, spec.warmup_s, u,
                              lambda k, m=m: window_seed(streams, m, k), continuous=spec.continuous,
                              executor=executor, max_replicas=scenario.cells.max_replicas)
        prompt, output = _bill_month(fleet.ledger, tenants, delivered, per, {f"c{c.id}": c for c in on_fleet}, t_mid)
        channels.charge_fees(m, contracts, fleet.ledger)
        compliance.book(m, base, contracts, fleet.ledger)
        fleet.record(m, per, [c.sla.attainment_target for c in contracts])
        sites.record(m, base, fleet, per, t_mid)
        rows.append(_month_row(m, contracts, market, fleet, base, per, prompt, output))
        rows[-1]["tokens"] += hosted_tokens
        rows[-1].update({k: v for k, v in backlog_row.items() if k != "month"})
        rows[-1].update(competition_columns(market.monthly_log[m]))   # competitors' SLA, capacity, prices (sim/market/competition.py)
        pub = public.month_columns(m)
        rows[-1]["tokens"] += pub.pop("public_capacity_tokens")
        rows[-1].update(pub)
        bar.update(1, requests=per.get("simulated_arrivals", per["arrivals"]))   # simulated, not scaled to the fleet
    bar.close()
    report = fleet.close(spec.months)
    monthly = _money_columns(pd.DataFrame(rows), report)
    monthly["public_capacity_cost_eur"] = public_capacity_cost_eur(fleet.ledger, spec.months)
    channels.columns(monthly, fleet.ledger)
    compliance.columns(monthly)
    monthly, deployments, site_summary = sites.finish(monthly, fleet.ledger)
    summary = _summary(scenario, seed, monthly, market)
    summary["sites"] = site_summary
    summary["compliance"] = compliance.summary(monthly)
    summary["owned_cost_eur"] = float(monthly["owned_cost_eur"].sum())
    summary["leased_cost_eur"] = float(monthly["leased_cost_eur"].sum())
    summary["backlog"] = {"opening_eur": market.backlog.open(), "final_eur": float(monthly["backlog_eur"].iloc[-1]),
                          "cancelled_contracts": int(monthly["contracts_cancelled"].sum()),
                          "cancelled_eur": float(monthly["backlog_cancelled_eur"].sum()),
                          "anchors": len(market.public.anchors), "slips": len(market.public.slips)}
    summary["channels"] = {"marketplace_revenue_eur": float(monthly["marketplace_revenue_eur"].sum()),
                           "marketplace_margin_eur": float(monthly["marketplace_margin_eur"].sum()),
                           "direct_margin_eur": float(monthly["direct_margin_eur"].sum()),
                           "marketplace_contracts_signed": len(market.channels.signed),
                           "migrations": len(market.channels.migrations)}
    if isinstance(fleet, PolicyFleet):
        summary["capacity"] = fleet.report()
    return ForecastResult(monthly=monthly, summary=summary, scenario=scenario, seed=seed, market=market,
                          ledger=fleet.ledger, deployments=deployments)


def write_forecast_outputs(result: ForecastResult, folder: RunFolder) -> None:
    """``summary.json``, ``monthly.parquet`` and ``monthly.csv`` into ``folder``; the figure and
    ``report.html`` are the study layer's (:func:`sim.study.report.finish_forecast`)."""
    folder.write_json("summary.json", result.summary)
    folder.write_with("monthly.parquet", lambda t: result.monthly.to_parquet(t, index=False))
    folder.write_with("monthly.csv", lambda t: result.monthly.to_csv(t, index=False))
    result.files = ["config.json", "summary.json", "monthly.parquet", "monthly.csv"]
    if result.deployments is not None:
        folder.write_with("monthly_deployments.csv", lambda t: result.deployments.to_csv(t, index=False))
        result.files.append("monthly_deployments.csv")


def run_forecast(scenario: Scenario, seed: int | None = None, out_dir: str | Path | None = None,
                 progress: bool = False, figures: bool = False, max_work: float | None = None,
                 executor=None) -> ForecastResult:
    """The monthly forecast of ``scenario`` (which needs ``[forecast]``; ``[market]`` is
    optional: without it the market's defaults apply).  With ``out_dir``, the run folder is
    written through :func:`sim.core.runfolder.run_folder`: ``config.json`` first, results,
    ``manifest.json`` last with the status (``error.txt`` and no stale results on failure).
    ``executor``: run each month's windows on it (:func:`simulate_forecast`).  ``figures``:
    kept for callers that pass ``figures=False``; this layer draws none (one forecast figure,
    labelled, with its SLA target line: :func:`sim.study.report.finish_forecast`, which
    ``sovsim run`` and ``sim.forecast`` call)."""
    if figures:
        raise UserError("run_forecast(figures=True): figures are drawn by sim.study.report.finish_forecast(result) "
                        "(or use sim.forecast(..., out=...)); pass figures=False")
    if scenario.forecast is None:
        raise UserError("forecast: the scenario has no [forecast] block (months, window_s, ...)")
    check_work(_work_view(scenario), max_work)   # refuse work beyond the limits before any (sim.scenario.estimate)
    seed = scenario.simulation.seed if seed is None else int(seed)
    with run_folder(out_dir, "run", resolved_config(scenario, seed)) as folder:
        t_start = time.perf_counter()
        result = simulate_forecast(scenario, seed, progress, executor)
        result.wall_s = time.perf_counter() - t_start
        if folder is not None:
            result.out_dir = folder.path
            write_forecast_outputs(result, folder)
    return result


def _work_view(scenario: Scenario) -> Scenario:
    """The scenario whose work estimate is the forecast's: with ``[cells]`` each window
    simulates one slice of the fleet (:func:`sim.forecast.windows.fleet_slice`): its replicas
    (what is built and binned per window) and the market's requests at the slice's share of
    the month-0 fleet's GPUs (windows shorter by that share, bins per window unchanged)."""
    if scenario.cells.max_replicas is None:
        return scenario
    sliced = fleet_slice(scenario, [], scenario.cells.max_replicas)[0]
    f = sum(d.gpus for d in sliced.deployments) / max(1, sum(d.gpus for d in scenario.deployments))
    fc = scenario.forecast
    over = {"forecast.window_s": fc.window_s * f, "forecast.warmup_s": fc.warmup_s * f}
    over.update({f"deployments.{i}.replicas": d.replicas for i, d in enumerate(sliced.deployments)})
    return with_overrides(scenario, over)


def _summary(scenario, seed, monthly: pd.DataFrame, market) -> dict:
    rev = float(monthly["revenue_eur"].sum())
    cost = float(monthly["cost_eur"].sum())
    credits = float(monthly["sla_credits_eur"].sum())
    margin = float(monthly["gross_margin_eur"].sum())
    tokens = float(monthly["tokens"].sum())
    att = monthly["sla_attainment"].dropna()
    ru = monthly["request_utilisation"].dropna()
    return {
        "scenario": scenario.name,
        "seed": seed,
        "months": int(len(monthly)),
        "revenue_eur": rev,
        "cost_eur": cost,
        "sla_credits_eur": credits,
        "gross_margin_eur": margin,
        "gross_margin_share": margin / rev if rev > 0 else None,
        "cost_eur_per_mtok": cost / (tokens / 1e6) if tokens > 0 else None,
        "cost_lines_eur": {ln: float(monthly[f"{ln}_cost_eur"].sum())
                           for ln in ("rental", "partner", "depreciation", "colocation", "power")},
        "tokens": tokens,
        "gpu_utilisation_mean": float(monthly["gpu_utilisation"].mean()),
        "request_utilisation_mean": float(ru.mean()) if len(ru) else None,
        "sla_attainment_mean": float(att.mean()) if len(att) else None,
        "contracts": {"won": market.won, "lost": market.lost, "active": market.active,
                      "expired": market.expired, "churned": market.churned, "renewed": market.renewed},
        "final_share": float(monthly["share"].dropna().iloc[-1]) if monthly["share"].notna().any() else None,
        "residency_violations": int(monthly["residency_violations"].sum()),
        "simulated_requests": int(monthly["simulated_requests"].sum()),
    }


def _pct(v) -> str:
    return "-" if v is None or v != v else f"{v * 100:.1f}%"


def format_forecast(result: ForecastResult) -> str:
    """The terminal table. ``req util`` is request utilisation (a load measure); the busy
    share (``gpu_utilisation`` in the files) is not shown as a utilisation."""
    s = result.summary
    df = result.monthly
    lines = [f"scenario {s['scenario']}  seed {s['seed']}  {s['months']} months  "
             f"{int(df['gpus'].iloc[0])} GPUs  ({s['simulated_requests']:,} requests simulated in sampled windows)"]
    hdr = (f"{'month':>5} {'active':>6} {'won':>4} {'lost':>4} {'req/s':>7} {'req util':>8} {'SLA met':>8} "
           f"{'revenue EUR':>12} {'cost EUR':>10} {'credits EUR':>11} {'margin EUR':>11}")
    lines.append(hdr)
    for _, r in df.iterrows():
        lines.append(f"{int(r['month']):>5} {int(r['contracts_active']):>6} {int(r['contracts_won']):>4} "
                     f"{int(r['contracts_lost']):>4} {r['requests'] / MONTH_S:>7.1f} {_pct(r['request_utilisation']):>8} "
                     f"{_pct(r['sla_attainment']):>8} {r['revenue_eur']:>12,.0f} {r['cost_eur']:>10,.0f} "
                     f"{r['sla_credits_eur']:>11,.0f} {r['gross_margin_eur']:>11,.0f}")
    gm = s["gross_margin_share"]
    c = s["contracts"]
    ru = s.get("request_utilisation_mean")
    lines.append("")
    lines.append(f"total: revenue {s['revenue_eur']:,.0f} EUR, costs {s['cost_eur']:,.0f} EUR, SLA credits "
                 f"{s['sla_credits_eur']:,.0f} EUR, gross margin {s['gross_margin_eur']:,.0f} EUR"
                 + (f" ({gm * 100:.1f} %)" if gm is not None else "")
                 + (f", cost {s['cost_eur_per_mtok']:.3f} EUR per million tokens" if s["cost_eur_per_mtok"] else ""))
    lines.append(f"contracts: won {c['won']}, lost {c['lost']} RFPs, active {c['active']}, churned {c['churned']}, "
                 f"expired {c['expired']}, renewals {c['renewed']}; final sovereign share "
                 f"{(s['final_share'] or 0) * 100:.1f} %; mean request utilisation "
                 f"{'-' if ru is None else f'{ru * 100:.1f} %'} (busy share {s['gpu_utilisation_mean'] * 100:.1f} %), "
                 f"mean SLA attainment {(s['sla_attainment_mean'] or 0) * 100:.1f} %; residency violations {s['residency_violations']}")
    return "\n".join(lines)
