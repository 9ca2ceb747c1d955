"""Cells: a large fleet simulated as independent shards, exactly or by sampling.

Real providers shard load balancing: a front router splits each site's arrivals across
*cells*, each a router over at most ``max_replicas`` replicas.  Given their arrivals, cells
are independent, so:

* **plan** (:func:`plan_cells`): per site, ``ceil(replicas / max_replicas)`` cells; each
  deployment's replicas are dealt round-robin over its site's cells (so cells of a site
  are as alike as the counts allow).  The front router splits every workload's arrivals
  over the cells in proportion to the GPUs of the replicas it may use there (residency
  holds: a cell only receives a workload's requests if it holds replicas the workload may
  use).  A random split of a Poisson or NHPP stream is a set of independent Poisson / NHPP
  streams with the rates multiplied by the shares, so each cell is simulated on its own
  with scaled rates: exact for Poisson and NHPP arrivals.  With Markov-modulated bursts the
  cells' burst states are drawn independently (in the real fleet they are shared): an
  approximation, flagged ``bursts_independent`` in the result.  Trace replay and offline
  workloads cannot be split this way and are refused.
* **run** (:func:`run_cells`): every cell (``sample=None``) or ``k`` of the ``K`` cells of
  each group of exchangeable cells (same replicas and same offered load), on any
  ``concurrent.futures.Executor`` (the sweep's process pool or Dask), each with its own seed
  from the run's root seed (``cell/<index>``), so a cell's result is the same whether it is
  simulated in the exact or the sampled run.
* **combine**: totals (requests, tokens, GPU-hours, money) are sums, scaled by ``K/k`` per
  group; ratios (attainment, utilisation) are ratio estimators; percentiles come from the
  cells' merged latency histograms, weighted by ``K/k``.  Confidence intervals come from the
  cell-to-cell spread: Student-t with the finite-population correction ``1 - k/K`` for
  totals and ratios (linearised), Woodruff's interval for percentiles (the
  share of requests under the percentile is a ratio estimator).
  An exact run has no sampling error (zero-width intervals).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from sim.core import progress as progress_mod
from sim.core.errors import UserError
from sim.core.rng import RandomStreams
from sim.scenario import Scenario, scenario_from_dict
from sim.scenario.estimate import LIMITS, WorkLimitError, max_work_from_env
from sim.scenario.estimate import estimate as work_estimate
from sim.serving.metrics import _H_BINS, _H_LO, _H_RATIO
from sim.serving.residency import site_allows
from sim.serving.world import World
from sim.economics.attach import WorldEconomics

SPLITTABLE = ("poisson", "nhpp")
ADDITIVE = ("arrivals", "completed", "rejected", "in_flight", "output_tokens_total", "prompt_tokens_total",
            "completed_output_tokens", "gpu_hours", "busy_gpu_hours", "measured", "sla_met_requests",
            "sla_denominator", "capacity_requests", "revenue_eur", "costs_eur", "margin_eur",
            "residency_violations", "preemptions")
HISTOGRAMS = ("ttft_s", "tpot_s", "e2e_s")


@dataclass(frozen=True)
class Cell:
    index: int
    site: str | None
    replicas: tuple[int, ...]          # replicas of each deployment in this cell
    rates_per_s: tuple[float, ...]     # each workload's offered rate in this cell (0: none)

    @property
    def key(self) -> tuple:
        """Cells with equal keys are exchangeable (same fleet, same offered load)."""
        return (self.replicas, tuple(round(r, 9) for r in self.rates_per_s))


def plan_cells(scenario: Scenario, max_replicas: int) -> list[Cell]:
    """Partition the scenario's fleet into cells of at most ``max_replicas`` replicas."""
    if max_replicas < 1:
        raise UserError(f"cells: max_replicas must be >= 1; got {max_replicas}")
    sc = scenario
    for w in sc.workloads:
        if w.arrivals.kind not in SPLITTABLE:
            raise UserError(f"workloads[{w.name}].arrivals.kind = {w.arrivals.kind!r}: cells split only "
                            f"{' and '.join(SPLITTABLE)} arrivals (run this scenario without cells)")
    sites = {s.name: s for s in sc.sites}
    site_order = list(dict.fromkeys(d.site for d in sc.deployments))
    cells_rep: list[list[int]] = []
    cell_site: list[str | None] = []
    for site in site_order:
        deps = [di for di, d in enumerate(sc.deployments) if d.site == site]
        n = sum(sc.deployments[di].replicas for di in deps)
        if n == 0:
            continue
        k = -(-n // max_replicas)
        first = len(cells_rep)
        for _ in range(k):
            cells_rep.append([0] * len(sc.deployments))
            cell_site.append(site)
        slot = 0
        for di in deps:   # deal each deployment's replicas round-robin over the site's cells
            for _ in range(sc.deployments[di].replicas):
                cells_rep[first + slot % k][di] += 1
                slot += 1
    # each workload's GPUs it may use, per cell
    usable = np.zeros((len(cells_rep), len(sc.workloads)))
    for ci, reps in enumerate(cells_rep):
        site = sites.get(cell_site[ci]) if cell_site[ci] else None
        for wi, w in enumerate(sc.workloads):
            usable[ci, wi] = sum(n * sc.deployments[di].tp for di, n in enumerate(reps)
                                 if sc.deployments[di].model == w.model and site_allows(site, w.residency))
    total = usable.sum(axis=0)
    out = []
    for ci, reps in enumerate(cells_rep):
        rates = tuple(float(w.arrivals.rate_per_s * usable[ci, wi] / total[wi]) if total[wi] > 0 else 0.0
                      for wi, w in enumerate(sc.workloads))
        out.append(Cell(ci, cell_site[ci], tuple(reps), rates))
    return out


def cell_scenario(scenario: Scenario, cell: Cell) -> Scenario:
    """The scenario of one cell: its replicas, the workloads it receives at their shares."""
    d = scenario.model_dump(mode="python", exclude={"market", "forecast"})
    d["name"] = f"{scenario.name}-cell{cell.index}"
    for di, dep in enumerate(d["deployments"]):
        dep["replicas"] = cell.replicas[di]
    ws = []
    for wi, w in enumerate(d["workloads"]):
        if cell.rates_per_s[wi] <= 0:
            continue
        w = dict(w)
        w["arrivals"] = dict(w["arrivals"], rate_per_s=cell.rates_per_s[wi])
        ws.append(w)
    d["workloads"] = ws
    d["capacity_policy"] = {"kind": "fixed"}
    _scale_contracts(scenario, cell, d)
    return scenario_from_dict(d, f"cell {cell.index}")


def _scale_contracts(scenario: Scenario, cell: Cell, d: dict) -> None:
    """A cell holds its share of its site's capacity contracts: each contract's GPUs times
    the cell's share of the site's deployed GPUs, rounded, with any shortfall against the
    cell's own deployments added to the site's first contract (so a cell is billed for its
    GPUs only, within one GPU per contract of the exact share)."""
    site_gpus: dict = {}
    for dep in scenario.deployments:
        site_gpus[dep.site] = site_gpus.get(dep.site, 0) + dep.gpus
    for site in d["sites"]:
        if not site.get("contracts"):
            continue
        total = site_gpus.get(site["name"], 0)
        mine = sum(n * scenario.deployments[di].tp for di, n in enumerate(cell.replicas)
                   if scenario.deployments[di].site == site["name"])
        share = mine / total if total else 0.0
        for c in site["contracts"]:
            c["gpus"] = int(round(c["gpus"] * share))
        short = mine - sum(c["gpus"] for c in site["contracts"])
        if short > 0:
            site["contracts"][0]["gpus"] += short


def cell_seed(seed: int, index: int) -> int:
    return int(RandomStreams(seed).seed_sequence(f"cell/{index}").generate_state(1)[0])


HOUR_S = 3600.0
WEEK_H = 168.0
DRAIN_STEP_S = 10.0          # run setting: how often the drain after a window looks for requests left
DRAIN_LIMIT_WINDOWS = 10.0   # run setting: a drain longer than 10 windows stops (overload)


def run_cell(scenario_json: str, seed: int, windows: int = 0, window_s: float = 0.0,
             warmup_s: float = 0.0) -> dict:
    """Simulate one cell (a picklable task for any Executor): its additive totals and its
    latency histograms.  With ``windows``, the cell's horizon is estimated from that many
    windows of ``window_s`` (each after ``warmup_s`` from an empty system), spread evenly
    over the horizon with a random phase (stratified sampling of time, as the forecast
    does for months); totals scale by ``horizon / (windows x window_s)``."""
    sc = Scenario.model_validate_json(scenario_json)
    if not sc.workloads:
        return {"totals": {k: 0.0 for k in ADDITIVE},
                "hist": {h: np.zeros(_H_BINS) for h in HISTOGRAMS}}
    if not windows:
        return _simulate(sc, seed, measured_only=False)
    horizon = sc.simulation.horizon_s
    streams = RandomStreams(seed)
    u = float(streams.generator("cell/phase").random())
    scale = horizon / (windows * window_s)
    out = {"totals": {k: 0.0 for k in ADDITIVE}, "hist": {h: np.zeros(_H_BINS) for h in HISTOGRAMS}}
    for k in range(windows):
        t0 = (k + u) * horizon / windows
        d = sc.model_dump(mode="python")
        d["simulation"].update({"horizon_s": warmup_s + window_s, "warmup_s": warmup_s,
                                "timeseries_interval_s": warmup_s if warmup_s > 0 else window_s})
        for w in d["workloads"]:
            if w["arrivals"]["kind"] == "nhpp":
                w["arrivals"] = dict(w["arrivals"], start_hour_of_week=(
                    w["arrivals"]["start_hour_of_week"] + (t0 - warmup_s) / HOUR_S) % WEEK_H)
        wsc = scenario_from_dict(d, f"cell window {k}")
        one = _simulate(wsc, int(streams.seed_sequence(f"cell/window/{k}").generate_state(1)[0]),
                        measured_only=True)
        for key, v in one["totals"].items():
            out["totals"][key] += scale * v
        for h, c in one["hist"].items():
            out["hist"][h] += scale * c
    return out


def _simulate(sc: Scenario, seed: int, measured_only: bool) -> dict:
    """One world with its economics.  ``measured_only``: only what arrived after the
    warm-up counts (requests, tokens, busy time, GPU time, money pro rata)."""
    world = World(sc, seed)
    econ = WorldEconomics(world)
    world.run()
    horizon = sc.simulation.horizon_s
    warm = sc.simulation.warmup_s
    frac = money_frac = 1.0
    busy_gpu_h = None
    if measured_only:
        # busy GPU time of the window (bins after the warm-up one), before the drain
        now = world.env.now
        busy_gpu_h = sum((sum(world.metrics.busy[r.index][1 if warm > 0 else 0:]) + r.partial_run(now)[0]) * r.gpus
                         for r in world.replicas) / HOUR_S
        # drain: the window's requests run to completion (no new arrivals), so requests
        # still in flight at the window's end are not censored away (long ones would be)
        limit = horizon + DRAIN_LIMIT_WINDOWS * (horizon - warm)
        while world.in_flight() and world.env.now < limit:
            world.env.run(until=min(limit, world.env.now + DRAIN_STEP_S))
        frac = (horizon - warm) / horizon
        money_frac = (horizon - warm) / world.env.now
    s = world.summary()
    e = econ.finish()
    total = world.metrics.total()
    ru = s["request_utilisation"]
    denom = total.measured + total.rejected_measured + total.inflight_missed
    if busy_gpu_h is None:
        busy_gpu_h = s["gpu_utilisation"] * s["gpu_hours"]
    totals = {
        "arrivals": total.measured_arrivals if measured_only else s["arrivals"],
        "completed": total.measured if measured_only else s["completed"],
        "rejected": total.rejected_measured if measured_only else s["rejected"],
        "in_flight": s["in_flight"],
        "output_tokens_total": s["output_tokens_total"] * frac,
        "prompt_tokens_total": total.measured_prompt_tokens if measured_only else s["prompt_tokens_total"],
        "completed_output_tokens": total.measured_output_tokens if measured_only else s["completed_output_tokens"],
        "gpu_hours": s["gpu_hours"] * frac, "busy_gpu_hours": busy_gpu_h,
        "measured": total.measured, "sla_met_requests": total.sla_met, "sla_denominator": denom,
        "capacity_requests": (s["completed"] / ru) * frac if ru else 0.0,
        # money pro rata of the measured time (exact for fixed charges; an approximation for
        # revenue and power: the warm-up and the drain are billed at the window's rates)
        "revenue_eur": e["revenue_eur"] * money_frac, "costs_eur": e["costs_eur"] * money_frac,
        "margin_eur": e["margin_eur"] * money_frac,
        "residency_violations": s["residency_violations"], "preemptions": s["preemptions"],
    }
    return {"totals": {k: float(v) for k, v in totals.items()},
            "hist": {"ttft_s": total.h_ttft.counts.astype(float), "tpot_s": total.h_tpot.counts.astype(float),
                     "e2e_s": total.h_e2e.counts.astype(float)}}


@dataclass
class CellsResult:
    summary: dict
    cells: list[Cell]
    simulated: list[int]                 # indices of the cells simulated
    per_cell: dict[int, dict] = field(default_factory=dict)


def _quantile(counts: np.ndarray, q: float) -> float | None:
    n = counts.sum()
    if n <= 0:
        return None
    i = int(np.searchsorted(np.cumsum(counts), q * n, side="left"))
    i = min(i, _H_BINS - 1)
    return 0.0 if i == 0 else _H_LO * _H_RATIO ** (i - 1) * math.sqrt(_H_RATIO)


def run_cells(scenario: Scenario, seed: int | None = None, max_replicas: int = 16,
              sample: int | None = None, executor=None, windows: int = 0, window_s: float = 300.0,
              warmup_s: float = 60.0, max_work: float | None = None, progress=None) -> CellsResult:
    """Simulate ``scenario`` as cells of at most ``max_replicas`` replicas: every cell, or
    ``sample`` cells of each exchangeable group (at least 2, so the spread is estimable);
    with ``windows``, each cell's horizon is estimated from that many sampled windows
    (:func:`run_cell`).  ``progress`` (:mod:`sim.core.progress`; None: the process default)
    counts cells done."""
    seed = scenario.simulation.seed if seed is None else int(seed)
    cells = plan_cells(scenario, max_replicas)
    groups, chosen = sample_plan(cells, sample)
    todo = sorted(i for idx in chosen.values() for i in idx)
    cell_scs = {i: cell_scenario(scenario, cells[i]) for i in todo}
    _check_work(cell_scs, windows, window_s, warmup_s, max_work)
    tasks = [(cell_scs[i].model_dump_json(), cell_seed(seed, i)) for i in todo]
    n = len(tasks)
    args = ([t[0] for t in tasks], [t[1] for t in tasks], [windows] * n, [window_s] * n, [warmup_s] * n)
    results = []
    with progress_mod.start(progress, n, "cell", "cells") as bar:
        for r in (map(run_cell, *args) if executor is None else executor.map(run_cell, *args)):
            results.append(r)
            bar.update(1, requests=r["totals"].get("arrivals", 0))
    per_cell = dict(zip(todo, results))
    summary = estimate(cells, per_cell, sample, windowed=bool(windows))
    summary.update({"scenario": scenario.name, "seed": seed, "cells": len(cells), "cells_simulated": len(todo),
                    "max_replicas_per_cell": max_replicas, "groups": len(groups),
                    "windows": windows, "window_s": window_s if windows else None,
                    "exact": not windows and (sample is None or all(len(chosen[k]) == len(groups[k]) for k in groups)),
                    "bursts_independent": any(getattr(w.arrivals, "burst", None) is not None
                                              for w in scenario.workloads)})
    return CellsResult(summary, cells, todo, per_cell)


def _check_work(cell_scs: dict[int, Scenario], windows: int, window_s: float, warmup_s: float,
                max_work: float | None) -> None:
    """Refuse in one line, before any work, if the cells to simulate add up to more work than
    the limits of :mod:`sim.scenario.estimate` (each window counted with its warm-up)."""
    factor = max_work_from_env() if max_work is None else float(max_work)
    if math.isinf(factor):
        return
    total: dict[str, float] = {}
    for sc in cell_scs.values():
        est = work_estimate(sc) if sc.workloads else {}
        if windows:
            f = windows * (window_s + warmup_s) / sc.simulation.horizon_s
            est = {k: (v * f if k in ("requests", "fault_events", "burst_switches", "policy_checks") else v)
                   for k, v in est.items()}
        for k, v in est.items():
            total[k] = max(total.get(k, 0.0), v) if k == "replicas" else total.get(k, 0.0) + v
    for k, v in total.items():
        if not v <= LIMITS[k] * factor:
            raise WorkLimitError(
                f"work estimate: {v:.3g} {k.replace('_', ' ')} in the {len(cell_scs)} cells to simulate is above "
                f"the limit of {LIMITS[k] * factor:.3g}; allowed: fewer or shorter windows (cells.windows, "
                f"cells.window_s), fewer sampled cells (cells.sample), or --max-work {v / LIMITS[k]:.2g}")


def sample_plan(cells: list[Cell], sample: int | None) -> tuple[dict, dict]:
    """Groups of exchangeable cells and, per group, the cells simulated: all of them, or the
    first ``sample`` (cells of a group differ only by their seeds, so any fixed choice is a
    random sample)."""
    if sample is not None and sample < 2:
        raise UserError(f"cells: sample must be >= 2 cells per group (the spread needs two); got {sample}")
    groups: dict[tuple, list[int]] = {}
    for c in cells:
        groups.setdefault(c.key, []).append(c.index)
    chosen = {key: (idx if sample is None else idx[:min(len(idx), sample)]) for key, idx in groups.items()}
    return groups, chosen


def estimate(cells: list[Cell], per_cell: dict[int, dict], sample: int | None, windowed: bool = False) -> dict:
    """The fleet's totals, ratios and percentiles with intervals, from the simulated cells.

    ``windowed``: each cell's values are themselves estimates from sampled time windows,
    so even an all-cells run has sampling error; the between-cell variance (which then
    contains the within-cell window noise) is used without the finite-population
    correction, a conservative interval."""
    groups, chosen = sample_plan(cells, sample)
    return _combine(groups, chosen, per_cell, windowed)


COVERAGE_KEYS = (("sla_attainment",), ("request_utilisation",), ("arrivals",),
                 ("ttft_s", "p99"), ("tpot_s", "p99"), ("e2e_s", "p50"))


def interval_coverage(cells: list[Cell], per_cell: dict[int, dict], sample: int, draws: int = 200,
                      seed: int = 0, keys=COVERAGE_KEYS) -> dict:
    """How often a sampled run's 95 % interval covers the exact fleet value, measured on one
    exact run (every cell simulated) by drawing ``draws`` random samples of ``sample`` cells
    per group from it (without replacement, as :func:`run_cells` samples): per key, the
    share of draws whose interval holds the exact value, the median interval width relative
    to the value, and the median signed error.  The cells of a group are exchangeable, so a
    random subset of an exact run is what a sampled run with other cells would have seen.
    ``draws`` and ``seed`` fix the draws (the result is reproducible)."""
    groups, _ = sample_plan(cells, None)
    exact = _combine(groups, groups, per_cell)
    rng = np.random.default_rng(seed)
    hit = {k: 0 for k in keys}
    width: dict = {k: [] for k in keys}
    err: dict = {k: [] for k in keys}
    for _ in range(draws):
        chosen = {key: sorted(int(i) for i in rng.choice(idx, size=min(sample, len(idx)), replace=False))
                  for key, idx in groups.items()}
        est = _combine(groups, chosen, per_cell)
        for k in keys:
            e, s = _get(exact, k), _get(est, k)
            ev = e["value"]
            if ev is None or s["value"] is None:
                continue
            hit[k] += s["ci_low"] <= ev <= s["ci_high"]
            if ev:
                width[k].append((s["ci_high"] - s["ci_low"]) / abs(ev))
                err[k].append(s["value"] / ev - 1.0)
    name = {k: "_".join(k) for k in keys}
    return {name[k]: {"coverage": hit[k] / draws, "draws": draws, "exact": _get(exact, k)["value"],
                      "median_rel_width": float(np.median(width[k])) if width[k] else None,
                      "median_rel_error": float(np.median(err[k])) if err[k] else None}
            for k in keys}


def _get(d: dict, key: tuple) -> dict:
    for part in key:
        d = d[part]
    return d


def _combine(groups: dict, chosen: dict, per_cell: dict, windowed: bool = False) -> dict:
    """Totals, ratios and percentiles of the fleet with t / bootstrap intervals from the
    cell-to-cell spread within each group (stratified sampling without replacement)."""
    est = {k: 0.0 for k in ADDITIVE}
    var = {k: 0.0 for k in ADDITIVE}
    dof = 0
    strata = []   # (K, k, matrix of totals) for the ratio variances
    for key, idx in groups.items():
        K, pick = len(idx), chosen[key]
        k = len(pick)
        mat = np.array([[per_cell[i]["totals"][a] for a in ADDITIVE] for i in pick])
        strata.append((K, k, mat))
        fpc = _fpc(K, k, windowed)
        for j, a in enumerate(ADDITIVE):
            est[a] += K * mat[:, j].mean()
            if fpc > 0:
                var[a] += K * K * fpc * mat[:, j].var(ddof=1) / k
        if fpc > 0:
            dof += k - 1
    t = float(stats.t.ppf(0.975, dof)) if dof > 0 else 0.0
    out: dict = {}
    for a in ADDITIVE:
        h = t * math.sqrt(var[a])
        out[a] = {"value": float(est[a]), "ci_low": float(est[a] - h), "ci_high": float(est[a] + h)}

    def ratio(num: str, den: str, clip=(0.0, 1.0)) -> dict:
        D = est[den]
        if D <= 0:
            return {"value": None, "ci_low": None, "ci_high": None}
        r = est[num] / D
        v = 0.0
        jn, jd = ADDITIVE.index(num), ADDITIVE.index(den)
        for K, k, mat in strata:
            fpc = _fpc(K, k, windowed)
            if fpc > 0:
                resid = mat[:, jn] - r * mat[:, jd]
                v += K * K * fpc * resid.var(ddof=1) / k
        h = t * math.sqrt(v) / D
        return {"value": float(r), "ci_low": float(max(clip[0], r - h)), "ci_high": float(min(clip[1], r + h))}

    out["sla_attainment"] = ratio("sla_met_requests", "sla_denominator")
    out["gpu_utilisation"] = ratio("busy_gpu_hours", "gpu_hours")
    out["request_utilisation"] = ratio("completed", "capacity_requests", clip=(0.0, math.inf))
    out.update(_percentiles(groups, chosen, per_cell, windowed))
    return out


def _fpc(K: int, k: int, windowed: bool) -> float:
    """The variance factor of a group: ``1 - k/K`` (sampling cells without replacement), or 1
    when the cells' own values are window estimates; 0 when no spread can be estimated."""
    if k < 2:
        return 0.0
    return 1.0 if windowed else 1.0 - k / K


def _percentiles(groups: dict, chosen: dict, per_cell: dict, windowed: bool = False) -> dict:
    """Weighted merged-histogram percentiles; intervals by Woodruff's method: the share of
    requests at or below the estimated percentile is a ratio estimator with a t interval
    from the cell-to-cell spread, mapped back through the merged distribution."""
    fpcs = {key: _fpc(len(groups[key]), len(chosen[key]), windowed) for key in groups}
    sampled = any(f > 0 for f in fpcs.values())
    dof = sum(len(chosen[k]) - 1 for k in groups if fpcs[k] > 0)
    t = float(stats.t.ppf(0.975, dof)) if dof > 0 else 0.0
    out = {}
    for h in HISTOGRAMS:
        base = np.zeros(_H_BINS)
        for key, idx in groups.items():
            w = len(idx) / len(chosen[key])
            for i in chosen[key]:
                base += w * per_cell[i]["hist"][h]
        n_all = base.sum()
        res = {}
        for q, name in ((0.5, "p50"), (0.9, "p90"), (0.99, "p99")):
            v = _quantile(base, q)
            lo = hi = v
            if sampled and v is not None:
                b = int(np.searchsorted(np.cumsum(base), q * n_all, side="left"))
                var = 0.0
                for key, idx in groups.items():
                    K, pick = len(idx), chosen[key]
                    k = len(pick)
                    if fpcs[key] == 0:
                        continue
                    y = np.array([per_cell[i]["hist"][h][:b + 1].sum() for i in pick], dtype=float)
                    n = np.array([per_cell[i]["hist"][h].sum() for i in pick], dtype=float)
                    var += K * K * fpcs[key] * (y - q * n).var(ddof=1) / k
                se = math.sqrt(var) / n_all if n_all > 0 else 0.0
                lo = _quantile(base, max(0.0, q - t * se))
                hi = _quantile(base, min(1.0, q + t * se))
            res[name] = {"value": v, "ci_low": lo, "ci_high": hi}
        out[h] = res
    return out
