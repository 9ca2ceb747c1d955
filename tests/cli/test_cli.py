"""The command line: bad input gives one line, exit code 2, no traceback; a run writes
its files."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sim.cli import main

SMALL = """
name = "cli-small"
[simulation]
horizon_s = 120.0
[[deployments]]
name = "d"
model = "m"
replicas = 2
step_time = { kind = "constant", decode_step_s = 0.02, kv_cache_tokens = 20000 }
[[workloads]]
name = "w"
model = "m"
arrivals = { kind = "poisson", rate_per_s = 2.0 }
prompt_tokens = { dist = "constant", value = 100 }
output_tokens = { dist = "geometric", mean = 50 }
"""


def subprocess_env():
    """The environment for a child python that must import this very ``sim``."""
    import os
    import sim
    env = dict(os.environ)
    root = str(Path(sim.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


def write(tmp_path, text, name="s.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


BAD = [
    ("", "no such scenario file"),
    (SMALL.replace("replicas = 2", "replicas = -1"), "deployments[0].replicas"),
    (SMALL.replace("replicas = 2", "replicas = \"two\""), "deployments[0].replicas"),
    (SMALL.replace("[simulation]", "[simulation]\nbogus = 1"), "simulation.bogus: unknown field; allowed:"),
    (SMALL.replace('kind = "constant"', 'kind = "magic"'), "deployments[0].step_time.kind"),
    (SMALL.replace('dist = "constant", value = 100', 'dist = "zipf"'), "workloads[0].prompt_tokens"),
    (SMALL.replace('model = "m"\narrivals', 'model = "other"\narrivals'), "served by no deployment"),
    ("name = [", "not valid TOML"),
]


@pytest.mark.parametrize("text,expect", BAD)
def test_bad_scenario_is_one_line_exit_2(tmp_path, capsys, text, expect):
    path = tmp_path / "missing.toml" if text == "" else write(tmp_path, text)
    rc = main(["run", str(path), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert expect in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_bad_flags_exit_2_without_traceback(tmp_path):
    for argv in (["run", "--seed", "x"], ["run", "--seed", "-3"], ["run", "--nope"],
                 ["run", str(write(tmp_path, SMALL)), "--set", "deployments.0.bogus=1"],
                 ["run", str(write(tmp_path, SMALL)), "--set", "deployments.7.replicas=1"],
                 ["run", str(write(tmp_path, SMALL)), "--set", "noequals"]):
        p = subprocess.run([sys.executable, "-m", "sim.cli", *argv], capture_output=True, text=True,
                           cwd=tmp_path, env=subprocess_env())
        assert p.returncode == 2, argv
        assert "Traceback" not in p.stderr
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_run_writes_every_file(tmp_path, capsys):
    path = write(tmp_path, SMALL)
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--seed", "4"]) == 0
    table = capsys.readouterr().out
    assert "TTFT" in table and "SLA" in table
    for f in ("config.json", "summary.json", "timeseries.parquet", "requests.parquet", "overview.png"):
        assert (out / f).is_file(), f
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["simulation"]["seed"] == 4
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seed"] == 4
    import pandas as pd
    req = pd.read_parquet(out / "requests.parquet")
    assert len(req) == summary["arrivals"]  # sample larger than the run: everything kept
    ts = pd.read_parquet(out / "timeseries.parquet")
    assert {"bin_start_s", "replica", "busy_s", "kv_occupancy"} <= set(ts.columns)


def test_set_overrides_and_json(tmp_path, capsys):
    path = write(tmp_path, SMALL)
    assert main(["run", str(path), "--out", str(tmp_path / "o"), "--json",
                 "--set", "deployments.0.replicas=3"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["replicas"] == 3


def test_schema_documents_every_field(capsys):
    assert main(["schema", "--markdown"]) == 0
    text = capsys.readouterr().out
    for field in ("simulation.horizon_s", "deployments[].batching.max_num_seqs",
                  "workloads[].sla.ttft_s", "router.policy"):
        assert field in text, field
    from sim.cli.run import schema_rows
    assert all(desc for *_, desc in schema_rows()), "a field without description"


def test_schema_prints_readable_constraints_and_nested_fields(capsys):
    assert main(["schema"]) == 0
    text = capsys.readouterr().out
    assert "Gt(" not in text and "Ge(" not in text and "MinLen(" not in text and "strict=True" not in text
    assert "simulation.horizon_s  (float; default 3600.0; allowed > 0)" in text
    assert "simulation.seed  (int; default 1; allowed >= 0 and < 2^63)" in text
    assert "each value >= 0 and <= 60" in text                      # sites[].network_latency_s values
    # a competitor's gap curve, a table of tables, shows every field
    for f in ("fit_start", "fit_end", "midpoint_month", "width_months"):
        assert f"market.competitors[].sovereignty.<name>.{f}  (" in text, f
    # a union of tables is tagged per member; a single table is not
    assert "sites[].contracts[][kind=owned_colo].capex_eur_per_gpu" in text
    assert "deployments[].step_time.decode_step_s" in text and "step_time[kind=" not in text
    assert "sites[].name  (str; default required; allowed at least 1 character)" in text


def test_docs_scenario_reference_is_the_schema_output(capsys):
    assert main(["schema", "--markdown"]) == 0
    assert capsys.readouterr().out == (Path(__file__).resolve().parents[2] / "docs" / "scenario-reference.md").read_text()
