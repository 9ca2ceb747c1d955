"""Arrival processes: when requests come.

An arrival process yields *chunks* lazily so memory stays flat over long horizons:
``chunks(rng, horizon_s)`` is an iterator of ``(times_s, prompt_tokens, output_tokens)``
where ``times_s`` is a sorted float array of absolute arrival times (increasing across
chunks, all ``< horizon_s``) and the two length arrays are ``None`` unless the process
carries its own lengths (trace replay); the workload's length distributions fill them in.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

CHUNK = 4096

Chunk = tuple[np.ndarray, "np.ndarray | None", "np.ndarray | None"]


class ArrivalProcess:
    def chunks(self, rng: np.random.Generator, horizon_s: float) -> Iterator[Chunk]:  # pragma: no cover
        raise NotImplementedError

    def mean_rate_per_s(self) -> float:  # pragma: no cover
        raise NotImplementedError


@dataclass(frozen=True)
class PoissonProcess(ArrivalProcess):
    rate_per_s: float

    def mean_rate_per_s(self) -> float:
        return self.rate_per_s

    def chunks(self, rng, horizon_s):
        t = 0.0
        scale = 1.0 / self.rate_per_s
        while True:
            times = t + np.cumsum(rng.exponential(scale, size=CHUNK))
            t = float(times[-1])
            if t >= horizon_s:
                times = times[times < horizon_s]
                if len(times):
                    yield times, None, None
                return
            yield times, None, None


@dataclass(frozen=True)
class OfflineProcess(ArrivalProcess):
    count: int

    def mean_rate_per_s(self) -> float:
        return float("inf")

    def chunks(self, rng, horizon_s):
        left = self.count
        while left > 0:
            n = min(CHUNK, left)
            left -= n
            yield np.zeros(n), None, None
