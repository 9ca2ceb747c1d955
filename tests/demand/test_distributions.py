"""Token-length distributions: each sample mean (and variance) agrees with its analytic
moment within a confidence interval over many draws; supports and clipping hold; the same
seed gives the same draws."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from sim.demand.distributions import Constant, Empirical, Geometric, LogNormalInt, UniformInt

N = 200_000
Z = 4.5    # two-sided tail ~7e-6 per check: a correct distribution essentially never fails


def assert_mean(x: np.ndarray, mean: float, var: float, offset_range=(0.0, 0.0)):
    """Sample mean within Z standard errors of ``mean`` (+ a known bias in ``offset_range``)."""
    se = math.sqrt(var / len(x))
    m = float(x.mean())
    assert mean + offset_range[0] - Z * se <= m <= mean + offset_range[1] + Z * se, (m, mean, se)


def assert_var(x: np.ndarray, var: float):
    # standard error of the sample variance: sqrt((m4 - var^2) / n), m4 from the sample
    c = x - x.mean()
    se = math.sqrt(max(float((c ** 4).mean()) - var ** 2, 0.0) / len(x))
    assert abs(float(x.var()) - var) <= Z * se + 1e-12, (float(x.var()), var, se)


@pytest.mark.parametrize("mean", [1.0, 1.5, 20.0, 300.0])
def test_geometric(mean):
    d = Geometric(mean)
    x = d.sample(np.random.default_rng(1), N)
    assert x.dtype == np.int64 and x.min() >= 1
    assert d.mean == mean and d.var == pytest.approx((1 - 1 / mean) * mean ** 2)
    assert_mean(x, d.mean, d.var)
    assert_var(x, d.var)


@pytest.mark.parametrize("low,high", [(1, 1), (1, 2), (5, 500), (1000, 1010)])
def test_uniform_int(low, high):
    d = UniformInt(low, high)
    x = d.sample(np.random.default_rng(2), N)
    assert x.min() == low and x.max() == high      # both ends inclusive and reached
    assert_mean(x, d.mean, d.var)
    assert_var(x, d.var)
    with np.errstate(divide="ignore", invalid="ignore"):
        assert d.var == pytest.approx(stats.randint(low, high + 1).var())


def test_constant():
    d = Constant(77)
    x = d.sample(np.random.default_rng(3), 1000)
    assert (x == 77).all() and d.mean == 77.0 and d.var == 0.0


@pytest.mark.parametrize("mu,sigma", [(3.0, 0.5), (5.5, 0.9), (7.0, 1.2)])
def test_lognormal_int_unclipped(mu, sigma):
    d = LogNormalInt(mu, sigma)
    x = d.sample(np.random.default_rng(4), N)
    assert x.min() >= 1
    assert d.mean == pytest.approx(stats.lognorm(sigma, scale=math.exp(mu)).mean())
    assert d.var == pytest.approx(stats.lognorm(sigma, scale=math.exp(mu)).var())
    # the ceiling adds between 0 and 1 token to each draw (about a half on average)
    assert_mean(x, d.mean, d.var, offset_range=(0.0, 1.0))
    assert d.clip_probability < 1e-6


def test_lognormal_int_clipped_at_max():
    d = LogNormalInt(6.0, 1.0, max_value=1000)
    x = d.sample(np.random.default_rng(5), N)
    assert x.max() == 1000 and x.min() >= 1
    p = d.clip_probability
    assert p == pytest.approx(stats.norm.sf((math.log(1000) - 6.0) / 1.0))
    # share of draws at the cap: ceil(x) > 999 <=> x > 999, vs P(x > 1000) (a sliver of mass between)
    share = float((x == 1000).mean())
    se = math.sqrt(p * (1 - p) / N)
    p999 = float(stats.norm.sf((math.log(999) - 6.0) / 1.0))
    assert p - Z * se <= share <= p999 + Z * se
    # a lower cap pulls the sample mean under the unclipped mean
    assert x.mean() < d.mean


def test_lognormal_int_small_values_clip_to_one():
    x = LogNormalInt(-3.0, 0.5).sample(np.random.default_rng(6), 10_000)
    assert (x == 1).all()


def test_empirical():
    vals = (3, 3, 8, 100, 41)
    d = Empirical(vals)
    x = d.sample(np.random.default_rng(7), N)
    assert set(np.unique(x)) == set(vals)
    assert d.mean == pytest.approx(np.mean(vals)) and d.var == pytest.approx(np.var(vals))
    assert_mean(x, d.mean, d.var)
    # each distinct value with its observed frequency
    for v in set(vals):
        p = vals.count(v) / len(vals)
        assert abs((x == v).mean() - p) < Z * math.sqrt(p * (1 - p) / N)


@pytest.mark.parametrize("d", [Geometric(40.0), UniformInt(1, 99), LogNormalInt(5.0, 1.0, 2000),
                               Empirical((1, 2, 9))])
def test_same_seed_same_draws(d):
    a = d.sample(np.random.default_rng(123), 5000)
    b = d.sample(np.random.default_rng(123), 5000)
    c = d.sample(np.random.default_rng(124), 5000)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("mu,sigma,cap", [(4.9, 1.0, 1000), (6.7, 0.8, 14050), (5.0, 0.6, 1 << 20), (6.0, 1.2, 2000)])
def test_lognormal_sampled_moments_match_its_clipped_rounded_draws(mu, sigma, cap):
    """``sampled_moments`` of ``min(ceil X, M)`` (the fluid capacity rule's E[o], E[o^2]) against
    400,000 draws: within 4 standard errors.  The continuous moments (``mean``, ``var``) miss the
    clip: at mu 4.9, sigma 1, M 1,000 the second moment is 33 % too large."""
    d = LogNormalInt(mu, sigma, cap)
    x = d.sample(np.random.default_rng(11), 400_000).astype(float)
    m1, m2 = d.sampled_moments()
    n = len(x)
    assert abs(m1 - x.mean()) < 4 * x.std() / math.sqrt(n)
    assert abs(m2 - (x * x).mean()) < 4 * (x * x).std() / math.sqrt(n)
    if cap == 1000:
        assert d.var + d.mean ** 2 > 1.3 * m2
    for other in (Constant(7), UniformInt(3, 9)):   # no clip: E[X^2] = var + mean^2
        assert other.sampled_moments() == pytest.approx((other.mean, other.var + other.mean ** 2))
