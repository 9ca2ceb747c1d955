"""Fluid (closed-form) capacity of a replica: what it sustains at full batch.

Used to size fleets (capacity policies) and as the denominators of the load measures
``request_utilisation`` and ``throughput_utilisation`` (docs/metrics.md).  The simulation
is the referee; ``tests/economics/test_capacity_policy.py`` checks the formula against it.
"""
from __future__ import annotations

from sim.perf.roofline import make_step_model
from sim.perf.step import prefill_attn_pairs
from sim.serving.engine import Replica
from sim.serving.replica import replica_from_spec


SATURATION_CONTEXT_TOKENS = 1024  # assumption: mean attended context at saturation


def saturation_tokens_per_s(rep: Replica) -> float:
    """Decode output tokens/s of a replica running its largest batch: max_num_seqs sequences
    (fewer if the KV cache holds fewer at SATURATION_CONTEXT_TOKENS each), each attending
    SATURATION_CONTEXT_TOKENS. The denominator of ``throughput_utilisation``."""
    b = min(rep.max_num_seqs, max(1, rep.total_blocks * rep.bs // SATURATION_CONTEXT_TOKENS))
    t = rep.model.step_time_s(b, b * SATURATION_CONTEXT_TOKENS)
    return b / t if t > 0 else 0.0


def replica_request_capacity_per_s(rep, mean_prompt_tokens: float, mean_output_tokens: float) -> float:
    """Requests per second one replica sustains at full batch for requests of these mean
    lengths (a fluid estimate for sizing; the simulation is the referee).

    Batch ``B``: ``max_num_seqs``, or fewer if the KV cache holds fewer sequences at the mean
    attended context ``C = prompt + output / 2``.  Each request costs ``output`` decode
    steps shared by ``B`` sequences, ``output x t_decode(B, B C) / B``, plus its prefill:
    the extra time of an iteration that also prefills the whole prompt,
    ``t_mixed(B, B C, prompt) - t_decode(B, B C)``.  Unlike output-token saturation, this
    counts prefill work, which dominates for long prompts."""
    p = max(1.0, float(mean_prompt_tokens))
    o = max(1.0, float(mean_output_tokens))
    ctx = p + o / 2.0
    b = int(min(rep.max_num_seqs, max(1, rep.total_blocks * rep.bs // int(ctx))))
    kv = int(b * ctx)
    t_dec = rep.model.step_time_s(b, kv)
    pi = int(round(p))
    t_mix = rep.model.step_time_s(b, kv, pi, prefill_attn_pairs(0, pi, rep.window))
    per_request_s = o * t_dec / b + max(0.0, t_mix - t_dec)
    return 1.0 / per_request_s if per_request_s > 0 else 0.0


def probe_replica(env, dep):
    """A detached replica of deployment spec ``dep`` (never scheduled): its step model,
    batch limits and KV capacity, for capacity arithmetic."""
    return replica_from_spec(env, dep, make_step_model(dep))
