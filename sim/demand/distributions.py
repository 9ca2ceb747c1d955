"""Token-length and service distributions as objects with analytic moments.

Each distribution samples positive integers (token counts) or floats (seconds) from a
``numpy.random.Generator`` passed in, and knows its mean and variance in closed form, so
tests compare simulated behaviour with theory.  Schema counterparts live in
:mod:`sim.scenario` (``*Spec`` classes) whose ``build()`` returns one of these.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim.core.errors import UserError


class Distribution:
    """Base class: ``sample(rng, n)`` returns an array of ``n`` draws."""

    integer: bool = True

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    @property
    def mean(self) -> float:  # pragma: no cover
        raise NotImplementedError

    @property
    def var(self) -> float:  # pragma: no cover
        raise NotImplementedError

    def sampled_moments(self) -> tuple[float, float]:
        """``(E[X], E[X^2])`` of the values :meth:`sample` draws (rounding and clipping
        included); the fluid capacity rule needs both (:class:`sim.serving.fluid.LengthMoments`)."""
        m = float(self.mean)
        return m, float(self.var) + m * m


@dataclass(frozen=True)
class Constant(Distribution):
    value: int

    def sample(self, rng, n):
        return np.full(n, self.value, dtype=np.int64)

    @property
    def mean(self):
        return float(self.value)

    @property
    def var(self):
        return 0.0


@dataclass(frozen=True)
class Geometric(Distribution):
    """Number of trials to the first success, support ``{1, 2, ...}``; ``mean = 1/p``."""

    mean_value: float

    def __post_init__(self):
        if not (math.isfinite(self.mean_value) and self.mean_value >= 1.0):
            raise UserError(f"geometric mean: {self.mean_value!r}; allowed: a finite number >= 1 (tokens)")

    @property
    def p(self) -> float:
        return 1.0 / self.mean_value

    def sample(self, rng, n):
        return rng.geometric(self.p, size=n).astype(np.int64)

    @property
    def mean(self):
        return self.mean_value

    @property
    def var(self):
        p = self.p
        return (1.0 - p) / (p * p)


@dataclass(frozen=True)
class UniformInt(Distribution):
    low: int
    high: int  # inclusive

    def sample(self, rng, n):
        return rng.integers(self.low, self.high + 1, size=n, dtype=np.int64)

    @property
    def mean(self):
        return (self.low + self.high) / 2.0

    @property
    def var(self):
        k = self.high - self.low + 1
        return (k * k - 1) / 12.0


@dataclass(frozen=True)
class LogNormalInt(Distribution):
    """``ceil`` of a lognormal variate, clipped to ``[1, max_value]``.

    Moments are those of the underlying continuous lognormal (the rounding adds under half a
    token on average; the clip is reported by ``clip_probability``)."""

    mu: float
    sigma: float
    max_value: int = 1 << 20

    def __post_init__(self):
        if not (math.isfinite(self.mu) and math.isfinite(self.sigma) and self.sigma > 0 and self.max_value >= 1):
            raise UserError(f"lognormal mu={self.mu!r}, sigma={self.sigma!r}, max={self.max_value!r}; "
                            "allowed: finite mu, finite sigma > 0, max >= 1")

    def sample(self, rng, n):
        x = np.ceil(rng.lognormal(self.mu, self.sigma, size=n))
        return np.clip(x, 1, self.max_value).astype(np.int64)

    @property
    def mean(self):
        return math.exp(self.mu + self.sigma ** 2 / 2.0)

    @property
    def var(self):
        s2 = self.sigma ** 2
        return (math.exp(s2) - 1.0) * math.exp(2 * self.mu + s2)

    @property
    def clip_probability(self) -> float:
        from scipy.stats import norm
        return float(norm.sf((math.log(self.max_value) - self.mu) / self.sigma))

    def sampled_moments(self) -> tuple[float, float]:
        """``(E[Y], E[Y^2])`` of ``Y = min(ceil X, M)``: the clipped moments in closed form,
        ``E[X^k; X < M] = exp(k mu + k^2 sigma^2 / 2) Phi((ln M - mu - k sigma^2) / sigma)`` plus
        ``M^k P(X >= M)``, and the ceiling as a uniform fraction of a token below the clip
        (``+1/2`` and ``+E[X; X < M] + 1/3``; exact to a few 1e-4 for sigma >= 0.3)."""
        from scipy.stats import norm
        mu, s, big = self.mu, self.sigma, float(self.max_value)
        z = (math.log(big) - mu) / s
        below = norm.cdf(z)
        e1 = math.exp(mu + s * s / 2.0) * norm.cdf(z - s)
        e2 = math.exp(2.0 * mu + 2.0 * s * s) * norm.cdf(z - 2.0 * s)
        tail = 1.0 - below
        m1 = e1 + 0.5 * below + big * tail
        m2 = e2 + e1 + below / 3.0 + big * big * tail
        return float(m1), float(m2)


@dataclass(frozen=True)
class Empirical(Distribution):
    """Resample observed values with replacement."""

    values: tuple[int, ...]

    def sample(self, rng, n):
        arr = np.asarray(self.values, dtype=np.int64)
        return arr[rng.integers(0, len(arr), size=n)]

    @property
    def mean(self):
        return float(np.mean(self.values))

    @property
    def var(self):
        return float(np.var(self.values))
