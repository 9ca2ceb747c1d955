"""The catalog: GPU cards and LLM cards, loaded from ``models/gpus.csv`` and ``models/llms.csv``.

Every number in those files carries its source in the row's ``source`` column (see
``models/README.md``).  This module derives what the step-time model needs from the raw
shapes: parameter counts (total and active per token), weight bytes, KV-cache bytes per
token, per-precision ceilings.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache

from sim.core.errors import UserError
from sim.core.resources import model_file

PRECISIONS = ("bf16", "fp16", "fp8")
BYTES_PER_PARAM = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0}
ACTIVATION_BYTES = 2.0  # activations and all-reduce payloads stay 16-bit (also under fp8 weights)


@dataclass(frozen=True)
class GPU:
    id: str
    name: str
    memory_gb: float
    hbm_bandwidth_gb_s: float
    bf16_dense_tflops: float
    fp8_dense_tflops: float | None
    nvlink_bandwidth_gb_s: float
    board_power_w: float
    measured: bool
    calibration_from: str
    source: str

    @property
    def memory_bytes(self) -> float:
        # HBM capacities are binary: an "80 GB" part shows 81920 MiB (assumption: the
        # datasheet GB of HBM parts is GiB; see models/README.md)
        return self.memory_gb * 2**30

    @property
    def hbm_bandwidth_bytes_s(self) -> float:
        return self.hbm_bandwidth_gb_s * 1e9

    def dense_flops(self, precision: str) -> float:
        """Tensor-core dense FLOP/s of GEMMs at ``precision``.  A GPU without FP8 units (A100)
        runs FP8 weights weight-only: dequantised to 16-bit and multiplied at the bf16 rate."""
        check_precision(precision)
        if precision == "fp8" and self.fp8_dense_tflops:
            return self.fp8_dense_tflops * 1e12
        return self.bf16_dense_tflops * 1e12


@dataclass(frozen=True)
class LLM:
    id: str
    hf_id: str
    family: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    experts: int
    top_k: int
    vocab: int
    sliding_window: int | None
    gated_mlp: bool
    tied_embeddings: bool
    published_total_b: float
    published_active_b: float
    source: str
    # fine-grained MoE with multi-head latent attention (DeepSeek-V3 class); None / 0 = absent
    kv_lora_rank: int | None = None    # MLA: the cached KV latent per token and layer (plus the rope key)
    q_lora_rank: int | None = None     # MLA: the query's low-rank projection (None: a direct projection)
    qk_rope_dim: int = 0               # MLA: the decoupled rope key per token and layer (cached, shared by heads)
    v_head_dim: int | None = None      # MLA: value head width (None: head_dim)
    expert_ffn: int | None = None      # one routed expert's FFN width (None: ffn)
    shared_experts: int = 0            # experts every token uses in a MoE layer, besides its top-k
    dense_layers: int = 0              # leading layers with a dense MLP of width ffn (the rest are MoE)

    # ---------------------------------------------------------- shapes per layer
    @property
    def is_moe(self) -> bool:
        return self.experts > 1

    @property
    def is_mla(self) -> bool:
        """Multi-head latent attention: one latent of ``kv_lora_rank + qk_rope_dim`` cached per
        token and layer for all heads, replicated on every tensor-parallel rank."""
        return self.kv_lora_rank is not None

    @property
    def moe_layers(self) -> int:
        return self.layers - self.dense_layers if self.is_moe else 0

    @property
    def moe_ffn(self) -> int:
        return self.expert_ffn or self.ffn

    @property
    def v_dim(self) -> int:
        return self.heads * (self.v_head_dim or self.head_dim)

    @property
    def kv_elems_per_token_layer(self) -> int:
        """Cached elements per token and layer on one copy of the cache (all heads)."""
        if self.is_mla:
            return int(self.kv_lora_rank) + self.qk_rope_dim
        return 2 * self.kv_dim

    @property
    def attn_gemm_shapes(self) -> list[tuple[float, float, bool]]:
        """(K, N, split by tensor parallelism) of the attention projections of one layer.  MLA
        (absorbed, as vLLM and SGLang serve it): the fused q/kv down-projection (replicated),
        the query up-projection, the latent up-projection (read as batched GEMMs in the absorbed
        form) and the output projection."""
        if not self.is_mla:
            return [(self.hidden, self.q_dim + 2 * self.kv_dim, True), (self.q_dim, self.hidden, True)]
        r, qk = int(self.kv_lora_rank), self.head_dim + self.qk_rope_dim
        down = (self.q_lora_rank or 0) + r + self.qk_rope_dim
        out: list[tuple[float, float, bool]] = [(self.hidden, down, False)]
        if self.q_lora_rank:
            out.append((self.q_lora_rank, self.heads * qk, True))
        else:
            out.append((self.hidden, self.heads * qk, True))
        out += [(r, self.heads * self.head_dim + self.v_dim, True), (self.v_dim, self.hidden, True)]
        return out

    @property
    def attn_decode_flops_per_pair_layer(self) -> float:
        """FLOPs of one (query, cached key) pair in a decode step, all heads of one layer.  MLA
        absorbed: scores against the latent and rope key, values from the latent."""
        if self.is_mla:
            r = int(self.kv_lora_rank)
            return 2.0 * self.heads * (2 * r + self.qk_rope_dim)
        return 4.0 * self.heads * self.head_dim

    @property
    def attn_prefill_flops_per_pair_layer(self) -> float:
        """FLOPs of one (query, key) pair in prefill (MLA prefill runs un-absorbed heads)."""
        if self.is_mla:
            return 2.0 * self.heads * (self.head_dim + self.qk_rope_dim) + 2.0 * self.v_dim
        return 4.0 * self.heads * self.head_dim

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def attn_params_per_layer(self) -> int:
        """QKV and output projections."""
        return int(sum(K * N for K, N, _ in self.attn_gemm_shapes))

    @property
    def expert_params(self) -> int:
        """One routed expert's MLP (a dense model's MLP): gate+up and down projections."""
        return (3 if self.gated_mlp else 2) * self.hidden * self.moe_ffn

    @property
    def dense_mlp_params(self) -> int:
        return (3 if self.gated_mlp else 2) * self.hidden * self.ffn

    @property
    def router_params_per_layer(self) -> int:
        return self.hidden * self.experts if self.is_moe else 0

    @property
    def norm_params_per_layer(self) -> int:
        return 2 * self.hidden

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    # ---------------------------------------------------------- totals
    def _params(self, experts_used: int) -> int:
        if not self.is_moe:
            return (self.layers * (self.attn_params_per_layer + self.dense_mlp_params + self.norm_params_per_layer)
                    + self.embedding_params + self.hidden)
        moe = (experts_used + self.shared_experts) * self.expert_params + self.router_params_per_layer
        return (self.layers * (self.attn_params_per_layer + self.norm_params_per_layer)
                + self.dense_layers * self.dense_mlp_params + self.moe_layers * moe
                + self.embedding_params + self.hidden)

    @property
    def total_params(self) -> int:
        return self._params(self.experts)

    @property
    def active_params(self) -> int:
        """Parameters one token uses (top-k and shared experts of each MoE layer)."""
        return self._params(self.top_k)

    @property
    def routed_expert_params(self) -> int:
        """All routed experts of the model (what expert parallelism shards)."""
        return self.moe_layers * self.experts * self.expert_params

    def weight_bytes(self, precision: str) -> float:
        """Weights of the whole model; norms and router stay 16-bit, embeddings follow the
        precision of the linear layers (as TensorRT-LLM / vLLM FP8 checkpoints keep lm_head
        in 16-bit, this slightly underestimates FP8 weights; assumption)."""
        b = BYTES_PER_PARAM[check_precision(precision)]
        small = (self.layers * self.norm_params_per_layer + self.moe_layers * self.router_params_per_layer
                 + self.hidden)
        return (self.total_params - small) * b + small * ACTIVATION_BYTES

    def kv_bytes_per_token(self, precision: str, tp: int = 1) -> float:
        """KV-cache bytes of one token over the whole replica (``tp``: the attention's
        tensor-parallel ranks).  With fewer KV heads than TP ranks each rank keeps (a copy of)
        at least one head; MLA's latent is shared by all heads, so every rank keeps a copy."""
        b = BYTES_PER_PARAM[check_precision(precision)]
        if self.is_mla:
            return float(self.layers * self.kv_elems_per_token_layer * b * tp)
        heads_stored = max(self.kv_heads, tp)
        return 2.0 * self.layers * heads_stored * self.head_dim * b


# ------------------------------------------------------------------ loading
def check_precision(precision: str) -> str:
    if precision not in BYTES_PER_PARAM:
        raise UserError(f"precision: {precision!r} is not known; allowed: {', '.join(PRECISIONS)}")
    return precision


def _opt_float(s: str) -> float | None:
    s = s.strip()
    return float(s) if s else None


def _opt_int(s: str | None) -> int | None:
    s = (s or "").strip()
    return int(s) if s else None


def _yes(s: str) -> bool:
    return s.strip().lower() in ("yes", "true", "1")


@lru_cache(maxsize=None)
def gpus() -> dict[str, GPU]:
    out: dict[str, GPU] = {}
    with open(model_file("gpus.csv"), newline="") as f:
        for row in csv.DictReader(f):
            out[row["id"]] = GPU(
                id=row["id"], name=row["name"], memory_gb=float(row["memory_gb"]),
                hbm_bandwidth_gb_s=float(row["hbm_bandwidth_gb_s"]),
                bf16_dense_tflops=float(row["bf16_dense_tflops"]),
                fp8_dense_tflops=_opt_float(row["fp8_dense_tflops"]),
                nvlink_bandwidth_gb_s=float(row["nvlink_bandwidth_gb_s"]),
                board_power_w=float(row["board_power_w"]), measured=_yes(row["measured"]),
                calibration_from=row["calibration_from"], source=row["source"])
    return out


@lru_cache(maxsize=None)
def llms() -> dict[str, LLM]:
    out: dict[str, LLM] = {}
    with open(model_file("llms.csv"), newline="") as f:
        for row in csv.DictReader(f):
            sw = row["sliding_window"].strip()
            out[row["id"]] = LLM(
                id=row["id"], hf_id=row["hf_id"], family=row["family"],
                layers=int(row["layers"]), hidden=int(row["hidden"]), heads=int(row["heads"]),
                kv_heads=int(row["kv_heads"]), head_dim=int(row["head_dim"]), ffn=int(row["ffn"]),
                experts=int(row["experts"]), top_k=int(row["top_k"]), vocab=int(row["vocab"]),
                sliding_window=int(sw) if sw else None, gated_mlp=_yes(row["gated_mlp"]),
                tied_embeddings=_yes(row["tied_embeddings"]),
                published_total_b=float(row["published_total_b"]),
                published_active_b=float(row["published_active_b"]), source=row["source"],
                kv_lora_rank=_opt_int(row.get("kv_lora_rank", "")), q_lora_rank=_opt_int(row.get("q_lora_rank", "")),
                qk_rope_dim=_opt_int(row.get("qk_rope_dim", "")) or 0, v_head_dim=_opt_int(row.get("v_head_dim", "")),
                expert_ffn=_opt_int(row.get("expert_ffn", "")), shared_experts=_opt_int(row.get("shared_experts", "")) or 0,
                dense_layers=_opt_int(row.get("dense_layers", "")) or 0)
    return out


def gpu(gpu_id: str, field: str = "gpu") -> GPU:
    cards = gpus()
    if gpu_id not in cards:
        raise UserError(f"{field}: unknown GPU {gpu_id!r}; allowed: {', '.join(cards)}")
    return cards[gpu_id]


def llm(model_id: str, field: str = "model") -> LLM:
    cards = llms()
    if model_id not in cards:
        raise UserError(f"{field}: unknown model {model_id!r}; allowed: {', '.join(cards)}")
    return cards[model_id]
