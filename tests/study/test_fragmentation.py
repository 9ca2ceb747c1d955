"""The fragmentation experiment's core: layouts, residency and the attainment it reports."""
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))

import fragmentation as frag  # noqa: E402
from sim.serving.residency import site_allows  # noqa: E402


@pytest.fixture(scope="module")
def high_load_pair():
    """Same seed and load (90 req/s), par-1 given 2 of 8 replicas: pooled vs partitioned."""
    reps = frag.split(8, 2)
    return {pooled: frag.evaluate(90.0, reps, pooled, [3], 90.0, 15.0)[0] for pooled in (True, False)}


def test_split_keeps_total_and_sites():
    for p in range(1, 6):
        s = frag.split(8, p)
        assert sum(s.values()) == 8 and s["par-1"] == p
        assert set(s) == {n for n, _, _ in frag.SITES} and min(s.values()) >= 1


def test_pooled_has_no_restrictions_partitioned_follows_rules():
    reps = frag.split(8, 3)
    pooled = frag.build_scenario(30.0, reps, True, 60.0, 10.0)
    part = frag.build_scenario(30.0, reps, False, 60.0, 10.0)
    sites = {s.name: s for s in part.sites}
    assert len(sites) >= 3
    for w in pooled.workloads:
        assert w.residency.allowed_jurisdictions is None and not w.residency.required_certifications
    allowed = {w.vertical: {n for n, s in sites.items() if site_allows(s, w.residency)} for w in part.workloads}
    assert allowed["healthcare"] == {"par-1"} and allowed["public_sector"] == {"par-1"}
    assert allowed["finance"] == set(sites) and allowed["general"] == set(sites)
    # same demand in both layouts (only the residency rules differ)
    for a, b in zip(pooled.workloads, part.workloads):
        assert a.arrivals == b.arrivals and a.prompt_tokens == b.prompt_tokens and a.sla == b.sla
    grown = frag.with_replicas(part, {**reps, "par-1": 5})
    assert [d.replicas for d in grown.deployments] == [5, reps["fra-1"], reps["ams-1"], reps["mil-1"]]


def test_offered_rate_at_the_measured_hour():
    sc = frag.build_scenario(40.0, frag.split(8, 3), False, 60.0, 10.0)
    from sim.demand import verticals as demand
    total = sum(w.arrivals.rate_per_s * demand.profile(w.vertical)[frag.HOUR_OF_WEEK] for w in sc.workloads)
    assert total == pytest.approx(40.0)


def test_eligibility_and_no_violations(high_load_pair):
    pooled, part = high_load_pair[True], high_load_pair[False]
    assert set(pooled["eligible_replicas"].values()) == {8}
    assert part["eligible_replicas"] == {"finance": 8, "healthcare": 2, "public_sector": 2, "general": 8}
    assert pooled["residency_violations"] == 0 and part["residency_violations"] == 0


def test_fr_only_verticals_pay_for_the_partition(high_load_pair):
    """Under high load with a small French site, HDS/SecNumCloud tenants do worse partitioned."""
    pooled, part = high_load_pair[True], high_load_pair[False]
    for v in ("healthcare", "public_sector"):
        assert part["per_vertical"][v]["attainment"] < pooled["per_vertical"][v]["attainment"] - 0.1, v
    # both layouts saw the same requests (common random numbers)
    for v in frag.VERTICALS:
        assert part["per_vertical"][v]["counted"] == pooled["per_vertical"][v]["counted"]


def test_attainment_counts_unfinished_and_rejected_as_missed():
    sc = frag.build_scenario(10.0, frag.split(8, 3), False, 200.0, 10.0)
    fin = next(w for w in sc.workloads if w.vertical == "finance")
    rows = [  # (arrival, outcome, ttft, tpot)
        (5.0, "completed", 0.1, 0.01),     # before warm-up: not counted
        (20.0, "completed", 0.1, 0.01),    # met
        (30.0, "completed", 0.1, np.nan),  # one output token: TPOT not applicable, met
        (40.0, "completed", 0.9, 0.01),    # TTFT 0.9 > 0.45: missed
        (50.0, "rejected", np.nan, np.nan),
        (60.0, "in_flight", np.nan, np.nan),
        (150.0, "in_flight", np.nan, np.nan),  # in the tail (horizon - TAIL_S): not counted
    ]
    df = pd.DataFrame(rows, columns=["arrival_s", "outcome", "ttft_s", "tpot_s"])
    df["workload"] = fin.name
    a = frag.attainment(df, sc)["finance"]
    assert a["counted"] == 5
    assert a["attainment"] == pytest.approx(2 / 5)
    assert a["rejected_share"] == pytest.approx(1 / 5) and a["unfinished_share"] == pytest.approx(1 / 5)


def test_mean_ci():
    m, h = frag.mean_ci([1.0, 2.0, 3.0])
    assert m == pytest.approx(2.0) and h == pytest.approx(4.302653 * 1.0 / np.sqrt(3), rel=1e-5)
