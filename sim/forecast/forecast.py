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

from sim.market.market import MONTH_S, Market
from sim.core import progress as progress_mod
from sim.core.rng import RandomStreams
from sim.serving.world import World
from sim.core.serialise import json_default as _json_default
from sim.scenario import resolved_config
from sim.scenario import Scenario, scenario_from_dict
from sim.scenario.estimate import check_work
from sim.core.errors import UserError
from sim.demand.verticals import vertical_workload
from sim.economics.capacity import CapacityManager, PolicyParams, initial_tranches
from sim.economics.contracts import default_terms_for
from sim.economics.ledger import BusyView, Ledger
from sim.scenario import WorkloadSpec, with_overrides
from sim.serving.fluid import probe_replica, replica_request_capacity_per_s
from sim.serving.residency import serving_sites

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


def _tenant(contract, spec) -> dict:
    """A workload table for one sovereign contract (the vertical's demand defaults)."""
    w = vertical_workload(contract.vertical, f"c{contract.id}", contract.rate_per_s)
    w["sla"] = {"ttft_s": contract.sla.ttft_s, "tpot_s": contract.sla.tpot_s,
                "attainment_target": contract.sla.attainment_target}
    if spec is not None and spec.model is not None:
        w["model"] = spec.model
    return w


def window_scenario(base: Scenario, workloads: list[dict], start_hour_of_week: float,
                    window_s: float, warmup_s: float) -> Scenario | None:
    """The serving scenario of one traffic window: the base scenario's sites, fleet and
    router; the given workloads, their arrival profiles read from ``start_hour_of_week``
    (the window's warm-up starts ``warmup_s`` earlier)."""
    d = base.model_dump(mode="python", exclude={"market", "forecast", "workloads"})
    d["simulation"] = dict(d["simulation"])
    d["simulation"].update({"horizon_s": warmup_s + window_s, "warmup_s": warmup_s,
                            "request_sample_size": 0,
                            # bin 0 is the warm-up exactly; later bins are the window
                            "timeseries_interval_s": warmup_s if warmup_s > 0 else window_s})
    served = {dep["model"] for dep in d["deployments"]}
    ws = []
    for w in workloads:
        if w["model"] not in served:
            continue
        w = dict(w)
        arr = dict(w["arrivals"])
        if arr.get("kind") == "nhpp":
            arr["start_hour_of_week"] = (start_hour_of_week - warmup_s / HOUR_S) % WEEK_H
        w["arrivals"] = arr
        ws.append(w)
    if not ws:
        return None
    d["workloads"] = ws
    return scenario_from_dict(d, "forecast window")


def window_busy_gpu_s(world: World) -> float:
    """GPU-seconds with an iteration in progress after the warm-up (bins after the first
    when there is a warm-up), the run still in progress at the horizon included."""
    warm = world.scenario.simulation.warmup_s
    now = world.env.now
    total = 0.0
    for rep in world.replicas:
        bins = world.metrics.busy[rep.index]
        busy = sum(bins[1:]) if warm > 0 else sum(bins)
        busy += rep.partial_run(now)[0]
        total += busy * rep.gpus
    return total


def window_site_stats(world: World, done_at_warmup: list[int]) -> dict[str, dict[str, float]]:
    """Per site, after the warm-up: busy GPU-seconds, requests completed, and the requests
    its replicas could have completed at full batch for the window's length mix
    (:func:`sim.capacity.replica_request_capacity_per_s`): request utilisation."""
    warm = world.scenario.simulation.warmup_s
    now = world.env.now
    span = now - warm if warm > 0 else now
    n = sum(st.arrivals for st in world.metrics.streams)
    mix = ((sum(st.arrived_prompt_tokens for st in world.metrics.streams) / n,
            sum(st.arrived_output_tokens for st in world.metrics.streams) / n) if n else None)
    out: dict[str, dict[str, float]] = {}
    caps: dict[int, float] = {}
    for rep in world.replicas:
        st = out.setdefault(rep.site or "-", {"busy_gpu_s": 0.0, "completed": 0.0, "capacity_requests": 0.0})
        b = world.metrics.busy[rep.index]
        st["busy_gpu_s"] += ((sum(b[1:]) if warm > 0 else sum(b)) + rep.partial_run(now)[0]) * rep.gpus
        st["completed"] += rep.completed - done_at_warmup[rep.index]
        if mix is not None:
            if rep.deployment not in caps:
                caps[rep.deployment] = replica_request_capacity_per_s(rep, *mix)
            st["capacity_requests"] += caps[rep.deployment] * span
    return out


def simulate_period(base: Scenario, workloads: list[dict], period_s: float, windows: int,
                    window_s: float, warmup_s: float, phase: float, seed_of, continuous: bool = False,
                    site_stats: bool = False) -> dict:
    """Estimate one period (a month) of traffic from ``windows`` sampled windows.

    Window ``k`` starts at hour-of-week ``(k + phase) * 168 / windows``; totals scale by
    ``period_s / (windows * window_s)``.  ``continuous`` simulates the whole period once
    instead.  Returns per-workload sums (unscaled) and fleet busy/GPU seconds; with
    ``site_stats``, per-site busy time and request utilisation too (capacity policies)."""
    if continuous:
        windows, window_s = 1, period_s
    out = {"scale": period_s / (windows * window_s), "workloads": {}, "arrivals": 0, "completed": 0,
           "rejected": 0, "busy_gpu_s": 0.0, "gpu_s": 0.0, "ttft_p99": [], "residency_violations": 0,
           "window_s": window_s, "windows": windows, "sites": {}}
    gpus = sum(d.gpus for d in base.deployments)
    for k in range(windows):
        how = 0.0 if continuous else (k + phase) * WEEK_H / windows
        wsc = window_scenario(base, workloads, how, window_s, 0.0 if continuous else warmup_s)
        out["gpu_s"] += gpus * window_s
        if wsc is None:
            continue
        world = World(wsc, seed_of(k))
        if site_stats:
            if wsc.simulation.warmup_s > 0:
                world.env.run(until=wsc.simulation.warmup_s)
            done_at_warmup = [r.completed for r in world.replicas]
        world.run()
        s = world.summary()
        out["busy_gpu_s"] += window_busy_gpu_s(world)
        if site_stats:
            for site, st in window_site_stats(world, done_at_warmup).items():
                acc_s = out["sites"].setdefault(site, {"busy_gpu_s": 0.0, "completed": 0.0, "capacity_requests": 0.0})
                for k_, v_ in st.items():
                    acc_s[k_] += v_
        for name, ws in s["workloads"].items():
            # only what arrived after the warm-up is measured and scaled
            acc = out["workloads"].setdefault(name, {"measured": 0, "met": 0.0, "prompt_tokens": 0,
                                                    "output_tokens": 0, "arrivals": 0, "completed": 0,
                                                    "rejected": 0})
            n_rej = ws["measured_rejected"]
            measured = ws["measured"] + n_rej + ws["inflight_missed"]
            acc["measured"] += measured
            acc["met"] += (ws["sla_attainment"] or 0.0) * measured
            acc["prompt_tokens"] += ws["measured_prompt_tokens"]
            acc["output_tokens"] += ws["measured_output_tokens"]
            acc["arrivals"] += ws["measured_arrivals"]
            acc["completed"] += ws["measured"]
            acc["rejected"] += n_rej
            out["arrivals"] += ws["measured_arrivals"]
            out["completed"] += ws["measured"]
            out["rejected"] += n_rej
        out["residency_violations"] += s["residency_violations"]
        if s["ttft_s"]["p99"] is not None:
            out["ttft_p99"].append(s["ttft_s"]["p99"])
    out["gpu_utilisation"] = out["busy_gpu_s"] / out["gpu_s"] if out["gpu_s"] else 0.0
    n = sum(a["measured"] for a in out["workloads"].values())
    out["sla_attainment"] = (sum(a["met"] for a in out["workloads"].values()) / n) if n else None
    return out


def _window_seed(streams: RandomStreams, month: int, k: int) -> int:
    return int(streams.seed_sequence(f"forecast/window/{month}/{k}").generate_state(1)[0])


def _month_cost_eur(scenario: Scenario, busy_share: float, hours: float) -> dict:
    """Capacity cost of the month: each deployment's GPUs under its site's contract terms
    (rental by default), power from the simulated busy share."""
    total = {"fixed_eur": 0.0, "power_eur": 0.0}
    sites = {s.name: s for s in scenario.sites}
    for dep in scenario.deployments:
        site = sites.get(dep.site) if dep.site else None
        terms = default_terms_for(scenario, site)
        total["fixed_eur"] += dep.gpus * terms.fixed_eur_per_gpu_h * hours
        total["power_eur"] += dep.gpus * terms.power_eur_per_gpu_s(busy_share) * hours * HOUR_S
    return total


class PolicyFleet:
    """The capacity policy of a forecast (``capacity_policy.kind`` threshold or forecast).

    One :class:`sim.capacity.CapacityManager` per site with deployments runs in the market's
    environment (the forecast's clock), so orders and releases follow lead times, minimum
    terms and notice in seconds, and every tranche is billed by a :class:`sim.ledger.Ledger`
    from its arrival to its end.  Each month's traffic windows run on the fleet in force at
    mid-month: the site's growing deployment (``capacity_policy.deployment``, else the
    site's first) gets ``(GPUs in force - the other deployments' GPUs) // tp`` replicas.

    Signals, at month scale (policies look at most once a day, see ``LOOK_S``):

    * threshold: the site's request utilisation measured in last month's windows (requests
      completed / what its replicas could complete at full batch), rescaled
      to the GPUs in force now (demand held, capacity changed: ``u x GPUs measured / GPUs
      now``); and queueing, seen at month scale as SLA attainment: a month whose attainment
      fell under its tenants' lowest target makes each site not under ``low_utilisation``
      order once;
    * forecast: the peak-hour request rate of the sovereign contracts already signed and in
      force at the time looked at (contract rate x the vertical's profile peak, split evenly
      over the sites its residency allows), in GPUs at the fluid request capacity of a
      replica for the vertical's mean lengths (:func:`sim.capacity.replica_request_capacity_per_s`).
    """

    LOOK_S = 86400.0   # run setting: a month-scale fleet needs no hourly looks

    def __init__(self, scenario: Scenario, env, market, spec):
        import dataclasses

        self.scenario = scenario
        self.env = env
        self.market = market
        self.spec = spec
        self.busy_cum: dict[str, float] = {}
        self.ledger = Ledger(month_s=MONTH_S, fleet=self._views, start_s=0.0)
        site_tranches, order_terms = initial_tranches(scenario, 0.0)
        for trs in site_tranches.values():
            for tr in trs:
                self.ledger.add_tranche(tr)
        cp = scenario.capacity_policy
        params = PolicyParams.from_spec(cp)
        params = dataclasses.replace(params, check_interval_s=max(params.check_interval_s, self.LOOK_S))
        self.site_deps: dict[str, list[int]] = {}
        for di, dep in enumerate(scenario.deployments):
            self.site_deps.setdefault(dep.site or "-", []).append(di)
        self.growing: dict[str, int] = {}
        for site, deps in self.site_deps.items():
            named = [di for di in deps if scenario.deployments[di].name == cp.deployment]
            self.growing[site] = named[0] if named else deps[0]
        self.measured: dict[str, tuple[float, int]] = {}   # site -> (throughput util, GPUs measured)
        self.attainment_short: set[str] = set()
        self.managers: dict[str, CapacityManager] = {}
        self._tenant_cache: dict[tuple[str, int], tuple[float, float, set[str]]] = {}
        for site in self.site_deps:
            mgr = CapacityManager(env, self.ledger, site, order_terms[site], params,
                                  load=lambda site=site: self._load(site),
                                  forecast_gpus=lambda t, site=site: self._forecast_gpus(site, t),
                                  initial=site_tranches.get(site, []))
            mgr.release_grid_points = 120   # run setting: daily looks need no finer release check
            self.managers[site] = mgr
        self.gpus_start = {site: m.gpus_in_force(0.0) for site, m in self.managers.items()}

    # ------------------------------------------------------------------ the fleet of a month
    def replicas_at(self, t: float) -> dict[int, int]:
        sc = self.scenario
        out = {di: dep.replicas for di, dep in enumerate(sc.deployments)}
        for site, mgr in self.managers.items():
            g = mgr.gpus_in_force(t)
            di = self.growing[site]
            others = sum(sc.deployments[j].gpus for j in self.site_deps[site] if j != di)
            out[di] = max(0, (g - others) // sc.deployments[di].tp)
        return out

    def base_for(self, t: float) -> Scenario:
        reps = self.replicas_at(t)
        return with_overrides(self.scenario, {f"deployments.{di}.replicas": n for di, n in reps.items()})

    def gpus_at(self, t: float) -> int:
        return sum(m.gpus_in_force(t) for m in self.managers.values())

    # ------------------------------------------------------------------ signals
    def _load(self, site: str) -> tuple[float, float] | None:
        if site not in self.measured:
            return None       # the first month is not measured yet
        u, g_meas = self.measured[site]
        g_now = self.managers[site].gpus_in_force()
        u_now = u * g_meas / g_now if g_now > 0 else (1.0 if u > 0 else 0.0)
        q = 0.0
        if site in self.attainment_short:
            self.attainment_short.discard(site)   # one order per short month
            if u_now >= self.managers[site].p.low_utilisation:
                q = math.inf
        return u_now, q

    def _vertical(self, contract, di: int) -> tuple[float, float, set[str]]:
        """(profile peak multiplier, GPUs of deployment ``di`` per request/s at full batch,
        sites its residency allows) of a tenant of ``contract``'s vertical."""
        key = (contract.vertical, di)
        if key not in self._tenant_cache:
            w = WorkloadSpec.model_validate(_tenant(contract, self.spec))
            proc = w.arrivals.build()
            peak = float(np.max(proc.multipliers())) if hasattr(proc, "multipliers") else 1.0
            dep = self.scenario.deployments[di]
            cap = replica_request_capacity_per_s(probe_replica(self.env, dep), w.prompt_tokens.build().mean,
                                                 w.output_tokens.build().mean)
            ok = serving_sites(self.scenario, w.model, w.residency)
            self._tenant_cache[key] = (peak, dep.tp / cap if cap > 0 else 0.0, ok)
        return self._tenant_cache[key]

    def _forecast_gpus(self, site: str, t: float) -> float:
        di = self.growing[site]
        gpus = 0.0
        for c in self.market.sovereign_contracts(t):
            peak, gpus_per_rps, ok = self._vertical(c, di)
            if site in ok:
                gpus += c.rate_per_s * peak / len(ok) * gpus_per_rps
        return gpus

    # ------------------------------------------------------------------ after a month
    def record(self, m: int, per: dict, targets: list[float]):
        """Feed the month's measurements to the policies and bill the month."""
        t_mid = (m + 0.5) * MONTH_S
        for site, mgr in self.managers.items():
            st = per["sites"].get(site)
            g = mgr.gpus_in_force(t_mid)
            if st is not None and st["capacity_requests"] > 0:
                self.measured[site] = (st["completed"] / st["capacity_requests"], g)
            elif g > 0:
                self.measured[site] = (0.0, g)   # no traffic reached the site this month
            u_busy = 0.0
            if st is not None:
                gpu_s_site = g * per["window_s"] * per["windows"]
                u_busy = min(1.0, st["busy_gpu_s"] / gpu_s_site) if gpu_s_site > 0 else 0.0
            self.busy_cum[site] = self.busy_cum.get(site, 0.0) + u_busy * g * MONTH_S
        att = per["sla_attainment"]
        if att is not None and targets and att < min(targets):
            self.attainment_short = set(self.managers)
        self.ledger.advance((m + 1) * MONTH_S)

    def _views(self):
        return [BusyView(i + 1, site, 1, self.busy_cum.get(site, 0.0)) for i, site in enumerate(sorted(self.managers))]

    def month_costs(self, months: int) -> dict[int, dict[str, float]]:
        self.ledger.close(months * MONTH_S)
        rep = self.ledger.report()["by_month"]
        out = {}
        for m in range(months):
            r = rep.get(str(m))
            if r is None:
                out[m] = {"fixed_eur": 0.0, "power_eur": 0.0}
                continue
            fixed = sum(r[f"{ln}_cents"] for ln in ("rental", "partner", "depreciation", "colocation")) / 100
            out[m] = {"fixed_eur": fixed, "power_eur": r["power_cents"] / 100}
        return out

    def events_in(self, m: int, kind: str) -> int:
        lo, hi = m * MONTH_S, (m + 1) * MONTH_S
        return sum(g for mgr in self.managers.values() for t, k, g in mgr.events if k == kind and lo <= t < hi)

    def report(self) -> dict:
        end = self.env.now
        return {"policy": self.scenario.capacity_policy.kind, "sites": {
            site: {"gpus_start": self.gpus_start[site], "gpus_end": mgr.gpus_in_force(end - 1e-9),
                   "orders": mgr.orders, "releases": mgr.releases,
                   "events": [[t, k, g] for t, k, g in mgr.events]}
            for site, mgr in self.managers.items()}}


def run_forecast(scenario: Scenario, seed: int | None = None, out_dir: str | Path | None = None,
                 progress: bool = False, figures: bool = True, max_work: float | None = None) -> ForecastResult:
    """The monthly forecast of ``scenario`` (which needs ``[forecast]``; ``[market]`` is
    optional: without it the market's defaults apply)."""
    spec = scenario.forecast
    if spec is None:
        raise UserError("forecast: the scenario has no [forecast] block (months, window_s, ...)")
    check_work(scenario, max_work)   # refuse work beyond the limits before any (sim.scenario.estimate)
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
    fleet = PolicyFleet(scenario, env, market, spec) if scenario.capacity_policy.kind != "fixed" else None
    hours = MONTH_S / HOUR_S
    rows = []
    bar = progress_mod.start(progress, months, "month", "forecast")   # sim.core.progress
    for m in range(months):
        t0 = m * MONTH_S
        env.run(until=t0 + MONTH_S)
        u = float(rng_phase.random())
        # the tenants of the month: contracts in force at mid-month
        contracts = market.sovereign_contracts(t0 + 0.5 * MONTH_S)
        by_name = {f"c{c.id}": c for c in contracts}
        workloads = [_tenant(c, spec) for c in contracts]
        base = fleet.base_for(t0 + 0.5 * MONTH_S) if fleet is not None else scenario
        per = simulate_period(base, workloads, MONTH_S, spec.windows_per_month, spec.window_s,
                              spec.warmup_s, u, lambda k, m=m: _window_seed(streams, m, k),
                              continuous=spec.continuous, site_stats=fleet is not None)
        scale = per["scale"]
        revenue = 0.0
        prompt = output = 0
        for name, acc in per["workloads"].items():
            c = by_name[name]
            delivered.add(c.id, acc["measured"], acc["met"])
            revenue += (acc["prompt_tokens"] * c.price_eur_per_mtok_in +
                        acc["output_tokens"] * c.price_eur_per_mtok_out) / 1e6
            prompt += acc["prompt_tokens"]
            output += acc["output_tokens"]
        revenue *= scale
        util = per["gpu_utilisation"]
        if fleet is not None:
            fleet.record(m, per, [c.sla.attainment_target for c in contracts])
        cost = _month_cost_eur(base, util, hours)   # replaced by the ledger's when a policy runs
        cost_total = cost["fixed_eur"] + cost["power_eur"]
        log = market.monthly_log[m] if m < len(market.monthly_log) else {}
        tokens = (prompt + output) * scale
        arrivals = per["arrivals"]
        rows.append({
            "month": m,
            "contracts_active": len(contracts),
            "contracts_won": log.get("won", 0),
            "contracts_lost": log.get("lost", 0),
            "contracts_churned": log.get("churned", 0),
            "share": log.get("share"),
            "contracted_rate_per_s": sum(c.rate_per_s for c in contracts),
            "requests": arrivals * scale,
            "rejected_share": per["rejected"] / arrivals if arrivals else 0.0,
            "tokens": tokens,
            "gpus": sum(d.gpus for d in base.deployments),
            "gpus_in_force": fleet.gpus_at(t0 + 0.5 * MONTH_S) if fleet is not None else sum(d.gpus for d in scenario.deployments),
            "gpus_ordered": fleet.events_in(m, "order") if fleet is not None else 0,
            "gpus_released": fleet.events_in(m, "release") if fleet is not None else 0,
            "gpu_utilisation": util,
            "sla_attainment": per["sla_attainment"],
            "ttft_p99_s": float(np.max(per["ttft_p99"])) if per["ttft_p99"] else None,
            "revenue_eur": revenue,
            "capacity_cost_eur": cost["fixed_eur"],
            "power_cost_eur": cost["power_eur"],
            "cost_eur": cost_total,
            "gross_margin_eur": revenue - cost_total,
            "gross_margin_share": (revenue - cost_total) / revenue if revenue > 0 else None,
            "cost_eur_per_mtok": cost_total / (tokens / 1e6) if tokens > 0 else None,
            "residency_violations": per["residency_violations"],
            "simulated_requests": arrivals,
        })
        bar.update(1, requests=arrivals)
    bar.close()
    monthly = pd.DataFrame(rows)
    if fleet is not None:
        # every tranche billed from arrival to end by the ledger, power from the simulated busy share
        costs = fleet.month_costs(months)
        monthly["capacity_cost_eur"] = [costs[m]["fixed_eur"] for m in monthly["month"]]
        monthly["power_cost_eur"] = [costs[m]["power_eur"] for m in monthly["month"]]
        monthly["cost_eur"] = monthly["capacity_cost_eur"] + monthly["power_cost_eur"]
        monthly["gross_margin_eur"] = monthly["revenue_eur"] - monthly["cost_eur"]
        monthly["gross_margin_share"] = [g / r if r > 0 else None for g, r in zip(monthly["gross_margin_eur"], monthly["revenue_eur"])]
        monthly["cost_eur_per_mtok"] = [c / (t / 1e6) if t > 0 else None for c, t in zip(monthly["cost_eur"], monthly["tokens"])]
    summary = _summary(scenario, seed, monthly, market)
    if fleet is not None:
        summary["capacity"] = fleet.report()
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
        "final_share": float(monthly["share"].dropna().iloc[-1]) if monthly["share"].notna().any() else None,
        "residency_violations": int(monthly["residency_violations"].sum()),
        "simulated_requests": int(monthly["simulated_requests"].sum()),
    }


def format_forecast(result: ForecastResult) -> str:
    s = result.summary
    df = result.monthly
    lines = [f"scenario {s['scenario']}  seed {s['seed']}  {s['months']} months  "
             f"{int(df['gpus'].iloc[0])} GPUs  ({s['simulated_requests']:,} requests simulated in sampled windows)"]
    hdr = (f"{'month':>5} {'active':>6} {'won':>4} {'lost':>4} {'req/s':>7} {'GPU util':>8} {'SLA met':>8} "
           f"{'revenue EUR':>12} {'cost EUR':>10} {'margin EUR':>11}")
    lines.append(hdr)
    for _, r in df.iterrows():
        att = "-" if r["sla_attainment"] is None or r["sla_attainment"] != r["sla_attainment"] else f"{r['sla_attainment'] * 100:.1f}%"
        lines.append(f"{int(r['month']):>5} {int(r['contracts_active']):>6} {int(r['contracts_won']):>4} "
                     f"{int(r['contracts_lost']):>4} {r['requests'] / MONTH_S:>7.1f} {r['gpu_utilisation'] * 100:>7.1f}% "
                     f"{att:>8} {r['revenue_eur']:>12,.0f} {r['cost_eur']:>10,.0f} {r['gross_margin_eur']:>11,.0f}")
    gm = s["gross_margin_share"]
    c = s["contracts"]
    lines.append("")
    lines.append(f"total: revenue {s['revenue_eur']:,.0f} EUR, costs {s['cost_eur']:,.0f} EUR, gross margin "
                 f"{s['gross_margin_eur']:,.0f} EUR" + (f" ({gm * 100:.1f} %)" if gm is not None else "")
                 + (f", cost {s['cost_eur_per_mtok']:.3f} EUR per million tokens" if s["cost_eur_per_mtok"] else ""))
    lines.append(f"contracts: won {c['won']}, lost {c['lost']} RFPs, active {c['active']}, churned {c['churned']}, "
                 f"expired {c['expired']}, renewals {c['renewed']}; final sovereign share "
                 f"{(s['final_share'] or 0) * 100:.1f} %; mean GPU utilisation {s['gpu_utilisation_mean'] * 100:.1f} %, "
                 f"mean SLA attainment {(s['sla_attainment_mean'] or 0) * 100:.1f} %; residency violations {s['residency_violations']}")
    return "\n".join(lines)


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
