"""Where does MoE lose its small-batch advantage?  Iteration time and tokens/s per GPU against
batch size for Mixtral 8x7B beside dense models of ~13B (Llama-2-13B) and ~47B parameters,
predicted by the calibrated step-time model, with measured Mixtral points.

    PYTHONPATH=. python experiments/moe_batching.py

Writes results/moe_batching/moe_batching.png and moe_batching.csv.

The ~47B dense model is hypothetical (no such public model is measured): Mixtral 8x7B with its
eight experts merged into one dense FFN of 8 x 14336 = 114688 (46.7B parameters, all active).
Measured points are vLLM static-batch latencies (PR #3240, A100 TP2; PR #2542, H100 TP8; 1000
prompt tokens, 50 outputs) divided by the 50 output tokens: they include the prefill, so they
sit above a pure decode step; the dashed line is the model's prediction of the same quantity.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sim.perf import catalog  # noqa: E402
from sim.calibration import measurements
from sim.perf.roofline import PerfModel, load_params  # noqa: E402
from sim.calibration.wholebatch import static_batch_latency_s  # noqa: E402

CONTEXT_TOKENS = 1000
BATCHES = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256]
PANELS = [("a100-sxm-80gb", 2, "3240"), ("h100-sxm", 8, "2542")]


def dense_47b() -> catalog.LLM:
    mx = catalog.llm("mixtral-8x7b")
    return dataclasses.replace(mx, id="dense-47b (hypothetical)", ffn=mx.ffn * mx.experts, experts=1, top_k=1,
                               published_total_b=46.7, published_active_b=46.7,
                               source="Mixtral 8x7B with its experts merged into one dense FFN (hypothetical)")


def models_for(gpu: str, tp: int):
    g, p = catalog.gpu(gpu), load_params(gpu)
    cards = [catalog.llm("mixtral-8x7b"), catalog.llm("llama-2-13b"), dense_47b()]
    return [(c.id, PerfModel(c, g, tp, "bf16", p, gpu_memory_utilization=1.0, framework="vllm")) for c in cards]


def main() -> int:
    out_dir = ROOT / "results" / "moe_batching"
    out_dir.mkdir(parents=True, exist_ok=True)
    v = measurements.read("public/vllm_github_pr_and_ci_measurements.csv")
    rows = []
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    colors = {"mixtral-8x7b": "C0", "llama-2-13b": "C2", "dense-47b (hypothetical)": "C3"}
    for col, (gpu, tp, pr) in enumerate(PANELS):
        ax_t, ax_r = axes[0, col], axes[1, col]
        for mid, m in models_for(gpu, tp):
            t = np.array([m.step_time_s(b, b * (CONTEXT_TOKENS + 1)) for b in BATCHES])
            for b, ti in zip(BATCHES, t):
                rows.append({"gpu": gpu, "tp": tp, "model": mid, "batch": b, "iteration_s": ti,
                             "tokens_per_s_per_gpu": b / ti / tp, "expected_experts": m.expected_experts(b),
                             "kind": "predicted decode step"})
            ax_t.plot(BATCHES, t * 1e3, "-", color=colors[mid], label=f"{mid}: decode step (predicted)")
            ax_r.plot(BATCHES, np.array(BATCHES) / t / tp, "-", color=colors[mid], label=mid)
            if mid == "mixtral-8x7b":
                d = v[v.source_url.str.endswith(f"/pull/{pr}") & v.engine_variant.str.startswith("PR #")]
                bs = d.batch_size.astype(int).to_numpy()
                meas = d.value.to_numpy(float) / 50
                pred = np.array([static_batch_latency_s(m, b, 1000, 50) / 50 for b in bs])
                ax_t.plot(bs, meas * 1e3, "o", color=colors[mid], label=f"Mixtral measured (vLLM PR #{pr}), latency / 50")
                ax_t.plot(bs, pred * 1e3, "--", color=colors[mid], alpha=0.6, label="same quantity, predicted")
                ax_r.plot(bs, bs / meas / tp, "o", color=colors[mid], label="Mixtral measured (incl. prefill)")
                ax_r.plot(bs, bs / pred / tp, "--", color=colors[mid], alpha=0.6, label="same quantity, predicted")
                for b, mm, pp in zip(bs, meas, pred):
                    rows.append({"gpu": gpu, "tp": tp, "model": mid, "batch": int(b), "iteration_s": mm,
                                 "tokens_per_s_per_gpu": b / mm / tp, "predicted_s": pp,
                                 "kind": f"measured static batch / 50 (vLLM PR #{pr})"})
        # where MoE loses its advantage: Mixtral's step reaches 80 % of the dense 47B's
        d = pd.DataFrame([r for r in rows if r["gpu"] == gpu and r["kind"] == "predicted decode step"])
        mx = d[d.model == "mixtral-8x7b"].set_index("batch").iteration_s
        dn = d[d.model == "dense-47b (hypothetical)"].set_index("batch").iteration_s
        ratio = mx / dn
        cross = ratio[ratio >= 0.8]
        if len(cross):
            b0 = int(cross.index[0])
            ax_t.axvline(b0, color="grey", ls=":")
            ax_t.annotate(f"Mixtral step >= 80% of dense-47B\nfrom batch {b0}", (b0, ax_t.get_ylim()[1] * 0.5),
                          fontsize=8, ha="left")
        name = catalog.gpu(gpu).name
        ax_t.set_title(f"{name}, TP{tp}, bf16, context {CONTEXT_TOKENS} tokens")
        ax_t.set_xscale("log", base=2); ax_t.set_yscale("log")
        ax_t.set_xlabel("batch (sequences decoding)"); ax_t.set_ylabel("iteration time, ms")
        ax_t.legend(fontsize=7)
        ax_r.set_xscale("log", base=2); ax_r.set_yscale("log")
        ax_r.set_xlabel("batch (sequences decoding)"); ax_r.set_ylabel("output tokens/s per GPU")
        ax_r.legend(fontsize=7)
    fig.suptitle("MoE batching: Mixtral 8x7B reads 13B active parameters at batch 1 but nearly all 47B from batch ~16\n"
                 "(sovsim calibrated step model; framework overheads: vLLM profile)", fontsize=11)
    fig.tight_layout()
    fig.savefig(out_dir / "moe_batching.png", dpi=110)
    pd.DataFrame(rows).to_csv(out_dir / "moe_batching.csv", index=False, float_format="%.6g")
    print(f"wrote {out_dir / 'moe_batching.png'} and moe_batching.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
