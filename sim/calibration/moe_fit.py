"""The fused-MoE kernel's own time scale (``moe_kernel_time_scale``; docs/perf.md, "MoE kernel scale").

A framework profile's ``kernel_time_scale`` is fitted end to end on DENSE throughput rows: it
says how much faster that software's dense GEMM / attention / elementwise kernels are than the
operator kernels the step model was fitted on.  Nothing in those rows measures a fused-MoE
kernel, so the MoE layer gets its own scale, fitted on MoE kernel measurements:

* fitted on: AIConfigurator's vLLM fused-MoE timings for the Mixtral-8x7B and Mixtral-8x22B
  expert shapes on **H100** (bf16 and fp8, ``moe_tp`` 1-8, no expert parallelism, 1-16,384
  tokens, balanced and power-law-1.01 routing, the Triton ``vllm_fused_moe`` kernel; each
  dtype weighted equally),
  ``models/measurements/public/aiconfigurator_moe_kernel_vllm_mixtral.csv``;
* held out: the same tables on **H200** and **A100** (never fitted) and leave-one-dtype-out /
  leave-one-shape-out on H100.

The scale acts on the MoE operator model fitted by ``sovsim calibrate`` on vLLM PR #24700
(H100, Mixtral 8x7B, TP2, bf16) above its streaming floor (``floor + scale * (t - floor)``; the
expert weights at the GPU's streaming efficiency are not shortened,
:func:`sim.perf.roofline.scaled_kernel_s`): the same formula as :meth:`sim.perf.roofline.PerfModel`
uses for a MoE layer (coverage-weighted expert weights, 16-bit activations, router overheads).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from sim.calibration import measurements
from sim.perf import catalog
from sim.perf.catalog import ACTIVATION_BYTES, BYTES_PER_PARAM
from sim.perf.roofline import Params, expert_probs, load_params

FILE = "public/aiconfigurator_moe_kernel_vllm_mixtral.csv"
SHAPES = {"Mixtral-8x7B": "mixtral-8x7b", "Mixtral-8x22B": "mixtral-8x22b"}
DEVICES = {"NVIDIA H100 80GB HBM3": "h100-sxm", "NVIDIA H200": "h200", "NVIDIA A100-SXM4-80GB": "a100-sxm-80gb"}
DTYPES = {"bfloat16": "bf16", "fp8": "fp8"}
FIT_GPU = "h100-sxm"
# the Triton fused-MoE kernel vLLM PR #24700 timed; the FlashInfer/CUTLASS paths of newer vLLM
# versions are other kernels (their fp8 rows run 4x slower) and are not used
KERNEL = "vllm_fused_moe"
MAX_TOKENS = 16384  # the engine's iterations stay below 8192 tokens; larger are off the operating range


def rows() -> pd.DataFrame:
    d = measurements.read(FILE)
    d = d[d.model_shape.isin(list(SHAPES)) & d.device.isin(list(DEVICES)) & d.moe_dtype.isin(list(DTYPES))
          & (d.num_tokens <= MAX_TOKENS) & (d.kernel_source == KERNEL)]
    return pd.DataFrame({"model": d.model_shape.map(SHAPES), "gpu": d.device.map(DEVICES),
                         "precision": d.moe_dtype.map(DTYPES), "tp": d.moe_tp_size.astype(int),
                         "n": d.num_tokens.astype(float), "version": d.version.astype(str),
                         "distribution": d.distribution, "measured_s": d.latency_ms.astype(float) * 1e-3}
                        ).reset_index(drop=True)


def moe_layer_parts(p: Params, model: str, gpu: str, tp: int, precision: str, n: float) -> tuple[float, float]:
    """One MoE layer's time from the operator fit, unscaled (as ``PerfModel._moe_raw``), and its
    streaming floor (the coverage-weighted expert weights and the activations at the GPU's
    streaming efficiency, ``gemm_eta_bw``), which a kernel-time scale does not shorten (:func:`sim.perf.roofline.scaled_kernel_s`)."""
    m, g = catalog.llm(model), catalog.gpu(gpu)
    bw, F = g.hbm_bandwidth_bytes_s, g.dense_flops(precision)
    probs = expert_probs(m.experts, m.top_k, p.moe_skew)
    d = sum(1.0 - (1.0 - q) ** n for q in probs)
    tb = (d * m.expert_params / tp * BYTES_PER_PARAM[precision] + n * m.top_k * 2 * m.hidden * ACTIVATION_BYTES) \
        / (bw * p.moe_eta_bw)
    tf = n * m.top_k * 2.0 * m.expert_params / tp / (F * p.moe_eta_flops)
    big = max(tb, tf)
    t = big * ((tb / big) ** p.gemm_p + (tf / big) ** p.gemm_p) ** (1.0 / p.gemm_p)
    return p.moe_overhead_s + p.gemm_overhead_s + t, min(tb * p.moe_eta_bw / p.gemm_eta_bw, t)


def moe_layer_s(p: Params, model: str, gpu: str, tp: int, precision: str, n: float) -> float:
    """One MoE layer's time from the operator fit, unscaled."""
    return moe_layer_parts(p, model, gpu, tp, precision, n)[0]


def predict_parts(d: pd.DataFrame, params_by_gpu: dict | None = None) -> np.ndarray:
    """``(rows, 2)``: every row's unscaled prediction and its streaming floor."""
    def par(gid):
        return params_by_gpu[catalog.gpu(gid).calibration_from] if params_by_gpu else load_params(gid)
    return np.array([moe_layer_parts(par(r.gpu), r.model, r.gpu, int(r.tp), r.precision, r.n)
                     for r in d.itertuples(index=False)]).reshape(-1, 2)


def predict_unscaled(d: pd.DataFrame, params_by_gpu: dict | None = None) -> np.ndarray:
    return predict_parts(d, params_by_gpu)[:, 0]


def scaled(pred: np.ndarray, floor: np.ndarray | None, scale: float) -> np.ndarray:
    """Predictions under a kernel-time scale, above their streaming floor (0: the plain product)."""
    f = 0.0 if floor is None else floor
    return f + scale * (pred - f)


def _weighted_median(x: np.ndarray, w: np.ndarray) -> float:
    o = np.argsort(x)
    cw = np.cumsum(w[o]) / w.sum()
    return float(x[o][np.searchsorted(cw, 0.5)])


def fit_scale(d: pd.DataFrame, pred: np.ndarray, floor: np.ndarray | None = None) -> float:
    """The scale at which the weighted median of log(measured / scaled prediction) is 0; every
    dtype weighs the same.  Without a floor that is exp of the weighted median of
    log(measured / predicted); with one the median falls monotonically in the scale and is
    bisected."""
    meas = d.measured_s.to_numpy()
    w = 1.0 / d.groupby("precision").precision.transform("count").to_numpy()
    if floor is None:
        return float(np.exp(_weighted_median(np.log(meas / pred), w)))
    lo, hi = 0.05, 20.0
    for _ in range(80):
        mid = math.sqrt(lo * hi)
        if _weighted_median(np.log(meas / scaled(pred, floor, mid)), w) > 0.0:
            lo = mid
        else:
            hi = mid
    return float(math.sqrt(lo * hi))


def run_fit(dense_scale: float, params_by_gpu: dict | None = None, log=print) -> dict:
    """Fit the MoE scale on H100 rows; score held-out rows with the dense scale (before) and
    the MoE scale (after). Returns the scale and a per-group report."""
    d = rows()
    parts = predict_parts(d, params_by_gpu)
    pred, floor = parts[:, 0], parts[:, 1]
    fit_sel = (d.gpu == FIT_GPU).to_numpy()
    scale = fit_scale(d[fit_sel], pred[fit_sel], floor[fit_sel])
    d["pred_unscaled_s"] = pred
    d["floor_s"] = floor
    d["err_before"] = scaled(pred, floor, dense_scale) / d.measured_s - 1.0
    d["err_after"] = scaled(pred, floor, scale) / d.measured_s - 1.0
    # leave-one-out on the fitted GPU: each dtype / shape predicted by the scale of the others
    cv = np.full(len(d), np.nan)
    for col in ("precision", "model"):
        for v in d[col].unique():
            tr = fit_sel & (d[col] != v).to_numpy()
            te = fit_sel & (d[col] == v).to_numpy()
            if tr.any() and te.any():
                k = fit_scale(d[tr], pred[tr], floor[tr])
                cv[te] = np.where(np.isnan(cv[te]), 0.0, cv[te]) + np.log(scaled(pred[te], floor[te], k)
                                                                          / d.measured_s.to_numpy()[te])
    d["err_cv"] = np.where(fit_sel, np.exp(cv / 2.0) - 1.0, np.nan)  # mean of the two log-errors
    report = []
    for (gpu, prec), g in d.groupby(["gpu", "precision"]):
        held = gpu != FIT_GPU
        e_after = g.err_after if held else g.err_cv
        report.append({"gpu": gpu, "precision": prec, "rows": len(g), "held_out": held,
                       "mdape_before": float(g.err_before.abs().median()), "bias_before": float(g.err_before.median()),
                       "mdape_after": float(e_after.abs().median()), "bias_after": float(e_after.median())})
    rep = pd.DataFrame(report)
    log(f"fused-MoE kernel time scale {scale:.3f} (fitted on {int(fit_sel.sum())} {FIT_GPU} rows; "
        f"dense kernel_time_scale was {dense_scale:.3f})")
    for r in rep.itertuples(index=False):
        log(f"  {r.gpu} {r.precision}: {r.rows} rows {'held out' if r.held_out else 'cross-validated'}: "
            f"MdAPE {100 * r.mdape_before:.1f}% -> {100 * r.mdape_after:.1f}%, "
            f"bias {100 * r.bias_before:+.1f}% -> {100 * r.bias_after:+.1f}%")
    note = (f"{FILE.split('/')[-1]}: AIConfigurator vLLM {KERNEL} timings, Mixtral 8x7B/8x22B expert shapes, "
            f"{FIT_GPU} bf16+fp8 (dtypes weighted equally), moe_tp 1-8, <= {MAX_TOKENS} tokens "
            f"({int(fit_sel.sum())} rows); held out: H200 and A100 rows (written by sovsim calibrate)")
    return {"scale": scale, "rows": d, "report": rep, "fit_rows": int(fit_sel.sum()), "fitted_on": note}
