"""A cheap stand-in for ``sim.study.sweep.run_point`` used by the sweep tests.

Deterministic in (scenario, seed): it draws from a Generator seeded by ``seed`` only, so
replication r gives the same draws at every grid point (what common random numbers promise).
Each call appends one line to the file named by ``SOVSIM_FAKE_LOG`` (if set) so tests can
count computations, and sleeps ``SOVSIM_FAKE_SLEEP_S`` seconds to look like work.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np

from sim.core.errors import UserError


def fake_point(scenario_json: str, seed: int) -> dict:
    scen = json.loads(scenario_json)
    replicas = sum(d["replicas"] for d in scen["deployments"])
    rate = sum(w["arrivals"].get("rate_per_s", 1.0) for w in scen["workloads"])
    if replicas == 0:
        raise UserError("no replicas (the fake refuses, to test error reporting)")
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    noise = float(rng.normal(0.0, 0.01))
    time.sleep(float(os.environ.get("SOVSIM_FAKE_SLEEP_S", "0")))
    log = os.environ.get("SOVSIM_FAKE_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{replicas} {seed} {os.getpid()}\n")
    attainment = min(1.0, max(0.0, 1.0 - np.exp(-replicas / rate) + noise))
    return {
        "arrivals": int(rng.poisson(100 * rate)),
        "noise": noise,
        "sla_attainment": attainment,
        "ttft_s": {"p99": 1.0 / replicas + abs(noise)},
        "workloads": {w["name"]: {"sla_attainment": attainment} for w in scen["workloads"]},
    }
