"""Fitting demand to real traces: token-length distributions and arrival burstiness.

Token lengths are positive integers, so every candidate is fitted as a *discrete*
distribution on ``{1, ..., max_tokens}`` by maximum likelihood on the exact pmf:

=============  ==========================  =============================================
family         parameters                  integer length ``N``
=============  ==========================  =============================================
``lognormal``  ``mu, sigma`` (of log x)    ``ceil(X)``, X lognormal, clipped to [1, max]
``gamma``      ``shape, scale``            ``ceil(X)``, X gamma, clipped
``weibull``    ``shape, scale``            ``ceil(X)``, X Weibull, clipped
``negbinom``   ``r, p``                    ``1 + Y``, Y negative binomial (failures before
                                           the r-th success), clipped
=============  ==========================  =============================================

Clipping puts the mass above ``max_tokens`` on ``max_tokens`` (a censored likelihood: the
Azure conversation service caps outputs at 1000 tokens).  ``ceil`` is the same convention
as :class:`sim.demand.distributions.LogNormalInt`.  The goodness-of-fit table per family gives the
discrete Kolmogorov-Smirnov distance ``sup_k |F_n(k) - F(k)|``, a Pearson chi-square on
data-quantile bins (expected counts >= 5), AIC/BIC and the model-vs-data mean and quantiles.
With 10^4 rows every p-value is tiny for every family (real data are not a textbook law);
the KS distance and the quantile errors are the effect sizes to read.

Burstiness: :func:`dispersion_index` is the index of dispersion of binned counts around a
moving-average trend (1 for a Poisson process, > 1 overdispersed); :func:`fit_mmpp` fits
the relative rate variance and switching rate of a two-state Markov modulation to the index
at several window widths.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

from sim.demand.distributions import Distribution

FAMILIES = ("lognormal", "gamma", "weibull", "negbinom")
PARAM_NAMES = {
    "lognormal": ("mu", "sigma"),
    "gamma": ("shape", "scale"),
    "weibull": ("shape", "scale"),
    "negbinom": ("r", "p"),
}


def _frozen(family: str, params) -> "stats.rv_frozen":
    a, b = params
    if family == "lognormal":
        return stats.lognorm(s=b, scale=math.exp(a))
    if family == "gamma":
        return stats.gamma(a, scale=b)
    if family == "weibull":
        return stats.weibull_min(a, scale=b)
    if family == "negbinom":
        return stats.nbinom(a, b, loc=1)
    raise ValueError(f"unknown family {family!r}; allowed: {', '.join(FAMILIES)}")


def discrete_cdf(family: str, params, k: np.ndarray, max_tokens: int) -> np.ndarray:
    """P(N <= k) for integer ``k`` (1 at and above ``max_tokens``)."""
    k = np.asarray(k, dtype=np.float64)
    d = _frozen(family, params)
    c = d.cdf(k)  # continuous: P(X <= k) = P(ceil X <= k); negbinom (loc=1): P(1+Y <= k)
    c = np.where(k < 1, 0.0, c)
    return np.where(k >= max_tokens, 1.0, c)


def discrete_logpmf(family: str, params, k: np.ndarray, max_tokens: int) -> np.ndarray:
    """log P(N = k), k integer in [1, max_tokens]; accurate in both tails."""
    k = np.asarray(k, dtype=np.float64)
    d = _frozen(family, params)
    lo = np.where(k <= 1, -np.inf, k - 1)  # N=1 collects X <= 1 (incl. X <= 0 for none of ours)
    hi = k
    c_lo, c_hi = d.cdf(np.maximum(lo, -1e300)), d.cdf(hi)
    c_lo = np.where(k <= 1, 0.0, c_lo)
    s_lo, s_hi = d.sf(np.maximum(lo, -1e300)), d.sf(hi)
    s_lo = np.where(k <= 1, 1.0, s_lo)
    p = np.where(c_hi < 0.5, c_hi - c_lo, s_lo - s_hi)
    p = np.where(k >= max_tokens, s_lo, p)  # censored top: everything above max lands on max
    with np.errstate(divide="ignore"):
        return np.log(np.maximum(p, 1e-300))


@dataclass(frozen=True)
class DiscretisedLength(Distribution):
    """A fitted token-length law (see the module table); moments computed exactly from the
    pmf on ``1..max_tokens``."""

    family: str
    params: tuple[float, float]
    max_tokens: int

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"unknown family {self.family!r}; allowed: {', '.join(FAMILIES)}")
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        a, b = self.params
        if self.family == "negbinom":
            x = 1 + rng.negative_binomial(a, b, size=n)
            return np.minimum(x, self.max_tokens).astype(np.int64)
        if self.family == "lognormal":
            x = rng.lognormal(a, b, size=n)
        elif self.family == "gamma":
            x = rng.gamma(a, b, size=n)
        else:
            x = b * rng.weibull(a, size=n)
        return np.clip(np.ceil(x), 1, self.max_tokens).astype(np.int64)

    def pmf(self) -> np.ndarray:
        """P(N = k) for k = 1..max_tokens (index 0 is k = 1)."""
        k = np.arange(1, self.max_tokens + 1)
        return np.exp(discrete_logpmf(self.family, self.params, k, self.max_tokens))

    def _moments(self) -> tuple[float, float]:
        cached = self.__dict__.get("_mom")
        if cached is None:
            p = self.pmf()
            p = p / p.sum()
            k = np.arange(1, self.max_tokens + 1, dtype=np.float64)
            m = float(np.dot(p, k))
            cached = (m, float(np.dot(p, (k - m) ** 2)))
            object.__setattr__(self, "_mom", cached)
        return cached

    @property
    def mean(self) -> float:
        return self._moments()[0]

    @property
    def var(self) -> float:
        return self._moments()[1]

    def quantile(self, q: float) -> int:
        k = np.arange(1, self.max_tokens + 1)
        c = discrete_cdf(self.family, self.params, k, self.max_tokens)
        return int(k[min(np.searchsorted(c, q), len(k) - 1)])


# ------------------------------------------------------------------ fitting
def _start(family: str, x: np.ndarray) -> tuple[float, float]:
    xc = np.maximum(x - 0.5, 0.5)  # ceil convention: a continuous X in (k-1, k] ~ k - 0.5
    m, v = float(xc.mean()), float(xc.var())
    if family == "lognormal":
        lx = np.log(xc)
        return float(lx.mean()), max(float(lx.std()), 1e-3)
    if family == "gamma":
        shape = m * m / v
        return shape, m / shape
    if family == "weibull":
        # moment-free start: fit on log scale (Gumbel of log x): sd(log x) = pi / (c sqrt 6)
        lx = np.log(xc)
        c = math.pi / (math.sqrt(6.0) * max(float(lx.std()), 1e-3))
        scale = math.exp(float(lx.mean()) + 0.5772156649 / c)
        return c, scale
    if family == "negbinom":
        y = x - 1.0
        my, vy = float(y.mean()), float(y.var())
        if vy <= my:
            vy = my * 1.01 + 1e-6
        p = my / vy
        return my * p / (1 - p), p
    raise ValueError(family)


def _to_free(family, params):
    a, b = params
    if family == "lognormal":
        return np.array([a, math.log(b)])
    if family == "negbinom":
        return np.array([math.log(a), math.log(b / (1 - b))])
    return np.array([math.log(a), math.log(b)])


def _from_free(family, z):
    if family == "lognormal":
        return float(z[0]), float(math.exp(z[1]))
    if family == "negbinom":
        return float(math.exp(z[0])), float(1.0 / (1.0 + math.exp(-z[1])))
    return float(math.exp(z[0])), float(math.exp(z[1]))


@dataclass(frozen=True)
class FitResult:
    family: str
    params: tuple[float, float]
    max_tokens: int
    n: int
    nll: float
    aic: float
    bic: float
    ks: float
    chi2: float
    chi2_df: int
    chi2_p: float
    mean_data: float
    mean_model: float
    quantiles_data: dict
    quantiles_model: dict

    def distribution(self) -> DiscretisedLength:
        return DiscretisedLength(self.family, self.params, self.max_tokens)

    def row(self) -> dict:
        d = {"family": self.family}
        for name, v in zip(PARAM_NAMES[self.family], self.params):
            d[f"param_{name}"] = v
        d.update({
            "n": self.n, "max_tokens": self.max_tokens, "aic": self.aic, "bic": self.bic,
            "ks": self.ks, "chi2": self.chi2, "chi2_df": self.chi2_df, "chi2_p": self.chi2_p,
            "mean_data": self.mean_data, "mean_model": self.mean_model,
        })
        for q in self.quantiles_data:
            d[f"q{q}_data"] = self.quantiles_data[q]
            d[f"q{q}_model"] = self.quantiles_model[q]
        return d


QUANTILES = (50, 90, 99)


def ks_distance(values: np.ndarray, cdf_at_k: np.ndarray) -> float:
    """Discrete KS distance: ``max_k |F_n(k) - F(k)|`` over k = 1..len(cdf_at_k)."""
    kmax = len(cdf_at_k)
    counts = np.bincount(np.clip(values, 1, kmax), minlength=kmax + 1)[1:]
    ecdf = np.cumsum(counts) / len(values)
    return float(np.max(np.abs(ecdf - cdf_at_k)))


def chi_square(values: np.ndarray, pmf: np.ndarray, n_params: int, n_bins: int = 20) -> tuple[float, int, float]:
    """Pearson chi-square on bins at the data's quantiles (integer edges, ties kept together),
    merged until every expected count is >= 5.  Returns (statistic, df, p-value)."""
    n = len(values)
    kmax = len(pmf)
    counts = np.bincount(np.clip(values, 1, kmax), minlength=kmax + 1)[1:].astype(np.float64)
    edges = np.unique(np.quantile(values, np.linspace(0, 1, n_bins + 1)[1:-1], method="inverted_cdf").astype(np.int64))
    # bins: [1, e0], (e0, e1], ..., (e_last, kmax]
    cuts = np.r_[0, edges[(edges >= 1) & (edges < kmax)], kmax]
    obs = np.add.reduceat(counts, cuts[:-1])[: len(cuts) - 1]
    exp = np.add.reduceat(pmf, cuts[:-1])[: len(cuts) - 1] * n
    obs_m, exp_m = [], []
    o_acc = e_acc = 0.0
    for o, e in zip(obs, exp):
        o_acc += o
        e_acc += e
        if e_acc >= 5:
            obs_m.append(o_acc)
            exp_m.append(e_acc)
            o_acc = e_acc = 0.0
    if e_acc > 0 and exp_m:
        obs_m[-1] += o_acc
        exp_m[-1] += e_acc
    obs_a, exp_a = np.asarray(obs_m), np.asarray(exp_m)
    stat = float(np.sum((obs_a - exp_a) ** 2 / exp_a))
    df = max(1, len(obs_a) - 1 - n_params)
    return stat, df, float(stats.chi2.sf(stat, df))


def fit_length(values, family: str, max_tokens: int | None = None) -> FitResult:
    """Maximum-likelihood fit of one family to integer token counts (>= 1)."""
    x = np.asarray(values, dtype=np.int64)
    if x.ndim != 1 or len(x) < 10 or x.min() < 1:
        raise ValueError("need at least 10 token counts, all >= 1")
    kmax = int(max_tokens if max_tokens is not None else x.max())
    if kmax < x.max():
        raise ValueError(f"max_tokens {kmax} is below the largest value {x.max()}")
    uk, cnt = np.unique(x, return_counts=True)

    def nll(z):
        try:
            params = _from_free(family, z)
        except OverflowError:
            return 1e300
        v = -float(np.dot(cnt, discrete_logpmf(family, params, uk, kmax)))
        return v if math.isfinite(v) else 1e300

    z0 = _to_free(family, _start(family, x.astype(np.float64)))
    res = optimize.minimize(nll, z0, method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-6, "maxiter": 2000})
    res = optimize.minimize(nll, res.x, method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-8, "maxiter": 2000})
    params = _from_free(family, res.x)
    n = len(x)
    f = float(res.fun)
    dist = DiscretisedLength(family, params, kmax)
    k = np.arange(1, kmax + 1)
    cdf = discrete_cdf(family, params, k, kmax)
    pmf = dist.pmf()
    chi2, df, chi2_p = chi_square(x, pmf, 2)
    qd = {q: int(np.quantile(x, q / 100.0, method="inverted_cdf")) for q in QUANTILES}
    qm = {q: dist.quantile(q / 100.0) for q in QUANTILES}
    return FitResult(
        family=family, params=params, max_tokens=kmax, n=n, nll=f,
        aic=2 * 2 + 2 * f, bic=2 * math.log(n) + 2 * f,
        ks=ks_distance(x, cdf), chi2=chi2, chi2_df=df, chi2_p=chi2_p,
        mean_data=float(x.mean()), mean_model=dist.mean, quantiles_data=qd, quantiles_model=qm,
    )


def fit_all(values, families=FAMILIES, max_tokens: int | None = None) -> dict[str, FitResult]:
    """Fit every family; the caller picks (e.g. by AIC: :func:`best_by_aic`)."""
    return {f: fit_length(values, f, max_tokens) for f in families}


def best_by_aic(fits: dict[str, FitResult]) -> str:
    return min(fits, key=lambda f: fits[f].aic)


# ------------------------------------------------------------------ burstiness
def dispersion_index(counts, trend_bins: int | None = 61) -> float:
    """Index of dispersion of binned counts around a centred moving-average trend.

    ``D = mean_i (c_i - e_i)^2 / e_i * w/(w-1)`` over the bins with a full window, where
    ``e_i`` is the centred moving average of ``trend_bins`` (odd) bins and ``w/(w-1)``
    corrects for the bin's own count being part of its trend (for i.i.d. Poisson counts
    ``E (c - e)^2 = lambda (1 - 1/w)``).  ``trend_bins=None`` uses the overall mean (a
    stationary series).  Poisson counts give D ~ 1; overdispersed counts D > 1.
    """
    c = np.asarray(counts, dtype=np.float64)
    if trend_bins is None:
        e = np.full_like(c, c.mean())
        w = len(c)
        r = c
    else:
        w = int(trend_bins)
        if w < 3 or w % 2 == 0 or len(c) < w:
            raise ValueError("trend_bins must be odd, >= 3 and at most the number of bins")
        k = np.ones(w) / w
        e = np.convolve(c, k, mode="valid")
        h = w // 2
        r = c[h: len(c) - h]
    ok = e > 0
    return float(np.mean((r[ok] - e[ok]) ** 2 / e[ok]) * w / (w - 1))


def dispersion_curve(counts_per_bin, bin_s: float, windows_bins=(1, 2, 3, 5, 10), trend_s: float = 3660.0) -> dict[int, float]:
    """Index of dispersion at several window widths (aggregating ``windows_bins`` bins), each
    against a centred moving-average trend spanning about ``trend_s``."""
    c = np.asarray(counts_per_bin, dtype=np.float64)
    out = {}
    for wb in windows_bins:
        m = len(c) // wb
        agg = c[: m * wb].reshape(m, wb).sum(axis=1)
        tb = int(round(trend_s / (bin_s * wb)))
        tb += 1 - tb % 2
        out[int(wb)] = dispersion_index(agg, max(3, tb))
    return out


def mmpp_index(window_s, mean_rate_per_s: float, rel_var: float, switch_rate_per_s: float):
    """Index of dispersion of a stationary MMPP with relative rate variance ``rel_var`` and
    total switching rate ``s``: ``1 + 2 lambda v / s * (1 - (1 - e^{-sT})/(sT))``."""
    x = switch_rate_per_s * np.asarray(window_s, dtype=np.float64)
    g = 1.0 - (1.0 - np.exp(-x)) / x
    return 1.0 + 2.0 * mean_rate_per_s * rel_var / switch_rate_per_s * g


def fit_mmpp(curve: dict[int, float], bin_s: float, mean_rate_per_s: float) -> tuple[float, float]:
    """Least-squares fit of (relative rate variance v, switching rate s per second) to an
    index-of-dispersion curve (relative errors, log-parametrised)."""
    T = np.array(sorted(curve), dtype=np.float64) * bin_s
    D = np.array([curve[k] for k in sorted(curve)])

    def resid(z):
        v, s = math.exp(z[0]), math.exp(z[1])
        return (mmpp_index(T, mean_rate_per_s, v, s) - D) / D

    v0 = max((D[0] - 1.0) / (mean_rate_per_s * T[0]), 1e-6)
    best = None
    for s0 in (1.0 / 30, 1.0 / 300, 1.0 / 3000):
        r = optimize.least_squares(resid, [math.log(v0), math.log(s0)], method="lm")
        if best is None or r.cost < best.cost:
            best = r
    return math.exp(best.x[0]), math.exp(best.x[1])


def mmpp_from_moments(rel_var: float, switch_rate_per_s: float, burst_share: float) -> tuple[float, float, float]:
    """Two-state MMPP with the given relative rate variance and switching rate, and a chosen
    stationary share of time in the burst state.  Returns (multiplier, mean_burst_s,
    mean_gap_s) for :class:`sim.demand.arrivals.MarkovBurst`."""
    pb = burst_share
    y = math.sqrt(rel_var / (pb * (1 - pb)))
    if y * pb >= 1:
        raise ValueError("relative variance too large for this burst share")
    mult = (1 + y * (1 - pb)) / (1 - y * pb)
    s = switch_rate_per_s
    return mult, 1.0 / ((1 - pb) * s), 1.0 / (pb * s)


def interarrival_stats(times_s) -> dict:
    """Squared coefficient of variation of inter-arrival gaps (1 for Poisson) and the share of
    zero gaps (ties at the trace's time resolution)."""
    t = np.sort(np.asarray(times_s, dtype=np.float64))
    g = np.diff(t)
    return {"n": int(len(t)), "mean_gap_s": float(g.mean()), "cv2": float(g.var() / g.mean() ** 2),
            "zero_gap_share": float(np.mean(g == 0))}
