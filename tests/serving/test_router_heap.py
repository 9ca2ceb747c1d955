"""The router's least-loaded heaps give exactly what a scan over the eligible list gives:
the first up-and-accepting replica with the fewest outstanding tokens (and, for the
central queue, a free sequence slot), through failures, repairs, drains, arrivals and
retirements of capacity."""
from __future__ import annotations

import numpy as np
import pytest

from sim.scenario import scenario_from_dict
from sim.serving.router import Router
from sim.serving.world import World


def fleet(policy: str, replicas: int = 6):
    dep = {"model": "m", "batching": {"max_num_seqs": 3, "max_batched_tokens": 256},
           "step_time": {"kind": "constant", "decode_step_s": 0.02, "prefill_per_token_s": 1e-4,
                         "kv_cache_tokens": 50_000}}
    return scenario_from_dict({
        "name": "router",
        "simulation": {"horizon_s": 200.0, "request_sample_size": 0},
        "router": {"policy": policy, "max_wait_s": 30.0},
        "deployments": [{"name": "a", "replicas": replicas, **dep},
                        {"name": "b", "replicas": 2, **dep, "model": "n"}],
        "workloads": [
            {"name": "w1", "model": "m", "arrivals": {"kind": "poisson", "rate_per_s": 8.0},
             "prompt_tokens": {"dist": "lognormal", "mu": 4.5, "sigma": 0.8, "max": 2000},
             "output_tokens": {"dist": "geometric", "mean": 40}},
            {"name": "w2", "model": "m", "arrivals": {"kind": "poisson", "rate_per_s": 4.0},
             "prompt_tokens": {"dist": "lognormal", "mu": 5.0, "sigma": 0.5, "max": 2000},
             "output_tokens": {"dist": "geometric", "mean": 20}},
            {"name": "w3", "model": "n", "arrivals": {"kind": "poisson", "rate_per_s": 3.0},
             "prompt_tokens": {"dist": "constant", "value": 100},
             "output_tokens": {"dist": "geometric", "mean": 30}},
        ],
    })


def scan(world, w: int, need_slot: bool):
    """Today's choice by a scan: first minimum of outstanding tokens in eligible order."""
    best = None
    for rep in world.router.eligible[w]:
        if not (rep.up and rep.accepting) or (need_slot and rep.free_slots() <= 0):
            continue
        if best is None or rep.outstanding_tokens < best.outstanding_tokens:
            best = rep
    return best


@pytest.mark.parametrize("policy", ["least_outstanding", "central_queue"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_heap_choice_equals_scan_through_fleet_changes(policy, seed, monkeypatch):
    monkeypatch.setattr(Router, "heap_min_replicas", 0)   # heaps even for small groups
    world = World(fleet(policy), seed)
    router = world.router
    rng = np.random.default_rng(seed)
    central = policy == "central_queue"
    checks = 0
    for step in range(1, 401):
        world.env.run(until=step * 0.5)
        u = rng.random()
        live = [r for r in world.replicas if r.retired_s is None]
        rep = live[int(rng.integers(len(live)))]
        if u < 0.08:
            world.fail_replica(rep.index)
        elif u < 0.20:
            world.repair_replica(rep.index)
        elif u < 0.23 and rep.accepting and len(live) > 3:
            world.drain_replica(rep.index)
        elif u < 0.26 and len(live) > 3:
            world.retire_replica(rep.index)
        elif u < 0.30:
            world.add_replica(int(rng.integers(2)))
        for w in range(len(world.workloads)):
            got = router.group[w].best(central)
            assert got is scan(world, w, central), (step, w)
            checks += 1
        # every candidate list is today's filtered eligible list
        for w in range(len(world.workloads)):
            assert router.cands[w] == [c for c in router.eligible[w] if c.up and c.accepting]
    s = world.summary()
    assert checks == 1200
    assert s["residency_violations"] == 0
    assert s["arrivals"] == s["completed"] + s["rejected"] + s["in_flight"]
    # heaps stay bounded: stale keys are compacted away
    for g in router.groups:
        assert len(g.heap) <= 2 * len(g.members) + 64


@pytest.mark.parametrize("policy", ["least_outstanding", "central_queue"])
def test_heap_and_scan_runs_are_identical(policy, monkeypatch):
    """A whole run with heaps for every group equals one that scans every group, and a
    group that grows past the threshold mid-run switches without changing anything."""
    sc = fleet(policy, replicas=10)

    def summary(heap_min, grow):
        monkeypatch.setattr(Router, "heap_min_replicas", heap_min)
        world = World(sc, 9)
        for step in range(1, 201):
            world.env.run(until=step)
            if step % 40 == 0:
                world.fail_replica(step // 40)
            if step % 40 == 20:
                world.repair_replica(step // 40)
            if grow and step % 30 == 0:
                world.add_replica(0)
        return world.summary(), world

    for grow in (False, True):
        a, wa = summary(0, grow)
        b, wb = summary(10**9, grow)
        c, wc = summary(12, grow)    # scans until the group reaches 12 replicas
        assert a == b == c
        assert all(g.heaped for g in wa.router.groups)
        assert not any(g.heaped for g in wb.router.groups)
        if grow:
            assert wc.router.group[0].heaped and not wc.router.group[2].heaped
