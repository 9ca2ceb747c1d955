"""Named engine profiles: the serving software that produced a measurement, as scheduler
settings plus the step-time framework profile fitted on that software (docs/perf.md,
"Engine profiles").

A profile is a set of *defaults*: a deployment that names one (``profile = "vllm"``) takes
the profile's batching limits, KV block size, memory share, chunked-prefill switch and
KV-admission rule, and its step model takes the profile's framework overheads; any batching
field the deployment sets itself wins.  No profile: the scenario defaults (vLLM-style
scheduling, the calibration's default framework profile), unchanged.

KV admission (``kv_admission``):

* ``greedy`` -- admit a waiting request when its prompt's KV blocks fit now; when a running
  decode finds no free block, the newest running sequence is preempted and later recomputed
  (vLLM V1's only preemption mode; TensorRT-LLM ``MAX_UTILIZATION``, which pauses requests
  when the KV cache is full).
* ``reserve_full_output`` -- admit a request only when the blocks of its prompt *and* its
  whole output fit beside the reservations of every running request; a started request is
  never evicted (TensorRT-LLM ``GUARANTEED_NO_EVICT``, its default capacity-scheduler
  policy).  The reservation is for the request's own output length: the benchmark clients
  set ``max_tokens`` to the output length (assumption: a client asking for a larger
  ``max_tokens`` would reserve more).
"""
from __future__ import annotations

from dataclasses import dataclass

from sim.core.errors import UserError
from sim.perf.catalog import GPU

KV_ADMISSIONS = ("greedy", "reserve_full_output")

VLLM_SOURCE = ("vLLM V1 EngineArgs.get_batch_defaults (vllm/engine/arg_utils.py, v0.10+): OpenAI API server on a GPU "
               "with >= 70 GiB that is not an A100 (H100, H200, B200): max_num_seqs 1024, max_num_batched_tokens 8192; "
               "otherwise 256 / 2048; V1 always chunks prefills and preempts by recompute; CacheConfig block_size 16, "
               "gpu_memory_utilization 0.9")
TRTLLM_SOURCE = ("TensorRT-LLM LLM API / trtllm-build defaults: max_batch_size 2048, max_num_tokens 8192, "
                 "KvCacheConfig.tokens_per_block 32, free_gpu_memory_fraction 0.9 (applied here as the share of GPU "
                 "memory for weights + KV: assumption, the real cache is a few % larger), chunked context off "
                 "(enable_chunked_prefill False); capacity scheduler policy per nvidia.github.io/TensorRT-LLM "
                 "performance-tuning-guide/useful-runtime-flags (GUARANTEED_NO_EVICT is the default)")


@dataclass(frozen=True)
class EngineProfile:
    name: str
    description: str
    framework: str            # step-time framework profile in models/calibration/<gpu>.json
    max_num_seqs: int
    max_batched_tokens: int
    block_size_tokens: int
    gpu_memory_utilization: float
    chunked_prefill: bool
    kv_admission: str
    source: str
    # vLLM's smaller defaults below 70 GiB or on A100 (None: the same on every GPU)
    small_gpu_max_num_seqs: int | None = None
    small_gpu_max_batched_tokens: int | None = None

    def batching(self, gpu: GPU) -> dict:
        """The batching fields this profile sets on ``gpu`` (BatchingSpec names)."""
        small = self.small_gpu_max_num_seqs is not None and (gpu.memory_gb < 70 or "a100" in gpu.id)  # memory_gb is GiB
        return {"max_num_seqs": self.small_gpu_max_num_seqs if small else self.max_num_seqs,
                "max_batched_tokens": self.small_gpu_max_batched_tokens if small else self.max_batched_tokens,
                "block_size_tokens": self.block_size_tokens,
                "gpu_memory_utilization": self.gpu_memory_utilization,
                "chunked_prefill": self.chunked_prefill,
                "kv_admission": self.kv_admission}


PROFILES: dict[str, EngineProfile] = {p.name: p for p in (
    EngineProfile(
        "vllm", "vLLM V1 OpenAI server: chunked prefill, greedy admission, recompute preemption; step overheads of "
        "the `vllm` framework profile (fitted on Argonne LLM-Inference-Bench and vLLM CI rows, 2024 scheduler)",
        framework="vllm", max_num_seqs=1024, max_batched_tokens=8192, block_size_tokens=16,
        gpu_memory_utilization=0.9, chunked_prefill=True, kv_admission="greedy", source=VLLM_SOURCE,
        small_gpu_max_num_seqs=256, small_gpu_max_batched_tokens=2048),
    EngineProfile(
        "trtllm-max-utilization", "TensorRT-LLM in-flight batching, MAX_UTILIZATION: admits greedily, pauses "
        "(evicts, recomputes) requests when the KV cache is full; step overheads of the `trtllm` framework profile",
        framework="trtllm", max_num_seqs=2048, max_batched_tokens=8192, block_size_tokens=32,
        gpu_memory_utilization=0.9, chunked_prefill=False, kv_admission="greedy", source=TRTLLM_SOURCE),
    EngineProfile(
        "trtllm-guaranteed-no-evict", "TensorRT-LLM in-flight batching, GUARANTEED_NO_EVICT (its default): admits a "
        "request only if KV for its prompt and full output fits, never evicts; step overheads of the `trtllm` "
        "framework profile",
        framework="trtllm", max_num_seqs=2048, max_batched_tokens=8192, block_size_tokens=32,
        gpu_memory_utilization=0.9, chunked_prefill=False, kv_admission="reserve_full_output", source=TRTLLM_SOURCE),
)}
PROFILE_NAMES = tuple(PROFILES)

# step-time framework profiles in every models/calibration/<gpu>.json (docs/perf.md, "Framework
# profiles"): the serving software whose CPU overheads and kernel speed a calibrated step model
# takes.  ``trtllm`` is the default (fitted on perf-overview v0.17); ``trtllm-v<release>`` is one
# TensorRT-LLM release's own kernel-time scale (``sovsim calibrate --throughput``); ``trtllm-v0.9``
# the old static-batching fit; ``vllm`` the Argonne / vLLM CI fit.
FRAMEWORK_NAMES = ("trtllm", "trtllm-v0.14", "trtllm-v0.17", "trtllm-v1.0", "trtllm-v0.9", "vllm")


def engine_profile(name: str) -> EngineProfile:
    p = PROFILES.get(name)
    if p is None:
        raise UserError(f"profile: {name!r} is not an engine profile; allowed: {', '.join(PROFILE_NAMES)}")
    return p
