"""sim.core.stats.mean_ci: the Student-t interval against scipy, the NaN rules under two
values, dropping non-finite values, and clipping to a physical range."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from sim.core.stats import NON_NEGATIVE, UNIT_INTERVAL, mean_ci


@pytest.mark.parametrize("n", [2, 3, 5, 30])
@pytest.mark.parametrize("level", [0.9, 0.95, 0.99])
def test_t_interval_matches_scipy(n, level):
    x = np.random.default_rng(n).normal(10.0, 3.0, n)
    lo, hi = stats.t.interval(level, n - 1, loc=x.mean(), scale=stats.sem(x))
    r = mean_ci(x, level=level)
    assert r.n == n
    assert r.mean == pytest.approx(x.mean(), rel=1e-14)
    assert r.low == pytest.approx(lo, rel=1e-12)
    assert r.high == pytest.approx(hi, rel=1e-12)
    assert r.half_width == pytest.approx((hi - lo) / 2, rel=1e-12)


def test_accepts_lists_generators_and_arrays():
    vals = [1.0, 2.0, 4.0]
    a, b, c = mean_ci(vals), mean_ci(iter(vals)), mean_ci(np.array([[1.0, 2.0], [4.0, np.nan]]))
    assert a == b
    assert (c.mean, c.low, c.high, c.n) == (a.mean, a.low, a.high, a.n)


def test_nan_rules():
    empty = mean_ci([])
    assert empty.n == 0 and all(math.isnan(v) for v in empty[:4])
    only_nan = mean_ci([math.nan, math.inf, -math.inf])
    assert only_nan.n == 0 and math.isnan(only_nan.mean)
    one = mean_ci([3.5, math.nan])
    assert (one.mean, one.n) == (3.5, 1)
    assert math.isnan(one.low) and math.isnan(one.high) and math.isnan(one.half_width)
    two = mean_ci([1.0, math.nan, 3.0, math.inf])    # non-finite values dropped first
    assert two.n == 2 and two.mean == 2.0
    assert two.half_width == pytest.approx(stats.t.ppf(0.975, 1) * math.sqrt(2.0) / math.sqrt(2))


def test_zero_spread():
    r = mean_ci([0.7, 0.7, 0.7])
    assert [r.mean, r.low, r.high] == pytest.approx([0.7, 0.7, 0.7], abs=1e-14)
    assert r.half_width == pytest.approx(0.0, abs=1e-14)


def test_clipping_to_the_unit_interval_never_moves_the_mean():
    vals = [0.98, 1.0, 1.0, 0.99]
    raw = mean_ci(vals)
    clipped = mean_ci(vals, bounds=UNIT_INTERVAL)
    assert raw.high > 1.0
    assert clipped.high == 1.0 and clipped.low == raw.low
    assert clipped.mean == raw.mean and clipped.half_width == raw.half_width
    low_side = mean_ci([0.0, 0.0, 0.03], bounds=UNIT_INTERVAL)
    assert low_side.low == 0.0 and low_side.high < 1.0
    counts = mean_ci([0.0, 1.0, 0.0], bounds=NON_NEGATIVE)
    assert counts.low == 0.0 and counts.high == pytest.approx(mean_ci([0.0, 1.0, 0.0]).high)
    assert NON_NEGATIVE[1] == math.inf
