"""Each tenant's workload carries its vertical's SLA class (sim/forecast/windows.py)."""
from __future__ import annotations

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
