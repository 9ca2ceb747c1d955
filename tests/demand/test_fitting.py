"""Length fits recover known parameters; GOF statistics and the dispersion index behave."""
import math

import numpy as np
import pytest
from scipy import stats

from sim.demand.arrivals import MarkovBurst
from sim.demand.verticals import LENGTH_SOURCES, VERTICALS, length_distribution, profile
from sim.demand.fitting import (DiscretisedLength, best_by_aic, chi_square, dispersion_curve, dispersion_index, fit_all, fit_length, fit_mmpp, ks_distance, mmpp_from_moments, mmpp_index)

# (family, true params, relative tolerance per parameter ~ 5 seed-to-seed sd at n = 20,000)
CASES = [
    ("lognormal", (6.0, 0.8), (0.006, 0.025)),
    ("gamma", (1.5, 400.0), (0.03, 0.04)),
    ("weibull", (1.3, 500.0), (0.025, 0.025)),
    ("negbinom", (2.0, 0.01), (0.03, 0.03)),
]


@pytest.mark.parametrize("family,params,tol", CASES)
def test_fit_recovers_known_parameters(family, params, tol):
    x = DiscretisedLength(family, params, 10**6).sample(np.random.default_rng(42), 20_000)
    r = fit_length(x, family)
    for got, want, t in zip(r.params, params, tol):
        assert got == pytest.approx(want, rel=t), (family, r.params)
    assert r.mean_model == pytest.approx(x.mean(), rel=0.03)
    # KS distance of the right law is at the sampling level (~1.36/sqrt(n) at 5%)
    assert r.ks < 1.63 / math.sqrt(len(x))
    assert r.chi2_p > 1e-3


def test_censored_fit_recovers_parameters_under_a_cap():
    """Outputs capped at 1000 tokens (Azure conversation): the censored likelihood still
    recovers the uncapped law."""
    d = DiscretisedLength("lognormal", (5.5, 1.0), 1000)
    x = d.sample(np.random.default_rng(7), 20_000)
    assert np.mean(x == 1000) > 0.05
    r = fit_length(x, "lognormal", max_tokens=1000)
    assert r.params[0] == pytest.approx(5.5, abs=0.04) and r.params[1] == pytest.approx(1.0, abs=0.03)
    naive = stats.norm.fit(np.log(x))  # ignoring the cap biases both parameters
    assert naive[1] < 0.95


def test_aic_picks_the_generating_family():
    x = DiscretisedLength("lognormal", (6.0, 0.8), 10**6).sample(np.random.default_rng(1), 20_000)
    fits = fit_all(x, ("lognormal", "gamma", "weibull"))
    assert best_by_aic(fits) == "lognormal"
    assert fits["gamma"].aic - fits["lognormal"].aic > 50
    y = DiscretisedLength("weibull", (0.8, 300.0), 10**4).sample(np.random.default_rng(2), 10_000)
    assert best_by_aic(fit_all(y, ("lognormal", "gamma", "weibull"))) == "weibull"


def test_wrong_law_has_large_ks_and_tiny_chi2_p():
    x = DiscretisedLength("lognormal", (6.0, 1.2), 10**5).sample(np.random.default_rng(3), 20_000)
    wrong = DiscretisedLength("gamma", (4.0, 200.0), 10**5)
    k = np.arange(1, 10**5 + 1)
    from sim.demand.fitting import discrete_cdf
    assert ks_distance(x, discrete_cdf("gamma", (4.0, 200.0), k, 10**5)) > 0.1
    assert chi_square(x, wrong.pmf(), 2)[2] < 1e-10


@pytest.mark.parametrize("family,params", [(c[0], c[1]) for c in CASES])
def test_pmf_sums_to_one_and_moments_match_samples(family, params):
    d = DiscretisedLength(family, params, 5000)
    assert d.pmf().sum() == pytest.approx(1.0, abs=1e-9)
    x = d.sample(np.random.default_rng(9), 200_000)
    assert x.min() >= 1 and x.max() <= 5000
    assert x.mean() == pytest.approx(d.mean, rel=4 * math.sqrt(d.var / len(x)) / d.mean)


def test_dispersion_index_poisson_and_overdispersed():
    rng = np.random.default_rng(0)
    n = 10_080
    flat = rng.poisson(1000.0, n)
    assert dispersion_index(flat) == pytest.approx(1.0, abs=0.06)
    assert dispersion_index(flat, None) == pytest.approx(1.0, abs=0.06)
    # a strong diurnal trend: the moving-average trend removes it, the global mean does not
    lam = 1000.0 * (1.0 + 0.6 * np.sin(2 * np.pi * np.arange(n) / 1440.0))
    diurnal = rng.poisson(lam)
    assert dispersion_index(diurnal) == pytest.approx(1.0, abs=0.06)
    assert dispersion_index(diurnal, None) > 100
    # gamma-mixed Poisson, mean 1000, rate cv 0.1 per bin: index = 1 + 1000 * 0.01 = 11
    over = rng.poisson(rng.gamma(100.0, 10.0, n))
    assert dispersion_index(over) == pytest.approx(11.0, rel=0.1)
    curve = dispersion_curve(flat, 60.0, (1, 2, 5, 10))
    assert all(v == pytest.approx(1.0, abs=0.15) for v in curve.values())
    with pytest.raises(ValueError):
        dispersion_index(flat, 60)


def test_mmpp_fit_round_trip():
    lam, v, s = 30.0, 0.01, 1 / 400.0
    windows = (1, 2, 3, 5, 10)
    curve = {w: float(mmpp_index(w * 60.0, lam, v, s)) for w in windows}
    v_hat, s_hat = fit_mmpp(curve, 60.0, lam)
    assert v_hat == pytest.approx(v, rel=1e-3) and s_hat == pytest.approx(s, rel=1e-3)
    mult, mb, mg = mmpp_from_moments(v, s, 0.1)
    b = MarkovBurst(mult, mb, mg)
    assert b.relative_rate_variance == pytest.approx(v) and b.switching_rate_per_s == pytest.approx(s)
    assert b.index_of_dispersion(lam, 300.0) == pytest.approx(curve[5])


def test_committed_fits_load_for_every_source_and_vertical():
    for s in LENGTH_SOURCES:
        for fam in ("best", "lognormal", "gamma", "weibull", "negbinom", "empirical"):
            d = length_distribution(s, fam)
            assert d.mean > 1
    assert length_distribution("mooncake-conv-prompt", "best", 30720).sample(np.random.default_rng(0), 1000).max() <= 30720
    for v in VERTICALS:
        m = profile(v)
        assert m.shape == (168,) and m.mean() == pytest.approx(1.0) and m.min() > 0
    pub, gen = profile("public_sector"), profile("general")
    office = np.zeros(168, bool)
    for d in range(5):
        office[d * 24 + 7: d * 24 + 17] = True
    # office-hours share rises from the base profile to the public-sector transformation
    assert pub[office].sum() / pub.sum() > gen[office].sum() / gen.sum() + 0.2


def test_weekly_profile_fit_matches_published_checks():
    """The hour-of-week fit reproduces the independent statistics quoted in
    models/traces/azure_llm_2024/PROVENANCE.md (weekday/weekend hourly means, peak/mean,
    peak/trough of the hourly totals)."""
    from sim.calibration.demand_fit import fit_profiles
    from sim.core.resources import models_dir
    prof, info, minutes = fit_profiles(models_dir() / "traces")
    assert info["azure-code"]["weekend_weekday_ratio"] == pytest.approx(39572 / 124202, rel=1e-4)
    assert info["azure-conv"]["weekend_weekday_ratio"] == pytest.approx(105255 / 185431, rel=1e-4)
    assert prof["azure-code"].max() == pytest.approx(3.01, abs=0.005)
    assert prof["azure-conv"].max() == pytest.approx(1.66, abs=0.005)
    assert info["azure-code"]["peak_trough_ratio"] == pytest.approx(33.1, abs=0.05)
    assert info["azure-conv"]["peak_trough_ratio"] == pytest.approx(3.6, abs=0.05)
    assert info["azure-code"]["first_hour_of_week"] == 96 and info["azure-conv"]["first_hour_of_week"] == 144
    assert minutes["azure-code"].sum() == 16_803_695 and minutes["azure-conv"].sum() == 27_303_999
    # the committed table is what the fit gives
    committed = np.array([profile("azure-code"), profile("azure-conv")])
    assert np.allclose(committed, [prof["azure-code"], prof["azure-conv"]], rtol=1e-5)
