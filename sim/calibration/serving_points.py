"""Two validation families of ``sovsim validate`` built on measured serving points
(docs/perf.md, "Validation"; data: ``models/measurements/PROVENANCE.md``).  One thing is fitted on
them: the TensorRT-LLM ``aiconfigurator`` points pick the per-layer term of the ``trtllm`` framework
profile (``sovsim calibrate --throughput``, :func:`sim.calibration.throughput_fit.intercept_scan`), so
each GPU's points are scored under the profile chosen without them
(:func:`sim.calibration.overheads.intercept_fold`).
Everything else they read is scored only.

* ``aiconfigurator`` -- NVIDIA AIConfigurator's measured aggregated-serving points
  (``public/aiconfigurator_silicon_serving_llama.csv``): Llama 3.1 8B / 70B on H100 / H200 / B200,
  TensorRT-LLM, vLLM or SGLang, TP 1-8, fixed client concurrency N, constant ISL / OSL.  Each
  point is one engine run: the catalog model and GPU, the measured TP and precision, the engine
  profile of the backend (:data:`BACKEND_PROFILES`), ``closed_loop`` arrivals with N users and no
  think time, constant lengths.  Compared: TTFT and TPOT.
* ``vllm_trace`` -- the LLMServingSim artifact's real vLLM runs on 4x H100
  (``public/llmservingsim_vllm_h100_measured_throughput_timeseries.csv``): the measured request
  trace (300 ShareGPT requests, Poisson 10 req/s) replayed through the engine configured like the
  run (:data:`TRACE_RUNS`: Mixtral-8x7B on one TP4 instance; Llama-3.1-70B on two TP4 instances),
  ``vllm`` engine profile, bf16.  Only the generation throughput per second was published (no
  TTFT / TPOT), so the metrics are throughput-based: mean output tokens/s over the run, the
  plateau while requests arrive, the drain time after the last arrival (set by the decode speed of
  the last, longest requests: the TPOT signal of the data) and every 1 s bin.
"""
from __future__ import annotations

import contextlib
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from sim.calibration import measurements
from sim.perf import catalog
from sim.calibration.overheads import framework_overheads, intercept_fold
from sim.scenario import scenario_from_dict
from sim.study.run import run

SEED = 1
AIC_FILE = "public/aiconfigurator_silicon_serving_llama.csv"
AIC_DEEPSEEK_FILE = "public/aiconfigurator_silicon_serving_deepseek.csv"
AIC_MODELS = {"meta-llama/Llama-3.1-8B-Instruct": "llama-3.1-8b", "nvidia/Llama-3.1-8B-Instruct-FP8": "llama-3.1-8b",
              "meta-llama/Llama-3.1-70B": "llama-3.1-70b"}
AIC_GPUS = {"h100_sxm": "h100-sxm", "h200_sxm": "h200", "b200_sxm": "b200"}
# backend -> engine profile (sim/perf/profiles.py).  TensorRT-LLM: its default capacity policy;
# SGLang has no profile of its own: vLLM's (chunked prefill, greedy admission) is the nearest
# (assumption)
BACKEND_PROFILES = {"trtllm": "trtllm-guaranteed-no-evict", "vllm": "vllm", "sglang": "vllm"}
# blank precision (TensorRT-LLM 1.0.0rc3 Llama-3.1-8B rows: no quant mode given) = 16-bit (assumption)
AIC_DEFAULT_PRECISION = "bf16"
# closed-loop window: one warm-up cycle then two measured cycles of a guessed request time
# (a datasheet-free guess, assumption; doubled until every user completed a measured request)
AIC_GUESS_TPOT_S, AIC_GUESS_PREFILL_TOK_S = 0.03, 20000.0
AIC_QUICK_CONCURRENCY = 32  # quick mode: per (model, GPU, backend) the point nearest 1K/1K, then nearest this

TRACE_FILE = "public/llmservingsim_sharegpt_rate10_traces.csv"
SERIES_FILE = "public/llmservingsim_vllm_h100_measured_throughput_timeseries.csv"
# scenario -> (catalog model, trace file, TP, instances); GPUs 4x H100 80GB (SXM presumed), TP4
# and bf16 presumed (artifact: npu_num 4, npu_group 1, simulator run with --fp 16): assumption
TRACE_RUNS = {"SM": ("mixtral-8x7b", "sharegpt_req300_rate10_mixtral.jsonl", 4, 1),
              "MD": ("llama-3.1-70b", "sharegpt_req300_rate10_llama.jsonl", 4, 2)}
TRACE_GPU, TRACE_PRECISION, TRACE_PROFILE = "h100-sxm", "bf16", "vllm"
PLATEAU_S = (10, 30)   # bins (time_s] in this range: requests still arriving, the steady phase
BIN_FLOOR = 0.10       # per-bin rows only where the measured bin >= 10 % of the run's peak
TRACE_DRAIN_S = 600.0  # simulated seconds after the last arrival (enough to finish every request)


def _row(family, model, gpu, config, metric, measured, predicted, moe=False):
    ok = measured and np.isfinite(predicted) and measured > 0
    return {"family": family, "model": model, "gpu": gpu, "config": config, "metric": metric,
            "measured": float(measured), "predicted": float(predicted),
            "error": predicted / measured - 1.0 if ok else math.nan, "in_sample": False, "moe": bool(moe)}


def _moe(model: str) -> bool:
    return catalog.llm(model).experts > 1


def _deployment(model, gpu, tp, replicas, precision, profile, ep=1, attention_dp=False):
    d = {"name": "d", "model": model, "gpu": gpu, "precision": precision, "tp": int(tp), "replicas": int(replicas),
         "profile": profile}
    if ep > 1 or attention_dp:
        d.update(ep=int(ep), attention_dp=bool(attention_dp))
    return d


# ------------------------------------------------------------------ aiconfigurator
def aiconfigurator_points(quick: bool = False) -> pd.DataFrame:
    """The measured points the family scores (quick: one point per model, GPU and backend)."""
    d = measurements.read(AIC_FILE)
    d = d[d.model_path.isin(list(AIC_MODELS)) & d.system.isin(list(AIC_GPUS))].copy()
    d["model"] = d.model_path.map(AIC_MODELS)
    d["gpu"] = d.system.map(AIC_GPUS)
    d["sim_precision"] = d.precision.fillna(AIC_DEFAULT_PRECISION)
    d["concurrency"] = d.batch_size.astype(int)
    d = d.sort_values(["model", "gpu", "backend", "sim_precision", "tp_size", "isl", "osl", "concurrency"], kind="stable")
    if quick:
        d = _nearest_quick_point(d, ["model", "gpu", "backend"], tie="tp_size")
        d = d.sort_values(["model", "gpu", "backend"], kind="stable")
    return d.reset_index(drop=True)


def _nearest_quick_point(d: pd.DataFrame, keys: list[str], tie: str | None = None) -> pd.DataFrame:
    """Quick mode: per ``keys`` group the point nearest 1K/1K tokens, then nearest
    ``AIC_QUICK_CONCURRENCY`` users (then the smallest ``tie``)."""
    d = d.assign(_len=(np.log(d.isl / 1024)).abs() + (np.log(d.osl / 1024)).abs(),
                 _c=(np.log(d.concurrency) - math.log(AIC_QUICK_CONCURRENCY)).abs())
    d = d.sort_values(["_len", "_c"] + ([tie] if tie else []), kind="stable").groupby(keys).head(1)
    return d.drop(columns=["_len", "_c"])


def _ttft_tpot_rows(family: str, model: str, r, conf: str, p: dict) -> list[dict]:
    """The two rows of one measured serving point: TTFT and TPOT means, measured vs simulated."""
    return [_row(family, model, r.gpu, conf, metric, meas, pred if pred is not None else math.nan, moe=_moe(model))
            for metric, meas, pred in (("ttft_mean_s", r.silicon_ttft_ms / 1e3, p["ttft_s"]),
                                       ("tpot_mean_s", r.silicon_tpot_ms / 1e3, p["tpot_s"]))]


def closed_loop_point(model, gpu, tp, precision, profile, users, isl, osl, seed=SEED, ep=1, attention_dp=False) -> dict:
    """TTFT / TPOT means of ``users`` closed-loop clients (no think time) on one replica, after
    one warm-up cycle; the window doubles until every user completed a measured request."""
    cycle = isl * users / AIC_GUESS_PREFILL_TOK_S + osl * AIC_GUESS_TPOT_S
    for _ in range(4):
        sc = scenario_from_dict({
            "name": "validate-aiconfigurator",
            "simulation": {"horizon_s": 3.0 * cycle, "warmup_s": cycle, "request_sample_size": 0},
            "deployments": [_deployment(model, gpu, tp, 1, precision, profile, ep, attention_dp)],
            "workloads": [{"name": "w", "model": model, "arrivals": {"kind": "closed_loop", "users": int(users)},
                           "prompt_tokens": {"dist": "constant", "value": int(isl)},
                           "output_tokens": {"dist": "constant", "value": int(osl)}}]}, "validate")
        w = run(sc, seed=seed, figures=False).summary["workloads"]["w"]
        if (w.get("measured") or 0) >= users and w["ttft_s"]["mean"] is not None:
            break
        cycle *= 2.0
    return {"ttft_s": w["ttft_s"]["mean"], "tpot_s": w["tpot_s"]["mean"], "window_s": 2.0 * cycle}


def aiconfigurator_rows(quick: bool) -> list[dict]:
    """The TensorRT-LLM points pin the per-layer term of the ``trtllm`` profile, so each GPU's are run
    under the fold chosen without them (:func:`sim.calibration.overheads.intercept_fold`): none is
    scored by a fit that saw it."""
    out = []
    for r in aiconfigurator_points(quick).itertuples(index=False):
        profile = BACKEND_PROFILES[r.backend]
        fold = intercept_fold(r.gpu) if r.backend == "trtllm" else None
        ctx = framework_overheads(*fold) if fold else contextlib.nullcontext()
        with ctx:
            p = closed_loop_point(r.model, r.gpu, int(r.tp_size), r.sim_precision, profile, r.concurrency,
                                  int(r.isl), int(r.osl))
        ver = r.backend_version if isinstance(r.backend_version, str) else "?"
        conf = (f"{r.backend} {ver} ({profile}) {r.sim_precision} tp{int(r.tp_size)} {int(r.isl)}/{int(r.osl)} "
                f"concurrency {r.concurrency} (closed loop)")
        out += _ttft_tpot_rows("aiconfigurator", r.model, r, conf, p)
    return out


def aiconfigurator_deepseek_rows(quick: bool, family: str = "large_moe_ep") -> list[dict]:
    """AIConfigurator's measured DeepSeek-V3 / R1 serving points on one node (closed loop at the
    client concurrency), run on the ``deepseek-v3`` card with the point's layout: GPUs per replica
    = attention TP x attention DP ranks, ``ep`` = the MoE expert-parallel size, attention DP when
    it has more than one rank.  Quick: per (GPU, backend, layout) the point nearest 1K/1K, then
    nearest 32 users."""
    d = measurements.read(AIC_DEEPSEEK_FILE)
    d = d.assign(gpu=d.system.map(AIC_GPUS), concurrency=d.batch_size.astype(int),
                 gpus=(d.tp_size * d.attention_dp_size).astype(int))
    d = d.sort_values(["gpu", "backend", "gpus", "moe_ep_size", "attention_dp_size", "isl", "osl", "concurrency"],
                      kind="stable")
    if quick:
        d = _nearest_quick_point(d, ["gpu", "backend", "gpus", "moe_ep_size", "attention_dp_size"])
    out = []
    for r in d.itertuples(index=False):
        profile = BACKEND_PROFILES[r.backend]
        dp = int(r.attention_dp_size) > 1
        ep = int(r.moe_ep_size)
        p = closed_loop_point("deepseek-v3", r.gpu, int(r.gpus), "fp8", profile, r.concurrency, int(r.isl), int(r.osl),
                              ep=ep, attention_dp=dp)
        ver = r.backend_version if isinstance(r.backend_version, str) else "?"
        conf = (f"{r.model_path.split('/')[-1]} {r.backend} {ver} ({profile}) fp8 {int(r.gpus)} GPUs "
                f"tp{int(r.tp_size)} dp{int(r.attention_dp_size)} ep{ep} {int(r.isl)}/{int(r.osl)} "
                f"concurrency {r.concurrency} (closed loop)")
        out += _ttft_tpot_rows(family, "deepseek-v3", r, conf, p)
    return out


# ------------------------------------------------------------------ vllm_trace
def trace_replay(scenario: str, seed: int = SEED) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """(measured series, simulated series, last arrival s) of one LLMServingSim run; both series
    as ``time_s`` (end of a 1 s bin: the measured files start with a 0 at time 0, i.e. bin k holds
    the tokens of [k-1, k), assumption) and ``tok_s`` (output tokens in the bin)."""
    model, trace_name, tp, instances = TRACE_RUNS[scenario]
    t = measurements.read(TRACE_FILE)
    t = t[t.trace_file == trace_name].sort_values("request_index")
    ts = measurements.read(SERIES_FILE)
    meas = ts[ts.scenario == scenario][["time_s", "measured_generation_throughput_tok_per_s"]].rename(
        columns={"measured_generation_throughput_tok_per_s": "tok_s"}).reset_index(drop=True)
    last = float(t.arrival_time_ns.max()) * 1e-9
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{scenario}.csv"
        pd.DataFrame({"timestamp": t.arrival_time_ns.to_numpy() * 1e-9, "prompt_tokens": t.input_toks.to_numpy(),
                      "output_tokens": t.output_toks.to_numpy()}).to_csv(path, index=False)
        sc = scenario_from_dict({
            "name": f"validate-vllm-trace-{scenario}",
            "simulation": {"horizon_s": last + TRACE_DRAIN_S, "warmup_s": 0.0, "request_sample_size": 0,
                           "timeseries_interval_s": 1.0},
            "deployments": [_deployment(model, TRACE_GPU, tp, instances, TRACE_PRECISION, TRACE_PROFILE)],
            "workloads": [{"name": "w", "model": model, "arrivals": {"kind": "trace", "path": str(path)}}]}, "validate")
        res = run(sc, seed=seed, figures=False)
    ts = res.timeseries
    ts = ts[ts.replica != "__fleet__"].groupby("bin_start_s", as_index=False).output_tokens.sum()
    sim = pd.DataFrame({"time_s": (ts.bin_start_s + 1.0).round().astype(int), "tok_s": ts.output_tokens})
    return meas, sim, last


def _series_metrics(s: pd.DataFrame, last_arrival_s: float) -> dict:
    on = s[s.tok_s > 0]
    makespan = float(on.time_s.max())
    plateau = s[(s.time_s > PLATEAU_S[0]) & (s.time_s <= PLATEAU_S[1])].tok_s
    return {"output_tok_s": float(s.tok_s.sum()) / makespan, "plateau_tok_s": float(plateau.mean()),
            "drain_s": makespan - last_arrival_s}


def vllm_trace_rows(quick: bool) -> list[dict]:
    out = []
    for scen in (("SM",) if quick else tuple(TRACE_RUNS)):
        model, _, tp, inst = TRACE_RUNS[scen]
        meas, sim, last = trace_replay(scen)
        conf = f"LLMServingSim {scen}: vLLM, {inst}x TP{tp} {TRACE_PRECISION}, ShareGPT 300 req Poisson 10/s (trace replay)"
        m, p = _series_metrics(meas, last), _series_metrics(sim, last)
        for k in ("output_tok_s", "plateau_tok_s", "drain_s"):
            out.append(_row("vllm_trace", model, TRACE_GPU, conf, k, m[k], p[k], moe=_moe(model)))
        j = meas.merge(sim, on="time_s", how="left", suffixes=("_m", "_p")).fillna({"tok_s_p": 0.0})
        j = j[j.tok_s_m >= BIN_FLOOR * j.tok_s_m.max()]
        for r in j.itertuples(index=False):
            out.append(_row("vllm_trace", model, TRACE_GPU, f"{conf} bin t={int(r.time_s)} s", "bin_tok_s",
                            r.tok_s_m, r.tok_s_p, moe=_moe(model)))
    return out
