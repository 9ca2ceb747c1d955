"""Market layer: logit shares, price response, SLA-driven churn, conservation,
named streams, and the parameter table that defines the defaults."""
from __future__ import annotations

import math
import tomllib

import numpy as np
import pytest
import simpy
from scipy import stats

from sim.market.market import (MONTH_S, SOVEREIGN, Market, churn_probability, logit_probabilities, market_only_forecast, simulate_market)
from sim.scenario.market import (MarketSpec, _parse, default_market_dict, default_market_spec, read_table, set_parameter)
from sim.core.rng import RandomStreams
from sim.scenario import ScenarioError, load_scenario, scenario_from_dict

VERTS = ("finance", "healthcare", "public_sector")


def _flat_curve(fit: float) -> dict:
    return {"fit_start": fit, "fit_end": fit, "midpoint_month": 0.0, "width_months": 1.0}


def symmetric_spec(n_competitors: int = 3, rfp_rate: float = 400.0, **vertical_overrides) -> MarketSpec:
    """Every offer identical to the sovereign one: same price, constant, SLA and fit; no
    competitor moves; awards right after the RFP; no initial book."""
    d = default_market_dict()
    s = d["sovereign"]
    for v in d["verticals"]:
        v.update(rfp_rate_per_month=rfp_rate, rfp_growth_per_year=1.0, procurement_months_min=0.0,
                 procurement_months_max=0.0, initial_contracts=0, term_months=120.0)
        v.update(vertical_overrides)
    comps = []
    for i in range(n_competitors):
        comps.append({
            "name": f"c{i}", "kind": "hyperscaler",
            "price_eur_per_mtok_in": s["price_eur_per_mtok_in"], "price_eur_per_mtok_out": s["price_eur_per_mtok_out"],
            "asc": s["asc"], "sla_attainment": s["sla_attainment_prior"],
            "price_cut_rate_per_year": 0.0, "price_cut_factor_min": 0.8, "price_cut_factor_max": 0.9,
            "shortage_rate_per_year": 0.0, "shortage_mean_months": 1.0,
            "sovereignty": {v: _flat_curve(s["sovereignty"][v]) for v in VERTS},
        })
    d["competitors"] = comps
    return MarketSpec.model_validate(d)


def run_market(spec, seed, months, attainment=1.0):
    env = simpy.Environment()
    m = Market(env, spec, RandomStreams(seed), (lambda c: attainment) if not callable(attainment) else attainment)
    env.run(until=months * MONTH_S)
    return m


def awards_by_provider(m: Market) -> dict[str, int]:
    out = dict.fromkeys(m.providers, 0)
    for c in m.contracts:
        if not c.initial:
            out[c.provider] += 1
    return out


# ------------------------------------------------------------------ logit
def test_identical_offers_have_equal_probabilities():
    env = simpy.Environment()
    m = Market(env, symmetric_spec(), RandomStreams(0), None)
    for v in VERTS:
        p = m.choice_probabilities(v)
        assert len(p) == 4
        assert max(p.values()) - min(p.values()) < 1e-12


def test_identical_offers_give_equal_shares_statistically():
    m = run_market(symmetric_spec(), seed=11, months=1)
    counts = awards_by_provider(m)
    n = sum(counts.values())
    assert n > 1000, n
    # chi-square goodness of fit to equal shares; a 1e-3 level keeps false alarms rare
    chi = stats.chisquare(list(counts.values()))
    assert chi.pvalue > 1e-3, (counts, chi)
    for k, c in counts.items():          # and each share within 4 binomial sigmas of 1/4
        assert abs(c - n / 4) < 4 * math.sqrt(n * 0.25 * 0.75), (k, counts)


def test_equal_share_test_has_power():
    """The check above would fail if the choice were biased by a modest amount."""
    d = symmetric_spec().model_dump()
    d["sovereign"]["asc"] = 0.3
    m = run_market(MarketSpec.model_validate(d), seed=11, months=1)
    counts = awards_by_provider(m)
    assert stats.chisquare(list(counts.values())).pvalue < 1e-3, counts


def test_logit_probabilities_basic():
    p = logit_probabilities(np.array([0.0, math.log(3.0)]))
    assert p == pytest.approx([0.25, 0.75])
    assert logit_probabilities(np.array([1000.0, 1000.0])) == pytest.approx([0.5, 0.5])   # no overflow


# ------------------------------------------------------------------ price response
def _with_event(spec: MarketSpec, **event) -> MarketSpec:
    d = spec.model_dump()
    d["events"] = [event]
    return MarketSpec.model_validate(d)


def test_competitor_price_cut_lowers_sovereign_share():
    base = symmetric_spec()
    cut = _with_event(base, month=0.0, kind="price_cut", provider="c0", factor=0.6)
    a = awards_by_provider(run_market(base, 5, 1))
    b = awards_by_provider(run_market(cut, 5, 1))
    assert sum(a.values()) == sum(b.values())          # same RFPs (named streams)
    # common random numbers: the sovereign interval of the inverse CDF only shrinks
    assert b[SOVEREIGN] < a[SOVEREIGN]
    assert b["c0"] > a["c0"]
    # and the shift is beyond noise: c0's share is now well above 1/4
    n = sum(b.values())
    assert b["c0"] / n > 0.25 + 4 * math.sqrt(0.25 * 0.75 / n), b


def test_sovereign_price_cut_raises_sovereign_share():
    base = symmetric_spec()
    cut = _with_event(base, month=0.0, kind="price_cut", provider="sovereign", factor=0.7)
    a = awards_by_provider(run_market(base, 6, 1))
    b = awards_by_provider(run_market(cut, 6, 1))
    n = sum(b.values())
    assert b[SOVEREIGN] > a[SOVEREIGN]
    assert b[SOVEREIGN] / n > 0.25 + 4 * math.sqrt(0.25 * 0.75 / n), b


def test_price_response_follows_hyperscaler_cut():
    d = _with_event(symmetric_spec(), month=0.5, kind="price_cut", provider="c1", factor=0.64).model_dump()
    d["sovereign"]["price_response"] = 0.5
    m = run_market(MarketSpec.model_validate(d), 1, 1)
    p0 = d["sovereign"]["price_eur_per_mtok_in"]
    assert m.price_in[SOVEREIGN] == pytest.approx(p0 * 0.8)
    assert m.price_in["c1"] == pytest.approx(p0 * 0.64)
    # a second hyperscaler matching the first one's cut leaves the cheapest price unchanged
    d["events"].append({"month": 0.7, "kind": "price_cut", "provider": "c0", "factor": 0.64})
    m = run_market(MarketSpec.model_validate(d), 1, 1)
    assert m.price_in[SOVEREIGN] == pytest.approx(p0 * 0.8)


def test_readme_table_is_current():
    from sim.scenario.market import table_markdown
    from sim.core.resources import model_file
    assert table_markdown() in model_file("market", "README.md").read_text()


def test_shortage_removes_competitor_from_choice():
    spec = _with_event(symmetric_spec(), month=0.0, kind="shortage", provider="c2", duration_months=0.5)
    m = run_market(spec, 3, 1)
    early = [c for c in m.contracts if c.start_s < 0.5 * MONTH_S - 1]
    late = [c for c in m.contracts if c.start_s > 0.5 * MONTH_S + 1]
    assert early and late
    assert not any(c.provider == "c2" for c in early)
    assert any(c.provider == "c2" for c in late)


def test_gap_closing_moves_share_to_hyperscaler():
    spec = symmetric_spec()
    d = spec.model_dump()
    for v in VERTS:
        d["competitors"][0]["sovereignty"][v] = {"fit_start": 0.2, "fit_end": 1.0, "midpoint_month": 6.0, "width_months": 1.0}
    env = simpy.Environment()
    m = Market(env, MarketSpec.model_validate(d), RandomStreams(0), None)
    g = m.competitors["c0"].sovereignty["public_sector"]
    assert g.fit(6.0) == pytest.approx(0.6)
    assert g.fit(0.0) < 0.21 and g.fit(12.0) > 0.99
    p_early = m.choice_probabilities("public_sector", 0.0)["c0"]
    p_late = m.choice_probabilities("public_sector", 12 * MONTH_S)["c0"]
    assert p_early < 0.1 < 0.24 < p_late


# ------------------------------------------------------------------ churn
def _churn_spec(base: float, need_end: float, slope: float = 0.05) -> MarketSpec:
    # short terms so that many expiry decisions happen; only the sovereign provider bids
    d = symmetric_spec(n_competitors=0, rfp_rate=60.0, term_months=1.0, churn_base_prob=base,
                       need_end_prob=need_end, churn_per_pp_shortfall=slope).model_dump()
    d["retender_on_churn"] = False
    for v in d["verticals"]:   # one target for all (public_sector's own SLA class asks 0.95)
        v["sla"]["attainment_target"] = 0.99
    return MarketSpec.model_validate(d)


def _decisions(m: Market):
    c = m.counters["total"]
    return c["churned"], c["churned"] + c["expired"] + c["renewed"]


def test_sla_always_met_churns_at_base_rate():
    base = 0.2
    m = run_market(_churn_spec(base, 0.1), seed=4, months=8, attainment=1.0)
    churned, n = _decisions(m)
    assert n > 2000, n
    assert abs(churned - base * n) < 4 * math.sqrt(n * base * (1 - base)), (churned, n)
    # nothing measured (None) is treated as met
    m2 = run_market(_churn_spec(base, 0.1), seed=5, months=8, attainment=None)
    churned2, n2 = _decisions(m2)
    assert abs(churned2 - base * n2) < 4 * math.sqrt(n2 * base * (1 - base)), (churned2, n2)


def test_sla_shortfall_raises_churn_and_the_bound_would_catch_it():
    base, slope = 0.2, 0.05
    spec = _churn_spec(base, 0.1, slope)
    v = spec.verticals[0]
    assert churn_probability(v, 0.95) == pytest.approx(base + slope * 4.0)   # 4 pp below 0.99
    assert churn_probability(v, 0.999) == base
    assert churn_probability(v, 0.0) == pytest.approx(0.9)                    # clipped to 1 - need_end
    m = run_market(spec, seed=4, months=8, attainment=0.95)
    churned, n = _decisions(m)
    assert abs(churned - base * n) > 4 * math.sqrt(n * base * (1 - base))     # base-rate bound rejects
    assert abs(churned - 0.4 * n) < 4 * math.sqrt(n * 0.4 * 0.6)


# ------------------------------------------------------------------ conservation
def test_contract_counts_are_conserved_every_month():
    rng = np.random.default_rng(0)
    env = simpy.Environment()
    m = Market(env, default_market_spec(), RandomStreams(2), lambda c: float(rng.uniform(0.9, 1.0)))
    for k in range(1, 37):
        env.run(until=k * MONTH_S)
        m.check_conservation()
    tot = m.counters["total"]
    # + cancelled: public contracts ended by a budget shift (sim/market/public_sector.py)
    assert tot["won"] == tot["active"] + tot["expired"] + tot["churned"] + tot["cancelled"]
    assert tot["won"] > tot["initial"] > 0 and tot["churned"] > 0 and tot["renewed"] > 0
    sov = [c for c in m.contracts if c.provider == SOVEREIGN]
    assert len(sov) == tot["won"]
    assert sum(c.status == "active" for c in sov) == tot["active"]
    assert sum(c.status == "churned" for c in sov) == tot["churned"]
    assert sum(c.renewals for c in sov) == tot["renewed"]
    # active = signed and not ended: a public contract whose start slipped is active before it runs
    waiting = sum(c.status == "active" and c.start_s > env.now for c in sov)
    assert len(m.active_contracts(env.now, provider=SOVEREIGN)) == tot["active"] - waiting
    # per vertical counters add up to the total
    for key in ("won", "lost", "active", "expired", "churned", "renewed", "rfps"):
        assert sum(m.counters[v][key] for v in VERTS) == tot[key]
    # every monthly row agrees with the counters
    log = m.monthly_log
    assert [r["month"] for r in log] == list(range(36)) and not log[-1]["partial"]
    assert sum(r["won"] for r in log) == tot["won"] - tot["initial"]
    assert sum(r["lost"] for r in log) == tot["lost"]
    assert sum(r["churned"] for r in log) == tot["churned"]


def test_active_contracts_fields_and_history():
    m = simulate_market(None, seed=3, months=12)
    for t in (0.0, 5.5 * MONTH_S, 11.9 * MONTH_S):
        cs = m.active_contracts(t)
        assert cs and all(c.start_s <= t < c.end_s for c in cs)
        assert {c.provider for c in cs} <= set(m.providers)
    c = m.active_contracts(6 * MONTH_S, provider=SOVEREIGN)[0]
    assert c.rate_per_s > 0 and c.price_eur_per_mtok_in > 0 and c.price_eur_per_mtok_out > 0
    # each vertical's own SLA class (sim.demand.verticals.SLA_CLASSES): finance interactive,
    # healthcare standard, public_sector relaxed
    want = {"finance": (0.45, 0.04, 0.99), "healthcare": (2.0, 0.2, 0.99), "public_sector": (5.0, 0.2, 0.95)}
    assert (c.sla.ttft_s, c.sla.tpot_s, c.sla.attainment_target) == want[c.vertical]
    assert c.id and c.vertical in VERTS


# ------------------------------------------------------------------ reproducibility
def _finance_trace(spec, seed):
    m = simulate_market(spec, seed, 24)
    return [(c.rfp_s, c.rate_per_s, c.provider, c.start_s, c.status)
            for c in m.contracts if c.vertical == "finance"]


def test_same_seed_same_result_and_named_streams():
    spec = default_market_spec()
    a = simulate_market(spec, 9, 24).monthly_log
    b = simulate_market(spec, 9, 24).monthly_log
    assert str(a) == str(b)          # str: rows hold NaN shares, and nan != nan
    # removing a vertical does not shift finance's draws (its offers do not depend on it once
    # the competitors' capacity and price response, which pool all verticals, are off)
    d = spec.model_dump()
    d["competition"].update(capacity_limits=False, price_response=False)
    spec = MarketSpec.model_validate(d)
    d["verticals"] = [v for v in d["verticals"] if v["name"] != "healthcare"]
    for c in d["competitors"]:
        c["sovereignty"].pop("healthcare")
    d["sovereign"]["sovereignty"].pop("healthcare")
    fewer = MarketSpec.model_validate(d)
    assert _finance_trace(spec, 9) == _finance_trace(fewer, 9)
    assert _finance_trace(spec, 9) != _finance_trace(spec, 10)


# ------------------------------------------------------------------ table and schema
ALLOWED_SOURCE_WORDS = ("assumption", "normalisation", "definition", ".csv", "issue 6", "Azure LLM inference trace",
                        "models/demand/", "sim/demand/verticals.py")   # the demand layer's sourced lengths and SLA classes


def _leaves(d, prefix=""):
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _leaves(v, f"{prefix}.{k}" if prefix else k)
    else:
        yield prefix, d


def test_parameter_table_defines_every_default_with_a_source():
    rows = read_table()
    assert rows
    for r in rows:
        assert r["source"].strip(), r
        assert any(w in r["source"] for w in ALLOWED_SOURCE_WORDS), r
    spec = default_market_spec()
    # every leaf of the default spec is a table row with the same value
    table = {(r["block"], r["name"], r["key"]): r for r in rows}
    dumped = spec.model_dump()
    seen = set()
    for v in dumped["verticals"]:
        for key, val in _leaves({k: x for k, x in v.items() if k != "name"}):
            cell = table[("vertical", v["name"], key)]["value"]
            assert (cell == val) if isinstance(val, str) else float(cell) == pytest.approx(val), key   # size_basis is a word
            seen.add(("vertical", v["name"], key))
    for c in dumped["competitors"]:
        for key, val in _leaves({k: x for k, x in c.items() if k != "name"}):
            r = table[("competitor", c["name"], key)]
            assert (r["value"] == val) if isinstance(val, str) else float(r["value"]) == pytest.approx(val)
            seen.add(("competitor", c["name"], key))
    for key, val in _leaves(dumped["sovereign"]):
        assert float(table[("sovereign", "sovereign", key)]["value"]) == pytest.approx(val)
        seen.add(("sovereign", "sovereign", key))
    seen.add(("market", "market", "retender_on_churn"))
    for key, val in _leaves(dumped["public_sector"]):   # models/market/parameters_public_sector.csv
        assert _parse(table[("public_sector", "public_sector", key)]["value"]) == val, key
        seen.add(("public_sector", "public_sector", key))
    for mk in dumped["channels"]["marketplaces"]:       # models/market/parameters_channels.csv
        for key, val in _leaves({k: x for k, x in mk.items() if k != "name"}):
            assert _parse(table[("channel", mk["name"], key)]["value"]) == val, key
            seen.add(("channel", mk["name"], key))
    comp = dumped["competition"]                     # models/market/parameters_competition.csv
    for key, val in comp.items():
        if key != "competitors":
            assert _parse(table[("competition", "market", key)]["value"]) == val, key
            seen.add(("competition", "market", key))
    for c in comp["competitors"]:
        for key, val in c.items():
            if key != "name":
                assert _parse(table[("competition", c["name"], key)]["value"]) == val, key
                seen.add(("competition", c["name"], key))
    assert set(k for k in table if k[0] != "fallback") == seen
    # and each varied parameter can be set through set_parameter (the sensitivity path)
    for r in rows:
        if r["block"] != "fallback" and r["low"] != "":
            set_parameter(spec, r["block"], r["name"], r["key"], float(r["low"]))


def test_scenario_market_block_is_optional():
    s = load_scenario("day")
    assert s.market is None
    with open(_default_toml(), "rb") as f:
        data = tomllib.load(f)
    data["market"] = {}
    assert scenario_from_dict(data).market == default_market_spec()
    data["market"] = {"events": [{"month": 1, "kind": "shortage", "provider": "sovereign", "duration_months": 2}]}
    with pytest.raises(ScenarioError, match="market"):
        scenario_from_dict(data, "x.toml")
    data["market"] = {"sovereign": {"price_eur_per_mtok_in": 1.2}}        # partial: the rest from the table
    assert scenario_from_dict(data).market.sovereign.price_eur_per_mtok_in == 1.2
    data["market"] = {"sovereign": {"price_eur_per_mtok_in": -1}}
    with pytest.raises(ScenarioError) as e:
        scenario_from_dict(data, "x.toml")
    assert "\n" not in str(e.value) and "market.sovereign.price_eur_per_mtok_in" in str(e.value)
    data["market"] = {"sovereign": {"price_eur": 1}}
    with pytest.raises(ScenarioError, match="unknown field; allowed: asc"):
        scenario_from_dict(data, "x.toml")


def _default_toml():
    from importlib import resources
    return str(resources.files("sim.scenarios").joinpath("day.toml"))


def test_market_only_forecast_columns():
    df, m = market_only_forecast(None, seed=1, months=6)
    for col in ("month", "contracts_active", "contracts_won", "contracts_lost", "share", "revenue_eur",
                "cost_eur", "gross_margin_eur", "gpu_utilisation", "sla_attainment"):
        assert col in df.columns
    assert len(df) == 6
    assert np.allclose(df.gross_margin_eur, df.revenue_eur - df.cost_eur - df.sla_credits_eur)
    assert ((df.gpu_utilisation >= 0) & (df.gpu_utilisation <= 1)).all()
    assert (df.contracts_active.to_numpy() == [r["active"] for r in m.monthly_log[:6]]).all()


def test_market_only_money_is_the_ledgers_to_the_cent_with_single_run_credits():
    """Leases billed as rental tranches (GPUs x GPU-hour price x hours), contract revenue at
    contract prices, and the single-run credit tiers: none at the 0.99 target, 10 % of
    revenue under it, 25 % under 0.95 (the delivered SLA also moves churn, so the three
    markets differ)."""
    from sim.scenario.market import fallback_parameters
    fb = fallback_parameters()
    # one 0.99 target for every vertical (public_sector's own class asks 0.95), so the tiers are common
    spec = MarketSpec.model_validate({"verticals": [{"name": "finance"}, {"name": "healthcare"},
                                                    {"name": "public_sector", "sla": {"attainment_target": 0.99}}]})
    met, _ = market_only_forecast(spec, seed=1, months=4, sla_attainment=0.99)
    short, _ = market_only_forecast(spec, seed=1, months=4, sla_attainment=0.97)
    bad, _ = market_only_forecast(spec, seed=1, months=4, sla_attainment=0.90)
    for df in (met, short, bad):
        for _, r in df.iterrows():
            c = {k: round(r[k] * 100) for k in ("revenue_eur", "cost_eur", "sla_credits_eur", "gross_margin_eur")}
            assert c["revenue_eur"] - c["cost_eur"] - c["sla_credits_eur"] == c["gross_margin_eur"]
        assert df.cost_eur.to_numpy() == pytest.approx(df.gpus * fb["gpu_hour_eur"] * MONTH_S / 3600, abs=0.02)
    assert (met.sla_credits_eur == 0).all()
    # each contract's revenue and credit accounts carry their sub-cent remainders (about 30
    # contracts: at most a cent each per month)
    assert short.sla_credits_eur.to_numpy() == pytest.approx(0.10 * short.revenue_eur, abs=0.5)
    assert bad.sla_credits_eur.to_numpy() == pytest.approx(0.25 * bad.revenue_eur, abs=0.5)
    assert (short.sla_credits_eur > 1000).all()


def test_one_sovereign_list_price_and_one_usd_rate():
    """The single-run default tenant price is the market table's sovereign list price, and
    every USD price the table converts uses the EUR/USD rate of models/economics/fx.csv."""
    import csv
    import re
    from sim.core.resources import model_file
    from sim.economics.contracts import d
    rows = {(r["block"], r["name"], r["key"]): r for r in read_table()}
    assert d("price_input_eur_per_mtok") == float(rows[("sovereign", "sovereign", "price_eur_per_mtok_in")]["value"])
    assert d("price_output_eur_per_mtok") == float(rows[("sovereign", "sovereign", "price_eur_per_mtok_out")]["value"])
    with open(model_file("economics", "fx.csv"), newline="") as f:
        fx = {r["item"]: float(r["value"]) for r in csv.DictReader(f)}
    rate = fx["EUR per USD, conversion of USD list prices"]
    # the rate is the two 2025 ECB reference rates it cites, rounded
    assert round(1 / fx["ECB euro reference rate, US dollar (BTA report A)"], 2) == rate
    assert round(1 / fx["ECB euro reference rate, US dollar (BTA report B)"], 2) == rate
    usd_rows = 0
    for r in rows.values():
        m_ = re.search(r"([0-9.]+) USD/1M x ([0-9.]+)", r["source"])
        if m_:
            usd_rows += 1
            assert float(m_.group(2)) == rate, r
            assert float(r["value"]) == pytest.approx(float(m_.group(1)) * rate, abs=5e-5), r
    assert usd_rows >= 6
    # one copy of the API price table
    assert model_file("economics", "api_prices.csv").is_file()
    assert not model_file("market", "api_prices.csv").exists()


def _script(name, *args):
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    return subprocess.run([sys.executable, str(root / "experiments" / name), *args], capture_output=True,
                          text=True, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg"})


@pytest.mark.slow      # ~6 s each: a subprocess, 24-146 short market runs and a figure
@pytest.mark.parametrize("script", ["sovereignty_gap.py", "sensitivity.py"])
def test_experiment_scripts_run_market_only(tmp_path, script):
    r = _script(script, "--market-only", "--reps", "2", "--months", "2", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert any(p.suffix == ".png" for p in tmp_path.iterdir())


def test_experiment_bad_argument_is_one_line():
    bad = _script("sovereignty_gap.py", "--market-only", "--reps", "0")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--reps" in bad.stderr


def test_partial_market_blocks_complete_from_the_table():
    m = MarketSpec.model_validate({
        "sovereign": {"price_response": 1.0},
        "competitors": [{"name": "aws", "asc": 1.0, "sovereignty": {"finance": {"fit_end": 0.95}}}],
        "verticals": [{"name": "public_sector", "term_months": 48}],
    })
    d = default_market_spec()
    assert [c.name for c in m.competitors] == ["aws"]                       # the list given is the list used
    aws = m.competitors[0]
    assert aws.asc == 1.0 and aws.price_eur_per_mtok_in == d.competitors[0].price_eur_per_mtok_in
    assert aws.sovereignty["finance"].fit_end == 0.95
    assert aws.sovereignty["finance"].fit_start == d.competitors[0].sovereignty["finance"].fit_start
    assert m.sovereign.price_response == 1.0 and m.sovereign.price_eur_per_mtok_in == d.sovereign.price_eur_per_mtok_in
    assert [v.name for v in m.verticals] == ["public_sector"] and m.verticals[0].term_months == 48
    assert MarketSpec.model_validate(m.model_dump()) == m                   # full dicts round-trip
    env = simpy.Environment()
    Market(env, m, RandomStreams(1), None)
    env.run(until=3 * MONTH_S)
    with pytest.raises(ValueError, match="duration_months"):
        MarketSpec.model_validate({"events": [{"month": 1, "kind": "shortage", "provider": "aws"}]})


def test_market_clock_starts_at_construction():
    env = simpy.Environment()
    env.run(until=1000.0)
    m = Market(env, None, RandomStreams(1), None)
    env.run(until=1000.0 + 2 * MONTH_S + 1)
    log = m.monthly_log
    assert [r["t_start_s"] for r in log[:2]] == [1000.0, 1000.0 + MONTH_S]
    assert all(c.start_s >= 1000.0 for c in m.contracts if not c.initial)
    m.check_conservation()


def test_delivered_sla_feeds_back_into_awards():
    """The sovereign offer carries the attainment its tenants experienced (refreshed monthly):
    a fleet that delivers 90% instead of 100% wins clearly fewer RFPs afterwards."""
    spec = symmetric_spec(rfp_rate=100.0)
    good = run_market(spec, 8, 3, attainment=1.0)
    bad = run_market(spec, 8, 3, attainment=0.90)
    assert good.sovereign_delivered_sla == 1.0 and bad.sovereign_delivered_sla == pytest.approx(0.90)

    def late_share(m):
        late = [c for c in m.contracts if not c.initial and c.start_s >= MONTH_S]
        return sum(c.provider == SOVEREIGN for c in late) / len(late)
    # 10 pp x beta_sla 0.3 = 3 utility units below the others: share ~ e^-3 / (e^-3 + 3) ~ 0.016
    assert late_share(bad) < 0.05 < 0.2 < late_share(good)


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=15, deadline=None)
@given(term=st.floats(0.5, 6.0), base=st.floats(0.0, 0.6), need_end=st.floats(0.0, 0.4),
       proc_max=st.floats(0.0, 4.0), retender=st.booleans(), seed=st.integers(0, 10_000),
       att_lo=st.floats(0.5, 1.0))
def test_conservation_property(term, base, need_end, proc_max, retender, seed, att_lo):
    d = default_market_dict()
    for v in d["verticals"]:
        v.update(term_months=term, churn_base_prob=base, need_end_prob=need_end, procurement_months_min=0.0,
                 procurement_months_max=proc_max, rfp_rate_per_month=8.0, rfp_growth_per_year=1.0)
    d["retender_on_churn"] = retender
    rng = np.random.default_rng(seed)
    env = simpy.Environment()
    m = Market(env, MarketSpec.model_validate(d), RandomStreams(seed),
               lambda c: None if rng.random() < 0.1 else float(rng.uniform(att_lo, 1.0)))
    for k in range(1, 9):
        env.run(until=k * MONTH_S)
        m.check_conservation()
    sov = [c for c in m.contracts if c.provider == SOVEREIGN]
    assert len(sov) == m.won and sum(c.status == "active" for c in sov) == m.active
    assert sum(c.status == "churned" for c in sov) == m.churned
    assert sum(c.status == "expired" for c in sov) == m.expired
    assert all(c.tokens_per_month > 0 for c in sov)
