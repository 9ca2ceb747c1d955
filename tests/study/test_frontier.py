"""``sovsim frontier`` (sim.study.frontier): throughput rises with concurrency until the
batch saturates; every closed-loop point obeys Little's law; bad flags are one line, exit 2."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sim.cli import main
from sim.core.errors import UserError
from sim.core.stats import mean_ci
from sim.study.frontier import COLUMNS, frontier, pareto_mask


def test_throughput_monotone_in_concurrency_up_to_saturation():
    """Mixtral 8x7B TP2 on H100, 1,000 input tokens, lognormal outputs (mean ~920): up to
    max_num_seqs (256, the scenario default) users, more users never lower the fleet's output
    tokens/s, and each user's speed (1 / TPOT) falls; beyond it extra users only queue
    (throughput flat within 2 %).  Random lengths, because constant ones keep a closed loop's
    users in lockstep: at exactly 256 users the cohort re-prefills together every cycle and a
    200 s window reads 10 % below saturation (results/frontier/README.md)."""
    conc = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
    df = frontier("mixtral-8x7b", "h100-sxm", 2, concurrency=conc, horizon_s=300.0, warmup_s=100.0,
                  output_tokens={"dist": "lognormal", "mu": 6.7, "sigma": 0.5})
    assert list(df.columns) == COLUMNS and len(df) == len(conc)
    tok = df.output_tok_s_per_gpu.to_numpy()
    user = df.tok_s_per_user.to_numpy()
    sat = conc.index(256)
    assert np.all(np.diff(tok[: sat + 1]) > 0), tok
    assert np.all(np.diff(user[: sat + 1]) < 0), user
    assert abs(tok[-1] / tok[sat] - 1.0) < 0.02
    # past saturation the extra users wait for a slot: TTFT jumps, TPOT does not
    assert df.ttft_p50_s.iloc[-1] > 10 * df.ttft_p50_s.iloc[sat]
    assert df.tpot_p50_s.iloc[-1] == pytest.approx(df.tpot_p50_s.iloc[sat], rel=0.05)
    # every point up to saturation is Pareto-optimal (more throughput costs interactivity); past it
    # a point ties the saturated one on both axes (1 / TPOT leaves out the queueing), up to noise
    assert df.pareto.iloc[: sat + 1].all()


@pytest.mark.parametrize("users", [8, 96, 400])
def test_littles_law_per_point(users):
    """N = X R in a closed loop with no think time: completions per second in the window times
    the mean end-to-end latency equals the concurrency (5 replications, random output lengths
    so that the replications differ; 400 users exceed the 256 running slots and queue)."""
    out = {"dist": "lognormal", "mu": 5.0, "sigma": 0.6}
    df = frontier("llama-3.1-8b", "h100-sxm", 1, input_tokens=500, output_tokens=out, concurrency=[users],
                  horizon_s=400.0, warmup_s=100.0, replications=5, seed=11)
    ci = mean_ci(list(df.littles_n / users))
    assert ci.low <= 1.0 <= ci.high or abs(ci.mean - 1.0) < 0.005, ci
    assert ci.high - ci.low < 0.05


def test_qps_sweep_below_capacity_serves_the_offer():
    """Poisson arrivals below capacity: completions per second match the offered rate."""
    df = frontier("llama-3.1-8b", "h100-sxm", 1, input_tokens=500, output_tokens=200, qps=[2.0, 8.0],
                  horizon_s=600.0, warmup_s=100.0)
    assert (df["mode"] == "qps").all()
    np.testing.assert_allclose(df.completed_per_s, [2.0, 8.0], rtol=0.12)


def test_pareto_mask():
    assert list(pareto_mask([1, 2, 3, 2], [3, 2, 1, 1])) == [True, True, True, False]


def test_same_seed_same_frontier():
    a = frontier("llama-3.1-8b", "h100-sxm", 1, concurrency=[4, 32], horizon_s=200.0, warmup_s=50.0)
    b = frontier("llama-3.1-8b", "h100-sxm", 1, concurrency=[4, 32], horizon_s=200.0, warmup_s=50.0)
    pd.testing.assert_frame_equal(a, b)


def test_library_refuses_bad_input():
    with pytest.raises(UserError, match="--gpus"):
        frontier("mixtral-8x7b", "h100-sxm", 2, gpus=3, concurrency=[1])
    with pytest.raises(UserError, match="exactly one"):
        frontier("mixtral-8x7b", "h100-sxm", 2, concurrency=[1], qps=[1.0])


@pytest.mark.parametrize("argv,what", [
    (["--concurrency", "1,x"], "--concurrency"),
    (["--concurrency", "0,2"], "--concurrency"),
    (["--qps", "-1"], "--qps"),
    (["--gpus", "3"], "--gpus"),
    (["--warmup-s", "900"], "--warmup-s"),
    (["--tp", "0"], "--tp"),
    (["--concurrency", "1", "--qps", "2"], "not allowed with"),
])
def test_cli_bad_flags_one_line_exit_2(argv, what, capsys, tmp_path):
    rc = _main(["frontier", "--model", "mixtral-8x7b", "--gpu", "h100-sxm", "--tp", "2",
                "--out", str(tmp_path), *argv])  # a repeated flag: the last value counts
    err = capsys.readouterr().err
    assert rc == 2 and what in err and err.count("\n") == 1 and "Traceback" not in err


def _main(argv) -> int:
    """The CLI's exit code: argparse refusals exit through SystemExit (one line, code 2)."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def test_cli_unknown_model_exit_2(capsys):
    assert _main(["frontier", "--gpu", "h100-sxm", "--tp", "2"]) == 2  # --model missing: argparse
    assert _main(["frontier", "--model", "nope", "--gpu", "h100-sxm", "--tp", "1"]) == 2
    assert capsys.readouterr().err.count("\n") == 2


def test_cli_writes_csv_and_figure(tmp_path, capsys):
    rc = main(["frontier", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--tp", "1", "--concurrency", "1,16",
               "--horizon-s", "120", "--warmup-s", "30", "--out", str(tmp_path)])
    assert rc == 0
    df = pd.read_csv(tmp_path / "frontier.csv")
    assert list(df.columns) == COLUMNS and len(df) == 2
    assert (tmp_path / "frontier.png").stat().st_size > 10_000


def test_profile_sets_the_engine_of_every_point():
    """With TensorRT-LLM's 2,048-sequence limit, 512 users run at once (no wait for a slot),
    whereas the scenario default (256 sequences) makes half of them queue."""
    kw = dict(concurrency=[512], horizon_s=300.0, warmup_s=100.0)
    base = frontier("mixtral-8x7b", "h100-sxm", 2, **kw)
    trt = frontier("mixtral-8x7b", "h100-sxm", 2, profile="trtllm-guaranteed-no-evict", **kw)
    assert trt.ttft_p50_s.iloc[0] < 1.0 < base.ttft_p50_s.iloc[0]
    assert trt.output_tok_s_per_gpu.iloc[0] > base.output_tok_s_per_gpu.iloc[0]
    assert trt.preemptions.iloc[0] == 0
