"""A DeepSeek-V3-class model (multi-head latent attention, 256 fine-grained experts, a shared
expert, leading dense layers) served with expert and attention data parallelism: the card's
sizes against the published ones, the cache and memory identities, the expert-parallel load
imbalance against a Monte-Carlo draw, the all-to-all term's linearity, one-line refusals."""
from __future__ import annotations

import math

import numpy as np
import pytest

from sim.core.errors import UserError
from sim.perf import catalog
from sim.perf.roofline import alltoall_coeffs, build_model
from sim.scenario import scenario_from_dict


def ds(tp=8, ep=1, attention_dp=False, gpu="h200", **kw):
    return build_model("deepseek-v3", gpu, tp, "fp8", ep=ep, attention_dp=attention_dp, **kw)


def test_card_matches_the_published_sizes_and_the_mla_cache():
    m = catalog.llm("deepseek-v3")
    assert m.total_params / 1e9 == pytest.approx(m.published_total_b, rel=0.01)
    assert m.active_params / 1e9 == pytest.approx(m.published_active_b, rel=0.03)
    # one latent of 512 + a 64-wide rope key per token and layer, in fp8; each TP rank keeps a copy
    assert m.kv_bytes_per_token("fp8", 1) == 61 * 576
    assert m.kv_bytes_per_token("fp8", 8) == 8 * 61 * 576
    assert m.routed_expert_params == 58 * 256 * 3 * 7168 * 2048


def test_attention_dp_shards_the_cache_and_replicates_the_attention_weights():
    tp, dp = ds(ep=8), ds(ep=8, attention_dp=True)
    # the same routed experts per GPU, but attention/dense/shared/embeddings are replicated
    m = catalog.llm("deepseek-v3")
    rest = m.weight_bytes("fp8") - m.routed_expert_params
    assert dp.weight_bytes_per_gpu - tp.weight_bytes_per_gpu == pytest.approx(rest * (1 - 1 / 8), rel=1e-12)
    # KV: each GPU caches only its own sequences' latents (8x the tokens per byte of free memory)
    free_tp = 8 * (tp.gpu.memory_bytes * 0.9 - tp.weight_bytes_per_gpu - tp.reserve_bytes_per_gpu)
    free_dp = 8 * (dp.gpu.memory_bytes * 0.9 - dp.weight_bytes_per_gpu - dp.reserve_bytes_per_gpu)
    assert tp.kv_capacity_tokens == int(free_tp // (8 * 61 * 576))
    assert dp.kv_capacity_tokens == int(free_dp // (61 * 576))
    # decode attention per cached token: every TP rank reads the whole latent for its 16 heads; under
    # DP one GPU reads it for all 128 heads (absorbed MLA: 2 x 128 x (2 x 512 + 64) FLOPs, compute-bound)
    eta, ks, L = dp.p.attn_decode_eta_bw, dp._ks, 61
    t_bytes = 576 / (dp.gpu.hbm_bandwidth_bytes_s * eta)
    t_flops = 2 * 128 * (2 * 512 + 64) / (dp._F16 * eta)
    # the kernel-time scale acts above the latent stream at the GPU's streaming efficiency
    floor = 576 / (dp.gpu.hbm_bandwidth_bytes_s * dp.p.gemm_eta_bw)
    t = max(t_bytes, t_flops)
    assert dp.decode_coeffs(64)[1] == pytest.approx(L * (floor + ks * (t - floor)) / 8, rel=1e-12)
    t = max(t_bytes, t_flops / 8)   # TP: each rank reads the whole latent for 16 heads (bandwidth-bound)
    assert tp.decode_coeffs(64)[1] == pytest.approx(L * (floor + ks * (t - floor)), rel=1e-12)


def test_expert_parallel_imbalance_matches_a_monte_carlo_draw():
    m = ds(ep=8)
    rng = np.random.default_rng(5)
    for n in (16, 128, 1024):
        # uniform top-8 of 256 experts, experts dealt in 8 contiguous groups of 32
        picks = np.argsort(rng.random((400, n, 256)), axis=2)[:, :, :8] // 32
        counts = np.stack([(picks == g).sum(axis=(1, 2)) for g in range(8)], axis=1)
        mc = float((counts.max(axis=1) / (n * 8 / 8)).mean())
        assert m.ep_imbalance(n) == pytest.approx(mc, rel=0.06), n
    assert m.ep_imbalance(1) <= 8.0
    assert m.ep_imbalance(10**9) == pytest.approx(1.0, abs=1e-3)
    assert ds().ep_imbalance(100) == 1.0


def test_all_to_all_is_affine_in_tokens_and_only_under_attention_dp():
    dp, tp = ds(ep=8, attention_dp=True), ds(ep=8)
    c = [dp.breakdown(b, b * 1000)["communication"] for b in (256, 512, 768)]
    assert c[2] - c[1] == pytest.approx(c[1] - c[0], rel=1e-9) and c[1] > c[0] > 0
    lat, bw = alltoall_coeffs(dp.gpu, 8)
    assert lat >= 0 and 0 < bw < math.inf
    # TP attention all-reduces instead; a one-GPU replica has neither
    assert tp.breakdown(256, 256_000)["communication"] > 0
    one = build_model("mixtral-8x7b", "h100-sxm", 1, "fp8")
    assert one.breakdown(256, 256_000)["communication"] == 0


def test_larger_batches_amortise_the_expert_weights():
    m = ds(ep=8, attention_dp=True)
    per_tok = [m.step_time_s(b, b * 1500, 0, 0.0) / b for b in (8, 64, 512, 2048)]
    assert all(a > b for a, b in zip(per_tok, per_tok[1:]))
    assert m.expected_experts(1) == pytest.approx(8.0)
    assert m.expected_experts(4096) == pytest.approx(256.0, rel=1e-6)


def test_flags_say_what_is_extrapolated():
    reasons = " ".join(ds(ep=8, attention_dp=True).extrapolation)
    for word in ("latent attention", "fine-grained MoE", "expert parallelism", "all-to-all"):
        assert word in reasons
    assert not any("expert parallelism" in r for r in build_model("mixtral-8x7b", "h100-sxm", 2, "fp8").extrapolation)


@pytest.mark.parametrize("kw, msg", [
    (dict(ep=3), "ep must divide tp = 8"),
    (dict(ep=4, attention_dp=True), "attention_dp needs ep = tp"),
])
def test_refusals_name_what_is_allowed(kw, msg):
    with pytest.raises(UserError, match=msg):
        ds(**kw)
    with pytest.raises(UserError, match="needs a mixture-of-experts model"):
        build_model("mistral-7b", "h100-sxm", 2, "fp8", ep=2)


def test_scenario_fields_reach_the_step_model_and_are_validated():
    base = {"name": "ds", "simulation": {"horizon_s": 10.0},
            "deployments": [{"name": "ds", "model": "deepseek-v3", "gpu": "h200", "tp": 8, "ep": 8,
                             "attention_dp": True}],
            "workloads": [{"name": "w", "model": "deepseek-v3", "arrivals": {"kind": "poisson", "rate_per_s": 1.0},
                           "prompt_tokens": {"dist": "constant", "value": 100},
                           "output_tokens": {"dist": "constant", "value": 10}}]}
    sc = scenario_from_dict(base)
    assert sc.deployments[0].ep == 8 and sc.deployments[0].attention_dp
    bad = {**base, "deployments": [{**base["deployments"][0], "ep": 3}]}
    with pytest.raises(UserError, match="ep must divide tp"):
        scenario_from_dict(bad)


def test_expert_parallel_moe_floor_is_the_expert_stream_of_the_busiest_group():
    """Under expert parallelism the MoE layer's streaming floor scales with the busiest group's
    imbalance like its time does: floor <= time at every token count, the floor is the expert
    bytes at the GPU's streaming efficiency (gemm_eta_bw) times the imbalance, and scale 1
    leaves the operator fit unchanged."""
    m = ds(ep=8)
    P = m.p
    for n in (1, 16, 256, 4096):
        o, floor, t, _ = m._moe_raw(n)
        d = m.expected_experts(n)
        tb = (d * m._expert_bytes + n * m.llm.top_k * 2 * m.llm.hidden * 2 / m.ep) / (m._bw * P.moe_eta_bw)
        assert floor <= t
        assert floor == pytest.approx(min(tb * P.moe_eta_bw / P.gemm_eta_bw, t / m.ep_imbalance(n)) * m.ep_imbalance(n),
                                      rel=1e-12)
        assert m._moe_scaled(n, 1.0) == pytest.approx(m._moe_s(n), rel=1e-12)
