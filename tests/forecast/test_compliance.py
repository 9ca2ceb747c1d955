"""Compliance as a cost and a gate (sim/scenario/certification.py, sim/market/compliance.py,
sim/forecast/compliance.py; ledger lines certification / ai_act / dora)."""
from __future__ import annotations

import pytest
import simpy

from sim.cli import main
from sim.core.errors import UserError
from sim.core.rng import RandomStreams
from sim.forecast.forecast import simulate_forecast
from sim.market.compliance import SiteCertifications
from sim.market.market import MONTH_S, SOVEREIGN, Market
from sim.scenario import SiteSpec, load_scenario, with_overrides
from sim.scenario.certification import default_compliance_dict
from sim.scenario.market import MarketSpec, default_market_spec

WINDOWS = {"forecast.windows_per_month": 1, "forecast.window_s": 20.0, "forecast.warmup_s": 5.0}


def cents(x) -> int:
    return int(round(float(x) * 100))


def small(months: int = 4, **over):
    return with_overrides(load_scenario("small"), dict(WINDOWS, **{"forecast.months": months}, **over))


def market_with(sites, months: int = 36, seed: int = 1) -> Market:
    env = simpy.Environment()
    m = Market(env, default_market_spec(), RandomStreams(seed), lambda c: 0.99, sites=sites)
    if months > 0:
        env.run(until=months * MONTH_S)
    return m


FR = SiteSpec(name="par-1", jurisdiction="FR", certifications=["HDS", "ISO27001"])
FR_SNC = SiteSpec(name="par-1", jurisdiction="FR", certifications=["SecNumCloud", "HDS", "ISO27001"])
DE = SiteSpec(name="fra-1", jurisdiction="DE", certifications=["ISO27001"])


# ------------------------------------------------------------------ the gate
def test_gate_excludes_a_provider_without_the_required_certification():
    m = market_with([FR, DE])
    won = [c for c in m.contracts if c.provider == SOVEREIGN]
    # no site holds SecNumCloud or BSI-C5: no French or German public-sector contract, none in German health
    assert not [c for c in won if c.vertical == "public_sector" and c.buyer_country in ("FR", "DE")]
    assert not [c for c in won if c.vertical == "healthcare" and c.buyer_country == "DE"]
    assert [c for c in won if c.vertical == "healthcare" and c.buyer_country == "FR"]   # HDS is held
    gated = m.compliance.gated_awards
    assert gated and {(v, c) for _t, v, c in gated} <= {("public_sector", "FR"), ("public_sector", "DE"), ("healthcare", "DE")}
    # the hyperscalers hold no SecNumCloud: no French public contract for them either
    assert not [c for c in m.contracts if c.provider in ("aws", "azure") and c.vertical == "public_sector"
                and c.buyer_country == "FR"]
    # with SecNumCloud at the French site the sovereign offer wins French public buyers
    m2 = market_with([FR_SNC, DE])
    assert [c for c in m2.contracts if c.provider == SOVEREIGN and c.vertical == "public_sector" and c.buyer_country == "FR"]
    assert len(m2.compliance.gated_awards) < len(gated)


def test_gate_off_and_market_only_mode_change_nothing():
    base = market_with(None, months=24)
    spec = MarketSpec.model_validate({"compliance": {"gate": "off", "strict_verticals": []}})
    env = simpy.Environment()
    off = Market(env, spec, RandomStreams(1), lambda c: 0.99, sites=None)
    env.run(until=24 * MONTH_S)
    assert [(c.provider, c.vertical, c.start_s) for c in base.contracts] == \
           [(c.provider, c.vertical, c.start_s) for c in off.contracts]
    assert not base.compliance.active and base.compliance.gated_awards == []


# ------------------------------------------------------------------ planned certifications
def test_planned_certification_is_held_after_its_lead_time():
    site = SiteSpec(name="fra-1", jurisdiction="DE", certifications=["ISO27001"],
                    planned_certifications=[{"name": "BSI-C5", "start_month": 3}])
    spec = default_market_spec().compliance
    held = SiteCertifications([site], spec, MONTH_S)
    lead = spec.catalogue()["BSI-C5"].months_to_obtain
    assert lead == 12
    assert held.held("fra-1", (3 + lead - 0.01) * MONTH_S) == {"ISO27001"}
    assert held.held("fra-1", (3 + lead) * MONTH_S) == {"ISO27001", "BSI-C5"}
    # in the forecast: the month's sites hold it from then on and the column counts it
    sc = small(6, **{"sites.1.certifications": ["ISO27001"],
                     "sites.1.planned_certifications": [{"name": "HDS", "start_month": 1}],
                     "market.compliance.certifications.2.months_to_obtain": 3})
    r = simulate_forecast(sc, 2)
    held_col = r.monthly["certifications_held"].tolist()
    assert held_col[:4] == [5, 5, 5, 5] and held_col[4:] == [6, 6]   # HDS held at fra-1 from month 1 + 3


# ------------------------------------------------------------------ costs on the ledger
def test_costs_are_booked_on_the_ledger_and_reconcile_to_the_cent():
    months = 5
    sc = small(months, **{"sites.1.certifications": ["ISO27001"],
                          "sites.1.planned_certifications": [{"name": "BSI-C5", "start_month": 1}]})
    r = simulate_forecast(sc, 3)
    m = r.monthly
    spec = sc.market.compliance
    cat = spec.catalogue()
    held = [c for s in sc.sites for c in s.certifications]
    yearly_held = sum(cat[c].yearly_eur for c in held) / 12.0
    c5 = cat["BSI-C5"]
    for k, row in m.iterrows():
        expect = yearly_held + (c5.one_off_eur / c5.months_to_obtain if k >= 1 else 0.0)
        assert row["certification_cost_eur"] == pytest.approx(expect, abs=0.01 * (len(held) + 1))
        ai = spec.ai_act_yearly_eur_per_model / 12.0 + (spec.ai_act_one_off_eur_per_model if k == 0 else 0.0)
        assert row["ai_act_cost_eur"] == pytest.approx(ai, abs=0.01)
        assert cents(row["compliance_cost_eur"]) == cents(row["certification_cost_eur"]) + cents(row["ai_act_cost_eur"]) \
            + cents(row["dora_cost_eur"])
        fixed = sum(cents(row[f"{ln}_cost_eur"]) for ln in ("rental", "partner", "depreciation", "colocation"))
        assert fixed + cents(row["power_cost_eur"]) + cents(row["marketplace_fee_eur"]) \
            + cents(row["marketplace_hosting_cost_eur"]) + cents(row["compliance_cost_eur"]) == cents(row["cost_eur"])
        assert cents(row["revenue_eur"]) - cents(row["cost_eur"]) - cents(row["sla_credits_eur"]) == cents(row["gross_margin_eur"])
    rep = r.ledger.report()
    assert rep["certification_cents"] == sum(cents(x) for x in m["certification_cost_eur"])
    assert r.summary["compliance"]["compliance_cost_eur"] == pytest.approx(float(m["compliance_cost_eur"].sum()))
    # the certification costs sit at the sites, the AI Act and DORA costs at the ledger site 'compliance'
    assert rep["by_site"]["fra-1"]["certification_cents"] > rep["by_site"]["ams-1"]["certification_cents"] > 0
    assert rep["by_site"]["compliance"]["ai_act_cents"] == sum(cents(x) for x in m["ai_act_cost_eur"])


def test_dora_cost_scales_with_active_finance_contracts():
    sc = small(4)
    r = simulate_forecast(sc, 1)
    per = sc.market.compliance.dora_yearly_eur_per_finance_contract / 12.0
    finance = []
    for k in range(4):
        n = sum(1 for c in r.market.sovereign_contracts((k + 0.5) * MONTH_S) if c.vertical == "finance")
        finance.append(n)
        assert r.monthly["dora_cost_eur"].iloc[k] == pytest.approx(n * per, abs=0.01 * max(n, 1))
    assert sum(finance) > 0
    doubled = simulate_forecast(with_overrides(sc, {"market.compliance.dora_yearly_eur_per_finance_contract": 2 * 12 * per}), 1)
    assert doubled.monthly["dora_cost_eur"].sum() == pytest.approx(2 * r.monthly["dora_cost_eur"].sum(), abs=0.05)


# ------------------------------------------------------------------ supply chain
def test_us_owned_colo_lowers_fit_for_the_strictest_buyers_only():
    us = SiteSpec(name="par-1", jurisdiction="FR", certifications=["SecNumCloud", "HDS", "ISO27001"], colo_owner="us")
    m = market_with([us], months=0)
    pen = {(p.attribute, p.value): p.fit_penalty for p in m.spec.compliance.supply_chain}[("colo_owner", "us")]
    assert pen == pytest.approx(0.3)
    fits = {}
    for v in ("public_sector", "healthcare", "finance"):
        with m.compliance.award(v, 0.0, count=False):
            fits[v] = m.sovereignty_fit(SOVEREIGN, v)
    assert fits["public_sector"] == pytest.approx(1.0 - pen) and fits["healthcare"] == pytest.approx(1.0 - pen)
    assert fits["finance"] == pytest.approx(1.0)      # jurisdiction and certification match: only strict buyers mind
    # an EU-owned second site holding the same certifications restores the fit (the buyer picks the best site)
    eu = SiteSpec(name="par-2", jurisdiction="FR", certifications=["SecNumCloud", "HDS", "ISO27001"])
    m2 = market_with([us, eu], months=0)
    with m2.compliance.award("public_sector", 0.0, count=False):
        assert m2.sovereignty_fit(SOVEREIGN, "public_sector") == pytest.approx(1.0)
    # over a market's life, fewer strict-vertical wins with the US-owned colo
    won = lambda mk: sum(1 for c in mk.contracts if c.provider == SOVEREIGN and c.vertical in ("public_sector", "healthcare"))
    assert won(market_with([us], months=36)) < won(market_with([FR_SNC], months=36))


# ------------------------------------------------------------------ bad input
def test_bad_compliance_input_is_one_line_and_exit_2(tmp_path):
    with pytest.raises(UserError, match=r"buyer_rules\.0\.certification"):
        with_overrides(load_scenario("small"), {"market.compliance.buyer_rules.0.certification": "NOPE"})
    with pytest.raises(UserError, match=r"buyer_countries"):
        with_overrides(load_scenario("small"), {"market.compliance.buyer_countries": {"FR": 0.5}})
    with pytest.raises(UserError, match=r"colo_owner"):
        with_overrides(load_scenario("small"), {"sites.0.colo_owner": "cn"})
    with pytest.raises(UserError, match=r"not in market\.compliance\.certifications"):
        simulate_forecast(small(1, **{"sites.0.planned_certifications": [{"name": "NOPE", "start_month": 0}]}), 1)
    with pytest.raises(UserError, match=r"already held"):
        simulate_forecast(small(1, **{"sites.0.planned_certifications": [{"name": "HDS", "start_month": 0}]}), 1)
    # the CLI: one line, exit 2
    from pathlib import Path

    import sim.scenarios
    text = (Path(sim.scenarios.__file__).parent / "small.toml").read_text()
    text = text.replace('certifications = ["BSI-C5", "ISO27001"]',
                        'certifications = ["ISO27001"]\nplanned_certifications = [{ name = "C6", start_month = 0 }]')
    text = text.replace("months = 36", "months = 1")
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    assert main(["run", str(bad), "--quiet", "--out", str(tmp_path / "out")]) == 2


def test_defaults_come_from_tables_with_sources():
    import csv

    from sim.core.resources import model_file
    d = default_compliance_dict()
    assert {c["name"] for c in d["certifications"]} == {"SecNumCloud", "BSI-C5", "HDS", "ISO27001"}
    assert d["gate"] == "exclude" and d["ai_act_one_off_eur_per_model"] == 32000.0
    for name in ("certifications.csv", "buyer_rules.csv", "buyer_countries.csv", "competitor_certifications.csv",
                 "compliance.csv", "supply_chain.csv"):
        with open(model_file("market", name), newline="") as f:
            for row in csv.DictReader(f):
                assert row["source"].strip(), (name, row)


def test_a_certified_buyer_is_served_only_where_its_certification_is_held():
    from types import SimpleNamespace

    from sim.forecast.compliance import ComplianceCosts
    from sim.forecast.windows import vertical_workload

    sc = small(1, **{"market.compliance.tenant_residency": "buyer"})
    market = SimpleNamespace(spec=sc.market, compliance=SimpleNamespace(sites=None), t0_s=0.0)
    costs = ComplianceCosts(sc, market)
    c = SimpleNamespace(vertical="healthcare", buyer_country="DE", required_certifications=("BSI-C5",))
    w = costs.tenant(c, vertical_workload("healthcare", "x", 1.0))
    assert w["residency"] == {"allowed_jurisdictions": ["DE", "FR"], "required_certifications": ["BSI-C5"]}
    # a buyer without a rule: the vertical's jurisdictions, no certification (the rules are the certification rule)
    other = SimpleNamespace(vertical="healthcare", buyer_country="other", required_certifications=())
    assert costs.tenant(other, vertical_workload("healthcare", "x", 1.0))["residency"] == \
        {"allowed_jurisdictions": ["FR"], "required_certifications": []}
    sc_v = small(1)   # the default: every tenant keeps its vertical's residency
    costs_v = ComplianceCosts(sc_v, SimpleNamespace(spec=sc_v.market, compliance=SimpleNamespace(sites=None), t0_s=0.0))
    assert costs_v.tenant(c, vertical_workload("healthcare", "x", 1.0))["residency"]["required_certifications"] == ["HDS"]
