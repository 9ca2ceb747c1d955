"""Offline throughput of a deployment, measured by running the engine (``sovsim throughput``).

Configured like trtllm-bench / the TensorRT-LLM perf-overview tables: every request arrives
at t = 0, fixed input and output lengths, large batch limits.
"""
from __future__ import annotations

import math

from sim.core.errors import UserError
from sim.perf import catalog
from sim.perf.profiles import engine_profile
from sim.perf.roofline import build_step_model
from sim.perf.step import prefill_attn_pairs
from sim.scenario import scenario_from_dict
from sim.study.run import run

OFFLINE_MAX_NUM_SEQS = 2048
OFFLINE_MAX_BATCHED_TOKENS = 8192
OFFLINE_GPU_MEMORY_UTILIZATION = 0.95
# the run ends at the horizon; the economics ledger ticks hourly until then, so a 1e9 s horizon
# cost ~4 s of ticks per run. The horizon is set from a serial upper bound of the makespan
# (every request alone on its replica, batch 1) and the run is repeated with this fallback if
# any request is still unfinished.
OFFLINE_HORIZON_S = 1e9


def throughput_scenario(model: str, gpu: str, gpus: int, tp: int, input_tokens: int, output_tokens: int,
                        precision: str = "fp8", requests: int | None = None, max_num_seqs: int | None = None,
                        max_batched_tokens: int | None = None, gpu_memory_utilization: float | None = None,
                        horizon_s: float | None = None, profile: str | None = None, framework: str | None = None,
                        ep: int = 1, attention_dp: bool = False):
    """The offline-throughput scenario: ``gpus / tp`` replicas, ``requests`` fixed-length
    requests all arriving at t = 0.  With an engine ``profile`` its batching defaults replace
    the trtllm-bench ones (limits given here still win); a ``framework`` profile
    (``trtllm-v0.14``, ...) replaces the step model's CPU overheads and kernel-time scale.
    ``ep`` / ``attention_dp``: expert and attention data parallelism inside each replica."""
    catalog.llm(model, "--model"), catalog.gpu(gpu, "--gpu"), catalog.check_precision(precision)
    if tp < 1 or gpus < tp or gpus % tp:
        raise UserError(f"--gpus: must be a positive multiple of --tp ({tp}); got {gpus}")
    if input_tokens < 1 or output_tokens < 1:
        raise UserError("--input and --output: must be >= 1 token")
    replicas = gpus // tp
    # an offline benchmark runs the engine the way trtllm-bench / MLPerf Offline do: large
    # batches and most of the memory for the KV cache (not the serving defaults)
    given = {"max_num_seqs": max_num_seqs, "max_batched_tokens": max_batched_tokens,
             "gpu_memory_utilization": gpu_memory_utilization}
    if profile is not None:
        prof = engine_profile(profile)
        batching = {**prof.batching(catalog.gpu(gpu)), **{k: v for k, v in given.items() if v is not None}}
    else:
        batching = {
            "max_num_seqs": OFFLINE_MAX_NUM_SEQS if max_num_seqs is None else max_num_seqs,
            "max_batched_tokens": OFFLINE_MAX_BATCHED_TOKENS if max_batched_tokens is None else max_batched_tokens,
            "gpu_memory_utilization": OFFLINE_GPU_MEMORY_UTILIZATION if gpu_memory_utilization is None
            else gpu_memory_utilization,
        }
    seqs = batching["max_num_seqs"]
    if requests is None:
        # several full batches per replica so the batch stays saturated, bounded for speed
        requests = replicas * seqs * 4
        requests = max(requests, 8 * replicas)
    if requests < 1:
        raise UserError(f"--requests: must be >= 1 (got {requests})")
    data = {
        "name": "throughput",
        "simulation": {"horizon_s": OFFLINE_HORIZON_S if horizon_s is None else horizon_s, "request_sample_size": 0},
        "deployments": [{"name": "bench", "model": model, "gpu": gpu, "precision": precision, "tp": tp,
                         "ep": ep, "attention_dp": attention_dp, "replicas": replicas, "batching": batching,
                         **({"profile": profile} if profile is not None else {}),
                         **({"step_time": {"framework": framework}} if framework is not None else {})}],
        "workloads": [{"name": "offline", "model": model, "arrivals": {"kind": "offline", "count": requests},
                       "prompt_tokens": {"dist": "constant", "value": input_tokens},
                       "output_tokens": {"dist": "constant", "value": output_tokens}}],
    }
    return scenario_from_dict(data, "throughput")


def throughput(model: str, gpu: str, gpus: int, tp: int, input_tokens: int, output_tokens: int,
               precision: str = "fp8", requests: int | None = None, seed: int = 1, **kw) -> dict:
    sc = throughput_scenario(model, gpu, gpus, tp, input_tokens, output_tokens, precision, requests, **kw)
    step = build_step_model(sc.deployments[0])  # fails early, one line, if the weights do not fit
    # serial bound: each request alone (prefill in token-budget chunks, then batch-1 decodes)
    budget = sc.deployments[0].batching.max_batched_tokens
    w = step.window_tokens
    chunks = -(-input_tokens // budget)
    t_req = sum(step.step_time_s(0, 0, min(budget, input_tokens - c * budget),
                                 prefill_attn_pairs(c * budget, min(budget, input_tokens - c * budget), w))
                for c in range(chunks))
    t_req += output_tokens * step.step_time_s(1, min(input_tokens + output_tokens, w) if w else input_tokens + output_tokens, 0, 0.0)
    per_replica = -(-sc.workloads[0].arrivals.count // (gpus // tp))
    bound_s = 2.0 * t_req * per_replica + 60.0
    res = run(sc.model_copy(update={"simulation": sc.simulation.model_copy(update={"horizon_s": bound_s})}), seed=seed) \
        if bound_s < sc.simulation.horizon_s else run(sc, seed=seed)
    if res.summary["completed"] < sc.workloads[0].arrivals.count:
        res = run(sc, seed=seed)
    s = res.summary
    span = s["last_completion_s"]
    out_tok = s["output_tokens_total"]
    tps = out_tok / span if span and span > 0 else math.nan
    dep = sc.deployments[0]
    return {"model": model, "gpu": gpu, "gpus": gpus, "tp": tp, "ep": dep.ep, "attention_dp": dep.attention_dp,
            "replicas": gpus // tp, "precision": precision,
            "input_tokens": input_tokens, "output_tokens": output_tokens,
            "requests": sc.workloads[0].arrivals.count, "completed": s["completed"],
            "output_tokens_total": out_tok, "last_completion_s": span,
            "output_tokens_per_s": tps, "output_tokens_per_s_per_gpu": tps / gpus,
            "kv_capacity_tokens_per_replica": step.kv_capacity_tokens,
            "max_num_seqs": sc.deployments[0].batching.max_num_seqs,
            "profile": sc.deployments[0].profile, "framework": sc.deployments[0].step_time.framework,
            "extrapolated": bool(step.extrapolation),
            "extrapolation_reasons": list(step.extrapolation), "wall_s": res.wall_s}
