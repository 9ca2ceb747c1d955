"""Warnings a person must see before trusting a headline: pure functions of a scenario, a
run's summary (and time series) or a forecast's monthly table, each returning one line per
problem (the CLI prints them, ``summary.json`` carries them under ``warnings``, the report
shows them at the top).

What is flagged (thresholds are assumptions, named below):

* a deployment no tenant can use (no workload asks for its model, or no tenant's residency
  rule allows its site), and a site whose every deployment is such: GPUs paid for nothing;
* a deployment that served almost nothing (request utilisation under ``IDLE_SHARE``), and a
  fleet running under ``LOW_LOAD`` of its request capacity or above ``HIGH_LOAD`` of it;
* a workload, or a forecast month, below its SLA attainment target;
* a queue that grows through a run (arrivals outpace completions) or, in a forecast, months
  whose worst window has a p99 TTFT far above the target (queues building inside windows);
* a stream, or a month, with most requests rejected.
"""
from __future__ import annotations

import math
import statistics
from typing import Any, Iterable

from sim.demand.verticals import VERTICALS, vertical_workload
from sim.forecast.sites import column_site
from sim.scenario import ResidencySpec, Scenario
from sim.scenario.market import default_market_spec
from sim.serving.residency import site_allows

IDLE_SHARE = 0.01        # assumption: a deployment under 1 % of its request capacity served ~nothing
LOW_LOAD = 0.10          # assumption: a fleet under 10 % of its request capacity is mostly paid-for idle
HIGH_LOAD = 0.90         # assumption: above 90 % of request capacity queues build (docs/metrics.md)
MOSTLY_REJECTED = 0.5    # more than half of a stream's requests rejected
QUEUE_GROWTH_MIN = 20    # requests: a backlog growth smaller than this is noise (assumption)
IDLE_SITE_MONTHS = 3     # assumption: a site idle (under LOW_LOAD) this many months is worth a line
TTFT_BLOWUP = 5.0        # a p99 TTFT above 5x the TTFT target means queues, not prefill (assumption)


def _pct(v: float) -> str:
    return f"{v * 100:.1f} %"


def _months(ms: Iterable[int]) -> str:
    """Month numbers as ranges: 3, 5-8."""
    ms = sorted(int(m) for m in ms)
    out, start, prev = [], None, None
    for m in ms:
        if start is None:
            start = prev = m
        elif m == prev + 1:
            prev = m
        else:
            out.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = prev = m
    if start is not None:
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
    return ", ".join(out)


# ------------------------------------------------------------------ the scenario alone
def tenants(scenario: Scenario) -> list[tuple[str, str, ResidencySpec]]:
    """(name, model, residency rule) of every tenant the scenario can have: its workloads,
    or, for a forecast, one per market vertical with the vertical's default demand."""
    out = [(w.name, w.model, w.residency) for w in scenario.workloads]
    if scenario.forecast is not None:
        market = scenario.market or default_market_spec()
        portfolio = {d.model for d in scenario.deployments if d.replicas > 0}
        for v in market.verticals:
            if v.name not in VERTICALS:
                continue
            w = vertical_workload(v.name, v.name, 1.0)
            rule = ResidencySpec(**w["residency"])
            if scenario.forecast.model is None and len(portfolio) > 1:
                # a portfolio forecast spreads each tenant over the models its residency reaches
                # (sim.forecast.windows.portfolio_workloads)
                out.extend((f"{v.name} tenants", m, rule) for m in sorted(portfolio))
            else:
                out.append((f"{v.name} tenants", scenario.forecast.model or w["model"], rule))
    return out


def _site_text(site) -> str:
    if site is None:
        return "an unsited deployment (no jurisdiction)"
    certs = ", ".join(site.certifications) or "no certifications"
    return f"site {site.name} ({site.jurisdiction}; {certs})"


def unusable_deployments(scenario: Scenario) -> dict[str, str]:
    """Deployment name -> why no tenant can use it (empty when every deployment serves one)."""
    sites = {s.name: s for s in scenario.sites}
    ts = tenants(scenario)
    out = {}
    for d in scenario.deployments:
        if d.replicas == 0:
            continue
        site = sites.get(d.site) if d.site else None
        same_model = [t for t in ts if t[1] == d.model]
        if not same_model:
            out[d.name] = f"no tenant asks for its model {d.model}"
        elif not any(site_allows(site, rule) for _, _, rule in same_model):
            names = ", ".join(t[0] for t in same_model)
            out[d.name] = f"no tenant's residency rule ({names}) allows {_site_text(site)}"
    return out


def scenario_warnings(scenario: Scenario) -> list[str]:
    """Deployments and sites no tenant can use, from the scenario alone (before any run)."""
    sites = {s.name: s for s in scenario.sites}
    bad = unusable_deployments(scenario)
    out = []
    by_site: dict[str, list] = {}
    for d in scenario.deployments:
        by_site.setdefault(d.site or "-", []).append(d)
    for site_name, deps in by_site.items():
        live = [d for d in deps if d.replicas > 0]
        if len(live) > 1 and all(d.name in bad for d in live) and site_name != "-":
            gpus = sum(d.gpus for d in live)
            why = {bad[d.name] for d in live}
            out.append(f"site {site_name}: its {gpus} GPUs can serve no tenant ({'; '.join(sorted(why))}); "
                       f"they are paid for and idle")
            continue
        for d in live:
            if d.name in bad:
                where = f" at {d.site}" if d.site else ""
                out.append(f"deployment {d.name} ({d.gpus} GPUs{where}) can serve no tenant: {bad[d.name]}; "
                           f"its GPUs are paid for and idle")
    del sites
    return out


# ------------------------------------------------------------------ one traffic run
def queue_growth(timeseries) -> float | None:
    """Requests more in the system at the end of the run than at its middle, from the fleet
    rows of the time series (arrivals - completions - rejections per bin); None if too few bins."""
    if timeseries is None or not len(timeseries):
        return None
    fleet = timeseries[timeseries["replica"] == "__fleet__"]
    if len(fleet) < 4 or not {"arrivals", "completions", "rejections"} <= set(fleet.columns):
        return None
    fleet = fleet.sort_values("bin_start_s")
    net = (fleet["arrivals"] - fleet["completions"] - fleet["rejections"]).to_numpy(dtype=float)
    backlog = net.cumsum()
    half = len(backlog) // 2
    return float(backlog[-1] - backlog[half - 1])


def run_warnings(summary: dict, scenario: Scenario | None = None, timeseries=None) -> list[str]:
    """The warnings of one traffic run (``sim.study.run.run``'s summary; the scenario adds the
    residency checks, the time series the queue-growth check)."""
    out = scenario_warnings(scenario) if scenario is not None else []
    unusable = unusable_deployments(scenario) if scenario is not None else {}
    for name, d in (summary.get("deployments") or {}).items():
        if name in unusable or not d.get("replicas"):
            continue
        ru = d.get("request_utilisation")
        if d.get("output_tokens", 1) == 0 or (ru is not None and ru < IDLE_SHARE):
            where = f" at {d['site']}" if d.get("site") else ""
            out.append(f"deployment {name} ({d.get('gpus', 0)} GPUs{where}) served almost nothing: "
                       f"{_pct(ru or 0.0)} of its request capacity")
    ru = summary.get("request_utilisation")
    if ru is not None and summary.get("completed", 0) > 0:
        busy = summary.get("busy_share", summary.get("gpu_utilisation"))
        busy_txt = f" (busy share {_pct(busy)}: a replica with any request in flight counts as busy)" if busy is not None else ""
        if ru < LOW_LOAD:
            out.append(f"the fleet ran at {_pct(ru)} of its request capacity{busy_txt}: most of its "
                       f"GPU-hours are paid for idle")
        elif ru > HIGH_LOAD:
            out.append(f"the fleet ran at {_pct(ru)} of its request capacity: near saturation, queues build")
    for name, w in (summary.get("workloads") or {}).items():
        att, target = w.get("sla_attainment"), w.get("sla_target")
        if att is not None and target is not None and att < target:
            out.append(f"workload {name}: SLA attainment {_pct(att)}, below its {_pct(target)} target")
        arr = w.get("arrivals") or 0
        rej = w.get("rejected") or 0
        if arr and rej / arr > MOSTLY_REJECTED:
            reasons = ", ".join(f"{k} {v}" for k, v in (w.get("rejected_by_reason") or {}).items() if v)
            out.append(f"workload {name}: {_pct(rej / arr)} of its {arr:,} requests rejected ({reasons})")
    growth = queue_growth(timeseries)
    if growth is not None:
        if growth > max(QUEUE_GROWTH_MIN, 0.05 * (summary.get("arrivals") or 0) / 2):
            out.append(f"the queue grows through the run: {growth:,.0f} more requests in the system at the "
                       f"end than at mid-run (arrivals outpace completions; the horizon's numbers are not a steady state)")
    else:
        # no time series: what is still in the system at the horizon, against the arrivals and
        # against Little's law (completion rate x mean latency)
        rate = summary.get("throughput_requests_per_s") or 0.0
        e2e = (summary.get("e2e_s") or {}).get("mean") or 0.0
        inflight = summary.get("in_flight") or 0
        arrivals = summary.get("arrivals") or 0
        if inflight > max(QUEUE_GROWTH_MIN, 0.05 * arrivals, 2 * rate * e2e):
            out.append(f"the queue grows through the run: {inflight:,} requests in flight at the horizon "
                       f"({_pct(inflight / arrivals)} of the arrivals; arrivals outpace completions)")
    return out


# ------------------------------------------------------------------ a forecast
def sla_targets(scenario: Scenario | None) -> tuple[float, float]:
    """(attainment target, TTFT reference) the fleet-wide monthly numbers are compared with.

    Verticals carry their own SLA class (finance interactive, public sector relaxed), while the
    monthly table aggregates every tenant. The attainment warning uses the strictest target (a
    month below it fails at least the strictest class's promise); the queue warning uses the
    median vertical's TTFT target, so a relaxed class's long prefill is not read as a queue and an
    interactive class's short target does not flag ordinary prefill."""
    market = (scenario.market if scenario is not None else None) or default_market_spec()
    vs = list(market.verticals)
    if not vs:
        return 0.99, 2.0
    ttfts = sorted(v.sla.ttft_s for v in vs)
    return max(v.sla.attainment_target for v in vs), float(statistics.median(ttfts))


def forecast_warnings(monthly, scenario: Scenario | None = None) -> list[str]:
    """The warnings of a forecast's monthly table (``ForecastResult.monthly``): months below
    the SLA target, saturated or idle months (when the table has ``request_utilisation``),
    months with p99 TTFT far above the target, months with most requests rejected; plus the
    scenario's unusable deployments and sites."""
    out = scenario_warnings(scenario) if scenario is not None else []
    if monthly is None or not len(monthly):
        return out
    target, ttft = sla_targets(scenario)
    att = monthly["sla_attainment"].astype(float)
    below = monthly[att < target]
    if len(below):
        worst = below.loc[below["sla_attainment"].astype(float).idxmin()]
        extra = ""
        if "ttft_p99_s" in monthly.columns and worst.get("ttft_p99_s") is not None and not _nan(worst["ttft_p99_s"]):
            extra = f", p99 TTFT {worst['ttft_p99_s']:.1f} s"
        out.append(f"SLA attainment below the {_pct(target)} target in {len(below)} of {len(monthly)} months "
                   f"(months {_months(below['month'])}; lowest {_pct(float(worst['sla_attainment']))} in month "
                   f"{int(worst['month'])}{extra})")
    if "request_utilisation" in monthly.columns:
        ru = monthly["request_utilisation"].astype(float)
        hot = monthly[ru > HIGH_LOAD]
        if len(hot):
            out.append(f"the fleet is above {_pct(HIGH_LOAD)} of its request capacity in {len(hot)} months "
                       f"(months {_months(hot['month'])}; peak {_pct(float(ru.max()))}): near saturation")
        cold = monthly[(ru < LOW_LOAD) & (monthly["gpus"] > 0)]
        if len(cold):
            out.append(f"the fleet is under {_pct(LOW_LOAD)} of its request capacity in {len(cold)} months "
                       f"(months {_months(cold['month'])}; lowest {_pct(float(ru.min()))}): GPUs paid for idle")
    out += site_warnings(monthly, scenario)
    if "ttft_p99_s" in monthly.columns:
        p99 = monthly["ttft_p99_s"].astype(float)
        slow = monthly[p99 > TTFT_BLOWUP * ttft]
        if len(slow):
            out.append(f"queues build inside traffic windows in {len(slow)} months (months {_months(slow['month'])}): "
                       f"p99 TTFT up to {float(p99.max()):.1f} s against the verticals' median {ttft:g} s TTFT target")
    if "rejected_share" in monthly.columns:
        rej = monthly[monthly["rejected_share"].astype(float) > MOSTLY_REJECTED]
        if len(rej):
            out.append(f"most requests are rejected in {len(rej)} months (months {_months(rej['month'])})")
    return out


def site_warnings(monthly, scenario: Scenario | None = None) -> list[str]:
    """Sites of a forecast (its ``site_<site>_*`` columns, :mod:`sim.forecast.sites`) under
    ``LOW_LOAD`` of their request capacity, with GPUs in force, in ``IDLE_SITE_MONTHS`` months or
    more; says so when no tenant's residency rule allows any of the site's deployments."""
    out = []
    bad = unusable_deployments(scenario) if scenario is not None else {}
    deps: dict[str, list] = {}
    for d in (scenario.deployments if scenario is not None else []):
        if d.site:
            deps.setdefault(column_site(d.site), []).append(d)
    for col in monthly.columns:
        if not (col.startswith("site_") and col.endswith("_request_utilisation")):
            continue
        key = col[len("site_"):-len("_request_utilisation")]
        gcol = f"site_{key}_gpus"
        if gcol not in monthly.columns:
            continue
        ru = monthly[col].astype(float)
        idle = monthly[(ru < LOW_LOAD) & (monthly[gcol] > 0)]
        if len(idle) < IDLE_SITE_MONTHS:
            continue
        live = [d for d in deps.get(key, []) if d.replicas > 0]
        name = live[0].site if live else key
        why = ""
        if live and all(d.name in bad for d in live):
            why = f"; no tenant can use it ({'; '.join(sorted({bad[d.name] for d in live}))})"
        out.append(f"site {name} is under {_pct(LOW_LOAD)} of its request capacity in {len(idle)} of "
                   f"{len(monthly)} months (months {_months(idle['month'])}; mean {_pct(float(ru.mean()))}) "
                   f"with up to {int(monthly[gcol].max())} GPUs in force: paid for idle{why}")
    return out


def _nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)
