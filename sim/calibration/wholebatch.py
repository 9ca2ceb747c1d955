"""Check the step-time model against whole-batch public measurements (never fitted on).

A static-batch benchmark (vLLM ``benchmark_latency.py``, TensorRT-LLM ``gptSessionBenchmark``,
Argonne LLM-Inference-Bench with vLLM) runs ``B`` prompts of ``I`` tokens together: prefill,
then ``O - 1`` decode steps with every sequence growing by one token per step.  The model's
prediction is the sum of those iterations (closed form over the decode run).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from sim.calibration import measurements
from sim.core.errors import UserError
from sim.perf.roofline import PerfModel, build_model, is_extrapolated
from sim.perf.step import prefill_attn_pairs
from sim.perf import catalog
from sim.perf.roofline import load_params

PREFILL_BUDGET_TOKENS = 8192  # prompts prefilled together per iteration (vLLM default-sized budget): assumption


def static_batch_latency_s(model: PerfModel, batch: int, input_tokens: int, output_tokens: int,
                           prefill_budget_tokens: int = PREFILL_BUDGET_TOKENS) -> float:
    """Time to run ``batch`` prompts of ``input_tokens`` to ``output_tokens`` outputs each."""
    w = model.window_tokens
    per_prompt_pairs = prefill_attn_pairs(0, input_tokens, w)
    per_iter = max(1, prefill_budget_tokens // max(1, input_tokens))
    t, left = 0.0, batch
    while left > 0:
        k = min(per_iter, left)
        t += model.mixed_step_s(0, 0, k * input_tokens, k * per_prompt_pairs)
        left -= k
    steps = output_tokens - 1
    if steps <= 0:
        return t
    if w is None or input_tokens + output_tokens <= w:
        return t + model.decode_run_s(batch, batch * (input_tokens + 1), batch, steps)
    for j in range(steps):  # window reached: attended tokens stop growing
        t += model.step_time_s(batch, batch * min(input_tokens + j + 1, w))
    return t


# ------------------------------------------------------------------ datasets
ARGONNE_MODELS = {"meta-llama/Llama-2-7b-hf": "llama-2-7b", "meta-llama/Meta-Llama-3-8B": "llama-3-8b",
                  "mistralai/Mistral-7B-v0.1": "mistral-7b", "meta-llama/Llama-2-70b-hf": "llama-2-70b",
                  "meta-llama/Meta-Llama-3-70B": "llama-3-70b", "mistralai/Mixtral-8x7B-v0.1": "mixtral-8x7b"}
ARGONNE_GPUS = {"Nvidia A100 GPU": "a100-sxm-80gb", "Nvidia H100 GPU": "h100-sxm"}
TRT_MODELS = {"Mistral 7B": "mistral-7b", "LLaMA 7B": "llama-2-7b", "LLaMA 70B": "llama-2-70b",
              "Mixtral 8x7B": "mixtral-8x7b", "llama_13b": "llama-2-13b", "llama_70b": "llama-2-70b"}
TRT_GPUS = {"H200": "h200", "H100 SXM 80GB": "h100-sxm", "A100 SXM 80GB": "a100-sxm-80gb"}


def _cases() -> list[dict]:
    out: list[dict] = []
    v = measurements.read("public/vllm_github_pr_and_ci_measurements.csv")
    # vLLM PR #2542 (H100 TP8) and #3240 (A100 TP2): Mixtral, 1000 in / 50 out, the PR's kernel
    for pr, gpu, tp in (("2542", "h100-sxm", 8), ("3240", "a100-sxm-80gb", 2)):
        d = v[v.source_url.str.endswith(f"/pull/{pr}") & v.engine_variant.str.startswith("PR #")]
        for _, r in d.iterrows():
            out.append(dict(dataset=f"vllm-pr{pr}", model="mixtral-8x7b", gpu=gpu, tp=tp, precision="bf16",
                            batch=int(r.batch_size), input=1000, output=50, meas_s=float(r.value),
                            caveat="H100/A100 variant not stated (SXM assumed); dtype default 16-bit"))
    # vLLM PR #4002: Mixtral 8x22B A100 TP4/TP8 with tuned config; lengths assumed script defaults 32/128
    d = v[v.source_url.str.endswith("/pull/4002") & v.engine_variant.str.contains("with tuned")
          & v.metric.str.startswith("avg")]
    for _, r in d.iterrows():
        out.append(dict(dataset="vllm-pr4002", model="mixtral-8x22b", gpu="a100-sxm-80gb", tp=int(r.tp),
                        precision="bf16", batch=int(r.batch_size), input=32, output=128, meas_s=float(r.value),
                        caveat="input/output lengths not stated: script defaults 32/128 assumed"))
    # vLLM CI latency tests: 32 in / 128 out, batch 8 (mean)
    ci_models = {"Llama-3.1 8B": "llama-3.1-8b", "llama-3.1 8B": "llama-3.1-8b", "Llama-3 70B": "llama-3-70b",
                 "Mixtral 8x7B": "mixtral-8x7b"}
    ci_gpus = {"H200": "h200", "A100-SXM4-80GB": "a100-sxm-80gb", "8xH100": "h100-sxm"}
    d = v[v.source_url.str.contains("buildkite") & (v.metric == "mean end-to-end batch latency")]
    seen = set()
    for _, r in d.iterrows():
        mid = next((c for k, c in ci_models.items() if str(r.model).startswith(k)), None)
        gid = next((c for k, c in ci_gpus.items() if str(r.gpu).startswith(k)), None)
        if mid is None or gid is None:
            continue
        key = (mid, gid, int(r.tp), float(r.value))
        if key in seen:
            continue
        seen.add(key)
        out.append(dict(dataset="vllm-ci", model=mid, gpu=gid, tp=int(r.tp), precision="bf16", batch=8,
                        input=32, output=128, meas_s=float(r.value) / 1e3,
                        caveat="CI build, version and H100 variant not shown"))
    # Argonne LLM-Inference-Bench, vLLM rows (ignore_eos: exactly L outputs), A100/H100
    a = measurements.read("public/argonne_llm_inference_bench_static_batch.csv")
    a = a[a.framework.eq("vLLM") & a.hardware.isin(list(ARGONNE_GPUS)) & a.model.isin(list(ARGONNE_MODELS))]
    a = a.groupby(["hardware", "num_devices", "model", "input_len_tokens", "output_len_tokens", "batch_size"],
                  as_index=False).latency_s.median()
    for _, r in a.iterrows():
        out.append(dict(dataset="argonne-vllm", model=ARGONNE_MODELS[r.model], gpu=ARGONNE_GPUS[r.hardware],
                        tp=int(r.num_devices), precision="bf16", batch=int(r.batch_size),
                        input=int(r.input_len_tokens), output=int(r.output_len_tokens), meas_s=float(r.latency_s),
                        caveat="vLLM mid-2024, fp16, A100 variant not stated; duplicates: median"))
    # TensorRT-LLM v0.9 / v0.5 static batching: latency = B * O / (per-GPU throughput * TP)
    t = measurements.read("public/trtllm_static_batching_v0.9_v0.5.csv")
    for _, r in t.iterrows():
        mid, gid = TRT_MODELS.get(r.model), TRT_GPUS.get(r.gpu)
        if mid is None or gid is None:
            continue
        prec = "fp8" if r.precision == "FP8" else "fp16"
        if r.kind == "throughput":
            meas = r.batch_size * r.osl_tokens / (r.output_throughput_tok_s_per_gpu * r.tp)
            out.append(dict(dataset=f"trtllm-static-v{r.trtllm_version}", model=mid, gpu=gid, tp=int(r.tp),
                            precision=prec, batch=int(r.batch_size), input=int(r.isl_tokens),
                            output=int(r.osl_tokens), meas_s=float(meas),
                            caveat="static batching; TRT-LLM kernels faster than the vLLM-era fit"))
        elif r.kind == "first_token":
            out.append(dict(dataset=f"trtllm-ttft-v{r.trtllm_version}", model=mid, gpu=gid, tp=int(r.tp),
                            precision=prec, batch=1, input=int(r.isl_tokens), output=1,
                            meas_s=float(r.first_token_latency_ms) / 1e3, caveat="batch-1 first-token latency"))
    return out


def static_batch_counts(batch: int, input_tokens: int, output_tokens: int,
                        prefill_budget_tokens: int = PREFILL_BUDGET_TOKENS) -> tuple[int, int]:
    """(iterations, sum over iterations of sequences sampled) of :func:`static_batch_latency_s`:
    what the framework overheads multiply."""
    per_iter = max(1, prefill_budget_tokens // max(1, input_tokens))
    n_pf = -(-batch // per_iter)
    steps = max(0, output_tokens - 1)
    return n_pf + steps, n_pf + steps * batch


# framework profile -> the all-reduce kernel family its software uses up to its buffer size
# (models/measurements/public/custom_all_reduce_h100.csv; TensorRT-LLM's custom all-reduce plugin and
# vLLM's custom all-reduce, vllm-project/vllm PR #2192, both on by default on NVLink nodes: assumption
# that the measured runs used them)
CUSTOM_ALLREDUCE = {"trtllm": "trtllm", "trtllm-v0.9": "trtllm", "vllm": "vllm"}


def compare(params_by_gpu: dict | None = None) -> pd.DataFrame:
    """Every whole-batch case with the model's prediction.  ``params_by_gpu`` (calibration
    card id -> :class:`sim.perf.roofline.Params`) overrides the committed calibration; the columns
    ``gpu_s``, ``iterations`` and ``seq_iterations`` split the prediction into GPU time and
    what the framework overheads multiply."""
    rows = []
    for c in _cases():
        cal = catalog.gpu(c["gpu"]).calibration_from
        p = params_by_gpu[cal] if params_by_gpu else load_params(c["gpu"])
        prof_name = "trtllm-v0.9" if c["dataset"].startswith("trtllm") else "vllm"
        prof = p.framework_profiles.get(prof_name)
        p = dataclasses.replace(p, custom_allreduce=(prof or {}).get("custom_allreduce", CUSTOM_ALLREDUCE[prof_name]))
        if prof:
            p = p.with_framework(prof)
        else:
            p = dataclasses.replace(p, kernel_time_scale=1.0)
        p0 = dataclasses.replace(p, iteration_overhead_s=0.0, per_layer_overhead_s=0.0, per_seq_overhead_s=0.0)
        n_it, n_seq = static_batch_counts(c["batch"], c["input"], c["output"])
        try:
            m = build_model(c["model"], c["gpu"], c["tp"], c["precision"], params=p0, gpu_memory_utilization=1.0)
            gpu_s = static_batch_latency_s(m, c["batch"], c["input"], c["output"])
        except UserError as e:  # e.g. weights do not fit: keep the row, say why
            gpu_s, c = math.nan, {**c, "caveat": f"{c['caveat']}; not predicted: {e}"}
        regime = "prefill" if c["output"] == 1 else ("decode_small" if c["batch"] <= 16 else "decode_large")
        rows.append({**c, "regime": regime, "gpu_s": gpu_s, "iterations": n_it, "seq_iterations": n_seq,
                     "pred_s": gpu_s + p.iteration_overhead_s * n_it + p.per_seq_overhead_s * n_seq,
                     "extrapolated": is_extrapolated(c["gpu"], c["model"])})
    d = pd.DataFrame(rows)
    d["ape"] = (d.pred_s / d.meas_s - 1.0).abs()
    d["err"] = d.pred_s / d.meas_s - 1.0
    return d


def summarize(d: pd.DataFrame) -> pd.DataFrame:
    ok = d[np.isfinite(d.pred_s)]
    if "ape_heldout" not in ok:
        ok = ok.assign(ape_heldout=ok.ape)
    rows = []

    def row(ds, label, g):
        return {"dataset": ds, "models": label, "rows": len(g), "median_ape": g.ape.median(),
                "median_ape_heldout": g.ape_heldout.median(), "median_err_signed": g.err.median(),
                "p90_ape_heldout": g.ape_heldout.quantile(0.9)}

    for (ds, moe), g in ok.groupby([ok.dataset, ok.model.str.startswith("mixtral")]):
        rows.append(row(ds, "MoE" if moe else "dense", g))
    for reg, g in ok.groupby("regime"):
        rows.append(row("(all)", f"regime {reg}", g))
    moe = ok.model.str.startswith("mixtral")
    rows.append(row("(all)", "dense", ok[~moe]))
    rows.append(row("(all)", "MoE", ok[moe]))
    rows.append(row("(all)", "all", ok))
    return pd.DataFrame(rows)
