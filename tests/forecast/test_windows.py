"""Each tenant's workload carries its vertical's SLA class (sim/forecast/windows.py)."""
from __future__ import annotations

import pytest
import simpy

from sim.core.rng import RandomStreams
from sim.demand.verticals import SLA_CLASSES, VERTICALS
from sim.forecast.windows import tenant_workload
from sim.market.market import MONTH_S, SOVEREIGN, Market
from sim.scenario import WorkloadSpec
from sim.scenario.market import default_market_spec


def _cls(vertical: str) -> tuple:
    c = SLA_CLASSES[VERTICALS[vertical].sla_class]
    return (c.ttft_s, c.tpot_s, c.attainment_target)


def test_market_sla_targets_are_the_verticals_sla_classes():
    for v in default_market_spec().verticals:
        assert (v.sla.ttft_s, v.sla.tpot_s, v.sla.attainment_target) == _cls(v.name), v.name
    assert len({_cls(v) for v in ("finance", "healthcare", "public_sector")}) == 3   # three different classes


def test_per_vertical_sla_targets_reach_the_tenant_workloads():
    env = simpy.Environment()
    m = Market(env, None, RandomStreams(4), lambda c: None)
    env.run(until=1 * MONTH_S)
    seen = set()
    for c in m.sovereign_contracts(0.5 * MONTH_S):
        w = WorkloadSpec.model_validate(tenant_workload(c, None))
        assert (w.sla.ttft_s, w.sla.tpot_s, w.sla.attainment_target) == _cls(c.vertical), c.id
        seen.add(c.vertical)
    assert seen == {"finance", "healthcare", "public_sector"}
    assert all(c.provider == SOVEREIGN for c in m.sovereign_contracts(0.5 * MONTH_S))


def test_sliced_forecast_work_estimate_counts_the_slice_not_the_fleet():
    """With [cells] each window simulates one slice: the estimate builds and bins the slice's
    replicas and the slice's share of the market's requests, so a month-0 fleet past the
    whole-fleet bin limit is not refused for work it never does."""
    from sim.forecast.forecast import _work_view
    from sim.forecast.windows import fleet_slice
    from sim.scenario import load_scenario, with_overrides
    from sim.scenario.estimate import LIMITS, check_work, estimate, WorkLimitError
    sc = load_scenario("provider")
    big = with_overrides(sc, {f"deployments.{i}.replicas": d.replicas * 3 for i, d in enumerate(sc.deployments)})
    whole = estimate(big)
    assert whole["timeseries_bins"] > LIMITS["timeseries_bins"]      # the old view refused it
    with pytest.raises(WorkLimitError):
        check_work(big)
    view = estimate(_work_view(big))
    sliced = fleet_slice(big, [], big.cells.max_replicas)[0]
    assert view["replicas"] == sum(d.replicas for d in sliced.deployments) < whole["replicas"] / 10
    f = sum(d.gpus for d in sliced.deployments) / sum(d.gpus for d in big.deployments)
    assert view["requests"] == pytest.approx(whole["requests"] * f, rel=1e-9)
    check_work(_work_view(big))   # not refused
