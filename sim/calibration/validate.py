"""``sovsim validate``: the full serving engine scored against every public end-to-end
measurement family in ``models/measurements/public/`` (docs/perf.md, "Validation").

Every prediction is a full engine run (:func:`sim.study.run.run` or
:func:`sim.study.throughput.throughput`) on the calibrated step model, configured like the
measured experiment.  Families:

* ``offline`` -- TensorRT-LLM perf-overview v0.14 / v0.17 / v1.0 dense throughput rows
  (trtllm-bench settings, all requests at t = 0): output tokens/s, each row under its own
  release's profile (``trtllm-v0.14`` ...) as fitted with the row's GPU left out of every release.
* ``offline_unversioned`` -- the same rows under the default ``trtllm`` profile (v0.17 fit):
  what a user who does not name the release gets (v0.17 rows in-sample).
* ``online`` -- TensorRT-LLM v0.14 online serving (Triton, 500 requests, Poisson arrivals at the
  offered QPS; ``INF`` = all at once): mean TTFT and mean ITL.
* ``mlperf_server`` -- MLPerf Inference v4.1 / v5.1 Server rows for Llama-2-70B on 8x H100-SXM /
  8x H200 (TensorRT-LLM submissions), configured from NVIDIA's v4.1 harness config for that
  node (TP, batch size, FP8), each under the release profile of its TensorRT version
  (:func:`mlperf_release`), Poisson arrivals at the measured rate: TTFT / TPOT mean and p99.
* ``mlperf_interactive`` -- the v5.1 Interactive rows (8x H200; the Server scenario with tighter
  latency limits, so smaller running batches), configured like ``mlperf_server``.
* ``nim_concurrency`` -- NVIDIA NIM (AIPerf) Llama-3.3-70B, 2x H100 TP2, fixed concurrency N:
  TTFT, ITL and output tokens/s, with the ``closed_loop`` arrival kind (N users, no think time).
* ``aiconfigurator`` -- NVIDIA AIConfigurator measured serving points (Llama 3.1 8B / 70B,
  H100 / H200 / B200, TensorRT-LLM / vLLM / SGLang, fixed concurrency): TTFT and TPOT, with
  ``closed_loop`` arrivals (:mod:`sim.calibration.serving_points`).
* ``vllm_trace`` -- the LLMServingSim artifact's real vLLM runs on 4x H100 (Mixtral-8x7B, and
  Llama-3.1-70B on two instances), their request trace replayed: generation throughput (mean,
  plateau, per 1 s bin) and drain time after the last arrival (:mod:`sim.calibration.serving_points`).
* ``moe_kernel`` -- the fused-MoE layer of the step model against AIConfigurator vLLM kernel
  tables (step-model level: no end-to-end Mixtral measurement is in the data).
* ``large_moe_ep`` -- DeepSeek-V3 / R1 on one node with tensor, expert and attention data
  parallelism: TensorRT-LLM ``trtllm-bench`` max-throughput rows
  (``models/measurements/large_moe_ep.csv``, output tokens/s per GPU) and AIConfigurator's
  measured serving points (TTFT / TPOT means in a closed loop, TensorRT-LLM and SGLang, H200 and
  B200).  Nothing was fitted on a large fine-grained MoE, so it scores the extrapolation.

Leave-one-family-out: :data:`FITS` states, per family, which fitted parameters its predictions
use and what they were fitted on.  The only end-to-end fits are the TensorRT-LLM framework
profiles on the perf-overview offline rows: ``offline`` scores them leave-one-GPU-out, and
``offline_unversioned`` marks the v0.17 rows ``in_sample``; every aggregate is also given on
held-out rows only.
"""
from __future__ import annotations

import json
import math
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from sim.calibration import measurements, moe_fit, serving_points, throughput_fit
from sim.core import progress as progress_mod
from sim.core.errors import UserError
from sim.perf import catalog
from sim.perf.roofline import load_params
from sim.scenario import scenario_from_dict
from sim.study.run import run
from sim.study.throughput import throughput

FAMILIES = ("offline", "offline_unversioned", "online", "mlperf_server", "mlperf_interactive", "nim_concurrency", "aiconfigurator",
            "vllm_trace", "moe_kernel", "large_moe_ep")
FITS = {
    "offline": "operator efficiencies (vidur kernels, vLLM PR #24700 MoE); each row under its release's profile "
               "(trtllm-v0.14 / -v0.17 / -v1.0: us/seq fitted on v0.17, us/layer chosen on the AIConfigurator TensorRT-LLM "
               "serving points, one kernel_time_scale per release) as fitted with the row's GPU left out of every "
               "release (leave-one-GPU-out): held out",
    "offline_unversioned": "the default trtllm profile (us/seq and kernel_time_scale fitted on perf-overview "
                           "v0.17 dense offline rows, us/layer on the AIConfigurator TensorRT-LLM points) on every "
                           "release: v0.17 rows in_sample, v0.14 and v1.0 held out",
    "online": "the trtllm-v0.14 profile (the release that served them; fitted on v0.14 / v0.17 offline rows and, for "
              "us/layer, the AIConfigurator TensorRT-LLM points); the v0.14 online rows were never fitted: held out",
    "mlperf_server": "each row under the release profile of its software (TensorRT version -> trtllm-v0.14 / -v0.17 / "
                     "-v1.0, fitted on perf-overview offline rows and the AIConfigurator TensorRT-LLM points); the prompt length (one number, not in the data) is "
                     "inferred from NVIDIA's v4.1 OFFLINE rows of the same nodes (Offline harness config, steady state), "
                     "which are not scored; the Server rows were never fitted: held out. Every model of MLPERF_MODELS in "
                     "the results files is scored (Llama-2-70B; Mixtral-8x7B when its rows are added: NVIDIA's "
                     "Mixtral harness config, its own prompt from its own Offline rows)",
    "mlperf_interactive": "as mlperf_server (same prompt inference from the v4.1 OFFLINE rows); the v5.1 Interactive rows "
                          "were never fitted: held out",
    "nim_concurrency": "same trtllm profile (v0.17 offline rows; us/layer from the AIConfigurator TensorRT-LLM "
                       "points); NIM rows never fitted: held out",
    "aiconfigurator": "the trtllm profile for TensorRT-LLM points: its per-layer term is chosen on these points, so "
                      "each GPU's points run under the profile chosen without them (leave-one-GPU-out; per-sequence "
                      "term and scale from the v0.17 offline rows): held out; the vllm profile (Argonne / vLLM CI "
                      "rows) for vLLM and SGLang points, never fitted: held out",
    "vllm_trace": "the vllm profile (Argonne / vLLM CI rows) and the MoE scale (AIConfigurator kernel rows); the "
                  "LLMServingSim runs and traces were never fitted: held out",
    "moe_kernel": "moe_kernel_time_scale fitted on AIConfigurator H100 rows: H100 rows in_sample, "
                  "H200 / A100 rows held out",
    "large_moe_ep": "nothing fitted on a large fine-grained MoE: the default trtllm profile and the Mixtral MoE scale on "
                    "the DeepSeek-V3 card with expert and attention data parallelism (extrapolated; NCCL all-to-all "
                    "timings for the dispatch); the TensorRT-LLM DeepSeek-R1 rows and the AIConfigurator DeepSeek "
                    "serving points were never fitted: held out",
}
SEED = 1
# engine settings of the online / NIM runs: the trtllm-bench settings of the offline fit
# (assumption: the serving engines' max batch / token limits are not published with the tables)
MAX_NUM_SEQS = throughput_fit.MAX_NUM_SEQS
MAX_BATCHED_TOKENS = throughput_fit.MAX_BATCHED_TOKENS
GPU_MEMORY_UTILIZATION = throughput_fit.GPU_MEMORY_UTILIZATION
ONLINE_FRAMEWORK = throughput_fit.release_profile("v0.14")  # the online table's release
ONLINE_GPUS = {"H100 80GB HBM3": "h100-sxm", "H200 131GB HBM3": "h200"}
ONLINE_MODELS = {"LLaMA 3.1 8B": "llama-3.1-8b", "LLaMA 3.1 70B": "llama-3.1-70b"}
# MLPerf llama2-70b (OpenOrca) prompt length is not in the data: ONE number for the dataset,
# inferred from the NVIDIA v4.1 OFFLINE rows of the same nodes (a family that is not scored) so
# the engine's offline throughput matches them; outputs: the measured mean tokens per sample
MLPERF_PROMPT_BOUNDS = (50, 1024)  # the reference caps prompts at 1024 tokens
MLPERF_SYSTEMS = {"h100-sxm": "H100-SXM-80GB", "h200": "H200-SXM-141GB"}  # catalog gpu -> accelerator substring
# MLPerf model -> (catalog card, harness-config model, {catalog gpu: NVIDIA v4.1 harness class of the
# 8-GPU node}).  Mixtral-8x7B: its end-to-end rows are not in the data (kept aside to score the engine);
# with them in the results files, its Server / Interactive rows are scored like Llama-2-70B's
MLPERF_MODELS = {
    "llama2-70b-99": ("llama-2-70b", "llama2-70b", {"h100-sxm": "H100_SXM_80GB_TP2x4", "h200": "H200_SXM_141GBx8"}),
    "mixtral-8x7b": ("mixtral-8x7b", "mixtral-8x7b", {"h100-sxm": "H100_SXM_80GBx8", "h200": "H200_SXM_141GBx8"}),
}
# TensorRT version of an MLPerf submission -> the perf-overview release whose profile runs it:
# TensorRT-LLM v0.14 ships TensorRT 10.6, v0.17 TensorRT 10.8, v1.0 TensorRT 10.11 (release notes).
# Older software (v4.1: TensorRT 10.2 / 9.3, TensorRT-LLM ~v0.12) gets the oldest in-flight-batching
# profile, v0.14 (assumption: no perf-overview table of those releases is in the data)
MLPERF_RELEASES = (((10, 6), "v0.14"), ((10, 9), "v0.17"), (None, "v1.0"))  # (newest TensorRT, release); None: newer
MLPERF_OFFLINE_REQUESTS = 24576  # the Offline query: the dataset's 24,576 samples (performance_sample_count)
MLPERF_SIM_S, MLPERF_WARMUP_S = 300.0, 60.0  # simulated seconds per row (quick: 90 / 30)
MLPERF_RATE_STEPS = 5  # rate_at_latency: halvings of the log-rate bracket (x1.5): 1.3 % resolution
NIM_MODEL = "llama-3.1-70b"  # Llama 3.3 70B has Llama 3.1 70B's architecture (assumption, as throughput_fit)


def _err(pred, meas):
    return pred / meas - 1.0 if meas and np.isfinite(pred) and meas > 0 else math.nan


def _row(family, model, gpu, config, metric, measured, predicted, in_sample=False, moe=False, **extra):
    return {"family": family, "model": model, "gpu": gpu, "config": config, "metric": metric,
            "measured": float(measured), "predicted": float(predicted), "error": _err(predicted, measured),
            "in_sample": bool(in_sample), "moe": bool(moe), **extra}


# ------------------------------------------------------------------ offline
def _offline_cases(quick: bool) -> pd.DataFrame:
    d = throughput_fit.cases()
    if quick:  # one row per (version, GPU, precision), the shortest lengths
        d = d.sort_values(["isl_tokens", "osl_tokens", "model"]).groupby(["version", "gpu", "precision"]).head(1)
    return d


def _offline_row(family, r, span_tok, in_sample, **extra) -> dict:
    span, tok = span_tok
    return _row(family, r.model, r.gpu, f"{r.version} {r.precision} tp{r.tp} {r.isl_tokens}/{r.osl_tokens}",
                "output_tok_s", r.measured_tok_s, tok / span, in_sample=in_sample, **extra)


def offline_rows(quick: bool) -> list[dict]:
    """Each row under its release's profile, with the row's GPU left out of the fit."""
    profiles = load_params("h100-sxm").framework_profiles
    out = []
    for r in _offline_cases(quick).itertuples(index=False):
        name = throughput_fit.release_profile(r.version)
        fold = profiles[name]["folds"]["gpu"][r.gpu]
        try:
            with throughput_fit.framework_overheads(fold["iteration_overhead_s"], fold["per_seq_overhead_s"],
                                                    fold["kernel_time_scale"], fold.get("per_layer_overhead_s", 0.0)):
                span_tok = throughput_fit.makespan(r)
        except UserError:
            continue  # weights do not fit the GPU at this TP: not a prediction
        out.append(_offline_row("offline", r, span_tok, False, profile=f"{name} without {r.gpu}"))
    return out


def offline_unversioned_rows(quick: bool) -> list[dict]:
    """Every release's rows under the default profile (the v0.17 fit)."""
    out = []
    for r in _offline_cases(quick).itertuples(index=False):
        try:
            span_tok = throughput_fit.makespan(r)
        except UserError:
            continue
        out.append(_offline_row("offline_unversioned", r, span_tok, r.version == throughput_fit.FIT_VERSION,
                                profile=throughput_fit.PROFILE))
    return out


# ------------------------------------------------------------------ shared scenario helpers
def _poisson_trace(path: Path, rate: float, n: int, prompt: int, output: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    t = np.zeros(n) if not np.isfinite(rate) else np.cumsum(rng.exponential(1.0 / rate, size=n))
    pd.DataFrame({"timestamp": t, "prompt_tokens": prompt, "output_tokens": output}).to_csv(path, index=False)
    return float(t[-1])


def _scenario(model, gpu, tp, replicas, precision, arrivals, horizon_s, max_num_seqs, warmup_s=0.0,
              max_batched_tokens=MAX_BATCHED_TOKENS, sample=0, prompt=None, output=None, framework=None):
    wl = {"name": "w", "model": model, "arrivals": arrivals}
    if prompt is not None:
        wl["prompt_tokens"] = {"dist": "constant", "value": prompt}
        wl["output_tokens"] = {"dist": "constant", "value": output}
    return scenario_from_dict({
        "name": "validate",
        "simulation": {"horizon_s": horizon_s, "warmup_s": warmup_s, "request_sample_size": sample},
        "deployments": [{"name": "d", "model": model, "gpu": gpu, "precision": precision, "tp": tp,
                         "replicas": replicas, "batching": {"max_num_seqs": max_num_seqs,
                                                            "max_batched_tokens": max_batched_tokens,
                                                            "gpu_memory_utilization": GPU_MEMORY_UTILIZATION},
                         **({"step_time": {"framework": framework}} if framework else {})}],
        "workloads": [wl]}, "validate")


def _wsum(summary):
    return summary["workloads"]["w"] if "workloads" in summary and "w" in summary["workloads"] else summary


# ------------------------------------------------------------------ online (TensorRT-LLM v0.14)
def online_rows(quick: bool) -> list[dict]:
    d = measurements.read("public/trtllm_online_serving_v0.14.csv")
    d = d[d.gpu.isin(list(ONLINE_GPUS)) & d.model.isin(list(ONLINE_MODELS))].copy()
    d["qps"] = pd.to_numeric(d.offered_qps, errors="coerce")  # INF -> NaN -> all at once
    if quick:
        d = d[(d.qps == 4) & (d.isl_tokens == 467) & (d.gpu == "H100 80GB HBM3")]
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, r in enumerate(d.itertuples(index=False)):
            model, gpu = ONLINE_MODELS[r.model], ONLINE_GPUS[r.gpu]
            n = int(r.num_requests)
            rate = float(r.qps) if np.isfinite(r.qps) else math.inf
            path = Path(tmp) / f"online_{i}.csv"
            last = _poisson_trace(path, rate, n, int(r.isl_tokens), int(r.osl_tokens), SEED + i)
            horizon = last + 3600.0
            sc = _scenario(model, gpu, int(r.tp), 1, "bf16", {"kind": "trace", "path": str(path)}, horizon,
                           MAX_NUM_SEQS, framework=ONLINE_FRAMEWORK)
            s = run(sc, seed=SEED, figures=False).summary
            w = _wsum(s)
            cfg = f"bf16 tp{r.tp} {r.isl_tokens}/{r.osl_tokens} qps {r.offered_qps}"
            out.append(_row("online", model, gpu, cfg, "ttft_mean_s", r.mean_ttft_ms / 1e3, w["ttft_s"]["mean"]))
            out.append(_row("online", model, gpu, cfg, "itl_mean_s", r.mean_itl_ms / 1e3, w["tpot_s"]["mean"]))
    return out


# ------------------------------------------------------------------ MLPerf Server
def _harness(cls: str, scenario: str = "Server", model: str = "llama2-70b") -> dict:
    """NVIDIA's v4.1 harness config of one node class in one scenario (``Server`` or ``Offline``: the
    two differ, e.g. 8x H100 runs llama2-70b at batch 1024 in Server and 896 in Offline) for one
    harness-config ``model`` (``llama2-70b``, ``mixtral-8x7b``)."""
    h = measurements.read("public/mlperf_inference_harness_configs.csv")
    h = h[(h.model == model) & (h.scenario == scenario)].set_index("class_name")
    out, c = {}, cls
    while c in h.index:  # resolve inheritance: a blank cell is inherited from the parent class
        r = h.loc[c]
        for k in ("gpu_batch_size", "tensor_parallelism", "precision", "use_fp8", "max_num_tokens"):
            if k not in out and pd.notna(r[k]):
                out[k] = r[k]
        c = r.parent_class
    bs = out.get("gpu_batch_size")
    out["batch"] = int(str(bs).split(":")[1].strip(" }")) if isinstance(bs, str) and ":" in bs else None
    return out


def mlperf_release(framework: str) -> str:
    """The TensorRT-LLM release profile (``trtllm-v0.14`` ...) of an MLPerf submission, from the
    TensorRT version in its ``framework`` column (:data:`MLPERF_RELEASES`)."""
    m = re.search(r"TensorRT\s+(\d+)\.(\d+)", str(framework))
    version = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    return throughput_fit.release_profile(next(release for upto, release in MLPERF_RELEASES
                                               if upto is None or version <= upto))


_PROMPT_MEMO: dict[str, tuple[int, list[dict]]] = {}


def _params_key() -> str:
    """Fingerprint of the loaded calibrations the engine reads (``framework_overheads`` changes them
    in place, so a memo keyed on it is re-inferred inside ``overhead_grid``)."""
    return json.dumps([load_params(g).to_json() for g in MLPERF_SYSTEMS], sort_keys=True, default=str)


def mlperf_offline_prompt_tokens(log=None, model: str = "llama2-70b-99") -> tuple[int, list[dict]]:
    """:func:`infer_mlperf_prompt_tokens`, memoised on the calibration in force and the model (the
    Server and the Interactive rows share it)."""
    key = model + _params_key()
    if key not in _PROMPT_MEMO:
        _PROMPT_MEMO[key] = infer_mlperf_prompt_tokens(model)
    p, cases = _PROMPT_MEMO[key]
    return p, [dict(c) for c in cases]


def infer_mlperf_prompt_tokens(model: str = "llama2-70b-99") -> tuple[int, list[dict]]:
    """The prompt length (tokens) of one MLPerf model's dataset (:data:`MLPERF_MODELS`) at which the
    engine's offline throughput matches NVIDIA's v4.1 Offline rows of that model on the 8x H100 /
    8x H200 nodes (mean log error zero; bisection: throughput falls monotonically with the prompt
    length).  Each node as its Offline harness config runs it (TP, Offline batch size),
    :data:`MLPERF_OFFLINE_REQUESTS` requests so the batch is in steady state, under the release
    profile of the rows' software.  A model without such rows: a one-line error naming it."""
    card, hmodel, classes = MLPERF_MODELS[model]
    d = measurements.read("public/mlperf_inference_v4.1_llm_results.csv")
    d = d[(d.scenario == "Offline") & (d.submitter == "NVIDIA") & (d.model == model)]
    cases = []
    for gpu, acc in MLPERF_SYSTEMS.items():
        r = d[d.system_id.str.endswith(acc + "x8_TRT")]
        if len(r) and gpu in classes:
            cfg = _harness(classes[gpu], "Offline", hmodel)
            cases.append((gpu, int(cfg.get("tensor_parallelism", 1)), cfg.get("batch") or 1024,
                          float(r.tokens_per_s.iloc[0]), int(round(r.tokens_per_sample_derived.iloc[0])),
                          mlperf_release(r.framework.iloc[0])))
    if not cases:
        raise UserError(f"MLPerf {model}: no NVIDIA v4.1 Offline row on an 8x H100 / H200 node to infer the "
                        f"prompt length from; needed: one in public/mlperf_inference_v4.1_llm_results.csv")

    def mean_log_err(p):
        return float(np.mean([math.log(throughput(card, g, 8, tp, p, o, "fp8", requests=MLPERF_OFFLINE_REQUESTS,
                                                  max_num_seqs=b, framework=fw)["output_tokens_per_s"] / m)
                              for g, tp, b, m, o, fw in cases]))
    lo, hi = MLPERF_PROMPT_BOUNDS
    while hi - lo > 4:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if mean_log_err(mid) > 0 else (lo, mid)
    p = (lo + hi) // 2
    return p, [{"gpu": g, "tp": tp, "batch": b, "offline_measured_tok_s": m, "output_tokens": o, "profile": fw}
               for g, tp, b, m, o, fw in cases]


def mlperf_rows(quick: bool, scenario: str = "Server") -> list[dict]:
    """MLPerf ``scenario`` rows (Server, or Interactive: the v5.1 Server variant with tighter
    latency limits, whose harness config is not in the data: the node's v4.1 Server config is
    used, assumption) of every model in :data:`MLPERF_MODELS` the results files hold."""
    family = "mlperf_server" if scenario == "Server" else "mlperf_interactive"
    frames = [measurements.read(f"public/mlperf_inference_{v}_llm_results.csv") for v in ("v4.1", "v5.1")]
    d = pd.concat(frames, ignore_index=True)
    d = d[(d.scenario == scenario) & d.model.isin(list(MLPERF_MODELS)) & (d.number_of_nodes == 1)
          & (d.accelerators_per_node == 8) & d.framework.str.contains("TensorRT", na=False)
          & d.ttft_mean_ns.notna()]
    out = []
    for model in MLPERF_MODELS:
        if (d.model == model).any():
            out += _mlperf_model_rows(d[d.model == model], model, family, quick)
    return out


def _mlperf_model_rows(d: pd.DataFrame, model: str, family: str, quick: bool) -> list[dict]:
    card, hmodel, classes = MLPERF_MODELS[model]
    moe = catalog.llm(card).experts > 1
    prompt, _ = mlperf_offline_prompt_tokens(model=model)
    sim_s, warm_s = (90.0, 30.0) if quick else (MLPERF_SIM_S, MLPERF_WARMUP_S)
    out = []
    for gpu, acc in MLPERF_SYSTEMS.items():
        if gpu not in classes:
            continue
        g = d[d.accelerator.str.replace(" ", "-").str.contains(acc, case=False, na=False)
              | d.system_id.str.contains(acc.replace("-", "_"), case=False, na=False)]
        g = g[~g.system_id.str.contains("NVL|CTS|MaxQ", case=False)]
        if quick:
            g = (g[g.submitter == "NVIDIA"] if (g.submitter == "NVIDIA").any() else g).head(1)
        cfg = _harness(classes[gpu], "Server", hmodel)
        tp, batch = int(cfg.get("tensor_parallelism", 1)), cfg.get("batch") or 1024
        for i, r in enumerate(g.itertuples(index=False)):
            rate = float(r.samples_per_s)
            out_tok = int(round(r.tokens_per_sample_derived))
            fw = mlperf_release(r.framework)

            def served(x, gpu=gpu, tp=tp, batch=batch, out_tok=out_tok, fw=fw, i=i):
                """The node at ``x`` requests/s: its workload summary."""
                sc = _scenario(card, gpu, tp, 8 // tp, "fp8", {"kind": "poisson", "rate_per_s": x},
                               sim_s, batch, warmup_s=warm_s, prompt=prompt, output=out_tok, framework=fw)
                return _wsum(run(sc, seed=SEED + i, figures=False).summary)
            w = served(rate)
            conf = (f"{r.mlperf_version} {r.submitter} {r.system_id} tp{tp} x{8 // tp} batch {batch} {rate:g}/s "
                    f"prompt {prompt} (from Offline) {fw}")
            for metric, col, key, q in (("ttft_mean_s", "ttft_mean_ns", "ttft_s", "mean"),
                                        ("ttft_p99_s", "ttft_p99_ns", "ttft_s", "p99"),
                                        ("tpot_mean_s", "tpot_mean_ns", "tpot_s", "mean"),
                                        ("tpot_p99_s", "tpot_p99_ns", "tpot_s", "p99")):
                if pd.notna(getattr(r, col)):
                    out.append(_row(family, card, gpu, conf, metric, getattr(r, col) * 1e-9,
                                    w[key][q] if w[key][q] is not None else math.nan, moe=moe))
            if pd.notna(r.tpot_mean_ns):
                ttft_limit = r.constraint_ttft_ns * 1e-9 if pd.notna(r.constraint_ttft_ns) else math.inf
                out.append(_row(family, card, gpu, conf, "rate_at_measured_tpot_per_s", rate,
                                rate_at_latency(served, rate, r.tpot_mean_ns * 1e-9, ttft_limit, at_rate=w,
                                                steps=3 if quick else MLPERF_RATE_STEPS), moe=moe))
    return out


def rate_at_latency(served, rate: float, tpot_s: float, ttft_p99_limit_s: float = math.inf,
                    at_rate: dict | None = None, reach: float = 1.5, steps: int = MLPERF_RATE_STEPS) -> float:
    """The highest Poisson rate (req/s) at which the engine's mean TPOT stays at or below
    ``tpot_s`` and its TTFT p99 within the scenario's limit (a queue that grows breaks it): the
    load at which the simulated node has the measured latency.  ``served(rate)`` returns the
    workload summary, ``at_rate`` is it at ``rate`` when already run.  Bisection on the log rate
    between ``rate`` and ``reach`` x ``rate`` (or ``rate / reach`` and ``rate`` when the measured
    rate already breaks the condition), ``steps`` halvings.  At the measured operating point TPOT
    rises steeply with load (results/validation/latency_under_load.md), so this compares
    capacity, where the latency metrics at a fixed rate amplify a few percent of step time into
    tens of percent.  Returns the bracket's end when the condition holds (or fails) throughout."""
    def ok(w):
        tpot, ttft = w["tpot_s"]["mean"], w["ttft_s"]["p99"]
        return tpot is not None and tpot <= tpot_s and (ttft is None or ttft <= ttft_p99_limit_s)
    up = ok(at_rate if at_rate is not None else served(rate))
    far = math.log(rate * (reach if up else 1.0 / reach))
    if ok(served(math.exp(far))) == up:
        return math.exp(far)
    lo, hi = (math.log(rate), far) if up else (far, math.log(rate))
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if ok(served(math.exp(mid))) else (lo, mid)
    return math.exp(0.5 * (lo + hi))


def mlperf_load_sweep(gpu: str = "h100-sxm", rates=(74.42, 80.0, 84.0, 88.0, 92.0), prompt: int | None = None,
                      output_tokens: int = 290, sim_s: float = MLPERF_SIM_S, warmup_s: float = MLPERF_WARMUP_S,
                      framework: str = "TensorRT 10.2") -> pd.DataFrame:
    """Diagnosis of the MLPerf Server gap (results/validation/latency_under_load.md): the 8-GPU
    Llama-2-70B node of :data:`MLPERF_MODELS` configured as in :func:`mlperf_rows`, Poisson at each rate;
    per rate the simulated TTFT/TPOT, output tokens/s and the running batch per replica by
    Little's law (tokens/s per replica x mean TPOT).  ``framework``: the submission's software
    (NVIDIA's v4.1 rows: TensorRT 10.2), which picks the release profile (:func:`mlperf_release`)."""
    if prompt is None:
        prompt, _ = mlperf_offline_prompt_tokens()
    cfg = _harness(MLPERF_MODELS["llama2-70b-99"][2][gpu])
    tp, batch = int(cfg.get("tensor_parallelism", 1)), cfg.get("batch") or 1024
    out = []
    for rate in rates:
        sc = _scenario("llama-2-70b", gpu, tp, 8 // tp, "fp8", {"kind": "poisson", "rate_per_s": float(rate)},
                       sim_s, batch, warmup_s=warmup_s, prompt=prompt, output=output_tokens,
                       framework=mlperf_release(framework))
        w = _wsum(run(sc, seed=SEED, figures=False).summary)
        tok_rep = float(rate) * output_tokens / (8 // tp)
        out.append({"gpu": gpu, "tp": tp, "batch": batch, "prompt_tokens": prompt, "rate_per_s": float(rate),
                    "ttft_mean_s": w["ttft_s"]["mean"], "ttft_p99_s": w["ttft_s"]["p99"],
                    "tpot_mean_s": w["tpot_s"]["mean"], "tpot_p99_s": w["tpot_s"]["p99"],
                    "running_per_replica": tok_rep * (w["tpot_s"]["mean"] or math.nan)})
    return pd.DataFrame(out)


def overhead_grid(family: str, iteration_overheads_s=(None,), extra_per_seq_s=(0.0,), quick: bool = False) -> pd.DataFrame:
    """Sensitivity of one family to the framework overheads (results/validation/latency_under_load.md):
    the family re-run with each per-iteration overhead (None: the fitted one) and each per-sequence
    overhead added to the fitted one; MdAPE and signed median error per metric.  A diagnosis tool:
    nothing is written back."""
    if family not in RUNNERS:
        raise UserError(f"family: {family!r} unknown; allowed: {', '.join(FAMILIES)}")
    p = load_params("h100-sxm")
    a0, b0, k, c0 = p.iteration_overhead_s, p.per_seq_overhead_s, p.kernel_time_scale, p.per_layer_overhead_s
    out = []
    for a in iteration_overheads_s:
        for x in extra_per_seq_s:
            with throughput_fit.framework_overheads(a0 if a is None else a, b0 + x, k, c0):
                rows = pd.DataFrame(RUNNERS[family](quick))
            for metric, g in rows.groupby("metric"):
                out.append({"family": family, "iteration_overhead_s": a0 if a is None else a, "extra_per_seq_s": x,
                            "metric": metric, "n": len(g), "mdape": float(g.error.abs().median()),
                            "bias": float(g.error.median())})
    return pd.DataFrame(out)


# ------------------------------------------------------------------ NIM fixed concurrency
NIM_SIM_S, NIM_WARMUP_S = 900.0, 300.0  # simulated / warm-up seconds per concurrency (quick: 300 / 100)


def nim_rows(quick: bool) -> list[dict]:
    """The ``closed_loop`` arrival kind: N users, zero think time (AIPerf concurrency mode)."""
    d = measurements.read("public/nvidia_nim_benchmarking_llama33_70b.csv")
    sim_s, warm_s = (300.0, 100.0) if quick else (NIM_SIM_S, NIM_WARMUP_S)
    if quick:
        d = d[d.concurrency.isin([1, 25])]
    out = []
    for r in d.itertuples(index=False):
        c = int(r.concurrency)
        sc = _scenario(NIM_MODEL, "h100-sxm", int(r.tp), int(r.num_gpus) // int(r.tp), "fp8",
                       {"kind": "closed_loop", "users": c}, sim_s, MAX_NUM_SEQS, warmup_s=warm_s,
                       prompt=int(r.input_tokens), output=int(r.output_tokens))
        s = run(sc, seed=SEED, figures=False).summary
        w = _wsum(s)
        # response-time law of a closed system, X = N / (R + Z), Z = 0: exact in steady state and free
        # of the window-edge bias of counting completions (an e2e is ~2 min at N = 250)
        e2e = w["e2e_s"]["mean"]
        tok_s = c * int(r.output_tokens) / e2e if e2e else math.nan
        conf = f"fp8 tp{r.tp} {r.input_tokens}/{r.output_tokens} concurrency {c} (closed loop)"
        for metric, meas, pred in (("ttft_mean_s", r.ttft_ms / 1e3, w["ttft_s"]["mean"]),
                                   ("itl_mean_s", r.itl_ms / 1e3, w["tpot_s"]["mean"]),
                                   ("output_tok_s", r.throughput_tok_s, tok_s)):
            out.append(_row("nim_concurrency", NIM_MODEL, "h100-sxm", conf, metric, meas,
                            pred if pred is not None else math.nan))
    return out


# ------------------------------------------------------------------ MoE kernel (step model)
def moe_rows(quick: bool) -> list[dict]:
    d = moe_fit.rows()
    if quick:
        d = d.groupby(["gpu", "precision", "model", "tp"]).head(3)
    parts = moe_fit.predict_parts(d)
    scale = np.array([load_params(g).moe_kernel_time_scale or load_params(g).kernel_time_scale for g in d.gpu])
    pred = moe_fit.scaled(parts[:, 0], parts[:, 1], scale)
    return [_row("moe_kernel", r.model, r.gpu, f"vllm {r.version} {r.precision} moe_tp{r.tp} {int(r.n)} tokens "
                 f"{r.distribution}", "moe_layer_s", r.measured_s, p, in_sample=(r.gpu == moe_fit.FIT_GPU), moe=True)
            for r, p in zip(d.itertuples(index=False), pred)]


def mlperf_interactive_rows(quick: bool) -> list[dict]:
    return mlperf_rows(quick, "Interactive")


# ------------------------------------------------------------------ large MoE, expert parallel
def _caveat_int(text: str, key: str) -> int | None:
    m = re.search(rf"{re.escape(key)}=(\d+)", text)
    return int(m.group(1)) if m else None


def large_moe_rows(quick: bool) -> list[dict]:
    """TensorRT-LLM ``trtllm-bench`` DeepSeek-R1 max-throughput rows (one 8-GPU node, no MTP,
    measured), run as ``sovsim throughput`` with the row's EP / attention-DP layout, per-rank
    batch and token limits (``max_num_seqs = batch x ranks``) and request count; rows in a
    precision the catalog lacks (fp4 weights) are not scored.  Then AIConfigurator's measured
    DeepSeek-V3 / R1 serving points on one node (TTFT / TPOT at a client concurrency,
    :func:`sim.calibration.serving_points.aiconfigurator_deepseek_rows`)."""
    d = measurements.read("large_moe_ep.csv")
    d = d[(d.single_node_no_mtp_measured == "yes") & (d.metric == "output_tok_s_per_gpu")]
    out = []
    for r in d.itertuples(index=False):
        if r.weight_precision not in ("bf16", "fp16", "fp8") or r.gpu not in ("h100-sxm", "h200", "b200"):
            continue
        tp, ep = int(r.tp), int(r.ep)
        dp = r.attention_dp == "yes"
        per_rank = _caveat_int(r.caveat, "max_batch_size/rank")
        tokens = _caveat_int(r.caveat, "max_num_tokens")
        n = _caveat_int(r.caveat, "num_requests")
        ranks = tp if dp else 1
        res = throughput(r.model, r.gpu, int(r.gpus_per_replica), tp, int(r.isl_tokens), int(r.osl_tokens),
                         r.weight_precision, requests=(min(n, 2048) if quick else n) if n else None, seed=SEED,
                         max_num_seqs=per_rank * ranks if per_rank else None,
                         max_batched_tokens=tokens * ranks if tokens else None,
                         gpu_memory_utilization=GPU_MEMORY_UTILIZATION, ep=ep, attention_dp=dp)
        conf = (f"{r.checkpoint} {r.weight_precision} tp{tp} ep{ep}{' attention-dp' if dp else ''} "
                f"{int(r.isl_tokens)}/{int(r.osl_tokens)} concurrency {r.concurrency_or_batch}")
        out.append(_row("large_moe_ep", r.model, r.gpu, conf, "output_tok_s_per_gpu", float(r.value),
                        res["output_tokens_per_s_per_gpu"], moe=True))
    return out + serving_points.aiconfigurator_deepseek_rows(quick)


RUNNERS = {"offline": offline_rows, "offline_unversioned": offline_unversioned_rows, "online": online_rows, "mlperf_server": mlperf_rows,
           "mlperf_interactive": mlperf_interactive_rows,
           "nim_concurrency": nim_rows, "aiconfigurator": serving_points.aiconfigurator_rows,
           "vllm_trace": serving_points.vllm_trace_rows, "moe_kernel": moe_rows, "large_moe_ep": large_moe_rows}


# ------------------------------------------------------------------ summaries and outputs
def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """n, MdAPE and signed median error per (family, metric) and per GPU, on all rows and on
    held-out rows only."""
    out = []
    ok = df[np.isfinite(df.error)]
    for scope, sub in (("all", ok), ("held_out", ok[~ok.in_sample])):
        for keys in (["family", "metric"], ["family", "metric", "gpu"], ["family", "moe"]):
            for k, g in sub.groupby(keys):
                k = k if isinstance(k, tuple) else (k,)
                r = dict(zip(keys, k))
                out.append({"scope": scope, "family": r["family"], "metric": r.get("metric", "(all)"),
                            "gpu": r.get("gpu", "(all)"),
                            "class": ("MoE" if r["moe"] else "dense") if "moe" in r else "(all)",
                            "n": len(g), "mdape": float(g.error.abs().median()), "bias": float(g.error.median())})
    return pd.DataFrame(out)


def validate(quick: bool = False, families=FAMILIES, results_dir: Path | None = None, log=print,
             progress=None) -> dict:
    """Score every family; ``progress`` (:mod:`sim.core.progress`) counts families."""
    bad = [f for f in families if f not in RUNNERS]
    if bad:
        raise UserError(f"--family: {', '.join(bad)} unknown; allowed: {', '.join(FAMILIES)}")
    rows, seconds = [], {}
    bar = progress_mod.start(progress, len(families), "family", "validate")
    for f in families:
        bar.note(f)
        t0 = time.process_time()
        rows += RUNNERS[f](quick)
        seconds[f] = time.process_time() - t0
        log(f"{f}: {sum(r['family'] == f for r in rows)} predictions, {seconds[f]:.1f} s CPU")
        bar.update(1)
    bar.close()
    df = pd.DataFrame(rows)
    summ = summarize(df)
    out = {"rows": df, "summary": summ, "cpu_s": seconds, "quick": quick}
    if results_dir is not None:
        write_outputs(out, Path(results_dir), log=log)
    return out


def _table(summ: pd.DataFrame, scope: str, gpu=False) -> list[str]:
    s = summ[(summ.scope == scope) & (summ["class"] == "(all)")]
    s = s[s.gpu != "(all)"] if gpu else s[s.gpu == "(all)"]
    lines = ["| family | metric |" + (" gpu |" if gpu else "") + " n | MdAPE | signed median |",
             "|---|---|" + ("---|" if gpu else "") + "---|---|---|"]
    for r in s.itertuples(index=False):
        lines.append(f"| {r.family} | {r.metric} |" + (f" {r.gpu} |" if gpu else "")
                     + f" {r.n} | {100 * r.mdape:.1f}% | {100 * r.bias:+.1f}% |")
    return lines


def write_outputs(out: dict, results_dir: Path, log=print) -> None:
    results_dir.mkdir(parents=True, exist_ok=True)
    df, summ = out["rows"], out["summary"]
    df.to_csv(results_dir / "validation.csv", index=False, float_format="%.6g")
    summ.to_csv(results_dir / "validation_summary.csv", index=False, float_format="%.6g")
    figure(df, results_dir / "predicted_vs_measured.png")
    if (df.metric == "bin_tok_s").any():
        trace_figure(df, results_dir / "vllm_trace_series.png")
    cls = summ[(summ["class"] != "(all)")]
    md = ["# `sovsim validate`: the engine against public end-to-end measurements\n",
          f"Written by `sovsim validate{' --quick' if out['quick'] else ''}` (`sim/calibration/validate.py`). "
          "error = predicted / measured - 1 (positive: predicted above measured, i.e. more throughput or a longer latency). "
          "Every row in `validation.csv`; aggregates in `validation_summary.csv`; the vllm_trace series in `vllm_trace_series.png`. Each family's CPU seconds are printed "
          "by the run, not recorded here, so a regeneration is byte-identical.\n",
          "## Which fit each family sees (leave-one-family-out)\n", "| family | fitted parameters used |", "|---|---|"]
    md += [f"| {k} | {v} |" for k, v in FITS.items() if k in set(df.family)]
    md += ["\n## Held-out rows only\n"] + _table(summ, "held_out")
    md += ["\n## All rows (v0.17 offline_unversioned and H100 MoE-kernel rows are in-sample)\n"] + _table(summ, "all")
    md += ["\n## Held out, by GPU\n"] + _table(summ, "held_out", gpu=True)
    md += ["\n## By dense / MoE (all metrics pooled)\n", "| scope | family | class | n | MdAPE | signed median |",
           "|---|---|---|---|---|---|"]
    md += [f"| {r.scope} | {r.family} | {r['class']} | {r.n} | {100 * r.mdape:.1f}% | {100 * r.bias:+.1f}% |"
           for _, r in cls.iterrows()]
    llama_classes = MLPERF_MODELS["llama2-70b-99"][2]
    md += ["\n## Configuration and assumptions\n",
           f"- offline: trtllm-bench settings (max_num_seqs {MAX_NUM_SEQS}, max_batched_tokens {MAX_BATCHED_TOKENS}, "
           f"gpu_memory_utilization {GPU_MEMORY_UTILIZATION}; assumption), {throughput_fit.REQUESTS_CAP} requests per row.",
           "- online: 500 requests, Poisson arrivals at the offered QPS (seeded), same engine settings (assumption: "
           "the Triton engine's limits are not published); ITL compared with the simulated mean TPOT.",
           f"- mlperf_server: NVIDIA v4.1 harness config per node ({', '.join(f'{g}: {c}' for g, c in llama_classes.items())}; "
           "TP and batch size from the Server config, FP8), used for every submitter's 8-GPU TensorRT node and for v5.1 rows "
           "(assumption); each row under the release profile of its TensorRT version "
           f"({', '.join(f'<= TensorRT {a}.{b}: {r}' for (a, b), r in MLPERF_RELEASES[:-1])}, newer: {MLPERF_RELEASES[-1][1]}); "
           "prompt length (not in the data) one number inferred from NVIDIA's v4.1 Offline rows of the same "
           f"nodes (their Offline config's batch size, {MLPERF_OFFLINE_REQUESTS} requests, engine offline throughput = "
           "measured; Offline rows are not scored), "
           f"output = measured tokens per sample; Poisson at the measured rate, {MLPERF_SIM_S:g} s simulated, requests "
           f"arriving in the first {MLPERF_WARMUP_S:g} s not measured ({'quick: 90 s / 30 s' if out['quick'] else 'full mode'}). "
           "`rate_at_measured_tpot_per_s`: the highest rate at which the engine's mean TPOT is at most the measured one "
           "and its TTFT p99 within the row's limit (`validate.rate_at_latency`, bisection from the measured rate, "
           f"{MLPERF_RATE_STEPS} halvings of a x1.5 bracket), against the measured rate: a capacity error, which the "
           "latency metrics at a fixed rate amplify several-fold near saturation.",
           "- mlperf_interactive: v5.1 Interactive rows (8x H200), configured exactly as mlperf_server (the Interactive "
           "harness config is not in the data: the node's v4.1 Server config, assumption).",
           f"- nim_concurrency: `closed_loop` arrivals (N users, zero think time, as AIPerf's concurrency mode), "
           f"{NIM_SIM_S:g} s simulated, the first {NIM_WARMUP_S:g} s not measured; throughput = output tokens per request x "
           "N / mean e2e (response-time law). Llama 3.3 70B uses the Llama 3.1 70B card (same architecture).",
           f"- aiconfigurator: one engine run per measured point: catalog model and GPU, measured TP and precision "
           f"(blank = {serving_points.AIC_DEFAULT_PRECISION}, assumption), engine profile per backend "
           f"({', '.join(f'{k} -> {v}' for k, v in serving_points.BACKEND_PROFILES.items())}; SGLang has no profile: "
           "assumption), `closed_loop` arrivals with N = the measured concurrency, no think time, constant ISL / OSL; one "
           "warm-up cycle then two measured cycles (window doubled until every user completed a measured request); "
           "simulated means against the measured values (mean or median not stated)"
           + (" (quick: one point per model, GPU and backend)." if out["quick"] else "."),
           f"- vllm_trace: the LLMServingSim artifact's 300-request ShareGPT traces replayed on {serving_points.TRACE_GPU}, "
           f"`{serving_points.TRACE_PROFILE}` profile, {serving_points.TRACE_PRECISION}, "
           + ", ".join(f"{k}: {m} {n}x TP{tp}" for k, (m, _, tp, n) in serving_points.TRACE_RUNS.items())
           + " (TP, dtype, SXM: assumption); measured bin k = tokens in [k-1, k) s (assumption); output_tok_s = tokens / "
           f"time of the last non-empty bin; plateau = mean of bins ({serving_points.PLATEAU_S[0]}, "
           f"{serving_points.PLATEAU_S[1]}] s; drain = last non-empty bin - last arrival; bin_tok_s: bins with at least "
           f"{100 * serving_points.BIN_FLOOR:.0f} % of the measured peak. The runs published no TTFT / TPOT"
           + (" (quick: Mixtral only)." if out["quick"] else "."),
           "- moe_kernel: the step model's MoE layer (not an engine run) against AIConfigurator vLLM fused-MoE tables."]
    (results_dir / "README.md").write_text("\n".join(md) + "\n")
    log(f"wrote {results_dir}/validation.csv, validation_summary.csv, predicted_vs_measured.png"
        f"{', vllm_trace_series.png' if (df.metric == 'bin_tok_s').any() else ''}, README.md")


def figure(df: pd.DataFrame, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    kinds = [("throughput", df.metric.str.endswith("tok_s")), ("TTFT", df.metric.str.startswith("ttft")),
             ("ITL / TPOT", df.metric.str.startswith(("itl", "tpot"))), ("MoE layer", df.metric == "moe_layer_s")]
    kinds = [(k, m) for k, m in kinds if m.any()]
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 4.2), squeeze=False)
    for ax, (name, m) in zip(axes[0], kinds):
        sub = df[m & np.isfinite(df.predicted) & (df.predicted > 0)]
        for fam, g in sub.groupby("family"):
            for ins, mk in ((False, "o"), (True, "x")):
                h = g[g.in_sample == ins]
                if len(h):
                    ax.scatter(h.measured, h.predicted, s=10, marker=mk, alpha=0.6, color=f"C{FAMILIES.index(fam)}",
                               label=f"{fam}{' (in-sample)' if ins else ''}")
        lo, hi = sub[["measured", "predicted"]].min().min(), sub[["measured", "predicted"]].max().max()
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        for f in (0.75, 1.25):
            ax.plot([lo, hi], [lo * f, hi * f], "k:", lw=0.6)
        ax.set_xscale("log"); ax.set_yscale("log")
        ax.set_xlabel("measured"); ax.set_ylabel("predicted (engine)"); ax.set_title(name)
        ax.legend(fontsize=6)
    fig.suptitle("sovsim validate: predicted vs measured (dotted: +-25 %)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def trace_figure(df: pd.DataFrame, path: Path) -> None:
    """The ``vllm_trace`` bins: measured vs simulated generation throughput per second, per run."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    b = df[df.metric == "bin_tok_s"].copy()
    b["t_s"] = b.config.str.extract(r"bin t=(\d+) s")[0].astype(int)
    runs = list(dict.fromkeys(b.model))
    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 3.6), squeeze=False)
    for ax, m in zip(axes[0], runs):
        g = b[b.model == m].sort_values("t_s")
        ax.plot(g.t_s, g.measured, "k-", label="measured (vLLM, 4x H100)")
        ax.plot(g.t_s, g.predicted, "C1--", label="engine (trace replay)")
        ax.set_xlabel("time, s (end of 1 s bin)"); ax.set_ylabel("output tokens/s"); ax.set_title(m, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle("vllm_trace: generation throughput per second (bins >= 10 % of the measured peak)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
