"""Fluid (closed-form) capacity of a replica: what it sustains at full batch.

Used to size fleets (capacity policies) and as the denominators of the load measures
``request_utilisation`` and ``throughput_utilisation`` (docs/metrics.md).  The simulation
is the referee; ``tests/economics/test_capacity_policy.py`` checks the formula against it.
"""
from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class LengthMoments:
    """The first and second moments of a request mix's token counts: all the fluid capacity rule
    needs of a length distribution (prompt ``p``, output ``o``; means over requests)."""

    prompt_mean: float
    output_mean: float
    prompt_sq_mean: float          # E[p^2]
    output_sq_mean: float          # E[o^2]
    prompt_output_mean: float      # E[p o]

    @classmethod
    def of_means(cls, prompt: float, output: float) -> "LengthMoments":
        """Every request exactly ``prompt`` / ``output`` tokens long (benchmark lengths)."""
        return cls(prompt, output, prompt * prompt, output * output, prompt * output)

    @classmethod
    def of_laws(cls, prompt, output) -> "LengthMoments":
        """Independent prompt and output length laws (:mod:`sim.demand.distributions`: the
        moments of what they sample, ``sampled_moments``)."""
        p, p2 = prompt.sampled_moments()
        o, o2 = output.sampled_moments()
        return cls(p, o, p2, o2, p * o)

    @classmethod
    def of_streams(cls, streams, shares=None) -> "LengthMoments | None":
        """The arrived requests of metric streams (:class:`sim.serving.metrics.Stream`), each
        weighted by its share (default 1); None when nothing arrived."""
        w = [1.0] * len(streams) if shares is None else list(shares)
        n = sum(x * st.arrivals for x, st in zip(w, streams))
        if n <= 0:
            return None

        def m(attr):
            return sum(x * getattr(st, attr) for x, st in zip(w, streams)) / n
        return cls(m("arrived_prompt_tokens"), m("arrived_output_tokens"), m("arrived_prompt_tokens_sq"),
                   m("arrived_output_tokens_sq"), m("arrived_prompt_output_tokens"))


def replica_request_capacity_per_s(rep, mean_prompt_tokens: float, mean_output_tokens: float) -> float:
    """:func:`replica_request_capacity` for requests of exactly these lengths."""
    return replica_request_capacity(rep, LengthMoments.of_means(float(mean_prompt_tokens), float(mean_output_tokens)))


def replica_request_capacity(rep, lengths: LengthMoments) -> float:
    """Requests per second one replica sustains at full batch for a request mix with these length
    moments (a fluid estimate for sizing; the simulation is the referee).

    Batch ``B``: ``max_num_seqs``, or fewer if the KV cache holds fewer sequences at the mean
    KV of the *running* set (their context; prompt + whole output under ``reserve_full_output``
    admission, TensorRT-LLM's guaranteed-no-evict).  A request stays in the batch for its ``o`` decode
    steps, so the running set is length-biased (the inspection paradox): its mean context is
    ``C = (E[p o] + E[o^2] / 2) / E[o]`` (``= p + o / 2`` for fixed lengths; for independent
    lengths ``E[p] + E[o] / 2 + Var[o] / (2 E[o])``).  Each request costs ``o`` decode steps
    shared by ``B`` sequences, ``E[o] t_decode(B, B C) / B``, plus its prefill: the extra time of
    an iteration that also prefills a whole prompt, ``t_mixed(B, B C, E[p], pairs) -
    t_decode(B, B C)``, with the causal attention pairs ``E[p (p + 1) / 2]`` (quadratic in the
    prompt; the mean prompt's pairs under a sliding window, assumption).  Unlike output-token
    saturation, this counts prefill work, which dominates for long prompts."""
    p = max(1.0, float(lengths.prompt_mean))
    o = max(1.0, float(lengths.output_mean))
    ctx = max(p + o / 2.0, (lengths.prompt_output_mean + lengths.output_sq_mean / 2.0) / o)
    # KV held per running sequence: its context, or, when admission reserves prompt + whole output
    # (``reserve_full_output``), all of it from the start: (E[p o] + E[o^2]) / E[o]
    held = max(p + o, (lengths.prompt_output_mean + lengths.output_sq_mean) / o) if rep.reserve else ctx
    b = int(min(rep.max_num_seqs, max(1, rep.total_blocks * rep.bs // int(held))))
    kv = int(b * ctx)
    t_dec = rep.model.step_time_s(b, kv)
    pi = int(round(p))
    pairs = prefill_attn_pairs(0, pi, rep.window) if rep.window else \
        max(prefill_attn_pairs(0, pi, None), (lengths.prompt_sq_mean + p) / 2.0)
    t_mix = rep.model.step_time_s(b, kv, pi, pairs)
    per_request_s = o * t_dec / b + max(0.0, t_mix - t_dec)
    return 1.0 / per_request_s if per_request_s > 0 else 0.0


def probe_replica(env, dep):
    """A detached replica of deployment spec ``dep`` (never scheduled): its step model,
    batch limits and KV capacity, for capacity arithmetic."""
    return replica_from_spec(env, dep, make_step_model(dep))
