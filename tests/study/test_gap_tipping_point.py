"""The tipping-point search (sim/study/crossing.py) on synthetic monotone curves, and the
gap-speed transform of experiments/gap_tipping_point.py."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from sim.study.crossing import CrossingSearch, interpolate, midpoint, run_search

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))

GRID = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, math.inf)


def curve(x0: float, noise: float = 0.0, reps: int = 5, seed: int = 0):
    """A margin falling with log speed, zero at ``x0``: 1 - log2(x / x0) (x = 0: 3 + log2 x0;
    x = inf: -5), plus paired noise (the same draws at every x: common random numbers)."""
    eps = np.random.default_rng(seed).normal(0.0, noise, reps)

    def f(x: float) -> np.ndarray:
        if x == 0.0:
            m = 1.0 + math.log2(x0) + 2.0
        elif math.isinf(x):
            m = -5.0
        else:
            m = -math.log2(x / x0)
        return m + eps
    return f


def test_finds_a_known_crossing():
    r = run_search(CrossingSearch(GRID, bisect_steps=4), curve(3.0))
    assert r.status == "crossing"
    assert r.x_low < 3.0 <= r.x_high
    assert r.x == pytest.approx(3.0, rel=1e-9)          # linear in log x: exact after interpolation
    assert sum(p.bisection for p in r.points) == 4      # the bisection narrowed the (2, 4) bracket
    assert r.x_high / r.x_low < 2.0 ** (1 / 8) + 1e-9


def test_noisy_crossing_within_the_bracket_and_intervals():
    r = run_search(CrossingSearch(GRID, bisect_steps=3), curve(3.0, noise=0.1, seed=4))
    assert r.status == "crossing"
    assert 2.0 < r.x < 4.5
    assert r.positive_up_to >= 1.0 and r.positive_up_to < r.x
    assert r.negative_from > r.x


def test_reports_none_when_the_curve_stays_positive():
    s = CrossingSearch(GRID, bisect_steps=3)
    r = run_search(s, lambda x: curve(3.0)(x) + 10.0)
    assert r.status == "none" and math.isnan(r.x) and math.isnan(r.x_high)
    assert len(r.points) == len(GRID)                     # nothing to bisect
    assert r.min_x == math.inf and r.min_mean == pytest.approx(5.0)
    assert r.positive_up_to == math.inf                   # every interval above zero


def test_reports_below_when_negative_from_the_lowest_point():
    r = run_search(CrossingSearch(GRID, bisect_steps=3), lambda x: curve(3.0)(x) - 20.0)
    assert r.status == "below" and r.x_high == 0.0 and len(r.points) == len(GRID)


def test_crossing_beyond_the_last_finite_point():
    r = run_search(CrossingSearch(GRID, bisect_steps=4), curve(100.0))
    assert r.status == "crossing"
    assert r.x_low == 64.0 and r.x_high == 128.0        # (8, inf): each step doubles, 16, 32, 64, 128
    assert r.x == pytest.approx(100.0)


def test_midpoint_and_interpolate():
    assert midpoint(2.0, 8.0) == pytest.approx(4.0)
    assert midpoint(0.0, 0.5) == 0.25 and midpoint(8.0, math.inf) == 16.0 and midpoint(0.0, math.inf) == 1.0
    with pytest.raises(ValueError):
        midpoint(2.0, 1.0)
    assert interpolate(1.0, 1.0, 4.0, -1.0) == pytest.approx(2.0)
    assert interpolate(0.0, 1.0, 2.0, -1.0) == pytest.approx(1.0)
    assert math.isnan(interpolate(1.0, 1.0, math.inf, -1.0))
    with pytest.raises(ValueError):
        CrossingSearch((1.0,))


def test_gap_speed_compresses_the_curves_in_time():
    from gap_tipping_point import with_gap_speed
    from sim.scenario.market import default_market_spec

    spec = default_market_spec()
    base = {c.name: c for c in spec.competitors}
    assert with_gap_speed(spec, 1.0) == spec
    fast = {c.name: c for c in with_gap_speed(spec, 2.0, competitors={"aws"}, verticals={"finance"}).competitors}
    for t in (0.0, 6.0, 12.0, 30.0):   # the curve at month t = the table's curve at month s t
        assert fast["aws"].sovereignty["finance"].fit(t) == pytest.approx(base["aws"].sovereignty["finance"].fit(2 * t))
    assert fast["aws"].sovereignty["healthcare"] == base["aws"].sovereignty["healthcare"]   # only the target moves
    assert fast["azure"] == base["azure"]
    never = {c.name: c for c in with_gap_speed(spec, 0.0).competitors}
    closed = {c.name: c for c in with_gap_speed(spec, math.inf).competitors}
    for v, cu in base["azure"].sovereignty.items():
        assert never["azure"].sovereignty[v].fit(36.0) == pytest.approx(cu.fit(0.0))   # frozen at month 0
        assert closed["azure"].sovereignty[v].fit(0.0) == pytest.approx(cu.fit_end)    # closed at month 0
    assert never["eu_alt"] == base["eu_alt"]            # not a hyperscaler: no gap to close
