"""Step-time model: how long one continuous-batching iteration takes (see docs/perf.md).

Per transformer layer, on one GPU of a tensor-parallel replica, every operator costs a
roofline with fitted efficiencies and a fixed per-kernel overhead::

    t_op = c_op + (t_bytes^p + t_flops^p)^(1/p),  t_bytes = bytes/(BW*eta_bw), t_flops = flops/(F*eta_f)

(``p`` -> infinity is the plain ``max``; the fitted ``p`` rounds the corner where real kernels
are neither purely bandwidth- nor compute-bound).  Attention adds a decode term that is
*exactly affine* in the attended KV tokens and a prefill term linear in (query, key) pairs;
tensor parallelism adds two all-reduces per layer; a MoE layer reads the weights of the
expected number of distinct experts its tokens touch, ``sum_i 1-(1-pi_i)^n`` with
``pi_i`` the chance a token picks expert ``i`` (uniform: ``E(1-(1-k/E)^n)``).  A framework
overhead per iteration, per layer of the iteration and per sequence closes the sum (the per-layer
part is the host's kernel launches and per-layer bookkeeping, so a 32-layer model pays less than
an 80-layer one); a framework profile may also carry ``kernel_time_scale``, its kernels' GPU time
relative to the fitted operator kernels, acting above each kernel's streaming floor (its weight,
expert or KV bytes at the GPU's measured streaming efficiency; :func:`scaled_kernel_s`;
docs/perf.md, "Framework profiles").

Parameters come per GPU from ``models/calibration/<gpu>.json`` (written by
``sovsim calibrate``); ``kind = "roofline"`` uses datasheet ceilings only (efficiency 1, no
overheads).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
from statistics import NormalDist
from dataclasses import dataclass, field
from functools import lru_cache

from sim.perf import catalog
from sim.perf.catalog import ACTIVATION_BYTES, BYTES_PER_PARAM, GPU, LLM
from sim.core.errors import UserError
from sim.core.resources import model_file
from sim.perf.profiles import engine_profile
from sim.perf.step import ConstantStepModel, StepTimeModel

# activation reserve per GPU besides weights and KV (assumption; see docs/perf.md)
NON_TORCH_RESERVE_BYTES = 1.5 * 2**30  # CUDA context, NCCL buffers, CUDA graphs: assumption
LOGIT_BYTES = 4.0  # fp32 logits of the sampled rows: assumption (vLLM computes logits in fp32)

# measured model shapes (vidur operator timings): hidden and FFN range
MEASURED_MODELS = ("llama-3-8b", "llama-3-70b", "llama-2-7b", "llama-2-70b", "codellama-34b",
                   "internlm-20b", "qwen-72b", "phi-2")


# ------------------------------------------------------------------ parameters
@dataclass
class Params:
    """Fitted efficiencies and overheads of one GPU (see ``sovsim calibrate``)."""

    gpu: str = "datasheet"
    gemm_eta_bw: float = 1.0
    gemm_eta_flops: float = 1.0
    gemm_p: float = 64.0
    gemm_overhead_s: float = 0.0
    ew_eta_bw: dict = field(default_factory=lambda: {"norm": 1.0, "rope": 1.0, "act": 1.0, "add": 1.0, "emb": 1.0})
    ew_overhead_s: dict = field(default_factory=lambda: {"norm": 0.0, "rope": 0.0, "act": 0.0, "add": 0.0, "emb": 0.0})
    ew_p: dict = field(default_factory=lambda: {"norm": 64.0, "rope": 64.0, "act": 64.0, "add": 64.0, "emb": 64.0})
    attn_decode_eta_bw: float = 1.0
    attn_decode_overhead_s: float = 0.0
    attn_decode_per_seq_s: float = 0.0
    attn_prefill_eta_flops: float = 1.0
    attn_prefill_overhead_s: float = 0.0
    attn_prefill_extra_keys: float = 0.0
    moe_eta_bw: float = 1.0
    moe_eta_flops: float = 1.0
    moe_overhead_s: float = 0.0
    moe_skew: float = 0.0
    allreduce: dict = field(default_factory=dict)  # {"2": {"latency_s":..., "bw_gb_s":...}}
    # the serving engines' own all-reduce kernels (one-shot / two-shot over NVLink, CUDA IPC
    # buffers), fitted per kernel family on their H100 timings: {"trtllm": {"2": {...}}, "vllm": ...}
    allreduce_custom: dict = field(default_factory=dict)
    # which of them this software uses for messages up to its buffer (None: NCCL only); set by
    # the framework profile (``custom_allreduce``)
    custom_allreduce: str | None = None
    iteration_overhead_s: float = 0.0
    # framework CPU time per transformer layer per iteration (kernel launches, per-layer host
    # work): fitted with per_seq_overhead_s by `sovsim calibrate --throughput` (docs/perf.md)
    per_layer_overhead_s: float = 0.0
    per_seq_overhead_s: float = 0.0
    # GPU time of the serving software's kernels relative to the fitted operator kernels (vidur:
    # 2024 PyTorch/vLLM lineage): part of a framework profile, 1.0 = the operator fit as is
    kernel_time_scale: float = 1.0
    # the fused-MoE kernel's time relative to the MoE operator fit; fitted on MoE kernel
    # measurements (sim.calibration.moe_fit), never inherited from the dense kernel_time_scale.
    # None: same as kernel_time_scale (calibrations written before the MoE scale existed)
    moe_kernel_time_scale: float | None = None
    framework_profiles: dict = field(default_factory=dict)  # {"vllm": {...}, "trtllm": {...}}
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict) -> "Params":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def with_framework(self, prof: dict) -> "Params":
        """These parameters under one framework profile (``framework_profiles[name]``): its CPU
        overheads, kernel-time scales and all-reduce kernel; what the profile leaves out keeps
        this object's value (overheads it does not name are 0, its kernel-time scale 1)."""
        return dataclasses.replace(self, iteration_overhead_s=prof["iteration_overhead_s"],
                                   per_layer_overhead_s=prof.get("per_layer_overhead_s", 0.0),
                                   per_seq_overhead_s=prof["per_seq_overhead_s"],
                                   custom_allreduce=prof.get("custom_allreduce", self.custom_allreduce),
                                   kernel_time_scale=prof.get("kernel_time_scale", 1.0),
                                   moe_kernel_time_scale=prof.get("moe_kernel_time_scale", self.moe_kernel_time_scale))


@lru_cache(maxsize=None)
def load_params(gpu_id: str) -> Params:
    """Calibrated parameters for a GPU card (its ``calibration_from`` card's fit)."""
    card = catalog.gpu(gpu_id)
    p = model_file("calibration", f"{card.calibration_from}.json")
    if not p.is_file():
        raise UserError(f"gpu: no calibration for {gpu_id!r} ({p.name} missing; run `sovsim calibrate`)")
    return Params.from_json(json.loads(p.read_text()))


# ------------------------------------------------------------------ MoE coverage
def expert_probs(experts: int, top_k: int, skew: float) -> list[float]:
    """Chance ``pi_i`` that one token routes to expert ``i`` (sum = ``top_k``).

    ``skew`` in [0, 1): linear spread of per-expert load shares from ``(1-skew)/E`` to
    ``(1+skew)/E`` (0 = uniform routing), capped at 1 per expert."""
    if experts <= 1:
        return [1.0]
    shares = [1.0 + skew * (2.0 * i / (experts - 1) - 1.0) for i in range(experts)]
    tot = sum(shares)
    return [min(1.0, top_k * s / tot) for s in shares]


def expected_distinct_experts(experts: int, top_k: int, n_tokens: float, skew: float = 0.0) -> float:
    """Expected distinct experts touched by ``n_tokens`` independent tokens, top-k routing:
    ``sum_i 1 - (1 - pi_i)^n``; uniform routing gives ``E (1 - (1 - k/E)^n)``."""
    if n_tokens <= 0:
        return 0.0
    if experts <= 1:
        return 1.0
    return sum(1.0 - (1.0 - p) ** n_tokens for p in expert_probs(experts, top_k, skew))


# ------------------------------------------------------------------ kernel-time scale
def scaled_kernel_s(t_s: float, floor_s: float, scale: float) -> float:
    """A kernel's time under a framework's kernel-time scale: ``floor + scale * (t - floor)``.

    ``floor_s`` is the time its bytes (weights, experts, KV) take at the GPU's streaming efficiency,
    the bandwidth share its dense GEMMs reach in the operator fit (``gemm_eta_bw``: 0.97 on H100;
    the attention and MoE fits' own efficiencies are kernels', not the memory's, limits); the
    serving software's faster (or slower) kernels change what lies above it (compute, the
    roofline corner, launch latency), never the memory stream itself, so a
    scale below 1 cannot move a bandwidth-bound kernel past what HBM delivers (docs/perf.md,
    "Kernel-time scale above the streaming floor").  Affine in ``scale``, so the offline makespan
    stays closed form (:mod:`sim.calibration.throughput_fit`)."""
    return floor_s + scale * (t_s - floor_s)


def _by_bound(overhead_s: float, t_s: float, bw_bound: bool) -> tuple[float, float, float]:
    """(overhead, bandwidth-side, compute-side): a kernel's time on the side that bounds it."""
    return overhead_s, (t_s if bw_bound else 0.0), (0.0 if bw_bound else t_s)


# ------------------------------------------------------------------ extrapolation
def _measured_shape_range() -> tuple[int, int, int, int]:
    cards = [catalog.llm(m) for m in MEASURED_MODELS]
    return (min(c.hidden for c in cards), max(c.hidden for c in cards),
            min(c.ffn for c in cards), max(c.ffn for c in cards))


def extrapolation_reasons(gpu_id: str, model_id: str) -> list[str]:
    """Why a prediction for (gpu, model) lies outside the measured set (empty = inside)."""
    return _reasons(catalog.gpu(gpu_id), catalog.llm(model_id))


def _reasons(g: GPU, m: LLM) -> list[str]:
    gpu_id, model_id = g.id, m.id
    out = []
    if not g.measured:
        out.append(f"GPU {gpu_id} has no measurements: {g.calibration_from} efficiencies on its datasheet ceilings")
    hmin, hmax, fmin, fmax = _measured_shape_range()
    if not (hmin <= m.hidden <= hmax and fmin <= m.ffn <= fmax):
        out.append(f"model {model_id} shape (hidden {m.hidden}, ffn {m.ffn}) is outside the measured "
                   f"range (hidden {hmin}-{hmax}, ffn {fmin}-{fmax})")
    if m.is_moe and g.calibration_from != "h100-sxm":
        out.append("MoE kernel efficiency measured on H100 only; transferred by ratio to this GPU")
    return out


def is_extrapolated(gpu_id: str, model_id: str) -> bool:
    return bool(extrapolation_reasons(gpu_id, model_id))


# ------------------------------------------------------------------ parallelism
def check_parallelism(llm: LLM, tp: int, ep: int, attention_dp: bool, name: str = "deployment") -> None:
    """Refuse an expert / attention parallelism the model cannot take, in one line."""
    if ep < 1 or tp % ep:
        ok = [d for d in range(1, tp + 1) if tp % d == 0]
        raise UserError(f"{name}: ep must divide tp = {tp} (got {ep}); allowed: {', '.join(map(str, ok))}")
    if ep > 1 and not llm.is_moe:
        raise UserError(f"{name}: ep = {ep} needs a mixture-of-experts model; {llm.id} is dense; allowed: 1")
    if ep > llm.experts:
        raise UserError(f"{name}: ep = {ep} is more than the {llm.experts} experts of {llm.id}; allowed: <= {llm.experts}")
    if attention_dp and (ep != tp or tp < 2):
        raise UserError(f"{name}: attention_dp needs ep = tp >= 2 (each GPU its own attention and whole experts); "
                        f"got tp = {tp}, ep = {ep}")


def _parallel_reasons(m: LLM, ep: int, attention_dp: bool) -> list[str]:
    out = []
    if m.is_mla:
        out.append("multi-head latent attention: no MLA kernel was measured; its FLOPs and latent reads use the "
                   "dense attention efficiencies")
    if m.shared_experts or m.dense_layers or (m.is_moe and m.experts > 8):
        out.append(f"fine-grained MoE ({m.experts} experts, top-{m.top_k}): the fused-MoE efficiency was fitted on "
                   "Mixtral shapes (8 experts)")
    if ep > 1:
        out.append(f"expert parallelism (ep {ep}): whole experts per GPU, binomial load imbalance without a load "
                   "balancer (assumption); no measured EP serving point was fitted")
    if attention_dp:
        out.append("attention data parallelism: MoE dispatch/combine by NVLink all-to-all (NCCL timings, "
                   "models/calibration/alltoall_fit.csv; datasheet NVLink ratio on other GPUs)")
    return out


def _expected_max_normal(k: int) -> float:
    """E[max of k iid standard normals] (Blom's approximation, within 1 % for k <= 64)."""
    if k <= 1:
        return 0.0
    return NormalDist().inv_cdf((k - 0.375) / (k + 0.25))


def alltoall_coeffs(gpu: GPU, ranks: int) -> tuple[float, float]:
    """(latency_s, bytes per second of one rank's send buffer) of an NVLink all-to-all over
    ``ranks`` GPUs of one node: the NCCL fit of ``models/calibration/alltoall_fit.csv`` for this
    GPU (nearest measured rank count, rescaled like a ring), else the fit of the GPU it is
    calibrated from scaled by the NVLink ratio, else the datasheet (each rank sends
    ``(ranks-1)/ranks`` of its buffer at half the bidirectional NVLink bandwidth, no latency)."""
    if ranks <= 1:
        return 0.0, math.inf
    fits = _alltoall_fits()
    src = gpu.id if gpu.id in fits else (gpu.calibration_from if gpu.calibration_from in fits else None)
    if src is None:
        return 0.0, gpu.nvlink_bandwidth_gb_s * 1e9 / 2 * ranks / (ranks - 1)
    table = fits[src]
    k = ranks if ranks in table else min(table, key=lambda x: (abs(x - ranks), -x))
    lat, bw = table[k]
    if k != ranks:
        bw *= (ranks / (ranks - 1)) / (k / (k - 1))
    if src != gpu.id:
        bw *= gpu.nvlink_bandwidth_gb_s / catalog.gpu(src).nvlink_bandwidth_gb_s
    return lat, bw


@lru_cache(maxsize=None)
def _alltoall_fits() -> dict[str, dict[int, tuple[float, float]]]:
    out: dict[str, dict[int, tuple[float, float]]] = {}
    try:
        path = model_file("calibration", "alltoall_fit.csv")
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                out.setdefault(row["gpu"], {})[int(row["gpus"])] = (float(row["latency_s"]),
                                                                     float(row["algbw_gb_s"]) * 1e9)
    except FileNotFoundError:
        pass
    return out


# ------------------------------------------------------------------ the model
class PerfModel(StepTimeModel):
    """Roofline step-time model of one replica (``tp`` GPUs) of ``llm`` on ``gpu``."""

    def __init__(self, llm: LLM, gpu: GPU, tp: int, precision: str, params: Params,
                 max_num_seqs: int = 256, max_batched_tokens: int = 8192,
                 gpu_memory_utilization: float = 0.9, kv_cache_tokens: int | None = None,
                 name: str = "deployment", framework: str | None = None, ep: int = 1,
                 attention_dp: bool = False):
        catalog.check_precision(precision)
        if framework is not None:  # serving-software profile: its fitted CPU overheads
            prof = params.framework_profiles.get(framework)
            if prof is None:
                raise UserError(f"framework: {framework!r} has no fitted profile; allowed: "
                                f"{', '.join(params.framework_profiles) or 'none (datasheet roofline)'}")
            params = params.with_framework(prof)
        if tp < 1:
            raise UserError(f"{name}: tp must be >= 1 (got {tp})")
        check_parallelism(llm, tp, ep, attention_dp, name)
        self.llm, self.gpu, self.tp, self.precision, self.p = llm, gpu, tp, precision, params
        # expert parallelism: the routed experts are dealt whole over ``ep`` groups of tp/ep GPUs;
        # attention data parallelism: every GPU runs attention for its own 1/tp of the sequences
        # (weights replicated) and the MoE layers exchange tokens by all-to-all
        self.ep, self.dp = ep, (tp if attention_dp else 1)
        tpa = tp // self.dp   # tensor-parallel ranks of the attention (and dense MLP) part
        self.tp_attn = tpa
        self.name = name
        self.window_tokens = llm.sliding_window
        self.extrapolation = _reasons(gpu, llm) + _parallel_reasons(llm, ep, attention_dp)
        if tp > 8:
            self.extrapolation.append(f"tp {tp} > 8: all-reduce beyond one 8-GPU node extrapolated")
        self._decode_cache: dict[int, tuple[float, float]] = {}
        self._tokens_cache: dict[int, float] = {}
        self._seq_cache: dict[int, float] = {}

        m, P = llm, params
        bw = gpu.hbm_bandwidth_bytes_s
        self._bw = bw
        self._F = gpu.dense_flops(precision)
        self._F16 = gpu.dense_flops("bf16")
        self._bpp = BYTES_PER_PARAM[precision]
        L = m.layers
        self._L = L
        # per-GPU GEMM shapes (K, N) of one layer (a replicated projection is not split)
        if m.is_mla:
            self._attn_gemms = [(K, N / tpa if split else N) for K, N, split in m.attn_gemm_shapes]
        else:
            self._attn_gemms = [(m.hidden, (m.q_dim + 2 * m.kv_dim) / tpa), (m.q_dim / tpa, m.hidden)]
        up = (2 if m.gated_mlp else 1) * m.ffn / tpa
        self._mlp_gemms = [(m.hidden, up), (m.ffn / tpa, m.hidden)]
        # a MoE model's leading dense layers and its shared experts (0 for Mixtral)
        self._L_dense = m.dense_layers if m.is_moe else 0
        sh = m.shared_experts * m.moe_ffn / tpa
        self._shared_gemms = [(m.hidden, (2 if m.gated_mlp else 1) * sh), (sh, m.hidden)] if m.shared_experts else []
        # elementwise bytes per token (16-bit activations), one layer, per GPU
        a = ACTIVATION_BYTES
        rope_elems = (m.heads * m.qk_rope_dim / tpa + m.qk_rope_dim) if m.is_mla else (m.q_dim + m.kv_dim) / tpa
        self._ew = [
            ("norm", 2 * 2 * m.hidden * a),                       # two RMSNorms, read + write
            ("rope", 2 * rope_elems * a),                         # rotate q and k in place
            # SiLU-and-mul of a dense MLP (a MoE layer's is inside the fused-experts kernel)
            ("act", 0.0 if m.is_moe else (3 if m.gated_mlp else 2) * (m.ffn / tpa) * a),
            ("add", 2 * 3 * m.hidden * a),                        # two residual adds
        ]
        self._ew_kernels = {"norm": 2, "rope": 1, "act": 0 if m.is_moe else 1, "add": 2}
        # SiLU-and-mul of the dense layers and shared experts of a MoE model, summed over layers
        self._moe_model_act = [(self._L_dense, (3 if m.gated_mlp else 2) * (m.ffn / tpa) * a),
                               (m.moe_layers, (3 if m.gated_mlp else 2) * sh * a)] if m.is_moe else []
        # attention: per attended token per layer (per GPU)
        if m.is_mla:   # the latent (+ rope key) of every cached token, on every attention rank
            self._kv_bytes_tok_layer = m.kv_elems_per_token_layer * self._bpp
        else:
            kv_heads_gpu = max(m.kv_heads, tpa) / tpa
            self._kv_bytes_tok_layer = 2.0 * kv_heads_gpu * m.head_dim * self._bpp
        self._attn_flops_pair_layer = m.attn_decode_flops_per_pair_layer / tpa
        self._attn_prefill_flops_pair_layer = m.attn_prefill_flops_per_pair_layer / tpa
        slope_b = self._kv_bytes_tok_layer / (bw * P.attn_decode_eta_bw)
        slope_f = self._attn_flops_pair_layer / (self._F16 * P.attn_decode_eta_bw)
        self._ks = P.kernel_time_scale
        self._ks_moe = P.kernel_time_scale if P.moe_kernel_time_scale is None else P.moe_kernel_time_scale
        # with attention data parallelism each GPU attends over its own sequences' tokens; the
        # KV stream at the GPU's streaming efficiency is a floor the kernel-time scale does not shorten
        kv_floor = min(self._kv_bytes_tok_layer / (bw * P.gemm_eta_bw), max(slope_b, slope_f))
        self._decode_slope = L * scaled_kernel_s(max(slope_b, slope_f), kv_floor, self._ks) / self.dp
        # MoE
        self._moe_probs = expert_probs(m.experts, m.top_k, P.moe_skew) if m.is_moe else None
        self._expert_bytes = m.expert_params / tp * self._bpp
        self._expert_flops_tok = 2.0 * m.expert_params / tp
        # all-reduce: two per layer on hidden-size activations (over the attention's ranks)
        self._ar_lat, self._ar_bw = self._allreduce_coeffs()
        self._ar_custom = self._custom_allreduce_coeffs()
        # all-to-all: dispatch and combine of every MoE layer under attention data parallelism
        self._a2a_lat, self._a2a_bw = alltoall_coeffs(gpu, tp) if self.dp > 1 else (0.0, math.inf)
        self._z_ep = _expected_max_normal(ep) if ep > 1 else 0.0
        self._rank_budget = max_batched_tokens / self.dp

        # memory
        mem = gpu.memory_bytes
        if ep == 1 and self.dp == 1:
            self.weight_bytes_per_gpu = m.weight_bytes(precision) / tp
        else:   # routed experts spread over all tp GPUs; the rest split over the attention ranks
            routed = m.routed_expert_params * self._bpp
            self.weight_bytes_per_gpu = routed / tp + (m.weight_bytes(precision) - routed) / tpa
        moe_act = (m.top_k if m.is_moe else 1) * 2 * m.moe_ffn / tp
        act_peak = max_batched_tokens * (4 * m.hidden + (m.q_dim + 2 * m.kv_dim) / tpa + moe_act) * a
        self.reserve_bytes_per_gpu = NON_TORCH_RESERVE_BYTES + act_peak + max_num_seqs * m.vocab / tpa * LOGIT_BYTES
        budget = mem * gpu_memory_utilization
        if self.weight_bytes_per_gpu + self.reserve_bytes_per_gpu > budget:
            raise UserError(
                f"{name}: {m.id} at {precision} with tp={tp} needs "
                f"{(self.weight_bytes_per_gpu + self.reserve_bytes_per_gpu) / 2**30:.1f} GB per GPU "
                f"(weights {self.weight_bytes_per_gpu / 2**30:.1f} GB + reserve "
                f"{self.reserve_bytes_per_gpu / 2**30:.1f} GB) but {gpu.id} has {gpu.memory_gb:g} GB "
                f"x gpu_memory_utilization {gpu_memory_utilization:g} = {budget / 2**30:.1f} GB; raise tp or use fp8")
        self.kv_bytes_per_token = m.kv_bytes_per_token(precision, tpa)
        free = tp * (budget - self.weight_bytes_per_gpu - self.reserve_bytes_per_gpu)
        self.kv_capacity_tokens = int(kv_cache_tokens) if kv_cache_tokens else int(free // self.kv_bytes_per_token)

    # -------------------------------------------------------------- pieces
    def _allreduce_coeffs(self) -> tuple[float, float]:
        tp = self.tp_attn
        if tp <= 1:
            return 0.0, math.inf
        table = self.p.allreduce
        if not table:  # datasheet: ring all-reduce on half the bidirectional NVLink bandwidth
            bus = self.gpu.nvlink_bandwidth_gb_s * 1e9 / 2
            return 0.0, bus * tp / (2.0 * (tp - 1))
        keys = sorted(int(k) for k in table)
        k = str(tp) if str(tp) in table else str(min(keys, key=lambda x: (abs(x - tp), -x)))
        lat, algbw = table[k]["latency_s"], table[k]["bw_gb_s"] * 1e9
        # another GPU on the same fit: scale bandwidth by its NVLink ratio
        src = catalog.gpu(self.p.gpu) if self.p.gpu in catalog.gpus() else None
        if src is not None and src.id != self.gpu.id:
            algbw *= self.gpu.nvlink_bandwidth_gb_s / src.nvlink_bandwidth_gb_s
        if int(k) != tp:  # ring algbw ~ bus * tp / (2 (tp-1))
            algbw *= (tp / (tp - 1)) / (int(k) / (int(k) - 1))
        return lat, algbw

    def _custom_allreduce_coeffs(self) -> tuple[float, float, float] | None:
        """(latency_s, algbw bytes/s, max message bytes) of the software's own all-reduce kernel
        at this TP, or None (NCCL only)."""
        table = self.p.allreduce_custom.get(self.p.custom_allreduce or "", {})
        tp = self.tp_attn
        if tp <= 1 or not table:
            return None
        keys = sorted(int(k) for k in table)
        k = str(tp) if str(tp) in table else str(min(keys, key=lambda x: (abs(x - tp), -x)))
        row = table[k]
        algbw = row["bw_gb_s"] * 1e9
        src = catalog.gpu(self.p.gpu) if self.p.gpu in catalog.gpus() else None
        if src is not None and src.id != self.gpu.id:
            algbw *= self.gpu.nvlink_bandwidth_gb_s / src.nvlink_bandwidth_gb_s
        return row["latency_s"], algbw, row["max_bytes"]

    def _allreduce_s(self, nbytes: float) -> float:
        """One all-reduce of ``nbytes``: NCCL, or the software's own kernel where its buffer
        holds the message and it is faster (the engines choose by size)."""
        t = self._ar_lat + nbytes / self._ar_bw
        c = self._ar_custom
        if c is not None and nbytes <= c[2]:
            t = min(t, c[0] + nbytes / c[1])
        return t

    def _blend(self, tb: float, tf: float, p: float) -> float:
        if tb <= 0.0:
            return tf
        if tf <= 0.0:
            return tb
        big = tb if tb > tf else tf
        return big * ((tb / big) ** p + (tf / big) ** p) ** (1.0 / p)

    def _gemm_raw(self, n: float, K: float, N: float) -> tuple[float, float, float, bool]:
        """(overhead, streaming floor, kernel time, bandwidth-bound?) of one GEMM of n tokens:
        the floor is its bytes at the fitted GEMM bandwidth efficiency, the time the roofline blend."""
        P = self.p
        tb = (K * N * self._bpp + n * (K + N) * ACTIVATION_BYTES) / (self._bw * P.gemm_eta_bw)
        tf = 2.0 * n * K * N / (self._F * P.gemm_eta_flops)
        return P.gemm_overhead_s, tb, self._blend(tb, tf, P.gemm_p), tb >= tf

    def _gemm_s(self, n: float, K: float, N: float) -> tuple[float, float, float]:
        """(overhead, bandwidth-side, compute-side) seconds of one GEMM of n tokens (operator fit)."""
        o, _, t, bw_bound = self._gemm_raw(n, K, N)
        return _by_bound(o, t, bw_bound)

    def _gemm_scaled(self, n: float, K: float, N: float, k: float) -> tuple[float, float, float]:
        """:meth:`_gemm_s` under kernel-time scale ``k``: the scale acts on the overhead and on the
        time above the streaming floor, never on the floor (:func:`scaled_kernel_s`)."""
        o, tb, t, bw_bound = self._gemm_raw(n, K, N)
        return _by_bound(k * o, scaled_kernel_s(t, tb, k), bw_bound)

    def _moe_raw(self, n: float) -> tuple[float, float, float, bool]:
        P, m = self.p, self.llm
        d = sum(1.0 - (1.0 - q) ** n for q in self._moe_probs)
        # per GPU: its share of the distinct experts' weights; under expert parallelism it sees
        # only the 1/ep of the token-expert pairs routed to its experts (whole width)
        tb = (d * self._expert_bytes + n * m.top_k * 2 * m.hidden * ACTIVATION_BYTES / self.ep) / (self._bw * P.moe_eta_bw)
        tf = n * m.top_k * self._expert_flops_tok / (self._F * P.moe_eta_flops)
        t = self._blend(tb, tf, P.gemm_p)
        # floor: the same bytes at the GPU's streaming efficiency (its dense GEMMs' eta_bw)
        floor = min(tb * P.moe_eta_bw / P.gemm_eta_bw, t)
        if self.ep > 1:   # the layer waits for the busiest expert group
            imb = self.ep_imbalance(n)
            t, floor = t * imb, floor * imb
        # router GEMM (hidden x experts) and top-k: one small kernel
        return P.moe_overhead_s + P.gemm_overhead_s, floor, t, tb >= tf

    def _moe_s(self, n: float) -> tuple[float, float, float]:
        """(overhead, bandwidth-side, compute-side) seconds of one MoE layer (operator fit)."""
        o, _, t, bw_bound = self._moe_raw(n)
        return _by_bound(o, t, bw_bound)

    def _moe_scaled(self, n: float, k: float) -> tuple[float, float, float]:
        o, floor, t, bw_bound = self._moe_raw(n)
        return _by_bound(k * o, scaled_kernel_s(t, floor, k), bw_bound)

    def _tokens_parts(self, n: int, na: float | None = None) -> dict[str, float]:
        """Everything in an iteration that depends on the token count only (all layers).  ``na``:
        the tokens of the busiest GPU outside the routed experts (default: ``n`` over the
        attention's data-parallel ranks)."""
        P, L, m = self.p, self._L, self.llm
        if na is None:
            na = n if self.dp == 1 else n / self.dp   # tokens per GPU outside the routed experts
        ks, km = self._ks, self._ks_moe
        ovh = wts = cmp = 0.0       # GEMMs, already under the kernel-time scale (floor kept)
        gemms = self._attn_gemms + ([] if m.is_moe else self._mlp_gemms)
        for K, N in gemms:
            o, b, f = self._gemm_scaled(na, K, N, ks)
            ovh += o; wts += b; cmp += f
        Lm = m.moe_layers if m.is_moe else L   # layers with a MoE kernel (all of Mixtral's)
        x_ovh = x_wts = x_cmp = 0.0           # a MoE model's dense layers and shared experts, all layers
        for count, gl in ((self._L_dense, self._mlp_gemms), (m.moe_layers, self._shared_gemms)):
            for K, N in (gl if count else []):
                o, b, f = self._gemm_scaled(na, K, N, ks)
                x_ovh += count * o; x_wts += count * b; x_cmp += count * f
        m_ovh = m_wts = m_cmp = 0.0
        if m.is_moe:  # the MoE kernel has its own scale (docs/perf.md, "MoE kernel scale")
            m_ovh, m_wts, m_cmp = self._moe_scaled(n, km)
        ew = x_act = 0.0   # elementwise kernels: no streaming floor (the serving software fuses them)
        for kind, bytes_tok in self._ew:  # per kernel: blend of a latency floor and bandwidth
            k = self._ew_kernels[kind]
            if k:
                ew += k * self._blend(P.ew_overhead_s[kind], na * bytes_tok / k / (self._bw * P.ew_eta_bw[kind]), P.ew_p[kind])
        for count, bytes_tok in self._moe_model_act:
            if count and bytes_tok:
                x_act += count * self._blend(P.ew_overhead_s["act"], na * bytes_tok / (self._bw * P.ew_eta_bw["act"]),
                                             P.ew_p["act"])
        comm = 0.0
        if self.tp_attn > 1:
            comm = 2.0 * self._allreduce_s(na * m.hidden * ACTIVATION_BYTES)
        a2a = 0.0
        if self.dp > 1 and m.is_moe:   # dispatch and combine of every MoE layer
            a2a = Lm * 2.0 * (self._a2a_lat + na * m.top_k * m.hidden * ACTIVATION_BYTES / self._a2a_bw)
        # embedding lookup (once per iteration)
        emb = self._blend(P.ew_overhead_s["emb"], na * 2 * m.hidden * ACTIVATION_BYTES
                          / (self._bw * P.ew_eta_bw["emb"]), P.ew_p["emb"])
        return {"weights": L * wts + Lm * m_wts + x_wts,
                "compute": L * cmp + ks * (L * ew + emb + x_act) + Lm * m_cmp + x_cmp,
                "communication": ks * L * comm + ks * a2a, "overhead": L * ovh + Lm * m_ovh + x_ovh}

    def _tokens_s(self, n: int, na: float | None = None) -> float:
        key = n if na is None else (n, na)
        t = self._tokens_cache.get(key)
        if t is None:
            t = sum(self._tokens_parts(n, na).values())
            self._tokens_cache[key] = t
        return t

    def _dp_split(self, n_decode: int, prefill_tokens: int, pairs: float) -> tuple[float | None, int, float]:
        """Under attention data parallelism, the busiest rank: its share of the decodes plus the
        prompt chunk it holds (a chunk is not split over ranks: assumption; at most the rank's
        token budget, ``max_batched_tokens / tp``).  Every rank waits for it at each MoE layer.
        Returns (its tokens outside the routed experts, its prefill tokens, its attention pairs);
        without data parallelism (None, the prefill, the pairs)."""
        if self.dp == 1 or prefill_tokens <= 0:
            return None, prefill_tokens, pairs
        busiest = min(prefill_tokens, max(1, int(self._rank_budget)))
        return n_decode / self.dp + busiest, busiest, pairs * busiest / prefill_tokens

    def _seq_parts(self, n_seq: int) -> dict[str, float]:
        """LM head on the sampled rows, decode-attention per-sequence cost, framework overhead."""
        P, m = self.p, self.llm
        rows = n_seq if self.dp == 1 else n_seq / self.dp
        ks = self._ks  # GPU kernels scale (above their streaming floor); the framework's CPU overheads do not
        o, b, f = self._gemm_scaled(rows, m.hidden, m.vocab / self.tp_attn, ks)
        comm = 0.0
        if self.tp_attn > 1:  # gather of the vocab-parallel logits
            comm = self._allreduce_s(rows * m.vocab * LOGIT_BYTES)
        return {"weights": b, "compute": f, "communication": ks * comm,
                "overhead": o + P.iteration_overhead_s + P.per_layer_overhead_s * self._L
                + P.per_seq_overhead_s * n_seq}

    def _seq_s(self, n_seq: int) -> float:
        t = self._seq_cache.get(n_seq)
        if t is None:
            t = sum(self._seq_parts(n_seq).values())
            self._seq_cache[n_seq] = t
        return t

    def _decode_attn_base(self, batch: int) -> float:
        P = self.p
        per_gpu = batch if self.dp == 1 else batch / self.dp
        return self._ks * self._L * (P.attn_decode_overhead_s + P.attn_decode_per_seq_s * per_gpu) if batch > 0 else 0.0

    def _prefill_attn_s(self, tokens: int, pairs: float) -> float:
        P = self.p
        return self._ks * self._L * (P.attn_prefill_overhead_s + (pairs + P.attn_prefill_extra_keys * tokens)
                                     * self._attn_prefill_flops_pair_layer / (self._F16 * P.attn_prefill_eta_flops))

    # -------------------------------------------------------------- interface
    def decode_coeffs(self, batch: int) -> tuple[float, float]:
        c = self._decode_cache.get(batch)
        if c is None:
            base = self._tokens_s(batch) + self._seq_s(batch) + self._decode_attn_base(batch)
            c = (base, self._decode_slope)
            self._decode_cache[batch] = c
        return c

    def mixed_step_s(self, n_decode: int, decode_kv_tokens: int, prefill_tokens: int,
                     prefill_attn_pairs: float) -> float:
        n = n_decode + prefill_tokens
        na, pf, pairs = self._dp_split(n_decode, prefill_tokens, prefill_attn_pairs)
        t = self._tokens_s(n, na) + self._seq_s(n_decode + 1) + self._prefill_attn_s(pf, pairs)
        if n_decode > 0:
            t += self._decode_attn_base(n_decode) + self._decode_slope * decode_kv_tokens
        return t

    def breakdown(self, n_decode: int, decode_kv_tokens: int, prefill_tokens: int = 0,
                  prefill_attn_pairs: float = 0.0) -> dict[str, float]:
        n = n_decode + prefill_tokens
        n_seq = n_decode + (1 if prefill_tokens > 0 else 0)
        out = {"weights": 0.0, "kv": 0.0, "compute": 0.0, "communication": 0.0, "overhead": 0.0}
        if n <= 0:
            return out
        na, pf_tokens, pairs = self._dp_split(n_decode, prefill_tokens, prefill_attn_pairs)
        for parts in (self._tokens_parts(n, na), self._seq_parts(n_seq)):
            for k, v in parts.items():
                out[k] += v
        if n_decode > 0:
            out["overhead"] += self._decode_attn_base(n_decode)
            out["kv"] += self._decode_slope * decode_kv_tokens
        if prefill_tokens > 0:
            pf = self._prefill_attn_s(pf_tokens, pairs)
            out["overhead"] += self._ks * self._L * self.p.attn_prefill_overhead_s
            out["compute"] += pf - self._ks * self._L * self.p.attn_prefill_overhead_s
        return out

    def ep_imbalance(self, n_tokens: float) -> float:
        """How much longer the busiest of ``ep`` expert groups works than the mean: the
        token-expert pairs of an iteration (``n * top_k``) fall on the groups binomially (uniform
        routing; assumption: no load balancer such as EPLB), and the expected maximum of ``ep``
        groups is ``mean + z_ep * sd`` (``z_ep``: expected maximum of ``ep`` standard normals),
        at most ``ep`` (every pair on one group)."""
        if self.ep <= 1 or n_tokens <= 0:
            return 1.0
        pairs = n_tokens * self.llm.top_k
        return min(float(self.ep), 1.0 + self._z_ep * math.sqrt((self.ep - 1) / pairs))

    def expected_experts(self, n_tokens: int) -> float:
        if not self.llm.is_moe:
            return 1.0
        return sum(1.0 - (1.0 - q) ** n_tokens for q in self._moe_probs)


def build_model(model_id: str, gpu_id: str, tp: int = 1, precision: str = "bf16",
                kind: str = "calibrated", params: Params | None = None, **kw) -> PerfModel:
    """Convenience constructor from catalog ids (used by the CLI, experiments, tests);
    ``params`` overrides the calibrated parameters (the calibration itself uses it)."""
    m, g = catalog.llm(model_id), catalog.gpu(gpu_id)
    if params is not None:
        pass
    elif kind == "calibrated":
        params = load_params(gpu_id)
    elif kind == "roofline":
        params = Params()
    else:
        raise UserError(f"step_time.kind: {kind!r} is not a perf-model kind; allowed: calibrated, roofline")
    return PerfModel(m, g, tp, precision, params, **kw)


def build_step_model(dep) -> PerfModel:
    """The engine's entry point: a step-time model for a :class:`sim.scenario.DeploymentSpec`."""
    catalog.llm(dep.model, field=f"deployments[{dep.name}].model")
    catalog.gpu(dep.gpu, field=f"deployments[{dep.name}].gpu")
    b = dep.batching
    # framework overheads: step_time.framework, else the engine profile's (sim.perf.profiles), else the calibration's
    # default profile (docs/perf.md); the datasheet roofline has none
    prof = getattr(dep, "profile", None)
    framework = dep.step_time.framework or (
        engine_profile(prof).framework if prof is not None and dep.step_time.kind == "calibrated" else None)
    return build_model(dep.model, dep.gpu, dep.tp, dep.precision, dep.step_time.kind,
                       max_num_seqs=b.max_num_seqs, max_batched_tokens=b.max_batched_tokens,
                       gpu_memory_utilization=b.gpu_memory_utilization,
                       kv_cache_tokens=dep.step_time.kv_cache_tokens, name=f"deployment {dep.name!r}",
                       framework=framework, ep=getattr(dep, "ep", 1), attention_dp=getattr(dep, "attention_dp", False))


def make_step_model(dep) -> StepTimeModel:
    """The step-time model of a deployment (``sim.scenario.DeploymentSpec``): the constant
    model for queueing-theory validation, else the calibrated roofline."""
    st = dep.step_time
    if st.kind == "constant":
        return ConstantStepModel(
            decode_step_s=st.decode_step_s,
            prefill_per_token_s=st.prefill_per_token_s,
            per_kv_token_s=st.per_kv_token_s,
            kv_capacity_tokens=st.kv_cache_tokens if st.kv_cache_tokens is not None else 1 << 40,
            window_tokens=st.window_tokens,
        )
    return build_step_model(dep)
