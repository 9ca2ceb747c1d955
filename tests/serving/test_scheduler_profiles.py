"""Named engine profiles (sim/perf/profiles.py) and the two KV-admission rules they select:
``greedy`` (vLLM V1, TensorRT-LLM MAX_UTILIZATION: admit what fits now, preempt by recompute)
and ``reserve_full_output`` (TensorRT-LLM GUARANTEED_NO_EVICT: admit only when KV for the
prompt and the whole output fits, never evict)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.perf import catalog
from sim.perf.profiles import PROFILES, engine_profile
from sim.perf.roofline import build_step_model, load_params
from sim.scenario import ScenarioError, scenario_from_dict, with_overrides
from sim.study.run import run
from sim.study.throughput import throughput

W = {"name": "w", "model": "llama-3.1-8b", "arrivals": {"kind": "poisson", "rate_per_s": 1.0},
     "prompt_tokens": {"dist": "constant", "value": 100}, "output_tokens": {"dist": "constant", "value": 100}}


def _dep(**kw):
    return {"name": "d", "model": "llama-3.1-8b", "gpu": "h100-sxm", **kw}


def _sc(dep, workloads=(W,), **sim):
    return scenario_from_dict({"name": "p", "simulation": {"request_sample_size": 100000, **sim},
                               "deployments": [dep], "workloads": list(workloads)}, "p")


# ------------------------------------------------------------------ profiles as defaults
def test_profile_fills_unset_batching_fields_and_explicit_ones_win():
    b = _sc(_dep(profile="trtllm-guaranteed-no-evict", batching={"max_num_seqs": 64})).deployments[0].batching
    assert (b.max_num_seqs, b.max_batched_tokens, b.block_size_tokens) == (64, 8192, 32)
    assert b.kv_admission == "reserve_full_output" and b.chunked_prefill is False
    b = _sc(_dep(profile="trtllm-max-utilization")).deployments[0].batching
    assert (b.max_num_seqs, b.kv_admission) == (2048, "greedy")


def test_vllm_defaults_depend_on_the_gpu_as_vllm_v1_does():
    """vLLM V1 API server: 1024 sequences / 8192 tokens on >= 70 GiB GPUs other than A100,
    256 / 2048 otherwise; chunked prefill, block 16, greedy admission with recompute."""
    h = _sc(_dep(profile="vllm")).deployments[0].batching
    a = _sc(_dep(profile="vllm", gpu="a100-sxm-80gb")).deployments[0].batching
    assert (h.max_num_seqs, h.max_batched_tokens, h.block_size_tokens, h.chunked_prefill) == (1024, 8192, 16, True)
    assert (a.max_num_seqs, a.max_batched_tokens) == (256, 2048)
    assert h.kv_admission == a.kv_admission == "greedy"


def test_no_profile_keeps_the_scenario_defaults():
    d = _sc(_dep()).deployments[0]
    assert d.profile is None and d.batching.kv_admission == "greedy" and d.batching.max_num_seqs == 256
    base = load_params("h100-sxm")
    assert build_step_model(d).p.iteration_overhead_s == base.iteration_overhead_s


@pytest.mark.parametrize("name", list(PROFILES))
def test_profile_selects_its_fitted_framework_overheads(name):
    prof = load_params("h100-sxm").framework_profiles[engine_profile(name).framework]
    m = build_step_model(_sc(_dep(profile=name)).deployments[0])
    assert m.p.iteration_overhead_s == prof["iteration_overhead_s"]
    assert m.p.per_seq_overhead_s == prof["per_seq_overhead_s"]
    assert m.p.per_layer_overhead_s == prof.get("per_layer_overhead_s", 0.0)
    assert m.p.kernel_time_scale == prof.get("kernel_time_scale", 1.0)
    assert engine_profile(name).source  # every default names where it comes from


def test_unknown_profile_is_one_line():
    with pytest.raises(ScenarioError) as e:
        _sc(_dep(profile="sglang"))
    msg = str(e.value)
    assert "profile" in msg and "trtllm-guaranteed-no-evict" in msg and "\n" not in msg


def test_throughput_names_the_profile():
    a = throughput("llama-3.1-8b", "h100-sxm", 1, 1, 128, 128, requests=400, profile="trtllm-max-utilization")
    b = throughput("llama-3.1-8b", "h100-sxm", 1, 1, 128, 128, requests=400, profile="vllm")
    assert a["profile"] == "trtllm-max-utilization" and a["max_num_seqs"] == 2048
    assert b["max_num_seqs"] == 1024
    # vLLM's fitted 2024 per-sequence overhead (86 us) makes big batches slower than TensorRT-LLM's
    assert b["output_tokens_per_s"] < a["output_tokens_per_s"]


# ------------------------------------------------------------------ framework profiles (step_time.framework)
@pytest.mark.parametrize("gpu", ["a100-sxm-80gb", "h100-sxm", "h200"])
def test_every_framework_name_has_a_fitted_profile_on_every_calibrated_gpu(gpu):
    from sim.perf.profiles import FRAMEWORK_NAMES
    profs = load_params(gpu).framework_profiles
    assert set(FRAMEWORK_NAMES) <= set(profs)
    for name in FRAMEWORK_NAMES:
        assert profs[name]["fitted_on"] and profs[name]["iteration_overhead_s"] >= 0


def test_framework_overrides_the_engine_profiles_and_names_the_release():
    """``step_time.framework`` picks the fitted overheads and kernel scale, over the engine
    profile's; ``trtllm-v0.17`` is the release the default was fitted on (same numbers)."""
    profs = load_params("h100-sxm").framework_profiles
    m = build_step_model(_sc(_dep(profile="trtllm-max-utilization",
                                  step_time={"framework": "trtllm-v0.14"})).deployments[0])
    assert m.p.kernel_time_scale == profs["trtllm-v0.14"]["kernel_time_scale"] != profs["trtllm"]["kernel_time_scale"]
    a = throughput("llama-3.1-8b", "h100-sxm", 1, 1, 128, 128, requests=400, framework="trtllm-v0.17")
    b = throughput("llama-3.1-8b", "h100-sxm", 1, 1, 128, 128, requests=400)
    c = throughput("llama-3.1-8b", "h100-sxm", 1, 1, 128, 128, requests=400, framework="trtllm-v0.14")
    assert a["framework"] == "trtllm-v0.17" and b["framework"] is None
    assert a["output_tokens_per_s"] == b["output_tokens_per_s"]
    assert c["output_tokens_per_s"] < b["output_tokens_per_s"]  # the older release's slower kernels


def test_bad_framework_is_one_line():
    for step_time, words in (({"framework": "tensorrt"}, ("framework", "trtllm-v0.14")),
                             ({"kind": "constant", "decode_step_s": 0.01, "framework": "vllm"},
                              ("framework", "calibrated"))):
        with pytest.raises(ScenarioError) as e:
            _sc(_dep(step_time=step_time))
        msg = str(e.value)
        assert all(w in msg for w in words) and "\n" not in msg, msg


# ------------------------------------------------------------------ admission semantics
def _kv_bound(admission, mode="event_skipping", kv_tokens=6000, rate=3.0, seed=3):
    """A constant-step replica whose KV cache holds a few long requests only."""
    dep = {"name": "d", "model": "m", "replicas": 1,
           "batching": {"max_num_seqs": 64, "max_batched_tokens": 1024, "block_size_tokens": 16,
                        "kv_admission": admission},
           "step_time": {"kind": "constant", "decode_step_s": 0.02, "prefill_per_token_s": 5e-5,
                         "per_kv_token_s": 1e-7, "kv_cache_tokens": kv_tokens}}
    wl = {"name": "w", "model": "m", "arrivals": {"kind": "poisson", "rate_per_s": rate},
          "prompt_tokens": {"dist": "lognormal", "mu": 5.5, "sigma": 0.8, "max": 2000},
          "output_tokens": {"dist": "geometric", "mean": 300}}
    sc = scenario_from_dict({"name": "kv", "simulation": {"horizon_s": 300.0, "request_sample_size": 100000,
                                                          "engine_mode": mode},
                             "deployments": [dep], "workloads": [wl]}, "kv")
    res = run(sc, seed=seed, figures=False)
    return res.summary, res.requests.sort_values("request_id"), res.timeseries


def test_guaranteed_no_evict_never_preempts_where_max_utilization_does():
    s_g, r_g, ts_g = _kv_bound("reserve_full_output")
    s_m, r_m, ts_m = _kv_bound("greedy")
    assert s_m["preemptions"] > 20, s_m["preemptions"]
    assert s_g["preemptions"] == 0 and (r_g.preemptions == 0).all()
    # greedy packs more work into the same cache: higher mean KV occupancy
    occ = lambda ts: ts[ts.replica != "__fleet__"].kv_occupancy.mean()  # noqa: E731
    assert occ(ts_m) > occ(ts_g)


def test_reservations_bound_the_running_batch():
    """Under reserve_full_output the requests running at any instant reserve at most the cache:
    sum over running requests of ceil((prompt + output) / block) <= total blocks, checked at
    every admission and completion instant from the per-request records."""
    kv_tokens, bs = 6000, 16
    _, r, _ = _kv_bound("reserve_full_output", kv_tokens=kv_tokens)
    r = r[r.admitted_s.notna()]
    need = np.ceil((r.prompt_tokens + r.output_tokens) / bs).to_numpy()
    start, end = r.admitted_s.to_numpy(), r.completion_s.fillna(np.inf).to_numpy()
    worst = 0.0
    for t in np.unique(np.concatenate([start, end[np.isfinite(end)]])):
        live = (start <= t) & (end > t)
        worst = max(worst, need[live].sum())
    assert 0 < worst <= kv_tokens // bs
    # and the reservation is binding: some arrivals had to wait although slots were free
    assert (r.admitted_s - r.arrival_s).max() > 1.0


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), kv_tokens=st.integers(3000, 20000), rate=st.floats(0.5, 5.0))
def test_reserve_full_output_event_skipping_equals_per_iteration(seed, kv_tokens, rate):
    s1, a, _ = _kv_bound("reserve_full_output", "event_skipping", kv_tokens, rate, seed)
    s2, b, _ = _kv_bound("reserve_full_output", "per_iteration", kv_tokens, rate, seed)
    assert len(a) == len(b) and s1["completed"] == s2["completed"]
    for col in ("admitted_s", "first_token_s", "completion_s"):
        x, y = a[col].to_numpy(), b[col].to_numpy()
        assert np.array_equal(np.isnan(x), np.isnan(y)), col
        m = ~np.isnan(x)
        assert np.max(np.abs(x[m] - y[m]), initial=0.0) <= 1e-9, col


def test_profiles_cover_the_catalog_gpus():
    for name in PROFILES:
        for g in catalog.gpus().values():
            b = engine_profile(name).batching(g)
            assert b["max_num_seqs"] >= 1 and b["max_batched_tokens"] >= 1


def test_set_profile_override_takes_the_new_defaults_but_keeps_explicit_fields():
    """``--set deployments.0.profile=...`` on a resolved scenario: batching fields still at the
    old defaults follow the new profile; a field the scenario set to another value stays."""
    sc = _sc(_dep(batching={"max_batched_tokens": 4096}))
    b = with_overrides(sc, {"deployments.0.profile": "trtllm-guaranteed-no-evict"}).deployments[0].batching
    assert (b.max_num_seqs, b.block_size_tokens, b.kv_admission) == (2048, 32, "reserve_full_output")
    assert b.max_batched_tokens == 4096
    b = with_overrides(with_overrides(sc, {"deployments.0.profile": "vllm"}),
                       {"deployments.0.profile": "trtllm-max-utilization"}).deployments[0].batching
    assert (b.max_num_seqs, b.block_size_tokens, b.kv_admission) == (2048, 32, "greedy")
    b = with_overrides(sc, {"deployments.0.profile": "vllm", "deployments.0.batching.max_num_seqs": 8}).deployments[0].batching
    assert b.max_num_seqs == 8
