"""``sovsim step``, ``sovsim throughput``, ``sovsim calibrate``, ``sovsim catalog``."""
from __future__ import annotations

import json
import math
from pathlib import Path

from sim.perf import catalog
from sim.core.errors import UserError
from sim.perf.step import prefill_attn_pairs
from sim.calibration.calibrate import calibrate
from sim.calibration.outputs import refit_models_dir, results_dir
from sim.calibration.measurements import import_measurements
from sim.calibration.throughput_fit import FIT_VERSION, run_fit, summary_lines
from sim.calibration.wholebatch import summarize
from sim.perf.roofline import build_model
from sim.study.throughput import throughput


def register(sub) -> None:
    p = sub.add_parser("step", help="Predicted time of one batching iteration, with its breakdown.")
    p.add_argument("--model", required=True, help="LLM catalog id (see `sovsim catalog`).")
    p.add_argument("--gpu", required=True, help="GPU catalog id.")
    p.add_argument("--tp", type=int, default=1, help="Tensor-parallel GPUs per replica.")
    p.add_argument("--ep", type=int, default=1, help="Expert-parallel groups of a MoE replica (must divide --tp; default 1).")
    p.add_argument("--attention-dp", action="store_true", help="Attention data parallelism (needs --ep = --tp): each GPU attends over its own sequences, MoE layers exchange tokens by all-to-all.")
    p.add_argument("--batch", type=int, default=1, help="Decoding sequences in the iteration.")
    p.add_argument("--context", type=int, default=1024, help="Tokens already cached per decoding sequence.")
    p.add_argument("--prefill", type=int, default=0, help="Prefill tokens in the iteration (one new prompt chunk).")
    p.add_argument("--precision", default="fp8", help="bf16, fp16 or fp8 (weights and KV cache; default fp8 as in scenarios).")
    p.add_argument("--kind", default="calibrated", help="calibrated or roofline.")
    p.add_argument("--json", action="store_true", help="Print one JSON object.")
    p.set_defaults(func=cmd_step)

    p = sub.add_parser("throughput", help="Offline throughput through the serving engine (trtllm-bench / MLPerf Offline style).")
    p.add_argument("--model", required=True, help="LLM catalog id.")
    p.add_argument("--gpu", required=True, help="GPU catalog id.")
    p.add_argument("--gpus", type=int, required=True, help="GPUs in the fleet (replicas = gpus / tp).")
    p.add_argument("--tp", type=int, default=1, help="Tensor-parallel GPUs per replica.")
    p.add_argument("--ep", type=int, default=1, help="Expert-parallel groups of a MoE replica (must divide --tp; default 1).")
    p.add_argument("--attention-dp", action="store_true", help="Attention data parallelism (needs --ep = --tp).")
    p.add_argument("--input", type=int, required=True, help="Prompt tokens of every request.")
    p.add_argument("--output", type=int, required=True, help="Output tokens of every request.")
    p.add_argument("--precision", default="fp8", help="bf16, fp16 or fp8.")
    p.add_argument("--requests", type=int, default=None, help="Requests (default: enough to saturate every replica, bounded).")
    p.add_argument("--max-num-seqs", type=int, default=None, help="Cap on running sequences per replica (default 2048, as trtllm-bench; assumption).")
    p.add_argument("--max-batched-tokens", type=int, default=None, help="Per-iteration token budget (default 8192, as trtllm-bench; assumption).")
    p.add_argument("--gpu-memory-utilization", type=float, default=None, help="Share of GPU memory for weights + KV (default 0.95, as trtllm-bench; assumption).")
    p.add_argument("--profile", default=None, help="Engine profile (vllm, trtllm-max-utilization, trtllm-guaranteed-no-evict): its batching defaults and fitted step overheads replace the trtllm-bench settings; the limit flags above still win.")
    p.add_argument("--framework", default=None, help="Step-time framework profile (trtllm-v0.14, trtllm-v0.17, trtllm-v1.0: the TensorRT-LLM release measured; trtllm: default, the v0.17 fit; vllm): its fitted CPU overheads and kernel-time scale, over the engine profile's.")
    p.add_argument("--seed", type=int, default=1, help="Root seed.")
    p.add_argument("--json", action="store_true", help="Print one JSON object.")
    p.set_defaults(func=cmd_throughput)

    p = sub.add_parser("calibrate", help="Fit the step-time model per GPU; write models/calibration/*.json and a residual report.")
    p.add_argument("--results", default=None, help="Folder for the residual report and figure (default: results/calibration of the checkout you are in, else of this folder).")
    p.add_argument("--no-figure", action="store_true", help="Skip the predicted-vs-measured figure.")
    p.add_argument("--dry-run", action="store_true", help="Fit and report, but do not overwrite models/calibration.")
    p.add_argument("--import-from", default=None, help="First rebuild models/measurements from this shared calibration folder.")
    p.add_argument("--throughput", action="store_true", help="Instead: refit only the in-flight-batching `trtllm` framework profile: its per-layer term on the measured TensorRT-LLM serving points (AIConfigurator, concurrency 4-128), its per-sequence term and kernel-time scales on the dense TensorRT-LLM perf-overview throughput rows of one version (full engine; ~4.2 min) and write throughput_trtllm_dense.md/.csv and throughput_trtllm_intercept.csv.")
    p.add_argument("--fit-version", default=None, help="With --throughput: the perf-overview version fitted on (v0.14, v0.17, v1.0; default v0.17); the others are held out.")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="Write the refitted models into DIR (as models/ is laid out: DIR/calibration/*.json, "
                        "DIR/measurements/); default: the models/ of the source checkout you are in. "
                        "Never into an installed package: outside a checkout, --out is required.")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("catalog", help="List GPU and LLM cards (ids users type).")
    p.add_argument("--json", action="store_true", help="Print one JSON object.")
    p.set_defaults(func=cmd_catalog)


# ------------------------------------------------------------------ step
def step_report(model: str, gpu: str, tp: int = 1, batch: int = 1, context: int = 1024, prefill: int = 0,
                precision: str = "fp8", kind: str = "calibrated", ep: int = 1, attention_dp: bool = False) -> dict:
    for name, v, lo in (("--tp", tp, 1), ("--batch", batch, 0), ("--context", context, 0), ("--prefill", prefill, 0)):
        if v < lo:
            raise UserError(f"{name}: must be >= {lo} (got {v})")
    if batch == 0 and prefill == 0:
        raise UserError("--batch and --prefill: an iteration needs at least one decode or prefill token")
    m = build_model(model, gpu, tp, precision, kind, gpu_memory_utilization=1.0, ep=ep, attention_dp=attention_dp,
                    name="--model/--tp/--ep")
    w = m.window_tokens
    kv = batch * (min(context + 1, w) if w else context + 1)
    pairs = prefill_attn_pairs(0, prefill, w)
    t = m.step_time_s(batch, kv, prefill, pairs)
    br = m.breakdown(batch, kv, prefill, pairs)
    return {"model": model, "gpu": gpu, "tp": tp, "ep": ep, "attention_dp": attention_dp, "precision": precision,
            "kind": kind, "batch": batch,
            "context_tokens": context, "prefill_tokens": prefill, "step_time_s": t,
            "tokens_per_s": (batch / t if batch else 0.0), "tokens_per_s_per_gpu": (batch / t / tp if batch else 0.0),
            "breakdown_s": br, "expected_experts_per_layer": m.expected_experts(batch + prefill),
            "kv_capacity_tokens": m.kv_capacity_tokens, "weights_gb_per_gpu": m.weight_bytes_per_gpu / 2**30,
            "extrapolated": bool(m.extrapolation), "extrapolation_reasons": m.extrapolation}


def cmd_step(args) -> int:
    r = step_report(args.model, args.gpu, args.tp, args.batch, args.context, args.prefill, args.precision, args.kind,
                    args.ep, args.attention_dp)
    if args.json:
        print(json.dumps(r))
        return 0
    par = (f", ep {r['ep']}" if r["ep"] > 1 else "") + (", attention DP" if r["attention_dp"] else "")
    print(f"{r['model']} on {r['tp']} x {r['gpu']}{par} ({r['precision']}, {r['kind']}): batch {r['batch']}, "
          f"context {r['context_tokens']}, prefill {r['prefill_tokens']}")
    print(f"  step time        {r['step_time_s'] * 1e3:9.3f} ms   ({r['tokens_per_s_per_gpu']:.0f} decode tokens/s per GPU)")
    for k, v in r["breakdown_s"].items():
        print(f"  {k:16s} {v * 1e3:9.3f} ms")
    if r["expected_experts_per_layer"] != 1.0:
        print(f"  experts touched per MoE layer (expected): {r['expected_experts_per_layer']:.2f}")
    print(f"  KV capacity {r['kv_capacity_tokens']:,} tokens per replica; weights {r['weights_gb_per_gpu']:.1f} GB per GPU")
    if r["extrapolated"]:
        print("  EXTRAPOLATED: " + "; ".join(r["extrapolation_reasons"]))
    else:
        print("  within the measured set")
    return 0


# ------------------------------------------------------------------ throughput
# offline-benchmark engine settings (assumption: TensorRT-LLM defaults max_batch_size 2048,
# max_num_tokens 8192; kv_cache_free_gpu_mem_fraction 0.95 "in majority of cases" per the
# TensorRT-LLM perf-overview page)
def cmd_throughput(args) -> int:
    r = throughput(args.model, args.gpu, args.gpus, args.tp, args.input, args.output, args.precision,
                   args.requests, args.seed, max_num_seqs=args.max_num_seqs,
                   max_batched_tokens=args.max_batched_tokens, gpu_memory_utilization=args.gpu_memory_utilization,
                   profile=args.profile, framework=args.framework, ep=args.ep, attention_dp=args.attention_dp)
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"{r['model']} on {r['gpus']} x {r['gpu']} ({r['replicas']} replicas of TP{r['tp']}, {r['precision']}), "
          f"{r['requests']} requests of {r['input_tokens']} in / {r['output_tokens']} out"
          + (f", profile {r['profile']}" if r["profile"] else "")
          + (f", framework {r['framework']}" if r["framework"] else ""))
    print(f"  output tokens/s      {r['output_tokens_per_s']:12.1f}")
    print(f"  output tokens/s/GPU  {r['output_tokens_per_s_per_gpu']:12.1f}")
    print(f"  makespan {r['last_completion_s']:.1f} s simulated, {r['completed']} completed, wall {r['wall_s']:.2f} s")
    if r["extrapolated"]:
        print("  EXTRAPOLATED: " + "; ".join(r["extrapolation_reasons"]))
    return 0


# ------------------------------------------------------------------ calibrate, catalog
def cmd_calibrate(args) -> int:
    # where the refit goes, settled (or refused, in one line) before any work
    models = None if args.dry_run and not args.import_from else refit_models_dir(args.out, "calibrate")
    if args.throughput:
        out = run_fit(args.fit_version or FIT_VERSION, write=not args.dry_run, results_dir=results_dir(args.results, "results/calibration"),
                      models_out=models)
        held = out["terms"][out["terms"].held_out]
        print("held-out rows, before (trtllm-v0.9 profile):\n" + "\n".join(summary_lines(held, "err_old")))
        print("held-out rows, after:\n" + "\n".join(summary_lines(held, "err")))
        return 0
    if args.fit_version:
        raise UserError("--fit-version: only with --throughput")
    if args.import_from:
        for p in import_measurements(Path(args.import_from), models / "measurements"):
            print(f"imported {p}")
    out = calibrate(write=not args.dry_run, results_dir=results_dir(args.results, "results/calibration"), figure=not args.no_figure,
                    models_out=models)
    rep = out["report"]
    overall = rep[(rep.component == "(all)")].iloc[0]
    print(f"held-out median APE over all operator rows: {100 * overall.median_ape_heldout:.1f}% "
          f"({int(overall.rows)} rows)")
    wb = summarize(out["wholebatch"])
    for label in ("dense", "MoE", "all"):
        r = wb[(wb.dataset == "(all)") & (wb.models == label)].iloc[0]
        print(f"whole-batch public rows, {label}: median APE {100 * r.median_ape_heldout:.1f}% held out ({int(r.rows)} rows)")
    return 0


def cmd_catalog(args) -> int:
    gs, ms = catalog.gpus(), catalog.llms()
    if args.json:
        print(json.dumps({"gpus": {k: vars(v) for k, v in gs.items()}, "llms": {k: vars(v) for k, v in ms.items()}}))
        return 0
    print("GPUs:")
    for g in gs.values():
        print(f"  {g.id:15s} {g.memory_gb:5g} GB  {g.hbm_bandwidth_gb_s:5g} GB/s  bf16 {g.bf16_dense_tflops:6g} TFLOP/s"
              f"  {'measured' if g.measured else 'extrapolated from ' + g.calibration_from}")
    print("LLMs:")
    for m in ms.values():
        print(f"  {m.id:18s} {m.total_params / 1e9:7.1f}B total {m.active_params / 1e9:6.1f}B active"
              f"  {m.layers} layers, hidden {m.hidden}{', ' + str(m.experts) + ' experts top-' + str(m.top_k) if m.is_moe else ''}")
    return 0
