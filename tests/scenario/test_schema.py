"""The scenario schema: defaults carry sources, overrides re-validate, the default loads."""
from __future__ import annotations

import pytest

from sim.cli.run import schema_rows
from sim.scenario import ScenarioError, load_scenario, scenario_from_dict, with_overrides


def test_every_numeric_default_has_a_source_or_assumption():
    missing = []
    for path, typ, default, cons, desc in schema_rows():
        if default in ("required", "(table)", "None", "''", "[]", "{}") or default.startswith("'"):
            continue
        if not any(k in desc for k in ("Source", "assumption", "Run setting", "Label")):
            missing.append(f"{path} = {default}")
    assert not missing, "defaults without a source: " + ", ".join(missing)


def test_packaged_scenarios_load():
    sc = load_scenario()
    assert sc.deployments and sc.forecast is not None and sc.forecast.months == 36
    assert sc.market is not None and not sc.workloads  # tenants come from the market
    day = load_scenario("day")
    assert day.workloads and day.forecast is None
    with pytest.raises(ScenarioError, match="packaged scenarios: day, default"):
        load_scenario("nope")


def test_overrides_revalidate():
    sc = load_scenario()
    sc2 = with_overrides(sc, {"deployments.0.replicas": 7})
    assert sc2.deployments[0].replicas == 7
    with pytest.raises(ScenarioError, match="deployments\\[0\\].replicas"):
        with_overrides(sc, {"deployments.0.replicas": -2})
    with pytest.raises(ScenarioError, match="unknown field"):
        with_overrides(sc, {"deployments.0.nope": 1})


def test_unknown_site_reference_is_an_error():
    d = load_scenario().model_dump()
    d["deployments"][0]["site"] = "atlantis"
    with pytest.raises(ScenarioError, match="atlantis"):
        scenario_from_dict(d)
