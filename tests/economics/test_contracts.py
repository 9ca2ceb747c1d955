"""Contract terms, their defaults' sources, the schema blocks and the capacity policy."""
from __future__ import annotations

import csv
import math
import re

import pytest
import simpy

from sim.economics.capacity import CapacityManager, PolicyParams
from sim.economics.contracts import (DEFAULTS, HOUR_S, MONTH_S, YEAR_S, Tranche, break_even_utilisation, owned_terms, partner_terms, rental_terms)
from sim.economics.ledger import Ledger
from sim.core.resources import model_file
from sim.scenario import ScenarioError, load_scenario, scenario_from_dict


def _items(name):
    with open(model_file("economics", name), newline="") as f:
        return {row["item"] for row in csv.DictReader(f)}


def test_every_default_cites_a_real_row_or_says_assumption():
    """A default's source either quotes an `item` of a models/economics CSV that exists, or
    contains the word `assumption`."""
    for key, dflt in DEFAULTS.items():
        m = re.match(r"(\w+\.csv) '([^']+)'", dflt.source)
        if m:
            assert m.group(2) in _items(m.group(1)), (key, m.group(2))
        else:
            assert "assumption" in dflt.source or re.match(r"\w+\.csv ", dflt.source), key


def test_readme_lists_every_default():
    text = model_file("economics", "README.md").read_text()
    for key, dflt in DEFAULTS.items():
        assert f"`{key}`" in text, key
        assert f"{dflt.value:.6g}" in text, key


def test_terms_arithmetic_from_published_prices():
    od = rental_terms()
    assert od.fixed_eur_per_gpu_h == pytest.approx(25.3308 / 8)
    cm = rental_terms(term="committed")
    assert cm.fixed_eur_per_gpu_h == pytest.approx(25.3308 / 8 * 0.74)
    assert cm.min_term_s == YEAR_S
    pt = partner_terms()
    assert pt.fixed_eur_per_gpu_h * 730 == pytest.approx(1940.0)
    own = owned_terms(jurisdiction="FR")
    dep_h = 317000.0 * 0.86 / 8 / (4 * 8760)   # HGX H100 server quotation per GPU, host included
    colo_h = 155.0 * 10.2 / 8 / 730
    assert own.fixed_eur_per_gpu_h == pytest.approx(dep_h + colo_h)
    assert own.power_eur_per_gpu_s(1.0) * HOUR_S == pytest.approx(0.9375 * 1.58 * 0.1534)
    assert owned_terms(jurisdiction="DE").power_eur_per_kwh == 0.178
    assert owned_terms(jurisdiction="IT").power_eur_per_kwh == 0.2179


def test_break_even_formula_equalises_costs():
    od, own = rental_terms(), owned_terms(jurisdiction="FR")
    u = break_even_utilisation(od, own)
    assert 0 < u < 1
    own_per_useful_h = own.cost_eur_per_gpu_h(u) / u
    assert own_per_useful_h == pytest.approx(od.cost_eur_per_gpu_h(1.0))
    # a rental cheaper than owning's idle power never loses
    assert break_even_utilisation(rental_terms(price_eur_per_gpu_h=0.01), own) == math.inf


def test_release_waits_for_notice_and_minimum_term():
    cm = rental_terms(term="committed")
    tr = Tranche("par", cm, 8, start_s=100.0)
    assert tr.release_effective_s(200.0) == 100.0 + YEAR_S            # min term binds
    late = 100.0 + YEAR_S + 5.0
    assert tr.release_effective_s(late) == late + MONTH_S             # notice binds
    od = Tranche("par", rental_terms(), 2, start_s=0.0)
    assert od.release_effective_s(3.0) == 3.0


def test_scenarios_without_economics_blocks_still_validate_and_bad_contracts_fail():
    sc = load_scenario("day")
    assert sc.pricing == [] and not sc.faults.enabled and sc.capacity_policy.kind == "fixed"
    data = sc.model_dump(mode="python")
    data["sites"] = [{"name": "par", "jurisdiction": "FR",
                      "contracts": [{"kind": "lease", "name": "x", "gpus": 8}]}]
    with pytest.raises(ScenarioError, match=r"sites\[0\]\.contracts\[0\]"):
        scenario_from_dict(data)
    data["sites"][0]["contracts"] = [{"kind": "rental", "name": "x", "gpus": 8, "committed_discount": 1.5}]
    with pytest.raises(ScenarioError, match="committed_discount"):
        scenario_from_dict(data)
    data["sites"][0]["contracts"] = [{"kind": "rental", "name": "x", "gpus": 8},
                                     {"kind": "owned_colo", "name": "x", "gpus": 8}]
    with pytest.raises(ScenarioError, match="unique"):
        scenario_from_dict(data)


# ---------------------------------------------------------------- capacity policy
def test_threshold_policy_orders_after_lead_time_and_releases_after_notice():
    env = simpy.Environment()
    led = Ledger()
    terms = rental_terms("cm", "committed", lead_time_s=5 * HOUR_S, min_term_s=48 * HOUR_S, notice_s=10 * HOUR_S)
    busy = {"gpu_s": 0.0, "share": 1.0}
    ready, leaving = [], []
    mgr = CapacityManager(env, led, "par", terms,
                          PolicyParams("threshold", HOUR_S, 0.8, 0.3, step_gpus=8, min_gpus=8, max_gpus=24),
                          busy_gpu_s=lambda: busy["gpu_s"],
                          on_ready=lambda tr: ready.append((env.now, tr.gpus)),
                          on_leaving=lambda tr, eff: leaving.append((env.now, eff)),
                          initial=[Tranche("par", terms, 8, 0.0)])

    def load():
        while True:
            yield env.timeout(60.0)
            busy["gpu_s"] += busy["share"] * mgr.gpus_in_force() * 60.0
    env.process(load())
    env.run(until=3 * HOUR_S + 1)
    assert mgr.orders == 1 and mgr.gpus_in_transit() == 8      # one order in transit at a time
    env.run(until=6 * HOUR_S + 1)
    assert ready == [(6 * HOUR_S, 8)]                           # ordered at 1 h, arrives 5 h later
    env.run(until=13 * HOUR_S + 1)
    assert mgr.gpus_in_force() == 24                            # capped at max_gpus
    busy["share"] = 0.0
    env.run(until=200 * HOUR_S)
    assert mgr.gpus_in_force() == 8                             # never under min_gpus
    for asked, eff in leaving:
        assert eff >= asked + 10 * HOUR_S                        # notice
    led.close(200 * HOUR_S)
    # billed GPU-hours = what the tranches were in force
    billed = sum(tr.gpus * (min(tr.end_s or 200 * HOUR_S, 200 * HOUR_S) - tr.start_s) for tr in led.tranches)
    assert led.report()["rental_cents"] == pytest.approx(billed / HOUR_S * terms.fixed_eur_per_gpu_h * 100, abs=len(led.tranches))
    for tr in led.tranches:
        if tr.end_s is not None:
            assert tr.end_s - tr.start_s >= 48 * HOUR_S         # minimum term


def test_forecast_policy_has_capacity_when_demand_arrives():
    env = simpy.Environment()
    terms = owned_terms("own", "FR", lead_time_s=10 * 24 * HOUR_S)
    demand = lambda t: 0.0 if t < 30 * 24 * HOUR_S else 40.0          # noqa: E731
    mgr = CapacityManager(env, Ledger(), "par", terms, PolicyParams("forecast", 24 * HOUR_S, step_gpus=8, headroom=0.1),
                          forecast_gpus=demand)
    env.run(until=30 * 24 * HOUR_S + 1)
    assert mgr.gpus_in_force() == 48                               # ceil(40 x 1.1 / 8) x 8
    assert all(tr.ordered_s <= 20 * 24 * HOUR_S for tr in mgr.tranches)


def test_econ_run_cli_reports_margin_and_bad_input_is_one_line(capsys, tmp_path, monkeypatch):
    from sim.cli import main
    from pathlib import Path
    sc = str(Path(__file__).resolve().parents[2] / "experiments" / "scenarios" / "contracts_faults.toml")
    monkeypatch.chdir(tmp_path)   # a failed run still writes its folder (runs/<name>): keep it out of the checkout
    assert main(["econ", "run", sc, "--set", "simulation.horizon_s=120"]) == 0
    out = capsys.readouterr().out
    assert "margin   EUR" in out and "cost per million tokens" in out and "availability" in out
    assert main(["econ", "run", sc, "--set", "sites.0.contracts.0.gpus=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "contracts provide 2" in err


def test_default_terms_for_sites_as_the_forecast_uses_them():
    from sim.economics.contracts import default_terms_for
    from sim.scenario import SiteSpec
    assert default_terms_for(None, None).fixed_eur_per_gpu_h == pytest.approx(25.3308 / 8)
    site = SiteSpec.model_validate({"name": "par", "jurisdiction": "FR", "contracts": [
        {"kind": "owned_colo", "name": "own", "gpus": 24}, {"kind": "rental", "name": "od", "gpus": 8}]})
    t = default_terms_for(None, site)
    own, od = owned_terms(jurisdiction="FR"), rental_terms()
    assert t.fixed_eur_per_gpu_h == pytest.approx(0.75 * own.fixed_eur_per_gpu_h + 0.25 * od.fixed_eur_per_gpu_h)
    assert t.power_eur_per_gpu_s(0.5) == pytest.approx(0.75 * own.power_eur_per_gpu_s(0.5))
