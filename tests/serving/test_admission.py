"""Admission control: bounded queues and TTFT-based shedding, and their scenario fields."""
from __future__ import annotations

import pytest

from sim.scenario import ScenarioError, scenario_from_dict, with_overrides
from sim.serving.router import Router
from sim.serving.world import World
from sim.study.run import run


def overloaded(policy: str = "least_outstanding", **batching):
    """Two replicas (~6.4 requests/s together) offered 12 requests/s."""
    return scenario_from_dict({
        "name": "overload",
        "simulation": {"horizon_s": 120.0, "request_sample_size": 100_000},
        "router": {"policy": policy},
        "deployments": [{
            "name": "d", "model": "m", "replicas": 2,
            "batching": {"max_num_seqs": 4, "max_batched_tokens": 512, **batching},
            "step_time": {"kind": "constant", "decode_step_s": 0.02, "prefill_per_token_s": 1e-4,
                          "kv_cache_tokens": 200_000},
        }],
        "workloads": [{
            "name": "w", "model": "m", "arrivals": {"kind": "poisson", "rate_per_s": 12.0},
            "prompt_tokens": {"dist": "lognormal", "mu": 5.5, "sigma": 0.8, "max": 3000},
            "output_tokens": {"dist": "geometric", "mean": 60},
        }],
    })


def run_sliced(scenario, seed, check, slices=200):
    world = World(scenario, seed)
    horizon = scenario.simulation.horizon_s
    for i in range(1, slices + 1):
        world.env.run(until=horizon * i / slices)
        check(world)
    return world, world.summary()


def test_defaults_are_unbounded_and_explicit_none_changes_nothing():
    sc = overloaded()
    assert sc.router.max_queue is None and sc.router.ttft_shed_s is None
    assert sc.deployments[0].batching.max_waiting is None
    a = run(sc, seed=3).summary
    b = run(with_overrides(sc, {"deployments.0.batching.max_waiting": None}), seed=3).summary
    assert a == b
    assert a["rejected_by_reason"]["queue_full"] == 0 and a["rejected_by_reason"]["ttft_shed"] == 0
    assert a["in_flight"] > 100   # the overload is real: an unbounded queue builds up


@pytest.mark.parametrize("policy", ["least_outstanding", "power_of_two", "round_robin"])
def test_max_waiting_bounds_every_replica_queue(policy):
    sc = overloaded(policy, max_waiting=3)

    def check(world):
        for rep in world.replicas:
            assert len(rep.waiting) <= 3

    world, s = run_sliced(sc, 5, check)
    assert s["rejected_by_reason"]["queue_full"] > 50
    assert s["rejected"] == s["rejected_by_reason"]["queue_full"]
    assert s["arrivals"] == s["completed"] + s["rejected"] + s["in_flight"]
    assert s["in_flight"] <= 2 * (4 + 3)   # running plus waiting on each replica
    # the queue bound cuts waits: far shorter than with the unbounded queue
    unbounded = run(overloaded(policy), seed=5).summary
    assert s["wait_s"]["mean"] < 0.5 * unbounded["wait_s"]["mean"]


def test_central_queue_max_queue_bounds_the_router_queue():
    sc = with_overrides(overloaded("central_queue"), {"router.max_queue": 5})

    def check(world):
        assert len(world.router.queued()) <= 5

    _, s = run_sliced(sc, 2, check)
    assert s["rejected_by_reason"]["queue_full"] > 50
    assert s["arrivals"] == s["completed"] + s["rejected"] + s["in_flight"]


def test_ttft_shed_prediction_is_a_lower_bound_and_sheds():
    bound = 1.0
    sc = with_overrides(overloaded(), {"router.ttft_shed_s": bound})
    predicted: dict[int, float] = {}
    orig = Router.predicted_ttft_s

    def spy(self, r, rep):
        p = orig(self, r, rep)
        predicted[r.rid] = p
        return p

    Router.predicted_ttft_s = spy
    try:
        res = run(sc, seed=4)
    finally:
        Router.predicted_ttft_s = orig
    s = res.summary
    assert s["rejected_by_reason"]["ttft_shed"] > 20
    df = res.requests
    done = df[df["outcome"] == "completed"]
    assert len(done) > 100
    ttft = done["first_token_s"] - done["arrival_s"] + done["network_s"]
    pred = done["request_id"].map(predicted)
    assert pred.notna().all()
    assert (ttft >= pred - 1e-12).all()    # the predictor never overstates the TTFT
    assert (pred <= bound).all()           # nothing above the bound was admitted
    shed = df[(df["outcome"] == "rejected")]
    assert (shed["request_id"].map(predicted) > bound).all()
    # shedding keeps the admitted requests' TTFT far below the unbounded run's
    plain = run(overloaded(), seed=4).summary
    assert s["ttft_s"]["p90"] < 0.5 * plain["ttft_s"]["p90"]


def test_ttft_shed_below_any_prefill_sheds_everything_and_a_huge_bound_nothing():
    sc = overloaded()
    # the shortest prompt alone takes >= 1e-4 s to prefill
    s = run(with_overrides(sc, {"router.ttft_shed_s": 1e-6}), seed=1).summary
    assert s["completed"] == 0 and s["rejected_by_reason"]["ttft_shed"] == s["arrivals"]
    huge = run(with_overrides(sc, {"router.ttft_shed_s": 1e9}), seed=1).summary
    assert huge == run(sc, seed=1).summary


def test_failed_replicas_requests_are_requeued_past_the_bound():
    sc = overloaded(max_waiting=1)
    world = World(sc, 7)
    world.env.run(until=30.0)
    held = len(world.replicas[0].running) + len(world.replicas[0].waiting)
    assert held > 1
    def rejected():
        return sum(sum(st.rejected.values()) for st in world.metrics.streams)

    before = rejected()
    world.fail_replica(0)
    # the survivor takes every moved request although its queue bound is 1
    assert len(world.replicas[1].waiting) > 1
    assert rejected() == before


@pytest.mark.parametrize("override,needle", [
    ({"router.max_queue": 4}, "central_queue only"),
    ({"router.policy": "central_queue", "router.ttft_shed_s": 1.0}, "ttft_shed_s needs"),
    ({"router.ttft_shed_s": float("inf")}, "ttft_shed_s"),
    ({"router.ttft_shed_s": 0.0}, "ttft_shed_s"),
    ({"router.policy": "central_queue", "router.max_queue": -1}, "max_queue"),
    ({"router.policy": "central_queue", "router.max_queue": 2.5}, "max_queue"),
    ({"deployments.0.batching.max_waiting": "3"}, "max_waiting"),
    ({"deployments.0.batching.max_waiting": True}, "max_waiting"),
])
def test_bad_admission_fields_are_one_line_errors(override, needle):
    with pytest.raises(ScenarioError) as e:
        with_overrides(overloaded(), override)
    msg = str(e.value)
    assert needle in msg and "\n" not in msg
