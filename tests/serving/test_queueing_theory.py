"""The serving engine against queueing theory.

Configured as M/M/c (batch size 1, free prefill, constant per-token step time, geometric
output lengths, a central FCFS queue at the router), the engine's mean waiting time must
agree with Erlang C for c in {1, 4, 16} and utilisation in {0.5, 0.8, 0.95}: the analytic
value inside the 95 % confidence interval over independent replications, and the interval
narrower than 5 % of the value.  The nine cases are nine simultaneous tests, so containment
uses the Bonferroni-adjusted interval (95 % for the family: t quantile 1 - 0.025/9); the
width criterion uses the per-case 95 % interval.

Variance reduction: control variates computed from each run's *inputs* only.  An observer
records every completed request's arrival time A_i and output length N_i, so its service
requirement is S_i = (N_i - 1) * step.  From these the test computes, per replication and over
the same measured requests as the engine's mean wait:

* X1, the mean FCFS wait of ONE server fed by the same arrivals with work kappa S_i / c
  (Lindley's recursion, vectorised).  Its expectation is Pollaczek-Khinchine's M/G/1 mean,
  lambda E[S'^2] / (2 (1 - rho')) -- a different formula from Erlang C, needing only the input
  law.  One fast server is the heavy-traffic approximation of c servers, so X1 tracks the
  engine's busy periods closely at rho = 0.8 and 0.95.  kappa = 1 for c > 1; for c = 1 the
  fast server would be the M/M/1 queue itself (the check would turn into a pathwise identity
  with zero width), so there kappa = 0.98 (a server 2 % faster, rho' = 0.98 rho: at
  rho = 0.95 its mean wait is 30 % below the queue's; kappa = 0.95 left the engine's interval
  4.3 % wide at 6 M requests, a variance reduction of only ~4x).
* X2, the mean over arrivals of max(0, N_inf - c), N_inf the number of earlier requests that
  would still be in service if each had its own server (M/G/infinity on the same inputs).
  By PASTA an arrival sees N_inf ~ Poisson(lambda E[S]), so E[X2] is a finite sum.  It tracks
  the rare clusters that make c = 16, rho = 0.5 wait.

The estimate is the intercept of the regression of the replications' mean waits on
(1, X1 - E X1, X2 - E X2) (Lavenberg & Welch); its OLS standard error has R - 3 degrees of
freedom.  The controls start empty at time 0 like the engine; the warm-up (at least ten
relaxation times, rho / (1 - sqrt(rho))^2 requests) makes their means the stationary ones.
Measured on the engine with the seeds below, the variance of the mean wait falls by a factor
of 690 / 72 / 16 (c = 1, rho = 0.5 / 0.8 / 0.95), 20 / 59 / 1340 (c = 4) and 6.8 / 6.1 / 400
(c = 16) against plain replications of the same runs; the per-case 95 % intervals are
0.2 / 0.8 / 2.6, 1.5 / 1.4 / 0.5 and 2.7 / 3.3 / 1.8 % of the value wide (limit 5 %).  About
17 M simulated requests, ~6 CPU-minutes (the former plain design: 10 replications, ~110 M
requests, ~28 CPU-minutes; control variates on the arrival count and the mean output length
alone cut the variance only ~10 % at rho = 0.95).  The estimator's coverage and the controls'
means are checked below on a reference queue whose answer is known (test_control_variate_*),
not trusted.

Known-mean controls that are *not* used: the time-average number in system or in queue.  Its
mean comes from the theory under test (Little's law ties it to the mean wait), so regressing on
it would cancel exactly the error the check is meant to find.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from queueing import (control_variate_estimate, erlang_c, geometric_service_moments,
                      infinite_server_counts, mmc_scenario, mmc_wait, mmc_waits, pk_wait,
                      poisson_excess_mean, single_server_waits)
from sim.serving.world import World

M_TOKENS = 1000.0
STEP_S = 0.001
# (servers, utilisation) -> measured requests per replication (after warm-up)
CASES = {
    (1, 0.5): 10_000,
    (1, 0.8): 20_000,
    (1, 0.95): 150_000,
    (4, 0.5): 20_000,
    (4, 0.8): 20_000,
    (4, 0.95): 50_000,
    (16, 0.5): 400_000,
    (16, 0.8): 60_000,
    (16, 0.95): 50_000,
}
# warm-up requests per utilisation: >= 10 relaxation times rho / (1 - sqrt(rho))^2
# (12, 72 and 1480 requests)
WARMUP_REQUESTS = {0.5: 2_000, 0.8: 5_000, 0.95: 20_000}
REPLICATIONS = 20


def kappa(c: int) -> float:
    """Work factor of the fast-single-server control (see the module docstring)."""
    return 1.0 if c > 1 else 0.98


def controls(c: int, arrival_s: np.ndarray, service_s: np.ndarray, measured: np.ndarray):
    """(X1, X2) of one replication: inputs only, averaged over the measured requests."""
    fast = single_server_waits(arrival_s, kappa(c) * service_s / c)
    excess = np.maximum(infinite_server_counts(arrival_s, service_s) - c, 0)
    return float(fast[measured].mean()), float(excess[measured].mean())


def control_means(c: int, lam: float) -> tuple[float, float]:
    """E[X1] (Pollaczek-Khinchine) and E[X2] (Poisson excess), from the input law alone."""
    es, es2 = geometric_service_moments(M_TOKENS, STEP_S)
    k = kappa(c) / c
    return pk_wait(lam, k * es, k * k * es2), poisson_excess_mean(lam * es, c)


def test_erlang_c_closed_form():
    # textbook values: M/M/1 waits with probability rho; c=2, a=1: C = 1/3
    assert erlang_c(1, 0.7) == pytest.approx(0.7)
    assert erlang_c(2, 1.0) == pytest.approx(1.0 / 3.0)
    # mean wait of M/M/1: rho / (mu - lambda)
    assert mmc_wait(1, 0.5, 1.0) == pytest.approx(1.0)
    # Pollaczek-Khinchine with exponential service is Erlang C for c = 1
    assert pk_wait(0.5, 1.0, 2.0) == pytest.approx(mmc_wait(1, 0.5, 1.0))
    # E[(N - k)^+], N ~ Poisson(a): k = 0 gives a; a = 2, k = 1: 2 - 1 + P(N = 0)
    assert poisson_excess_mean(2.0, 0) == pytest.approx(2.0)
    assert poisson_excess_mean(2.0, 1) == pytest.approx(1.0 + math.exp(-2.0))
    es, es2 = geometric_service_moments(M_TOKENS, STEP_S)
    assert es == pytest.approx(0.999) and es2 == pytest.approx(es * es + 0.999 * 1000 ** 2 * 1e-6)


def test_reference_recursions_agree():
    # Lindley's closed form is the one-server Kiefer-Wolfowitz recursion; an empty queue,
    # a request arriving while the previous one is served, and the counts of M/G/infinity
    a = np.array([0.0, 1.0, 1.5, 5.0])
    s = np.array([2.0, 1.0, 1.0, 1.0])
    assert single_server_waits(a, s).tolist() == [0.0, 1.0, 1.5, 0.0]
    assert mmc_waits(a, s, 1).tolist() == [0.0, 1.0, 1.5, 0.0]
    assert mmc_waits(a, s, 2).tolist() == [0.0, 0.0, 0.5, 0.0]
    assert infinite_server_counts(a, s).tolist() == [0, 1, 2, 0]
    rng = np.random.default_rng(3)
    arr = np.cumsum(rng.exponential(1.0, 5000))
    svc = rng.exponential(0.9, 5000)
    assert np.allclose(single_server_waits(arr, svc), mmc_waits(arr, svc, 1), atol=1e-9)


def _inputs(rng, c: int, rho: float, n: int):
    """Poisson arrivals and the engine configuration's service law, n requests."""
    es, _ = geometric_service_moments(M_TOKENS, STEP_S)
    lam = rho * c / es
    arrival = np.cumsum(rng.exponential(1.0 / lam, n))
    service = (rng.geometric(1.0 / M_TOKENS, n) - 1) * STEP_S
    return lam, arrival, service


@pytest.mark.parametrize("c,rho", sorted(CASES))
def test_control_variate_means_are_known(c, rho):
    # the controls' expectations are exact for the input law: the mean of X1 and X2 over
    # independent input streams (no engine) matches P-K and the Poisson excess, 99.9 % CI
    rng = np.random.default_rng(70_000 + 100 * c + int(100 * rho))
    warm = WARMUP_REQUESTS[rho]
    xs = []
    for _ in range(20):
        lam, a, s = _inputs(rng, c, rho, warm + 20_000)
        xs.append(controls(c, a, s, np.arange(len(a)) >= warm))
    xs = np.array(xs)
    q = stats.t.ppf(0.9995, len(xs) - 1)
    for j, mu in enumerate(control_means(c, lam)):
        m, se = xs[:, j].mean(), xs[:, j].std(ddof=1) / math.sqrt(len(xs))
        assert abs(m - mu) <= q * se, (c, rho, j, m, mu, se)


def test_control_variate_interval_covers_known_mean():
    # the estimator itself, on a queue whose answer is known: M/M/1 at rho = 0.8 simulated by
    # Lindley's recursion (exact), 400 experiments of 20 replications each with the same
    # controls as the engine check.  The 95 % interval must cover Erlang C in 95 % of them
    # (binomial sd 1.1 %), the estimates must be unbiased, and narrower than plain replications.
    c, rho, n, warm = 1, 0.8, 6_000, WARMUP_REQUESTS[0.8]
    rng = np.random.default_rng(8_080)
    es, _ = geometric_service_moments(M_TOKENS, STEP_S)
    truth = mmc_wait(c, rho * c / es, es)
    mu = None
    hits, estimates, ratio = 0, [], []
    for _ in range(400):
        ys, xs = [], []
        for _ in range(REPLICATIONS):
            lam, a, s = _inputs(rng, c, rho, warm + n)
            measured = np.arange(len(a)) >= warm
            ys.append(single_server_waits(a, s)[measured].mean())
            xs.append(controls(c, a, s, measured))
        mu = mu or control_means(c, lam)
        est, se, dof = control_variate_estimate(ys, xs, mu)
        hits += abs(est - truth) <= stats.t.ppf(0.975, dof) * se
        estimates.append(est)
        ratio.append(se / (np.std(ys, ddof=1) / math.sqrt(REPLICATIONS)))
    coverage = hits / 400
    assert 0.92 <= coverage <= 0.98, coverage
    estimates = np.array(estimates)
    assert abs(estimates.mean() - truth) <= 3.5 * estimates.std(ddof=1) / math.sqrt(400)
    assert np.median(ratio) < 0.5, np.median(ratio)  # at least 4x less variance here


def test_control_variate_interval_covers_known_mean_multiserver():
    # the same on c = 4, rho = 0.8 (Kiefer-Wolfowitz reference, the fast-server control
    # with kappa = 1): 150 experiments, coverage of the 95 % interval in [0.88, 1]
    c, rho, n, warm = 4, 0.8, 2_000, 1_000
    rng = np.random.default_rng(8_084)
    es, _ = geometric_service_moments(M_TOKENS, STEP_S)
    truth = mmc_wait(c, rho * c / es, es)
    mu = None
    hits, estimates = 0, []
    for _ in range(150):
        ys, xs = [], []
        for _ in range(REPLICATIONS):
            lam, a, s = _inputs(rng, c, rho, warm + n)
            measured = np.arange(len(a)) >= warm
            ys.append(mmc_waits(a, s, c)[measured].mean())
            xs.append(controls(c, a, s, measured))
        mu = mu or control_means(c, lam)
        est, se, dof = control_variate_estimate(ys, xs, mu)
        hits += abs(est - truth) <= stats.t.ppf(0.975, dof) * se
        estimates.append(est)
    assert hits / 150 >= 0.88, hits / 150
    estimates = np.array(estimates)
    assert abs(estimates.mean() - truth) <= 3.5 * estimates.std(ddof=1) / math.sqrt(150)


@pytest.mark.slow
@pytest.mark.parametrize("c,rho", sorted(CASES))
def test_mmc_mean_wait_matches_erlang_c(c, rho):
    n_measured, warm = CASES[(c, rho)], WARMUP_REQUESTS[rho]
    n = n_measured + warm
    scenario, lam, mean_service = mmc_scenario(c, rho, n, m_tokens=M_TOKENS, step_s=STEP_S,
                                               warmup_share=warm / n)
    warmup_s = scenario.simulation.warmup_s
    waits, xs = [], []
    served = 0
    for rep in range(REPLICATIONS):
        world = World(scenario, seed=10_000 * c + int(rho * 100) * 100 + rep)
        rows: list[tuple[float, int]] = []
        world.observe(on_complete=lambda r, now: rows.append((r.arrival_s, r.output_tokens)))
        world.run()
        s = world.summary()
        assert s["arrivals"] == s["completed"] + s["rejected"] + s["in_flight"]
        assert s["rejected"] == 0
        inputs = np.array(rows)
        inputs = inputs[np.argsort(inputs[:, 0], kind="stable")]
        arrival = inputs[:, 0]
        measured = arrival >= warmup_s
        assert int(measured.sum()) == s["measured"]  # the controls average the same requests
        xs.append(controls(c, arrival, (inputs[:, 1] - 1.0) * STEP_S, measured))
        waits.append(s["wait_s"]["mean"])
        served += s["measured"]
    mean, se, dof = control_variate_estimate(waits, xs, control_means(c, lam))
    plain_se = np.std(waits, ddof=1) / math.sqrt(REPLICATIONS)
    half = stats.t.ppf(0.975, dof) * se
    # containment at 95 % for the family of len(CASES) intervals (Bonferroni): nine
    # separate 95 % intervals would miss by chance in about a third of seed choices
    half_sim = stats.t.ppf(1 - 0.025 / len(CASES), dof) * se
    analytic = mmc_wait(c, lam, mean_service)
    msg = (f"c={c} rho={rho}: control-variate estimate {mean:.6g} s, 95% CI +- {half:.3g} "
           f"({2 * half / analytic:.2%} wide), simultaneous 95% CI +- {half_sim:.3g} "
           f"({served} requests, variance {(plain_se / se) ** 2:.1f}x below plain "
           f"replications, plain mean {np.mean(waits):.6g}); Erlang C {analytic:.6g} s")
    print(msg)
    assert mean - half_sim <= analytic <= mean + half_sim, msg
    assert 2 * half < 0.05 * analytic, msg
