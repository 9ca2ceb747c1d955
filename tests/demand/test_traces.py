"""Trace loading and replay: exact times at scale 1, scaling, bad rows by line number."""
import math
import warnings

import numpy as np
import pandas as pd
import pytest

from sim.demand.arrivals import CHUNK, TraceReplayProcess
from sim.demand.verticals import trace_path
from sim.core.errors import UserError
from sim.scenario import ScenarioError, scenario_from_dict
from sim.demand.traces import TraceWarning, load_trace


def _replay(proc, seed=0, horizon=math.inf):
    parts = list(proc.chunks(np.random.default_rng(seed), horizon))
    if not parts:
        return np.empty(0), np.empty(0, int), np.empty(0, int)
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))


def _write(path, header, rows):
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


@pytest.fixture
def float_trace(tmp_path):
    rng = np.random.default_rng(3)
    t = np.concatenate([[0.0], np.cumsum(rng.exponential(0.37, 9999))])
    pr = rng.integers(1, 5000, 10000)
    ou = rng.integers(1, 900, 10000)
    rows = [f"{a!r},{b},{c}" for a, b, c in zip(t.tolist(), pr, ou)]
    return _write(tmp_path / "t.csv", "timestamp_s,prompt_tokens,output_tokens", rows), t, pr, ou


def test_replay_scale_one_is_exact(float_trace):
    path, t, pr, ou = float_trace
    proc = TraceReplayProcess(load_trace(path))
    rt, rp, ro = _replay(proc)
    assert np.array_equal(rt, t) and np.array_equal(rp, pr) and np.array_equal(ro, ou)
    # chunks stay bounded (lazy) and the horizon cuts strictly
    sizes = [len(c[0]) for c in proc.chunks(np.random.default_rng(0), math.inf)]
    assert max(sizes) <= CHUNK
    ht, _, _ = _replay(proc, horizon=float(t[5000]))
    assert np.array_equal(ht, t[:5000])


def test_replay_azure_datetimes_exact_against_pandas():
    """Arrival times of the bundled Azure trace equal pandas' independent nanosecond parse."""
    path = trace_path("azure-conv")
    df = pd.read_csv(path)
    ns = pd.to_datetime(df["TIMESTAMP"]).astype("int64").to_numpy()
    expected = (ns - ns[0]).astype(np.float64) / 1e9
    rt, rp, ro = _replay(TraceReplayProcess(load_trace(path)))
    assert len(rt) == 19366
    assert np.array_equal(rt, expected)
    assert np.array_equal(rp, df["ContextTokens"].to_numpy()) and np.array_equal(ro, df["GeneratedTokens"].to_numpy())


def test_replay_milliseconds_mooncake():
    rt, _, _ = _replay(TraceReplayProcess(load_trace(trace_path("mooncake-conv"))))
    df = pd.read_csv(trace_path("mooncake-conv"))
    assert np.array_equal(rt, df["timestamp_ms"].to_numpy() / 1000.0)


def test_time_scale(float_trace):
    path, t, _, _ = float_trace
    tr = load_trace(path)
    rt, _, _ = _replay(TraceReplayProcess(tr, time_scale=2.5))
    assert np.array_equal(rt, t * 2.5)
    p = TraceReplayProcess(tr, time_scale=0.5)
    assert p.mean_rate_per_s() == pytest.approx(2 * TraceReplayProcess(tr).mean_rate_per_s())


@pytest.mark.parametrize("r", [0.3, 1.0, 2.0, 2.5])
def test_rate_scale_keeps_profile(float_trace, r):
    path, t, pr, ou = float_trace
    tr = load_trace(path)
    rt, rp, ro = _replay(TraceReplayProcess(tr, rate_scale=r), seed=4)
    n = len(t)
    frac = r - math.floor(r)
    sd = math.sqrt(n * frac * (1 - frac))
    assert abs(len(rt) - n * r) <= 5 * sd + 1e-9
    assert np.all(np.diff(rt) >= 0) and rt[0] >= 0
    # ten equal stretches of the trace keep r times their original counts
    edges = np.linspace(0, t[-1] + 1e-9, 11)
    orig, _ = np.histogram(t, edges)
    new, _ = np.histogram(rt, edges)
    assert np.all(np.abs(new - r * orig) <= 5 * np.sqrt(orig * frac * (1 - frac)) + 2 * max(1, math.ceil(r)))
    # every emitted request is a trace request (same lengths), copies sit before the next one
    idx = np.searchsorted(t, rt, side="right") - 1
    assert np.array_equal(rp, pr[idx]) and np.array_equal(ro, ou[idx])
    if r >= 1:
        assert np.all(np.bincount(idx, minlength=n) >= math.floor(r))


def test_repeat_loops_until_horizon(float_trace):
    path, t, _, _ = float_trace
    p = TraceReplayProcess(load_trace(path), repeat=True)
    rt, _, _ = _replay(p, horizon=2.5 * p.period_s)
    assert len(rt) == 2 * len(t) + np.sum(t < 0.5 * p.period_s)
    assert np.array_equal(rt[len(t): 2 * len(t)], t + p.period_s)


BAD = [
    "0.0,10,5",
    "1.0,10",  # line 3: wrong field count
    "2.0,10,5",
    "two,10,5",  # line 5: bad time
    "",  # line 6: blank, ignored
    "4.0,10,0",  # line 7: output 0
    "5.0,abc,5",  # line 8: bad prompt
    "6.0,12.5,5",  # line 9: not an integer
    "inf,10,5",  # line 10: not finite
    "7.0,11,6",
]


def test_bad_rows_refuse_names_file_and_line(tmp_path):
    path = _write(tmp_path / "bad.csv", "timestamp_s,prompt_tokens,output_tokens", BAD)
    with pytest.raises(UserError) as e:
        load_trace(path)
    msg = str(e.value)
    assert "bad.csv" in msg and "line 3:" in msg and "2 fields" in msg
    assert "6 malformed rows" in msg and "lines 3, 5, 7, 8, 9, 10" in msg and "\n" not in msg


def test_bad_rows_skip_reports_lines(tmp_path):
    path = _write(tmp_path / "bad.csv", "timestamp_s,prompt_tokens,output_tokens", BAD)
    with pytest.warns(TraceWarning, match=r"skipped 6 malformed rows \(lines 3, 5, 7, 8, 9, 10\)"):
        tr = load_trace(path, on_bad_rows="skip")
    assert [b.line for b in tr.bad_rows] == [3, 5, 7, 8, 9, 10]
    assert np.array_equal(tr.times_s, [0.0, 2.0, 7.0])
    rep = tr.report()
    assert rep["bad_rows"] == 6 and rep["bad_lines"] == [3, 5, 7, 8, 9, 10] and rep["rows_used"] == 3
    assert "line 8: prompt_tokens 'abc' is not an integer >= 1" in rep["bad_reasons"]


def test_clean_file_no_warning_and_unsorted_rows(tmp_path):
    path = _write(tmp_path / "u.csv", "TIMESTAMP,ContextTokens,GeneratedTokens,extra",
                  ["2024-05-10 00:00:01.5+00:00,5,6,x", "2024-05-10T00:00:00Z,7,8,y", "2024-05-10 01:00:00.0000001+01:00,9,1,z"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tr = load_trace(path)
    assert np.array_equal(tr.times_s, [0.0, 1e-7, 1.5])  # +01:00 offset honoured
    assert np.array_equal(tr.prompt_tokens, [7, 9, 5]) and tr.out_of_order_rows == 3
    assert tr.report()["first_timestamp"] == "2024-05-10T00:00:00Z"


def test_header_and_file_errors(tmp_path):
    p = _write(tmp_path / "h.csv", "time,prompt,output", ["0,1,1"])
    with pytest.raises(UserError, match=r"h.csv: line 1: header .* lacks a column for time"):
        load_trace(p)
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(UserError, match="line 1: empty file"):
        load_trace(tmp_path / "e.csv")
    with pytest.raises(UserError, match="no such trace file"):
        load_trace(tmp_path / "missing.csv")
    p = _write(tmp_path / "allbad.csv", "timestamp_s,prompt_tokens,output_tokens", ["x,1,1"])
    with pytest.raises(UserError, match=r"no valid request rows \(1 malformed\)"):
        load_trace(p, on_bad_rows="skip")
    with pytest.raises(UserError, match="on_bad_rows"):
        load_trace(p, on_bad_rows="ignore")


def test_scenario_trace_arrivals(tmp_path):
    path = _write(tmp_path / "bad.csv", "timestamp_s,prompt_tokens,output_tokens", BAD)
    base = {"deployments": [{"name": "d", "model": "m", "step_time": {"kind": "constant", "decode_step_s": 0.02}}]}
    w = {"name": "w", "model": "m", "arrivals": {"kind": "trace", "path": str(path), "on_bad_rows": "skip", "time_scale": 2.0}}
    sc = scenario_from_dict({**base, "workloads": [w]})
    with pytest.warns(TraceWarning):
        proc = sc.workloads[0].arrivals.build()
    assert proc.report()["bad_lines"] == [3, 5, 7, 8, 9, 10]
    rt, _, _ = _replay(proc)
    assert np.array_equal(rt, [0.0, 4.0, 14.0])
    w_refuse = {**w, "arrivals": {"kind": "trace", "path": str(path)}}
    with pytest.raises(UserError, match="line 3"):
        scenario_from_dict({**base, "workloads": [w_refuse]}).workloads[0].arrivals.build()
    with pytest.raises(ScenarioError, match="prompt_tokens must be left out"):
        scenario_from_dict({**base, "workloads": [{**w, "prompt_tokens": {"dist": "constant", "value": 3}}]})


# ------------------------------------------------------------------ hardening regressions
SCEN = """
name = "trace-hardening"
[simulation]
horizon_s = 60.0
[[deployments]]
name = "d"
model = "m"
step_time = {{ kind = "constant", decode_step_s = 0.02, kv_cache_tokens = 20000 }}
[[workloads]]
name = "w"
model = "m"
arrivals = {{ kind = "trace", path = "{path}", on_bad_rows = "{mode}", repeat = {repeat} }}
"""


def _cli_refuses(tmp_path, capsys, trace, mode="refuse", repeat="false"):
    from sim.cli import main
    sc = tmp_path / "s.toml"
    sc.write_text(SCEN.format(path=trace, mode=mode, repeat=repeat))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TraceWarning)
        rc = main(["run", str(sc), "--quiet", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


@pytest.mark.parametrize("mode", ["refuse", "skip"])
def test_token_count_beyond_int64_is_a_bad_row(tmp_path, capsys, mode):
    path = _write(tmp_path / "big.csv", "timestamp_s,prompt_tokens,output_tokens",
                  ["0.0,10,5", f"1.0,{2**70},5", "2.0,10,5"])
    if mode == "refuse":
        err = _cli_refuses(tmp_path, capsys, path)
        assert f"line 3: prompt_tokens '{2**70}' is above 16777216 tokens" in err
    else:
        with pytest.warns(TraceWarning, match="line 3"):
            tr = load_trace(path, on_bad_rows="skip")
        assert len(tr) == 2 and tr.prompt_tokens.dtype == np.int64


def test_one_row_trace_with_repeat_is_one_line(tmp_path, capsys):
    path = _write(tmp_path / "one.csv", "timestamp_s,prompt_tokens,output_tokens", ["0.0,10,5"])
    err = _cli_refuses(tmp_path, capsys, path, repeat="true")
    assert "repeat = true needs a trace of at least 2 rows, it has 1" in err


def test_rows_sharing_one_timestamp_with_repeat_are_refused_not_looped(tmp_path, capsys):
    path = _write(tmp_path / "same.csv", "timestamp_s,prompt_tokens,output_tokens", ["5.0,10,5"] * 3)
    err = _cli_refuses(tmp_path, capsys, path, repeat="true")
    assert "repeat = true needs rows at different times" in err and "allowed:" in err
    TraceReplayProcess(load_trace(path))   # without repeat: three arrivals at t = 0, fine


def test_skip_mode_time_format_comes_from_the_valid_rows(tmp_path):
    rows = ["garbled!,10,5", "2024-05-10 00:00:00,10,5", "2024-05-10 00:00:02.5,11,6", "2024-05-10 00:00:04,12,7"]
    path = _write(tmp_path / "g.csv", "timestamp,prompt_tokens,output_tokens", rows)
    with pytest.warns(TraceWarning, match=r"skipped 1 malformed row \(lines 2\)"):
        tr = load_trace(path, on_bad_rows="skip")
    assert np.array_equal(tr.times_s, [0.0, 2.5, 4.0])
    assert tr.bad_rows[0].line == 2 and "is not an ISO date-time" in tr.bad_rows[0].reason


def test_huge_timestamps_are_bad_rows(tmp_path, capsys):
    path = _write(tmp_path / "h.csv", "timestamp_s,prompt_tokens,output_tokens", ["1e308,10,5", "-1e308,10,5", "3.0,10,5"])
    err = _cli_refuses(tmp_path, capsys, path)
    assert "line 2: timestamp_s '1e308' is not a finite number of seconds (within +-1e+12 s)" in err
    assert "lines 2, 3" in err
    with pytest.warns(TraceWarning):
        tr = load_trace(path, on_bad_rows="skip")
    assert len(tr) == 1 and tr.report()["rows_used"] == 1


def test_bad_bytes_are_named_by_their_own_line(tmp_path, capsys):
    path = tmp_path / "bytes.csv"
    path.write_bytes(b"timestamp_s,prompt_tokens,output_tokens\n0.0,10,5\n1.0,10,5\n2.0,\xff\xfe,5\n3.0,10,5\n")
    err = _cli_refuses(tmp_path, capsys, path)
    assert "line 4: not UTF-8 text (byte 0xff at column 5)" in err and "line 1" not in err
    with pytest.warns(TraceWarning, match=r"\(lines 4\)"):
        tr = load_trace(path, on_bad_rows="skip")
    assert np.array_equal(tr.times_s, [0.0, 1.0, 3.0])
    path.write_bytes(b"timestamp_s,\xffprompt_tokens,output_tokens\n0.0,10,5\n")
    with pytest.raises(UserError, match="line 1: unreadable header \\(not UTF-8"):
        load_trace(path)
