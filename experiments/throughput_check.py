"""Check `sovsim throughput` (the full serving engine on the calibrated step model) against the
dense TensorRT-LLM throughput tables (trtllm-bench, v0.17 and the v0.14 H100 FP16 column).

    PYTHONPATH=. python experiments/throughput_check.py [--quick]

Writes results/calibration/throughput_trtllm_dense.csv and prints the error summary.
Engine settings for trtllm-bench (assumption): max batch size 2048 and max num tokens 8192
(the TensorRT-LLM engine-build defaults), KV cache may use 95 % of GPU memory
(`kv_cache_free_gpu_mem_fraction` 0.95 "in majority of cases", perf-overview page).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sim import measurements  # noqa: E402
from sim.errors import UserError  # noqa: E402
from sim.perf_cli import throughput  # noqa: E402

MODELS = {"LLaMA v3.1 8B": "llama-3.1-8b", "LLaMA v3.1 70B": "llama-3.1-70b", "LLaMA v3 70B": "llama-3-70b",
          "Mistral 7B": "mistral-7b"}
GPUS = {"H100 SXM 80GB HBM3": "h100-sxm", "H200 SXM 141GB HBM3": "h200", "A100-SXM4-80GB": "a100-sxm-80gb"}
MAX_NUM_SEQS = 2048        # assumption: TensorRT-LLM engine default max_batch_size
MAX_BATCHED_TOKENS = 8192  # assumption: TensorRT-LLM engine default max_num_tokens
REQUESTS_CAP = 3000        # bounded request count (the doc used 1000-30000): enough to reach steady state


def cases() -> pd.DataFrame:
    a = measurements.read("public/trtllm_perf_overview_v0.17_throughput.csv")
    b = measurements.read("public/trtllm_perf_overview_v0.14_throughput.csv")
    b = b[(b.gpu == "H100 SXM 80GB HBM3") & (b.precision == "FP16")]
    d = pd.concat([a.assign(table="v0.17"), b.assign(table="v0.14")], ignore_index=True)
    d = d[d.model.isin(list(MODELS)) & d.gpu.isin(list(GPUS)) & (d.pp == 1)]
    return d.reset_index(drop=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="only ISL/OSL 128/128, 128/2048, 2048/128")
    ap.add_argument("--out", default=str(ROOT / "results" / "calibration" / "throughput_trtllm_dense.csv"))
    args = ap.parse_args(argv)
    d = cases()
    if args.quick:
        d = d[d.isl_tokens.isin([128, 2048]) & d.osl_tokens.isin([128, 2048])]
    rows = []
    t0 = time.perf_counter()
    for _, r in d.iterrows():
        model, gpu, tp = MODELS[r.model], GPUS[r.gpu], int(r.tp)
        prec = "fp8" if r.precision == "FP8" else "fp16"
        reqs = min(REQUESTS_CAP, 4 * MAX_NUM_SEQS)
        try:
            out = throughput(model, gpu, tp, tp, int(r.isl_tokens), int(r.osl_tokens), prec, requests=reqs,
                             max_num_seqs=MAX_NUM_SEQS, max_batched_tokens=MAX_BATCHED_TOKENS,
                             gpu_memory_utilization=0.95)
            pred, note, wall = out["output_tokens_per_s"], "", out["wall_s"]
        except UserError as e:
            pred, note, wall = np.nan, str(e), 0.0
        rows.append({"table": r.table, "model": model, "gpu": gpu, "precision": prec, "tp": tp,
                     "isl_tokens": int(r.isl_tokens), "osl_tokens": int(r.osl_tokens),
                     "measured_tok_s": float(r.output_throughput_tok_s), "predicted_tok_s": pred,
                     "err": pred / float(r.output_throughput_tok_s) - 1.0, "wall_s": wall, "note": note})
        print(f"{model:14s} {gpu:14s} {prec} tp{tp} {int(r.isl_tokens):5d}/{int(r.osl_tokens):5d}: "
              f"measured {r.output_throughput_tok_s:9.0f} predicted {pred:9.0f} ({wall:.1f} s)", flush=True)
    res = pd.DataFrame(rows)
    res["ape"] = res.err.abs()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    res.to_csv(args.out, index=False, float_format="%.4f")
    ok = res[np.isfinite(res.predicted_tok_s)]
    lines = [f"{len(ok)} of {len(res)} rows predicted in {time.perf_counter() - t0:.0f} s; "
             f"median APE {100 * ok.ape.median():.1f}%, median signed error {100 * ok.err.median():+.1f}%"]
    for col in (["gpu", "precision"], "model", ["isl_tokens", "osl_tokens"]):
        for key, g in ok.groupby(col):
            lines.append(f"  {key}: {len(g)} rows, median APE {100 * g.ape.median():.1f}%, "
                         f"signed {100 * g.err.median():+.1f}%")
    print("\n" + "\n".join(lines))
    md = Path(args.out).with_suffix(".md")
    md.write_text("# `sovsim throughput` vs TensorRT-LLM dense throughput tables\n\n"
                  "Written by `experiments/throughput_check.py`. Each row: the full serving engine on the "
                  "calibrated step model (default `trtllm` framework profile), one replica of TP GPUs, "
                  f"{REQUESTS_CAP} fixed-length requests at t = 0, max_num_seqs {MAX_NUM_SEQS}, "
                  f"max_batched_tokens {MAX_BATCHED_TOKENS}, gpu_memory_utilization 0.95 (assumptions for "
                  "trtllm-bench). err = predicted / measured - 1 (negative: the model is slower).\n\n```\n"
                  + "\n".join(lines) + "\n```\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
