"""Failure processes: rates from the Llama 3 table, Poisson counts, nothing lost on failover."""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import simpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.economics.contracts import DAY_S, d
from sim.economics.faults import FaultConfig, FaultInjector, llama3_rates, pack_nodes
from sim.core.resources import model_file


class FakeReplica:
    def __init__(self, name, site, gpus):
        self.name, self.site, self.gpus, self.up = name, site, gpus, True
        self.fails = 0

    def fail(self, now, keep_generated=True):
        assert self.up
        self.up = False
        self.fails += 1
        return []

    def repair(self, now):
        assert not self.up
        self.up = True


def test_llama3_rates_arithmetic_and_csv_agree():
    r = llama3_rates()
    assert r.gpu_events == 148 + 72 + 19 + 17 + 6 + 6 == 268
    assert r.node_events == 7 + 3 + 3 + 2 + 2 + 2 + 2 + 35 + 32 == 88
    assert r.gpu_days == 16384 * 54 and r.node_days == 2048 * 54
    assert r.gpu_per_gpu_day == pytest.approx(3.029e-4, rel=1e-3)
    # the CSV's own summed row says the same
    with open(model_file("economics", "failures.csv"), newline="") as f:
        rows = {row["item"]: row for row in csv.DictReader(f)}
    summed = rows["Llama 3: GPU-attributed unexpected interruptions (sum of GPU categories)"]
    assert int(summed["value"]) == r.gpu_events
    # 419 unexpected = GPU + node rows + the software rows left out
    assert r.gpu_events + r.node_events + 54 + 2 + 7 == int(rows["Llama 3: unexpected interruptions"]["value"])


def test_pack_nodes():
    reps = [FakeReplica(f"r{i}", "a", g) for i, g in enumerate([2, 2, 4, 2, 8, 16, 1])]
    nodes = pack_nodes(reps, 8)
    assert [[r.name for r in n[0]] for n in nodes] == [["r0", "r1", "r2"], ["r3"], ["r4"], ["r5"], ["r5"], ["r6"]]


@pytest.mark.parametrize("seed", [1, 2])
def test_failure_counts_are_poisson_in_up_time(seed):
    """Over a long horizon the count of each kind of failure is within 4.5 sigma of its
    Poisson mean, rate x up-time (the compensator), and that mean is close to what the
    configured rate predicts from the horizon and the measured availability."""
    env = simpy.Environment()
    reps = [FakeReplica(f"{s}/{i}", s, 2) for s in ("par", "fra") for i in range(8)]
    # rates scaled up so that a simulated 20 years gives thousands of failures
    cfg = FaultConfig(gpu_rate_per_s=0.05 / DAY_S, node_rate_per_s=0.1 / DAY_S, gpus_per_node=8,
                      repair_median_s=6 * 3600.0, repair_sigma=1.0,
                      site_rate_per_s=2.0 / (365 * DAY_S), site_median_s=12 * 3600.0)
    downs, ups = [], []
    inj = FaultInjector(env, reps, cfg, np.random.default_rng(seed),
                        lambda r, t: (downs.append(t), r.fail(t)), lambda r, t: (ups.append(t), r.repair(t)))
    horizon = 20 * 365 * DAY_S
    env.run(until=horizon)
    exp = inj.expected_failures(horizon)
    for kind in ("gpu", "node", "site"):
        n, lam = inj.log.failures[kind], exp[kind]
        assert lam > 50
        assert abs(n - lam) <= 4.5 * math.sqrt(lam), (kind, n, lam)
    # the configured rate: GPU failures ~ rate x GPUs x horizon x (share of time the GPU group is up)
    avail = inj.availability(horizon)["replica_availability"]
    assert 0.9 < avail < 1.0
    lam_cfg = cfg.gpu_rate_per_s * sum(r.gpus for r in reps) * horizon * avail
    assert abs(inj.log.failures["gpu"] - lam_cfg) <= 4.5 * math.sqrt(lam_cfg)
    # every replica that went down came back or is down now, never twice down
    assert len(downs) - len(ups) == sum(not r.up for r in reps)


def test_site_outage_takes_down_every_replica_of_the_site_only():
    env = simpy.Environment()
    reps = [FakeReplica(f"{s}/{i}", s, 2) for s in ("par", "fra") for i in range(3)]
    cfg = FaultConfig(gpu_rate_per_s=0.0, node_rate_per_s=0.0, site_rate_per_s=1 / 1000.0,
                      site_median_s=100.0, site_sigma=0.1)
    seen = []
    FaultInjector(env, reps, cfg, np.random.default_rng(3), lambda r, t: (seen.append((t, r.site)), r.fail(t)),
                  lambda r, t: r.repair(t))
    env.run(until=5000.0)
    assert seen
    by_time = {}
    for t, s in seen:
        by_time.setdefault(t, set()).add(s)
    assert all(len(v) == 1 for v in by_time.values())
    assert sum(1 for t, s in seen) % 3 == 0


# ---------------------------------------------------------------- with the engine
def _scenario(rate, horizon, gpu_day, node_day, requeue, policy):
    from sim.scenario import scenario_from_dict
    return scenario_from_dict({
        "name": "faults-prop",
        "simulation": {"horizon_s": horizon, "seed": 1},
        "router": {"policy": policy, "max_wait_s": 1e9},
        "sites": [
            {"name": "par", "jurisdiction": "FR", "certifications": ["SecNumCloud"],
             "contracts": [{"kind": "owned_colo", "name": "own", "gpus": 4}]},
            {"name": "fra", "jurisdiction": "DE", "contracts": [{"kind": "rental", "name": "od", "gpus": 4}]},
        ],
        "deployments": [
            {"name": f"d-{s}", "site": s, "model": "mixtral-8x7b", "tp": 2, "replicas": 2,
             "step_time": {"kind": "constant", "decode_step_s": 0.02, "prefill_per_token_s": 1e-5,
                           "kv_cache_tokens": 200000}}
            for s in ("par", "fra")],
        "workloads": [
            {"name": "fr-only", "model": "mixtral-8x7b", "vertical": "public_sector",
             "arrivals": {"kind": "poisson", "rate_per_s": rate},
             "prompt_tokens": {"dist": "uniform", "low": 50, "high": 400},
             "output_tokens": {"dist": "uniform", "low": 20, "high": 300},
             "residency": {"allowed_jurisdictions": ["FR"], "required_certifications": ["SecNumCloud"]}},
            {"name": "anywhere", "model": "mixtral-8x7b", "vertical": "finance",
             "arrivals": {"kind": "poisson", "rate_per_s": rate},
             "prompt_tokens": {"dist": "uniform", "low": 50, "high": 400},
             "output_tokens": {"dist": "uniform", "low": 20, "high": 300}},
        ],
        "faults": {"enabled": True, "gpu_failures_per_gpu_day": gpu_day,
                   "node_failures_per_node_day": node_day, "repair_median_s": 60.0,
                   "site_outages_per_year": 0.0, "requeue": requeue},
    })


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rate=st.floats(2.0, 12.0), seed=st.integers(0, 10_000),
       gpu_day=st.floats(0.0, 400.0), node_day=st.floats(0.0, 300.0),
       requeue=st.sampled_from(["preserve", "recompute"]),
       policy=st.sampled_from(["least_outstanding", "round_robin", "central_queue"]),
       forced=st.lists(st.tuples(st.floats(1.0, 280.0), st.sampled_from(["gpu", "node", "site"]),
                                 st.integers(0, 3), st.floats(1.0, 120.0)), min_size=1, max_size=4))
def test_no_request_lost_across_failures(rate, seed, gpu_day, node_day, requeue, policy, forced):
    """Random Poisson failures plus forced ones (a replica's GPU, a node, a whole site):
    every arrival is completed or still in flight (none lost, none rejected since max_wait
    is unbounded), no residency violation, and completed requests are billed exactly once
    (revenue = tokens x price)."""
    from sim.economics.attach import WorldEconomics
    from sim.serving.world import World
    sc = _scenario(rate, 300.0, gpu_day, node_day, requeue, policy)
    world = World(sc, seed)
    econ = WorldEconomics(world)
    names = {"gpu": [r.name for r in world.replicas],
             "node": ["par/node0", "fra/node0", "par/node0", "fra/node0"], "site": ["par", "fra", "par", "fra"]}

    def forcer(t, kind, k, dur):
        yield world.env.timeout(t)
        econ.faults.force_failure(kind, names[kind][k], dur)
    for t, kind, k, dur in forced:
        world.env.process(forcer(t, kind, k, dur))
    done = []
    for rep in world.replicas:
        inner = rep.on_complete
        rep.on_complete = (lambda inner: lambda r, now: (done.append(r), inner(r, now)))(inner)
    world.run()
    s = world.summary()
    e = econ.finish()
    assert sum(e["availability"]["failures"].values()) > 0
    assert s["arrivals"] == s["completed"] + s["rejected"] + s["in_flight"]
    assert s["rejected"] == 0
    assert s["residency_violations"] == 0
    ids = [r.rid for r in done]
    assert len(ids) == len(set(ids)) == s["completed"]
    for r in done:                      # the FR rule held through every failover
        if r.workload == 0:
            assert world.replicas[r.replica].site == "par"
    tokens_in = sum(r.prompt_tokens for r in done)
    tokens_out = sum(r.output_tokens for r in done)
    assert e["prompt_tokens"] == tokens_in and e["output_tokens"] == tokens_out
    # default price (the sovereign list price, EUR 0.602 per 1M tokens); at most 8 revenue
    # accounts, each rounded once
    assert d("price_input_eur_per_mtok") == d("price_output_eur_per_mtok") == 0.602
    assert abs(e["revenue_cents"] - (tokens_in + tokens_out) * 0.602 / 1e4) <= 4
