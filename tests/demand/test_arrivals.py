"""Arrival processes: NHPP thinning reproduces its hour-of-week profile, MMPP bursts give the
theoretical dispersion, everything is lazy and deterministic."""
import math
import time

import numpy as np
import pytest
from scipy import stats

from sim.demand.arrivals import CHUNK, WEEK_S, MarkovBurst, NHPPProcess, PoissonProcess
from sim.demand.verticals import profile


def _all(proc, seed, horizon):
    ts = [t for t, _, _ in proc.chunks(np.random.default_rng(seed), horizon)]
    return np.concatenate(ts) if ts else np.empty(0)


def _hour_of_week_counts(t, start_how):
    h = (np.floor(t / 3600.0).astype(np.int64) + start_how) % 168
    return np.bincount(h, minlength=168)


def _profile_tests(counts, expected, alpha=0.01):
    """Chi-square over 168 bins and a Bonferroni check of every bin against its Poisson
    bounds; returns (chi2 p-value, number of bins outside their bounds)."""
    chi2 = float(np.sum((counts - expected) ** 2 / expected))
    p = float(stats.chi2.sf(chi2, len(counts)))
    a = alpha / len(counts)
    lo = stats.poisson.ppf(a / 2, expected)
    hi = stats.poisson.isf(a / 2, expected)
    outside = int(np.sum((counts < lo) | (counts > hi)))
    return p, outside


@pytest.mark.parametrize("start_how", [0, 37])
def test_nhpp_counts_per_hour_within_poisson_bounds(start_how):
    m = profile("azure-code")  # the most uneven fitted profile: peak/trough ~33
    rate, weeks = 0.05, 20
    proc = NHPPProcess(rate, tuple(m), start_hour_of_week=start_how)
    t = _all(proc, 11, weeks * WEEK_S)
    counts = _hour_of_week_counts(t, start_how)
    expected = rate * 3600.0 * weeks * m / m.mean()
    p, outside = _profile_tests(counts, expected)
    assert p > 1e-3, f"chi-square p={p:.2e}: counts per hour-of-week do not follow the profile"
    assert outside == 0
    # the same data tested against a profile shifted by one hour must be rejected: the test has power
    p_wrong, outside_wrong = _profile_tests(counts, np.roll(expected, 1))
    assert p_wrong < 1e-6 and outside_wrong > 10
    assert proc.expected_count(0.0, weeks * WEEK_S) == pytest.approx(expected.sum(), rel=1e-9)


def test_nhpp_mean_rate_and_expected_count_partial_hours():
    m = profile("public_sector")
    proc = NHPPProcess(0.2, tuple(m), start_hour_of_week=100.5)
    # half an hour at hour 100, then hour 101 ...: expected_count integrates the step function
    e = proc.expected_count(0.0, 5400.0)
    assert e == pytest.approx(0.2 * (1800 * m[100] + 3600 * m[101]) / m.mean(), rel=1e-12)
    t = _all(proc, 3, 8 * WEEK_S)
    n, e_all = len(t), proc.expected_count(0.0, 8 * WEEK_S)
    assert abs(n - e_all) < 4 * math.sqrt(e_all)
    assert e_all == pytest.approx(0.2 * 8 * WEEK_S, rel=1e-9)  # profile normalised to mean 1


def test_nhpp_deterministic_sorted_within_horizon():
    proc = NHPPProcess(3.0, tuple(profile("finance")), burst=MarkovBurst(3.0, 60.0, 600.0))
    a = list(proc.chunks(np.random.default_rng(5), 3 * 86400.0))
    b = list(proc.chunks(np.random.default_rng(5), 3 * 86400.0))
    c = list(proc.chunks(np.random.default_rng(6), 3 * 86400.0))
    ta, tb, tc = (np.concatenate([x[0] for x in z]) for z in (a, b, c))
    assert np.array_equal(ta, tb) and not np.array_equal(ta[:100], tc[:100])
    assert np.all(np.diff(ta) > 0) and ta[-1] < 3 * 86400.0 and ta[0] >= 0
    assert all(x[1] is None and x[2] is None for x in a)


def test_nhpp_is_lazy_over_36_months():
    """The first chunk of a 36-month horizon comes at once and is bounded in size."""
    horizon = 36 * 30.44 * 86400.0
    proc = NHPPProcess(50.0, tuple(profile("azure-conv")), burst=MarkovBurst(2.0, 100.0, 1000.0))
    t0 = time.perf_counter()
    it = proc.chunks(np.random.default_rng(1), horizon)
    sizes = [len(next(it)[0]) for _ in range(20)]
    assert time.perf_counter() - t0 < 2.0
    assert max(sizes) <= 2 * CHUNK


def test_markov_burst_levels_have_mean_one():
    b = MarkovBurst(4.0, 30.0, 270.0)
    lo, hi = b.levels
    assert hi / lo == pytest.approx(4.0)
    assert (1 - b.burst_share) * lo + b.burst_share * hi == pytest.approx(1.0)
    with pytest.raises(ValueError):
        MarkovBurst(0.5, 1.0, 1.0)


def test_mmpp_dispersion_matches_theory():
    """Counts of a flat-profile MMPP in 10-s windows have the theoretical index of dispersion;
    the same rate without bursts is Poisson (index ~1)."""
    rate, horizon, w = 5.0, 400_000.0, 10.0
    burst = MarkovBurst(4.0, 30.0, 120.0)
    theory = burst.index_of_dispersion(rate, w)
    assert theory > 5  # a strong effect, far from Poisson
    for seed in (1, 2):
        t = _all(NHPPProcess(rate, burst=burst), seed, horizon)
        c = np.bincount((t // w).astype(np.int64), minlength=int(horizon / w))
        assert c.mean() == pytest.approx(rate * w, rel=0.03)
        assert c.var() / c.mean() == pytest.approx(theory, rel=0.05)  # seed-to-seed sd is ~0.4%
    t = _all(NHPPProcess(rate), 3, horizon)
    c = np.bincount((t // w).astype(np.int64), minlength=int(horizon / w))
    assert c.var() / c.mean() == pytest.approx(1.0, abs=0.05)


def test_poisson_unchanged():
    t = _all(PoissonProcess(2.0), 1, 10_000.0)
    assert abs(len(t) - 20_000) < 4 * math.sqrt(20_000)


def test_vertical_workloads_validate_and_build():
    from sim.demand.verticals import VERTICALS, vertical_workload
    from sim.scenario import scenario_from_dict
    ws = [vertical_workload(v, f"{v}-t", 2.0) for v in VERTICALS]
    sc = scenario_from_dict({"deployments": [{"name": "d", "model": "mixtral-8x7b"}], "workloads": ws})
    for w in sc.workloads:
        proc = w.arrivals.build()
        assert isinstance(proc, NHPPProcess) and proc.mean_rate_per_s() == 2.0 and proc.burst is not None
        assert w.prompt_tokens.build().mean > 1 and w.output_tokens.build().mean > 1
    hc = next(w for w in sc.workloads if w.vertical == "healthcare")
    assert hc.prompt_tokens.build().max_tokens == 30720
    assert hc.residency.required_certifications == ["HDS"]
