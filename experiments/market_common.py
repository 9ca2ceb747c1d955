"""Shared plumbing of the market experiments (sovereignty_gap.py, sensitivity.py).

Two ways to get a monthly forecast for a scenario and a seed:

* the full forecast, ``sim.forecast.forecast.run_forecast(scenario, seed) -> ForecastResult``
  whose ``monthly`` DataFrame has at least month, contracts_active, contracts_won,
  contracts_lost, share, revenue_eur, cost_eur, gross_margin_eur, gpu_utilisation,
  sla_attainment (market + capacity + windowed serving);
* ``--market-only``: ``sim.market.market.market_only_forecast`` — the market layer alone with
  a constant assumed delivered SLA, revenue from contracted demand and a fluid leased-GPU
  fleet (parameters: block 'fallback' of models/market/parameters.csv).  It is the fast
  path for wide sensitivity sweeps; its utilisation and cost are a sketch, not the serving
  simulation.
"""
from __future__ import annotations

import os
import sys
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sim.core.errors import UserError  # noqa: E402
from sim.core.stats import mean_ci as stats_mean_ci  # noqa: E402
from sim.forecast.forecast import run_forecast  # noqa: E402
from sim.market.market import market_only_forecast  # noqa: E402
from sim.scenario.market import MarketSpec, default_market_spec  # noqa: E402
from sim.scenario import Scenario, load_scenario, scenario_from_dict, with_overrides  # noqa: E402

RESULTS = ROOT / "results" / "market"


def base_scenario(path: str | None) -> Scenario:
    """The scenario to start from; a scenario without a [market] block gets the default one."""
    sc = load_scenario(path)
    if sc.market is None:
        sc = with_market(sc, default_market_spec())
    return sc


def with_market(sc: Scenario, spec: MarketSpec) -> Scenario:
    data = sc.model_dump(mode="python")
    data["market"] = spec.model_dump(mode="python")
    return scenario_from_dict(data, "experiment")


def forecast(task: tuple) -> "object":
    """One (scenario, seed, market_only, months, sla, fallback) point -> monthly DataFrame."""
    scenario, seed, market_only, months, sla, fallback = task
    if market_only:
        df, _ = market_only_forecast(scenario.market, seed, months, sla_attainment=sla, fallback=fallback)
        return df
    # the full forecast: months from --months; traffic sampled more coarsely than the default
    # run (FORECAST_WINDOWS x FORECAST_WINDOW_S per month) so replications x scenarios stay
    # affordable; the monthly noise this adds averages out over replications
    scenario = with_overrides(scenario, {"forecast.months": months,
                                         "forecast.windows_per_month": FORECAST_WINDOWS,
                                         "forecast.window_s": FORECAST_WINDOW_S,
                                         "forecast.warmup_s": FORECAST_WARMUP_S})
    return run_forecast(scenario, seed, figures=False).monthly


FORECAST_WINDOWS = 12   # run setting: traffic windows per month in experiment forecasts
FORECAST_WINDOW_S = 20.0
FORECAST_WARMUP_S = 15.0


def run_all(tasks: list[tuple], workers: int) -> list:
    if workers <= 1:
        return [forecast(t) for t in tasks]
    with ProcessPoolExecutor(max_workers=workers) as ex:   # any concurrent.futures.Executor works
        return list(ex.map(forecast, tasks, chunksize=max(1, len(tasks) // (4 * workers))))


def mean_ci(samples: np.ndarray, axis: int = 0, level: float = 0.95):
    """Mean and half-width of the Student-t ``level`` interval along ``axis`` (replications),
    one :func:`sim.core.stats.mean_ci` per slice: non-finite values dropped, NaN half-width
    under two values.  Arrays of the other axes' shape (scalars for a 1-D input)."""
    x = np.moveaxis(np.asarray(samples, dtype=float), axis, -1)
    flat = x.reshape(-1, x.shape[-1])
    res = [stats_mean_ci(row, level) for row in flat]
    m = np.array([r.mean for r in res]).reshape(x.shape[:-1])
    h = np.array([r.half_width for r in res]).reshape(x.shape[:-1])
    return m[()], h[()]


def add_common_args(p):
    p.add_argument("--scenario", help="scenario TOML to start from (default: the shipped default; "
                                      "a missing [market] block gets the table defaults)")
    p.add_argument("--market-only", action="store_true",
                   help="run only the market layer with a constant assumed delivered SLA and a fluid "
                        "GPU fleet (fast; the default is the full forecast with simulated traffic)")
    p.add_argument("--months", type=int, default=36, help="horizon, months (default 36)")
    p.add_argument("--sla", type=float, default=0.99,
                   help="--market-only: assumed delivered SLA attainment (default 0.99)")
    p.add_argument("--reps", type=int, default=10, help="replications (seeds 1..reps) per point (default 10)")
    p.add_argument("--workers", type=int, default=1, help="processes (default 1; the machine is shared)")
    p.add_argument("--out", default=str(RESULTS), help=f"output folder (default {RESULTS.relative_to(ROOT)})")


def check_args(args):
    if args.reps < 1:
        raise UserError(f"--reps {args.reps}: must be >= 1")
    if args.months < 1:
        raise UserError(f"--months {args.months}: must be >= 1")
    if not 0.0 <= args.sla <= 1.0:
        raise UserError(f"--sla {args.sla}: must be in [0, 1]")
    if args.workers < 1:
        raise UserError(f"--workers {args.workers}: must be >= 1")


def main_guard(fn):
    """Run ``fn()``; a UserError prints one line and exits 2 (as the CLI does)."""
    try:
        sys.exit(fn())
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
