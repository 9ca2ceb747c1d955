"""Public-sector anchors (sim/market/public_sector.py), the contracted backlog
(sim/market/backlog.py) and public AI capacity (sim/forecast/public_capacity.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import simpy
from scipy import stats

from sim.core.rng import RandomStreams
from sim.economics.contracts import HOUR_S, public_capacity_terms
from sim.economics.ledger import Ledger
from sim.market.market import MONTH_S, SOVEREIGN, Market
from sim.scenario import load_scenario, with_overrides
from sim.scenario.market import MarketSpec, default_market_spec
from sim.scenario.public_sector import default_public_sector_spec

PUBLIC = "public_sector"
NO_RISK = {"anchor_share": 0.0, "price_discount": 0.0, "cancel_rate_per_year": 0.0, "slip_prob": 0.0}


def market(public: dict, seed: int = 1, months: int = 0, attainment=0.99, **top):
    spec = MarketSpec.model_validate({"public_sector": public, **top})
    env = simpy.Environment()
    m = Market(env, spec, RandomStreams(seed), lambda c: attainment)
    if months:
        env.run(until=months * MONTH_S)
    return env, m


def public_contracts(m, initial=None):
    return [c for c in m.contracts if c.vertical == PUBLIC and (initial is None or c.initial == initial)]


# ------------------------------------------------------------------ the backlog identity
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_backlog_rolls_forward_to_the_cent_every_month(seed):
    """B(m+1) = B(m) + signed - recognised - cancelled, to the cent, with anchors, slips,
    renewals and many cancellations."""
    env, m = market({"cancel_rate_per_year": 1.0, "anchor_share": 0.5, "slip_prob": 0.5}, seed)
    prev = m.backlog.open()
    assert prev > 0                                   # the t = 0 book is signed revenue
    kinds = {"signed": 0.0, "cancelled": 0.0}
    for k in range(48):
        env.run(until=(k + 1) * MONTH_S)
        r = m.backlog.close_month(k)
        assert r["backlog_eur"] == pytest.approx(prev + r["backlog_signed_eur"] - r["backlog_recognised_eur"]
                                                 - r["backlog_cancelled_eur"], abs=0.005)
        assert min(r["backlog_signed_eur"], r["backlog_recognised_eur"], r["backlog_cancelled_eur"]) >= 0
        kinds["signed"] += r["backlog_signed_eur"]
        kinds["cancelled"] += r["backlog_cancelled_eur"]
        prev = r["backlog_eur"]
    assert kinds["signed"] > 0 and kinds["cancelled"] > 0   # every term of the identity was exercised
    assert sum(r["contracts_cancelled"] for r in m.backlog.rows) == m.counters["total"]["cancelled"]


def test_backlog_is_the_remaining_contracted_value():
    """Direct definition: the value of every signed sovereign term still to come."""
    env, m = market({"slip_prob": 1.0, "slip_mean_months": 6.0}, 4, months=20)
    t = env.now
    direct = 0.0
    for c in m.contracts:
        if c.provider == SOVEREIGN and c.status == "active":
            direct += c.revenue_eur_per_s * (c.end_s - max(t, c.start_s))
    assert m.backlog.value_at(t) == pytest.approx(direct, rel=1e-12)
    assert any(c.start_s > t for c in m.contracts if c.provider == SOVEREIGN)   # slipped: signed, not started


# ------------------------------------------------------------------ cancellations
def test_cancellation_hazard_matches_its_rate():
    """Cancellations per contract-year of exposure (signature to cancellation, natural end or
    the horizon) estimate the hazard: the rate is inside the exact Poisson 95 % interval."""
    rate, months = 1.0, 36
    n = exposure_y = 0.0
    for seed in range(1, 11):
        _, m = market({**NO_RISK, "cancel_rate_per_year": rate}, seed, months=months)
        horizon = months * MONTH_S
        cancelled = dict(m.public.cancellations)
        for c in public_contracts(m):
            t_sign = m.public.signed_s[c.id]
            end = cancelled.get(c.id, c.end_s if c.status != "active" else horizon)
            exposure_y += (min(end, horizon) - t_sign) / (12 * MONTH_S)
            n += c.id in cancelled
    lo = stats.chi2.ppf(0.025, 2 * n) / 2 / exposure_y
    hi = stats.chi2.ppf(0.975, 2 * (n + 1)) / 2 / exposure_y
    assert n > 100
    assert lo <= rate <= hi, (n, exposure_y, lo, hi)
    # and the test has power: a rate 30 % off is outside
    assert not lo <= rate * 1.3 <= hi


def test_cancelled_contracts_end_and_are_conserved_every_month():
    env, m = market({"cancel_rate_per_year": 2.0}, 5)
    for k in range(36):
        env.run(until=(k + 1) * MONTH_S)
        m.check_conservation()
        for v, cnt in m.counters.items():
            assert cnt["won"] == cnt["active"] + cnt["expired"] + cnt["churned"] + cnt["cancelled"], v
    tot = m.counters["total"]
    assert tot["cancelled"] > 0
    for c in m.contracts:
        if c.status == "cancelled":
            assert c.vertical == PUBLIC and c.start_s <= c.end_s <= env.now
            assert not c.active_at(env.now)
    assert all(c.status != "cancelled" for c in m.contracts if c.vertical != PUBLIC)


def test_cancellation_counter_breaks_conservation_if_dropped():
    """The identity would catch a cancellation that is not counted."""
    env, m = market({"cancel_rate_per_year": 3.0}, 6, months=24)
    assert m.counters["total"]["cancelled"] > 0
    m.counters["total"]["cancelled"] -= 1
    with pytest.raises(AssertionError):
        m.check_conservation()


# ------------------------------------------------------------------ slips
def test_slip_share_and_delay_distribution():
    p, mean = 0.4, 3.0
    slips, awards = [], 0
    for seed in range(1, 17):
        _, m = market({**NO_RISK, "slip_prob": p, "slip_mean_months": mean}, seed, months=36)
        awards += len(public_contracts(m, initial=False))
        slips += [x for _, x in m.public.slips]
        by_id = {c.id: c for c in m.contracts}
        for cid, x in m.public.slips:     # the whole term moves with the slip
            c = by_id[cid]
            if c.renewals == 0 and c.status == "active":
                assert c.end_s - c.start_s == pytest.approx(c.term_s)
    k = len(slips)
    ci = stats.binomtest(k, awards).proportion_ci(0.95)
    assert ci.low <= p <= ci.high and awards > 300
    assert stats.kstest(slips, "expon", args=(0, mean)).pvalue > 0.01
    assert stats.kstest(slips, "expon", args=(0, 2 * mean)).pvalue < 0.01   # power
    assert not public_contracts(m, initial=True) or all(c.id not in dict(m.public.slips) for c in public_contracts(m, True))


# ------------------------------------------------------------------ anchors and price
def test_anchor_share_size_and_term():
    spec = default_public_sector_spec()
    med = next(v for v in default_market_spec().verticals if v.name == PUBLIC).rate_per_s_median
    anchors, awards = [], 0
    for seed in range(1, 7):
        _, m = market({**NO_RISK, "anchor_share": 0.3}, seed, months=36)
        awards += len(public_contracts(m, initial=False))
        ids = set(m.public.anchors)
        anchors += [c for c in m.contracts if c.id in ids]
    ci = stats.binomtest(len(anchors), awards).proportion_ci(0.95)
    assert ci.low <= 0.3 <= ci.high
    assert all(c.term_s == pytest.approx(spec.anchor_term_months * MONTH_S) for c in anchors)
    assert all(not c.initial for c in anchors)
    # the size law over many draws: lognormal around factor x the vertical's median
    import dataclasses
    env, m = market({**NO_RISK, "anchor_share": 1.0}, 11)
    proto = public_contracts(m)[0]
    anchors = []
    for i in range(3000):
        c = dataclasses.replace(proto, id=f"x{i}", initial=False)
        m.public.on_sign(c, -1, initial=False)
        anchors.append(c)
    logs = np.log([c.rate_per_s for c in anchors])
    assert stats.kstest(logs, "norm", args=(math.log(med * spec.anchor_size_factor), spec.anchor_size_sigma)).pvalue > 0.01
    assert stats.kstest(logs, "norm", args=(math.log(med * 1.1 * spec.anchor_size_factor), spec.anchor_size_sigma)).pvalue < 0.01   # power


def test_public_price_is_discounted_and_leaves_the_choice_unchanged():
    _, a = market({**NO_RISK}, 7, months=30)
    _, b = market({**NO_RISK, "price_discount": 0.3}, 7, months=30)
    assert [(c.id, c.provider) for c in a.contracts] == [(c.id, c.provider) for c in b.contracts]
    for ca, cb in zip(a.contracts, b.contracts):
        f = 0.7 if ca.vertical == PUBLIC else 1.0
        assert cb.price_eur_per_mtok_in == pytest.approx(ca.price_eur_per_mtok_in * f)
        assert cb.price_eur_per_mtok_out == pytest.approx(ca.price_eur_per_mtok_out * f)
    assert any(c.renewals for c in b.contracts if c.vertical == PUBLIC)   # renewals re-priced too


def test_switched_off_is_the_plain_market():
    _, m = market({"enabled": False}, 1, months=36)
    assert not m.public.anchors and not m.public.slips and not m.public.cancellations
    assert m.counters["total"]["cancelled"] == 0
    s = default_market_spec().sovereign
    assert all(c.price_eur_per_mtok_in == s.price_eur_per_mtok_in for c in m.contracts if c.provider == SOVEREIGN)


def test_other_verticals_draws_do_not_move():
    """Own streams: switching the mechanism on leaves another vertical's contracts alone."""
    _, a = market({"enabled": False}, 3, months=24)
    _, b = market({"cancel_rate_per_year": 1.0, "anchor_share": 0.5, "slip_prob": 0.5}, 3, months=24)
    fin = lambda m: [(c.start_s, c.rate_per_s, c.provider) for c in m.contracts if c.vertical == "finance"][:40]
    assert fin(a) == fin(b)


def test_bad_public_sector_field_is_refused():
    with pytest.raises(ValueError):
        MarketSpec.model_validate({"public_sector": {"price_discount": 1.5}})
    with pytest.raises(ValueError):
        MarketSpec.model_validate({"public_sector": {"anchor_shar": 0.2}})


# ------------------------------------------------------------------ public capacity
def _small(months=3, **over):
    sc = load_scenario("small")
    ov = {"forecast.months": months, "forecast.windows_per_month": 2, "forecast.window_s": 20.0,
          "forecast.warmup_s": 5.0}
    ov.update({f"market.public_sector.{k}": v for k, v in over.items()})
    return with_overrides(sc, ov)


def test_public_capacity_eligibility_gate_lead_time_and_quota():
    from sim.forecast.forecast import _Delivered, _Tenants
    from sim.forecast.public_capacity import PUBLIC_SITE, PublicCapacity

    sc = _small(capacity_access=True, capacity_lead_months=2.0, capacity_gpus_max=3)
    env, m = market({}, 2, months=4)
    pc = PublicCapacity(sc, sc.market, env, sc.forecast)
    contracts = m.sovereign_contracts(3.5 * MONTH_S)
    assert {c.vertical for c in contracts} >= {"finance", PUBLIC}
    ledger = Ledger(month_s=MONTH_S)
    tenants, delivered = _Tenants(sc, sc.forecast), _Delivered()
    assert pc.place(1, contracts, ledger, tenants, delivered) == set()      # before the lead time
    placed = pc.place(3, contracts, ledger, tenants, delivered)
    by_id = {c.id: c for c in contracts}
    assert placed and all(by_id[i].vertical == PUBLIC for i in placed)       # only the eligible vertical
    gpus = pc.month_columns(3)["public_capacity_gpus"]
    assert 0 < gpus <= 3
    ledger.close(4 * MONTH_S)
    cost_cents = sum(c for (mo, site, _, line), c in ledger.cells.items() if site == PUBLIC_SITE and line == "rental")
    expected = gpus * public_capacity_terms().fixed_eur_per_gpu_h * MONTH_S / HOUR_S
    assert cost_cents / 100 == pytest.approx(expected, abs=0.01)
    # without access nothing is placed
    off = PublicCapacity(_small(), sc.market.model_copy(update={"public_sector": default_public_sector_spec()}), env, sc.forecast)
    assert off.place(3, contracts, Ledger(month_s=MONTH_S), tenants, delivered) == set()


def test_forecast_monthly_table_has_backlog_columns_that_roll_forward():
    from sim.forecast.forecast import simulate_forecast

    r = simulate_forecast(_small(4, cancel_rate_per_year=2.0, capacity_access=True, capacity_lead_months=1.0), 1)
    df = r.monthly
    for col in ("backlog_eur", "backlog_signed_eur", "backlog_recognised_eur", "backlog_cancelled_eur",
                "contracts_cancelled", "public_capacity_gpus", "public_capacity_tenants", "public_capacity_cost_eur"):
        assert col in df.columns, col
    prev = r.summary["backlog"]["opening_eur"]
    for _, row in df.iterrows():
        assert row["backlog_eur"] == pytest.approx(prev + row["backlog_signed_eur"] - row["backlog_recognised_eur"]
                                                   - row["backlog_cancelled_eur"], abs=0.005)
        prev = row["backlog_eur"]
    assert df.loc[0, "public_capacity_gpus"] == 0 and df["public_capacity_gpus"].iloc[1:].gt(0).all()
    assert (df["public_capacity_cost_eur"] <= df["rental_cost_eur"] + 1e-9).all()
    assert (df["revenue_eur"] - df["cost_eur"] - df["sla_credits_eur"] - df["gross_margin_eur"]).abs().max() < 1e-6
