"""The serving engine against queueing theory.

Configured as M/M/c (batch size 1, free prefill, constant per-token step time, geometric
output lengths, a central FCFS queue at the router), the engine's mean waiting time must
agree with Erlang C: the analytic value inside the 95 % confidence interval over
independent replications, and the interval narrower than 5 % of the value.  The nine cases
are nine simultaneous tests, so containment uses the Bonferroni-adjusted interval (95 %
for the family: t quantile 1 - 0.025/9); the width criterion uses the per-case 95 % interval.

Replication sizes come from pilot runs: the relative variance of a mean waiting time per
request (K = N * relSE^2) is about 30 (c=1, rho=0.5), 1650 (c=1, rho=0.95: long busy
periods) and 3000 (c=16, rho=0.5: waits are rare).  A 95 % half-width under 2.5 % with 10
replications needs relSE < 1.1 %, i.e. N > 8200 K requests in all; the sizes below aim at
relSE ~ 0.9 %.  Control variates on the realised arrival count and mean output length were
tried and cut the standard error by only ~10 % at rho = 0.95, so plain replications are used.
This file is the slowest part of the suite (~100 M simulated requests).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from queueing import erlang_c, mmc_scenario, mmc_wait
from sim.serving.world import World

# (servers, utilisation) -> requests per replication
CASES = {
    (1, 0.5): 60_000,
    (1, 0.8): 250_000,
    (1, 0.95): 2_200_000,
    (4, 0.5): 250_000,
    (4, 0.8): 300_000,
    (4, 0.95): 1_500_000,
    (16, 0.5): 4_000_000,
    (16, 0.8): 700_000,
    (16, 0.95): 1_800_000,
}
REPLICATIONS = 10


def test_erlang_c_closed_form():
    # textbook values: M/M/1 waits with probability rho; c=2, a=1: C = 1/3
    assert erlang_c(1, 0.7) == pytest.approx(0.7)
    assert erlang_c(2, 1.0) == pytest.approx(1.0 / 3.0)
    # mean wait of M/M/1: rho / (mu - lambda)
    assert mmc_wait(1, 0.5, 1.0) == pytest.approx(1.0)


@pytest.mark.slow
@pytest.mark.parametrize("c,rho", sorted(CASES))
def test_mmc_mean_wait_matches_erlang_c(c, rho):
    n = CASES[(c, rho)]
    scenario, lam, mean_service = mmc_scenario(c, rho, n)
    waits = []
    served = 0
    for rep in range(REPLICATIONS):
        world = World(scenario, seed=10_000 * c + int(rho * 100) * 100 + rep)
        world.run()
        s = world.summary()
        assert s["arrivals"] == s["completed"] + s["rejected"] + s["in_flight"]
        waits.append(s["wait_s"]["mean"])
        served += s["measured"]
    waits = np.array(waits)
    mean = waits.mean()
    se = waits.std(ddof=1) / math.sqrt(REPLICATIONS)
    half = stats.t.ppf(0.975, REPLICATIONS - 1) * se
    # containment at 95 % for the family of len(CASES) intervals (Bonferroni): nine
    # separate 95 % intervals would miss by chance in about a third of seed choices
    half_sim = stats.t.ppf(1 - 0.025 / len(CASES), REPLICATIONS - 1) * se
    analytic = mmc_wait(c, lam, mean_service)
    msg = (f"c={c} rho={rho}: simulated {mean:.6g} s, 95% CI +- {half:.3g}, simultaneous 95% CI "
           f"+- {half_sim:.3g} ({served} requests); Erlang C {analytic:.6g} s")
    assert mean - half_sim <= analytic <= mean + half_sim, msg
    assert 2 * half < 0.05 * analytic, msg
