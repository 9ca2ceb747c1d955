"""Run one scenario: build the world, attach its economics, simulate, write the run folder.

``run(scenario, seed)`` is the one entry point every command, test, sweep and experiment
uses.  Same scenario and seed give the same summary, in any process.
"""
from __future__ import annotations

import json
import math
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from sim.economics.attach import WorldEconomics
from sim.core.serialise import json_default as _json_default
from sim.scenario import Scenario, resolved_config
from sim.serving.world import World
from sim.study.figures import run_figures


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
        progress: bool = False, figures: bool = True) -> RunResult:
    """Simulate ``scenario`` with ``seed`` (default: the scenario's own seed).

    With ``out_dir`` the run writes ``config.json`` first (even if the run then fails),
    then ``summary.json``, ``timeseries.parquet``, ``requests.parquet`` and figures."""
    seed = scenario.simulation.seed if seed is None else int(seed)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(resolved_config(scenario, seed), indent=2) + "\n")
        err = out / "error.txt"
        if err.exists():
            err.unlink()
    t0 = time.perf_counter()
    try:
        world = World(scenario, seed)
        econ = WorldEconomics(world)   # the ledger (and faults, when enabled) rides along
        world.run(progress=progress)
        summary = world.summary()
        summary["economics"] = econ.finish()
        world.metrics.add_in_flight(world.in_flight())
    except Exception:
        if out is not None:
            (out / "error.txt").write_text(traceback.format_exc())
        raise
    wall = time.perf_counter() - t0
    names = [r.name for r in world.replicas]
    result = RunResult(summary=summary, scenario=scenario, seed=seed, out_dir=out, wall_s=wall)
    if out is not None:
        result.requests = world.metrics.requests_frame(names)
        result.timeseries = world.metrics.timeseries_frame(world.replicas, summary["duration_s"] or scenario.simulation.horizon_s)
        write_outputs(result, figures=figures)
    else:
        result.requests = world.metrics.requests_frame(names)
    return result


def write_outputs(result: RunResult, figures: bool = True):
    out = result.out_dir
    (out / "summary.json").write_text(json.dumps(result.summary, indent=2, default=_json_default) + "\n")
    result.timeseries.to_parquet(out / "timeseries.parquet", index=False)
    result.requests.to_parquet(out / "requests.parquet", index=False)
    result.files = ["config.json", "summary.json", "timeseries.parquet", "requests.parquet"]
    if figures:
        result.files += run_figures(result)
