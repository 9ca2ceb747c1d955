"""Sales channels: direct and the hyperscaler marketplaces (sim/market/channels.py in the
market, sim/forecast/channels.py in the forecast, lines marketplace_fee / marketplace_hosting
on the ledger)."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import simpy
from scipy import stats

from sim.core.errors import UserError
from sim.core.rng import RandomStreams
from sim.economics.ledger import Ledger, Price
from sim.forecast.channels import COLUMNS, SITE_PREFIX
from sim.forecast.forecast import simulate_forecast
from sim.market.channels import DIRECT, Channels, migration_probability_per_month
from sim.market.market import MONTH_S, SOVEREIGN, Market, simulate_market
from sim.scenario import load_scenario, with_overrides
from sim.scenario.channels import ChannelsSpec, default_channels_spec
from sim.scenario.market import MarketSpec, default_market_spec

WINDOWS = {"forecast.windows_per_month": 2, "forecast.window_s": 20.0, "forecast.warmup_s": 5.0}


def small(months: int = 3, marketplaces: list | None = None):
    over = dict(WINDOWS, **{"forecast.months": months})
    if marketplaces is not None:
        over["market.channels"] = {"marketplaces": marketplaces}
    return with_overrides(load_scenario("small"), over)


def cents(x) -> int:
    return int(round(float(x) * 100))


# ------------------------------------------------------------------ reach 0 is today's forecast
def test_reach_zero_reproduces_todays_forecast_exactly():
    """The default channels (every reach 0) move not one cent, contract or share against a
    market with no marketplace at all.  (Until 2026-12-07 this pinned the numbers of commit
    347f367, before channels existed; every later mechanism, competitors and the window
    drain among them, moved those pins, so the test now compares with the forecast without
    marketplaces, which is what it is about.)"""
    df = simulate_forecast(small(), 7).monthly
    none = simulate_forecast(small(marketplaces=[]), 7).monthly
    assert [cents(x) for x in df.revenue_eur] == [cents(x) for x in none.revenue_eur]
    assert [cents(x) for x in df.gross_margin_eur] == [cents(x) for x in none.gross_margin_eur]
    assert list(df.contracts_active) == list(none.contracts_active)
    assert [round(x, 12) for x in df.share] == [round(x, 12) for x in none.share]
    assert df.revenue_eur.min() > 0 and df.contracts_active.min() > 0   # not vacuous
    for col in COLUMNS + ("marketplace_fee_eur", "marketplace_hosting_cost_eur"):
        assert col in df.columns
    assert (df.marketplace_revenue_eur == 0).all() and (df.marketplace_fee_eur == 0).all()
    assert (df.direct_revenue_eur == df.revenue_eur).all() and (df.direct_margin_eur == df.gross_margin_eur).all()
    assert (df.marketplace_contracts_active == 0).all() and (df.channel_migrations == 0).all()


def test_unlisted_or_empty_channels_are_the_default_market():
    """Reach 0 draws nothing: listed or not, or no marketplace at all, the market is the same."""
    base = simulate_market(None, 3, 36)
    for mks in ([], [{"name": n, "listed": False} for n in ("aws", "azure", "gcp")]):
        m = simulate_market(MarketSpec.model_validate({"channels": {"marketplaces": mks}}), 3, 36)
        assert [(c.id, c.provider, c.start_s, c.end_s, c.rate_per_s) for c in m.contracts] == \
               [(c.id, c.provider, c.start_s, c.end_s, c.rate_per_s) for c in base.contracts]
        assert all(c.channel == DIRECT for c in m.contracts)


# ------------------------------------------------------------------ money by channel
MIXED = [{"name": "aws", "reach": 0.3, "migrate_prob_per_year": 0.5},       # hosted (default)
         {"name": "azure", "reach": 0.25, "hosted": False, "fee_share": 0.1}]  # on the sovereign fleet


@pytest.mark.parametrize("seed", [1, 2])
def test_channels_reconcile_to_the_cent_every_month(seed):
    df = simulate_forecast(small(12, MIXED), seed).monthly
    assert df.marketplace_revenue_eur.sum() > 0 and df.direct_revenue_eur.sum() > 0
    assert df.marketplace_fee_eur.sum() > 0 and df.marketplace_hosting_cost_eur.sum() > 0
    for _, r in df.iterrows():
        assert cents(r.direct_revenue_eur) + cents(r.marketplace_revenue_eur) == cents(r.revenue_eur)
        assert cents(r.direct_margin_eur) + cents(r.marketplace_margin_eur) == cents(r.gross_margin_eur)
        assert cents(r.revenue_eur) - cents(r.cost_eur) - cents(r.sla_credits_eur) == cents(r.gross_margin_eur)
        fixed = sum(cents(r[f"{ln}_cost_eur"]) for ln in ("rental", "partner", "depreciation", "colocation"))
        assert fixed + cents(r.power_cost_eur) + cents(r.marketplace_fee_eur) + cents(r.marketplace_hosting_cost_eur) \
            + cents(r.compliance_cost_eur) == cents(r.cost_eur)
        # the sites' and the owned/leased split carry the fleet's cost, not the platforms' lines
        fleet = (cents(r.cost_eur) - cents(r.marketplace_fee_eur) - cents(r.marketplace_hosting_cost_eur)
                 - cents(r.compliance_cost_eur))
        assert cents(r.owned_cost_eur) + cents(r.leased_cost_eur) == fleet
        assert sum(cents(r[c]) for c in df.columns if c.startswith("site_") and c.endswith("_cost_eur")) == fleet
        share = r.marketplace_revenue_eur / r.revenue_eur if r.revenue_eur > 0 else 0.0
        assert r.marketplace_share == pytest.approx(share)
        assert 0.0 <= r.marketplace_share <= 1.0
    assert (df.marketplace_contracts_active > 0).any()


def test_fee_is_the_share_of_marketplace_revenue():
    """One fee share for every platform: fee = share x marketplace revenue, per month within
    a cent per marketplace tenant (each account carries its sub-cent remainder), over the
    run within a cent per tenant; and the ledger method posts exactly the share."""
    s = 0.05
    mks = [{"name": "aws", "reach": 0.3, "fee_share": s}, {"name": "gcp", "reach": 0.3, "fee_share": s, "hosted": False}]
    df = simulate_forecast(small(8, mks), 4).monthly
    assert df.marketplace_revenue_eur.sum() > 0
    n = int(df.marketplace_contracts_active.max()) + 1
    for _, r in df.iterrows():
        assert abs(r.marketplace_fee_eur - s * r.marketplace_revenue_eur) <= 0.01 * n * (1 + s) + 1e-9
    assert abs(df.marketplace_fee_eur.sum() - s * df.marketplace_revenue_eur.sum()) <= 0.01 * n * (1 + s)
    # the ledger primitive
    led = Ledger(month_s=MONTH_S)
    led.set_price("t", Price.from_eur_per_mtok(1.0, 2.0, ()))
    led.record_usage(0.5 * MONTH_S, "t", "finance", "-", 3_000_000, 1_000_000, 1, 1)   # 5 EUR
    led.charge_revenue_share(0, "t", "marketplace_fee", 0.03)
    led.close(MONTH_S)
    rep = led.report()
    assert rep["marketplace_fee_cents"] == 15 and rep["revenue_cents"] == 500 and rep["margin_cents"] == 485


# ------------------------------------------------------------------ hosted traffic
def test_hosted_traffic_needs_no_sovereign_gpu_and_pays_hosting():
    mks = [{"name": "aws", "reach": 0.6, "hosting_eur_per_mtok": 0.25}]
    r = simulate_forecast(small(6, mks), 2)
    led = r.ledger
    hosted = {f"c{cid}" for cid, _, _ in r.market.channels.signed}
    seen = 0
    for (m, wl), by_site in led.workload_rev.items():
        sites = {site for site, _ in by_site}
        if any(s.startswith(SITE_PREFIX) for s in sites):
            assert wl in hosted and sites == {SITE_PREFIX + "aws"}   # a hosted tenant-month: no token on the fleet
            seen += 1
    assert seen > 0
    # hosting = tokens on the platform x its price, to the cent over the run
    tok = sum(p + o for (m, site, _v), (p, o) in led.tokens.items() if site == SITE_PREFIX + "aws")
    assert r.monthly.marketplace_hosting_cost_eur.sum() == pytest.approx(tok / 1e6 * 0.25, abs=0.01 * len(hosted))
    # and its fleet costs nothing of it: the marketplace margin is revenue - credits - fee - hosting
    df = r.monthly
    mk = df.marketplace_revenue_eur - df.marketplace_fee_eur - df.marketplace_hosting_cost_eur
    assert (df.marketplace_margin_eur <= mk + 1e-9).all()
    assert np.allclose(df.marketplace_margin_eur, mk, atol=0.01 * len(hosted))   # no SLA credit at 0.99


def test_hosted_traffic_is_excluded_from_the_sovereign_share():
    """Same market draws (constant attainment): hosted or on the fleet changes only the share,
    by exactly the hosted tenants' contracted rate over the market's."""
    on_fleet = MarketSpec.model_validate({"channels": {"marketplaces": [{"name": "aws", "reach": 0.5, "hosted": False}]}})
    hosted = MarketSpec.model_validate({"channels": {"marketplaces": [{"name": "aws", "reach": 0.5, "hosted": True}]}})
    a, b = simulate_market(on_fleet, 5, 36), simulate_market(hosted, 5, 36)
    assert [(c.id, c.provider, c.channel) for c in a.contracts] == [(c.id, c.provider, c.channel) for c in b.contracts]
    ra, rb = a.monthly_log, b.monthly_log
    moved = 0
    for x, y in zip(ra, rb):
        assert x["hosted_rate_per_s"] == 0.0
        assert y["share"] == pytest.approx(x["share"] - y["hosted_rate_per_s"] / y["market_rate_per_s"], abs=1e-12)
        moved += y["hosted_rate_per_s"] > 0
    assert moved > 12


def test_an_unlisted_platform_keeps_its_buyers_from_the_sovereign_offer():
    spec = MarketSpec.model_validate({"channels": {"marketplaces": [{"name": "aws", "reach": 1.0, "listed": False}]}})
    m = simulate_market(spec, 1, 36)
    awarded = [c for c in m.contracts if not c.initial]
    assert len(awarded) > 50 and all(c.provider != SOVEREIGN for c in awarded)
    listed = simulate_market(MarketSpec.model_validate({"channels": {"marketplaces": [{"name": "aws", "reach": 1.0}]}}), 1, 36)
    won = [c for c in listed.contracts if not c.initial and c.provider == SOVEREIGN]
    assert won and all(c.channel in ("aws", DIRECT) for c in won)
    migrated = {cid for cid, _, _ in listed.channels.migrations}
    assert all((c.channel == "aws") != (c.id in migrated) for c in won)   # every win sold through aws, some moved since


# ------------------------------------------------------------------ lock-in
def _tenants(n: int, mk: dict, seed: int, years: float):
    spec = ChannelsSpec.model_validate({"marketplaces": [{**default_channels_spec().marketplaces[0].model_dump(), **mk}]})
    env = simpy.Environment()
    market = SimpleNamespace(env=env, verticals={"finance": None})
    ch = Channels(market, spec, RandomStreams(seed), MONTH_S)
    for i in range(n):
        c = SimpleNamespace(id=f"t{i}", vertical="finance", status="active", start_s=0.0, end_s=math.inf, channel=DIRECT)
        ch.on_award(c, spec.marketplaces[0])
    env.run(until=years * 12 * MONTH_S + 1.0)
    return ch


def test_migrations_happen_at_the_yearly_rate():
    """Constant hazard (half-life far beyond the horizon): each tenant moves within a year with
    probability ~0.3; 4,000 tenant-years, 99.9 % binomial interval."""
    n, q = 4000, 0.3
    ch = _tenants(n, {"migrate_prob_per_year": q, "lockin_halflife_years": 1000.0}, 11, 1.0)
    p = 1.0 - (1.0 - migration_probability_per_month(ch.spec.marketplaces[0], 0.5)) ** 12
    assert p == pytest.approx(q, rel=2e-3)
    lo, hi = stats.binom.interval(0.999, n, p)
    assert lo <= len(ch.migrations) <= hi


def test_migration_falls_with_integration_depth():
    """Half-life 1 year: the yearly hazard halves with each year of contract age.  Migrations
    per year against the exact expectation (monthly checks at age k months), 99.9 % Poisson-
    binomial (normal) intervals; and year 3's hazard below year 1's."""
    n, q0 = 6000, 0.4
    mk = {"migrate_prob_per_year": q0, "lockin_halflife_years": 1.0}
    ch = _tenants(n, mk, 12, 3.0)
    spec = ch.spec.marketplaces[0]
    alive, expected = 1.0, []
    for year in range(3):
        e = 0.0
        for k in range(12 * year + 1, 12 * year + 13):
            p = migration_probability_per_month(spec, k / 12.0)
            e += alive * p
            alive *= 1.0 - p
        expected.append(e)
    t = np.array([t for _, t, _ in ch.migrations]) / (12 * MONTH_S)
    observed = [int(((t > y) & (t <= y + 1 + 1e-9)).sum()) for y in range(3)]
    for o, e in zip(observed, expected):
        sd = math.sqrt(n * e * (1 - e))
        assert abs(o - n * e) <= 3.3 * sd, (observed, [n * x for x in expected])
    at_risk = [n, n - observed[0], n - observed[0] - observed[1]]
    assert observed[2] / at_risk[2] < 0.6 * observed[0] / at_risk[0]


def test_a_migrated_hosted_tenant_moves_onto_the_fleet():
    mks = [{"name": "aws", "reach": 0.6, "migrate_prob_per_year": 1.0, "lockin_halflife_years": 1000.0}]
    r = simulate_forecast(small(8, mks), 3)
    moved = {f"c{cid}" for cid, _, _ in r.market.channels.migrations}
    assert moved and r.monthly.channel_migrations.sum() == len(r.market.channels.migrations)
    on_fleet = {wl for (m, wl), by_site in r.ledger.workload_rev.items() if any(s == "-" for s, _ in by_site)}
    assert moved & on_fleet                       # after its move it is served (and billed) on the fleet


# ------------------------------------------------------------------ the schema
def test_bad_channel_fields_are_refused_in_one_line():
    with pytest.raises(UserError, match=r"market\.channels\.marketplaces: reach sums to 1\.3"):
        with_overrides(load_scenario("small"), {"market.channels.marketplaces.0.reach": 0.8,
                                                "market.channels.marketplaces.1.reach": 0.5})
    with pytest.raises(UserError, match=r"fee_share"):
        with_overrides(load_scenario("small"), {"market.channels.marketplaces.0.fee_share": 1.5})
    with pytest.raises(ValueError):
        MarketSpec.model_validate({"channels": {"marketplaces": [{"name": "aws", "rech": 0.2}]}})
    with pytest.raises(ValueError):
        MarketSpec.model_validate({"channels": {"marketplaces": [{"name": "aws"}, {"name": "aws"}]}})


def test_defaults_come_from_the_table_with_sources():
    spec = default_market_spec().channels
    assert [m.name for m in spec.marketplaces] == ["aws", "azure", "gcp"]
    assert all(m.reach == 0.0 and m.fee_share == 0.03 for m in spec.marketplaces)
    import csv

    from sim.core.resources import model_file
    with open(model_file("market", "parameters_channels.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(r["source"].strip() for r in rows)
    assert all(r["source"].startswith(("assumption", "channels.csv:")) for r in rows)   # sourced facts live in channels.csv


def test_the_forecast_capacity_policy_plans_no_gpu_for_hosted_tenants():
    """The forecast policy sizes sites from the contracts in force; hosted marketplace tenants
    are left out (they run on the platform's GPUs)."""
    from sim.forecast.fleet import PolicyFleet

    mks = [{"name": "aws", "reach": 1.0, "migrate_prob_per_year": 0.0}]
    sc = with_overrides(small(1, mks), {"capacity_policy.kind": "forecast"})
    env = simpy.Environment()
    m = Market(env, sc.market, RandomStreams(2), lambda c: 0.99)
    fleet = PolicyFleet(sc, env, m, sc.forecast)
    env.run(until=24 * MONTH_S)
    t = env.now
    site = next(iter(fleet.growing))

    def gpus(c):
        peak, gpus_per_rps, ok = fleet._vertical(c, fleet.growing[site])
        return c.rate_per_s * peak / len(ok) * gpus_per_rps if site in ok else 0.0

    contracts = m.sovereign_contracts(t)
    hosted = [c for c in contracts if m.channels.hosted(c)]
    assert hosted and len(hosted) < len(contracts) and sum(gpus(c) for c in hosted) > 0
    planned = fleet._forecast_gpus(site, t)
    assert planned == pytest.approx(sum(gpus(c) for c in contracts if not m.channels.hosted(c)))
