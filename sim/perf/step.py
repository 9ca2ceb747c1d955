"""The step-time interface between the serving engine and performance models.

The engine asks one question of a performance model: how long does one batching iteration
take?  An iteration carries ``n_decode`` sequences that each emit one token, plus prefill
chunks.  Two quantities summarise attention work:

* ``decode_kv_tokens`` -- the sum over decoding sequences of the tokens each new query
  attends to, ``min(cached + 1, window)``;
* ``prefill_attn_pairs`` -- the number of (query, key) pairs of the prefill chunks
  (:func:`prefill_attn_pairs`).

A decode-only iteration is *affine* in ``decode_kv_tokens`` for a fixed batch size:
``t = base_s + per_kv_token_s * decode_kv_tokens``.  That is what makes event skipping exact:
over a run of ``k`` decode steps in which ``growth`` sequences each add one attended token
per step, the total time is a closed-form arithmetic series (:meth:`StepTimeModel.decode_run_s`).

Concrete models: :class:`ConstantStepModel` here (validation against queueing theory), and
the roofline / calibrated models in :mod:`sim.perf`.  Every model must compute a decode-only
iteration through :meth:`StepTimeModel.decode_coeffs` so that the per-iteration and
event-skipping engine modes agree to float rounding.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from sim.perf import series
from sim.perf.series import prefill_attn_pairs  # noqa: F401  (part of this interface)


class StepTimeModel(ABC):
    """How long one continuous-batching iteration takes on one replica.

    Attributes every model provides:

    * ``window_tokens``: sliding-window length (``None`` for full attention);
    * ``kv_capacity_tokens``: KV-cache capacity of the replica in tokens (GPU memory left
      after weights, activations reserve and the memory-utilisation cap).
    """

    window_tokens: int | None = None
    kv_capacity_tokens: int = 0

    @abstractmethod
    def decode_coeffs(self, batch: int) -> tuple[float, float]:
        """``(base_s, per_kv_token_s)`` of a decode-only iteration of ``batch`` sequences."""

    @abstractmethod
    def mixed_step_s(self, n_decode: int, decode_kv_tokens: int, prefill_tokens: int,
                     prefill_attn_pairs: float) -> float:
        """Time of an iteration with ``prefill_tokens > 0`` (chunked prefill plus decodes)."""

    def breakdown(self, n_decode: int, decode_kv_tokens: int, prefill_tokens: int,
                  prefill_attn_pairs: float) -> dict[str, float]:
        """Optional: the iteration time split by component (seconds). Default: one total."""
        return {"total": self.step_time_s(n_decode, decode_kv_tokens, prefill_tokens,
                                          prefill_attn_pairs)}

    # ------------------------------------------------------------------ derived, exact
    def step_time_s(self, n_decode: int, decode_kv_tokens: int, prefill_tokens: int = 0,
                    prefill_attn_pairs: float = 0.0) -> float:
        """Any iteration; decode-only iterations go through :meth:`decode_coeffs`."""
        if prefill_tokens > 0:
            return self.mixed_step_s(n_decode, decode_kv_tokens, prefill_tokens, prefill_attn_pairs)
        if n_decode <= 0:
            return 0.0
        base, slope = self.decode_coeffs(n_decode)
        return base + slope * decode_kv_tokens

    def decode_run_s(self, batch: int, kv0_tokens: int, growth: int, steps: int) -> float:
        """Total time of ``steps`` decode-only iterations; step ``j`` attends
        ``kv0_tokens + growth * j`` tokens in total (:func:`sim.perf.series.decode_run_s`)."""
        if steps <= 0:
            return 0.0
        base, slope = self.decode_coeffs(batch)
        return series.decode_run_s(base, slope, kv0_tokens, growth, steps)

    def decode_steps_before(self, batch: int, kv0_tokens: int, growth: int,
                            elapsed_s: float, max_steps: int) -> int:
        """The smallest ``j`` (``0 <= j <= max_steps``) whose cumulative run time is
        ``>= elapsed_s``: the index of the first iteration boundary at or after
        ``elapsed_s`` into the run (:func:`sim.perf.series.decode_steps_before`)."""
        if elapsed_s <= 0.0:
            return 0
        base, slope = self.decode_coeffs(batch)
        return series.decode_steps_before(base, slope, kv0_tokens, growth, elapsed_s, max_steps)


@dataclass
class ConstantStepModel(StepTimeModel):
    """Iteration time independent of batch composition: the queueing-theory reference.

    ``decode_step_s`` per iteration that carries any decode; ``prefill_per_token_s`` per
    prefill token (0 = free prefill); ``per_kv_token_s`` adds attention-like growth.
    """

    decode_step_s: float
    prefill_per_token_s: float = 0.0
    per_kv_token_s: float = 0.0
    kv_capacity_tokens: int = 1 << 40
    window_tokens: int | None = None

    def decode_coeffs(self, batch: int) -> tuple[float, float]:
        return self.decode_step_s, self.per_kv_token_s

    def mixed_step_s(self, n_decode: int, decode_kv_tokens: int, prefill_tokens: int,
                     prefill_attn_pairs: float) -> float:
        t = self.prefill_per_token_s * prefill_tokens
        if n_decode > 0:
            t += self.decode_step_s + self.per_kv_token_s * decode_kv_tokens
        return t
