"""The one mean / confidence-interval helper of the project.

Every table that reports a mean over replications (sweeps, capacity search, experiments)
uses :func:`mean_ci`: the Student-t interval of the mean, with the same rules everywhere:

* non-finite values are dropped first;
* no value left: mean, low and high are NaN; one value: the mean, NaN bounds (an interval
  needs two replications);
* ``bounds`` clips the interval to the quantity's physical range (a utilisation or an
  attainment lies in [0, 1]; a count is >= 0): the mean itself is never clipped.

>>> r = mean_ci([0.98, 1.0, 1.0], bounds=(0.0, 1.0))
>>> round(r.mean, 4), r.high
(0.9933, 1.0)
>>> mean_ci([3.0]).n, mean_ci([3.0]).low
(1, nan)
"""
from __future__ import annotations

import math
from typing import Iterable, NamedTuple

import numpy as np
from scipy import stats

UNIT_INTERVAL = (0.0, 1.0)      # utilisations, attainments, shares
NON_NEGATIVE = (0.0, math.inf)  # counts, GPU-hours, latencies


class MeanCI(NamedTuple):
    mean: float
    low: float
    high: float
    half_width: float   # of the unclipped interval (NaN below two values)
    n: int


def mean_ci(values: Iterable[float], level: float = 0.95,
            bounds: tuple[float, float] | None = None) -> MeanCI:
    """Mean and two-sided Student-t ``level`` interval of the mean of ``values``."""
    v = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return MeanCI(math.nan, math.nan, math.nan, math.nan, 0)
    m = float(v.mean())
    if n < 2:
        return MeanCI(m, math.nan, math.nan, math.nan, 1)
    half = float(stats.t.ppf(0.5 + level / 2.0, n - 1) * v.std(ddof=1) / math.sqrt(n))
    lo, hi = m - half, m + half
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return MeanCI(m, lo, hi, half, n)
