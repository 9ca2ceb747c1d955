"""sovsim as a Python library: load a scenario, override fields, run it, forecast, sweep and
search capacity, each answer as pandas DataFrames (docs/api.md).

Importable from the top-level package, loaded on first use (``import sim`` stays cheap):
``sim.load_scenario``, ``sim.run``, ``sim.forecast``, ``sim.sweep``, ``sim.capacity``.

>>> import sim
>>> sc = sim.load_scenario("day", {"simulation.horizon_s": 60})
>>> r = sim.run(sc)
>>> r.summary.loc[0, "scenario"], int(r.summary.loc[0, "gpus"])
('day', 8)
>>> bool(0 < r.summary.loc[0, "request_utilisation"] < 1)
True
>>> {"arrival_s", "ttft_s", "outcome"} <= set(r.requests.columns)
True
>>> r.warnings      # doctest: +ELLIPSIS
['the fleet ran at ... of its request capacity ...']

Every function takes a scenario as a :class:`sim.scenario.Scenario`, a packaged name
(``"day"``, ``"default"``, ``"provider-day"``) or a TOML path, plus ``overrides``: dotted
field paths and values, as ``--set`` on the command line.  Without ``out`` nothing is written
(sweeps and capacity searches work in a temporary folder); with it, the same folder the CLI
writes.  Bad input raises :class:`sim.core.errors.UserError` with the one-line message the
CLI prints.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from sim.core.errors import UserError
from sim.forecast.forecast import ForecastResult, run_forecast
from sim.scenario import Scenario, scenario_from_dict, with_overrides
from sim.scenario import load_scenario as _load
from sim.study.capacity_search import CapacityResult, capacity_search, evaluation_rows, parse_targets
from sim.study.report import finish_forecast, write_run_report
from sim.study.run import RunResult
from sim.study.run import run as _run
from sim.study.sweep import make_executor, run_sweep

__all__ = ["load_scenario", "run", "forecast", "sweep", "capacity", "summary_row",
           "Run", "Forecast", "Sweep", "Capacity"]


def summary_row(summary: Mapping[str, Any]) -> pd.DataFrame:
    """A nested summary dict as a one-row DataFrame with dotted column names
    (``ttft_s.p99``, ``workloads.chat.sla_attainment``); lists (``warnings``) are left out.

    >>> summary_row({"a": 1, "b": {"c": 0.5, "d": None}, "warnings": ["x"]})
         a  b.c   b.d
    0    1  0.5  None
    """
    flat: dict[str, Any] = {}

    def walk(d: Mapping, prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, Mapping):
                walk(v, f"{prefix}{k}.")
            elif not isinstance(v, (list, tuple)):
                flat[f"{prefix}{k}"] = v

    walk(summary, "")
    return pd.DataFrame([flat])


def load_scenario(source: str | Path | Scenario | Mapping | None = None,
                  overrides: Mapping[str, Any] | None = None) -> Scenario:
    """A validated scenario: a packaged name, a TOML path, a dict of the TOML's tables, or a
    Scenario; ``overrides`` replaces dotted fields and re-validates (``None``: ``default``).

    >>> sc = load_scenario("day", {"deployments.0.replicas": 2})
    >>> sc.name, sc.deployments[0].replicas, sc.deployments[0].gpus
    ('day', 2, 4)
    >>> load_scenario("day", {"deployments.0.tp": 3})
    Traceback (most recent call last):
    ...
    sim.scenario.schema.ScenarioError: override: deployments[0].tp: 3 does not divide the 32 attention heads of mixtral-8x7b; allowed: 1, 2, 4, 8, 16, 32
    """
    if isinstance(source, Scenario):
        sc = source
    elif isinstance(source, Mapping):
        sc = scenario_from_dict(dict(source), "scenario dict")
    else:
        sc = _load(source)
    return with_overrides(sc, dict(overrides)) if overrides else sc


def _scenario(scenario, overrides) -> Scenario:
    return load_scenario(scenario, overrides)


# ------------------------------------------------------------------ one run
@dataclass
class Run:
    """One traffic run: ``summary`` (one row, dotted columns), ``timeseries`` (per replica and
    fleet time bins), ``requests`` (the per-request sample), ``warnings`` (lines), ``raw``
    (the nested summary, as summary.json) and ``result`` (the :class:`sim.study.run.RunResult`)."""
    summary: pd.DataFrame
    timeseries: pd.DataFrame
    requests: pd.DataFrame
    warnings: list[str]
    raw: dict
    result: RunResult


def run(scenario: str | Path | Scenario | Mapping = "day", overrides: Mapping[str, Any] | None = None, *,
        seed: int | None = None, out: str | Path | None = None, max_work: float | None = None) -> Run:
    """Simulate a traffic scenario once (``sovsim run``); with ``out`` write its folder and
    ``report.html`` too.  A scenario with ``[forecast]`` is refused here: use :func:`forecast`.

    >>> r = run("day", {"simulation.horizon_s": 60, "workloads.0.arrivals.rate_per_s": 20.0}, seed=3)
    >>> int(r.summary.loc[0, "seed"]), bool(r.summary.loc[0, "arrivals"] > 1000)
    (3, True)
    >>> sorted(set(r.timeseries["replica"]))[:2]
    ['__fleet__', 'mixtral-h100/0']
    """
    sc = _scenario(scenario, overrides)
    if sc.forecast is not None:
        raise UserError(f"run: scenario {sc.name!r} has a [forecast] block; use sim.forecast() for it")
    res = _run(sc, seed=seed, out_dir=out, max_work=max_work)
    if out is not None:
        write_run_report(res)
        res.files.append("report.html")
    return Run(summary_row(res.summary), res.timeseries, res.requests, list(res.summary.get("warnings", [])),
               res.summary, res)


# ------------------------------------------------------------------ a forecast
@dataclass
class Forecast:
    """A multi-month forecast: ``summary`` (one row), ``monthly`` (one row per month, the
    columns of monthly.csv), ``warnings``, ``raw`` (the nested summary), ``result`` and
    ``deployments`` (one row per month x deployment, ``monthly_deployments.csv``)."""
    summary: pd.DataFrame
    monthly: pd.DataFrame
    warnings: list[str]
    raw: dict
    result: ForecastResult
    deployments: pd.DataFrame | None = None   # month x deployment: the rows of monthly_deployments.csv


def forecast(scenario: str | Path | Scenario | Mapping = "default", overrides: Mapping[str, Any] | None = None, *,
             seed: int | None = None, out: str | Path | None = None, progress: bool = False,
             max_work: float | None = None) -> Forecast:
    """The month-by-month forecast of a scenario with ``[forecast]`` (``sovsim run`` of the
    default scenario); with ``out`` its folder, ``forecast.png`` and ``report.html``.

    >>> f = forecast("default", {"forecast.months": 2, "forecast.windows_per_month": 1,
    ...                          "forecast.window_s": 10.0, "forecast.warmup_s": 5.0})
    >>> list(f.monthly["month"]), int(f.summary.loc[0, "months"])
    ([0, 1], 2)
    >>> {"revenue_eur", "sla_attainment", "gross_margin_eur"} <= set(f.monthly.columns)
    True
    """
    sc = _scenario(scenario, overrides)
    res = run_forecast(sc, seed=seed, out_dir=out, progress=progress, figures=False, max_work=max_work)
    finish_forecast(res)
    return Forecast(summary_row(res.summary), res.monthly, list(res.summary["warnings"]), res.summary, res,
                    res.deployments)


# ------------------------------------------------------------------ a sweep
@dataclass
class Sweep:
    """A grid sweep: ``points`` (one row per grid point: means and 95 % intervals over the
    replications), ``replications`` (one row per run), ``out_dir`` and ``result``."""
    points: pd.DataFrame
    replications: pd.DataFrame
    out_dir: Path | None
    result: Any


def _executor(workers: int):
    return None if not workers else make_executor(workers)


def sweep(scenario: str | Path | Scenario | Mapping, grid: Mapping[str, Sequence[Any]],
          replications: int = 3, overrides: Mapping[str, Any] | None = None, *, seed: int | None = None,
          out: str | Path | None = None, workers: int = 0) -> Sweep:
    """Run every combination of ``grid`` (dotted field -> values) ``replications`` times with
    common random numbers (``sovsim sweep``); ``workers`` > 0 uses a process pool.  Without
    ``out`` the sweep runs in a temporary folder, deleted afterwards.

    >>> s = sweep("day", {"deployments.0.replicas": [1, 2]}, replications=2,
    ...           overrides={"simulation.horizon_s": 30})
    >>> list(s.points["deployments.0.replicas"]), len(s.replications)
    ([1, 2], 4)
    >>> {"request_utilisation_mean", "request_utilisation_ci95_lo"} <= set(s.points.columns)
    True
    """
    sc = _scenario(scenario, overrides)
    grid = {k: list(v) for k, v in grid.items()}
    if replications < 1:
        raise UserError(f"sweep: replications = {replications}; allowed: an integer >= 1")
    ex = _executor(workers)
    try:
        if out is not None:
            res = run_sweep(sc, grid, replications, out, root_seed=seed, executor=ex, progress=False)
            return Sweep(res.points_table, res.replications_table, Path(out), res)
        with tempfile.TemporaryDirectory(prefix="sovsim-sweep-") as tmp:
            res = run_sweep(sc, grid, replications, Path(tmp) / "sweep", root_seed=seed, executor=ex, progress=False)
            return Sweep(res.points_table, res.replications_table, None, res)
    finally:
        if ex is not None:
            ex.shutdown()


# ------------------------------------------------------------------ capacity
@dataclass
class Capacity:
    """The smallest fleet meeting every SLA target: ``replicas`` and ``gpus`` (None if none up
    to ``max_replicas``), ``summary`` (one row: the answer, targets, cost at the answer) and
    ``evaluations`` (one row per fleet size tried, attainment means and 95 % intervals)."""
    replicas: int | None
    gpus: int | None
    summary: pd.DataFrame
    evaluations: pd.DataFrame
    result: CapacityResult


def capacity(scenario: str | Path | Scenario | Mapping, targets: Mapping[str, float] | Sequence[str],
             overrides: Mapping[str, Any] | None = None, *, scope: str = "total", replications: int = 3,
             max_replicas: int = 256, conservative: bool = False, seed: int | None = None,
             out: str | Path | None = None, workers: int = 0) -> Capacity:
    """Bisect the smallest replica count whose mean SLA attainment meets every target
    (``sovsim capacity``).  ``targets``: ``{"general": 0.99}`` (vertical -> attainment) or
    CLI strings (``["general=0.99"]``); ``scope``: ``total``, ``site:NAME`` or
    ``deployment:NAME``.

    >>> c = capacity("day", {"general": 0.99}, {"simulation.horizon_s": 30,
    ...              "workloads.0.arrivals.rate_per_s": 60.0}, replications=2, max_replicas=8)
    >>> c.replicas, c.gpus, bool(c.replicas == c.summary.loc[0, "replicas"])
    (2, 4, True)
    >>> list(c.evaluations.columns[:3])
    ['replicas', 'gpus', 'feasible']
    """
    sc = _scenario(scenario, overrides)
    specs = [f"{k}={v}" for k, v in targets.items()] if isinstance(targets, Mapping) else list(targets)
    tg = parse_targets(specs, sc)
    ex = _executor(workers)

    def search(folder: Path) -> CapacityResult:
        return capacity_search(sc, tg, scope=scope, replications=replications, out_dir=folder,
                               max_replicas=max_replicas, conservative=conservative, root_seed=seed,
                               executor=ex, progress=False)

    try:
        if out is not None:
            res = search(Path(out))
        else:
            with tempfile.TemporaryDirectory(prefix="sovsim-capacity-") as tmp:
                res = search(Path(tmp) / "capacity")
    finally:
        if ex is not None:
            ex.shutdown()
    rows = evaluation_rows(res)
    head = {"scope": res.scope, "deployments": ", ".join(res.deployments), "replicas": res.replicas, "gpus": res.gpus,
            **{f"target.{k}": v for k, v in res.targets.items()}, **{f"cost.{k}": v for k, v in (res.cost or {}).items()}}
    return Capacity(res.replicas, res.gpus, pd.DataFrame([head]), pd.DataFrame(rows), res)
