"""Per-site and per-deployment columns of a forecast (sim/forecast/sites.py): money read from
the ledger reconciles to the cent (sites sum to the fleet, owned + leased = the fleet), a site
no tenant may use is warned about and shows 0 utilisation, per-site GPUs sum to the fleet's."""
from __future__ import annotations

import pandas as pd
import pytest

from sim.forecast.forecast import run_forecast
from sim.forecast.sites import column_site
from sim.scenario import load_scenario, scenario_from_dict, with_overrides
from sim.study.report import site_table
from sim.study.warnings import forecast_warnings

QUICK = {"forecast.months": 3, "forecast.windows_per_month": 2, "forecast.window_s": 30.0, "forecast.warmup_s": 10.0}


def two_sites(fra_jurisdiction: str = "DE", policy: str = "fixed"):
    """The small scenario cut to two sites: par-1 on committed rental (leased), fra-1 on
    owned servers in colocation (owned)."""
    d = with_overrides(load_scenario("small"), QUICK).model_dump(mode="python")
    d["sites"] = [s for s in d["sites"] if s["name"] in ("par-1", "fra-1")]
    for s in d["sites"]:
        if s["name"] == "fra-1":
            s["jurisdiction"] = fra_jurisdiction
            s["contracts"] = [{"kind": "owned_colo", "name": "fra-owned", "gpus": 4}]
    d["deployments"] = [x for x in d["deployments"] if x["site"] in ("par-1", "fra-1")]
    d["capacity_policy"] = dict(d["capacity_policy"], kind=policy)
    return scenario_from_dict(d, "two sites")


def _cents(x: float) -> int:
    c = round(x * 100)
    assert abs(x * 100 - c) < 1e-6, x      # a whole number of cents
    return c


@pytest.fixture(scope="module")
def owned_and_leased(tmp_path_factory):
    return run_forecast(two_sites(), seed=4, out_dir=tmp_path_factory.mktemp("two"), figures=False)


def test_site_and_owned_leased_costs_reconcile_to_the_cent_every_month(owned_and_leased):
    r = owned_and_leased
    m = r.monthly
    sites = ["par-1", "fra-1"]
    for _, row in m.iterrows():
        fleet = _cents(row["cost_eur"]) - _cents(row["compliance_cost_eur"])   # the sites carry the fleet's cost lines
        assert sum(_cents(row[f"site_{column_site(s)}_cost_eur"]) for s in sites) == fleet
        assert _cents(row["owned_cost_eur"]) + _cents(row["leased_cost_eur"]) == fleet
        # owned: the owned tranche's lines (fra-1); leased: the rental (par-1)
        assert _cents(row["owned_cost_eur"]) == _cents(row["site_fra_1_cost_eur"]) > 0
        assert _cents(row["leased_cost_eur"]) == _cents(row["site_par_1_cost_eur"]) > 0
        assert _cents(row["owned_cost_eur"]) == (_cents(row["depreciation_cost_eur"]) + _cents(row["colocation_cost_eur"])
                                                 + _cents(row["power_cost_eur"]))
    # the deployment table: one row per month x deployment, its costs sum to each site-month's
    dep = r.deployments
    assert len(dep) == len(m) * 2
    for (mo, site), g in dep.groupby(["month", "site"]):
        assert sum(_cents(c) for c in g["cost_eur"]) == _cents(m.loc[mo, f"site_{column_site(site)}_cost_eur"])
    on_disk = pd.read_csv(r.out_dir / "monthly_deployments.csv")
    assert list(on_disk.columns) == ["month", "site", "deployment", "model", "gpu", "gpus", "request_utilisation", "cost_eur"]
    assert "site_par_1_request_utilisation" in pd.read_csv(r.out_dir / "monthly.csv").columns
    # the summary's horizon totals and the report's table
    s = r.summary
    assert _cents(s["owned_cost_eur"]) + _cents(s["leased_cost_eur"]) == sum(_cents(c) - _cents(x) for c, x in
                                                                               zip(m["cost_eur"], m["compliance_cost_eur"]))
    header, rows = site_table(s, len(m))
    assert header[0] == "Site" and [row[0] for row in rows] == sorted(sites)


def test_site_request_utilisation_is_the_fleet_definition_per_site(owned_and_leased):
    m = owned_and_leased.monthly
    # both sites serve tenants; every site's load is a share of its capacity, the fleet's lies between
    for _, row in m.iterrows():
        us = [row["site_par_1_request_utilisation"], row["site_fra_1_request_utilisation"]]
        assert all(0 <= u <= 1.05 for u in us)
        assert min(us) - 1e-12 <= row["request_utilisation"] <= max(us) + 1e-12


def test_a_site_no_tenant_may_use_is_warned_about_and_idle():
    r = run_forecast(two_sites(fra_jurisdiction="US"), seed=4)
    m = r.monthly
    assert (m["site_fra_1_request_utilisation"] == 0).all()
    assert (m["site_fra_1_gpus"] == 4).all() and (m["site_fra_1_cost_eur"] > 0).all()
    assert (m["site_par_1_request_utilisation"] > 0).all()
    ws = forecast_warnings(m, r.scenario)
    line = [w for w in ws if w.startswith("site fra-1 is under")]
    assert len(line) == 1 and "no tenant can use it" in line[0] and "residency" in line[0], ws
    assert not any(w.startswith("site par-1 is under") and "no tenant" in w for w in ws)


def test_per_site_gpus_sum_to_the_fleet_under_a_capacity_policy():
    # a threshold no month's load stays under: the policy orders at each look it may
    sc = with_overrides(two_sites(policy="threshold"), {"capacity_policy.step_gpus": 2, "capacity_policy.high_utilisation": 1e-4,
                                                        "capacity_policy.low_utilisation": 0.0, "forecast.months": 4})
    r = run_forecast(sc, seed=2)
    m = r.monthly
    per_site = m["site_par_1_gpus"] + m["site_fra_1_gpus"]
    assert (per_site == m["gpus_in_force"]).all()
    assert m["gpus_in_force"].iloc[-1] > m["gpus_in_force"].iloc[0]       # the policy grew the fleet
    assert (m["site_par_1_gpus"].diff().fillna(0) != 0).any() or (m["site_fra_1_gpus"].diff().fillna(0) != 0).any()
    dep = r.deployments
    assert (dep.groupby("month")["gpus"].sum().values == m["gpus"].values).all()
