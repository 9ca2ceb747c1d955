"""Competitors with capacity, a delivered SLA drawn per competitor and a price response to
share loss (sim/market/competition.py, [market.competition],
models/market/parameters_competition.csv)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from sim.market.competition import COLUMN_PREFIXES, beta_parameters, response_multiplier
from sim.market.market import MONTH_S, SOVEREIGN, simulate_market
from sim.scenario import ScenarioError, load_scenario, scenario_from_dict, with_overrides
from sim.scenario.competition import default_competition_spec
from sim.scenario.market import MarketSpec, default_market_dict, default_market_spec

from tests.market.test_market import _with_event, awards_by_provider, run_market, symmetric_spec

OFF = {"capacity_limits": False, "sla_draws": False, "price_response": False}


def market_spec(competition: dict | None = None, events: list | None = None, **over) -> MarketSpec:
    d = default_market_dict()
    if competition is not None:
        d["competition"] = competition
    if events:
        d["events"] = events
    d.update(over)
    return MarketSpec.model_validate(d)


def symmetric_with(competition: dict, n: int = 3, rfp_rate: float = 40.0, **vover) -> MarketSpec:
    """symmetric_spec (every offer identical) with a competition block for c0..c{n-1}."""
    d = symmetric_spec(n, rfp_rate, **vover).model_dump()
    d["competition"] = competition
    return MarketSpec.model_validate(d)


def comp_entry(name: str, **kw) -> dict:
    e = {"name": name, "capacity_rfp_months": 1e5, "capacity_growth_per_year": 1.0, "sla_concentration": 100.0,
         "elasticity": 0.0, "reference_share": "t0", "price_floor": 0.5}
    e.update(kw)
    return e


# ------------------------------------------------------------------ table and schema
def test_defaults_come_from_the_table_and_bad_input_is_one_line():
    spec = default_market_spec()
    assert spec.competition == default_competition_spec()
    assert [c.name for c in spec.competition.competitors] == ["aws", "azure", "eu_alt"]
    sc = load_scenario("small")
    data = sc.model_dump(mode="json", exclude_none=True)
    data["market"] = {"competition": {"competitors": [{"name": "aws", "elasticity": -1}]}}
    with pytest.raises(ScenarioError) as e:
        scenario_from_dict(data, "x.toml")
    assert "\n" not in str(e.value) and "elasticity" in str(e.value)
    data["market"] = {"competition": {"competitors": [{"name": "nobody", **comp_entry("nobody")}]}}
    with pytest.raises(ScenarioError, match="not market competitors"):
        scenario_from_dict(data, "x.toml")
    # a partial block completes from the table
    data["market"] = {"competition": {"competitors": [{"name": "aws", "elasticity": 0.9}]}}
    m = scenario_from_dict(data).market
    assert m.competition.of("aws").elasticity == 0.9
    assert m.competition.of("aws").capacity_rfp_months == 10
    assert m.competition.of("azure") is None     # a given list lists exactly its competitors


# ------------------------------------------------------------------ capacity
def test_competitor_at_capacity_leaves_the_choice_set():
    """c0 can hold about two contracts' tokens/s: once its active contracts reach that it wins
    no new award, and its used tokens/s never exceed capacity + one contract."""
    size = symmetric_spec(3, 40.0).verticals[0]
    one = size.rate_per_s_median * size.reference_tokens_per_request
    rfp_volume = 3 * 40.0 * one                  # three verticals' RFPs a month, sigma 0: every contract is `one`
    comp = {**OFF, "capacity_limits": True, "window_months": 6,
            "competitors": [comp_entry("c0", capacity_rfp_months=2 * one / rfp_volume)]}
    m = run_market(symmetric_with(comp, rate_per_s_sigma=0.0), 3, 3)
    base = run_market(symmetric_with({**comp, "capacity_limits": False}, rate_per_s_sigma=0.0), 3, 3)
    a, b = awards_by_provider(m), awards_by_provider(base)
    assert b["c0"] > 10 and a["c0"] <= 3
    assert sum(a.values()) == sum(b.values())
    for t in np.linspace(0.1, 2.9, 15) * MONTH_S:
        used = m.competition.used_tokens_per_s("c0", t)
        assert used < 2 * one + one + 1e-6
    log = m.monthly_log
    assert all(r["available_c0"] is False for r in log[1:])
    assert log[-1]["capacity_used_c0"] >= 1.0
    # the others took c0's awards
    assert a["c1"] + a["c2"] + a[SOVEREIGN] > b["c1"] + b["c2"] + b[SOVEREIGN]


def test_shortage_is_capacity_zero_and_the_old_behaviour():
    """A scheduled shortage removes the competitor for its duration whatever the switches say
    (capacity 0); with the switches off the market draws exactly what it drew before."""
    ev = dict(month=0.0, kind="shortage", provider="c2", duration_months=0.5)
    for comp in (OFF, {**OFF, "capacity_limits": True, "competitors": [comp_entry("c2")]}):
        spec = _with_event(symmetric_with({**comp, "window_months": 6}, rfp_rate=400.0), **ev)
        m = run_market(spec, 3, 1)
        assert m.competition.capacity_tokens_per_s("c2", 0.25 * MONTH_S) == 0.0
        assert not m.available("c2", 0.25 * MONTH_S) and m.available("c2", 0.75 * MONTH_S)
        early = [c for c in m.contracts if c.start_s < 0.5 * MONTH_S - 1]
        late = [c for c in m.contracts if c.start_s > 0.5 * MONTH_S + 1]
        assert early and late
        assert not any(c.provider == "c2" for c in early)
        assert any(c.provider == "c2" for c in late)


def test_capacity_grows_by_the_yearly_factor():
    comp = {**OFF, "capacity_limits": True, "window_months": 6,
            "competitors": [comp_entry("c0", capacity_rfp_months=1000.0, capacity_growth_per_year=1.5)]}
    m = run_market(symmetric_with(comp), 1, 0.1)
    u = m.competition.rfp_volume_tokens_per_s
    v = m.spec.verticals
    assert u == pytest.approx(sum(x.rfp_rate_per_month * x.rate_per_s_median * x.reference_tokens_per_request
                                  * math.exp(x.rate_per_s_sigma ** 2 / 2) for x in v))
    assert m.competition.capacity_tokens_per_s("c0", 12 * MONTH_S) == pytest.approx(1500.0 * u)
    assert m.competition.capacity_tokens_per_s("c0", 24 * MONTH_S) == pytest.approx(2250.0 * u)
    assert math.isinf(m.competition.capacity_tokens_per_s("c1", 0.0))   # not listed: no limit


# ------------------------------------------------------------------ SLA draws
def test_sla_draws_deterministic_in_unit_interval_with_the_configured_mean():
    spec = market_spec({**OFF, "sla_draws": True})
    a = [r["sla_aws"] for r in simulate_market(spec, 7, 120).monthly_log]
    b = [r["sla_aws"] for r in simulate_market(spec, 7, 120).monthly_log]
    c = [r["sla_aws"] for r in simulate_market(spec, 8, 120).monthly_log]
    assert a == b and a != c
    draws = []
    for seed in range(1, 11):
        draws += [r[f"sla_{n}"] for r in simulate_market(spec, seed, 60).monthly_log for n in ("eu_alt",)]
    x = np.array(draws)
    assert ((x >= 0) & (x <= 1)).all()
    mean = spec.competitors[2].sla_attainment            # eu_alt
    k = spec.competition.of("eu_alt").sla_concentration
    sd = math.sqrt(mean * (1 - mean) / (k + 1))
    assert x.std() == pytest.approx(sd, rel=0.15)
    assert abs(x.mean() - mean) < 4 * sd / math.sqrt(len(x))     # 4-sigma CI on the mean
    # off: the constant
    off = simulate_market(market_spec(OFF), 7, 6).monthly_log
    assert {r["sla_aws"] for r in off} == {spec.competitors[0].sla_attainment}


def test_beta_parameters_have_the_mean_and_concentration():
    a, b = beta_parameters(0.99, 200.0)
    assert a / (a + b) == pytest.approx(0.99) and a + b == pytest.approx(200.0)


def test_sla_draw_stream_does_not_shift_other_draws():
    """The SLA draws have their own stream: RFP counts and sizes are the same with draws on."""
    on = simulate_market(market_spec({**OFF, "sla_draws": True}), 3, 12)
    off = simulate_market(market_spec(OFF), 3, 12)
    assert [r["rfps"] for r in on.monthly_log] == [r["rfps"] for r in off.monthly_log]


# ------------------------------------------------------------------ price response
def test_response_multiplier_direction_floor_and_cap():
    assert response_multiplier(0.1, 0.2, 0.5, 0.5) == pytest.approx(math.sqrt(0.5))
    assert response_multiplier(0.01, 0.2, 0.5, 0.5) == 0.5           # floored
    assert response_multiplier(0.4, 0.2, 0.5, 0.5) == 1.0            # capped at the t=0 price
    assert response_multiplier(0.0, 0.2, 0.5, 0.5) == 0.5
    assert response_multiplier(0.1, 0.2, 0.0, 0.5) == 1.0            # no elasticity: no move


def test_losing_competitor_cuts_its_price_to_the_floor_at_most():
    """c0 is expensive (twice the list price): its award share is far below the reference
    share it defends (0.25), so it cuts, never below price_floor x its t=0 price; a
    competitor that wins its share holds."""
    d = symmetric_spec(3, 40.0).model_dump()
    p0 = d["competitors"][0]["price_eur_per_mtok_in"] * 2.0
    d["competitors"][0]["price_eur_per_mtok_in"] = p0
    d["competitors"][0]["price_eur_per_mtok_out"] *= 2.0
    d["competition"] = {**OFF, "price_response": True, "window_months": 3,
                        "competitors": [comp_entry("c0", elasticity=0.5, reference_share=0.25, price_floor=0.6),
                                        comp_entry("c1", elasticity=0.5, reference_share=0.05)]}
    m = run_market(MarketSpec.model_validate(d), 5, 12)
    log = m.monthly_log
    f = [r["price_factor_c0"] for r in log]
    assert f[0] == 1.0 and min(f) < 0.95 and min(f) >= 0.6 - 1e-12
    assert all(r["price_in_c0"] >= 0.6 * p0 - 1e-12 for r in log)
    assert all(r["price_factor_c1"] == 1.0 for r in log)             # above its reference: capped
    # and the cut wins c0 share back: more awards in the second half than without a response
    d["competition"]["price_response"] = False
    static = run_market(MarketSpec.model_validate(d), 5, 12)
    late = lambda mk: sum(1 for c in mk.contracts if c.provider == "c0" and c.start_s > 6 * MONTH_S)
    assert late(m) > late(static)


def test_scheduled_cut_applies_on_top_of_the_response():
    d = symmetric_spec(3, 40.0).model_dump()
    d["competitors"][0]["price_eur_per_mtok_in"] *= 2.0
    d["competitors"][0]["price_eur_per_mtok_out"] *= 2.0
    p0 = d["competitors"][0]["price_eur_per_mtok_in"]
    d["competition"] = {**OFF, "price_response": True, "window_months": 3,
                        "competitors": [comp_entry("c0", elasticity=0.5, reference_share=0.25, price_floor=0.6)]}
    d["events"] = [{"month": 4.5, "kind": "price_cut", "provider": "c0", "factor": 0.8}]
    m = run_market(MarketSpec.model_validate(d), 5, 8)
    for r in m.monthly_log[5:]:
        assert r["price_in_c0"] == pytest.approx(p0 * 0.8 * r["price_factor_c0"])


def test_old_price_war_scenario_behaves_as_before():
    """The sovereignty-gap experiment's price war (hyperscalers cut 25 % at months 6 and 18,
    the sovereign matching): with the mechanisms off, the very same market as before the
    competition block (prices, awards); with the response on, the hyperscalers that win share
    hold their post-cut price (the response is capped at the t=0 price) and the sovereign
    follows the cuts alone."""
    events = [{"month": mo, "kind": "price_cut", "provider": c, "factor": 0.75} for mo in (6, 18) for c in ("aws", "azure")]
    d = default_market_dict()
    d["events"] = events
    d["sovereign"]["price_response"] = 1.0
    for c in d["competitors"]:
        c["price_cut_rate_per_year"] = 0.0          # the scheduled war alone
    p_sov = d["sovereign"]["price_eur_per_mtok_in"]
    off = simulate_market(MarketSpec.model_validate({**d, "competition": OFF}), 2, 24)
    assert off.price_in[SOVEREIGN] == pytest.approx(p_sov * 0.75 ** 2)
    assert off.price_in["aws"] == pytest.approx(d["competitors"][0]["price_eur_per_mtok_in"] * 0.75 ** 2)
    on = simulate_market(MarketSpec.model_validate({**d, "competition": {**OFF, "price_response": True}}), 2, 24)
    assert on.price_in[SOVEREIGN] == pytest.approx(p_sov * 0.75 ** 2)     # follows the cuts, not the response
    for c in ("aws", "azure"):
        f = on.competition.factor[c]
        assert on.price_in[c] == pytest.approx(d["competitors"][0]["price_eur_per_mtok_in"] * 0.75 ** 2 * f)


def test_switches_off_draw_the_same_rfps_and_the_log_has_the_columns():
    on = simulate_market(None, 4, 6)
    off = simulate_market(market_spec(OFF), 4, 6)
    assert [r["rfps"] for r in on.monthly_log] == [r["rfps"] for r in off.monthly_log]
    row = on.monthly_log[-1]
    for c in ("aws", "azure", "eu_alt"):
        for p in COLUMN_PREFIXES:
            assert f"{p}{c}" in row, p + c
    on.check_conservation()


def test_forecast_monthly_table_carries_the_competition_columns():
    from sim.forecast.forecast import simulate_forecast
    sc = with_overrides(load_scenario("small"), {"forecast.months": 2, "forecast.windows_per_month": 1,
                                                 "forecast.window_s": 10.0, "forecast.warmup_s": 2.0})
    r = simulate_forecast(sc, 1)
    for c in ("aws", "azure", "eu_alt"):
        for col in ("sla_", "used_tokens_per_s_", "capacity_used_", "award_share_", "window_share_",
                    "price_in_", "price_out_", "available_"):
            assert f"{col}{c}" in r.monthly.columns
    assert r.monthly["used_tokens_per_s_aws"].iloc[0] == pytest.approx(
        r.market.competition.used_tokens_per_s("aws", 1 * MONTH_S - 1e-6), rel=0.2)


def test_buyers_see_the_trailing_mean_and_tenants_their_contracts_mean():
    m = simulate_market(market_spec({**OFF, "sla_draws": True}), 5, 14)
    comp = m.competition
    h = comp.sla_history["aws"]
    assert len(h) == 14
    assert m.sla_of("aws") == pytest.approx(np.mean(h[-6:]))
    log = m.monthly_log
    assert log[3]["sla_seen_aws"] == pytest.approx(np.mean(h[:4]))
    c = next(k for k in m.contracts if k.provider == "aws" and k.start_s > 2 * MONTH_S)
    first = int(c.start_s / MONTH_S)
    assert comp.delivered(c) == pytest.approx(np.mean(h[first:]))
