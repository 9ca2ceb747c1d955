"""Run one scenario: build the world, attach its economics, simulate, write the run folder.

``run(scenario, seed)`` is the one entry point every command, test, sweep and experiment
uses.  Same scenario and seed give the same summary, in any process.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from sim.economics.attach import WorldEconomics
from sim.core.runfolder import RunFolder, run_folder
from sim.core.serialise import json_default as _json_default  # noqa: F401  (re-exported)
from sim.scenario import Scenario, resolved_config
from sim.scenario.estimate import check_work
from sim.serving.world import World
from sim.study.figures import run_figures
from sim.study.warnings import run_warnings


@dataclass
class RunResult:
    summary: dict
    scenario: Scenario
    seed: int
    out_dir: Path | None = None
    requests: object = None      # pandas.DataFrame: the per-request sample
    timeseries: object = None    # pandas.DataFrame: per-replica and fleet time bins
    wall_s: float = 0.0
    files: list[str] = field(default_factory=list)


def run(scenario: Scenario, seed: int | None = None, out_dir: str | Path | None = None,
        progress: bool = False, figures: bool = True, max_work: float | None = None) -> RunResult:
    """Simulate ``scenario`` with ``seed`` (default: the scenario's own seed).

    With ``out_dir`` the run writes its folder through :mod:`sim.core.runfolder`:
    ``config.json`` first (even if the run then fails), then ``summary.json``,
    ``timeseries.parquet``, ``requests.parquet`` and figures, ``manifest.json`` last.
    ``max_work`` scales the work limits checked first (:mod:`sim.scenario.estimate`)."""
    check_work(scenario, max_work)
    seed = scenario.simulation.seed if seed is None else int(seed)
    out = Path(out_dir) if out_dir is not None else None
    with run_folder(out, "run", resolved_config(scenario, seed)) as folder:
        t0 = time.perf_counter()
        world = World(scenario, seed)
        econ = WorldEconomics(world)   # the ledger (and faults, when enabled) rides along
        world.run(progress=progress)
        summary = world.summary()
        summary["economics"] = econ.finish()
        world.metrics.add_in_flight(world.in_flight())
        wall = time.perf_counter() - t0
        names = [r.name for r in world.replicas]
        result = RunResult(summary=summary, scenario=scenario, seed=seed, out_dir=out, wall_s=wall)
        result.requests = world.metrics.requests_frame(names)
        result.timeseries = world.metrics.timeseries_frame(
            world.replicas, summary["duration_s"] or scenario.simulation.horizon_s)
        # the busy share under its own name (``gpu_utilisation`` is kept: same number, docs/metrics.md)
        summary["busy_share"] = summary["gpu_utilisation"]
        summary["warnings"] = run_warnings(summary, scenario, result.timeseries)
        if folder is not None:
            write_outputs(result, figures=figures, folder=folder)
    return result


def write_outputs(result: RunResult, figures: bool = True, folder: RunFolder | None = None):
    """The result files of a single run, into ``folder`` (a :class:`RunFolder` on
    ``result.out_dir`` if not given)."""
    own = folder is None
    folder = folder or RunFolder(result.out_dir, "run")
    folder.write_json("summary.json", result.summary)
    folder.write_with("timeseries.parquet", lambda t: result.timeseries.to_parquet(t, index=False))
    folder.write_with("requests.parquet", lambda t: result.requests.to_parquet(t, index=False))
    result.files = ["config.json", "summary.json", "timeseries.parquet", "requests.parquet"]
    if figures:
        figs = run_figures(result)
        for f in figs:
            folder.adopt(f)
        result.files += figs
    if own:
        folder.complete()
