"""The ``aiconfigurator`` and ``vllm_trace`` validation families: the data loads and maps onto
the catalog, both are scored (held out, dense and MoE), and a wrong step model moves the error."""
import numpy as np
import pytest

from sim.calibration import measurements, serving_points as sp, validate as v
from sim.perf import catalog
from sim.perf.profiles import PROFILES
from sim.perf.roofline import load_params

FAMS = ("aiconfigurator", "vllm_trace")


@pytest.fixture(scope="module")
def quick():
    return v.validate(quick=True, families=FAMS, log=lambda *a: None)


def test_aiconfigurator_points_map_onto_the_catalog():
    d = sp.aiconfigurator_points(quick=False)
    assert len(d) >= 500
    assert set(d.gpu) == {"h100-sxm", "h200", "b200"} and set(d.model) == {"llama-3.1-8b", "llama-3.1-70b"}
    for m in set(d.model):
        catalog.llm(m)
    assert set(d.sim_precision) <= set(catalog.PRECISIONS)
    assert set(d.backend.map(sp.BACKEND_PROFILES)) <= set(PROFILES)
    assert (d.silicon_ttft_ms > 0).all() and (d.silicon_tpot_ms > 0).all() and (d.concurrency >= 1).all()
    # batch_size is the client concurrency the source string records
    conc = d.silicon_data_source.str.extract(r"silicon_concurrency=(\d+)")[0].astype(int)
    assert (conc == d.concurrency).all()
    q = sp.aiconfigurator_points(quick=True)
    assert len(q) == len(d.groupby(["model", "gpu", "backend"])) and len(q) <= 10


def test_trace_and_series_agree():
    """The measured series sums to the replayed trace's output tokens (within 0.2 %, PROVENANCE)."""
    t = measurements.read(sp.TRACE_FILE)
    s = measurements.read(sp.SERIES_FILE)
    for scen, (model, trace, tp, inst) in sp.TRACE_RUNS.items():
        tt = t[t.trace_file == trace]
        assert len(tt) == 300
        tot = s[s.scenario == scen].measured_generation_throughput_tok_per_s.sum()
        assert tot == pytest.approx(tt.output_toks.sum(), rel=2e-3)


def test_families_are_scored_held_out(quick):
    df, s = quick["rows"], quick["summary"]
    assert set(df.family) == set(FAMS)
    assert not df.in_sample.any()
    assert np.isfinite(df.error).all() and (df.predicted > 0).all()
    assert np.allclose(df.error, df.predicted / df.measured - 1.0)
    assert set(df[df.family == "aiconfigurator"].metric) == {"ttft_mean_s", "tpot_mean_s"}
    assert {"output_tok_s", "plateau_tok_s", "drain_s", "bin_tok_s"} <= set(df[df.family == "vllm_trace"].metric)
    assert set(df[df.family == "aiconfigurator"].gpu) == {"h100-sxm", "h200", "b200"}
    assert df[df.family == "vllm_trace"].moe.all()  # quick: the Mixtral run
    for fam in FAMS:
        g = s[(s.family == fam) & (s.scope == "held_out")]
        assert len(g) and (g.n > 0).all() and np.isfinite(g.mdape).all() and np.isfinite(g.bias).all()


def test_a_wrong_step_model_moves_the_error(quick, monkeypatch):
    """Every framework profile's kernels x 2.5 above their streaming floors (the weight and KV
    streams do not scale): TPOT rises, the trace drains later, throughput falls."""
    for gid in catalog.gpus():
        try:
            p = load_params(gid)
        except v.UserError:
            continue
        monkeypatch.setattr(p, "kernel_time_scale", 2.5 * p.kernel_time_scale)
        for prof in p.framework_profiles.values():
            monkeypatch.setitem(prof, "kernel_time_scale", 2.5 * prof.get("kernel_time_scale", 1.0))
    slow = v.validate(quick=True, families=FAMS, log=lambda *a: None)["rows"]
    base = quick["rows"]
    keys = ["family", "model", "gpu", "config", "metric", "measured"]
    assert base[keys].equals(slow[keys])
    r = slow.predicted / base.predicted
    tpot = base.metric == "tpot_mean_s"
    assert (r[tpot] > 1.05).all() and r[tpot].median() > 1.3
    assert r[base.metric == "drain_s"].iloc[0] > 1.1
    assert r[base.metric == "output_tok_s"].iloc[0] < 1.0
    assert (slow[tpot].error.median() - base[tpot].error.median()) > 0.2


def test_outputs_carry_the_trace_series(quick, tmp_path):
    v.write_outputs(quick, tmp_path, log=lambda *a: None)
    assert (tmp_path / "vllm_trace_series.png").is_file()
    md = (tmp_path / "README.md").read_text()
    assert "aiconfigurator" in md and "vllm_trace" in md
