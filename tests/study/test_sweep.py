"""Sweeps: grid expansion, common random numbers, atomic resumable points, executors.

Most tests use ``tests/sweep_fake.py`` (a cheap deterministic stand-in for the simulator);
the ones marked ``real runner`` call ``sim.study.run.run`` on a tiny scenario.
"""
from __future__ import annotations

import concurrent.futures as cf
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from sim.study import sweep
from sim.core.errors import UserError
from sim.scenario import load_scenario

HERE = Path(__file__).resolve().parents[1]   # tests/: the shared helpers (sweep_fake.py)
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from sweep_fake import fake_point  # noqa: E402

GRID = {"deployments.0.replicas": [1, 2, 4], "workloads.0.arrivals.rate_per_s": [1.0, 3.0]}


@pytest.fixture(scope="module")
def base():
    return load_scenario("day")


# ------------------------------------------------------------------ grid and seeds
def test_parse_grid_values_and_ranges():
    assert sweep.parse_grid(["a.b=1,2.5,x,true"]) == {"a.b": [1, 2.5, "x", True]}
    assert sweep.parse_grid(["n=1..4"]) == {"n": [1, 2, 3, 4]}
    assert sweep.parse_grid(["n=2..10..4"]) == {"n": [2, 6, 10]}
    for bad in (["novalue"], ["n=5..1"], ["n=1..x"], ["n=1", "n=2"], ["=1,2"]):
        with pytest.raises(UserError):
            sweep.parse_grid(bad)


def test_expand_grid_is_cartesian_and_validated(base):
    pts = sweep.expand_grid(base, GRID)
    assert [p.index for p in pts] == list(range(6))
    assert pts[0].overrides == {"deployments.0.replicas": 1, "workloads.0.arrivals.rate_per_s": 1.0}
    assert pts[5].overrides == {"deployments.0.replicas": 4, "workloads.0.arrivals.rate_per_s": 3.0}
    assert json.loads(pts[3].scenario_json)["deployments"][0]["replicas"] == 2
    assert len({p.scenario_json for p in pts}) == 6
    with pytest.raises(UserError, match="deployments.0.nosuch"):
        sweep.expand_grid(base, {"deployments.0.nosuch": [1]})
    with pytest.raises(UserError):  # replicas must be >= 0: validated before anything runs
        sweep.expand_grid(base, {"deployments.0.replicas": [-1]})


def test_replication_seeds_distinct_stable_prefix():
    s5 = sweep.replication_seeds(7, 5)
    assert len(set(s5)) == 5 and all(0 <= s < 2**63 for s in s5)
    assert sweep.replication_seeds(7, 3) == s5[:3]  # adding replications keeps the old ones
    assert sweep.replication_seeds(8, 5) != s5


def test_common_random_numbers_across_points(base, tmp_path):
    res = sweep.run_sweep(base, GRID, 3, tmp_path, point_fn=fake_point, progress=False)
    reps = res.replications_table
    # every point uses the same seed for replication r ...
    assert reps.groupby("replication")["seed"].nunique().eq(1).all()
    assert reps["seed"].nunique() == 3
    # ... so the fake's noise (a function of the seed only) is identical across points
    assert reps.groupby("replication")["noise"].nunique().eq(1).all()


# ------------------------------------------------------------------ tables
def test_points_table_means_and_t_intervals(base, tmp_path):
    res = sweep.run_sweep(base, GRID, 4, tmp_path, point_fn=fake_point, progress=False)
    pts = res.points_table
    assert list(pts["point"]) == list(range(6))
    assert (pts["replications"] == 4).all()
    from scipy import stats

    g = res.replications_table.query("point == 2")["sla_attainment"].to_numpy()
    half = stats.t.ppf(0.975, 3) * g.std(ddof=1) / np.sqrt(4)
    row = pts.iloc[2]
    assert row["sla_attainment_mean"] == pytest.approx(g.mean())
    assert row["sla_attainment_ci95_lo"] == pytest.approx(g.mean() - half)
    assert row["sla_attainment_ci95_hi"] == pytest.approx(g.mean() + half)
    assert "ttft_s.p99_mean" in pts and "workloads.chat.sla_attainment_mean" in pts
    import pandas as pd

    on_disk = pd.read_parquet(tmp_path / "points.parquet")
    pd.testing.assert_frame_equal(on_disk, pts)


def test_single_replication_has_nan_interval():
    m, lo, hi = sweep.mean_ci95(np.array([0.5]))
    assert m == 0.5 and np.isnan(lo) and np.isnan(hi)


# ------------------------------------------------------------------ persistence
def test_rerun_reuses_and_recomputes_damaged(base, tmp_path, monkeypatch):
    log = tmp_path / "calls.log"
    monkeypatch.setenv("SOVSIM_FAKE_LOG", str(log))
    r1 = sweep.run_sweep(base, GRID, 2, tmp_path / "s", point_fn=fake_point, progress=False)
    assert (r1.computed, r1.reused) == (12, 0)
    files = sorted((tmp_path / "s" / "points").glob("*.json"))
    assert len(files) == 12 and not list((tmp_path / "s" / "points").glob(".tmp-*"))  # no leftovers
    files[0].write_text('{"key": "trunc')  # damaged by hand: recomputed, not trusted
    r2 = sweep.run_sweep(base, GRID, 3, tmp_path / "s", point_fn=fake_point, progress=False)
    # a third replication adds 6 runs; the damaged one is redone; the other 11 are reused
    assert (r2.computed, r2.reused) == (7, 11)
    assert len(log.read_text().splitlines()) == 12 + 7
    assert r2.points_table.shape[0] == 6


def test_kill_and_resume(tmp_path):
    """Kill a sweep midway; rerun; nothing finished is recomputed, touched or corrupted."""
    out = tmp_path / "sweep"
    log = tmp_path / "calls.log"
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import concurrent.futures as cf, sys
        sys.path.insert(0, {str(HERE)!r})
        from sweep_fake import fake_point
        from sim.scenario import load_scenario
        from sim.study.sweep import run_sweep
        grid = {{"deployments.0.replicas": list(range(1, 11))}}
        with cf.ProcessPoolExecutor(2) as ex:
            r = run_sweep(load_scenario("day"), grid, 2, {str(out)!r}, executor=ex,
                          point_fn=fake_point, progress=False)
        print(r.computed, r.reused)
    """))
    env = dict(os.environ, PYTHONPATH=str(ROOT), SOVSIM_FAKE_LOG=str(log), SOVSIM_FAKE_SLEEP_S="0.15")
    proc = subprocess.Popen([sys.executable, str(script)], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pdir = out / "points"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if pdir.is_dir() and len(list(pdir.glob("*.json"))) >= 5:
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole group: the parent and its pool workers
    proc.wait()
    done = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in pdir.glob("*.json")}
    assert 5 <= len(done) < 20, "the sweep should have been killed midway"
    for name, (_, _, data) in done.items():
        json.loads(data)  # every finished file is whole

    log.unlink()
    r = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    computed, reused = map(int, r.stdout.split())
    assert reused == len(done) and computed == 20 - len(done)
    assert len(log.read_text().splitlines()) == computed  # only the missing ones ran
    for name, (ino, mtime, data) in done.items():
        st = (pdir / name).stat()
        assert (st.st_ino, st.st_mtime_ns) == (ino, mtime)
        assert (pdir / name).read_bytes() == data
    assert len(list(pdir.glob("*.json"))) == 20


# ------------------------------------------------------------------ executors
def _summaries(res):
    return {t.key: res.records[t.key]["summary"] for t in res.tasks}


def test_serial_pool_and_dask_agree(base, tmp_path):
    distributed = pytest.importorskip("distributed")
    grid = {"deployments.0.replicas": [1, 3]}
    serial = sweep.run_sweep(base, grid, 2, tmp_path / "a", point_fn=fake_point, progress=False)
    with cf.ProcessPoolExecutor(2) as ex:
        pool = sweep.run_sweep(base, grid, 2, tmp_path / "b", executor=ex, point_fn=fake_point, progress=False)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        dask = sweep.run_sweep(base, grid, 2, tmp_path / "c", executor=client.get_executor(),
                               point_fn=fake_point, progress=False)
    assert _summaries(serial) == _summaries(pool) == _summaries(dask)
    assert dask.computed == 4


def test_make_executor_scheduler_via_address(base, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        ex, close = sweep.make_executor(scheduler=cluster.scheduler_address)
        try:
            res = sweep.run_sweep(base, {"deployments.0.replicas": [2]}, 2, tmp_path, executor=ex,
                                  point_fn=fake_point, progress=False)
        finally:
            close()
    assert res.computed == 2


def test_bad_scheduler_is_user_error():
    pytest.importorskip("distributed")
    with pytest.raises(UserError, match="cannot connect"):
        sweep.make_executor(scheduler="tcp://127.0.0.1:1", connect_timeout_s=1.0)


# ------------------------------------------------------------------ capacity search
def test_capacity_bisection_matches_brute_force(base, tmp_path):
    from sim.study.capacity_search import capacity_search, parse_targets

    targets = parse_targets(["general=0.9"], base)
    r = capacity_search(base, targets, replications=3, out_dir=tmp_path, point_fn=fake_point, progress=False)
    # brute force over the same cached runs: the smallest n whose mean attainment >= 0.9
    brute = sweep.run_sweep(base, {"deployments.0.replicas": list(range(1, 40))}, 3, tmp_path / "b",
                            point_fn=fake_point, progress=False).points_table
    expect = int(brute.loc[brute["workloads.chat.sla_attainment_mean"] >= 0.9, "deployments.0.replicas"].min())
    assert r.replicas == expect and r.gpus == expect * base.deployments[0].tp
    assert len(r.evaluations) < 12  # bisection, not a scan
    feas = {e.replicas: e.feasible for e in r.evaluations}
    assert feas[expect] and not feas.get(expect - 1, False)
    assert json.loads((tmp_path / "capacity.json").read_text())["replicas"] == expect
    assert r.cost is None and "economics" in r.cost_note  # the fake carries no ledger block


def _fake_point_with_economics(scenario_json: str, seed: int) -> dict:
    """The fake plus a ledger block: cost proportional to GPUs, so the answer's cost is known."""
    out = fake_point(scenario_json, seed)
    scen = json.loads(scenario_json)
    gpus = sum(d["replicas"] * d["tp"] for d in scen["deployments"])
    cost = 3.0 * gpus + out["noise"]
    out.update(duration_s=1800.0, economics={
        "revenue_eur": 100.0, "costs_eur": cost, "margin_eur": 100.0 - cost, "margin_share": (100.0 - cost) / 100.0,
        "cost_eur_per_mtok": cost / 2.0, "cost_eur_per_mtok_output": cost})
    return out


def test_capacity_cost_comes_from_the_runs_at_the_answer(base, tmp_path):
    from sim.study.capacity_search import capacity_search, parse_targets

    r = capacity_search(base, parse_targets(["general=0.9"], base), replications=3, out_dir=tmp_path,
                        point_fn=_fake_point_with_economics, progress=False)
    c = r.cost
    assert c is not None and c["replications"] == 3
    assert c["costs_eur"]["mean"] == pytest.approx(3.0 * r.gpus, abs=0.05)  # noise ~ N(0, 0.01)
    assert c["costs_eur"]["ci95_lo"] <= c["costs_eur"]["mean"] <= c["costs_eur"]["ci95_hi"]
    assert c["margin_eur"]["mean"] == pytest.approx(100.0 - c["costs_eur"]["mean"])
    assert c["costs_eur_per_h"]["mean"] == pytest.approx(2.0 * c["costs_eur"]["mean"])  # 1800 s run
    assert "margin share" in r.cost_note
    assert json.loads((tmp_path / "capacity.json").read_text())["cost"]["costs_eur"]["mean"] == c["costs_eur"]["mean"]


def test_capacity_bad_targets_and_scope(base):
    from sim.study.capacity_search import parse_targets, scope_deployments

    assert parse_targets(None, base) == {"general": base.workloads[0].sla.attainment_target}
    for bad in (["finance=0.99"], ["general"], ["general=1.5"], ["general=abc"]):
        with pytest.raises(UserError):
            parse_targets(bad, base)
    assert scope_deployments(base, "deployment:mixtral-h100") == [0]
    for bad in ("site:nowhere", "deployment:nope", "bogus"):
        with pytest.raises(UserError):
            scope_deployments(base, bad)


# ------------------------------------------------------------------ report
def test_html_report_is_self_contained(tmp_path, base):
    import base64

    from sim.study.report import scenario_sources_rows, write_html_report

    png = b"\x89PNG\r\n\x1a\nfake"
    (tmp_path / "fig.png").write_bytes(png)
    p = write_html_report(tmp_path, "A <b>title</b>", {"sla_attainment": 0.987, "ttft_s": {"p99": 1.5}},
                          [tmp_path / "fig.png"], sweep.resolved_json(base), scenario_sources_rows(base))
    html = p.read_text()
    assert base64.b64encode(png).decode() in html
    assert "A &lt;b&gt;title&lt;/b&gt;" in html and "ttft_s.p99" in html
    assert "MLPerf" in html  # a source from the schema descriptions
    assert "mixtral-h100" in html and "src=\"http" not in html


# ------------------------------------------------------------------ sovsim figures
def test_figures_reports_changed_outputs(tmp_path, capsys):
    import argparse

    from sim.cli.sweep import cmd_figures

    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "_common.py").write_text("")  # helpers are not experiments
    (tmp_path / "experiments" / "demo.py").write_text(textwrap.dedent("""
        import argparse, os, pathlib
        if __name__ == "__main__":
            p = argparse.ArgumentParser(); p.add_argument("--out"); p.add_argument("--quick", action="store_true")
            a = p.parse_args(); out = pathlib.Path(a.out); out.mkdir(parents=True, exist_ok=True)
            (out / "table.csv").write_text(os.environ.get("DEMO_VALUE", "1") + "\\n")
    """))
    (tmp_path / "experiments" / "helper.py").write_text("X = 1\n")  # no __main__: not an experiment
    args = argparse.Namespace(names=[], root=tmp_path, quick=False)
    assert cmd_figures(args) == 0
    first = capsys.readouterr().out
    assert "table.csv" in first and "helper" not in first  # new file: changed
    assert cmd_figures(args) == 0
    assert "demo" in (o := capsys.readouterr().out) and o.strip().endswith("none")
    os.environ["DEMO_VALUE"] = "2"
    try:
        assert cmd_figures(args) == 0
    finally:
        del os.environ["DEMO_VALUE"]
    assert capsys.readouterr().out.strip().endswith("table.csv")
    with pytest.raises(UserError):
        cmd_figures(argparse.Namespace(names=["nope"], root=tmp_path, quick=False))


# ------------------------------------------------------------------ the real runner
def _tiny_real_scenario():
    """A few simulated seconds on a constant step-time model: fast, and independent of sim.perf."""
    from sim.scenario import with_overrides

    return with_overrides(load_scenario("day"), {
        "simulation.horizon_s": 30.0,
        "deployments.0.step_time": {"kind": "constant", "decode_step_s": 0.03,
                                    "prefill_per_token_s": 5e-5, "kv_cache_tokens": 200000},
    })


def test_real_runner_identical_serial_pool_dask(tmp_path):
    """Same scenario + seed -> identical summaries in-process, in a process pool and on Dask."""
    distributed = pytest.importorskip("distributed")
    base = _tiny_real_scenario()
    grid = {"deployments.0.replicas": [1, 3]}
    serial = sweep.run_sweep(base, grid, 2, tmp_path / "a", progress=False)
    with cf.ProcessPoolExecutor(2) as ex:
        pool = sweep.run_sweep(base, grid, 2, tmp_path / "b", executor=ex, progress=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        dask = sweep.run_sweep(base, grid, 2, tmp_path / "c", executor=client.get_executor(), progress=False)
    s, p, d = _summaries(serial), _summaries(pool), _summaries(dask)
    assert s == p == d
    first = next(iter(s.values()))
    assert first["arrivals"] > 0 and 0.0 <= first["sla_attainment"] <= 1.0
    # CRN: replication r saw the same arrivals at both grid points (arrivals do not depend on replicas)
    reps = serial.replications_table
    assert reps.groupby("replication")["arrivals"].nunique().eq(1).all()
    assert reps.groupby("point")["arrivals"].nunique().eq(2).all()


def test_user_error_in_a_point_names_the_point(base, tmp_path):
    with pytest.raises(UserError, match=r"sweep point 1 \{'deployments.0.replicas': 0\}: no replicas"):
        sweep.run_sweep(base, {"deployments.0.replicas": [1, 0]}, 1, tmp_path, point_fn=fake_point, progress=False)
    assert len(list((tmp_path / "points").glob("*.json"))) == 1  # the good point was kept


def test_real_runner_capacity_search(tmp_path):
    from sim.study.capacity_search import capacity_search
    from sim.scenario import with_overrides

    base = with_overrides(_tiny_real_scenario(), {"workloads.0.arrivals.rate_per_s": 20.0,
                                                   "deployments.0.batching.max_num_seqs": 8})
    r = capacity_search(base, {"general": 0.95}, replications=2, out_dir=tmp_path, progress=False)
    assert r.replicas is not None and r.replicas > 1
    feas = {e.replicas: e for e in r.evaluations}
    assert feas[r.replicas].feasible and feas[r.replicas].attainment["general"][0] >= 0.95
    assert not feas[r.replicas - 1].feasible  # bisection ends on adjacent counts
    assert r.gpus == r.replicas * base.deployments[0].tp


def test_run_report_for_a_real_run(tmp_path):
    from sim.study.report import write_run_report
    from sim.study.run import run

    result = run(_tiny_real_scenario(), seed=3, out_dir=tmp_path)
    html = write_run_report(result).read_text()
    assert html.count("data:image/png;base64,") == len(list(tmp_path.glob("*.png"))) >= 1
    assert "sla_attainment" in html and "Sources" in html and "&quot;seed&quot;: 3" in html


# ------------------------------------------------------------------ the CLI
def test_cli_sweep_end_to_end_and_resume(tmp_path, capsys):
    from sim.cli import main

    argv = ["sweep", "day", "--set", "simulation.horizon_s=20",
            "--set", 'deployments.0.step_time={"kind":"constant","decode_step_s":0.03,"kv_cache_tokens":200000}',
            "--grid", "deployments.0.replicas=1..2", "-r", "2", "--workers", "0", "--out", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "2 points x 2 replications = 4 runs; computed 4, reused 0" in out
    assert (tmp_path / "points.parquet").is_file()
    assert main(argv) == 0
    assert "computed 0, reused 4" in capsys.readouterr().out


@pytest.mark.parametrize("argv, msg", [
    (["sweep", "day", "--grid", "deployments.0.nosuch=1,2"], "deployments.0.nosuch"),
    (["sweep", "day", "--grid", "deployments.0.replicas=4..1"], "LO <= HI"),
    (["sweep", "day", "--set", "simulation.horizon_s"], "FIELD=VALUE"),
    (["sweep", "day", "-r", "0"], "--replications 0"),
    (["capacity", "day", "--target", "finance=0.99"], "no workload has vertical"),
    (["capacity", "day", "--scope", "site:nowhere"], "no deployment at site"),
    (["sweep", "nosuch.toml"], "no such scenario file"),
])
def test_cli_bad_input_is_one_line(argv, msg, tmp_path, capsys):
    from sim.cli import main

    assert main(argv + ["--workers", "0", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and len(err.splitlines()) == 1


def test_points_table_clips_unit_interval_columns():
    """An attainment, availability or GPU-utilisation interval never passes 1 (nor 0); the
    mean is not moved; ratios to a reference rate (throughput_utilisation) are not clipped."""
    import pandas as pd
    from sim.core.stats import mean_ci

    vals = [1.0, 0.973, 1.0, 0.99]
    raw = mean_ci(vals)
    assert raw.high == pytest.approx(1.011, abs=1e-4)
    reps = pd.DataFrame({"point": 0, "replication": range(4), "seed": range(4),
                         "gpu_utilisation": vals, "sla_attainment": vals,
                         "economics.availability.replica_availability": vals,
                         "throughput_utilisation": vals, "costs_eur": [0.0, 0.0, 0.0, 1.0]})
    row = sweep.points_table(reps, []).iloc[0]
    for m in ("gpu_utilisation", "sla_attainment", "economics.availability.replica_availability"):
        assert row[f"{m}_ci95_hi"] == 1.0, m
        assert row[f"{m}_ci95_lo"] == pytest.approx(raw.low)
        assert row[f"{m}_mean"] == pytest.approx(raw.mean)
    assert row["throughput_utilisation_ci95_hi"] == pytest.approx(raw.high)
    assert row["costs_eur_ci95_lo"] < 0          # no physical range declared for money
    assert sweep.metric_bounds("workloads.chat.ttft_attainment") == (0.0, 1.0)
    assert sweep.metric_bounds("request_utilisation") is None


def test_invalid_point_files_are_recomputed_and_tables_keep_their_columns(tmp_path):
    base = load_scenario(str(ROOT / "sim" / "scenarios" / "day.toml"))
    out = tmp_path / "sw"
    grid = {"deployments.0.replicas": [1, 2]}
    first = sweep.run_sweep(base, grid, 2, out, point_fn=fake_point)
    files = sorted((out / "points").glob("*.json"))
    # an empty summary, a tampered one and a truncated record must not be taken as finished
    json.loads(files[0].read_text())
    files[0].write_text(json.dumps({"key": files[0].stem, "summary": {}}))
    rec = json.loads(files[1].read_text())
    rec["summary"]["completed"] = -1
    files[1].write_text(json.dumps(rec))
    again = sweep.run_sweep(base, grid, 2, out, point_fn=fake_point)
    assert again.computed == 2 and again.reused == 2
    a, b = first.replications_table, again.replications_table
    assert list(a.columns) == list(b.columns) and a.columns[-1] == "elapsed_s"
    assert a.drop(columns="elapsed_s").equals(b.drop(columns="elapsed_s"))
    assert (out / "config.json").exists() and not (out / ".lock").exists()


def test_a_second_sweep_on_a_busy_folder_is_refused(tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / ".lock").write_text(str(os.getppid()))   # a live process holds it
    base = load_scenario(str(ROOT / "sim" / "scenarios" / "day.toml"))
    with pytest.raises(UserError, match="in use by another sweep"):
        sweep.run_sweep(base, {"deployments.0.replicas": [1]}, 1, out, point_fn=fake_point)
    (out / ".lock").write_text("999999999")          # a dead owner: taken over
    sweep.run_sweep(base, {"deployments.0.replicas": [1]}, 1, out, point_fn=fake_point)


def test_pool_workers_exit_when_the_sweep_process_is_killed(tmp_path):
    code = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from sim.study.sweep import make_executor
        ex, close = make_executor(2)
        fut = [ex.submit(time.sleep, 0.01) for _ in range(4)]
        [f.result() for f in fut]
        print(" ".join(str(p) for p in ex._processes), flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    workers = [int(p) for p in proc.stdout.readline().split()]
    assert workers
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    alive = workers
    while alive and time.time() < deadline:
        time.sleep(0.2)
        alive = [p for p in workers if sweep._alive(p) and not _zombie(p)]
    assert not alive, f"workers {alive} outlived their parent"


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def test_figures_check_reports_what_would_change_without_touching_it(tmp_path, capsys):
    import argparse

    from sim.cli.sweep import cmd_figures

    exp = tmp_path / "experiments"
    exp.mkdir()
    (exp / "demo.py").write_text(textwrap.dedent("""
        import argparse, os, pathlib
        if __name__ == "__main__":
            p = argparse.ArgumentParser(); p.add_argument("--out"); p.add_argument("--quick", action="store_true")
            a = p.parse_args(); out = pathlib.Path(a.out); out.mkdir(parents=True, exist_ok=True)
            (out / "table.csv").write_text(os.environ.get("DEMO_VALUE", "1") + "\\n")
    """))
    # a script that takes no --out and writes under its own root (as moe_batching does)
    (exp / "fixed.py").write_text(textwrap.dedent("""
        import pathlib
        ROOT = pathlib.Path(__file__).resolve().parent.parent
        if __name__ == "__main__":
            out = ROOT / "results" / "fixed"; out.mkdir(parents=True, exist_ok=True)
            (out / "f.csv").write_text("a\\n")
    """))
    (exp / "figures.toml").write_text('[fixed]\nout = "results/fixed"\nno_out = true\n')
    for name, text in (("demo/table.csv", "1\n"), ("fixed/f.csv", "a\n")):
        (tmp_path / "results" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "results" / name).write_text(text)
    args = argparse.Namespace(names=[], root=tmp_path, quick=False, check=True)
    assert cmd_figures(args) == 0
    out = capsys.readouterr().out
    assert "demo" in out and "fixed" in out and "differs" not in out
    (tmp_path / "results" / "fixed" / "f.csv").write_text("b\n")      # the committed file is stale
    os.environ["DEMO_VALUE"] = "2"                                     # and a fresh run would differ
    try:
        assert cmd_figures(args) == 1
    finally:
        del os.environ["DEMO_VALUE"]
    lines = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines()[1:]}
    assert "differs  table.csv" in lines["demo"] and "differs  f.csv" in lines["fixed"]
    assert (tmp_path / "results" / "demo" / "table.csv").read_text() == "1\n"   # untouched
    assert (tmp_path / "results" / "fixed" / "f.csv").read_text() == "b\n"
    with pytest.raises(UserError, match="--check"):
        cmd_figures(argparse.Namespace(names=[], root=tmp_path, quick=True, check=True))


def test_capacity_load_range_brackets_the_analytic_edges(base, tmp_path):
    """The fake's attainment is 1 - exp(-n / rate) (+ noise ~0.006 over 3 replications): n meets
    0.9 while the load factor x <= n / (rate ln 10), so the edges are known in closed form."""
    from sim.study.capacity_search import LOAD_TOL, capacity_search

    r = capacity_search(base, {"general": 0.9}, replications=3, out_dir=tmp_path, point_fn=fake_point,
                        progress=False, load_range=True)
    n, rate = r.replicas, base.workloads[0].arrivals.rate_per_s
    up, down = r.load_range["up"], r.load_range["down"]
    assert up["meets"] < up["misses"] <= up["meets"] * (1 + LOAD_TOL) + 1e-12
    assert down["fewer_meets"] < down["fewer_misses"] <= down["fewer_meets"] * (1 + LOAD_TOL) + 1e-12
    assert up["meets"] == pytest.approx(n / (rate * np.log(10)), rel=0.06)
    assert down["fewer_meets"] == pytest.approx((n - 1) / (rate * np.log(10)), rel=0.06)
    assert down["fewer_misses"] < 1.0 <= up["meets"]
    saved = json.loads((tmp_path / "capacity.json").read_text())
    assert saved["load_range"]["up"] == up and "at least one more replica" in saved["load_note"]
    assert [e.replicas for e in r.evaluations] == sorted(e.replicas for e in r.evaluations)   # unchanged table


def test_capacity_writes_its_figure_and_every_file_0644(base, tmp_path):
    from sim.study.capacity_search import capacity_search

    old = os.umask(0o077)   # a strict umask: mkstemp's 0600 must not leak into results
    try:
        capacity_search(base, {"general": 0.9}, replications=2, out_dir=tmp_path / "cap", point_fn=fake_point,
                        progress=False)
        sweep.run_sweep(base, {"deployments.0.replicas": [1, 2]}, 2, tmp_path / "sw", point_fn=fake_point,
                        progress=False)
    finally:
        os.umask(old)
    png = (tmp_path / "cap" / "capacity.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {"capacity.json", "capacity_evaluations.csv", "capacity.png", "config.json", "points.parquet",
            "replications.parquet", "sweep.json"} <= {p.name for p in files}
    modes = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in files}
    assert set(modes.values()) == {"0o644"}, modes


@pytest.mark.parametrize("command", ["sweep", "capacity"])
def test_cli_output_errors_are_one_line(tmp_path, capsys, command):
    from sim.cli import main

    (tmp_path / "afile").write_text("x")
    extra = ["--grid", "deployments.0.replicas=1"] if command == "sweep" else []
    for out, msg in ((tmp_path / "afile", "is a file"), (Path("/proc/sovsim-no/such"), "cannot create")):
        assert main([command, "day", *extra, "--workers", "0", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and msg in err and "Traceback" not in err, err


def test_scale_load_and_where_it_does_not_apply(base):
    from sim.scenario import with_overrides
    from sim.study.capacity_search import no_load_scaling, scale_load

    assert no_load_scaling(base) == ""
    assert scale_load(base, 1.5).workloads[0].arrivals.rate_per_s == pytest.approx(1.5 * base.workloads[0].arrivals.rate_per_s)
    assert "forecast" in no_load_scaling(load_scenario("default"))
    closed = with_overrides(base, {"workloads.0.arrivals": {"kind": "closed_loop", "users": 4}})
    assert "closed_loop arrivals have no offered rate" in no_load_scaling(closed)
