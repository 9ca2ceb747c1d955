"""Closed forms the engine is checked against, and the M/M/c engine configuration."""
from __future__ import annotations

import heapq
import math

import numpy as np
from scipy import stats

from sim.scenario import scenario_from_dict


def erlang_c(c: int, a: float) -> float:
    """Probability of waiting in M/M/c with offered load ``a = lambda / mu`` (< c)."""
    term = 1.0
    s = 1.0
    for k in range(1, c):
        term *= a / k
        s += term
    term *= a / c  # a^c / c!
    last = term * c / (c - a)
    return last / (s + last)


def mmc_wait(c: int, lam: float, mean_service_s: float) -> float:
    """Mean waiting time in queue (Erlang C)."""
    mu = 1.0 / mean_service_s
    return erlang_c(c, lam / mu) / (c * mu - lam)


def mmc_scenario(c: int, rho: float, n_requests: int, m_tokens: float = 1000.0,
                 step_s: float = 0.001, warmup_share: float = 0.02):
    """The engine configured as M/M/c: batch 1, free prefill, constant step time,
    geometric output lengths.  Service = (N - 1) steps, N ~ Geometric(1/m) on {1, 2, ...}
    (the free prefill iteration emits the first token), so E[S] = (m - 1) * step_s and the
    service SCV is 1 / (1 - 1/m) -- exponential to within 0.1 % for m = 1000."""
    mean_service = (m_tokens - 1.0) * step_s
    lam = rho * c / mean_service
    horizon = n_requests / lam
    data = {
        "name": f"mmc-{c}-{rho}",
        "router": {"policy": "central_queue"},
        "simulation": {"horizon_s": horizon, "warmup_s": horizon * warmup_share,
                       "request_sample_size": 0, "timeseries_interval_s": horizon},
        "deployments": [{
            "name": "servers", "model": "m", "replicas": c,
            "batching": {"max_num_seqs": 1, "max_batched_tokens": 4096},
            "step_time": {"kind": "constant", "decode_step_s": step_s, "kv_cache_tokens": 1 << 30},
        }],
        "workloads": [{
            "name": "w", "model": "m", "arrivals": {"kind": "poisson", "rate_per_s": lam},
            "prompt_tokens": {"dist": "constant", "value": 1},
            "output_tokens": {"dist": "geometric", "mean": m_tokens},
        }],
    }
    return scenario_from_dict(data), lam, mean_service


def erlang_b(c: int, a: float) -> float:
    """Blocking probability of the loss system M/M/c/c (Erlang B) with offered load
    ``a = lambda / mu``; by the recursion B(k) = a B(k-1) / (k + a B(k-1)), B(0) = 1.
    Insensitive to the service distribution beyond its mean."""
    b = 1.0
    for k in range(1, c + 1):
        b = a * b / (k + a * b)
    return b


def _mmck_probs(c: int, k: int, a: float) -> list[float]:
    """Stationary distribution of the number in system of M/M/c/K (``k >= c`` places in all,
    ``a = lambda / mu``)."""
    if k < c:
        raise ValueError("M/M/c/K needs K >= c")
    w = [1.0]
    for n in range(1, k + 1):
        w.append(w[-1] * a / min(n, c))
    total = math.fsum(w)
    return [x / total for x in w]


def mmck_blocking(c: int, k: int, a: float) -> float:
    """Probability that an arrival finds all K places taken (PASTA), M/M/c/K."""
    return _mmck_probs(c, k, a)[k]


def mmck_mean_wait(c: int, k: int, lam: float, mean_service_s: float) -> float:
    """Mean time an *admitted* request waits before service in M/M/c/K: Little's law on the
    queue, L_q / (lambda (1 - P_K))."""
    p = _mmck_probs(c, k, lam * mean_service_s)
    lq = math.fsum((n - c) * p[n] for n in range(c + 1, k + 1))
    return lq / (lam * (1.0 - p[k]))


# ---------------------------------------------------------------- control variates
# Functions of a run's *inputs* (arrival times, service requirements) whose expectations are
# known from the input law alone (Poisson arrivals, i.i.d. service), used as control variates
# for the engine's mean waiting time.  None of them uses the engine's queue.

def geometric_service_moments(m_tokens: float = 1000.0, step_s: float = 0.001) -> tuple[float, float]:
    """E[S] and E[S^2] of the M/M/c configuration's service S = (N - 1) * step_s,
    N ~ Geometric(1/m) on {1, 2, ...}, so N - 1 is geometric on {0, 1, ...}."""
    p = 1.0 / m_tokens
    mean_k = (1.0 - p) / p
    mean_k2 = (1.0 - p) * (2.0 - p) / (p * p)
    return mean_k * step_s, mean_k2 * step_s * step_s


def single_server_waits(arrival_s, service_s):
    """FCFS waiting times of one server fed by ``arrival_s`` (sorted) with work ``service_s``,
    empty at time 0: Lindley's recursion W_n = max(0, W_{n-1} + S_{n-1} - (A_n - A_{n-1})),
    in closed form W_n = P_n - min(0, min_{k <= n} P_k) with P the partial sums."""
    a = np.asarray(arrival_s, dtype=float)
    s = np.asarray(service_s, dtype=float)
    x = np.empty(len(a))
    if len(a) == 0:
        return x
    x[0] = 0.0
    x[1:] = s[:-1] - np.diff(a)
    p = np.cumsum(x)
    return p - np.minimum(np.minimum.accumulate(p), 0.0)


def pk_wait(lam: float, mean_s: float, mean_s2: float) -> float:
    """Pollaczek-Khinchine: mean wait in M/G/1 with E[S] = ``mean_s``, E[S^2] = ``mean_s2``."""
    rho = lam * mean_s
    if rho >= 1.0:
        raise ValueError("M/G/1 needs rho < 1")
    return lam * mean_s2 / (2.0 * (1.0 - rho))


def infinite_server_counts(arrival_s, service_s):
    """For each arrival, how many earlier arrivals would still be in service at that instant
    if every request had its own server (M/G/infinity on the same inputs)."""
    a = np.asarray(arrival_s, dtype=float)
    d = np.sort(a + np.asarray(service_s, dtype=float))
    # departures strictly before A_i all belong to earlier arrivals; the rest of them are alive
    return np.arange(len(a)) - np.searchsorted(d, a, side="left")


def poisson_excess_mean(a: float, k: int) -> float:
    """E[max(0, N - k)] for N ~ Poisson(a): the mean of the M/G/infinity control with k = c
    (PASTA: an arrival sees the stationary Poisson(a) count).  E[(N - k)^+] = a - k + E[(k - N)^+],
    the last term a finite sum."""
    below = math.fsum((k - n) * float(stats.poisson.pmf(n, a)) for n in range(k))
    return a - k + below


def mmc_waits(arrival_s, service_s, c: int):
    """FCFS waiting times of ``c`` servers fed by ``arrival_s`` (sorted), empty at time 0
    (Kiefer-Wolfowitz: each arrival starts on the server that frees first).  A plain loop:
    the reference the control-variate estimator is checked on, not used on engine runs."""
    free = [0.0] * c
    waits = np.empty(len(arrival_s))
    for i, (t, x) in enumerate(zip(np.asarray(arrival_s, dtype=float).tolist(),
                                   np.asarray(service_s, dtype=float).tolist())):
        f = free[0]
        start = f if f > t else t
        waits[i] = start - t
        heapq.heapreplace(free, start + x)
    return waits


def control_variate_estimate(y, controls, control_means):
    """Control-variate estimate of E[y] from independent replications (Lavenberg & Welch):
    regress y_r on (1, X_r - mu_X); the intercept estimates E[y], its OLS standard error with
    R - q - 1 degrees of freedom gives an exact t interval when (y, X) are jointly normal.
    Returns (estimate, standard error, degrees of freedom)."""
    y = np.asarray(y, dtype=float)
    x = np.atleast_2d(np.asarray(controls, dtype=float))
    if x.shape[0] != len(y):
        x = x.T
    r, q = x.shape
    z = np.column_stack([np.ones(r), x - np.asarray(control_means, dtype=float)])
    coef, *_ = np.linalg.lstsq(z, y, rcond=None)
    dof = r - q - 1
    if dof < 2:
        raise ValueError("control variates need more replications than controls + 2")
    resid = y - z @ coef
    s2 = float(resid @ resid) / dof
    cov = s2 * np.linalg.inv(z.T @ z)
    return float(coef[0]), float(math.sqrt(cov[0, 0])), dof
