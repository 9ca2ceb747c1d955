"""Capacity search: the smallest GPU count that meets every vertical's SLA target.

The search variable is ``n``, the replica count given to every deployment in a *scope*:

* ``total`` (default): every deployment of the scenario gets ``n`` replicas;
* ``site:NAME``: the deployments at site NAME get ``n`` replicas, the others keep theirs;
* ``deployment:NAME``: that one deployment gets ``n`` replicas.

GPUs of the scope = sum over its deployments of ``n x tp``.

At each ``n`` the scenario runs with R replications (the sweep machinery: common random
numbers, cached points, any executor).  A vertical's attainment is the share of its requests
that met both TTFT and TPOT targets, pooled over its workloads (weighted by arrivals).  ``n``
is *feasible* when every vertical's mean attainment over replications (or, with
``conservative``, the lower end of its 95% confidence interval) reaches its target.

Attainment is assumed non-decreasing in ``n`` (more replicas never hurt under the router
policies in ``sim.serving.router``); with common random numbers the estimate is close to monotone too,
so bisection applies: find an infeasible ``lo`` and a feasible ``hi`` by doubling, then halve.
Every evaluated ``n`` is reported so a non-monotone curve is visible.

The load at which the answer changes (``load_range=True``; ``sovsim capacity`` does it unless
``--no-load-range``): every workload's offered load (``rate_per_s`` of Poisson and NHPP
arrivals, ``rate_scale`` of a trace) is multiplied by a factor ``x``, the fleet held at the
answer ``n*``.  Attainment is assumed non-increasing in load, so the largest ``x`` at which
``n*`` still meets every target is found by bisection: factors ``1.25^k`` until one fails,
then halving the bracket in log space until its ends are within ``LOAD_TOL`` (2 %) of each
other.  Likewise the smallest ``x`` below which ``n* - 1`` replicas suffice (factors
``0.8^k`` down from 1).  Each factor is R replications with the same seeds (common random
numbers), cached beside the search's runs.  ``load_range`` in ``capacity.json``: ``up``
``{meets, misses}`` (``n*`` meets every target at load x ``meets``, misses at x ``misses``:
above it, at least one more replica per deployment in scope) and ``down``
``{fewer_misses, fewer_meets}`` (``n* - 1`` still misses at x ``fewer_misses``, is enough at
x ``fewer_meets``); a value is None when the last step was reached without a change.  Closed-loop and offline
workloads, and forecasts, have no offered rate to scale: then no range is given.

``capacity.png`` (beside ``capacity.json``): attainment of each vertical against the scope's
GPUs, mean and 95 % interval over replications, the targets dashed, the answer marked.
"""
from __future__ import annotations

import traceback

import concurrent.futures as cf
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from sim.core.errors import UserError
from sim.core.stats import UNIT_INTERVAL
from sim.scenario import Scenario, with_overrides
from sim.core.runfolder import check_out_dir, write_atomic, write_json_atomic
from sim.study.sweep import resolved_json, mean_ci95, run_point, run_sweep
from sim.study.sweep import atomic_write_json


@dataclass
class Evaluation:
    replicas: int
    gpus: int
    attainment: dict[str, tuple[float, float, float]]  # vertical -> (mean, lo, hi)
    feasible: bool


@dataclass
class CapacityResult:
    scope: str
    deployments: list[str]
    targets: dict[str, float]
    replicas: int | None  # smallest feasible n, None if not found up to max_replicas
    gpus: int | None
    evaluations: list[Evaluation] = field(default_factory=list)
    cost: dict[str, Any] | None = None
    cost_note: str = ""
    load_range: dict[str, Any] | None = None   # the load factors at which the answer changes
    load_note: str = ""


def parse_targets(specs: list[str] | None, scenario: Scenario) -> dict[str, float]:
    """``vertical=attainment`` pairs; default: per vertical, the strictest workload target."""
    verticals = sorted({w.vertical for w in scenario.workloads})
    if not specs:
        out: dict[str, float] = {}
        for w in scenario.workloads:
            out[w.vertical] = max(out.get(w.vertical, 0.0), w.sla.attainment_target)
        return out
    out = {}
    for spec in specs:
        name, sep, val = spec.partition("=")
        name = name.strip()
        if not sep:
            raise UserError(f"--target {spec!r}: expected VERTICAL=ATTAINMENT, e.g. finance=0.99")
        if name not in verticals:
            raise UserError(f"--target {spec!r}: no workload has vertical {name!r}; verticals: {', '.join(verticals)}")
        try:
            x = float(val)
        except ValueError:
            raise UserError(f"--target {spec!r}: attainment must be a number in (0, 1]") from None
        if not 0.0 < x <= 1.0:
            raise UserError(f"--target {spec!r}: attainment must be in (0, 1]")
        out[name] = x
    return out


def scope_deployments(scenario: Scenario, scope: str) -> list[int]:
    """Indices of the deployments whose replica count is the search variable."""
    if scope == "total":
        return list(range(len(scenario.deployments)))
    kind, _, name = scope.partition(":")
    if kind == "site":
        idx = [i for i, d in enumerate(scenario.deployments) if d.site == name]
        if not idx:
            sites = sorted({d.site for d in scenario.deployments if d.site})
            raise UserError(f"--scope {scope}: no deployment at site {name!r}; sites with deployments: {', '.join(sites) or 'none'}")
        return idx
    if kind == "deployment":
        idx = [i for i, d in enumerate(scenario.deployments) if d.name == name]
        if not idx:
            raise UserError(f"--scope {scope}: no deployment {name!r}; deployments: {', '.join(d.name for d in scenario.deployments)}")
        return idx
    raise UserError(f"--scope {scope!r}: expected total, site:NAME or deployment:NAME")


def vertical_attainment(summary: dict, scenario: Scenario) -> dict[str, float]:
    """SLA attainment per vertical from one run summary: the runner's pooled ``verticals``
    block when present, else the workloads' attainments weighted by arrivals."""
    per_v = summary.get("verticals")
    if per_v:
        return {v: (float(per_v[v]["sla_attainment"]) if per_v.get(v, {}).get("sla_attainment") is not None
                    else float("nan")) for v in {w.vertical for w in scenario.workloads}}
    per_w = summary.get("workloads", {})
    num: dict[str, float] = {}
    den: dict[str, float] = {}
    for w in scenario.workloads:
        ws = per_w.get(w.name)
        if ws is None:
            raise UserError(f"run summary has no workload {w.name!r}: cannot score its SLA")
        weight = float(ws.get("arrivals", ws.get("completed", 1)) or 0)
        att = ws.get("sla_attainment")
        if att is None or weight == 0:
            continue
        num[w.vertical] = num.get(w.vertical, 0.0) + weight * float(att)
        den[w.vertical] = den.get(w.vertical, 0.0) + weight
    return {v: (num[v] / den[v] if den.get(v) else float("nan")) for v in {w.vertical for w in scenario.workloads}}


def capacity_search(
    scenario: Scenario,
    targets: dict[str, float],
    *,
    scope: str = "total",
    replications: int = 3,
    out_dir: str | Path,
    max_replicas: int = 256,
    conservative: bool = False,
    root_seed: int | None = None,
    executor: cf.Executor | None = None,
    point_fn: Callable[[str, int], dict] = run_point,
    progress: bool | None = None,
    load_range: bool = False,
) -> CapacityResult:
    """The smallest replica count of the deployments in ``scope`` meeting every vertical's
    target (module docstring); with ``load_range``, also the offered-load factors between which
    that answer holds.  Writes ``config.json``, ``capacity.json``,
    ``capacity_evaluations.csv`` and ``capacity.png`` into ``out_dir``."""
    idx = scope_deployments(scenario, scope)
    names = [scenario.deployments[i].name for i in idx]
    tp_sum = sum(scenario.deployments[i].tp for i in idx)
    out = check_out_dir(out_dir)
    (out / "error.txt").unlink(missing_ok=True)
    write_json_atomic(out / "config.json", {"scenario": json.loads(resolved_json(scenario)), "targets": targets,
                                            "scope": scope, "replications": replications,
                                            "conservative": conservative, "max_replicas": max_replicas},
                      indent=2)
    try:
        return _search(scenario, targets, scope, replications, out, max_replicas, conservative, root_seed,
                       executor, point_fn, progress, idx, names, tp_sum, load_range)
    except BaseException:
        (out / "error.txt").write_text(traceback.format_exc())
        raise


def _search(scenario, targets, scope, replications, out, max_replicas, conservative, root_seed, executor,
            point_fn, progress, idx, names, tp_sum, load_range=False) -> CapacityResult:
    """Bracket then bisect the replica count (each count a sweep point with replications)."""
    cache: dict[int, Evaluation] = {}
    summaries: dict[int, list[dict]] = {}  # n -> the replications' run summaries
    load_evals: list[dict] = []

    def measure(base: Scenario, n: int, desc: str) -> tuple[Evaluation, list[dict]]:
        grid = {f"deployments.{i}.replicas": [n] for i in idx}
        res = run_sweep(base, grid, replications, out, root_seed=root_seed, executor=executor,
                        point_fn=point_fn, progress=progress, write_tables=False,
                        write_manifest=False, desc=desc)
        scen_n = with_overrides(base, {k: v[0] for k, v in grid.items()})
        sums = [res.records[t.key]["summary"] for t in res.tasks]
        per_rep = [vertical_attainment(s_, scen_n) for s_ in sums]
        # an attainment is a share: its interval is clipped to [0, 1] (sim.core.stats.UNIT_INTERVAL)
        att = {v: mean_ci95(np.array([r[v] for r in per_rep]), UNIT_INTERVAL) for v in targets}
        ok = all((att[v][1] if conservative and replications > 1 else att[v][0]) >= targets[v]
                 for v in targets)
        return Evaluation(n, n * tp_sum, att, ok), sums

    def evaluate(n: int) -> Evaluation:
        if n in cache:
            return cache[n]
        ev, summaries[n] = measure(scenario, n, f"capacity, {n} replicas")
        cache[n] = ev
        return ev

    def feasible_at_load(n: int, factor: float) -> bool:
        ev, _ = measure(scale_load(scenario, factor), n, f"capacity, {n} replicas at load x{factor:.3g}")
        load_evals.append({"replicas": n, "load_factor": factor, "feasible": ev.feasible,
                           **{f"{v}_attainment_mean": m for v, (m, _lo, _hi) in sorted(ev.attainment.items())}})
        return ev.feasible

    # bracket: lo infeasible (or 0), hi feasible
    lo, hi = 0, None
    n = 1
    while n <= max_replicas:
        if evaluate(n).feasible:
            hi = n
            break
        lo = n
        n = min(n * 2, max_replicas) if n < max_replicas else max_replicas + 1
    if hi is not None:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if evaluate(mid).feasible:
                hi = mid
            else:
                lo = mid
    evals = [cache[k] for k in sorted(cache)]
    result = CapacityResult(scope, names, targets, hi, None if hi is None else hi * tp_sum, evals)
    result.cost, result.cost_note = _cost(summaries.get(hi) if hi is not None else None)
    if load_range and hi is not None:
        why = no_load_scaling(scenario)
        if why:
            result.load_note = f"no load range: {why}"
        else:
            ok, bad = _load_edge(lambda x: feasible_at_load(hi, x), upward=True)
            up = {"meets": ok, "misses": bad}
            down = None
            if hi > 1:
                ok, bad = _load_edge(lambda x: not feasible_at_load(hi - 1, x), upward=False)
                down = {"fewer_misses": ok, "fewer_meets": bad}
            result.load_range = {"replicas": hi, "up": up, "down": down, "tolerance": LOAD_TOL,
                                 "method": "bisection on a factor on every workload's offered rate, the fleet "
                                           "held at the answer (up) and at one replica fewer (down); "
                                           "sim.study.capacity_search", "evaluations": load_evals}
            result.load_note = load_note(result)
    _write(out, result)
    return result


LOAD_TOL = 0.02        # run setting: the load edges are bracketed to within 2 % (hi / lo - 1)
LOAD_STEPS = 10        # run setting: bracket by factors 1.25^k (0.8^k) for k <= 10 (x9.3 / x0.11)


def no_load_scaling(scenario: Scenario) -> str:
    """Why the offered load of ``scenario`` cannot be scaled ('' when it can)."""
    if scenario.forecast is not None:
        return "a forecast's load comes from its market"
    kinds = sorted({w.arrivals.kind for w in scenario.workloads} - {"poisson", "nhpp", "trace"})
    return f"{', '.join(kinds)} arrivals have no offered rate to scale" if kinds else ""


def scale_load(scenario: Scenario, factor: float) -> Scenario:
    """``scenario`` with every workload's offered rate multiplied by ``factor``."""
    sets = {}
    for i, w in enumerate(scenario.workloads):
        a = w.arrivals
        if a.kind == "trace":
            sets[f"workloads.{i}.arrivals.rate_scale"] = a.rate_scale * factor
        else:
            sets[f"workloads.{i}.arrivals.rate_per_s"] = a.rate_per_s * factor
    return with_overrides(scenario, sets)


def _load_edge(holds: Callable[[float], bool], upward: bool) -> tuple[float, float | None]:
    """``(a, b)``: the bracket around the load factor where ``holds`` turns false, going up
    (``upward``) or down from 1, where it holds: true at ``a``, false at ``b`` (None: still
    true at the last step)."""
    step = 1.25 if upward else 0.8
    ok, bad = 1.0, None
    for k in range(1, LOAD_STEPS + 1):
        x = step ** k
        if holds(x):
            ok = x
        else:
            bad = x
            break
    if bad is None:
        return ok, None
    while max(ok, bad) / min(ok, bad) - 1.0 > LOAD_TOL:
        mid = float(np.sqrt(ok * bad))
        if holds(mid):
            ok = mid
        else:
            bad = mid
    return ok, bad


def load_note(r: CapacityResult) -> str:
    """One line: between which load factors the answer holds."""
    lr = r.load_range
    n = lr["replicas"]
    up, down = lr["up"], lr["down"]
    parts = []
    if up["misses"] is None:
        parts.append(f"{n} replicas still meet every target at x{up['meets']:.3g} the offered load (the largest tried)")
    else:
        parts.append(f"{n} replicas meet every target up to x{up['meets']:.3g} the offered load "
                     f"and miss at x{up['misses']:.3g}: above it, at least one more replica")
    if down is None:
        parts.append("no smaller fleet exists (1 replica)")
    elif down["fewer_meets"] is None:
        parts.append(f"{n - 1} replicas miss even at x{down['fewer_misses']:.3g} (the smallest tried)")
    else:
        parts.append(f"{n - 1} replicas are enough at x{down['fewer_meets']:.3g} "
                     f"(miss at x{down['fewer_misses']:.3g})")
    return "; ".join(parts) + f" (bisection, {100 * lr['tolerance']:.0f} % resolution)"


# economics fields averaged over the replications at the answer (from ``summary["economics"]``)
COST_FIELDS = ("revenue_eur", "costs_eur", "margin_eur", "margin_share", "cost_eur_per_mtok",
               "cost_eur_per_mtok_output")


def _cost(summaries: list[dict] | None) -> tuple[dict | None, str]:
    """Cost and margin of the answer, read from the ledger block (``summary["economics"]``,
    attached by ``sim.study.run.run`` through ``sim.economics.attach.WorldEconomics``) of the R runs that
    were already made at the smallest feasible replica count: no extra run.  Each field is the
    mean and 95% CI over replications; ``*_eur`` totals cover the simulated horizon and the
    whole fleet of the scenario (every deployment, not only the scope), costed by its
    contracts (on-demand rental when the scenario has none).  ``costs_eur_per_h`` scales the
    cost to one hour of simulated time (over the run's ``duration_s``)."""
    if not summaries:
        return None, "no cost: no replica count met the targets"
    econ = [s_.get("economics") for s_ in summaries]
    if any(not e for e in econ):
        return None, "no cost: the run summaries carry no economics block from the ledger (sim.economics.ledger)"
    out: dict[str, Any] = {"replications": len(econ), "source": "sim.economics.ledger via sim.study.run.run, runs at the answer"}
    for f in COST_FIELDS:
        vals = np.array([np.nan if e.get(f) is None else float(e[f]) for e in econ])
        m, lo, hi = mean_ci95(vals)
        out[f] = {"mean": m, "ci95_lo": lo, "ci95_hi": hi}
    # the ledger closes when the run ends (``duration_s``: the horizon, or later while draining)
    dur = np.array([float(s_.get("duration_s") or s_.get("horizon_s") or np.nan) for s_ in summaries])
    m, lo, hi = mean_ci95(np.array([e["costs_eur"] for e in econ], dtype=float) / dur * 3600.0)
    out["costs_eur_per_h"] = {"mean": m, "ci95_lo": lo, "ci95_hi": hi}
    c, mg = out["costs_eur"], out["margin_share"]
    note = (f"cost over the horizon EUR {c['mean']:.2f} [{c['ci95_lo']:.2f}, {c['ci95_hi']:.2f}] "
            f"(EUR {out['costs_eur_per_h']['mean']:.2f}/h), margin share {mg['mean']:.3f} "
            f"[{mg['ci95_lo']:.3f}, {mg['ci95_hi']:.3f}], "
            f"EUR {out['cost_eur_per_mtok']['mean']:.3f} per million tokens (input+output); "
            f"whole fleet, from the ledger, mean [95% CI] over {len(econ)} replications")
    return out, note


def evaluation_rows(r: CapacityResult) -> list[dict[str, Any]]:
    """One row per evaluated fleet size: replicas, GPUs, feasible, and each vertical's
    attainment mean and 95 % interval (``<vertical>_attainment_mean / _ci95_lo / _ci95_hi``)."""
    rows = []
    for e in r.evaluations:
        row: dict[str, Any] = {"replicas": e.replicas, "gpus": e.gpus, "feasible": e.feasible}
        for v, (m, lo, hi) in sorted(e.attainment.items()):
            row[f"{v}_attainment_mean"], row[f"{v}_attainment_ci95_lo"], row[f"{v}_attainment_ci95_hi"] = m, lo, hi
        rows.append(row)
    return rows


def _write(out: Path, r: CapacityResult) -> None:
    rows = evaluation_rows(r)
    atomic_write_json(out / "capacity.json", {
        "scope": r.scope, "deployments": r.deployments, "targets": r.targets,
        "replicas": r.replicas, "gpus": r.gpus, "cost": r.cost, "cost_note": r.cost_note,
        "evaluations": json.loads(json.dumps(rows, allow_nan=True)),
        "load_range": r.load_range, "load_note": r.load_note,
    })
    import pandas as pd

    write_atomic(out / "capacity_evaluations.csv", lambda t: pd.DataFrame(rows).to_csv(t, index=False))
    write_atomic(out / "capacity.png", lambda t: capacity_figure(r, t))


def capacity_figure(r: CapacityResult, path: Path) -> None:
    """Attainment per vertical against the scope's GPUs (mean, 95 % CI bars), targets dashed,
    the answer marked (module docstring)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    gpus = np.array([e.gpus for e in r.evaluations], dtype=float)
    for k, v in enumerate(sorted(r.targets)):
        color = f"C{k % 10}"
        m = np.array([e.attainment[v][0] for e in r.evaluations])
        lo = np.array([e.attainment[v][1] for e in r.evaluations])
        hi = np.array([e.attainment[v][2] for e in r.evaluations])
        err = np.vstack([np.where(np.isfinite(lo), m - lo, 0.0), np.where(np.isfinite(hi), hi - m, 0.0)])
        ax.errorbar(gpus, m, yerr=err, fmt="o-", color=color, capsize=3, lw=1, label=f"{v}")
        ax.axhline(r.targets[v], color=color, ls="--", lw=0.9, label=f"{v} target {r.targets[v]:g}")
    if r.gpus is not None:
        ax.axvline(r.gpus, color="k", ls=":", lw=1, label=f"smallest fleet: {r.gpus} GPUs")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel(f"GPUs in scope ({r.scope}: replicas x TP)")
    ax.set_ylabel("SLA attainment (share of requests meeting TTFT and TPOT)")
    ax.set_title("Capacity search: attainment per vertical (mean, 95 % CI over replications)", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
