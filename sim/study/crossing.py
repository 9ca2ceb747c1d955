"""Where does a replicated outcome cross a threshold?  A coarse grid, then bisection.

The gap tipping-point experiment (experiments/gap_tipping_point.py) asks at which
gap-closing speed the 36-month cumulative margin turns negative.  Each point ``x`` of the
search is a set of replications (paired seeds across points); the search works on their
mean (with a Student-t interval for the report):

1. every ``grid`` point is evaluated;
2. the bracket is the first pair of neighbours (in increasing ``x``) whose means straddle
   the threshold: ``mean(a) >= threshold > mean(b)`` -- the lowest ``x`` at which the mean
   falls under it (a curve that crosses more than once, from noise, reports its first
   crossing);
3. up to ``bisect_steps`` midpoints of the bracket are evaluated (geometric midpoints:
   ``x`` is a speed, a ratio; ``0`` and ``inf`` are allowed as the grid's ends, with
   midpoints ``b / 2`` and ``2 a``), each narrowing the bracket;
4. the crossing is the threshold point of the straight line between the bracket's means
   (in ``log x``; in ``x`` when ``a = 0``; none when ``b = inf``).

No crossing within the searched range is a result too: ``status`` is ``"none"`` (the mean
stays at or above the threshold at every point) or ``"below"`` (it is under it already at the
lowest point).  The 95 % interval is summarised by ``positive_up_to`` (the largest ``x`` up to
which every evaluated point's interval lies above the threshold) and ``negative_from`` (the
smallest ``x`` from which every point's interval lies below it).

:class:`CrossingSearch` is driven from outside (``pending()`` -> evaluate -> ``add()``), so an
experiment can batch the points of several searches onto one executor.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from sim.core.stats import mean_ci


@dataclass(frozen=True)
class Point:
    x: float
    mean: float
    half_width: float      # NaN under two replications
    n: int
    bisection: bool        # added by the bisection (not a grid point)


@dataclass(frozen=True)
class Crossing:
    status: str            # "crossing" | "none" (never under the threshold) | "below" (under it at the lowest x)
    x: float               # the crossing estimate (NaN unless status == "crossing" and the bracket is finite)
    x_low: float           # bracket: the last x whose mean is >= threshold (NaN if none)
    x_high: float          # bracket: the first x whose mean is < threshold (NaN if none)
    positive_up_to: float  # every point's interval above the threshold for x <= this (NaN: not at the lowest x)
    negative_from: float   # every point's interval below the threshold for x >= this (NaN: not at the highest x)
    min_x: float           # where the mean is lowest, and that mean with its half-width
    min_mean: float
    min_half_width: float
    points: tuple[Point, ...] = field(repr=False)


def midpoint(a: float, b: float) -> float:
    """The geometric midpoint of a bracket of speeds ``0 <= a < b <= inf``."""
    if not 0.0 <= a < b:
        raise ValueError(f"bracket ({a}, {b}): need 0 <= a < b")
    if a == 0.0 and math.isinf(b):
        return 1.0
    if a == 0.0:
        return b / 2.0
    if math.isinf(b):
        return 2.0 * a
    return math.sqrt(a * b)


def interpolate(a: float, ma: float, b: float, mb: float, threshold: float = 0.0) -> float:
    """Where the straight line from (a, ma) to (b, mb) meets ``threshold``: in ``log x``
    for positive finite ends, in ``x`` when ``a = 0``, NaN when ``b = inf``."""
    if math.isinf(b) or ma == mb:
        return math.nan
    f = (ma - threshold) / (ma - mb)
    if a == 0.0:
        return a + f * (b - a)
    return math.exp(math.log(a) + f * (math.log(b) - math.log(a)))


class CrossingSearch:
    """A grid-then-bisection search for the first ``x`` where the mean outcome falls under
    ``threshold`` (see the module docstring)."""

    def __init__(self, grid, bisect_steps: int = 3, threshold: float = 0.0, level: float = 0.95):
        xs = sorted(float(x) for x in grid)
        if len(xs) < 2 or len(set(xs)) != len(xs) or xs[0] < 0.0:
            raise ValueError(f"grid {list(grid)}: need two or more distinct values >= 0")
        if bisect_steps < 0:
            raise ValueError(f"bisect_steps {bisect_steps}: must be >= 0")
        self.grid = tuple(xs)
        self.bisect_steps = int(bisect_steps)
        self.threshold = float(threshold)
        self.level = float(level)
        self.samples: dict[float, np.ndarray] = {}
        self._bisected = 0

    def add(self, x: float, samples) -> None:
        """The replications of point ``x`` (one value per seed)."""
        x = float(x)
        if x not in self.grid and x not in self.samples:
            self._bisected += 1
        self.samples[x] = np.asarray(samples, dtype=float).ravel()

    def _means(self) -> list[tuple[float, float]]:
        return [(x, float(np.mean(v))) for x, v in sorted(self.samples.items())]

    def bracket(self) -> tuple[float, float] | None:
        """The first (a, b) with mean(a) >= threshold > mean(b), over the points evaluated so far."""
        pts = self._means()
        for (a, ma), (b, mb) in zip(pts, pts[1:]):
            if ma >= self.threshold > mb:
                return a, b
        return None

    def pending(self) -> list[float]:
        """The points to evaluate next: the grid points not yet evaluated, else the
        bisection's next midpoint, else nothing (the search is done)."""
        missing = [x for x in self.grid if x not in self.samples]
        if missing:
            return missing
        if self._bisected >= self.bisect_steps:
            return []
        br = self.bracket()
        if br is None or self._means()[0][1] < self.threshold:
            return []
        m = midpoint(*br)
        return [] if m in self.samples else [m]

    def done(self) -> bool:
        return not self.pending()

    def points(self) -> tuple[Point, ...]:
        out = []
        for x, v in sorted(self.samples.items()):
            r = mean_ci(v, self.level)
            out.append(Point(x, r.mean, r.half_width, r.n, x not in self.grid))
        return tuple(out)

    def result(self) -> Crossing:
        pts = self.points()
        if not pts:
            raise ValueError("no point evaluated")
        thr = self.threshold
        means = [p.mean for p in pts]
        i_min = int(np.argmin(means))
        pos_up_to = math.nan
        for p in pts:                       # the interval above the threshold from the lowest x on
            if math.isfinite(p.half_width) and p.mean - p.half_width > thr:
                pos_up_to = p.x
            else:
                break
        neg_from = math.nan
        for p in reversed(pts):             # the interval below the threshold from the highest x down
            if math.isfinite(p.half_width) and p.mean + p.half_width < thr:
                neg_from = p.x
            else:
                break
        common = dict(positive_up_to=pos_up_to, negative_from=neg_from, min_x=pts[i_min].x,
                      min_mean=pts[i_min].mean, min_half_width=pts[i_min].half_width, points=pts)
        if pts[0].mean < thr:
            return Crossing("below", math.nan, math.nan, pts[0].x, **common)
        br = self.bracket()
        if br is None:
            return Crossing("none", math.nan, pts[-1].x, math.nan, **common)
        a, b = br
        ma = next(p.mean for p in pts if p.x == a)
        mb = next(p.mean for p in pts if p.x == b)
        return Crossing("crossing", interpolate(a, ma, b, mb, thr), a, b, **common)


def run_search(search: CrossingSearch, evaluate) -> Crossing:
    """Drive one search to its end with ``evaluate(x) -> samples`` (one value per seed)."""
    while True:
        todo = search.pending()
        if not todo:
            return search.result()
        for x in todo:
            search.add(x, evaluate(x))
