"""``sovsim calibrate``: fit the step-time model's parameters per GPU from the measurements.

Fits (scipy.optimize.least_squares on log residuals, i.e. relative error):

* GEMMs (QKV, output, gate/up, down projections; vidur, A100/H100, 8 dense models, TP 1-8,
  1-32768 tokens): ``eta_bw``, ``eta_flops``, blend exponent ``p``, per-kernel overhead;
* elementwise kernels (norms, RoPE, SiLU-and-mul, residual add, embedding): one bandwidth
  efficiency per kind and one per-kernel overhead;
* attention kernels (vidur, A100, FlashAttention, 70B shape at TP2): decode overhead,
  per-sequence cost and KV-read efficiency; prefill overhead and FLOP efficiency.
  H100 reuses the A100 efficiencies (no H100 attention measurements exist in the set);
* the fused-MoE kernel curve (vLLM PR #24700, Mixtral 8x7B at TP2 on H100): MoE
  bandwidth/FLOP efficiencies and overhead with uniform routing (the benchmark's random
  router logits).  A100 gets the H100 MoE/GEMM efficiency ratio;
* the routing skew of real traffic from the Mixtral paper's per-expert load (Figure 7
  estimates);
* NCCL all-reduce inside one node: latency and algorithm bandwidth per TP degree; H100 on
  microsoft/apex_plus's NCCL 2.18 timings (the GPU-side cost a CUDA-graph serving iteration pays;
  vidur's H100 rows carry a ~38 us host floor below 1 MB and agree above it), checked on apex's H200
  rows; A100 on vidur's;
* the serving framework's CPU time per iteration (vidur cpu_overheads, A100 host).

Every component is judged on held-out rows: leave-one-model-out for GEMMs and elementwise
kernels, leave-one-size-out (blocks of token counts, message sizes or context lengths) for the
others.  Then the whole-iteration model is checked against end-to-end static-batch public
measurements (vLLM PRs and CI, TensorRT-LLM static batching; see ``sim.calibration.wholebatch``).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from sim.perf import catalog
from sim.calibration import measurements
from sim.perf.roofline import Params
from sim.calibration.outputs import refit_models_dir
from sim.core import progress as progress_mod
from sim.core.resources import model_file
from sim.core.runfolder import write_atomic
from sim.perf.step import prefill_attn_pairs
from sim.calibration import moe_fit, wholebatch
from sim.calibration.wholebatch import CUSTOM_ALLREDUCE
from sim.perf.roofline import expert_probs, load_params

CALIBRATED_GPUS = ("a100-sxm-80gb", "h100-sxm")
GEMM_OPS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")
EW_OPS = {"input_layernorm": "norm", "post_attention_layernorm": "norm", "attn_rope": "rope",
          "mlp_act": "act", "add": "add", "emb": "emb"}
EW_KINDS = ("norm", "rope", "act", "add", "emb")
A = 2.0  # fp16 bytes of the measured runs


def regime(n_tokens):
    """Operator rows by tokens in the batch: <=16 small-batch decode, <=256 large-batch
    decode, above that prefill-sized."""
    n = np.asarray(n_tokens)
    return np.where(n <= 16, "decode_small", np.where(n <= 256, "decode_large", "prefill"))


def ape(pred, meas):
    return np.abs(np.asarray(pred) / np.asarray(meas) - 1.0)


# ------------------------------------------------------------------ GEMMs and elementwise
def op_rows(ops: pd.DataFrame, gpu: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Long tables of GEMM rows (n, K, N, t_s) and elementwise rows (n, bytes_tok, kind, t_s)."""
    d = ops[ops.gpu == gpu]
    g_rows, e_rows = [], []
    for mid, dm in d.groupby("model"):
        m = catalog.llm(mid)
        for tp, dt in dm.groupby("tp"):
            n = dt.num_tokens.to_numpy(float)
            up = (2 if m.gated_mlp else 1) * m.ffn / tp
            shapes = {"attn_pre_proj": (m.hidden, (m.q_dim + 2 * m.kv_dim) / tp),
                      "attn_post_proj": (m.q_dim / tp, m.hidden),
                      "mlp_up_proj": (m.hidden, up), "mlp_down_proj": (m.ffn / tp, m.hidden)}
            for op, (K, N) in shapes.items():
                t = dt[f"{op}_ms"].to_numpy(float) * 1e-3
                g_rows.append(pd.DataFrame({"model": mid, "tp": tp, "op": op, "n": n, "K": K, "N": N, "t_s": t}))
            per_tok = {"input_layernorm": 2 * m.hidden * A, "post_attention_layernorm": 2 * m.hidden * A,
                       "attn_rope": 2 * (m.q_dim + m.kv_dim) / tp * A,
                       "mlp_act": (3 if m.gated_mlp else 2) * m.ffn / tp * A,
                       "add": 3 * m.hidden * A, "emb": 2 * m.hidden * A}
            for op, kind in EW_OPS.items():
                col = f"{op}_ms"
                if col not in dt.columns:
                    continue
                t = dt[col].to_numpy(float) * 1e-3
                ok = np.isfinite(t) & (t > 0)
                e_rows.append(pd.DataFrame({"model": mid, "tp": tp, "op": op, "kind": kind, "n": n[ok],
                                            "bytes_tok": per_tok[op], "t_s": t[ok]}))
    g = pd.concat(g_rows, ignore_index=True)
    e = pd.concat(e_rows, ignore_index=True)
    # repeated measurements of one point: their median (one row per point)
    g = g.groupby(["model", "tp", "op", "n", "K", "N"], as_index=False).t_s.median()
    e = e.groupby(["model", "tp", "op", "kind", "n", "bytes_tok"], as_index=False).t_s.median()
    return g, e


def blend(tb, tf, p):
    big = np.maximum(tb, tf)
    return big * ((tb / big) ** p + (tf / big) ** p) ** (1.0 / p)


def _gemm_work(rows):
    n, K, N = rows.n.to_numpy(), rows.K.to_numpy(), rows.N.to_numpy()
    return (K * N * A + n * (K + N) * A), 2.0 * n * K * N


def gemm_predict(x, rows, bw, F, work=None):
    eta_b, eta_f, p, c = x
    b, f = work if work is not None else _gemm_work(rows)
    return c + blend(b / (bw * eta_b), f / (F * eta_f), p)


def fit_gemm(rows: pd.DataFrame, bw: float, F: float) -> np.ndarray:
    y = np.log(rows.t_s.to_numpy())
    work = _gemm_work(rows)

    def res(z):
        x = (1 / (1 + np.exp(-z[0])), 1 / (1 + np.exp(-z[1])), 1.0 + np.exp(z[2]), np.exp(z[3]))
        return np.log(gemm_predict(x, rows, bw, F, work)) - y

    z = least_squares(res, [1.5, 1.0, 1.0, math.log(5e-6)], loss="soft_l1", f_scale=0.1).x
    return np.array([1 / (1 + np.exp(-z[0])), 1 / (1 + np.exp(-z[1])), 1.0 + np.exp(z[2]), np.exp(z[3])])


def ew_predict(x, rows, bw):
    """x = 5 bandwidth efficiencies, 5 latency floors, 5 blend exponents (EW_KINDS order):
    ``t = (c^p + (bytes / (BW eta))^p)^(1/p)`` -- a floor for tiny launches, bandwidth beyond."""
    idx = rows.kind.map({k: i for i, k in enumerate(EW_KINDS)}).to_numpy()
    x = np.asarray(x)
    eta, c, p = x[:5][idx], x[5:10][idx], x[10:15][idx]
    return blend(c, rows.n.to_numpy() * rows.bytes_tok.to_numpy() / (bw * eta), p)


def fit_ew(rows: pd.DataFrame, bw: float) -> np.ndarray:
    """Each kind separately (its parameters touch only its rows)."""
    etas, cs, ps = [], [], []
    for kind in EW_KINDS:
        d = rows[rows.kind == kind]
        x, y = (d.n.to_numpy() * d.bytes_tok.to_numpy()) / bw, np.log(d.t_s.to_numpy())

        def res(z):
            return np.log(blend(np.exp(z[1]), x * (1 + np.exp(-z[0])), 1.0 + np.exp(z[2]))) - y

        z = least_squares(res, [0.0, math.log(3e-6), 0.0], loss="soft_l1", f_scale=0.1).x
        etas.append(1 / (1 + np.exp(-z[0])))
        cs.append(np.exp(z[1]))
        ps.append(1.0 + np.exp(z[2]))
    return np.array(etas + cs + ps)


# ------------------------------------------------------------------ attention (A100)
def attention_rows(att: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    dec = att[~att.is_prefill.astype(bool)].copy()
    dec = dec[dec.attn_decode_ms > 0]
    dec["t_s"] = dec.attn_decode_ms * 1e-3
    dec["kv_tokens"] = dec.batch_size * (dec.kv_cache_size + 1)
    pre = att[att.is_prefill.astype(bool)].copy()
    pre = pre[pre.attn_prefill_ms > 0]
    pre["t_s"] = pre.attn_prefill_ms * 1e-3
    pre["pairs"] = [prefill_attn_pairs(int(c), int(n), None) for c, n in zip(pre.kv_cache_size, pre.prefill_chunk_size)]
    return dec, pre


def attn_shape(att: pd.DataFrame) -> tuple[float, float]:
    """(KV bytes per attended token per layer, FLOPs per (query, key) pair) per GPU, fp16."""
    r = att.iloc[0]
    tp = int(r.tp)
    head_dim = int(r.n_embd) // int(r.n_q_head)
    kv_heads = max(int(r.n_kv_head), tp) / tp
    return 2.0 * kv_heads * head_dim * A, 4.0 * (int(r.n_q_head) / tp) * head_dim


def dec_predict(x, rows, bw, kvb):
    c0, cs, eta = x
    return c0 + cs * rows.batch_size.to_numpy() + rows.kv_tokens.to_numpy() * kvb / (bw * eta)


def fit_dec(rows, bw, kvb):
    y = np.log(rows.t_s.to_numpy())

    def res(z):
        return np.log(dec_predict((np.exp(z[0]), np.exp(z[1]), 1 / (1 + np.exp(-z[2]))), rows, bw, kvb)) - y

    z = least_squares(res, [math.log(1e-5), math.log(1e-7), 0.0], loss="soft_l1", f_scale=0.1).x
    return np.array([np.exp(z[0]), np.exp(z[1]), 1 / (1 + np.exp(-z[2]))])


def pre_predict(x, rows, F, fpp):
    """``c0 + (pairs + k * chunk) * flops_per_pair / (F eta)``: ``k`` extra key positions per
    query (the masked part of the diagonal tiles), so the term scales like FLOPs."""
    c0, eta, k = x
    return c0 + (rows.pairs.to_numpy() + k * rows.prefill_chunk_size.to_numpy()) * fpp / (F * eta)


def fit_pre(rows, F, fpp):
    y = np.log(rows.t_s.to_numpy())

    def res(z):
        return np.log(pre_predict((np.exp(z[0]), 1 / (1 + np.exp(-z[1])), np.exp(z[2])), rows, F, fpp)) - y

    z = least_squares(res, [math.log(1e-5), 0.0, math.log(64.0)], loss="soft_l1", f_scale=0.1).x
    return np.array([np.exp(z[0]), 1 / (1 + np.exp(-z[1])), np.exp(z[2])])


# ------------------------------------------------------------------ MoE kernel (H100)
def moe_rows() -> pd.DataFrame:
    d = measurements.read("public/moe_kernel_timings.csv")
    d = d[d.gpu.str.contains("H100")].copy()
    d["t_s"] = d.kernel_time_us * 1e-6
    d["n"] = d.num_tokens.astype(float)
    return d[["n", "t_s"]].reset_index(drop=True)


MOE_KERNEL_TP = 2  # vLLM PR #24700 benchmark: Mixtral 8x7B at TP2


def moe_predict(x, n, bw, F, p, skew=0.0):
    eta_b, eta_f, c = x
    m = catalog.llm("mixtral-8x7b")
    probs = expert_probs(m.experts, m.top_k, skew)
    d = sum(1.0 - (1.0 - q) ** n for q in probs)
    eb = m.expert_params / MOE_KERNEL_TP * A
    tb = (d * eb + n * m.top_k * 2 * m.hidden * A) / (bw * eta_b)
    tf = n * m.top_k * 2.0 * m.expert_params / MOE_KERNEL_TP / (F * eta_f)
    return c + blend(tb, tf, p)


def fit_moe(rows, bw, F, p):
    n, y = rows.n.to_numpy(), np.log(rows.t_s.to_numpy())

    def res(z):
        return np.log(moe_predict((1 / (1 + np.exp(-z[0])), 1 / (1 + np.exp(-z[1])), np.exp(z[2])), n, bw, F, p)) - y

    z = least_squares(res, [1.0, 0.0, math.log(2e-5)], loss="soft_l1", f_scale=0.1).x
    return np.array([1 / (1 + np.exp(-z[0])), 1 / (1 + np.exp(-z[1])), np.exp(z[2])])


def routing_skew() -> tuple[float, str]:
    """Largest relative deviation of one expert's load share from uniform in the Mixtral
    paper's Figure 7 (third-party estimates): the ``skew`` of :func:`sim.perf.roofline.expert_probs`."""
    d = measurements.read("public/mixtral_routing_statistics.csv")
    d = d[d.statistic.str.startswith("share of")]
    dev = (d.value_pct - d.uniform_random_reference_pct).abs() / d.uniform_random_reference_pct
    if "uniform_random_reference_pct" in d and d.uniform_random_reference_pct.isna().any():
        dev = (d.value_pct - 12.5).abs() / 12.5
    return float(min(0.95, dev.max())), f"max |share - 12.5%| / 12.5% over {len(d)} Figure-7 estimates"


# ------------------------------------------------------------------ all-reduce
def ar_predict(x, size):
    lat, bw = x
    return lat + size / bw


def fit_ar(rows):
    s, y = rows.size_bytes.to_numpy(float), np.log(rows.all_reduce_ms.to_numpy() * 1e-3)

    def res(z):
        return np.log(ar_predict((np.exp(z[0]), np.exp(z[1])), s)) - y

    z = least_squares(res, [math.log(2e-5), math.log(1e11)], loss="soft_l1", f_scale=0.1).x
    return np.exp(z)


# ------------------------------------------------------------------ framework overhead
def fit_cpu_overhead() -> tuple[float, float, pd.DataFrame]:
    """Per-iteration CPU time (schedule + prepare inputs + sampler + output processing)
    = a + b * batch, least squares over all rows (A100 host, 2024 framework)."""
    d = measurements.read("vidur_cpu_overheads_a100.csv")
    y = (d.schedule_median + d.prepare_inputs_e2e_median + d.sampler_e2e_median
         + d.process_model_outputs_median).to_numpy() * 1e-3
    X = np.stack([np.ones(len(d)), d.batch_size.to_numpy(float)], axis=1)
    a, b = np.linalg.lstsq(X, y, rcond=None)[0]
    out = pd.DataFrame({"model": d.model_name, "batch": d.batch_size, "tp": d.tensor_parallel_degree,
                        "t_s": y, "pred_s": a + b * d.batch_size.to_numpy(float)})
    return float(a), float(b), out


# default profile of the engine: TensorRT-LLM in-flight batching (`trtllm`), fitted on the
# dense perf-overview throughput rows of one version by `sovsim calibrate --throughput`
# (sim/calibration/throughput_fit.py) and carried over here; without it, the static-batching profile
# `trtllm-v0.9` (batches up to 1024; the vLLM rows stop at batch 64 and come from the 2024
# Python scheduler). See docs/perf.md.
DEFAULT_FRAMEWORK = "trtllm"
FALLBACK_FRAMEWORK = "trtllm-v0.9"
FRAMEWORK_DATASETS = {  # serving-software profile -> whole-batch datasets it is fitted on
    "vllm": ("argonne-vllm", "vllm-ci"),
    "trtllm-v0.9": ("trtllm-static-v0.9.0", "trtllm-static-v0.5.0", "trtllm-ttft-v0.9.0"),
}


def fit_framework(wb: pd.DataFrame, datasets) -> tuple[np.ndarray, np.ndarray]:
    """Framework overheads (per iteration, per sequence per iteration) of one serving-software
    profile, fitted on its dense whole-batch rows, each dataset weighted equally; MoE rows
    are never used.  Returns the fit and, for the profile's rows, the leave-one-dataset-out
    prediction (MoE rows and single-dataset profiles: the full fit)."""
    ok = np.isfinite(wb.gpu_s.to_numpy())
    mine = wb.dataset.isin(list(datasets)).to_numpy()
    dense = ok & mine & ~wb.model.str.startswith("mixtral").to_numpy()

    def fit(mask):
        d = wb[mask]
        w = 1.0 / d.groupby("dataset").dataset.transform("count").to_numpy()
        g, it, sq, y = d.gpu_s.to_numpy(), d.iterations.to_numpy(float), d.seq_iterations.to_numpy(float), d.meas_s.to_numpy()

        def res(z):
            return np.sqrt(w) * np.log((g + np.exp(z[0]) * it + np.exp(z[1]) * sq) / y)

        return np.exp(least_squares(res, [math.log(1e-3), math.log(1e-5)], loss="soft_l1", f_scale=0.1).x)

    x = fit(dense)
    pred = np.full(len(wb), np.nan)
    sel = ok & mine
    pred[sel] = (wb.gpu_s + x[0] * wb.iterations + x[1] * wb.seq_iterations).to_numpy()[sel]
    for ds in wb[dense].dataset.unique():
        te = dense & (wb.dataset == ds).to_numpy()
        if (dense & ~te).sum() >= 10:
            xi = fit(dense & ~te)
            pred[te] = (wb.gpu_s + xi[0] * wb.iterations + xi[1] * wb.seq_iterations).to_numpy()[te]
    return x, pred


# ------------------------------------------------------------------ driver
def _folds_by_blocks(values: np.ndarray, k: int) -> np.ndarray:
    """Fold id per row: ``k`` contiguous blocks of the sorted distinct values (leave-one-size-out)."""
    uniq = np.unique(values)
    edges = np.array_split(uniq, k)
    lookup = {v: i for i, blk in enumerate(edges) for v in blk}
    return np.array([lookup[v] for v in values])


def calibrate(write: bool = True, results_dir: Path | None = None, figure: bool = True, log=print,
              models_out: Path | None = None, progress=None) -> dict:
    """Fit every GPU, write ``MODELS/calibration/*.json`` and the residual report.

    ``MODELS`` is ``models_out``, else the checkout's ``models/``
    (:func:`sim.calibration.outputs.refit_models_dir`: never site-packages).  The committed
    values the fit keeps (the dense kernel-time scale, the throughput-fitted ``trtllm``
    profile) are read from ``MODELS/calibration`` when there, else from the installed models.
    ``progress`` (:mod:`sim.core.progress`) counts the fitting stages."""
    t0 = time.perf_counter()
    dest = refit_models_dir(models_out, "calibrate") / "calibration" if write else None

    def committed_file(name: str) -> Path:
        f = dest / name if dest is not None else None
        return f if f is not None and f.is_file() else model_file("calibration", name)

    stages = progress_mod.start(progress, 4, "stage", "calibrate")
    ops = measurements.read("vidur_ops.csv")
    arr, apex = all_reduce_rows(measurements.read("vidur_all_reduce.csv"))
    resid: list[pd.DataFrame] = []  # rows: component, op, gpu, regime, model, pred, meas, split
    attention = _fit_attention(measurements.read("vidur_attention_a100.csv"), resid, log)
    shared = _fit_shared(resid, log)
    custom_ar = _fit_custom_allreduce(resid, log)
    params: dict[str, Params] = {}
    moe_ratio = None
    for gid in ("h100-sxm", "a100-sxm-80gb"):  # H100 first: its MoE fit transfers to A100
        params[gid], moe_ratio = _fit_gpu(gid, ops, arr, attention, shared, moe_ratio, params, resid, log,
                                          ar_check=apex[apex.gpu == "h200"] if gid == "h100-sxm" else None)
        params[gid].allreduce_custom = custom_ar  # H100-measured; PerfModel scales bandwidth by NVLink

    stages.update(1)
    stages.note("MoE kernel scale")
    committed_scale, moe_out = _fit_moe_kernel_scale(params, committed_file, log)
    stages.update(1)
    stages.note("framework overheads")
    wb = _fit_framework_profiles(params, committed_file, shared, log)

    res = pd.concat(resid, ignore_index=True)
    res["ape_fit"] = ape(res.fit, res.meas)
    res["ape_heldout"] = ape(res.heldout, res.meas)
    report = summarize(res)
    stages.update(1)
    stages.note("writing")
    if write:
        _write_params(dest, params, log)
    out = {"params": params, "residuals": res, "report": report, "wholebatch": wb, "moe_scale": moe_out,
           "seconds": time.perf_counter() - t0}
    if results_dir is not None:
        write_report(out, Path(results_dir), figure=figure, log=log)
        moe_out["report"].assign(moe_kernel_time_scale=moe_out["scale"], dense_kernel_time_scale=committed_scale).to_csv(
            Path(results_dir) / "moe_kernel_scale.csv", index=False, float_format="%.6g")
    stages.update(1)
    stages.close()
    log(f"calibrate: {time.perf_counter() - t0:.1f} s")
    return out


@dataclass(frozen=True)
class _Attention:
    """The A100 attention fit: decode ``(overhead_s, per_seq_s, eta_bw)``, prefill ``(overhead_s, eta_flops, extra_keys)``."""

    x_dec: np.ndarray
    x_pre: np.ndarray


@dataclass(frozen=True)
class _Shared:
    """What every GPU's parameters share: MoE routing skew and the host's per-iteration overheads."""

    skew: float
    skew_note: str
    iteration_s: float
    per_seq_s: float


def _fit_attention(att: pd.DataFrame, resid: list[pd.DataFrame], log) -> _Attention:
    """Attention (A100 only), held out leave-one-size-out over context length / chunk size."""
    a100 = catalog.gpu("a100-sxm-80gb")
    bw, flops = a100.hbm_bandwidth_bytes_s, a100.dense_flops("bf16")
    dec, pre = attention_rows(att)
    kvb, fpp = attn_shape(att)
    x_dec = fit_dec(dec, bw, kvb)
    x_pre = fit_pre(pre, flops, fpp)
    dec_cv = np.empty(len(dec))
    folds = _folds_by_blocks(dec.kv_cache_size.to_numpy(), 5)
    for f in range(5):
        tr, te = folds != f, folds == f
        dec_cv[te] = dec_predict(fit_dec(dec[tr], bw, kvb), dec[te], bw, kvb)
    pre_cv = np.empty(len(pre))
    folds = _folds_by_blocks(pre.prefill_chunk_size.to_numpy(), 5)
    for f in range(5):
        tr, te = folds != f, folds == f
        pre_cv[te] = pre_predict(fit_pre(pre[tr], flops, fpp), pre[te], flops, fpp)
    dec_reg = np.where(dec.batch_size <= 16, "decode_small", "decode_large")
    resid.append(pd.DataFrame({"component": "attention", "op": "attn_decode", "gpu": "a100-sxm-80gb",
                               "regime": dec_reg, "model": "llama-2-70b-shape", "meas": dec.t_s,
                               "fit": dec_predict(x_dec, dec, bw, kvb), "heldout": dec_cv,
                               "cv": "leave-one-context-block-out (5)"}))
    resid.append(pd.DataFrame({"component": "attention", "op": "attn_prefill", "gpu": "a100-sxm-80gb",
                               "regime": "prefill", "model": "llama-2-70b-shape", "meas": pre.t_s,
                               "fit": pre_predict(x_pre, pre, flops, fpp), "heldout": pre_cv,
                               "cv": "leave-one-chunk-block-out (5)"}))
    log(f"attention (A100): decode overhead {x_dec[0]*1e6:.1f} us + {x_dec[1]*1e9:.1f} ns/seq, "
        f"KV eta_bw {x_dec[2]:.3f}; prefill overhead {x_pre[0]*1e6:.1f} us, {x_pre[2]:.0f} extra keys/query, "
        f"eta_flops {x_pre[1]:.3f}")
    return _Attention(x_dec, x_pre)


def _fit_shared(resid: list[pd.DataFrame], log) -> _Shared:
    """MoE routing skew and the framework's CPU time per iteration (vidur cpu_overheads)."""
    skew, skew_note = routing_skew()
    a_it, b_it, cpu = fit_cpu_overhead()
    resid.append(pd.DataFrame({"component": "framework", "op": "cpu_per_iteration", "gpu": "a100-sxm-80gb",
                               "regime": np.where(cpu.batch <= 16, "decode_small", "decode_large"),
                               "model": cpu.model, "meas": cpu.t_s, "fit": cpu.pred_s, "heldout": np.nan,
                               "cv": "none (2 parameters)"}))
    log(f"framework CPU per iteration: {a_it*1e3:.2f} ms + {b_it*1e6:.1f} us/seq")
    return _Shared(skew, skew_note, a_it, b_it)


def apex_all_reduce() -> pd.DataFrame:
    """microsoft/apex_plus NCCL all-reduce timings (``public/apex_all_reduce.csv``) as
    ``gpu, tp, size_bytes, all_reduce_ms``; the 0-byte rows (no payload) dropped."""
    d = measurements.read("public/apex_all_reduce.csv")
    d = d[(d.num_nodes == 1) & (d["size(kb)"] > 0)]
    return pd.DataFrame({"gpu": d.gpu_id, "tp": d.num_gpus_per_node, "size_bytes": d["size(kb)"] * 1024.0,
                         "all_reduce_ms": d["time(us)"] * 1e-3}).reset_index(drop=True)


def all_reduce_rows(vidur: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The all-reduce rows each GPU is fitted on: apex_plus where it measured the GPU (H100),
    else vidur (A100).  Returns the rows and the source note written into the parameters."""
    apex = apex_all_reduce()
    fitted = apex[apex.gpu == "h100-sxm"]
    rows = pd.concat([fitted, vidur[~vidur.gpu.isin(fitted.gpu.unique())]], ignore_index=True)
    return rows, apex


# the engines' own all-reduce kernels were timed with 8 MiB IPC buffers (sglang
# sgl-kernel/tests/test_trt_reduce.py, buffer_max_size; vLLM's custom all-reduce default max_size is
# the same): larger messages go to NCCL (assumption: the engines' switch point)
CUSTOM_ALLREDUCE_MAX_BYTES = 8 * 1024 * 1024


def _fit_custom_allreduce(resid: list[pd.DataFrame], log) -> dict:
    """Latency and bandwidth per TP of the engines' own all-reduce kernels (H100; SGLang PR #2904:
    ``trtllm`` = TensorRT-LLM's kernels as adapted in sgl-kernel, ``vllm`` = vLLM's custom all-reduce),
    held out leave-one-size-out."""
    d = measurements.read("public/custom_all_reduce_h100.csv")
    out: dict = {}
    for (kernel, tp), g in d.groupby(["kernel", "tp"]):
        rows = pd.DataFrame({"size_bytes": g.size_bytes.to_numpy(float), "all_reduce_ms": g.latency_us.to_numpy() * 1e-3})
        x = fit_ar(rows)
        cv = np.array([ar_predict(fit_ar(rows.drop(index=i)), np.array([rows.size_bytes[i]]))[0] for i in rows.index])
        name = kernel.removesuffix("_custom")
        out.setdefault(name, {})[str(int(tp))] = {"latency_s": float(x[0]), "bw_gb_s": float(x[1] / 1e9),
                                                  "max_bytes": CUSTOM_ALLREDUCE_MAX_BYTES, "rows": int(len(rows))}
        resid.append(pd.DataFrame({"component": "allreduce", "op": f"{kernel}_tp{int(tp)}", "gpu": "h100-sxm",
                                   "regime": regime(rows.size_bytes / (2 * 4096)), "model": "-",
                                   "meas": rows.all_reduce_ms * 1e-3, "fit": ar_predict(x, rows.size_bytes.to_numpy()),
                                   "heldout": cv, "cv": "leave-one-size-out"}))
    log("custom all-reduce (h100): " + "; ".join(
        f"{k} " + ", ".join(f"tp{t}: {v['latency_s']*1e6:.1f} us + {v['bw_gb_s']:.0f} GB/s" for t, v in tab.items())
        for k, tab in out.items()))
    return out


def _fit_allreduce(gid: str, arr: pd.DataFrame, resid: list[pd.DataFrame], log,
                   check: pd.DataFrame | None = None) -> dict:
    """All-reduce latency and bandwidth per TP degree, held out leave-one-size-block-out.
    ``check``: rows of another GPU with the same NVLink (apex H200) scored with this fit,
    recorded as held out (the fit never sees them)."""
    ar_tab = {}
    for tp, d in arr[arr.gpu == gid].groupby("tp"):
        d = d.reset_index(drop=True)
        x = fit_ar(d)
        cvp = np.empty(len(d))
        folds = _folds_by_blocks(d.size_bytes.to_numpy(), 5)
        for f in range(5):
            tr, te = folds != f, folds == f
            cvp[te] = ar_predict(fit_ar(d[tr]), d[te].size_bytes.to_numpy(float))
        ar_tab[str(int(tp))] = {"latency_s": float(x[0]), "bw_gb_s": float(x[1] / 1e9), "rows": int(len(d))}
        tokens = d.size_bytes / (2 * 4096)
        resid.append(pd.DataFrame({"component": "allreduce", "op": f"all_reduce_tp{int(tp)}", "gpu": gid,
                                   "regime": regime(tokens), "model": "-", "meas": d.all_reduce_ms * 1e-3,
                                   "fit": ar_predict(x, d.size_bytes.to_numpy(float)), "heldout": cvp,
                                   "cv": "leave-one-size-block-out (5)"}))
        if check is not None and len(c := check[check.tp == tp]):
            pc = ar_predict(x, c.size_bytes.to_numpy(float))
            resid.append(pd.DataFrame({"component": "allreduce", "op": f"all_reduce_tp{int(tp)}", "gpu": c.gpu.iloc[0],
                                       "regime": regime(c.size_bytes / (2 * 4096)), "model": "-",
                                       "meas": c.all_reduce_ms * 1e-3, "fit": pc, "heldout": pc,
                                       "cv": f"{gid} fit on another GPU (never fitted)"}))
    log(f"{gid} all-reduce: " + ", ".join(f"tp{k}: {v['latency_s']*1e6:.1f} us + {v['bw_gb_s']:.0f} GB/s"
                                          for k, v in ar_tab.items()))
    return ar_tab


def _fit_moe_h100(xg: np.ndarray, bw: float, flops: float, resid: list[pd.DataFrame]) -> np.ndarray:
    """The fused-MoE kernel on H100 (vLLM PR #24700 tables), held out leave-one-size-out."""
    mr = moe_rows()
    xm = fit_moe(mr, bw, flops, xg[2])
    cvp = np.empty(len(mr))
    for i in range(len(mr)):
        tr = np.arange(len(mr)) != i
        cvp[i] = moe_predict(fit_moe(mr[tr], bw, flops, xg[2]), mr.n.to_numpy()[i:i + 1], bw, flops, xg[2])[0]
    resid.append(pd.DataFrame({"component": "moe", "op": "fused_moe", "gpu": "h100-sxm", "regime": regime(mr.n),
                               "model": "mixtral-8x7b", "meas": mr.t_s,
                               "fit": moe_predict(xm, mr.n.to_numpy(), bw, flops, xg[2]), "heldout": cvp,
                               "cv": "leave-one-size-out"}))
    return xm


def _fit_gpu(gid: str, ops: pd.DataFrame, arr: pd.DataFrame, attention: _Attention, shared: _Shared,
             moe_ratio: tuple[float, float] | None, params: dict[str, Params], resid: list[pd.DataFrame],
             log, ar_check: pd.DataFrame | None = None) -> tuple[Params, tuple[float, float] | None]:
    """One GPU's operator parameters: GEMM and elementwise (leave-one-model-out), all-reduce, MoE.

    The fused-MoE kernel is measured on H100 only; other GPUs get it through the H100 ratio of
    MoE to GEMM efficiencies (returned, so H100 must be fitted first)."""
    card = catalog.gpu(gid)
    bw, F = card.hbm_bandwidth_bytes_s, card.dense_flops("bf16")
    g_rows, e_rows = op_rows(ops, gid)
    xg = fit_gemm(g_rows, bw, F)
    xe = fit_ew(e_rows, bw)
    g_cv = np.empty(len(g_rows)); e_cv = np.empty(len(e_rows))
    for mid in g_rows.model.unique():
        tr, te = (g_rows.model != mid).to_numpy(), (g_rows.model == mid).to_numpy()
        g_cv[te] = gemm_predict(fit_gemm(g_rows[tr], bw, F), g_rows[te], bw, F)
        tr, te = (e_rows.model != mid).to_numpy(), (e_rows.model == mid).to_numpy()
        e_cv[te] = ew_predict(fit_ew(e_rows[tr], bw), e_rows[te], bw)
    resid.append(pd.DataFrame({"component": "gemm", "op": g_rows.op, "gpu": gid, "regime": regime(g_rows.n),
                               "model": g_rows.model, "meas": g_rows.t_s, "fit": gemm_predict(xg, g_rows, bw, F),
                               "heldout": g_cv, "cv": "leave-one-model-out"}))
    resid.append(pd.DataFrame({"component": "elementwise", "op": e_rows.op, "gpu": gid, "regime": regime(e_rows.n),
                               "model": e_rows.model, "meas": e_rows.t_s, "fit": ew_predict(xe, e_rows, bw),
                               "heldout": e_cv, "cv": "leave-one-model-out"}))
    log(f"{gid} GEMM: eta_bw {xg[0]:.3f} eta_flops {xg[1]:.3f} p {xg[2]:.2f} overhead {xg[3]*1e6:.2f} us "
        f"({len(g_rows)} rows); elementwise etas {np.round(xe[:5], 3).tolist()} floors us {np.round(xe[5:10]*1e6, 2).tolist()} p {np.round(xe[10:], 2).tolist()}")
    ar_tab = _fit_allreduce(gid, arr, resid, log, check=ar_check)

    if gid == "h100-sxm":
        xm = _fit_moe_h100(xg, bw, F, resid)
        moe_ratio = (xm[0] / xg[0], xm[1] / xg[1])
        moe = {"moe_eta_bw": float(xm[0]), "moe_eta_flops": float(xm[1]), "moe_overhead_s": float(xm[2])}
        log(f"h100 fused MoE: eta_bw {xm[0]:.3f} eta_flops {xm[1]:.3f} overhead {xm[2]*1e6:.1f} us; "
            f"routing skew {shared.skew:.2f}")
    else:
        moe = {"moe_eta_bw": float(min(1.0, xg[0] * moe_ratio[0])),
               "moe_eta_flops": float(min(1.0, xg[1] * moe_ratio[1])),
               "moe_overhead_s": params["h100-sxm"].moe_overhead_s}
    x_dec, x_pre = attention.x_dec, attention.x_pre
    p = Params(
        gpu=gid, gemm_eta_bw=float(xg[0]), gemm_eta_flops=float(xg[1]), gemm_p=float(xg[2]),
        gemm_overhead_s=float(xg[3]), ew_eta_bw={k: float(v) for k, v in zip(EW_KINDS, xe[:5])},
        ew_overhead_s={k: float(v) for k, v in zip(EW_KINDS, xe[5:10])},
        ew_p={k: float(v) for k, v in zip(EW_KINDS, xe[10:])},
        attn_decode_eta_bw=float(x_dec[2]), attn_decode_overhead_s=float(x_dec[0]),
        attn_decode_per_seq_s=float(x_dec[1]), attn_prefill_eta_flops=float(x_pre[1]),
        attn_prefill_overhead_s=float(x_pre[0]), attn_prefill_extra_keys=float(x_pre[2]), moe_skew=shared.skew,
        allreduce=ar_tab, iteration_overhead_s=shared.iteration_s, per_seq_overhead_s=shared.per_seq_s, **moe,
        meta={"written_by": "sovsim calibrate", "fit_rows_gemm": int(len(g_rows)),
              "fit_rows_elementwise": int(len(e_rows)),
              "attention_from": "a100-sxm-80gb (vidur historic attention.csv, FlashAttention, 70B shape TP2)"
              + ("" if gid == "a100-sxm-80gb" else "; no attention measurements for this GPU: A100 efficiencies reused (assumption)"),
              "moe_from": "vLLM PR #24700 fused_moe, H100 TP2" + ("" if gid == "h100-sxm" else "; transferred by the H100 MoE/GEMM efficiency ratio"),
              "moe_skew_from": shared.skew_note,
              "allreduce_from": ("microsoft/apex_plus NCCL 2.18 all_reduce.csv (H100 SXM, 1 node)" if gid == "h100-sxm"
                                 else "vidur network/a100_dgx all_reduce.csv"),
              "framework_overhead_from": "vidur cpu_overheads.csv (A100 host, 2024 Sarathi/vLLM): schedule + prepare_inputs + sampler + process_outputs medians"})
    return p, moe_ratio


def _fit_moe_kernel_scale(params: dict[str, Params], committed_file, log) -> tuple[float, dict]:
    """The fused-MoE kernel's own time scale, fitted on MoE kernel tables (never the dense scale)."""
    committed_scale = 1.0
    f_h100 = committed_file("h100-sxm.json")
    if f_h100.is_file():
        committed_scale = json.loads(f_h100.read_text()).get("kernel_time_scale", 1.0)
    moe_out = moe_fit.run_fit(committed_scale, params, log=log)
    for p in params.values():
        p.moe_kernel_time_scale = moe_out["scale"]
        p.meta["moe_kernel_time_scale_from"] = moe_out["fitted_on"]
    return committed_scale, moe_out


def _fit_framework_profiles(params: dict[str, Params], committed_file, shared: _Shared, log) -> pd.DataFrame:
    """Framework overheads per serving-software profile, from dense whole-batch rows.

    Sets each GPU's default profile (the throughput-fitted in-flight-batching profile of
    ``sovsim calibrate --throughput`` is kept when committed) and returns the whole-batch
    comparison table with fitted and held-out predictions."""
    wb = wholebatch.compare(params)
    profiles, heldout = {}, np.full(len(wb), np.nan)
    for prof, datasets in FRAMEWORK_DATASETS.items():
        x, cv = fit_framework(wb, datasets)
        profiles[prof] = {"iteration_overhead_s": float(x[0]), "per_seq_overhead_s": float(x[1]),
                          "fitted_on": ", ".join(datasets)}
        sel = np.isfinite(cv)
        heldout[sel] = cv[sel]
        log(f"framework profile {prof}: {x[0]*1e3:.3f} ms/iteration + {x[1]*1e6:.2f} us/seq "
            f"(dense rows of {', '.join(datasets)})")
    committed = {}
    for gid in params:
        f = committed_file(f"{gid}.json")
        if f.is_file():
            committed[gid] = json.loads(f.read_text()).get("framework_profiles", {})
    for gid, p in params.items():
        profs = {k: {**v, "custom_allreduce": CUSTOM_ALLREDUCE[k]} for k, v in profiles.items()}
        ifb = committed.get(gid, {}).get(DEFAULT_FRAMEWORK)
        if ifb and "perf-overview" in ifb.get("fitted_on", ""):
            profs[DEFAULT_FRAMEWORK] = {**ifb, "custom_allreduce": CUSTOM_ALLREDUCE[DEFAULT_FRAMEWORK]}
            p.meta["framework_default"] = f"{DEFAULT_FRAMEWORK} (in-flight batching, {ifb['fitted_on']})"
        # the per-release profiles of `sovsim calibrate --throughput` (trtllm-v0.14 ...) are kept too
        for name, prof in committed.get(gid, {}).items():
            if name not in profs and "perf-overview" in prof.get("fitted_on", ""):
                profs[name] = prof
        default = profs.get(DEFAULT_FRAMEWORK) or profs[FALLBACK_FRAMEWORK]
        p.iteration_overhead_s = default["iteration_overhead_s"]
        p.per_seq_overhead_s = default["per_seq_overhead_s"]
        p.per_layer_overhead_s = default.get("per_layer_overhead_s", 0.0)
        p.kernel_time_scale = default.get("kernel_time_scale", 1.0)
        p.custom_allreduce = default.get("custom_allreduce")
        p.framework_profiles = profs
        p.meta["framework_overhead_from"] = (
            f"per serving-software profile, least squares on that software's dense whole-batch public rows "
            f"(datasets weighted equally; MoE rows never used); default = {DEFAULT_FRAMEWORK} if fitted by "
            f"`sovsim calibrate --throughput`, else {FALLBACK_FRAMEWORK}. Cross-check: vidur "
            f"cpu_overheads.csv (A100 host, 2024) gives {shared.iteration_s*1e3:.2f} ms + {shared.per_seq_s*1e6:.1f} us/seq")
    prof_of = {ds: prof for prof, dss in FRAMEWORK_DATASETS.items() for ds in dss}
    wb["framework"] = wb.dataset.map(prof_of).fillna("vllm")
    a_ = wb.framework.map({k: v["iteration_overhead_s"] for k, v in profiles.items()})
    b_ = wb.framework.map({k: v["per_seq_overhead_s"] for k, v in profiles.items()})
    wb["pred_s"] = wb.gpu_s + a_ * wb.iterations + b_ * wb.seq_iterations
    wb["heldout_s"] = np.where(np.isfinite(heldout), heldout, wb.pred_s)
    wb["fitted_on"] = np.where(wb.model.str.startswith("mixtral"), "no (MoE: never fitted)",
                               "framework overheads only (2 params per profile; heldout_s leave-one-dataset-out)")
    wb["ape"] = (wb.pred_s / wb.meas_s - 1.0).abs()
    wb["err"] = wb.pred_s / wb.meas_s - 1.0
    wb["ape_heldout"] = (wb.heldout_s / wb.meas_s - 1.0).abs()
    return wb


def _write_params(dest: Path, params: dict[str, Params], log) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for gid, p in sorted(params.items()):
        write_atomic(dest / f"{gid}.json",
                     lambda t, p=p: t.write_text(json.dumps(p.to_json(), indent=1, sort_keys=True) + "\n"))
    log(f"wrote {dest}/{', '.join(sorted(f'{g}.json' for g in params))}")
    load_params.cache_clear()


def summarize(res: pd.DataFrame) -> pd.DataFrame:
    rows = []
    keys = [("component", "op", "gpu", "regime"), ("component", "gpu", "regime"), ("component",), ()]
    for key in keys:
        groups = res.groupby(list(key)) if key else [((), res)]
        for k, g in groups:
            k = k if isinstance(k, tuple) else (k,)
            r = dict(zip(key, k))
            r.update({"rows": len(g), "median_ape_fit": g.ape_fit.median(),
                      "median_ape_heldout": g.ape_heldout.median(),
                      "p90_ape_heldout": g.ape_heldout.quantile(0.9), "cv": "; ".join(sorted(g.cv.unique()))})
            rows.append(r)
    out = pd.DataFrame(rows)
    for c in ("component", "op", "gpu", "regime"):
        out[c] = out[c].fillna("(all)")
    return out[["component", "op", "gpu", "regime", "rows", "median_ape_fit", "median_ape_heldout",
                "p90_ape_heldout", "cv"]]


def write_report(out: dict, results_dir: Path, figure: bool = True, log=print) -> None:
    results_dir.mkdir(parents=True, exist_ok=True)
    rep = out["report"]
    rep.to_csv(results_dir / "residuals_operators.csv", index=False, float_format="%.4f")
    log(f"wrote {results_dir / 'residuals_operators.csv'}")
    wb = out["wholebatch"]
    wb.to_csv(results_dir / "wholebatch_comparison.csv", index=False, float_format="%.4f")
    log(f"wrote {results_dir / 'wholebatch_comparison.csv'}")
    md = [f"# Calibration residual report\n",
          "Written by `sovsim calibrate`. APE = |predicted / measured - 1|. *heldout* = predicted by "
          "a fit that did not see the row (leave-one-model-out for GEMM and elementwise kernels; "
          "leave-one-size-block-out for attention, all-reduce, MoE kernel). Regimes for operator rows: "
          "tokens in the batch <= 16 `decode_small`, <= 256 `decode_large`, above `prefill`.\n",
          "## Operators\n", _md_table(rep[rep.op != "(all)"].drop(columns=["cv"])),
          "\n## By component\n", _md_table(rep[rep.op == "(all)"]),
          "\n## Whole-batch public measurements\n",
          "Each row simulates the benchmark's static batch with the calibrated model: prefill of the "
          "batch's prompts, then one decode step per output token. Only the two framework-overhead "
          "parameters of each serving-software profile (vllm: Argonne vLLM + vLLM CI; trtllm-v0.9: "
          "TensorRT-LLM static batching + first-token) are fitted on these rows, on dense models only; "
          "*heldout* = leave-one-dataset-out within the profile. MoE (Mixtral) rows are never fitted. "
          "See `wholebatch_comparison.csv` for every row and its caveat.\n", _md_table(wholebatch.summarize(wb)), ""]
    (results_dir / "README.md").write_text("\n".join(md))
    if figure:
        _figure(out["residuals"], wb, results_dir / "predicted_vs_measured.png")
        log(f"wrote {results_dir / 'predicted_vs_measured.png'}")


def _md_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            if isinstance(v, float):
                cells.append("" if math.isnan(v) else (f"{100*v:.1f}%" if "ape" in c or "err" in c else f"{v:.4g}"))
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _figure(res: pd.DataFrame, wb: pd.DataFrame, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    comps = ["gemm", "elementwise", "attention", "moe", "allreduce"]
    fig, axes = plt.subplots(2, 3, figsize=(15, 9.5))
    rng = np.random.default_rng(0)  # only thins the scatter for legibility
    for ax, comp in zip(axes.flat, comps):
        d = res[res.component == comp]
        if len(d) > 4000:
            d = d.iloc[np.sort(rng.choice(len(d), 4000, replace=False))]
        for gid, mk in (("a100-sxm-80gb", "o"), ("h100-sxm", "^")):
            g = d[d.gpu == gid]
            if len(g):
                ax.scatter(g.meas * 1e3, g.heldout.fillna(g.fit) * 1e3, s=5, alpha=0.4, marker=mk, label=gid)
        lo, hi = d.meas.min() * 1e3, d.meas.max() * 1e3
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        ax.set_xscale("log"); ax.set_yscale("log")
        med = d.ape_heldout.median()
        ax.set_title(f"{comp}: held-out median APE {100*med:.1f}%")
        ax.set_xlabel("measured, ms"); ax.set_ylabel("predicted (held out), ms"); ax.legend(fontsize=7)
    ax = axes.flat[5]
    ok = wb[np.isfinite(wb.pred_s)]
    for src, g in ok.groupby("dataset"):
        ax.scatter(g.meas_s, g.pred_s, s=14, alpha=0.7, label=src)
    lo, hi = ok.meas_s.min(), ok.meas_s.max()
    ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
    ax.set_xscale("log"); ax.set_yscale("log")
    ax.set_title(f"whole batch (MoE never fitted): median APE {100*ok.ape.median():.1f}%")
    ax.set_xlabel("measured, s"); ax.set_ylabel("predicted, s"); ax.legend(fontsize=6)
    fig.suptitle("sovsim step-time model: predicted vs measured")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
