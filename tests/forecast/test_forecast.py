"""The long-horizon machinery: windowed and continuous traffic agree on stationary demand;
the forecast conserves contracts and never violates residency."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from sim.economics.ledger import FIXED_LINES, default_credit_tiers
from sim.forecast import forecast as forecast_mod
from sim.forecast.forecast import MONEY_COLUMNS, format_forecast, run_forecast, simulate_period
from sim.scenario import load_scenario, scenario_from_dict, with_overrides

FLAT = [1.0] * 168


def base():
    return scenario_from_dict({
        "name": "stationary", "forecast": {"months": 1},
        "deployments": [{"name": "d", "model": "m", "replicas": 2,
                         "batching": {"max_num_seqs": 8, "max_batched_tokens": 512},
                         "step_time": {"kind": "constant", "decode_step_s": 0.02,
                                       "prefill_per_token_s": 1e-4, "kv_cache_tokens": 20000}}],
    })


def workloads(rate):
    return [{"name": "w", "model": "m",
             "arrivals": {"kind": "nhpp", "rate_per_s": rate, "profile": FLAT},
             "prompt_tokens": {"dist": "geometric", "mean": 200},
             "output_tokens": {"dist": "geometric", "mean": 60},
             "sla": {"ttft_s": 0.5, "tpot_s": 0.0215}}]


def estimate(continuous: bool, seed: int, rate: float, period_s: float):
    rng = np.random.default_rng(seed)
    per = simulate_period(base(), workloads(rate), period_s, windows=12, window_s=100.0, warmup_s=30.0,
                          phase=float(rng.random()), seed_of=lambda k: seed * 1000 + k,
                          continuous=continuous)
    return (per["arrivals"] * per["scale"] / period_s, per["gpu_utilisation"], per["sla_attainment"])


@pytest.mark.slow
def test_windowed_and_continuous_agree_on_stationary_demand():
    rate, period_s, reps = 4.0, 3 * 3600.0, 8
    win = np.array([estimate(False, 100 + i, rate, period_s) for i in range(reps)])
    cont = np.array([estimate(True, 200 + i, rate, period_s) for i in range(reps)])
    names = ("request rate", "GPU utilisation", "SLA attainment")
    for j, name in enumerate(names):
        a, b = win[:, j], cont[:, j]
        diff = a.mean() - b.mean()
        se = math.sqrt(a.var(ddof=1) / reps + b.var(ddof=1) / reps)
        half = stats.t.ppf(0.975, 2 * reps - 2) * se
        assert abs(diff) <= half, f"{name}: windowed {a.mean():.4f} vs continuous {b.mean():.4f} (+-{half:.4f})"
    # the request rate is the configured one, and the test is not vacuous: load is real
    assert win[:, 0].mean() == pytest.approx(rate, rel=0.05)
    assert 0.2 < cont[:, 1].mean() < 0.99
    assert cont[:, 2].mean() < 0.999


def test_forecast_runs_conserves_contracts_and_residency():
    sc = with_overrides(load_scenario("small"), {"forecast.months": 3, "forecast.windows_per_month": 2,
                                          "forecast.window_s": 30.0, "forecast.warmup_s": 10.0})
    r = run_forecast(sc, seed=3)
    m = r.monthly
    assert len(m) == 3
    c = r.summary["contracts"]
    assert c["won"] == c["active"] + c["expired"] + c["churned"]
    assert r.summary["residency_violations"] == 0
    assert (m["revenue_eur"] - m["cost_eur"] - m["sla_credits_eur"] - m["gross_margin_eur"]).abs().max() < 1e-6
    assert (m["contracts_active"] > 0).all()
    # same seed, same forecast
    r2 = run_forecast(sc, seed=3)
    assert r2.summary == r.summary


SMALL = {"forecast.months": 3, "forecast.windows_per_month": 2, "forecast.window_s": 30.0, "forecast.warmup_s": 10.0}


def test_forecast_windows_on_a_process_pool_give_the_serial_forecast():
    """A month's windows are independent given its fleet and tenants: run on a 2-process
    pool (scenarios shipped as JSON, results combined in window order) the monthly table
    and the summary are exactly the serial ones, with a capacity policy acting too."""
    import concurrent.futures as cf
    sc = with_overrides(load_scenario("small"), {**SMALL, "forecast.months": 4, "forecast.windows_per_month": 4,
                                                 "capacity_policy.kind": "threshold"})
    serial = run_forecast(sc, seed=5)
    with cf.ProcessPoolExecutor(max_workers=2) as ex:
        pooled = run_forecast(sc, seed=5, executor=ex)
    pd.testing.assert_frame_equal(serial.monthly, pooled.monthly, check_exact=True)
    assert serial.summary == pooled.summary
    assert serial.monthly["simulated_requests"].sum() > 0


def test_a_window_leaves_no_world_behind():
    """Each window's world (reference cycles: environment, processes, replicas, and its
    streams' latency histograms) is collected when the window ends, so a forecast's memory
    does not grow with its months."""
    import gc
    import weakref

    from sim.forecast import windows as windows_mod
    from sim.serving.world import World
    seen = []

    class Spy(World):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            seen.append(weakref.ref(self))

    gc.disable()   # only the window's own collection may free the worlds
    try:
        orig = windows_mod.World
        windows_mod.World = Spy
        try:
            simulate_period(base(), workloads(2.0), 3600.0, windows=3, window_s=20.0, warmup_s=5.0, phase=0.3,
                            seed_of=lambda k: k)
        finally:
            windows_mod.World = orig
    finally:
        gc.enable()
    assert len(seen) == 3 and all(ref() is None for ref in seen)


def test_forecast_with_a_policy_that_never_acts_costs_what_the_fixed_fleet_costs():
    """The policy path bills tranches through the ledger; the fixed path multiplies GPUs by
    contract rates.  With thresholds no signal can cross, they must agree to the cent."""
    fixed = run_forecast(with_overrides(load_scenario("small"), SMALL), seed=2)
    idle = run_forecast(with_overrides(load_scenario("small"), {
        **SMALL, "capacity_policy.kind": "threshold", "capacity_policy.high_utilisation": 1.0,
        "capacity_policy.low_utilisation": 0.0, "capacity_policy.max_queue_per_replica": 1e9}), seed=2)
    a, b = fixed.monthly, idle.monthly
    assert (b["gpus_ordered"] == 0).all() and (b["gpus_released"] == 0).all()
    assert list(a["revenue_eur"]) == list(b["revenue_eur"])
    assert (a["cost_eur"] - b["cost_eur"]).abs().max() <= 0.03      # per-month cent rounding
    assert (a["power_cost_eur"] == 0).all() and (b["power_cost_eur"] == 0).all()  # rental only


def test_forecast_policy_grows_a_small_site_ahead_of_demand_and_bills_it():
    small = load_scenario("small")
    sc = with_overrides(small, {
        **SMALL, "forecast.months": 4, "sites.0.contracts.0.gpus": 2, "deployments.0.replicas": 1,
        "capacity_policy.kind": "forecast", "capacity_policy.step_gpus": 2, **demand_times(small, 2.5)})
    r = run_forecast(sc, seed=2)
    m = r.monthly
    cap = r.summary["capacity"]["sites"]["par-1"]
    assert cap["gpus_start"] == 2 and cap["orders"] >= 1
    arrived = [e for e in cap["events"] if e[1] == "arrive"]
    ordered = [e for e in cap["events"] if e[1] == "order"]
    # committed rental: each order arrives its lead time (one week, the default) later
    assert ordered and arrived and arrived[0][0] == pytest.approx(ordered[0][0] + 7 * 86400.0)
    # the windows run on the grown fleet: every GPU in force holds a TP2 replica
    assert (m["gpus"] == m["gpus_in_force"]).all()
    assert m["gpus_in_force"].iloc[0] > 10          # grown before the first month's traffic
    # the bill follows the tranches: the policy's months cost the fixed fleet's plus each
    # arrived tranche at the committed rate from its arrival
    from sim.economics.contracts import rental_terms
    from sim.market.market import MONTH_S
    fixed = run_forecast(with_overrides(sc, {"capacity_policy.kind": "fixed"}), seed=2).monthly
    rate_eur_per_gpu_s = rental_terms("x", "committed").fixed_eur_per_gpu_h / 3600.0
    for mo in range(len(m)):
        lo, hi = mo * MONTH_S, (mo + 1) * MONTH_S
        extra = sum(g * (hi - max(lo, t)) * rate_eur_per_gpu_s
                    for t, kind, g in cap["events"] if kind == "arrive" and t < hi)
        assert m.loc[mo, "cost_eur"] - fixed.loc[mo, "cost_eur"] == pytest.approx(extra, abs=0.05)
    assert (m["revenue_eur"] - m["cost_eur"] - m["sla_credits_eur"] - m["gross_margin_eur"]).abs().max() < 1e-6


def demand_times(sc, factor: float) -> dict:
    """Overrides that multiply every vertical's median contract size by ``factor``."""
    return {f"market.verticals.{i}.rate_per_s_median": v.rate_per_s_median * factor
            for i, v in enumerate(sc.market.verticals)}


# a fleet of 6 GPUs (16 contracted) for 2.5x the default market's contract sizes (token-sized
# contracts load 16 GPUs lightly): attainment falls under the tenants' targets in some months,
# so SLA credits are granted
STRAINED = {**SMALL, "deployments.0.replicas": 1, "deployments.1.replicas": 1, "deployments.2.replicas": 1}


@pytest.fixture(scope="module")
def strained():
    sc = load_scenario("small")
    return run_forecast(with_overrides(sc, {**STRAINED, **demand_times(sc, 2.5)}), seed=3)


def _cents(x: float) -> int:
    c = round(x * 100)
    assert abs(x * 100 - c) < 1e-6, x      # a whole number of cents
    return c


def test_forecast_money_reconciles_to_the_cent_every_month(strained):
    m = strained.monthly
    for col in MONEY_COLUMNS:
        assert col in m.columns, col
    rep = strained.ledger.report()["by_month"]
    for _, r in m.iterrows():
        c = {col: _cents(r[col]) for col in MONEY_COLUMNS}
        assert c["revenue_eur"] == c["revenue_input_eur"] + c["revenue_output_eur"]
        assert c["capacity_cost_eur"] == sum(c[f"{ln}_cost_eur"] for ln in FIXED_LINES)
        # capacity + power + the compliance lines (sim/forecast/compliance.py; no marketplace here)
        assert c["compliance_cost_eur"] == c["certification_cost_eur"] + c["ai_act_cost_eur"] + c["dora_cost_eur"] > 0
        assert c["cost_eur"] == c["capacity_cost_eur"] + c["power_cost_eur"] + c["compliance_cost_eur"]
        assert c["revenue_eur"] - c["cost_eur"] - c["sla_credits_eur"] == c["gross_margin_eur"]
        # and the table is the ledger's month, cent for cent
        led = rep[str(int(r["month"]))]
        assert led["margin_cents"] == c["gross_margin_eur"]
        assert led["sla_credits_cents"] == c["sla_credits_eur"]
        assert led["revenue_cents"] == c["revenue_eur"]
        assert led["costs_cents"] == c["cost_eur"] + c["sla_credits_eur"]
    s = strained.summary
    assert s["gross_margin_eur"] == pytest.approx(s["revenue_eur"] - s["cost_eur"] - s["sla_credits_eur"], abs=1e-6)
    assert m["sla_credits_eur"].sum() > 0            # the strained fleet misses targets


def test_forecast_credits_each_tenant_month_as_a_single_run_would(strained):
    """Per tenant-month: the credit is the tier share (10 % under the 0.99 target, 25 % under
    0.95: the single-run defaults) of that tenant's revenue of the month."""
    led = strained.ledger
    tiers = default_credit_tiers(0.99)
    n_credited = 0
    for m in range(len(strained.monthly)):
        expected = 0
        for (mm, wl), (n, met) in led.sla_counts.items():
            if mm != m or n == 0:
                continue
            share = max([s for below, s in tiers if met / n < below], default=0.0)
            rev_peur = sum(led.workload_rev[(m, wl)].values())
            expected += rev_peur * share
            n_credited += share > 0
        # each credited account rounds once to the cent (plus its remainder at close)
        got = strained.monthly.loc[m, "sla_credits_eur"]
        assert got == pytest.approx(expected / 1e12, abs=0.01 * (1 + n_credited))
    assert n_credited > 0
    assert any(met / n < 0.95 for (_, _), (n, met) in led.sla_counts.items() if n)   # the 25 % tier is reached


def test_forecast_reports_request_utilisation_beside_the_busy_share(strained):
    m = strained.monthly
    ru, busy = m["request_utilisation"].astype(float), m["gpu_utilisation"]
    assert ((ru > 0) & (ru < 1.5)).all()
    # continuous batching keeps replicas busy at light load: the busy share reads far higher
    assert (busy > ru).all()
    text = format_forecast(strained)
    assert "GPU util" not in text and "req util" in text and "busy share" in text


def test_failed_forecast_leaves_error_txt_and_no_stale_results(tmp_path, monkeypatch):
    sc = with_overrides(load_scenario("small"), {**SMALL, "forecast.months": 1})
    out = tmp_path / "f"
    run_forecast(sc, seed=1, out_dir=out, figures=False)
    assert (out / "monthly.csv").is_file()
    man = json.loads((out / "manifest.json").read_text())
    assert man["status"] == "complete" and [f["name"] for f in man["files"]][0] == "config.json"
    assert pd.read_csv(out / "monthly.csv")["sla_credits_eur"].notna().all()

    def boom(*a, **k):
        raise RuntimeError("window failed")

    monkeypatch.setattr(forecast_mod, "simulate_forecast", boom)
    with pytest.raises(RuntimeError):
        run_forecast(sc, seed=1, out_dir=out)
    assert (out / "config.json").is_file() and "window failed" in (out / "error.txt").read_text()
    assert not (out / "monthly.csv").exists() and not (out / "summary.json").exists()
    assert json.loads((out / "manifest.json").read_text())["status"] == "failed"


def test_a_tenant_is_spread_over_the_models_its_residency_allows():
    from sim.forecast.windows import portfolio_shares, portfolio_workloads, tenant_of
    sc = load_scenario("provider")
    w = {"name": "c7", "model": "mixtral-8x7b", "arrivals": {"kind": "poisson", "rate_per_s": 10.0},
         "prompt_tokens": {"dist": "constant", "value": 100}, "output_tokens": {"dist": "constant", "value": 50},
         "residency": {"allowed_jurisdictions": ["FR"], "required_certifications": ["SecNumCloud"]}}
    shares = portfolio_shares(sc)
    assert len(shares) >= 4 and sum(shares.values()) == pytest.approx(1.0)
    out = portfolio_workloads([w], shares, sc)
    # only par-1 holds SecNumCloud: the models deployed there, not mixtral-8x22b (GRA, AMS)
    assert {v["model"] for v in out} == {d.model for d in sc.deployments if d.site == "par-1"}
    assert sum(v["arrivals"]["rate_per_s"] for v in out) == pytest.approx(10.0)
    assert {tenant_of(v["name"]) for v in out} == {"c7"}
    # one model: the tenants as they were
    assert portfolio_workloads([w], {"mixtral-8x7b": 1.0}, sc) == [w]


def test_a_fleet_slice_holds_one_cell_per_site_and_the_front_router_share():
    from sim.forecast.windows import fleet_slice
    sc = load_scenario("provider")
    w = {"name": "c1", "model": "mixtral-8x7b", "arrivals": {"kind": "poisson", "rate_per_s": 1000.0},
         "prompt_tokens": {"dist": "constant", "value": 100}, "output_tokens": {"dist": "constant", "value": 50}}
    sliced, ws, weights, site_w = fleet_slice(sc, [w], 8)
    for site in {d.site for d in sc.deployments}:
        here = [d for d in sliced.deployments if d.site == site]
        assert 1 <= sum(d.replicas for d in here) <= 8 + len(here)
        full = sum(d.gpus for d in sc.deployments if d.site == site)
        assert site_w[site] == pytest.approx(full / sum(d.gpus for d in here))
    # the slice's rate times its weight is the fleet's
    assert ws[0]["arrivals"]["rate_per_s"] * weights["c1"] == pytest.approx(1000.0)
    mix_full = sum(d.gpus for d in sc.deployments if d.model == "mixtral-8x7b")
    mix_slice = sum(d.gpus for d in sliced.deployments if d.model == "mixtral-8x7b")
    assert weights["c1"] == pytest.approx(mix_full / mix_slice)


def test_sliced_windows_are_one_cell_scaled_to_the_fleet():
    """Eight replicas sliced into cells of 2: each window simulates one cell at a quarter of
    the rate, and its totals scale by 4 (ratios unchanged): the same as simulating a
    2-replica fleet at a quarter of the demand, with the same seeds, times 4."""
    def fleet(n):
        d = base().model_dump(mode="python")
        d["deployments"][0]["replicas"] = n
        return scenario_from_dict(d)

    kw = dict(period_s=3 * 3600.0, windows=6, window_s=60.0, warmup_s=20.0, phase=0.4, seed_of=lambda k: 50 + k)
    sliced = simulate_period(fleet(8), workloads(14.0), max_replicas=2, **kw)
    cell = simulate_period(fleet(2), workloads(3.5), **kw)
    assert sliced["simulated_arrivals"] == cell["arrivals"] > 1000
    assert sliced["arrivals"] == pytest.approx(4 * cell["arrivals"], abs=6)   # whole requests per window
    assert sliced["gpu_utilisation"] == pytest.approx(cell["gpu_utilisation"], rel=1e-12)
    assert sliced["sla_attainment"] == pytest.approx(cell["sla_attainment"], abs=1e-3)
    assert sliced["request_utilisation"] == pytest.approx(cell["request_utilisation"], rel=1e-12)
    assert sliced["arrivals"] * sliced["scale"] / (3 * 3600.0) == pytest.approx(14.0, rel=0.1)


def test_the_provider_scenario_is_a_growing_multi_site_portfolio():
    sc = load_scenario("provider")
    assert sc.forecast.months == 36
    assert sum(d.gpus for d in sc.deployments) >= 2000
    assert len({d.site for d in sc.deployments}) >= 3 and len({d.model for d in sc.deployments}) >= 4
    assert sc.capacity_policy.kind != "fixed" and sc.cells.max_replicas is not None
    one = run_forecast(with_overrides(sc, {"forecast.months": 1, "forecast.windows_per_month": 1,
                                           "forecast.window_s": 10.0, "forecast.warmup_s": 5.0}), seed=1)
    m = one.monthly
    assert int(m["residency_violations"].sum()) == 0 and m["simulated_requests"].iloc[0] > 0
    assert m["requests"].iloc[0] > 10 * m["simulated_requests"].iloc[0]   # a slice, scaled to the fleet
    assert (m["revenue_eur"] - m["cost_eur"] - m["sla_credits_eur"] - m["gross_margin_eur"]).abs().max() < 1e-6


def test_the_packaged_provider_scenarios_are_what_their_generator_writes(tmp_path):
    """provider.toml and provider-day.toml are generated (experiments/_provider_scenario.py); a
    file edited by hand, or sized on an older step model, differs from a fresh run of the script."""
    import importlib.util
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("_provider_scenario", root / "experiments" / "_provider_scenario.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    gen.main(tmp_path)
    gen.provider(tmp_path)
    for name in ("provider.toml", "provider-day.toml"):
        assert (tmp_path / name).read_text() == (root / "sim" / "scenarios" / name).read_text(), name


def test_small_is_the_former_default_and_sovsim_run_runs_provider(monkeypatch, tmp_path):
    small, default = load_scenario("small").model_dump(), load_scenario().model_dump()
    assert small.pop("name") == "small" and default.pop("name") == "default"
    assert small == default
    from sim.cli import run as cli_run
    from sim.cli.app import main
    seen = {}

    def fake(scenario, **kw):
        seen["name"] = scenario.name
        raise SystemExit(0)
    monkeypatch.setattr(cli_run, "run_forecast", fake)
    with pytest.raises(SystemExit):
        main(["run", "--quiet", "--out", str(tmp_path / "o")])
    assert seen["name"] == "provider"


def test_short_windows_bill_every_measured_request_after_draining():
    """A window runs past its horizon until the requests that arrived after its warm-up are
    done (sim.forecast.windows.drain_window): every measured request is completed or
    rejected, so short windows bill the offered tokens instead of losing the requests
    still generating at the horizon (about 1.2 s of each 10-s window here)."""
    rate, mean_out = 4.0, 60
    rates = []
    for i in range(8):
        per = simulate_period(base(), workloads(rate), 3600.0, windows=12, window_s=10.0, warmup_s=5.0,
                              phase=0.1 * i, seed_of=lambda k, i=i: 7000 + 100 * i + k)
        assert per["completed"] + per["rejected"] == per["arrivals"]      # nothing left in flight
        rates.append(sum(a["output_tokens"] for a in per["workloads"].values()) / (12 * 10.0))
    r = np.array(rates)
    half = stats.t.ppf(0.975, len(r) - 1) * r.std(ddof=1) / math.sqrt(len(r))
    # billed output tokens per second = offered (arrival rate x mean output length)
    assert abs(r.mean() - rate * mean_out) <= half + 1e-9, (r.mean(), rate * mean_out, half)
