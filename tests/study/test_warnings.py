"""Warnings (sim/study/warnings.py): each fires on a scenario built to trigger it and stays
silent on a healthy one; a run's summary.json carries them; the default scenario raises
no residency warning."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from sim.scenario import load_scenario, scenario_from_dict, with_overrides
from sim.study.run import run
from sim.study.warnings import (forecast_warnings, queue_growth, run_warnings, scenario_warnings,
                                unusable_deployments)

SHORT = {"simulation.horizon_s": 600.0}


def day(**over):
    return with_overrides(load_scenario("day"), {**SHORT, **over})


def two_sites(fra_deployments: int = 1) -> dict:
    """Paris and Frankfurt; the only tenant may be served in France alone."""
    deps = [{"name": "par", "site": "par-1", "model": "mixtral-8x7b", "tp": 2, "replicas": 2}]
    deps += [{"name": f"fra{i}", "site": "fra-1", "model": "mixtral-8x7b", "tp": 2, "replicas": 2}
             for i in range(fra_deployments)]
    return {
        "name": "two-sites",
        "simulation": {"horizon_s": 300.0},
        "sites": [{"name": "par-1", "jurisdiction": "FR", "certifications": ["HDS"]},
                  {"name": "fra-1", "jurisdiction": "DE", "certifications": ["BSI-C5"]}],
        "deployments": deps,
        "workloads": [{"name": "health", "model": "mixtral-8x7b", "vertical": "healthcare",
                       "arrivals": {"kind": "poisson", "rate_per_s": 20.0},
                       "prompt_tokens": {"dist": "constant", "value": 500},
                       "output_tokens": {"dist": "constant", "value": 100},
                       "residency": {"allowed_jurisdictions": ["FR"], "required_certifications": ["HDS"]}}],
    }


@pytest.fixture(scope="module")
def healthy():
    """A day at a moderate load (about 30 % of request capacity): nothing to warn about."""
    return run(day(**{"workloads.0.arrivals.rate_per_s": 40.0}))


@pytest.fixture(scope="module")
def overloaded():
    return run(day(**{"workloads.0.arrivals.rate_per_s": 250.0}))


def test_healthy_run_has_no_warnings(healthy):
    assert 0.1 < healthy.summary["request_utilisation"] < 0.9
    assert healthy.summary["warnings"] == []
    assert healthy.summary["busy_share"] == healthy.summary["gpu_utilisation"]


def test_unusable_site_is_flagged_before_and_after_a_run():
    sc = scenario_from_dict(two_sites(1))
    assert set(unusable_deployments(sc)) == {"fra0"}
    (w,) = scenario_warnings(sc)
    assert w.startswith("deployment fra0 (4 GPUs at fra-1) can serve no tenant") and "residency" in w
    r = run(sc)
    assert w in r.summary["warnings"]
    # the idle deployment is not flagged twice (once as unusable is enough)
    assert not any("fra0" in x and "served almost nothing" in x for x in r.summary["warnings"])
    # a site whose every deployment is unusable is named as a site
    (ws,) = scenario_warnings(scenario_from_dict(two_sites(2)))
    assert ws.startswith("site fra-1: its 8 GPUs can serve no tenant")
    # and the France-only site is fine
    ok = two_sites(0)
    assert scenario_warnings(scenario_from_dict(ok)) == []


def test_a_model_nobody_asks_for_is_flagged():
    d = two_sites(0)
    d["deployments"].append({"name": "llama", "site": "par-1", "model": "llama-3-8b", "replicas": 1})
    (w,) = scenario_warnings(scenario_from_dict(d))
    assert "deployment llama" in w and "no tenant asks for its model llama-3-8b" in w


def test_idle_deployment_from_the_summary():
    s = {"deployments": {"a": {"replicas": 2, "gpus": 4, "site": "x", "output_tokens": 0, "request_utilisation": 0.0},
                         "b": {"replicas": 2, "gpus": 4, "site": "y", "output_tokens": 9, "request_utilisation": 0.5}}}
    (w,) = run_warnings(s)
    assert w.startswith("deployment a (4 GPUs at x) served almost nothing")


def test_idle_fleet_is_flagged_on_the_day_scenario():
    r = run(day())
    assert r.summary["request_utilisation"] < 0.1 and r.summary["busy_share"] > 0.9
    (w,) = r.summary["warnings"]
    assert w.startswith("the fleet ran at ") and "busy share" in w and "paid for idle" in w


def test_overload_flags_saturation_sla_and_queue_growth(overloaded):
    ws = overloaded.summary["warnings"]
    assert any("near saturation" in w for w in ws)
    assert any(w.startswith("workload chat: SLA attainment") and "below its 99.0 % target" in w for w in ws)
    assert any(w.startswith("the queue grows through the run") for w in ws)
    assert queue_growth(overloaded.timeseries) > 1000


def test_queue_growth_quiet_on_a_steady_run_and_fallback_without_time_series(healthy, overloaded):
    assert abs(queue_growth(healthy.timeseries)) < 20
    without = [w for w in run_warnings(overloaded.summary) if "queue grows" in w]
    assert without and "in flight at the horizon" in without[0]
    assert not [w for w in run_warnings(healthy.summary) if "queue" in w]


def test_mostly_rejected_stream():
    small = {
        "name": "rejected", "simulation": {"horizon_s": 60.0},
        "deployments": [{"name": "d", "model": "m", "replicas": 1,
                         "step_time": {"kind": "constant", "decode_step_s": 0.02, "kv_cache_tokens": 2000}}],
        "workloads": [{"name": "w", "model": "m", "arrivals": {"kind": "poisson", "rate_per_s": 2.0},
                       "prompt_tokens": {"dist": "uniform", "low": 100, "high": 8000},
                       "output_tokens": {"dist": "constant", "value": 10}}],
    }
    r = run(scenario_from_dict(small))
    ws = [w for w in r.summary["warnings"] if "rejected" in w]
    assert len(ws) == 1 and ws[0].startswith("workload w: ") and "exceeds_kv_capacity" in ws[0]


def test_summary_json_carries_the_warnings(tmp_path):
    r = run(day(), out_dir=tmp_path / "r")
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert s["warnings"] == r.summary["warnings"] and len(s["warnings"]) == 1
    assert s["busy_share"] == s["gpu_utilisation"]


# ------------------------------------------------------------------ forecasts
def monthly(**cols) -> pd.DataFrame:
    n = 6
    base = {"month": list(range(n)), "sla_attainment": [0.995] * n, "ttft_p99_s": [0.8] * n,
            "rejected_share": [0.0] * n, "gpus": [16] * n}
    base.update(cols)
    return pd.DataFrame(base)


def test_forecast_healthy_months_are_quiet():
    assert forecast_warnings(monthly()) == []
    assert forecast_warnings(monthly(request_utilisation=[0.5] * 6)) == []


def test_forecast_months_below_the_sla_target():
    (w,) = forecast_warnings(monthly(sla_attainment=[0.995, 0.995, 0.97, 0.96, 0.995, 0.75],
                                     ttft_p99_s=[0.8, 0.8, 3.0, 4.0, 0.8, 9.0]))
    assert w == ("SLA attainment below the 99.0 % target in 3 of 6 months (months 2-3, 5; lowest 75.0 % "
                 "in month 5, p99 TTFT 9.0 s)")


def test_forecast_saturated_idle_queueing_and_rejected_months():
    ws = forecast_warnings(monthly(request_utilisation=[0.05, 0.5, 0.5, 0.95, 0.97, 0.5],
                                   ttft_p99_s=[0.8] * 5 + [13.0], rejected_share=[0, 0, 0, 0, 0.6, 0]))
    assert any("above 90.0 % of its request capacity in 2 months (months 3-4; peak 97.0 %)" in w for w in ws)
    assert any("under 10.0 % of its request capacity in 1 months (months 0;" in w for w in ws)
    assert any(w.startswith("queues build inside traffic windows in 1 months (months 5)") for w in ws)
    assert any(w.startswith("most requests are rejected in 1 months (months 4)") for w in ws)


def test_forecast_scenario_unusable_site():
    sc = load_scenario("default")
    assert scenario_warnings(sc) == []          # the default fleet: every site serves a vertical
    # Frankfurt without ISO 27001: finance (the only vertical allowed in Germany) may not use it
    bad = with_overrides(sc, {"sites.1.certifications": ["BSI-C5"]})
    (w,) = scenario_warnings(bad)
    assert w.startswith("deployment mixtral-fra (4 GPUs at fra-1) can serve no tenant") and "finance tenants" in w
    assert w in forecast_warnings(monthly(), bad)


def test_portfolio_forecast_spreads_tenants_over_every_model():
    """provider serves four models with no forecast.model: each tenant is spread over the
    models its residency reaches, so no deployment is idle for want of a tenant's model."""
    sc = load_scenario("provider")
    assert sc.forecast.model is None and len({d.model for d in sc.deployments}) >= 4
    assert scenario_warnings(sc) == []
    # pinned to one model, the other models' deployments serve nobody and are said to
    pinned = with_overrides(sc, {"forecast.model": "mixtral-8x7b"})
    ws = scenario_warnings(pinned)
    assert ws and all("no tenant asks for its model" in w for w in ws)
    assert not any("mixtral-8x7b-" in w.split(" (")[0] for w in ws)
