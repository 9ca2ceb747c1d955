"""Cells: the plan conserves the fleet and the offered load; an exact cell run is the sum of
its cells; a sampled run's intervals cover the exact fleet values at about their nominal
rate over many seeds (not one lucky run)."""
from __future__ import annotations

import pytest

from sim.core.errors import UserError
from sim.scenario import scenario_from_dict
from sim.study.cells import (cell_seed, estimate, interval_coverage, plan_cells, run_cell, cell_scenario,
                             run_cells)


def fleet(replicas: int = 32, rate_per_replica: float = 9.0, horizon_s: float = 60.0, sites: int = 1):
    deps = [{"name": f"d{i}", "model": "m", "replicas": replicas // sites, "site": f"s{i}",
             "batching": {"max_num_seqs": 16},
             "step_time": {"kind": "constant", "decode_step_s": 0.02, "prefill_per_token_s": 2e-5,
                           "kv_cache_tokens": 200000}} for i in range(sites)]
    return scenario_from_dict({
        "name": "fleet",
        "simulation": {"horizon_s": horizon_s, "warmup_s": 10.0, "request_sample_size": 0,
                       "timeseries_interval_s": horizon_s},
        "sites": [{"name": f"s{i}", "jurisdiction": "FR" if i == 0 else "DE"} for i in range(sites)],
        "deployments": deps,
        "workloads": [
            {"name": "w", "model": "m", "arrivals": {"kind": "poisson", "rate_per_s": rate_per_replica * replicas},
             "prompt_tokens": {"dist": "geometric", "mean": 400}, "output_tokens": {"dist": "geometric", "mean": 60}},
            {"name": "fr-only", "model": "m", "arrivals": {"kind": "poisson", "rate_per_s": 1.0},
             "residency": {"allowed_jurisdictions": ["FR"]},
             "prompt_tokens": {"dist": "constant", "value": 100}, "output_tokens": {"dist": "constant", "value": 10}}]})


def test_plan_conserves_replicas_and_load_and_residency():
    sc = fleet(replicas=40, sites=2)
    cells = plan_cells(sc, max_replicas=6)
    assert all(sum(c.replicas) <= 6 for c in cells)
    assert [sum(c.replicas[d] for c in cells) for d in range(2)] == [20, 20]
    for wi, w in enumerate(sc.workloads):
        assert sum(c.rates_per_s[wi] for c in cells) == pytest.approx(w.arrivals.rate_per_s, rel=1e-12)
    # the FR-only tenant is only offered to cells at the French site
    for c in cells:
        assert (c.rates_per_s[1] > 0) == (c.site == "s0")
    assert len(cells) == 2 * 4   # ceil(20 / 6) cells per site


def test_exact_run_is_the_sum_of_its_cells():
    sc = fleet(replicas=8, horizon_s=30.0)
    res = run_cells(sc, seed=3, max_replicas=4)
    assert res.summary["exact"] and res.summary["cells"] == 2
    arrivals = 0.0
    for c in res.cells:
        one = run_cell(cell_scenario(sc, c).model_dump_json(), cell_seed(3, c.index))
        arrivals += one["totals"]["arrivals"]
    a = res.summary["arrivals"]
    assert a["value"] == arrivals == a["ci_low"] == a["ci_high"]
    assert res.summary["residency_violations"]["value"] == 0


def test_refuses_what_cannot_be_split():
    sc = fleet(replicas=4)
    with pytest.raises(UserError, match="sample must be >= 2"):
        run_cells(sc, seed=1, max_replicas=2, sample=1)
    off = sc.model_dump(mode="python")
    off["workloads"][0]["arrivals"] = {"kind": "offline", "count": 10}
    with pytest.raises(UserError, match="cells split only"):
        plan_cells(scenario_from_dict(off), 2)


def test_sampled_intervals_cover_the_exact_fleet():
    """16 exchangeable cells of 2 replicas; 4 sampled. The sampled cells are a subset of the
    exact run's (same seeds), so one exact run per seed gives both estimates."""
    sc = fleet(replicas=32, horizon_s=40.0)
    cells = plan_cells(sc, max_replicas=2)
    assert len(cells) == 16
    keys = [("arrivals",), ("completed",), ("request_utilisation",), ("gpu_hours",), ("ttft_s", "p99"), ("e2e_s", "p50")]
    hits = total = 0
    widths = []
    for seed in range(12):
        per_cell = {c.index: run_cell(cell_scenario(sc, c).model_dump_json(), cell_seed(seed, c.index)) for c in cells}
        exact = estimate(cells, per_cell, None)
        sampled = estimate(cells, per_cell, 4)
        for k in keys:
            e, s = exact, sampled
            for part in k:
                e, s = e[part], s[part]
            if k == ("gpu_hours",):   # a fixed fleet: no sampling error at all
                assert s["ci_low"] == s["value"] == e["value"] == s["ci_high"]
                continue
            total += 1
            hits += s["ci_low"] <= e["value"] <= s["ci_high"]
            if len(k) == 1:
                widths.append((s["ci_high"] - s["ci_low"]) / e["value"])
    # nominal 95 %: 60 intervals; fewer than 48 covering would be a 1-in-10^5 event
    assert hits >= 48, f"{hits}/{total} intervals cover the exact value"
    assert max(widths) < 0.3   # and the totals' intervals are informative


def test_interval_coverage_over_random_samples_of_an_exact_run():
    """Design-based coverage: 32 cells, 300 random 4-cell samples of each of four exact runs.
    The mean coverage of every 95 % interval is near nominal, and a fixed draw seed gives the
    same answer."""
    sc = fleet(replicas=64, horizon_s=40.0)
    cells = plan_cells(sc, max_replicas=2)
    runs = [{c.index: run_cell(cell_scenario(sc, c).model_dump_json(), cell_seed(seed, c.index)) for c in cells}
            for seed in range(4)]
    covs = [interval_coverage(cells, per_cell, 4, draws=300, seed=7) for per_cell in runs]
    assert covs[0] == interval_coverage(cells, runs[0], 4, draws=300, seed=7)
    for key in covs[0]:
        mean = sum(c[key]["coverage"] for c in covs) / len(covs)
        assert 0.85 <= mean <= 1.0, f"{key}: mean coverage {mean:.3f}"
    # the intervals are informative, and the sampled estimates are unbiased to within a few %
    assert all(c["arrivals"]["median_rel_width"] < 0.2 for c in covs)
    assert all(abs(c["tpot_s_p99"]["median_rel_error"]) < 0.03 for c in covs)


def test_windowed_cells_cover_the_offered_load_and_agree_with_continuous():
    """Each cell estimated from 4 sampled windows: the intervals (window and cell noise,
    no finite-population correction) cover the known offered arrivals lambda x horizon,
    and the windowed TTFT median sits within its interval of the continuous run's."""
    sc = fleet(replicas=8, horizon_s=600.0)
    offered = sum(w.arrivals.rate_per_s for w in sc.workloads) * 600.0
    hits = agree = 0
    seeds = range(8)
    for seed in seeds:
        win = run_cells(sc, seed=seed, max_replicas=2, windows=4, window_s=40.0, warmup_s=20.0).summary
        assert not win["exact"] and win["windows"] == 4
        a = win["arrivals"]
        assert a["ci_low"] < a["value"] < a["ci_high"]
        hits += a["ci_low"] <= offered <= a["ci_high"]
        cont = run_cells(sc, seed=seed, max_replicas=2).summary
        p = win["e2e_s"]["p50"]
        agree += p["ci_low"] <= cont["e2e_s"]["p50"]["value"] <= p["ci_high"]
    assert hits >= 6, f"{hits}/8 arrival intervals cover the offered load"
    assert agree >= 6, f"{agree}/8 windowed e2e medians agree with the continuous run"


def test_cells_share_their_site_contracts():
    d = fleet(replicas=16).model_dump(mode="python")
    d["sites"][0]["contracts"] = [{"kind": "rental", "name": "r", "gpus": 12, "term": "on_demand"},
                                  {"kind": "owned_colo", "name": "o", "gpus": 4}]
    sc = scenario_from_dict(d)
    cells = plan_cells(sc, 4)
    scs = [cell_scenario(sc, c) for c in cells]
    for name, gpus in (("r", 12), ("o", 4)):
        assert sum(c.gpus for s in scs for c in s.sites[0].contracts if c.name == name) == gpus
    # each cell is billed for its own GPUs: the cells' fixed costs add up to the fleet's
    from sim.study.run import run
    whole = run(sc, seed=1).summary["economics"]
    parts = [run_cell(s.model_dump_json(), 1)["totals"]["costs_eur"] for s in scs]
    # equal up to each cell's ledger rounding its accounts to the cent (and power, metered
    # from each cell's own busy time)
    assert sum(parts) == pytest.approx(whole["costs_eur"], abs=0.01 * 4 * 3)
