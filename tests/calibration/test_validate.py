"""``sovsim validate --quick``: structure, finite errors computed from engine predictions."""
import math

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
    # leave-one-family-out: only the trtllm profile's own version and the MoE scale's GPU are in-sample
    ins = df[df.in_sample]
    assert set(ins.family) <= {"offline", "moe_kernel"}
    assert (ins[ins.family == "offline"].config.str.startswith(throughput_fit.FIT_VERSION)).all()
    assert (~df[df.family.isin(["online", "mlperf_server", "nim_concurrency"])].in_sample).all()
    s = quick["summary"]
    for fam in v.FAMILIES:
        g = s[(s.family == fam) & (s.scope == "all")]
        assert len(g) and (g.n > 0).all() and np.isfinite(g.mdape).all()


def test_errors_come_from_the_engine(quick):
    """A slower step model (kernel-time scale x 1.5) must lengthen latencies and cut throughput."""
    fams = ("offline", "online", "nim_concurrency")
    base = quick["rows"][quick["rows"].family.isin(fams)].reset_index(drop=True)
    p = load_params("h100-sxm")
    with throughput_fit.framework_overheads(p.iteration_overhead_s, p.per_seq_overhead_s, 1.5 * p.kernel_time_scale):
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
