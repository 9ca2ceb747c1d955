"""Price lists per vertical and per model (sim/market/pricing.py): in the buyers' choice, in
the contracts and on the forecast's ledger, to the cent."""
from __future__ import annotations

import pytest
import simpy

from sim.core.rng import RandomStreams
from sim.economics.ledger import Ledger
from sim.forecast import forecast as forecast_mod
from sim.market.market import MONTH_S, SOVEREIGN, Market
from sim.market.pricing import model_factors, model_price, vertical_price
from sim.scenario import load_scenario
from sim.scenario.market import MarketSpec, default_market_spec

VERTS = ("finance", "healthcare", "public_sector")


def _market(spec, seed=1, months=3):
    env = simpy.Environment()
    m = Market(env, spec, RandomStreams(seed), lambda c: None)
    env.run(until=months * MONTH_S)
    return m


def test_default_price_list_is_the_api_list_ratios_of_the_portfolio():
    spec = default_market_spec()
    portfolio = {d.model for d in load_scenario("provider").deployments}
    assert portfolio <= set(spec.sovereign.price_list)           # every portfolio model has a price
    assert model_factors(spec, "mixtral-8x7b") == (1.0, 1.0)     # the reference model
    # Mistral La Plateforme (api_prices.csv): Large 2 at 2 / 6 USD, 7B at 0.25, Mixtral 8x7B at 0.7
    assert model_factors(spec, "mistral-large-2") == pytest.approx((2.0 / 0.7, 6.0 / 0.7), abs=1e-6)
    assert model_factors(spec, "mistral-7b") == pytest.approx((0.25 / 0.7, 0.25 / 0.7), abs=1e-6)
    assert model_factors(spec, "unlisted-model") == (1.0, 1.0) and model_factors(spec, None) == (1.0, 1.0)


def test_a_vertical_price_factor_prices_its_contracts_and_moves_its_buyers():
    # competitor capacity and price response pool the verticals' awards: off, so healthcare's
    # offers cannot move with finance's price (sim/market/competition.py)
    pooled_off = {"capacity_limits": False, "price_response": False}
    base = MarketSpec.model_validate({"competition": pooled_off})
    dear = MarketSpec.model_validate({"verticals": [{"name": "finance", "price_factor": 1.5},
                                                    {"name": "healthcare"}, {"name": "public_sector"}],
                                      "competition": pooled_off})
    m0, m1 = _market(base), _market(dear)
    s = base.sovereign
    for m, f in ((m0, 1.0), (m1, 1.5)):
        fin = [c for c in m.contracts if c.provider == SOVEREIGN and c.vertical == "finance"]
        assert fin and all(c.price_eur_per_mtok_in == pytest.approx(s.price_eur_per_mtok_in * f) for c in fin)
        hc = [c for c in m.contracts if c.provider == SOVEREIGN and c.vertical == "healthcare"]
        assert all(c.price_eur_per_mtok_in == s.price_eur_per_mtok_in for c in hc)
    # the choice model compares the vertical's price: a dearer finance list loses finance buyers only
    p0, p1 = m0.choice_probabilities("finance", 0.0), m1.choice_probabilities("finance", 0.0)
    assert p1[SOVEREIGN] < p0[SOVEREIGN]
    assert m1.choice_probabilities("healthcare", 0.0) == m0.choice_probabilities("healthcare", 0.0)
    v = dear.verticals[0]
    assert vertical_price(v, "aws", 0.5, 0.8) == (0.5, 0.8)      # competitors keep their list prices


def test_price_list_billed_to_the_cent_per_model_with_one_sla_count_per_tenant():
    """A tenant spread over two models: each model's tokens at contract price x its factors,
    revenue to the cent; the tenant's SLA is counted once over both (its credit tier)."""
    sc = load_scenario("provider")
    m = _market(sc.market, months=1)
    c = next(c for c in m.contracts if c.provider == SOVEREIGN and c.vertical == "finance")
    name = f"c{c.id}"
    per = {"scale": 3.0, "workloads": {
        f"{name}@mixtral-8x7b": {"measured": 100, "met": 99.0, "met_requests": 99, "prompt_tokens": 123_457,
                                 "output_tokens": 2_345},
        f"{name}@mistral-large-2": {"measured": 50, "met": 40.0, "met_requests": 40, "prompt_tokens": 65_432,
                                    "output_tokens": 1_111}}}
    ledger = Ledger(month_s=MONTH_S)
    tenants = forecast_mod._Tenants(sc, sc.forecast)
    delivered = forecast_mod._Delivered()
    forecast_mod._bill_month(ledger, tenants, delivered, per, {name: c}, 0.5 * MONTH_S)
    ledger.close(MONTH_S)
    rep = ledger.report()
    want_peur = 0
    for model, acc in ((k.split("@")[1], v) for k, v in per["workloads"].items()):
        p_in, p_out = model_price(sc.market, c, model)
        want_peur += round(acc["prompt_tokens"] * 3) * round(p_in * 1e6) + round(acc["output_tokens"] * 3) * round(p_out * 1e6)
    # one tenant account: whole cents of its exact total, rounded once (the ledger's rule)
    assert rep["revenue_cents"] == round(want_peur / 1e10)
    large_in = model_price(sc.market, c, "mistral-large-2")[0]
    assert large_in == pytest.approx(c.price_eur_per_mtok_in * 2.0 / 0.7, rel=1e-6)
    # SLA: 139 of 150 met = 0.927 < 0.95 -> the 25 % tier of the tenant's whole month
    assert delivered.attainment_of(c) == pytest.approx(139 / 150)
    assert rep["sla_credits_cents"] == pytest.approx(0.25 * rep["revenue_cents"], abs=1)
