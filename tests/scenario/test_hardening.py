"""Every bad input is refused in one line (exit 2, no traceback, the field named), never a
hang: one test per example of the hardening list (hangs, tracebacks, accepted nonsense)."""
from __future__ import annotations

import math

import pytest

from sim.cli import main
from sim.core.errors import UserError
from sim.demand.distributions import Geometric, LogNormalInt
from sim.economics.ledger import Price, peur
from sim.scenario import ScenarioError, scenario_from_dict
from sim.scenario.estimate import LIMITS, check_work, estimate

BASE = """
name = "hardening"
[simulation]
horizon_s = 60.0
[[sites]]
name = "par-1"
jurisdiction = "FR"
network_latency_s = { eu = 0.01 }
[[sites.contracts]]
kind = "owned_colo"
name = "own"
gpus = 2
[[deployments]]
name = "mix"
site = "par-1"
model = "mixtral-8x7b"
tp = 2
replicas = 1
[[workloads]]
name = "w"
model = "mixtral-8x7b"
arrivals = { kind = "poisson", rate_per_s = 1.0 }
prompt_tokens = { dist = "constant", value = 100 }
output_tokens = { dist = "geometric", mean = 50 }
"""


def refused(tmp_path, capsys, *sets, text=BASE, extra=()):
    path = tmp_path / "s.toml"
    path.write_text(text)
    argv = ["run", str(path), "--quiet", "--out", str(tmp_path / "out"), *extra]
    for s in sets:
        argv += ["--set", s]
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("sovsim: error: ")
    return lines[0]


# (override, text the one line must contain: the field and what is allowed)
HANGS = [
    ("simulation.horizon_s=inf", "simulation.horizon_s: inf is not finite; allowed: a finite number > 0"),
    ("workloads.0.arrivals.rate_per_s=inf", "workloads[0].arrivals.rate_per_s: inf is not finite"),
    ("faults.gpu_failures_per_gpu_day=inf", "faults.gpu_failures_per_gpu_day: inf is not finite"),
    ("faults.site_outages_per_year=inf", "faults.site_outages_per_year: inf is not finite"),
    ("simulation.horizon_s=1e12", "work estimate: 1e+12 requests is above the limit of 5e+07"),
    ("deployments.0.replicas=100000", "replicas is above the limit"),
    ("simulation.timeseries_interval_s=1e-6", "timeseries bins is above the limit"),
]


@pytest.mark.parametrize("override,expect", HANGS)
def test_would_hang_is_refused_before_any_work(tmp_path, capsys, override, expect):
    line = refused(tmp_path, capsys, override)
    assert expect in line
    assert not (tmp_path / "out" / "summary.json").exists()


def test_policy_check_every_microsecond_is_refused(tmp_path, capsys):
    line = refused(tmp_path, capsys, 'capacity_policy={kind="threshold", check_interval_s=1e-6, step_gpus=2}')
    assert "policy checks is above the limit" in line and "capacity_policy.check_interval_s" in line


def test_bursts_of_a_nanosecond_are_refused(tmp_path, capsys):
    line = refused(tmp_path, capsys, 'workloads.0.arrivals={kind="nhpp", rate_per_s=1.0, burst={multiplier=2.0, '
                                     'mean_burst_s=1e-9, mean_gap_s=1e-9}}')
    assert "burst switches is above the limit" in line and "--max-work" in line


def test_the_refusal_names_the_flag_and_the_flag_allows_it(tmp_path, capsys):
    line = refused(tmp_path, capsys, "simulation.timeseries_interval_s=1e-4")   # 6e5 bins x 2 series
    assert "1.2e+06 timeseries bins" in line and "--max-work 1.2 " in line and "max_work=1.2 " in line
    path = tmp_path / "s.toml"
    assert main(["run", str(path), "--quiet", "--out", str(tmp_path / "ok"), "--max-work", "1.2",
                 "--set", "simulation.timeseries_interval_s=1e-4",
                 "--set", "workloads.0.arrivals.rate_per_s=0.5"]) == 0
    sc = scenario_from_dict({"deployments": [{"name": "d", "model": "m", "step_time": {"kind": "constant", "decode_step_s": 0.01}}],
                             "workloads": [{"name": "w", "model": "m", "arrivals": {"kind": "poisson", "rate_per_s": 1.0},
                                            "prompt_tokens": {"dist": "constant", "value": 10},
                                            "output_tokens": {"dist": "constant", "value": 5}}],
                             "simulation": {"horizon_s": 20.0, "timeseries_interval_s": 1e-5}})
    with pytest.raises(UserError, match="timeseries bins"):
        check_work(sc)
    est = check_work(sc, max_work=10.0)   # 2e6 bins x 2 series = 4e6 <= 1e7
    assert est["timeseries_bins"] == pytest.approx(2e6 * 2)
    assert check_work(sc, max_work=math.inf) == {}


def test_estimate_counts_requests_by_kind():
    sc = scenario_from_dict({"simulation": {"horizon_s": 3600.0},
                             "deployments": [{"name": "d", "model": "m", "replicas": 3,
                                              "step_time": {"kind": "constant", "decode_step_s": 0.01}}],
                             "workloads": [{"name": "p", "model": "m", "arrivals": {"kind": "poisson", "rate_per_s": 2.0},
                                            "prompt_tokens": {"dist": "constant", "value": 10},
                                            "output_tokens": {"dist": "constant", "value": 5}},
                                           {"name": "o", "model": "m", "arrivals": {"kind": "offline", "count": 70},
                                            "prompt_tokens": {"dist": "constant", "value": 10},
                                            "output_tokens": {"dist": "constant", "value": 5}}]})
    e = estimate(sc)
    assert e["requests"] == pytest.approx(2.0 * 3600 + 70)
    assert e["timeseries_bins"] == 60 * 4 and e["replicas"] == 3 and e["policy_checks"] == 0
    assert all(e[k] <= LIMITS[k] for k in LIMITS)


TRACEBACKS = [
    ("pricing=[{input_eur_per_mtok=inf, output_eur_per_mtok=1.0}]", "pricing[0].input_eur_per_mtok: inf is not finite"),
    ("sites.0.contracts.0.capex_eur_per_gpu=inf", "sites[0].contracts[0].capex_eur_per_gpu: inf is not finite"),
    ("sites.0.contracts.0.pue=inf", "sites[0].contracts[0].pue: inf is not finite; allowed: a finite number >= 1 and <= 10"),
    ("sites.0.contracts.0.power_eur_per_kwh=inf", "sites[0].contracts[0].power_eur_per_kwh: inf is not finite"),
    ('sites.0.contracts=[{kind="rental", name="r", gpus=2, price_eur_per_gpu_h=inf}]',
     "sites[0].contracts[0].price_eur_per_gpu_h: inf is not finite"),
    ('workloads.0.prompt_tokens={dist="lognormal", mu=nan, sigma=1.0}', "workloads[0].prompt_tokens.mu: nan is not finite"),
    ('workloads.0.output_tokens={dist="geometric", mean=inf}', "workloads[0].output_tokens.mean: inf is not finite"),
    ("deployments.0.batching.block_size_tokens=1000000000",
     "deployments[0].batching.block_size_tokens: 1000000000 is out of range; allowed: >= 1 and <= 1024"),
]


@pytest.mark.parametrize("override,expect", TRACEBACKS)
def test_former_tracebacks_are_one_line(tmp_path, capsys, override, expect):
    assert expect in refused(tmp_path, capsys, override)


NONSENSE = [
    ("simulation.warmup_s=inf", "simulation.warmup_s: inf is not finite"),
    ("simulation.warmup_s=120.0", "simulation.warmup_s: 120 s leaves nothing of the 60 s horizon"),
    ('deployments.0.step_time={kind="constant", decode_step_s=inf}', "deployments[0].step_time.decode_step_s: inf is not finite"),
    ("workloads.0.prompt_tokens.value=inf", "workloads[0].prompt_tokens.value: inf is not an integer"),
    ("faults.repair_median_s=inf", "faults.repair_median_s: inf is not finite"),
    ('workloads.0.arrivals={kind="nhpp", rate_per_s=1.0, burst={multiplier=inf, mean_burst_s=60.0, mean_gap_s=600.0}}',
     "workloads[0].arrivals.burst.multiplier: inf is not finite"),
    ("sites.0.network_latency_s.eu=-0.01", "sites[0].network_latency_s.eu: -0.01 is out of range; allowed: >= 0"),
    ("sites.0.network_latency_s.eu=nan", "sites[0].network_latency_s.eu: nan is not finite"),
    ('deployments.0.replicas="4"', "deployments[0].replicas: '4' (a string) is not an integer"),
    ('faults.enabled="yes"', "faults.enabled: 'yes' (a string) is not true or false"),
    ("simulation.horizon_s=true", "simulation.horizon_s: true (a boolean) is not a number"),
    ('forecast={model="gpt-9"}', "forecast.model: unknown model 'gpt-9'; allowed: mistral-7b"),
    ('deployments.0.model="gpt-9"', "deployments[0].model: unknown model 'gpt-9'; allowed:"),
    ('deployments.0.gpu="tpu-v5"', "deployments[0].gpu: unknown GPU 'tpu-v5'; allowed:"),
    ('capacity_policy={kind="threshold", step_gpus=2, min_gpus=16, max_gpus=8}',
     "capacity_policy.min_gpus: 16 is above max_gpus (8); allowed: min_gpus <= max_gpus"),
    ('capacity_policy={kind="threshold", step_gpus=2, low_utilisation=0.7, high_utilisation=0.6}',
     "capacity_policy.low_utilisation: 0.7 is not below high_utilisation (0.6)"),
    ("deployments.0.tp=3", "deployments[0].tp: 3 does not divide the 32 attention heads of mixtral-8x7b; allowed: 1, 2, 4, 8"),
    ("deployments.0.tp=16", "deployments[0].tp: 16 GPUs per replica exceed the 8 GPUs of a node"),
    ("deployments.0.step_time.kv_cache_tokens=100000000",
     "deployments[0].step_time.kv_cache_tokens: 100,000,000 tokens of KV cache need"),
    ("sites.0.contracts.0.busy_w_per_gpu=10.0", "contract 'own': busy_w_per_gpu (10 W) is below idle_w_per_gpu (60 W, default)"),
    ('sites.0.contracts.0={kind="owned_colo", name="own", gpus=2, busy_w_per_gpu=50.0, idle_w_per_gpu=100.0}',
     "sites[0].contracts[0].busy_w_per_gpu: 50 W is below idle_w_per_gpu (100 W)"),
    ('sites.0.jurisdiction="fr"', "sites[0].jurisdiction: 'fr' is not an upper-case ISO 3166 alpha-2 code; allowed: 'FR'"),
    ('sites.0.jurisdiction="ZZ"', "sites[0].jurisdiction: 'ZZ' is not an ISO 3166 alpha-2 country code"),
    ('workloads.0.residency={allowed_jurisdictions=["de"]}', "workloads[0].residency.allowed_jurisdictions: 'de'"),
    # a field that does not apply to the chosen kind
    ("deployments.0.step_time.decode_step_s=0.01",
     "deployments[0].step_time.decode_step_s: applies to kind = 'constant' only, not 'calibrated'"),
    ('sites.0.contracts=[{kind="rental", name="r", gpus=2, committed_discount=0.3}]',
     "sites[0].contracts[0].committed_discount: applies to term = 'committed' only, not 'on_demand'"),
    ('market={events=[{month=1.0, kind="shortage", provider="aws", duration_months=2.0, factor=0.5}]}',
     "market.events[0].factor: applies to kind = 'price_cut' only"),
]


def test_weights_beyond_memory_name_the_deployment(tmp_path, capsys):
    line = refused(tmp_path, capsys, "deployments.0.tp=1", 'deployments.0.precision="bf16"')
    assert "deployments[0]: deployment 'mix': mixtral-8x7b at bf16 with tp=1 needs" in line and "raise tp" in line


@pytest.mark.parametrize("override,expect", NONSENSE)
def test_nonsense_is_refused(tmp_path, capsys, override, expect):
    assert expect in refused(tmp_path, capsys, override)


def test_integers_are_numbers_but_strings_and_booleans_are_not():
    d = {"deployments": [{"name": "d", "model": "m", "step_time": {"kind": "constant", "decode_step_s": 1}}],
         "workloads": [{"name": "w", "model": "m", "arrivals": {"kind": "poisson", "rate_per_s": 2},
                        "prompt_tokens": {"dist": "constant", "value": 10}, "output_tokens": {"dist": "geometric", "mean": 5}}]}
    sc = scenario_from_dict(d)
    assert sc.workloads[0].arrivals.rate_per_s == 2.0 and isinstance(sc.workloads[0].arrivals.rate_per_s, float)
    d["workloads"][0]["arrivals"]["rate_per_s"] = True
    with pytest.raises(ScenarioError, match="true \\(a boolean\\) is not a number"):
        scenario_from_dict(d)


def test_python_api_paths_refuse_non_finite_in_one_line():
    for make in (lambda: Geometric(math.inf), lambda: LogNormalInt(math.nan, 1.0),
                 lambda: Price.from_eur_per_mtok(math.inf, 1.0, ()), lambda: peur(math.inf)):
        with pytest.raises(UserError) as e:
            make()
        assert "\n" not in str(e.value) and "allowed" in str(e.value)


def test_sweep_points_are_checked_and_the_flag_exists(tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text(BASE)
    rc = main(["sweep", str(path), "--grid", "simulation.timeseries_interval_s=1e-6", "--workers", "0", "-r", "1",
               "--out", str(tmp_path / "sw"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "timeseries bins is above the limit" in err and "--max-work" in err
    for cmd in ("sweep", "capacity"):
        with pytest.raises(SystemExit) as ex:   # argparse: one line, exit 2
            main([cmd, str(path), "--max-work", "0"])
        err = capsys.readouterr().err
        assert ex.value.code == 2 and "--max-work: '0' must be > 0" in err and len(err.strip().splitlines()) == 1


def test_forecast_work_is_estimated_before_the_market_runs():
    from sim.forecast.forecast import run_forecast
    from sim.scenario import load_scenario, with_overrides
    sc = load_scenario()   # the shipped 36-month forecast is within the limits
    assert all(v <= LIMITS[k] for k, v in estimate(sc).items())
    big = with_overrides(sc, {"forecast.continuous": True, "forecast.months": 240})
    with pytest.raises(UserError, match=r"^work estimate: .* requests is above the limit") as e:
        run_forecast(big, seed=1)
    assert "max_work=" in str(e.value) and "\n" not in str(e.value)


def test_out_of_memory_past_the_work_limit_is_one_line(tmp_path, capsys, monkeypatch):
    """Work allowed past the estimate (--max-work) that does not fit in memory: one line, exit 2."""
    import sim.cli.run as cli_run

    def exhausted(*_a, **_k):
        raise MemoryError

    monkeypatch.setattr(cli_run, "run", exhausted)
    path = tmp_path / "s.toml"
    path.write_text(BASE)
    rc = main(["run", str(path), "--out", str(tmp_path / "o"), "--max-work", "1e15"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith("sovsim: error: out of memory; allowed: less work")
