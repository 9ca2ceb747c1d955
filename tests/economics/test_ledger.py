"""The ledger conserves money to the cent and bills exactly what the terms say."""
from __future__ import annotations

from collections import defaultdict
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.economics.contracts import HOUR_S, MONTH_S, Tranche, owned_terms, partner_terms, rental_terms
from sim.economics.ledger import (COST_LINES, PEUR_PER_CENT, REVENUE_LINES, UNALLOCATED, Ledger, Price, default_credit_tiers)


class FakeReplica:
    def __init__(self, key, site, gpus):
        self.key, self.site, self.gpus, self.busy_s = key, site, gpus, 0.0


def _terms(kind, site_j="FR"):
    return {"on_demand": lambda: rental_terms("od", "on_demand"),
            "committed": lambda: rental_terms("cm", "committed"),
            "partner": lambda: partner_terms("pt"),
            "owned": lambda: owned_terms("own", site_j)}[kind]()


def _round_half_up(x: Fraction) -> int:
    return int((x + Fraction(1, 2)) // 1)


tranche_st = st.tuples(
    st.sampled_from(["on_demand", "committed", "partner", "owned"]),
    st.sampled_from(["par", "fra"]),
    st.integers(0, 16),                         # gpus
    st.floats(0, 2.5 * MONTH_S),                # start
    st.one_of(st.none(), st.floats(0, 3 * MONTH_S)),  # end asked (absolute), may be None
)
request_st = st.tuples(
    st.floats(0, 3 * MONTH_S),                  # completion time
    st.integers(0, 2),                          # workload
    st.sampled_from(["par", "fra"]),
    st.integers(1, 20000), st.integers(1, 2000),
    st.booleans(),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tranches=st.lists(tranche_st, max_size=5), requests=st.lists(request_st, max_size=40),
       busy=st.lists(st.floats(0, 1), min_size=2, max_size=2),
       ticks=st.lists(st.floats(0, 3 * MONTH_S), max_size=8),
       prices=st.lists(st.tuples(st.floats(0, 20), st.floats(0, 60)), min_size=3, max_size=3))
def test_money_is_conserved_to_the_cent(tranches, requests, busy, ticks, prices):
    """Random contracts, requests and accrual instants: (1) every account's posted cents are
    its exact amount rounded once; (2) every breakdown (month, site, vertical) sums to the
    totals line by line; (3) revenue - every cost line = margin in each of them; (4) the
    totals agree with an independent exact (Fraction) computation."""
    reps = [FakeReplica(1, "par", 8), FakeReplica(2, "fra", 8)]
    end_s = 3 * MONTH_S
    led = Ledger(fleet=lambda: reps)
    trs = []
    for kind, site, gpus, start, end in tranches:
        tr = Tranche(site, _terms(kind), gpus, start)
        led.add_tranche(tr)
        trs.append((tr, end))
    verticals = ["finance", "healthcare", "public_sector"]
    for i, (pin, pout) in enumerate(prices):
        led.set_price(f"w{i}", Price.from_eur_per_mtok(round(pin, 4), round(pout, 4), default_credit_tiers(0.99)))
    events = sorted([(t, "tick", None) for t in ticks] + [(r[0], "req", r) for r in requests]
                    + [(min(e, end_s) if e is not None else end_s + 1, "end", tr) for tr, e in trs if e is not None],
                    key=lambda e: e[0])
    last = 0.0
    for t, kind, obj in events:
        if t > end_s:
            continue
        for r, b in zip(reps, busy):   # replicas busy a share `b` of the time
            r.busy_s += b * (t - last)
        last = max(last, t)
        led.advance(t)
        if kind == "req":
            _, w, site, pin, pout, met = obj
            led.record_request(t, f"w{w}", verticals[w], site, pin, pout, met)
        elif kind == "end":
            led.end_tranche(obj, max(t, obj.start_s))
    for r, b in zip(reps, busy):
        r.busy_s += b * (end_s - last)
    led.close(end_s)

    # (1) each account: posted cents == exact pEUR rounded half-up to cents, once
    for acct, ex in led.exact_peur.items():
        assert led.posted_cents[acct] == _round_half_up(Fraction(ex, PEUR_PER_CENT)), acct

    rep = led.report()
    lines = REVENUE_LINES + COST_LINES
    # (2) breakdowns sum to the totals; (3) margin identity everywhere
    for group in ("by_month", "by_site", "by_vertical"):
        for ln in lines:
            assert sum(g[f"{ln}_cents"] for g in rep[group].values()) == rep[f"{ln}_cents"], (group, ln)
        for g in list(rep[group].values()) + [rep]:
            assert g["revenue_cents"] - sum(g[f"{ln}_cents"] for ln in COST_LINES) == g["margin_cents"]
            assert g["revenue_cents"] == g["revenue_input_cents"] + g["revenue_output_cents"]
    # (4) independent exact computation of fixed charges and revenue (to the cent per account)
    exact = defaultdict(Fraction)
    for tr, _ in trs:
        hi = tr.end_s if tr.end_s is not None else end_s
        hi = min(hi, end_s)
        dur = Fraction(max(0.0, hi - tr.start_s))
        for line, rate in tr.terms.fixed_eur_per_gpu_s.items():
            if line == "depreciation":
                d = min(dur, Fraction(tr.terms.life_s))
                if tr.end_s is not None and tr.end_s <= end_s:   # released: book value written off
                    d = Fraction(tr.terms.life_s)
                exact[line] += Fraction(rate) * tr.gpus * d
            else:
                exact[line] += Fraction(rate) * tr.gpus * dur
    for t, w, site, pin, pout, met in requests:
        if t <= end_s:
            exact["revenue_input"] += Fraction(pin * led.prices[f"w{w}"].input_peur_per_token, PEUR_PER_CENT) / 100
            exact["revenue_output"] += Fraction(pout * led.prices[f"w{w}"].output_peur_per_token, PEUR_PER_CENT) / 100
    n_accts = defaultdict(int)
    for (line, *_rest) in led.exact_peur:
        n_accts[line] += 1
    for line in ("rental", "partner", "colocation", "revenue_input", "revenue_output", "depreciation"):
        got = rep[f"{line}_cents"]
        want = exact[line] * 100
        # each account rounds once (<= 1/2 cent); float time arithmetic adds < 1 cent overall
        assert abs(got - want) <= n_accts[line] * Fraction(1, 2) + 1, (line, got, float(want))


def test_idle_fleet_for_a_month_costs_exactly_its_fixed_charges():
    reps = [FakeReplica(1, "par", 8)]  # hosted on the owned GPUs, never busy
    led = Ledger(fleet=lambda: reps)
    own = owned_terms("own", "FR")
    od = rental_terms("od", "on_demand")
    cm = rental_terms("cm", "committed")
    pt = partner_terms("pt")
    for terms, site, gpus in ((own, "par", 8), (od, "par", 4), (cm, "fra", 16), (pt, "fra", 2)):
        led.add_tranche(Tranche(site, terms, gpus, 0.0))
    for k in range(1, 731):            # hourly accrual, as the engine hook does
        led.advance(k * HOUR_S)
    led.close(MONTH_S)
    rep = led.report()

    def cents(eur):
        return round(eur * 100)
    # hand computation with the published inputs, not the ledger's rates
    assert rep["rental_cents"] == cents(4 * 730 * 25.3308 / 8) + cents(16 * 730 * 25.3308 / 8 * (1 - 0.26))
    assert rep["partner_cents"] == cents(2 * 1940.0)
    assert rep["colocation_cents"] == cents(8 * 155.0 * 10.2 / 8)
    assert rep["depreciation_cents"] == cents(8 * 317000.0 * 0.86 / 8 / (4 * 12))
    idle_kwh = 8 * 60.0 / 1000 * 730 * 1.58
    assert rep["power_cents"] == cents(idle_kwh * 0.1534)
    assert led.energy_kwh == pytest.approx(idle_kwh, rel=1e-12)
    assert rep["sla_credits_cents"] == 0 and rep["revenue_cents"] == 0
    assert rep["margin_cents"] == -rep["costs_cents"]
    assert set(rep["by_vertical"]) == {UNALLOCATED}
    assert set(rep["by_month"]) == {"0"}


def test_power_follows_busy_time():
    reps = [FakeReplica(1, "par", 8)]
    led = Ledger(fleet=lambda: reps)
    own = owned_terms("own", "FR")
    led.add_tranche(Tranche("par", own, 8, 0.0))
    reps[0].busy_s = 0.25 * 10 * HOUR_S   # busy a quarter of 10 hours
    led.close(10 * HOUR_S)
    busy_gpu_h, idle_gpu_h = 8 * 2.5, 8 * 7.5
    kwh = (busy_gpu_h * 937.5 + idle_gpu_h * 60.0) / 1000 * 1.58
    assert led.energy_kwh == pytest.approx(kwh, rel=1e-12)
    assert led.report()["power_cents"] == round(kwh * 0.1534 * 100)


def test_sla_credits_by_tier_and_allocation_to_verticals():
    led = Ledger()
    led.add_tranche(Tranche("par", rental_terms(), 1, 0.0))
    led.set_price("a", Price.from_eur_per_mtok(1.0, 3.0, default_credit_tiers(0.99)))
    led.set_price("b", Price.from_eur_per_mtok(1.0, 3.0, default_credit_tiers(0.99)))
    # workload a: 98 of 100 met (under 0.99, over 0.95) -> 10%; b: 90 of 100 -> 25%
    for i in range(100):
        led.record_request(10.0 + i, "a", "finance", "par", 1_000_000, 0, sla_met=i >= 2)
        led.record_request(10.0 + i, "b", "healthcare", "par", 1_000_000, 0, sla_met=i >= 10)
    led.close(HOUR_S)
    rep = led.report()
    assert rep["revenue_cents"] == 2 * 100 * 100
    assert rep["by_vertical"]["finance"]["sla_credits_cents"] == 1000
    assert rep["by_vertical"]["healthcare"]["sla_credits_cents"] == 2500
    # rental (one GPU-hour) split 50/50 by tokens between the two verticals
    assert rep["by_vertical"]["finance"]["rental_cents"] + rep["by_vertical"]["healthcare"]["rental_cents"] \
        == rep["rental_cents"] == round(25.3308 / 8 * 100)
    assert abs(rep["by_vertical"]["finance"]["rental_cents"] - rep["by_vertical"]["healthcare"]["rental_cents"]) <= 1


def test_owned_release_writes_off_book_value():
    led = Ledger()
    own = owned_terms("own", "FR")
    tr = Tranche("par", own, 8, 0.0)
    led.add_tranche(tr)
    led.advance(MONTH_S)
    led.end_tranche(tr, 2 * MONTH_S)
    led.close(3 * MONTH_S)
    assert led.report()["depreciation_cents"] == round(8 * 317000.0 * 0.86 / 8 * 100)
    assert led.report()["colocation_cents"] == round(2 * 8 * 155.0 * 10.2 / 8 * 100)


def test_ledger_refuses_time_going_backwards():
    led = Ledger()
    led.advance(100.0)
    with pytest.raises(ValueError):
        led.advance(50.0)
