"""Contracts sized in tokens from each vertical's own length mix (sim/market/sizing.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import simpy

from sim.core.rng import RandomStreams
from sim.demand.verticals import vertical_workload
from sim.forecast.windows import tenant_workload
from sim.market.market import MONTH_S, SOVEREIGN, Market
from sim.market.sizing import mean_tokens_per_s, size_from_tokens, size_of
from sim.scenario import WorkloadSpec
from sim.scenario.market import MarketSpec, default_market_spec

VERTS = ("finance", "healthcare", "public_sector")


def _lengths(vertical: str):
    w = WorkloadSpec.model_validate(vertical_workload(vertical, "probe", 1.0))
    return w.prompt_tokens.build(), w.output_tokens.build()


def test_market_table_lengths_are_the_demand_fits_the_forecast_draws_from():
    spec = default_market_spec()
    for v in spec.verticals:
        p, o = _lengths(v.name)
        assert v.prompt_tokens_mean == pytest.approx(p.mean, abs=0.5), v.name   # public_sector: the trace mean 1155
        assert v.output_tokens_mean == pytest.approx(o.mean, abs=2.5), v.name   # public_sector: the trace mean 211 vs the law 213.2
    hc = next(v for v in spec.verticals if v.name == "healthcare")
    ps = next(v for v in spec.verticals if v.name == "public_sector")
    assert hc.tokens_per_request / ps.tokens_per_request == pytest.approx(7.47, abs=0.01)   # the ~7x of the issue


def test_same_volume_is_fewer_longer_requests_in_healthcare():
    spec = default_market_spec()
    v = {x.name: x for x in spec.verticals}
    z = 0.37
    hc = size_of(v["healthcare"].model_copy(update={"rate_per_s_median": 1.0}), z)
    ps = size_of(v["public_sector"].model_copy(update={"rate_per_s_median": 1.0}), z)
    assert hc.tokens_per_s == pytest.approx(ps.tokens_per_s)                # same contracted volume
    assert hc.rate_per_s / ps.rate_per_s == pytest.approx(v["public_sector"].tokens_per_request
                                                          / v["healthcare"].tokens_per_request)
    assert hc.rate_per_s < ps.rate_per_s / 7
    # requests basis: the former sizing, rate drawn as it was
    old = v["healthcare"].model_copy(update={"size_basis": "requests"})
    s = size_of(old, z)
    assert s.rate_per_s == float(old.rate_per_s_median * math.exp(old.rate_per_s_sigma * z))
    assert s.tokens_per_s == pytest.approx(s.rate_per_s * old.tokens_per_request)
    assert size_from_tokens(v["finance"], 1000.0).rate_per_s == pytest.approx(1000.0 / v["finance"].tokens_per_request)


def test_a_contracts_expected_tokens_per_month_is_its_contracted_volume():
    """Each tenant's workload (the forecast's, sim.forecast.windows.tenant_workload) draws
    requests at the contract's rate with its vertical's length laws: the expected tokens per
    month, rate x month x E[prompt + output], estimated from 200,000 drawn requests per
    vertical, holds the contracted volume inside its 95 % interval."""
    env = simpy.Environment()
    m = Market(env, None, RandomStreams(11), lambda c: None)
    env.run(until=2 * MONTH_S)
    rng = np.random.default_rng(5)
    n = 200_000
    for vert in VERTS:
        c = next(c for c in m.contracts if c.vertical == vert and c.provider == SOVEREIGN)
        w = WorkloadSpec.model_validate(tenant_workload(c, None))
        assert w.arrivals.rate_per_s == c.rate_per_s
        toks = w.prompt_tokens.build().sample(rng, n) + w.output_tokens.build().sample(rng, n)
        scale = c.rate_per_s * MONTH_S
        half = 1.96 * scale * toks.std(ddof=1) / math.sqrt(n)
        assert abs(scale * toks.mean() - c.contracted_tokens_per_month) < half, (vert, scale * toks.mean(),
                                                                                c.contracted_tokens_per_month, half)
        assert half < 0.02 * c.contracted_tokens_per_month   # the interval is tight enough to mean something


def test_contract_volumes_average_to_the_lognormal_mean_over_many_rfps():
    spec = MarketSpec.model_validate({"verticals": [{"name": v, "rfp_rate_per_month": 300.0, "procurement_months_min": 0.0, "procurement_months_max": 0.0} for v in VERTS]})
    env = simpy.Environment()
    m = Market(env, spec, RandomStreams(2), lambda c: None)
    env.run(until=3 * MONTH_S)
    for v in spec.verticals:
        # public-sector anchors are drawn apart (sim.market.public_sector): not this law
        anchors = set(m.public.anchors)
        x = np.array([c.contracted_tokens_per_s for c in m.contracts
                      if c.vertical == v.name and not c.initial and c.id not in anchors])
        assert len(x) > 500
        # log-space check (the lognormal mean is heavy-tailed): mean of log size = log median
        lx = np.log(x)
        half = 1.96 * lx.std(ddof=1) / math.sqrt(len(lx))
        assert abs(lx.mean() - math.log(v.rate_per_s_median * v.reference_tokens_per_request)) < half + 1e-12
        assert mean_tokens_per_s(v) == pytest.approx(v.rate_per_s_median * 1366 * math.exp(v.rate_per_s_sigma ** 2 / 2))
