"""The measured data the step-time model is fitted and checked on (``models/measurements/``).

:func:`import_measurements` is the one-off tool that built that folder from the shared
calibration set (``sovsim calibrate --import-from DIR``): it keeps only the rows and
columns the fit uses (median timings, shapes) so the package stays small, and records the
SHA-256 of every source file in ``models/measurements/SOURCES.csv``.  Nothing at run time
reads outside the package.
"""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pandas as pd

from sim.core.errors import UserError
from sim.core.resources import model_file

VIDUR_GPUS = {"a100": "a100-sxm-80gb", "h100": "h100-sxm"}
VIDUR_MODELS = {  # vidur folder -> catalog id
    "meta-llama/Meta-Llama-3-8B": "llama-3-8b",
    "meta-llama/Meta-Llama-3-70B": "llama-3-70b",
    "meta-llama/Llama-2-7b-hf": "llama-2-7b",
    "meta-llama/Llama-2-70b-hf": "llama-2-70b",
    "codellama/CodeLlama-34b-Instruct-hf": "codellama-34b",
    "internlm/internlm-20b": "internlm-20b",
    "Qwen/Qwen-72B": "qwen-72b",
    "microsoft/phi-2": "phi-2",
}
VIDUR_OPS = ["emb", "input_layernorm", "attn_pre_proj", "attn_rope", "attn_post_proj",
             "post_attention_layernorm", "mlp_up_proj", "mlp_act", "mlp_down_proj", "add"]
NODES = {"a100_dgx": "a100-sxm-80gb", "h100_dgx": "h100-sxm"}
PUBLIC_FILES = [
    "moe_kernel_timings.csv", "mixtral_routing_statistics.csv", "gpu_datasheet_specs.csv",
    "vllm_github_pr_and_ci_measurements.csv", "argonne_llm_inference_bench_static_batch.csv",
    "trtllm_static_batching_v0.9_v0.5.csv", "trtllm_perf_overview_v0.14_throughput.csv",
    "trtllm_perf_overview_v0.17_throughput.csv", "trtllm_online_serving_v0.14.csv",
    "trtllm_perf_overview_v1.0_throughput.csv", "nvidia_nim_benchmarking_llama33_70b.csv",
]


def _aiconfigurator_moe(d: pd.DataFrame) -> pd.DataFrame:
    d = d[d.device.str.contains("H100|H200|A100") & d.moe_dtype.isin(["bfloat16", "fp8"]) & (d.moe_ep_size == 1)
          & (d.moe_tp_size <= 8) & (d.num_tokens <= 16384) & d.distribution.isin(["balanced", "power_law_1.01"])]
    return d.drop(columns=["framework", "op_name", "hidden_size", "inter_size", "topk", "num_experts",
                           "moe_ep_size", "source_file"])


AICONFIGURATOR_SYSTEMS = ("h100_sxm", "h200_sxm", "b200_sxm")  # the catalog's GPUs (no A100 rows in the sample)


def _aiconfigurator_serving(d: pd.DataFrame) -> pd.DataFrame:
    """Measured aggregated-serving points of the catalog's models (Llama 3.1 8B / 70B: the sample
    has no Mixtral rows) on the catalog's GPUs, at a precision the catalog has (fp8, or blank =
    16-bit); columns that are empty for every kept row (the disaggregated-serving ones) dropped."""
    d = d[d.model_path.str.contains("Llama-3.1-", regex=False) & d.system.isin(AICONFIGURATOR_SYSTEMS)
          & (d["mode"] == "agg") & (d.precision.fillna("") != "fp4") & (d.pp_size == 1)]
    return d.dropna(axis=1, how="all")


def _aiconfigurator_deepseek(d: pd.DataFrame) -> pd.DataFrame:
    """Measured aggregated-serving points of DeepSeek-V3 / R1 (one architecture: the catalog's
    ``deepseek-v3``) on one node of the catalog's GPUs (tensor x attention-data-parallel ranks <= 8),
    fp8 (fp4 is not a catalog precision), no pipeline parallelism; empty columns dropped."""
    d = d[d.model_path.isin(["deepseek-ai/DeepSeek-V3", "deepseek-ai/DeepSeek-R1"]) & d.system.isin(AICONFIGURATOR_SYSTEMS)
          & (d["mode"] == "agg") & (d.precision.fillna("") == "fp8") & (d.pp_size == 1)
          & (d.tp_size * d.attention_dp_size <= 8)]
    return d.dropna(axis=1, how="all")


# MLPerf models kept: the dense ones, and Mixtral-8x7B, whose end-to-end rows are not in the shared
# data (kept aside to score the engine) but whose NVIDIA harness configs are
MLPERF_MODELS_KEPT = ("llama2-70b", "llama3.1-8b", "llama3.1-405b", "mixtral-8x7b")


def _mlperf_kept(d: pd.DataFrame) -> pd.DataFrame:
    return d[d.model.str.startswith(MLPERF_MODELS_KEPT)]


# file here -> (file under the shared public/ folder, row filter); the only MoE end-to-end rows copied are
# DeepSeek-V3/R1's (no Mixtral end-to-end row is in the data)
FILTERED_PUBLIC = {
    "aiconfigurator_moe_kernel_vllm_mixtral.csv": ("more/aiconfigurator_moe_kernel_vllm_mixtral_shapes.csv",
                                                   _aiconfigurator_moe),
    "mlperf_inference_v4.1_llm_results.csv": ("mlperf_inference_v4.1_llm_results.csv", _mlperf_kept),
    "mlperf_inference_v5.1_llm_results.csv": ("mlperf_inference_v5.1_llm_results.csv", _mlperf_kept),
    "aiconfigurator_silicon_serving_llama.csv": ("more/aiconfigurator_silicon_sample.csv", _aiconfigurator_serving),
    "aiconfigurator_silicon_serving_deepseek.csv": ("more/aiconfigurator_silicon_sample.csv", _aiconfigurator_deepseek),
    "mlperf_inference_harness_configs.csv": ("mlperf_inference_harness_configs.csv", _mlperf_kept),
}

# byte-for-byte copies from the shared public/more/ folder (LLMServingSim artifact: the real vLLM
# runs' generation throughput per second and the request traces they replayed)
MORE_FILES = ["llmservingsim_vllm_h100_measured_throughput_timeseries.csv", "llmservingsim_sharegpt_rate10_traces.csv"]

# NCCL all-reduce inside one node measured by microsoft/apex_plus (CUDA 12.1, NCCL 2.18.3):
# shared public/more/apex_comm_profiles/<folder>/all_reduce.csv -> catalog GPU id
APEX_ALL_REDUCE = {"H100-SXM-80GB": "h100-sxm", "H200-SXM-141GB": "h200"}


def _sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def import_measurements(src: Path, dest: Path | None = None) -> list[Path]:
    """Build ``models/measurements`` from the shared calibration folder ``src``."""
    src = Path(src)
    if not (src / "vidur").is_dir() or not (src / "public").is_dir():
        raise UserError(f"--import-from: {src} has no vidur/ and public/ folders")
    dest = Path(dest) if dest else model_file("measurements")
    dest.mkdir(parents=True, exist_ok=True)
    sources: list[dict] = []
    written: list[Path] = []

    # vidur operator timings: medians only, A100 and H100, every model and TP
    frames = []
    for vg, gid in VIDUR_GPUS.items():
        for folder, mid in VIDUR_MODELS.items():
            f = src / "vidur" / "compute" / vg / folder / "mlp.csv"
            d = pd.read_csv(f)
            cols = {f"time_stats.{op}.median": f"{op}_ms" for op in VIDUR_OPS
                    if f"time_stats.{op}.median" in d.columns}
            out = d[list(cols) + ["num_tokens", "num_tensor_parallel_workers"]].rename(columns=cols)
            out.insert(0, "model", mid)
            out.insert(0, "gpu", gid)
            frames.append(out.rename(columns={"num_tensor_parallel_workers": "tp"}))
            sources.append({"file": "vidur_ops.csv", "source": str(f.relative_to(src)), "sha256": _sha256(f)})
    ops = pd.concat(frames, ignore_index=True)
    p = dest / "vidur_ops.csv"
    ops.to_csv(p, index=False)
    written.append(p)

    # all-reduce inside one DGX node
    frames = []
    for node, gid in NODES.items():
        f = src / "vidur" / "network" / node / "all_reduce.csv"
        d = pd.read_csv(f)
        d = d[d.devices_per_node == d.num_workers]
        out = d[["num_workers", "size", "time_stats.all_reduce.median"]].rename(
            columns={"num_workers": "tp", "size": "size_bytes", "time_stats.all_reduce.median": "all_reduce_ms"})
        out.insert(0, "gpu", gid)
        frames.append(out)
        sources.append({"file": "vidur_all_reduce.csv", "source": str(f.relative_to(src)), "sha256": _sha256(f)})
    p = dest / "vidur_all_reduce.csv"
    pd.concat(frames, ignore_index=True).to_csv(p, index=False)
    written.append(p)

    # attention kernels (A100, 70B shape at TP2), medians
    f = src / "vidur" / "historic" / "e2d00e9a" / "a100" / "attention.csv"
    d = pd.read_csv(f)
    out = d[["n_embd", "n_q_head", "n_kv_head", "num_tensor_parallel_workers", "batch_size",
             "prefill_chunk_size", "kv_cache_size", "is_prefill", "time_stats.attn_decode.median",
             "time_stats.attn_prefill.median"]].rename(columns={
                 "num_tensor_parallel_workers": "tp", "time_stats.attn_decode.median": "attn_decode_ms",
                 "time_stats.attn_prefill.median": "attn_prefill_ms"})
    out.insert(0, "gpu", "a100-sxm-80gb")
    p = dest / "vidur_attention_a100.csv"
    out.to_csv(p, index=False)
    written.append(p)
    sources.append({"file": p.name, "source": str(f.relative_to(src)), "sha256": _sha256(f)})

    # CPU overheads per iteration (A100 host), byte for byte
    f = src / "vidur" / "historic" / "57720caf" / "a100" / "cpu_overheads.csv"
    p = dest / "vidur_cpu_overheads_a100.csv"
    shutil.copyfile(f, p)
    written.append(p)
    sources.append({"file": p.name, "source": str(f.relative_to(src)), "sha256": _sha256(f)})

    # public files, byte for byte
    (dest / "public").mkdir(exist_ok=True)
    for name in PUBLIC_FILES:
        f = src / "public" / name
        p = dest / "public" / name
        shutil.copyfile(f, p)
        written.append(p)
        sources.append({"file": f"public/{name}", "source": str(f.relative_to(src)), "sha256": _sha256(f)})
    for name in MORE_FILES:
        f = src / "public" / "more" / name
        p = dest / "public" / name
        shutil.copyfile(f, p)
        written.append(p)
        sources.append({"file": f"public/{name}", "source": str(f.relative_to(src)), "sha256": _sha256(f)})
    # apex_plus all-reduce: every row, values unchanged, one file with the catalog GPU id in front
    frames = []
    for folder, gid in APEX_ALL_REDUCE.items():
        f = src / "public" / "more" / "apex_comm_profiles" / folder / "all_reduce.csv"
        d = pd.read_csv(f)
        d.insert(0, "gpu_id", gid)
        frames.append(d)
        sources.append({"file": "public/apex_all_reduce.csv", "source": str(f.relative_to(src)), "sha256": _sha256(f)})
    p = dest / "public" / "apex_all_reduce.csv"
    pd.concat(frames, ignore_index=True).to_csv(p, index=False)
    written.append(p)
    # filtered copies (rows kept, values unchanged; PROVENANCE.md says which)
    for name, (rel, keep) in FILTERED_PUBLIC.items():
        f = src / "public" / rel
        p = dest / "public" / name
        keep(pd.read_csv(f)).to_csv(p, index=False, float_format="%.6g" if name.startswith("aiconfigurator_moe") else None)
        written.append(p)
        sources.append({"file": f"public/{name}", "source": str(f.relative_to(src)), "sha256": _sha256(f)})
    # sorted, so the table regenerates byte for byte whatever the order of the lists above
    pd.DataFrame(sources).sort_values(["file", "source"], kind="stable").to_csv(
        dest / "SOURCES.csv", index=False, lineterminator="\n")
    written.append(dest / "SOURCES.csv")
    return written


def read(name: str) -> pd.DataFrame:
    p = model_file("measurements", name)
    if not p.is_file():
        raise UserError(f"measurement file {name} is missing from {p.parent} (run `sovsim calibrate --import-from DIR`)")
    return pd.read_csv(p)
