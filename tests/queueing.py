"""Closed forms the engine is checked against, and the M/M/c engine configuration."""
from __future__ import annotations

import math

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
