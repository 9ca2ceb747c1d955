"""The calibration: held-out accuracy, and the committed fit reproduces measured rows."""
import json

import numpy as np
import pandas as pd
import pytest

from sim.calibration import calibrate as cal
from sim.perf import catalog
from sim.perf.profiles import FRAMEWORK_NAMES
from sim.calibration import measurements
from sim.perf.roofline import build_model, load_params
from sim.core.resources import model_file
from sim.calibration.wholebatch import static_batch_latency_s


@pytest.fixture(scope="module")
def ops():
    return measurements.read("vidur_ops.csv")


def test_gemm_fit_predicts_a_held_out_model(ops):
    """Fit H100 GEMMs without Llama-3-8B (Mixtral's attention/expert shapes), predict it."""
    card = catalog.gpu("h100-sxm")
    g, _ = cal.op_rows(ops, "h100-sxm")
    train, test = g[g.model != "llama-3-8b"], g[g.model == "llama-3-8b"]
    x = cal.fit_gemm(train, card.hbm_bandwidth_bytes_s, card.dense_flops("bf16"))
    pred = cal.gemm_predict(x, test, card.hbm_bandwidth_bytes_s, card.dense_flops("bf16"))
    assert np.median(cal.ape(pred, test.t_s)) < 0.10


@pytest.mark.parametrize("gpu,op,n,tol", [
    ("h100-sxm", "mlp_up_proj", 1, 0.10), ("h100-sxm", "mlp_up_proj", 4096, 0.10),
    ("h100-sxm", "attn_pre_proj", 64, 0.15), ("a100-sxm-80gb", "mlp_down_proj", 1, 0.10),
    ("a100-sxm-80gb", "mlp_down_proj", 2048, 0.10),
])
def test_committed_model_reproduces_measured_gemm_rows(ops, gpu, op, n, tol):
    """Llama-3-8B at TP1 through PerfModel's own GEMM code with the committed parameters."""
    m = build_model("llama-3-8b", gpu, 1, "bf16")
    d = ops[(ops.gpu == gpu) & (ops.model == "llama-3-8b") & (ops.tp == 1) & (ops.num_tokens == n)]
    meas = d[f"{op}_ms"].median() * 1e-3
    K, N = {"mlp_up_proj": (4096, 2 * 14336), "mlp_down_proj": (14336, 4096),
            "attn_pre_proj": (4096, 4096 + 2 * 1024)}[op]
    pred = sum(m._gemm_s(n, K, N))
    assert pred == pytest.approx(meas, rel=tol)


@pytest.mark.parametrize("n", [1, 8, 64, 512])
def test_committed_model_reproduces_moe_kernel_curve(n):
    d = measurements.read("public/moe_kernel_timings.csv")
    d = d[d.gpu.str.contains("H100") & (d.num_tokens == n)]
    meas = float(d.kernel_time_us.iloc[0]) * 1e-6
    p = load_params("h100-sxm")
    m = build_model("mixtral-8x7b", "h100-sxm", 2, "bf16", params=p.__class__(**{**p.to_json(), "moe_skew": 0.0}))
    o, b, f = m._moe_s(n)
    pred = o - p.gemm_overhead_s + b + f  # the benchmark times the fused-experts kernel alone
    assert pred == pytest.approx(meas, rel=0.08)


def test_committed_model_reproduces_mixtral_whole_batch_rows():
    """vLLM PR #3240 (A100 TP2, Mixtral, 1000 in / 50 out) was never fitted on."""
    v = measurements.read("public/vllm_github_pr_and_ci_measurements.csv")
    d = v[v.source_url.str.endswith("/pull/3240") & v.engine_variant.str.startswith("PR #")]
    m = build_model("mixtral-8x7b", "a100-sxm-80gb", 2, "bf16", framework="vllm", gpu_memory_utilization=1.0)
    errs = [static_batch_latency_s(m, int(r.batch_size), 1000, 50) / r.value - 1 for _, r in d.iterrows()]
    assert np.median(np.abs(errs)) < 0.15


def test_allreduce_fit_reproduces_rows():
    a = measurements.read("vidur_all_reduce.csv")
    p = load_params("h100-sxm")
    for tp in (2, 4, 8):
        d = a[(a.gpu == "h100-sxm") & (a.tp == tp) & (a.size_bytes >= 2**20)]
        c = p.allreduce[str(tp)]
        pred = c["latency_s"] + d.size_bytes / (c["bw_gb_s"] * 1e9)
        assert np.median(cal.ape(pred, d.all_reduce_ms * 1e-3)) < 0.15


def test_committed_report_meets_heldout_target():
    rep = pd.read_csv(model_file("..", "results", "calibration", "residuals_operators.csv")) \
        if model_file("..", "results").exists() else None
    if rep is None:
        pytest.skip("results/ not shipped with an installed package")
    overall = rep[(rep.component == "(all)")].iloc[0]
    assert overall.median_ape_heldout <= 0.10


def test_calibration_files_are_complete():
    for gid in cal.CALIBRATED_GPUS:
        data = json.loads(model_file("calibration", f"{gid}.json").read_text())
        for key in ("gemm_eta_bw", "gemm_eta_flops", "moe_eta_bw", "allreduce", "framework_profiles", "meta"):
            assert key in data, (gid, key)
        assert 0 < data["gemm_eta_bw"] <= 1 and 0 < data["gemm_eta_flops"] <= 1
        assert set(data["framework_profiles"]) == set(FRAMEWORK_NAMES)
        # the default (top-level) overheads are the in-flight-batching trtllm profile's
        prof = data["framework_profiles"]["trtllm"]
        assert "perf-overview" in prof["fitted_on"] and "held out" in prof["fitted_on"]
        assert data["iteration_overhead_s"] == prof["iteration_overhead_s"]
        assert data["per_seq_overhead_s"] == prof["per_seq_overhead_s"]
        assert data["kernel_time_scale"] == prof["kernel_time_scale"]
        assert data["per_layer_overhead_s"] == prof["per_layer_overhead_s"]


@pytest.mark.slow
def test_recalibration_reproduces_committed_parameters():
    out = cal.calibrate(write=False, log=lambda *a: None)
    for gid, p in out["params"].items():
        committed = load_params(gid)
        assert p.gemm_eta_bw == pytest.approx(committed.gemm_eta_bw, rel=1e-6)
        assert p.moe_eta_bw == pytest.approx(committed.moe_eta_bw, rel=1e-6)
        assert p.iteration_overhead_s == pytest.approx(committed.iteration_overhead_s, rel=1e-6)
        assert p.per_layer_overhead_s == pytest.approx(committed.per_layer_overhead_s, rel=1e-6)
        # the operator refit keeps every throughput-fitted profile (trtllm and its releases)
        assert set(p.framework_profiles) == set(committed.framework_profiles)
        assert p.framework_profiles["trtllm-v0.14"] == committed.framework_profiles["trtllm-v0.14"]


def test_moe_scale_fit_recovers_a_scale_above_the_streaming_floor():
    """moe_fit.fit_scale: rows generated as floor + k (t - floor) give back k (bisection on the
    weighted median); the floor is never scaled, so at k -> 0 a prediction keeps its floor."""
    from sim.calibration import moe_fit
    d = moe_fit.rows()
    d = d[d.gpu == moe_fit.FIT_GPU].groupby(["precision", "model", "tp"]).head(40).reset_index(drop=True)
    parts = moe_fit.predict_parts(d)
    pred, floor = parts[:, 0], parts[:, 1]
    assert (floor > 0).all() and (floor < pred).all()
    for k in (0.7, 1.2):
        d2 = d.assign(measured_s=moe_fit.scaled(pred, floor, k))
        assert moe_fit.fit_scale(d2, pred, floor) == pytest.approx(k, rel=1e-6)
        # the plain product is a different model: it does not recover k on the same rows
        assert abs(moe_fit.fit_scale(d2, pred) - k) > 0.01
    assert moe_fit.scaled(pred, floor, 0.0) == pytest.approx(floor)
