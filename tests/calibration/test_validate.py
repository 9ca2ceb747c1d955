"""``sovsim validate --quick``: structure, finite errors computed from engine predictions."""
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sim.calibration import throughput_fit, validate as v
from sim.cli.app import main
from sim.perf.roofline import load_params


@pytest.fixture(scope="module")
def quick():
    return v.validate(quick=True, log=lambda *a: None)


def test_every_family_reported_with_finite_errors(quick):
    df = quick["rows"]
    assert set(df.family) == set(v.FAMILIES)
    for col in ("family", "model", "gpu", "config", "metric", "measured", "predicted", "error", "in_sample"):
        assert col in df.columns
    assert np.isfinite(df.error).all() and (df.predicted > 0).all()
    assert np.allclose(df.error, df.predicted / df.measured - 1.0)
    # leave-one-family-out: only the default profile's own version and the MoE scale's GPU are in-sample
    ins = df[df.in_sample]
    assert set(ins.family) <= {"offline_unversioned", "moe_kernel"}
    assert (ins[ins.family == "offline_unversioned"].config.str.startswith(throughput_fit.FIT_VERSION)).all()
    assert (~df[df.family.isin(["offline", "online", "mlperf_server", "mlperf_interactive",
                                "nim_concurrency"])].in_sample).all()
    s = quick["summary"]
    for fam in v.FAMILIES:
        g = s[(s.family == fam) & (s.scope == "all")]
        assert len(g) and (g.n > 0).all() and np.isfinite(g.mdape).all()


def test_errors_come_from_the_engine(quick):
    """A slower step model (kernel-time scale x 1.5) must lengthen latencies and cut throughput."""
    fams = ("offline_unversioned", "online", "nim_concurrency")
    base = quick["rows"][quick["rows"].family.isin(fams)].reset_index(drop=True)
    p = load_params("h100-sxm")
    with throughput_fit.framework_overheads(p.iteration_overhead_s, p.per_seq_overhead_s, 1.5 * p.kernel_time_scale,
                                            p.per_layer_overhead_s):
        slow = v.validate(quick=True, families=fams, log=lambda *a: None)["rows"]
    keys = ["family", "model", "gpu", "config", "metric", "measured"]
    assert len(base) > 10 and base[keys].equals(slow[keys])  # same rows, same order
    r = slow.predicted / base.predicted
    thr, lat = base.metric.str.endswith("tok_s"), base.metric.str.startswith(("itl", "tpot"))
    assert (r[thr] < 1).all() and r[thr].median() < 0.9
    assert (r[lat] > 1).all() and r[lat].median() > 1.1
    assert not np.allclose(slow.error, base.error)


def test_cli_writes_outputs(tmp_path, capsys):
    assert main(["validate", "--quick", "--family", "online", "--results", str(tmp_path)]) == 0
    for f in ("validation.csv", "predicted_vs_measured.png", "README.md"):
        assert (tmp_path / f).is_file()
    assert "online" in capsys.readouterr().out
    assert main(["validate", "--family", "nope"]) == 2


def test_mlperf_load_sweep_latency_rises_with_load():
    """The diagnosis sweep (results/validation/latency_under_load.md): on the 8x H100 node, more
    offered load means a larger running batch (Little's law) and longer TPOT and TTFT; at the
    measured NVIDIA v4.1 rate (74.42/s) the simulated batch stays far below the one the real replica
    runs by Little's law (5,401 tok/s per replica x 155 ms measured TPOT = 837 sequences)."""
    d = v.mlperf_load_sweep("h100-sxm", rates=(74.42, 88.0), prompt=283, sim_s=90.0, warmup_s=30.0)
    assert list(d.rate_per_s) == [74.42, 88.0]
    assert d.tpot_mean_s.is_monotonic_increasing and d.ttft_mean_s.is_monotonic_increasing
    assert d.running_per_replica.is_monotonic_increasing
    measured_running = 74.42 * 290 / 4 * 0.15496
    assert d.running_per_replica.iloc[0] < 0.7 * measured_running < d.batch.iloc[0]


def test_overhead_grid_restores_the_fit_and_responds_to_overheads():
    """The sensitivity grid re-runs a family with other overheads and leaves the fit as it was:
    zero added overhead reproduces the family's own errors; a per-sequence overhead lengthens ITL."""
    base = pd.DataFrame(v.RUNNERS["nim_concurrency"](True))
    g = v.overhead_grid("nim_concurrency", (None,), (0.0, 50e-6), quick=True)
    itl = g[g.metric == "itl_mean_s"].set_index("extra_per_seq_s").bias
    assert itl.loc[0.0] == pytest.approx(base[base.metric == "itl_mean_s"].error.median())
    assert itl.loc[50e-6] > itl.loc[0.0]
    assert load_params("h100-sxm").per_seq_overhead_s == pytest.approx(
        load_params("h100-sxm").framework_profiles["trtllm"]["per_seq_overhead_s"])
    with pytest.raises(v.UserError, match="family"):
        v.overhead_grid("nope")


def _synthetic_terms(a_s, b_s, scale, n=40, seed=3, c_s=0.0):
    """Rows shaped like ``throughput_fit.affine_terms``: running batches from 30 to 1,500 and
    models of 32 and 80 layers, so the per-iteration, per-layer and per-sequence terms are
    separable; measured = the exact prediction."""
    rng = np.random.default_rng(seed)
    it = rng.uniform(500, 5000, n)
    mb = np.exp(rng.uniform(np.log(30), np.log(1500), n))
    t = pd.DataFrame({"version": ["v0.17"] * n, "gpu": rng.choice(["h100-sxm", "h200"], n), "precision": "fp8",
                      "t0_s": it * rng.uniform(0.02, 0.3, n), "iterations": it, "seq_iterations": it * mb,
                      "output_tokens": it * mb, "layers": rng.choice([32, 80], n)})
    t["floor_s"] = t.t0_s * rng.uniform(0.2, 0.7, n)   # the weight/KV streams the scale leaves alone
    t["measured_tok_s"] = throughput_fit.predict(t, a_s, b_s, scale, c_s)
    return t


def test_throughput_fit_recovers_every_form_of_the_framework_term():
    """The default (committed) fit recovers a per-layer cost with a = 0; the per-iteration form
    (c held at 0) recovers a constant; with all three free it separates them."""
    a, b, sc, c = throughput_fit.fit(_synthetic_terms(0.0, 3e-6, 0.85, c_s=60e-6))
    assert a == 0.0 and c == pytest.approx(60e-6, rel=1e-3) and b == pytest.approx(3e-6, rel=1e-3)
    assert sc == pytest.approx(0.85, rel=1e-4)
    a, b, sc, c = throughput_fit.fit(_synthetic_terms(2e-3, 3e-6, 0.85), iteration_overhead_s=None,
                                     per_layer_overhead_s=0.0)
    assert c == 0.0 and a == pytest.approx(2e-3, rel=1e-3) and b == pytest.approx(3e-6, rel=1e-3)
    a, b, sc, c = throughput_fit.fit(_synthetic_terms(1e-3, 2e-6, 0.9, c_s=40e-6), iteration_overhead_s=None)
    assert a == pytest.approx(1e-3, rel=1e-2) and c == pytest.approx(40e-6, rel=1e-2)
    # a constant cannot stand in for a per-layer cost: 32- and 80-layer rows disagree on it
    t = _synthetic_terms(0.0, 5e-6, 0.9, c_s=80e-6)
    a, b, sc, c = throughput_fit.fit(t, iteration_overhead_s=None, per_layer_overhead_s=0.0)
    assert np.abs(throughput_fit.predict(t, a, b, sc, c) / t.measured_tok_s - 1).max() > 0.01


def test_form_comparison_scores_every_form_on_the_other_versions():
    rows = []
    for v, a in (("v0.14", 1e-3), ("v0.17", 1e-3), ("v1.0", 1e-3)):
        rows.append(_synthetic_terms(a, 2e-6, 0.9, seed=len(rows)).assign(version=v))
    d = throughput_fit.form_comparison(pd.concat(rows, ignore_index=True))
    assert set(d.form) == set(throughput_fit.FORMS) and len(d) == len(throughput_fit.FORMS) * 3 * 3
    free = d[(d.form == "per-iteration + per-sequence") & d.held_out]  # the form the rows were made with
    fixed = d[(d.form == "per-sequence only") & d.held_out]
    assert (fixed.iteration_overhead_s == 0).all() and (fixed.per_layer_overhead_s == 0).all()
    assert free.mdape.max() < 1e-3 < fixed.mdape.min()


def test_form_folds_prefer_the_form_the_rows_were_made_with():
    """Scored like the committed profiles (release folds, GPU or model left out), rows made with a
    per-layer cost are reproduced by the per-layer form and missed by the constant."""
    rows = [_synthetic_terms(0.0, 2e-6, sc, seed=i, c_s=90e-6).assign(version=v)
            for i, (v, sc) in enumerate((("v0.14", 0.95), ("v0.17", 0.82), ("v1.0", 0.80)))]
    t = pd.concat(rows, ignore_index=True)
    t["model"] = np.where(t.layers == 32, "llama-3.1-8b", "llama-3.1-70b")
    f = throughput_fit.form_folds(t).set_index(["form", "left_out", "model"])
    assert f.loc[("per-layer + per-sequence, both fitted on the offline rows (before)", "model", "(all)"), "mdape"] < 1e-3
    assert f.loc[("per-iteration + per-sequence", "model", "(all)"), "mdape"] > 0.01


def test_framework_overheads_reach_the_trtllm_engine_profiles():
    """``overhead_grid`` on a family that names an engine profile (aiconfigurator) must move its
    step model too, and leave the committed profile as it was."""
    from sim.perf import catalog
    from sim.perf.roofline import PerfModel

    def model():
        return PerfModel(catalog.llm("llama-3.1-8b"), catalog.gpu("h100-sxm"), 1, "fp8", load_params("h100-sxm"),
                         framework="trtllm")
    before = dict(load_params("h100-sxm").framework_profiles["trtllm"])
    with throughput_fit.framework_overheads(1.25e-3, 7e-6, 0.95, 30e-6):
        m = model()
        assert (m.p.iteration_overhead_s, m.p.per_seq_overhead_s, m.p.kernel_time_scale,
                m.p.per_layer_overhead_s) == (1.25e-3, 7e-6, 0.95, 30e-6)
    assert load_params("h100-sxm").framework_profiles["trtllm"] == before
    assert model().p.per_seq_overhead_s == before["per_seq_overhead_s"]


def test_offline_rows_use_their_release_profile_fitted_without_their_gpu(quick):
    """``offline`` scores each row under ``trtllm-v<release>`` as fitted with the row's GPU left
    out: v0.14 (slower kernels) comes out slower than under the default v0.17 profile, v0.17 rows
    within a few % of it (same release, one GPU fewer in the fit)."""
    df = quick["rows"]
    key = ["model", "gpu", "config"]
    ver = df[df.family == "offline"].set_index(key)
    unv = df[df.family == "offline_unversioned"].set_index(key)
    assert len(ver) == len(unv) and set(ver.index) == set(unv.index) and ver.index.is_unique
    for (model, gpu, cfg), r in ver.iterrows():
        release = cfg.split()[0]
        assert r.profile == f"trtllm-{release} without {gpu}"
        ratio = r.predicted / unv.loc[(model, gpu, cfg)].predicted
        if release == "v0.14":
            assert ratio < 0.97, cfg
        if release == throughput_fit.FIT_VERSION:
            assert abs(ratio - 1) < 0.05, cfg
    profs = load_params("h100-sxm").framework_profiles
    for release in throughput_fit.VERSIONS:
        folds = profs[throughput_fit.release_profile(release)]["folds"]
        assert set(folds) == set(throughput_fit.FOLD_KEYS) and len(folds["gpu"]) >= 2


def test_release_fit_recovers_one_kernel_scale_per_release_and_folds_leave_rows_out():
    """Shared CPU overheads (fitted on the default release), one kernel-time scale per release;
    the fold that leaves a GPU out is untouched by that GPU's rows, the others are not."""
    rows = [_synthetic_terms(0.0, 3e-6, sc, seed=i, c_s=50e-6).assign(version=v)
            for i, (v, sc) in enumerate((("v0.14", 0.95), ("v0.17", 0.82), ("v1.0", 0.80)))]
    t = pd.concat(rows, ignore_index=True)
    t["model"] = "llama-3.1-8b"
    fits = throughput_fit.release_fit(t)
    for v, sc in (("v0.14", 0.95), ("v0.17", 0.82), ("v1.0", 0.80)):
        a, b, s, c = fits[v]
        assert a == 0.0 and c == pytest.approx(50e-6, rel=1e-3) and b == pytest.approx(3e-6, rel=1e-3)
        assert s == pytest.approx(sc, rel=1e-4)
    bad = t.copy()
    bad.loc[bad.gpu == "h200", "measured_tok_s"] *= 1.5  # one GPU's rows off by a level
    folds = throughput_fit.release_folds(bad, "gpu")
    assert set(folds) == {"h100-sxm", "h200"}
    assert folds["h200"]["v0.14"][2] == pytest.approx(0.95, rel=1e-4)  # fitted without h200
    assert folds["h100-sxm"]["v0.14"][2] < 0.9  # fitted on h200 alone: pulled by the bad rows
    # each h200 row is scored by the fold fitted on clean h100 rows: it predicts the clean value,
    # so the level error of the h200 rows shows in full instead of being fitted away
    pred = throughput_fit.predict_folds(bad, folds, "gpu")
    h200 = (bad.gpu == "h200").to_numpy()
    assert np.allclose(pred[h200], t.measured_tok_s[h200], rtol=1e-3)
    assert np.allclose(pred[h200] / bad.measured_tok_s[h200], 1 / 1.5, rtol=1e-3)


def test_mlperf_rows_run_under_the_release_of_their_software():
    # TensorRT-LLM v0.14 ships TensorRT 10.6, v0.17 10.8, v1.0 10.11; older software -> v0.14
    assert v.mlperf_release("TensorRT 10.2.0, CUDA 12.4") == "trtllm-v0.14"
    assert v.mlperf_release("TensorRT 9.3.0, CUDA 12.2") == "trtllm-v0.14"
    assert v.mlperf_release("TensorRT 10.8, CUDA 12.8") == "trtllm-v0.17"
    assert v.mlperf_release("TensorRT 10.11, CUDA 12.9") == "trtllm-v1.0"
    assert v.mlperf_release("TensorRT 10.10, CUDA 12.9") == "trtllm-v1.0"


def test_the_offline_prompt_inference_reads_the_offline_harness_config():
    # NVIDIA's 8x H100 node runs batch 896 in Offline and 1024 in Server (v4.1 configs)
    assert v._harness("H100_SXM_80GB_TP2x4", "Offline")["batch"] == 896
    assert v._harness("H100_SXM_80GB_TP2x4")["batch"] == 1024
    assert v._harness("H200_SXM_141GBx8", "Offline")["batch"] == 806


def test_rate_at_latency_finds_the_load_where_the_latency_is_reached():
    """On a node whose TPOT is a / (1 - rate / capacity) (the compute-bound fixed point), the rate
    at a target TPOT has a closed form; the bisection finds it within its resolution, from either
    side of the measured rate, and a TTFT limit that breaks first lowers it."""
    a, cap = 0.02, 100.0

    def served(x):
        tpot = a / (1 - x / cap) if x < cap else math.inf
        return {"tpot_s": {"mean": tpot}, "ttft_s": {"p99": 2.0 * tpot}}
    target = 0.15
    exact = cap * (1 - a / target)  # 86.67 req/s
    for measured in (70.0, 95.0):
        got = v.rate_at_latency(served, measured, target, steps=8)
        assert got == pytest.approx(exact, rel=0.01)
    assert v.rate_at_latency(served, 70.0, target, ttft_p99_limit_s=0.2, steps=8) == pytest.approx(
        cap * (1 - a / 0.1), rel=0.01)
    assert v.rate_at_latency(served, 20.0, target) == pytest.approx(30.0)  # never reached: the bracket's end


def _scan(true_c_us, grid_us=(0, 10, 20, 40), gpus=("h100-sxm", "h200", "b200"), seed=0):
    """A synthetic intercept scan: each point's log TPOT error is linear in the candidate per-layer
    term and zero at ``true_c_us`` (per GPU), plus noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for g in gpus:
        for i in range(20):
            slope = rng.uniform(0.002, 0.01)  # log error per us of per-layer term (points differ in batch)
            noise = rng.normal(0, 0.01)
            for c in grid_us:
                rows.append({"per_layer_overhead_s": c * 1e-6, "per_seq_overhead_s": 2e-6, "kernel_time_scale": 0.85,
                             "iteration_overhead_s": 0.0, "point": i, "model": "m", "gpu": g, "tp": 1 + i % 2,
                             "concurrency": 4, "log_err": slope * (c - true_c_us[g]) + noise})
    return pd.DataFrame(rows)


def test_intercept_choice_picks_the_candidate_the_points_were_made_with_and_folds_leave_a_gpu_out():
    s = _scan({"h100-sxm": 20, "h200": 20, "b200": 40})
    assert throughput_fit.intercept_choice(s) == pytest.approx(20e-6)
    # without H100 and H200 agreeing on 20 us, the B200 points alone ask for 40 us
    assert throughput_fit.intercept_choice(s[s.gpu == "b200"]) == pytest.approx(40e-6)
    # leave H100 out: H200 (20 us) and B200 (40 us) split, and the fold takes one of the two
    assert round(throughput_fit.intercept_choice(s, exclude_gpu="h100-sxm") * 1e6) in (20, 40)
    obj = throughput_fit.intercept_objective(s).to_numpy()  # candidates in grid order: 0, 10, 20, 40 us
    assert obj.argmin() == 2 and obj[0] > obj[2] < obj[3]
    tab = throughput_fit.intercept_table(s)
    assert list(tab.per_layer_overhead_s) == sorted(tab.per_layer_overhead_s) and {"bias_tp1", "bias_tp2"} <= set(tab)
    assert abs(tab.bias.iloc[2]) < abs(tab.bias.iloc[0]) and len(tab) == 4


def test_intercept_scan_runs_the_serving_points_and_tpot_rises_with_the_per_layer_term():
    terms = Path(__file__).resolve().parents[2] / "results" / "calibration" / "throughput_trtllm_dense.csv"
    if not terms.is_file():
        pytest.skip("results/ not shipped with an installed package")
    t = pd.read_csv(terms)
    pts = throughput_fit.intercept_points(quick=True)
    s = throughput_fit.intercept_scan(t, grid_us=(0, 60), points=pts, log=lambda *a: None)
    assert len(s) == 2 * len(pts) and np.isfinite(s.log_err).all()
    w = s.pivot(index="point", columns="per_layer_overhead_s", values="pred_tpot_s")
    assert (w[60 / 1e6] > w[0.0]).all()
    # each candidate comes with its own offline refit of b and the scale
    assert s.groupby("per_layer_overhead_s").kernel_time_scale.first().nunique() == 2


def test_aiconfigurator_trtllm_points_run_under_the_fold_without_their_gpu(monkeypatch):
    from sim.calibration import serving_points as sp
    from sim.calibration.overheads import intercept_fold
    seen = []

    def fake(model, gpu, tp, precision, profile, users, isl, osl, **kw):
        prof = load_params(gpu).framework_profiles["trtllm"]
        seen.append((gpu, profile, prof["per_layer_overhead_s"], prof["kernel_time_scale"]))
        return {"ttft_s": 0.1, "tpot_s": 0.01, "window_s": 1.0}
    monkeypatch.setattr(sp, "closed_loop_point", fake)
    rows = sp.aiconfigurator_rows(quick=True)
    assert rows and len(seen) == len(rows) // 2
    committed = dict(load_params("h100-sxm").framework_profiles["trtllm"])
    trt = [(g, c, sc) for g, p, c, sc in seen if p.startswith("trtllm")]
    assert trt and len(trt) < len(seen)  # vLLM / SGLang points too, on their own profile
    for gpu, c, sc in trt:
        a_f, b_f, sc_f, c_f = intercept_fold(gpu)
        assert (c, sc) == (c_f, sc_f)
    folds = committed["intercept_folds"]["gpu"]
    assert {g for g, _, _ in trt} <= set(folds) and len(folds) == 3
    assert load_params("h100-sxm").framework_profiles["trtllm"] == committed  # restored


def test_intercept_fold_is_the_stored_fold_and_carries_a_change_of_the_profile_in_force(monkeypatch):
    from sim.calibration.overheads import intercept_fold
    prof = load_params("h200").framework_profiles["trtllm"]
    fold, base = prof["intercept_folds"]["gpu"]["h200"], prof["intercept_folds"]["committed"]
    keys = ("iteration_overhead_s", "per_seq_overhead_s", "kernel_time_scale", "per_layer_overhead_s")
    assert all(prof[k] == base[k] for k in keys)  # the committed profile is the one in the file
    assert intercept_fold("h200") == tuple(fold[k] for k in keys)
    monkeypatch.setitem(prof, "kernel_time_scale", 2.0 * prof["kernel_time_scale"])
    monkeypatch.setitem(prof, "per_layer_overhead_s", prof["per_layer_overhead_s"] + 7e-6)
    a, b, sc, c = intercept_fold("h200")
    assert sc == pytest.approx(2.0 * fold["kernel_time_scale"]) and c == pytest.approx(fold["per_layer_overhead_s"] + 7e-6)
    assert b == pytest.approx(fold["per_seq_overhead_s"]) and a == pytest.approx(fold["iteration_overhead_s"])


def test_mlperf_rows_score_a_mixtral_submission_like_nvidia_ran_it(monkeypatch):
    """The results files hold no Mixtral row (kept aside to score the engine); with rows added, the
    Server family runs them on the Mixtral card with NVIDIA's Mixtral harness config (TP1 per GPU,
    batch 896 on 8x H100), its own prompt inferred from its own Offline rows, flagged MoE."""
    from sim.calibration import measurements
    read = measurements.read

    def with_mixtral(name):
        d = read(name)
        if name.endswith("v4.1_llm_results.csv"):
            src = d[(d.model == "llama2-70b-99") & (d.submitter == "NVIDIA") & d.scenario.isin(["Offline", "Server"])
                    & d.system_id.str.contains("H100-SXM-80GBx8_TRT", regex=False)]
            mix = src.assign(model="mixtral-8x7b", tokens_per_s=src.tokens_per_s * 2.0,
                             samples_per_s=src.samples_per_s * 2.0)
            d = pd.concat([d, mix], ignore_index=True)
        return d
    monkeypatch.setattr(measurements, "read", with_mixtral)
    v._PROMPT_MEMO.clear()
    try:
        p, cases = v.mlperf_offline_prompt_tokens(model="mixtral-8x7b")
        assert [c["gpu"] for c in cases] == ["h100-sxm"] and cases[0]["tp"] == 1 and cases[0]["batch"] == 896
        assert v.MLPERF_PROMPT_BOUNDS[0] <= p <= v.MLPERF_PROMPT_BOUNDS[1]
        rows = pd.DataFrame(v.mlperf_rows(quick=True))
    finally:
        v._PROMPT_MEMO.clear()
    mix = rows[rows.model == "mixtral-8x7b"]
    assert len(mix) and mix.moe.all() and (~rows[rows.model == "llama-2-70b"].moe).all()
    assert mix.config.str.contains("tp1 x8 batch 896").all() and mix.config.str.contains(f"prompt {p} ").all()
    assert np.isfinite(mix.error).all() and set(mix.metric) >= {"tpot_mean_s", "ttft_mean_s"}


def test_mlperf_prompt_inference_names_a_model_without_offline_rows():
    from sim.core.errors import UserError
    with pytest.raises(UserError, match="mixtral-8x7b: no NVIDIA v4.1 Offline row"):
        v.infer_mlperf_prompt_tokens("mixtral-8x7b")
