"""Admission control against queueing theory: Erlang B and M/M/c/K.

The engine is configured as in the Erlang C suite (``tests/queueing.py`` ``mmc_scenario``:
batch size 1, free prefill, constant per-token step, geometric output lengths, a central
FCFS queue at the router), with the router's queue bounded by ``router.max_queue = K - c``:
``max_queue = 0`` is the loss system M/M/c/c (Erlang B), ``K - c > 0`` the M/M/c/K queue.
An arrival that finds the queue full is rejected with reason ``queue_full``.

Per replication the blocking probability is the share of arrivals after warm-up that were
rejected (PASTA: the time-average probability of a full system), and the mean wait is that
of the admitted requests (``wait_s.mean``).  Each case is checked with REPLICATIONS
independent replications and a t interval (``sim.core.stats.mean_ci``):

* containment: the closed form lies inside the Bonferroni-adjusted interval, 95 % for the
  family of all simultaneous intervals of this file (FAMILY = 12: eight blocking
  probabilities, four mean waits);
* width: the per-case 95 % half-width is below the stated share of the value, so the test
  can fail when the engine is off by more than a few per cent (not a test that cannot fail).

Replication sizes come from pilot runs of the relative variance K = N * relSE^2 of one
replication's estimate (K ~ 120-230 for blocking near 2-6 %, 5-30 for the rest; 5,000
requests per replication at least).  Relative 95 % half-widths achieved with the seeds
below (target 5 % for every interval): Erlang B 0.8 % (c=1, a=0.5), 0.2 % (c=1, a=4),
3.5 % (c=10, a=5), 1.9 % (c=10, a=12); M/M/c/K blocking / mean wait 2.9 % / 1.1 %
(M/M/1/5, a=0.7), 1.9 % / 1.7 % (M/M/1/5, a=1.5), 3.8 % / 1.6 % (M/M/4/8, a=2.8), 2.0 % /
1.4 % (M/M/4/10, a=4.8).  About 1.7 M simulated requests, 25-40 CPU-seconds.
"""
from __future__ import annotations

import pytest

from queueing import erlang_b, erlang_c, mmc_scenario, mmc_wait, mmck_blocking, mmck_mean_wait
from sim.core.stats import mean_ci
from sim.scenario import with_overrides
from sim.serving.world import World

REPLICATIONS = 20
FAMILY = 12

# Erlang B: (servers, offered load a = lambda E[S]) -> (requests per replication, target
# relative 95 % half-width of the blocking probability)
ERLANG_B = {
    (1, 0.5): (5_000, 0.05),     # light, B = 1/3
    (1, 4.0): (5_000, 0.05),     # heavy, B = 0.8
    (10, 5.0): (30_000, 0.05),   # light, B = 0.01838
    (10, 12.0): (5_000, 0.05),   # heavy, B = 0.302
}
# M/M/c/K: (servers, places K, offered load a) -> (requests per replication, target of the
# blocking probability, target of the mean wait)
MMCK = {
    (1, 5, 0.7): (16_000, 0.05, 0.05),   # light, P_K = 0.057
    (1, 5, 1.5): (5_000, 0.05, 0.05),    # heavy (rho = 1.5), P_K = 0.365
    (4, 8, 2.8): (12_000, 0.05, 0.05),   # light (rho = 0.7), P_K = 0.033
    (4, 10, 4.8): (5_000, 0.05, 0.05),   # heavy (rho = 1.2), P_K = 0.205
}


def _replicate(c: int, k: int, a: float, n: int, seed0: int):
    scenario, lam, mean_service = mmc_scenario(c, a / c, n)
    scenario = with_overrides(scenario, {"router.max_queue": k - c})
    blocking, waits = [], []
    for rep in range(REPLICATIONS):
        world = World(scenario, seed=seed0 + rep)
        world.run()
        s = world.summary()
        assert s["arrivals"] == s["completed"] + s["rejected"] + s["in_flight"]
        assert s["rejected"] == s["rejected_by_reason"]["queue_full"]
        # the bound holds at the horizon: at most K - c wait at the router
        assert len(world.router.queued()) <= k - c
        w = s["workloads"]["w"]
        blocking.append(w["measured_rejected"] / w["measured_arrivals"])
        waits.append(s["wait_s"]["mean"] or 0.0)
    return blocking, waits, lam, mean_service


def _check(name: str, values: list[float], analytic: float, target: float):
    ci = mean_ci(values, level=0.95)
    mean, half = ci.mean, ci.half_width
    sim = mean_ci(values, level=1.0 - 0.05 / FAMILY)
    slo, shi = sim.low, sim.high
    msg = (f"{name}: simulated {mean:.6g}, 95% CI +- {half:.3g} ({half / analytic:.1%} of the "
           f"value, target {target:.0%}), simultaneous CI [{slo:.6g}, {shi:.6g}]; closed form {analytic:.6g}")
    print(msg)
    assert slo <= analytic <= shi, msg
    assert half < target * analytic, msg


def test_closed_forms_against_published_values():
    # Erlang B tables: B(10, 5) = 0.01838, B(5, 2) = 0.03670; one server: a / (1 + a)
    assert erlang_b(10, 5.0) == pytest.approx(0.01838, abs=5e-6)
    assert erlang_b(5, 2.0) == pytest.approx(0.03670, abs=5e-6)
    assert erlang_b(1, 0.7) == pytest.approx(0.7 / 1.7)
    # M/M/c/c is M/M/c/K with K = c
    assert mmck_blocking(10, 10, 5.0) == pytest.approx(erlang_b(10, 5.0))
    # M/M/1/K: P_K = (1 - rho) rho^K / (1 - rho^(K+1)); L = rho/(1-rho) - (K+1) rho^(K+1)/(1-rho^(K+1))
    rho, k = 0.7, 5
    pk = (1 - rho) * rho**k / (1 - rho ** (k + 1))
    assert mmck_blocking(1, k, rho) == pytest.approx(pk)
    ls = rho / (1 - rho) - (k + 1) * rho ** (k + 1) / (1 - rho ** (k + 1))
    p0 = (1 - rho) / (1 - rho ** (k + 1))
    lq = ls - (1 - p0)
    assert mmck_mean_wait(1, k, rho, 1.0) == pytest.approx(lq / (rho * (1 - pk)))
    # a room far larger than the queue ever gets: Erlang C
    assert mmck_mean_wait(4, 400, 3.2, 1.0) == pytest.approx(mmc_wait(4, 3.2, 1.0))
    assert mmck_blocking(4, 400, 3.2) < 1e-12
    assert erlang_c(4, 3.2) > 0.5


@pytest.mark.parametrize("c,a", sorted(ERLANG_B))
def test_blocking_matches_erlang_b(c, a):
    n, target = ERLANG_B[(c, a)]
    blocking, waits, _, _ = _replicate(c, c, a, n, seed0=50_000 + 1_000 * c + int(a * 10))
    assert max(waits) == 0.0   # a loss system: nobody waits
    _check(f"Erlang B c={c} a={a}", blocking, erlang_b(c, a), target)


@pytest.mark.parametrize("c,k,a", sorted(MMCK))
def test_blocking_and_wait_match_mmck(c, k, a):
    n, target_b, target_w = MMCK[(c, k, a)]
    blocking, waits, lam, mean_service = _replicate(c, k, a, n, seed0=60_000 + 1_000 * c + 100 * k + int(a * 10))
    _check(f"M/M/{c}/{k} a={a} blocking", blocking, mmck_blocking(c, k, a), target_b)
    _check(f"M/M/{c}/{k} a={a} mean wait", waits, mmck_mean_wait(c, k, lam, mean_service), target_w)
