"""The router on its own: each policy's choice, residency as an invariant, parking and
rejection after ``max_wait_s``, the central queue's FCFS order.

Replicas here are stand-ins exposing exactly what the router reads (``index``, ``up``,
``accepting``, ``retired_s``, ``outstanding_tokens``, ``max_waiting``, ``free_slots()``,
``enqueue()``), so each choice is checked against a load the test sets, not one an engine happens to produce.
"""
from __future__ import annotations

import numpy as np
import pytest
import simpy

from sim.serving.engine import Request
from sim.serving.router import Router


class FakeReplica:
    def __init__(self, index: int, outstanding: int = 0, slots: int = 1_000_000):
        self.index = index
        self.up = True
        self.accepting = True
        self.retired_s = None
        self.outstanding_tokens = outstanding
        self.slots = slots
        self.got: list[Request] = []
        self.on_slots_free = None
        self.on_unload = None       # set by the router for heap-backed groups
        self.max_waiting = None     # admission: no bound on this replica's queue

    def free_slots(self) -> int:
        return self.slots - len(self.got)

    def enqueue(self, r: Request):
        r.replica = self.index
        self.got.append(r)


def make(policy, loads=(0, 0, 0), eligible=None, max_wait_s=5.0, seed=0, slots=1_000_000, rtt=None):
    env = simpy.Environment()
    reps = [FakeReplica(i, o, slots) for i, o in enumerate(loads)]
    eligible = eligible if eligible is not None else [list(range(len(reps)))]
    rejected = []
    router = Router(env, reps, eligible, policy, np.random.default_rng(seed), max_wait_s,
                    lambda r, reason, now: rejected.append((r.rid, reason, now)), rtt_s=rtt)
    return env, reps, router, rejected


def req(rid, workload=0, t=0.0):
    return Request(rid, workload, t, 10, 5)


def test_least_outstanding_picks_least_loaded():
    _, reps, router, _ = make("least_outstanding", loads=(50, 7, 30, 7))
    router.submit(req(0))
    assert [len(r.got) for r in reps] == [0, 1, 0, 0]   # first of the tied minima
    reps[1].outstanding_tokens = 100
    router.submit(req(1))
    assert len(reps[3].got) == 1


def test_least_outstanding_never_leaves_the_eligible_list():
    # replica 1 is the least loaded but not eligible for workload 0 (residency)
    _, reps, router, _ = make("least_outstanding", loads=(40, 0, 20), eligible=[[0, 2], [1]])
    for i in range(20):
        router.submit(req(i, workload=0))
    assert reps[1].got == []
    assert len(reps[2].got) == 20


@pytest.mark.parametrize("policy", ["least_outstanding", "power_of_two", "round_robin", "central_queue"])
def test_residency_ineligible_replicas_never_chosen(policy):
    _, reps, router, _ = make(policy, loads=(0, 0, 0, 0, 0), eligible=[[1, 3], [0, 2, 4]])
    rng = np.random.default_rng(3)
    for i in range(400):
        w = int(rng.integers(2))
        reps[int(rng.integers(5))].outstanding_tokens = int(rng.integers(100))
        router.submit(req(i, workload=w))
    for rep in reps:
        assert all(r.replica == rep.index for r in rep.got)
        assert {r.workload for r in rep.got} <= ({0} if rep.index in (1, 3) else {1}), rep.index
    assert sum(len(r.got) for r in reps) == 400


def test_round_robin_cycles_in_order_per_workload():
    _, reps, router, _ = make("round_robin", loads=(0, 0, 0, 0), eligible=[[0, 1, 2], [3, 1]])
    order = []
    for i in range(7):
        router.submit(req(i, workload=0))
        order.append(next(r.index for r in reps if r.got and r.got[-1].rid == i))
    assert order == [0, 1, 2, 0, 1, 2, 0]
    order1 = []
    for i in range(100, 104):
        router.submit(req(i, workload=1))
        order1.append(next(r.index for r in reps if r.got and r.got[-1].rid == i))
    assert order1 == [3, 1, 3, 1]    # workload 1 has its own counter


def test_power_of_two_picks_the_less_loaded_of_two_distinct_samples():
    # loads 0 < 10 < 20 < 30: the most loaded replica can never win (its partner is always lighter),
    # the least loaded wins whenever sampled: P = 1 - C(3,2)/C(4,2) = 1/2; the next 1/3; then 1/6
    n = 6000
    _, reps, router, _ = make("power_of_two", loads=(30, 0, 20, 10), seed=11)
    for i in range(n):
        router.submit(req(i))
    counts = np.array([len(r.got) for r in reps])
    assert counts[0] == 0
    expect = {1: 1 / 2, 3: 1 / 3, 2: 1 / 6}
    for i, p in expect.items():
        sd = np.sqrt(n * p * (1 - p))
        assert abs(counts[i] - n * p) < 4.5 * sd, (i, counts)


def test_power_of_two_is_deterministic_per_seed():
    picks = []
    for _ in range(2):
        _, reps, router, _ = make("power_of_two", loads=(5, 5, 5, 5, 5), seed=42)
        for i in range(200):
            router.submit(req(i))
        picks.append([r.replica for rep in reps for r in rep.got])
    assert picks[0] == picks[1]


def test_single_candidate_gets_everything():
    for policy in ("least_outstanding", "power_of_two", "round_robin"):
        _, reps, router, _ = make(policy, loads=(9, 0), eligible=[[0]])
        for i in range(5):
            router.submit(req(i))
        assert len(reps[0].got) == 5 and reps[1].got == []


def test_central_queue_serves_fcfs_as_slots_free():
    env, reps, router, _ = make("central_queue", loads=(0, 0), slots=1)
    for rep in reps:
        assert rep.on_slots_free == router.pull
    for i in range(5):
        router.submit(req(i, t=float(i)))
    # two slots: requests 0 and 1 dispatched at once, the rest wait in arrival order
    assert sorted(r.rid for rep in reps for r in rep.got) == [0, 1]
    assert [r.rid for r in router.queued()] == [2, 3, 4]
    served = []
    for k in range(3):
        rep = reps[k % 2]
        served.append(rep.got.pop().rid)
        router.pull(rep)
        assert rep.got[-1].rid == 2 + k
    assert router.queued() == []


def test_central_queue_takes_the_oldest_head_across_workloads():
    # replica 0 serves both workloads; it is full, requests queue; a slot frees -> the oldest head
    env, reps, router, _ = make("central_queue", loads=(0,), eligible=[[0], [0]], slots=1)
    router.submit(req(0, workload=0, t=0.0))
    router.submit(req(1, workload=1, t=1.0))
    router.submit(req(2, workload=0, t=2.0))
    router.submit(req(3, workload=1, t=3.0))
    assert [r.rid for r in reps[0].got] == [0]
    got = []
    for _ in range(3):
        reps[0].got.clear()
        router.pull(reps[0])
        got.append(reps[0].got[0].rid)
    assert got == [1, 2, 3]


def test_central_queue_does_not_overtake_waiting_requests():
    # a slot is free but a request of the same workload is already queued: the new one queues behind
    env, reps, router, _ = make("central_queue", loads=(0,), slots=1)
    router.submit(req(0, t=0.0))
    router.submit(req(1, t=1.0))
    reps[0].slots = 2          # a slot appears without the replica announcing it
    router.submit(req(2, t=2.0))
    assert [r.rid for r in router.queued()] == [1, 2]


def test_no_eligible_capacity_parks_then_rejects_after_max_wait():
    env, reps, router, rejected = make("least_outstanding", loads=(0, 0), max_wait_s=5.0)
    for rep in reps:
        rep.up = False
    router.replica_state_changed()
    assert router.all_up is False
    router.submit(req(0))
    env.run(until=2.0)
    router.submit(req(1))
    assert router.parked_count() == 2
    env.run(until=4.99)
    assert rejected == []
    env.run(until=5.5)
    assert rejected == [(0, "no_eligible_capacity", 5.0)]
    env.run(until=10.0)
    assert rejected == [(0, "no_eligible_capacity", 5.0), (1, "no_eligible_capacity", 7.0)]
    assert router.parked_count() == 0
    assert all(rep.got == [] for rep in reps)


def test_parked_request_is_served_when_capacity_returns_and_never_rejected():
    env, reps, router, rejected = make("least_outstanding", loads=(0, 0), eligible=[[1], [0]], max_wait_s=5.0)
    reps[1].up = False
    router.replica_state_changed()
    router.submit(req(0, workload=0))          # its only replica is down: parked
    router.submit(req(1, workload=1))          # served by replica 0 at once
    assert router.parked_count() == 1 and len(reps[0].got) == 1
    env.run(until=3.0)
    reps[1].up = True
    router.replica_state_changed()
    assert router.all_up and router.parked_count() == 0
    assert [r.rid for r in reps[1].got] == [0]
    env.run(until=20.0)
    assert rejected == []                       # the expiry of a dispatched request does nothing


def test_draining_and_down_replicas_are_skipped():
    _, reps, router, _ = make("round_robin", loads=(0, 0, 0))
    reps[0].accepting = False
    reps[2].up = False
    router.replica_state_changed()
    for i in range(4):
        router.submit(req(i))
    assert [len(r.got) for r in reps] == [0, 4, 0]


def test_remove_replica_restores_fast_path_and_candidates():
    _, reps, router, _ = make("least_outstanding", loads=(0, 5))
    reps[0].up = False
    reps[0].retired_s = 1.0
    router.remove_replica(reps[0])
    assert router.all_up                        # the retired replica does not count
    router.submit(req(0))
    assert [len(r.got) for r in reps] == [0, 1]


def test_rtt_is_written_to_the_request():
    _, reps, router, _ = make("round_robin", loads=(0, 0), rtt=[[0.01, 0.03]])
    a, b = req(0), req(1)
    router.submit(a)
    router.submit(b)
    assert (a.latency_s, b.latency_s) == (0.01, 0.03)
