"""Traffic of a forecast month, estimated from sampled windows.

Requests at full scale cannot be simulated for three years, so each month's traffic is
simulated in ``windows_per_month`` windows of ``window_s`` seconds (after ``warmup_s`` of
warm-up), one tenant per sovereign contract in force, on the month's fleet.  Window ``k``
starts at hour-of-week ``(k + u) * 168 / windows_per_month`` with ``u`` uniform per month
(stratified sampling of the week, so the diurnal and weekly profile is covered without
bias); ``continuous = true`` instead simulates the whole month.  Window statistics scale to
the month by ``period_s / (windows * window_s)``: requests, tokens and revenue are sums,
utilisation and attainment are ratios of sums.

Windows are independent simulations (queues start empty, warm-up discarded);
``tests/forecast/test_forecast.py`` checks that windowed and continuous runs agree on
stationary demand.
"""
from __future__ import annotations

import ctypes
import gc

import simpy

from sim.core.rng import RandomStreams
from sim.demand.verticals import vertical_workload
from sim.scenario import Scenario, WorkloadSpec, scenario_from_dict
from sim.serving.fluid import LengthMoments, probe_replica, replica_request_capacity
from sim.serving.residency import site_allows
from sim.serving.world import World

HOUR_S = 3600.0
WEEK_H = 168.0


def tenant_workload(contract, spec) -> dict:
    """A workload table for one sovereign contract (the vertical's demand defaults), named
    ``c<contract id>``; ``spec`` is the scenario's ``[forecast]`` block (its ``model``)."""
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


def window_load_stats(world: World, done_at_warmup: list[int]) -> tuple[dict, dict]:
    """Per site, and per deployment ``(site, name)``, after the warm-up: requests completed and
    the requests the replicas could have completed at full batch for the window's length mix
    (:func:`sim.serving.fluid.replica_request_capacity`): request utilisation; per site
    also busy GPU-seconds.  One pass over the replicas, one fluid capacity per deployment."""
    warm = world.scenario.simulation.warmup_s
    now = world.env.now
    span = now - warm if warm > 0 else now
    mix = LengthMoments.of_streams(world.metrics.streams)
    deps = world.scenario.deployments
    sites: dict[str, dict[str, float]] = {}
    by_dep: dict[tuple[str, str], dict[str, float]] = {}
    caps: dict[int, float] = {}   # deployment index -> replica request capacity
    for rep in world.replicas:
        st = sites.setdefault(rep.site or "-", {"busy_gpu_s": 0.0, "completed": 0.0, "capacity_requests": 0.0})
        dep = deps[rep.deployment]
        dt = by_dep.setdefault((dep.site or "-", dep.name), {"completed": 0.0, "capacity_requests": 0.0})
        b = world.metrics.busy[rep.index]
        st["busy_gpu_s"] += ((sum(b[1:]) if warm > 0 else sum(b)) + rep.partial_run(now)[0]) * rep.gpus
        done = rep.completed - done_at_warmup[rep.index]
        st["completed"] += done
        dt["completed"] += done
        if mix is not None:
            if rep.deployment not in caps:
                caps[rep.deployment] = replica_request_capacity(rep, mix)
            st["capacity_requests"] += caps[rep.deployment] * span
            dt["capacity_requests"] += caps[rep.deployment] * span
    return sites, by_dep


def window_site_stats(world: World, done_at_warmup: list[int]) -> dict[str, dict[str, float]]:
    """The per-site half of :func:`window_load_stats`."""
    return window_load_stats(world, done_at_warmup)[0]


def _new_workload_acc() -> dict:
    return {"measured": 0, "met": 0.0, "met_requests": 0, "prompt_tokens": 0, "output_tokens": 0, "arrivals": 0,
            "completed": 0, "rejected": 0}


_CAPACITY: dict[str, float] = {}   # request capacity of a replica per deployment spec (pure, cached)


def portfolio_shares(scenario: Scenario, rule=None) -> dict[str, float]:
    """Each served model's share of the fleet's request capacity (at the sites residency
    ``rule`` allows, if given): its replicas' fluid request capacity
    (:func:`sim.serving.fluid.replica_request_capacity`, general-vertical length
    moments) over the fleet's."""
    sites = {s_.name: s_ for s_ in scenario.sites}
    deps = [d for d in scenario.deployments if d.replicas > 0 and (
        rule is None or site_allows(sites.get(d.site) if d.site else None, rule))]
    models = {d.model for d in deps}
    if len(models) <= 1:
        return dict.fromkeys(models, 1.0)
    spec = WorkloadSpec.model_validate(vertical_workload("general", "probe", 1.0))
    lengths = LengthMoments.of_laws(spec.prompt_tokens.build(), spec.output_tokens.build())
    cap: dict[str, float] = {}
    for d in deps:
        key = d.model_dump_json()
        if key not in _CAPACITY:
            _CAPACITY[key] = replica_request_capacity(probe_replica(simpy.Environment(), d), lengths)
        cap[d.model] = cap.get(d.model, 0.0) + _CAPACITY[key] * d.replicas
    total = sum(cap.values())
    return {m: c / total for m, c in cap.items()} if total > 0 else {}


def portfolio_workloads(workloads: list[dict], shares: dict[str, float], scenario: Scenario) -> list[dict]:
    """A fleet serving several models: each tenant's requests spread over the portfolio,
    one workload ``<tenant>@<model>`` per model some site its residency allows serves, at
    ``shares[model]`` of its rate renormalised over those models (assumption: the provider
    steers each tenant over its portfolio in proportion to each model's request capacity in
    force, :func:`portfolio_shares`, so every model runs at about the same load); with one
    model (or none) the tenants are unchanged."""
    if len(shares) <= 1:
        return workloads
    out = []
    by_rule: dict[str, dict[str, float]] = {}
    for w in workloads:
        rule = WorkloadSpec.model_validate(w).residency
        key = rule.model_dump_json()
        if key not in by_rule:   # the capacity of each model at the sites this rule allows
            by_rule[key] = {m: sh for m, sh in portfolio_shares(scenario, rule).items() if m in shares}
        ok = by_rule[key]
        total = sum(ok.values())
        for model, share in ok.items():
            v = dict(w, name=f"{w['name']}@{model}", model=model)
            v["arrivals"] = dict(w["arrivals"], rate_per_s=w["arrivals"]["rate_per_s"] * share / total)
            out.append(v)
    return out


def tenant_of(workload_name: str) -> str:
    """The tenant (``c<contract id>``) a window workload belongs to."""
    return workload_name.split("@", 1)[0]


def fleet_slice(base: Scenario, workloads: list[dict], max_replicas: int):
    """One slice of a large fleet, as the cells of :mod:`sim.study.cells` shard it: at each
    site, ``K = ceil(replicas / max_replicas)`` cells; the slice holds one cell per site
    (each deployment's replicas / K, rounded, at least 1) and each workload at its share of
    the GPUs it may use (residency held), the share a front router splitting arrivals in
    proportion to usable GPUs sends it (a random split of a Poisson/NHPP stream is again
    one, at the shared rate).  Returns ``(slice scenario, workloads at their slice rates,
    per-workload weight 1/share, per-site weight GPUs / slice GPUs)``; totals measured on the
    slice times these weights estimate the fleet's (cells of a site differ only by the
    rounding of their replica counts)."""
    d = base.model_dump(mode="python", exclude={"market", "workloads"})   # the windows' workloads come apart
    site_reps: dict = {}
    for dep in base.deployments:
        site_reps[dep.site] = site_reps.get(dep.site, 0) + dep.replicas
    site_gpus: dict = {}
    slice_gpus: dict = {}
    for dep, dd in zip(base.deployments, d["deployments"]):
        k = max(1, -(-site_reps[dep.site] // max_replicas))
        dd["replicas"] = max(1, round(dep.replicas / k)) if dep.replicas > 0 else 0
        key = dep.site or "-"
        site_gpus[key] = site_gpus.get(key, 0) + dep.gpus
        slice_gpus[key] = slice_gpus.get(key, 0) + dd["replicas"] * dep.tp
    sliced = scenario_from_dict(d, "forecast slice")
    sites = {s_.name: s_ for s_ in base.sites}
    ws, weights = [], {}
    for w in workloads:
        rule = WorkloadSpec.model_validate(w).residency
        full = part = 0
        for dep, sdep in zip(base.deployments, sliced.deployments):
            if dep.model == w["model"] and site_allows(sites.get(dep.site) if dep.site else None, rule):
                full += dep.gpus
                part += sdep.gpus
        if full == 0 or part == 0:
            continue
        v = dict(w)
        v["arrivals"] = dict(w["arrivals"], rate_per_s=w["arrivals"]["rate_per_s"] * part / full)
        ws.append(v)
        weights[w["name"]] = full / part
    site_w = {k: site_gpus[k] / slice_gpus[k] for k in site_gpus if slice_gpus.get(k)}
    return sliced, ws, weights, site_w


def simulate_window(wsc: Scenario | str, seed: int, site_stats: bool = True) -> dict:
    """Simulate one traffic window (a picklable task for any ``concurrent.futures.Executor``:
    ``wsc`` may be the window's scenario as JSON) and return what its month needs: per
    workload, the counts measured after the warm-up; busy GPU-seconds; per-site statistics
    (with ``site_stats``); residency violations; the window's p99 TTFT.

    Memory: a world holds reference cycles (its environment, processes and replicas), so
    without a collection it would outlive the window until Python's next full collection,
    and a forecast's peak memory would grow with the number of tenants (each stream's
    latency histograms).  The objects alive before the window are frozen out of the
    collector (``gc.freeze``), so the collection after it scans only the window's own
    objects (milliseconds)."""
    if isinstance(wsc, str):
        wsc = Scenario.model_validate_json(wsc)
    mine = gc.get_freeze_count() == 0   # never unfreeze what a caller froze
    if mine:
        gc.freeze()
    try:
        out = _run_window(wsc, seed, site_stats)
        gc.collect()
    finally:
        if mine:
            gc.unfreeze()
    _trim()
    return out


def _libc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):   # not glibc: nothing to trim
        return None


_MALLOC_TRIM = _libc_trim()


def _trim() -> None:
    """Hand the window's freed heap back to the system (glibc ``malloc_trim``): its many
    small arrays (four latency histograms per workload) otherwise leave the heap fragmented
    at its largest window.  No effect on results."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _run_window(wsc: Scenario, seed: int, site_stats: bool) -> dict:
    world = World(wsc, seed)
    done_at_warmup = None
    if site_stats:
        if wsc.simulation.warmup_s > 0:
            world.env.run(until=wsc.simulation.warmup_s)
        done_at_warmup = [r.completed for r in world.replicas]
    world.run()
    # load and busy time over the window itself, before the drain
    sites, deployments = window_load_stats(world, done_at_warmup) if site_stats else ({}, {})
    busy = window_busy_gpu_s(world)
    drain_window(world, wsc.simulation.horizon_s - wsc.simulation.warmup_s)
    s = world.summary()
    keep = ("measured_rejected", "measured", "inflight_missed", "sla_attainment", "measured_prompt_tokens",
            "measured_output_tokens", "measured_arrivals")
    return {"busy_gpu_s": busy,
            "sites": sites, "deployments": deployments,   # per deployment: sim/forecast/sites.py
            "workloads": {name: {k: ws[k] for k in keep} for name, ws in s["workloads"].items()},
            "residency_violations": s["residency_violations"], "ttft_p99": s["ttft_s"]["p99"]}


DRAIN_STEP_S = 2.0   # run setting: how often the drain looks whether the measured requests are done


def drain_window(world: World, cap_s: float) -> float:
    """Run a window past its horizon (no arrivals come after it) until every request that
    arrived after the warm-up and is still in flight has finished, for at most ``cap_s``
    simulated seconds; returns the seconds drained.

    Without it a window bills only the requests that complete inside it: the ones still
    generating at the horizon (3 % of the small forecast's measured requests, 10 % of the
    provider's 30-s windows, the longest ones most) lost their tokens and were left out of
    SLA attainment unless already late.  During the drain no new request competes with
    them, so their remaining latency is a little optimistic; requests still in flight after
    ``cap_s`` (an overloaded window) are judged as before at the end
    (:meth:`sim.serving.metrics.Metrics.count_inflight_misses`).  The window's load and busy
    time are read at the horizon, before the drain."""
    warm = world.scenario.simulation.warmup_s
    start = world.env.now
    end = start + cap_s
    t = start
    while t < end and any(r.arrival_s >= warm for r in world.in_flight()):
        t = min(end, t + DRAIN_STEP_S)
        world.env.run(until=t)
    return t - start


def simulate_period(base: Scenario, workloads: list[dict], period_s: float, windows: int,
                    window_s: float, warmup_s: float, phase: float, seed_of, continuous: bool = False,
                    site_stats: bool = True, executor=None, max_replicas: int | None = None) -> dict:
    """Estimate one period (a month) of traffic from ``windows`` sampled windows.

    Window ``k`` starts at hour-of-week ``(k + phase) * 168 / windows``; totals scale by
    ``period_s / (windows * window_s)``.  ``continuous`` simulates the whole period once
    instead.  Returns per-workload sums (unscaled), fleet busy/GPU seconds, the busy share
    (``gpu_utilisation``) and, with ``site_stats`` (the default), per-site busy time and
    request counts and the fleet's ``request_utilisation`` (requests completed after the
    warm-up / what the replicas could complete at full batch, as single runs define it).

    The windows of a period are independent given its fleet and tenants (each has its own
    seed, ``seed_of(k)``, and starts from an empty system), so with ``executor`` (any
    ``concurrent.futures.Executor``: a process pool, Dask) they run in parallel; their
    results are combined in window order, so the period's sums are the same as in this
    process, to the last bit.

    ``max_replicas`` (a forecast's ``[cells]``): each window simulates one slice of the fleet
    (:func:`fleet_slice`), one cell per site, and its totals are scaled to the fleet."""
    if continuous:
        windows, window_s = 1, period_s
    out = {"scale": period_s / (windows * window_s), "workloads": {}, "arrivals": 0, "completed": 0,
           "rejected": 0, "busy_gpu_s": 0.0, "gpu_s": 0.0, "ttft_p99": [], "residency_violations": 0,
           "window_s": window_s, "windows": windows, "sites": {}, "deployments": {}}
    gpus = sum(d.gpus for d in base.deployments)
    weights = site_w = None
    sim_base = base
    if max_replicas is not None:
        sim_base, workloads, weights, site_w = fleet_slice(base, workloads, max_replicas)
        site_stats = True   # the fleet's busy time is scaled per site
    tasks = []   # (scenario of the window, its seed), in window order
    for k in range(windows):
        how = 0.0 if continuous else (k + phase) * WEEK_H / windows
        wsc = window_scenario(sim_base, workloads, how, window_s, 0.0 if continuous else warmup_s)
        out["gpu_s"] += gpus * window_s
        if wsc is not None:
            tasks.append((wsc, seed_of(k)))
    if executor is None:
        results = [simulate_window(wsc, seed, site_stats) for wsc, seed in tasks]
    else:
        n = len(tasks)
        results = list(executor.map(simulate_window, [wsc.model_dump_json() for wsc, _ in tasks],
                                    [seed for _, seed in tasks], [site_stats] * n))
    for r in results:
        if weights is not None:
            out["simulated_arrivals"] = out.get("simulated_arrivals", 0) + sum(
                ws["measured_arrivals"] for ws in r["workloads"].values())
            r = _scaled(r, weights, site_w)
        out["busy_gpu_s"] += r["busy_gpu_s"]
        if site_stats:
            for site, st in r["sites"].items():
                acc_s = out["sites"].setdefault(site, {"busy_gpu_s": 0.0, "completed": 0.0, "capacity_requests": 0.0})
                for k_, v_ in st.items():
                    acc_s[k_] += v_
            for key, st in r.get("deployments", {}).items():   # per deployment (sim/forecast/sites.py)
                acc_d = out["deployments"].setdefault(key, {"completed": 0.0, "capacity_requests": 0.0})
                for k_, v_ in st.items():
                    acc_d[k_] += v_
        for name, ws in r["workloads"].items():
            # only what arrived after the warm-up is measured and scaled
            acc = out["workloads"].setdefault(name, _new_workload_acc())
            n_rej = ws["measured_rejected"]
            measured = ws["measured"] + n_rej + ws["inflight_missed"]
            acc["measured"] += measured
            acc["met"] += (ws["sla_attainment"] or 0.0) * measured
            # the count itself (attainment = met / measured of whole requests), for the ledger
            acc["met_requests"] += round((ws["sla_attainment"] or 0.0) * measured)
            acc["prompt_tokens"] += ws["measured_prompt_tokens"]
            acc["output_tokens"] += ws["measured_output_tokens"]
            acc["arrivals"] += ws["measured_arrivals"]
            acc["completed"] += ws["measured"]
            acc["rejected"] += n_rej
            out["arrivals"] += ws["measured_arrivals"]
            out["completed"] += ws["measured"]
            out["rejected"] += n_rej
        out["residency_violations"] += r["residency_violations"]
        if r["ttft_p99"] is not None:
            out["ttft_p99"].append(r["ttft_p99"])
    out["gpu_utilisation"] = out["busy_gpu_s"] / out["gpu_s"] if out["gpu_s"] else 0.0
    cap = sum(st["capacity_requests"] for st in out["sites"].values())
    out["request_utilisation"] = (sum(st["completed"] for st in out["sites"].values()) / cap
                                  if site_stats and cap > 0 else None)
    n = sum(a["measured"] for a in out["workloads"].values())
    out["sla_attainment"] = (sum(a["met"] for a in out["workloads"].values()) / n) if n else None
    return out


def _scaled(r: dict, weights: dict[str, float], site_w: dict[str, float]) -> dict:
    """A slice's window result scaled to the fleet: each workload's counts by its weight
    (rounded to whole requests and tokens), each site's statistics by its GPU ratio."""
    counts = ("measured_rejected", "measured", "inflight_missed", "measured_prompt_tokens",
              "measured_output_tokens", "measured_arrivals")
    wl = {}
    for name, ws in r["workloads"].items():
        f = weights.get(name, 1.0)
        wl[name] = dict(ws, **{k: round(ws[k] * f) for k in counts})
    sites = {site: {k: v * site_w.get(site, 1.0) for k, v in st.items()} for site, st in r["sites"].items()}
    deps = {key: {k: v * site_w.get(key[0], 1.0) for k, v in st.items()} for key, st in r.get("deployments", {}).items()}
    return dict(r, workloads=wl, sites=sites, deployments=deps, busy_gpu_s=sum(st["busy_gpu_s"] for st in sites.values()))


def window_seed(streams: RandomStreams, month: int, k: int) -> int:
    """The seed of window ``k`` of ``month`` (its own named stream)."""
    return int(streams.seed_sequence(f"forecast/window/{month}/{k}").generate_state(1)[0])
