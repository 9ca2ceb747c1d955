"""Work estimate of a scenario, checked before a run or forecast starts.

A scenario can be valid field by field and still ask for more work than any machine does
(``horizon_s = 1e12``, ``timeseries_interval_s = 1e-6``, 100,000 replicas, bursts of 1e-9 s).
:func:`estimate` computes, from the scenario alone and without simulating, the expected

* ``requests``: simulated requests (rate x horizon for Poisson; users x horizon / (think
  time + 0.1 s) for a closed loop; the integral of the
  hour-of-week profile for NHPP; the offline count; the trace rows replayed before the
  horizon, looped when ``repeat``); for a forecast, over the sampled windows, with the
  market's contracts in force shared equally among the providers;
* ``timeseries_bins``: time-series bins kept (one row per replica and per fleet bin);
* ``replicas``: replicas built at the start;
* ``policy_checks``: looks of the capacity policy;
* ``fault_events``: GPU, node and site failures (with faults enabled);
* ``burst_switches``: state changes of the burst (MMPP) modulation.

:func:`check_work` refuses, in one line, an estimate above its limit in :data:`LIMITS`
times ``max_work`` (``sovsim run/sweep/capacity --max-work X``; the keyword ``max_work`` of
:func:`sim.study.run.run` and :func:`sim.forecast.forecast.run_forecast`; the environment
variable ``SOVSIM_MAX_WORK``, which the CLI sets so that sweep workers inherit it).
``max_work = inf`` turns the check off.
"""
from __future__ import annotations

import math
import os
import warnings

from sim.core.errors import UserError
from sim.demand import verticals as demand
from sim.demand.arrivals import NHPPProcess, WEEK_S
from sim.scenario.market import default_market_spec

#: Default limits. assumption: about an hour of wall time on one core at the engine's
#: measured speed (benchmarks/engine.py: ~10^4-10^5 requests per second), with every real
#: scenario of the project far below (shipped day scenario: 5.2e5 requests, 7,200 bins; the
#: default forecast: 7.3e6 requests).
LIMITS = {
    "requests": 50_000_000,
    "timeseries_bins": 1_000_000,
    "replicas": 10_000,
    "policy_checks": 1_000_000,
    "fault_events": 1_000_000,
    "burst_switches": 10_000_000,
}

#: What to change to lower each estimate (named in the refusal).
LEVERS = {
    "requests": "a shorter simulation.horizon_s or lower workload rates",
    "timeseries_bins": "a larger simulation.timeseries_interval_s or a shorter horizon",
    "replicas": "fewer deployments[].replicas",
    "policy_checks": "a larger capacity_policy.check_interval_s",
    "fault_events": "lower [faults] rates",
    "burst_switches": "longer bursts and gaps (mean_burst_s, mean_gap_s)",
}

ENV = "SOVSIM_MAX_WORK"
DAY_S = 86400.0
YEAR_S = 8760.0 * 3600.0
MONTH_S = 30.4375 * DAY_S
#: stand-in for an unset [faults] rate (the Llama 3 table's rates, 3.0e-4 and 8.0e-4 per day,
#: are below it): an upper bound is enough for an estimate
DEFAULT_FAILURES_PER_DAY_BOUND = 1e-3
#: shortest request cycle of a closed-loop user without think time, seconds (assumption: an
#: LLM request takes at least this end to end; an estimate, not a bound)
MIN_CYCLE_S = 0.1
#: bins are kept over at most this much simulated time (sim.serving.metrics)
BINS_HORIZON_CAP_S = 1e7


class WorkLimitError(UserError):
    """The estimated work of a run is above its limit."""


def max_work_from_env() -> float:
    raw = os.environ.get(ENV, "")
    if not raw:
        return 1.0
    try:
        v = float(raw)
    except ValueError:
        raise UserError(f"{ENV}={raw!r}: not a number; allowed: a factor > 0 on the work limits, or inf") from None
    if not v > 0:
        raise UserError(f"{ENV}={raw!r}: must be > 0; allowed: a factor > 0 on the work limits, or inf")
    return v


def _arrival_count(arr, horizon_s: float) -> float:
    kind = arr.kind
    if kind == "poisson":
        return arr.rate_per_s * horizon_s
    if kind == "offline":
        return float(arr.count)
    if kind == "closed_loop":   # each user's cycle: think time + at least MIN_CYCLE_S of service
        return arr.users * horizon_s / (arr.think_time_s + MIN_CYCLE_S)
    if kind == "nhpp":
        if horizon_s > 10 * WEEK_S:   # the profile has mean 1: whole weeks dominate
            return arr.rate_per_s * horizon_s
        prof = demand.profile(arr.profile) if isinstance(arr.profile, str) else arr.profile
        return NHPPProcess(arr.rate_per_s, tuple(float(v) for v in prof), arr.start_hour_of_week).expected_count(0.0, horizon_s)
    if kind == "trace":
        with warnings.catch_warnings():   # skipped rows are reported when the run builds the process
            warnings.simplefilter("ignore")
            proc = arr.build()
        times = proc.trace.times_s * proc.time_scale
        n = len(times)
        if proc.repeat:
            return proc.rate_scale * n * horizon_s / proc.period_s
        return proc.rate_scale * float((times < horizon_s).sum())
    return 0.0


def _burst_switches(arr, horizon_s: float) -> float:
    if getattr(arr, "kind", None) != "nhpp" or arr.burst is None:
        return 0.0
    b = demand.burst(arr.burst) if isinstance(arr.burst, str) else arr.burst
    return horizon_s * (1.0 / b.mean_burst_s + 1.0 / b.mean_gap_s)


def _fault_events(scenario, horizon_s: float) -> float:
    f = scenario.faults
    if not f.enabled:
        return 0.0
    gpus = sum(d.gpus for d in scenario.deployments)
    nodes = sum(math.ceil(d.gpus / f.gpus_per_node) for d in scenario.deployments)
    g = DEFAULT_FAILURES_PER_DAY_BOUND if f.gpu_failures_per_gpu_day is None else f.gpu_failures_per_gpu_day
    n = DEFAULT_FAILURES_PER_DAY_BOUND if f.node_failures_per_node_day is None else f.node_failures_per_node_day
    sites = max(1, len(scenario.sites))
    # each failure is followed by its repair: two events
    return 2.0 * horizon_s * (gpus * g / DAY_S + nodes * n / DAY_S + sites * f.site_outages_per_year / YEAR_S)


def _serving_estimate(scenario, horizon_s: float, workloads) -> dict[str, float]:
    sim = scenario.simulation
    replicas = sum(d.replicas for d in scenario.deployments)
    bins = math.ceil(min(horizon_s, BINS_HORIZON_CAP_S) / sim.timeseries_interval_s)
    cp = scenario.capacity_policy
    return {
        "requests": sum(_arrival_count(w.arrivals, horizon_s) for w in workloads),
        "timeseries_bins": float(bins) * (replicas + 1),
        "replicas": float(replicas),
        "policy_checks": 0.0 if cp.kind == "fixed" else horizon_s / cp.check_interval_s,
        "fault_events": _fault_events(scenario, horizon_s),
        "burst_switches": sum(_burst_switches(w.arrivals, horizon_s) for w in workloads),
    }


def _market_rate_per_s(scenario, months: int) -> float:
    """Mean requests/s of the sovereign's tenants at an equal share of the market: contracts
    in force at most initial + RFP rate x term (grown to the last month), times the mean
    size, over the number of providers."""
    market = scenario.market if scenario.market is not None else default_market_spec()
    rate = 0.0
    for v in market.verticals:
        growth = v.rfp_growth_per_year ** (months / 12.0)
        contracts = v.initial_contracts + v.rfp_rate_per_month * growth * v.term_months
        rate += contracts * v.rate_per_s_median * math.exp(min(v.rate_per_s_sigma, 10.0) ** 2 / 2.0)
    return rate / (1 + len(market.competitors))


def estimate(scenario) -> dict[str, float]:
    """The expected work of running ``scenario`` (see the module docstring)."""
    fc = scenario.forecast
    if fc is None:
        return _serving_estimate(scenario, scenario.simulation.horizon_s, scenario.workloads)
    # a forecast: windows of (warm-up + window) per month, or every second when continuous
    per_window_s = MONTH_S if fc.continuous else fc.warmup_s + fc.window_s
    windows = fc.months * (1 if fc.continuous else fc.windows_per_month)
    simulated_s = windows * per_window_s
    replicas = sum(d.replicas for d in scenario.deployments)
    bin_s = per_window_s if fc.continuous else (fc.warmup_s if fc.warmup_s > 0 else fc.window_s)
    out = {
        "requests": _market_rate_per_s(scenario, fc.months) * simulated_s,
        "timeseries_bins": windows * math.ceil(min(per_window_s, BINS_HORIZON_CAP_S) / min(bin_s, per_window_s)) * (replicas + 1.0),
        "replicas": float(replicas),
        "policy_checks": 0.0,
        "fault_events": _fault_events(scenario, simulated_s),
        "burst_switches": 0.0,
    }
    return out


def check_work(scenario, max_work: float | None = None) -> dict[str, float]:
    """Refuse ``scenario`` in one line if an estimate is above ``LIMITS x max_work``
    (``None``: the factor from ``SOVSIM_MAX_WORK``, default 1). Returns the estimate."""
    factor = max_work_from_env() if max_work is None else float(max_work)
    if not factor > 0:
        raise UserError(f"max_work: {max_work!r} must be > 0; allowed: a factor on the work limits, or inf")
    if math.isinf(factor):
        return {}
    est = estimate(scenario)
    for key, value in est.items():
        limit = LIMITS[key] * factor
        if not value <= limit:   # also catches NaN
            need = value / LIMITS[key]
            raise WorkLimitError(
                f"work estimate: {value:.3g} {key.replace('_', ' ')} is above the limit of {limit:.3g}; "
                f"allowed: {LEVERS[key]}, or allow it with --max-work {_ceil_sig(need)} "
                f"(sovsim run/sweep/capacity) or max_work={_ceil_sig(need)} (Python)")
    return est


def _ceil_sig(x: float) -> str:
    """A round factor at least ``x`` (2 significant digits), e.g. 3.6e+03."""
    if not math.isfinite(x):
        return "inf"
    e = math.floor(math.log10(x)) - 1 if x > 0 else 0
    v = math.ceil(x / 10 ** e) * 10 ** e
    return f"{v:g}"
