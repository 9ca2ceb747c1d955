"""The arithmetic series behind the step-time interface (:mod:`sim.perf.step`), as plain
functions of numbers so that the serving engine's hot path calls them directly (``pip
install .`` compiles this module with the engine, see ``setup.py``).

* :func:`prefill_attn_pairs`: causal (query, key) pairs of a prefill chunk;
* :func:`decode_run_s`: the time of ``steps`` decode-only iterations whose step time is
  affine in the attended tokens, ``base_s + per_kv_token_s * kv``, with ``kv`` growing by
  ``growth`` per step;
* :func:`decode_steps_before`: the first iteration boundary of such a run at or after a
  given time into it.
"""
from __future__ import annotations

import math


def prefill_attn_pairs(start_tokens: int, chunk_tokens: int, window_tokens: int | None) -> float:
    """Causal (query, key) pairs of a prefill chunk of ``chunk_tokens`` starting at position
    ``start_tokens`` (tokens already cached), with an optional sliding window."""
    p, n = start_tokens, chunk_tokens
    if n <= 0:
        return 0.0
    # query j (0-based) sees p + j + 1 keys, capped at the window.
    if window_tokens is None or p + n <= window_tokens:
        return n * p + n * (n + 1) / 2.0
    w = window_tokens
    # queries whose key count p+j+1 <= w: j <= w - p - 1
    n_below = max(0, min(n, w - p))
    below = n_below * p + n_below * (n_below + 1) / 2.0
    return below + (n - n_below) * w


def decode_run_s(base_s: float, per_kv_token_s: float, kv0_tokens: int, growth: int,
                 steps: int) -> float:
    """Total time of ``steps`` decode-only iterations; step ``j`` takes ``base_s +
    per_kv_token_s * (kv0_tokens + growth * j)``."""
    if steps <= 0:
        return 0.0
    return steps * base_s + per_kv_token_s * (steps * kv0_tokens + growth * steps * (steps - 1) / 2.0)


def decode_steps_before(base_s: float, per_kv_token_s: float, kv0_tokens: int, growth: int,
                        elapsed_s: float, max_steps: int) -> int:
    """The smallest ``j`` (``0 <= j <= max_steps``) whose cumulative run time
    (:func:`decode_run_s`) is ``>= elapsed_s``: the index of the first iteration boundary at
    or after ``elapsed_s`` into the run."""
    if elapsed_s <= 0.0:
        return 0
    slope = per_kv_token_s
    # cumulative T(j) = j*base + slope*(j*kv0 + growth*j*(j-1)/2), increasing in j.
    a = slope * growth / 2.0
    b = base_s + slope * kv0_tokens - slope * growth / 2.0
    if a > 0.0:
        disc = b * b + 4.0 * a * elapsed_s
        j = int(math.ceil((-b + math.sqrt(disc)) / (2.0 * a)))
    elif b > 0.0:
        j = int(math.ceil(elapsed_s / b))
    else:  # zero-time steps: any boundary qualifies
        return 0
    j = max(0, min(j, max_steps))
    # fix rounding of the closed form by exact evaluation
    while j > 0 and decode_run_s(base_s, slope, kv0_tokens, growth, j - 1) >= elapsed_s:
        j -= 1
    while j < max_steps and decode_run_s(base_s, slope, kv0_tokens, growth, j) < elapsed_s:
        j += 1
    return j
