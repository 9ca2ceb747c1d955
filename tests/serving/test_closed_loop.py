"""The ``closed_loop`` arrival kind: N users, each sending its next request when the last one
ends (plus think time).  Checked against the response-time law X = N / (R + Z) with
replications, and against its defining invariant (never more than N requests in flight)."""
import numpy as np
import pytest

from sim.core.errors import UserError
from sim.core.stats import mean_ci
from sim.scenario import scenario_from_dict
from sim.study.run import run


def _sc(users, think_s, horizon_s=1500.0):
    return scenario_from_dict({
        "name": "cl", "simulation": {"horizon_s": horizon_s, "warmup_s": 200.0, "request_sample_size": 0},
        "deployments": [{"name": "d", "model": "llama-3.1-8b", "gpu": "h100-sxm", "precision": "fp8", "tp": 1,
                         "replicas": 2, "batching": {"max_num_seqs": 8},
                         "step_time": {"kind": "constant", "decode_step_s": 0.02, "prefill_per_token_s": 1e-4}}],
        "workloads": [{"name": "w", "model": "llama-3.1-8b",
                       "arrivals": {"kind": "closed_loop", "users": users, "think_time_s": think_s},
                       "prompt_tokens": {"dist": "constant", "value": 200},
                       "output_tokens": {"dist": "lognormal", "mu": 4.0, "sigma": 0.5}}]}, "cl")


@pytest.mark.parametrize("users,think_s", [(4, 0.0), (24, 2.0), (40, 0.5)])
def test_response_time_law(users, think_s):
    """X (completions per second) = N / (R + Z): N users, mean response time R, mean think Z.
    Above 16 users the two 8-sequence replicas queue, so R includes the router wait."""
    ratios = []
    for seed in range(1, 6):
        s = run(_sc(users, think_s), seed=seed, figures=False).summary
        w = s["workloads"]["w"]
        x = w["measured"] / (1500.0 - 200.0)
        ratios.append(x * (w["e2e_s"]["mean"] + think_s) / users)
        assert s["in_flight"] <= users
    ci = mean_ci(ratios)
    m, lo, hi = ci.mean, ci.low, ci.high
    assert lo - 0.01 <= 1.0 <= hi + 0.01 and abs(m - 1.0) < 0.03


def test_zero_think_keeps_exactly_n_in_flight():
    s = run(_sc(12, 0.0, horizon_s=300.0), seed=3, figures=False).summary
    assert s["in_flight"] == 12


def test_users_must_be_positive():
    with pytest.raises(UserError, match="users"):
        _sc(0, 0.0)
