"""The streaming metrics on known rows: exact sums, histogram percentiles within their
documented 0.2 % resolution, the reservoir's size and uniformity, the warm-up exclusion, and
SLA attainment counting rejections after the warm-up as misses."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from sim.serving.metrics import REJECT_REASONS, LogHistogram, Metrics


def workload(name="w", ttft_s=1.0, tpot_s=0.05):
    return SimpleNamespace(name=name, sla=SimpleNamespace(ttft_s=ttft_s, tpot_s=tpot_s))


def request(rid, workload, arrival_s, wait_s, ttft_s, out_tokens, tpot_s, prompt=100, latency_s=0.0,
            preemptions=0):
    """A finished request with the given wait, TTFT (network latency included) and TPOT."""
    first = arrival_s + ttft_s - latency_s
    return SimpleNamespace(rid=rid, workload=workload, replica=0, arrival_s=arrival_s,
                           admitted_s=arrival_s + wait_s, first_token_s=first,
                           completion_s=first + tpot_s * (out_tokens - 1), prompt_tokens=prompt,
                           output_tokens=out_tokens, generated=out_tokens, preemptions=preemptions,
                           restarts=0, latency_s=latency_s, outcome="", reason="")


def metrics(workloads, warmup_s=0.0, sample_size=100, flush_every=997, seed=0):
    return Metrics(workloads, n_replicas=1, horizon_s=1000.0, warmup_s=warmup_s, interval_s=10.0,
                   sample_size=sample_size, rng=np.random.default_rng(seed), flush_every=flush_every)


@pytest.fixture(scope="module")
def known():
    """5000 requests of one workload with random wait, TTFT, output length and TPOT."""
    rng = np.random.default_rng(7)
    n = 5000
    d = {
        "arrival": np.sort(rng.uniform(0, 900, n)),
        "wait": rng.exponential(0.3, n),
        "net": rng.uniform(0.0, 0.02, n),
        "out": rng.integers(1, 200, n),
        "prompt": rng.integers(1, 4000, n),
        "pre": rng.integers(0, 3, n),
    }
    d["ttft"] = d["wait"] + rng.lognormal(-1.0, 0.8, n) + d["net"]
    d["tpot"] = rng.lognormal(-3.2, 0.4, n)
    return d


def fill(m, d, warmup_s=0.0):
    for i in range(len(d["arrival"])):
        m.on_complete(request(i, 0, float(d["arrival"][i]), float(d["wait"][i]), float(d["ttft"][i]),
                              int(d["out"][i]), float(d["tpot"][i]), prompt=int(d["prompt"][i]),
                              latency_s=float(d["net"][i]), preemptions=int(d["pre"][i])), float(d["arrival"][i]) + 1)
    m.flush()


def test_exact_sums(known):
    m = metrics([workload()])
    fill(m, known)
    s = m.streams[0]
    d = known
    assert s.completed == s.measured == len(d["arrival"])
    assert s.prompt_tokens == s.measured_prompt_tokens == int(d["prompt"].sum())
    assert s.output_tokens == int(d["out"].sum())
    assert s.preemptions == int(d["pre"].sum())
    assert s.sum_ttft == pytest.approx(d["ttft"].sum(), rel=1e-12)
    assert s.sum_wait == pytest.approx(d["wait"].sum(), rel=1e-12)
    assert s.sum_wait2 == pytest.approx((d["wait"] ** 2).sum(), rel=1e-12)
    multi = d["out"] > 1
    assert s.n_tpot == int(multi.sum())
    assert s.sum_tpot == pytest.approx(d["tpot"][multi].sum(), rel=1e-9)
    e2e = d["ttft"] + d["tpot"] * (d["out"] - 1)
    assert s.sum_e2e == pytest.approx(e2e.sum(), rel=1e-12)
    summ = s.summary()
    assert summ["ttft_s"]["mean"] == pytest.approx(d["ttft"].mean(), rel=1e-12)
    assert summ["tpot_s"]["mean"] == pytest.approx(d["tpot"][multi].mean(), rel=1e-9)
    # SLA: TTFT <= 1 s and (single-token requests aside) TPOT <= 0.05 s
    ttft_ok = d["ttft"] <= 1.0
    tpot_ok = ~multi | (d["tpot"] <= 0.05)
    assert s.ttft_met == int(ttft_ok.sum())
    assert s.tpot_met == int(tpot_ok.sum())
    assert s.sla_met == int((ttft_ok & tpot_ok).sum())
    assert summ["sla_attainment"] == pytest.approx((ttft_ok & tpot_ok).mean(), abs=1e-15)


def test_flush_batching_does_not_change_sums(known):
    a, b = metrics([workload()], flush_every=1), metrics([workload()], flush_every=100_000)
    fill(a, known)
    fill(b, known)
    sa, sb = a.streams[0], b.streams[0]
    for k in ("completed", "sla_met", "prompt_tokens", "output_tokens", "n_tpot"):
        assert getattr(sa, k) == getattr(sb, k), k
    assert sa.sum_ttft == pytest.approx(sb.sum_ttft, rel=1e-12)
    assert np.array_equal(sa.h_ttft.counts, sb.h_ttft.counts)


@pytest.mark.parametrize("q", [0.01, 0.1, 0.5, 0.9, 0.99, 0.999])
def test_histogram_percentiles_within_resolution(known, q):
    m = metrics([workload()])
    fill(m, known)
    s = m.streams[0]
    multi = known["out"] > 1
    for h, v in ((s.h_ttft, known["ttft"]), (s.h_wait, known["wait"]), (s.h_tpot, known["tpot"][multi])):
        exact = float(np.quantile(v, q, method="inverted_cdf"))
        assert h.quantile(q) == pytest.approx(exact, rel=0.002)


def test_histogram_wide_range_and_underflow():
    rng = np.random.default_rng(1)
    v = np.exp(rng.uniform(np.log(1e-5), np.log(1e5), 20000))
    h = LogHistogram()
    h.add(v[:7000])
    h2 = LogHistogram()
    h2.add(v[7000:])
    h.merge(h2)
    assert h.n == len(v)
    for q in (0.05, 0.25, 0.5, 0.75, 0.95):
        assert h.quantile(q) == pytest.approx(float(np.quantile(v, q, method="inverted_cdf")), rel=0.002)
    z = LogHistogram()
    assert z.quantile(0.5) is None
    z.add(np.array([0.0, 1e-9, 1e-9, 2.0]))
    assert z.quantile(0.5) == 0.0       # below 1 us: the underflow bin, reported as 0
    assert z.quantile(1.0) == pytest.approx(2.0, rel=0.002)


def test_warmup_excluded_from_measured_but_not_from_totals(known):
    warm = 300.0
    m = metrics([workload()], warmup_s=warm)
    fill(m, known)
    s = m.streams[0]
    keep = known["arrival"] >= warm
    assert s.completed == len(keep)
    assert s.prompt_tokens == int(known["prompt"].sum())
    assert s.measured == int(keep.sum())
    assert s.measured_prompt_tokens == int(known["prompt"][keep].sum())
    assert s.measured_output_tokens == int(known["out"][keep].sum())
    assert s.sum_ttft == pytest.approx(known["ttft"][keep].sum(), rel=1e-12)
    assert s.h_ttft.n == int(keep.sum())
    assert s.h_ttft.quantile(0.9) == pytest.approx(
        float(np.quantile(known["ttft"][keep], 0.9, method="inverted_cdf")), rel=0.002)


def test_arrivals_and_rejections_around_warmup():
    m = metrics([workload(), workload("v")], warmup_s=10.0)
    early = request(0, 0, 5.0, 0.1, 0.5, 3, 0.01)
    late = request(1, 0, 20.0, 0.1, 0.5, 3, 0.01)
    other = request(2, 1, 30.0, 0.1, 0.5, 3, 0.01)
    for r in (early, late, other):
        m.on_arrival(r, r.arrival_s)
    m.on_reject(early, REJECT_REASONS[0], 15.0)
    m.on_reject(late, REJECT_REASONS[1], 25.0)
    m.on_complete(other, 31.0)
    m.flush()
    s0, s1 = m.streams
    assert (s0.arrivals, s0.measured_arrivals) == (2, 1)
    assert {k: v for k, v in s0.rejected.items() if v} == {REJECT_REASONS[0]: 1, REJECT_REASONS[1]: 1}
    assert set(s0.rejected) == set(REJECT_REASONS)   # every reason is reported, zeros included
    assert s0.rejected_measured == 1               # only the one that arrived after warm-up
    assert s0.summary()["sla_attainment"] == 0.0   # one measured request, rejected: a miss
    assert s1.summary()["sla_attainment"] == 1.0
    t = m.total().summary()
    assert t["rejected"] == 2 and t["measured"] == 1 and t["measured_rejected"] == 1
    assert t["sla_attainment"] == pytest.approx(0.5)
    assert (early.outcome, early.reason) == ("rejected", REJECT_REASONS[0])


def test_reservoir_size_and_uniformity():
    k, n = 200, 5000
    firsts = np.zeros(n)
    for seed in range(40):
        m = metrics([workload()], sample_size=k, flush_every=313, seed=seed)
        for i in range(n):
            m.on_complete(request(i, 0, float(i) / 10, 0.0, 0.1, 2, 0.01), float(i) / 10)
        m.flush()
        assert len(m.sample) == k and m.seen == n
        ids = [row[0] for row in m.sample]
        assert len(set(ids)) == k
        firsts[ids] += 1
    # each request is kept with probability k/n: the share from the first half is 1/2
    half = firsts[: n // 2].sum() / firsts.sum()
    sd = np.sqrt(0.25 / firsts.sum())
    assert abs(half - 0.5) < 4 * sd
    m = metrics([workload()], sample_size=1000)
    for i in range(50):
        m.on_complete(request(i, 0, float(i), 0.0, 0.1, 2, 0.01), float(i))
    m.flush()
    assert len(m.sample) == 50            # fewer rows than the reservoir: all of them
    m0 = metrics([workload()], sample_size=0)
    m0.on_complete(request(0, 0, 0.0, 0.0, 0.1, 2, 0.01), 0.1)
    m0.flush()
    assert m0.sample == [] and m0.seen == 1


def test_busy_time_split_across_bins():
    m = metrics([workload()])
    rep = SimpleNamespace(index=0)
    m.on_busy(rep, 5.0, 25.0, tokens=200, kv_blocks=3)
    assert m.busy[0][:3] == pytest.approx([5.0, 10.0, 5.0])
    assert m.tokens[0][:3] == pytest.approx([50.0, 100.0, 50.0])
    assert m.kv_block_s[0][:3] == pytest.approx([15.0, 30.0, 15.0])
    assert sum(m.busy[0]) == pytest.approx(20.0)


def test_histogram_stores_only_its_span_and_matches_the_full_binning():
    """The stored span grows to cover new values (below, above, disjoint merges) and the
    full-length counts and quantiles equal a plain full-range binning of the same values."""
    import math
    from sim.serving.metrics import _H_BINS, _H_LO, _H_LOG_RATIO, _H_RATIO
    rng = np.random.default_rng(7)
    parts = [np.exp(rng.normal(mu, 0.3, 500)) for mu in (-3.0, 2.0, -6.0, 0.0)] + [np.array([0.0, 1e-8])]
    h, merged = LogHistogram(), LogHistogram()
    for v in parts:
        h.add(v)
        other = LogHistogram()
        other.add(v)
        merged.merge(other)
    into_empty = LogHistogram()
    into_empty.merge(merged)
    allv = np.concatenate(parts)
    idx = np.zeros(len(allv), dtype=np.int64)
    pos = allv >= _H_LO
    idx[pos] = 1 + np.floor(np.log(allv[pos] / _H_LO) / _H_LOG_RATIO).astype(np.int64)
    full = np.bincount(np.clip(idx, 0, _H_BINS - 1), minlength=_H_BINS)

    def dense_quantile(q):   # the full-range algorithm
        cum = np.cumsum(full)
        i = min(int(np.searchsorted(cum, q * cum[-1], side="left")), _H_BINS - 1)
        return 0.0 if i == 0 else _H_LO * _H_RATIO ** (i - 1) * math.sqrt(_H_RATIO)

    for hist in (h, merged, into_empty):
        assert np.array_equal(hist.counts, full) and hist.n == len(allv)
        assert hist._counts.size < _H_BINS // 2          # only the span is stored
        for q in (0.0, 0.01, 0.3, 0.5, 0.9, 0.999, 1.0):
            assert hist.quantile(q) == dense_quantile(q)
    one = LogHistogram()
    one.add(np.array([0.02]))
    assert one._counts.size == 1 and one.quantile(0.5) == pytest.approx(0.02, rel=0.002)
