"""The one run-folder writer: config first, manifest last, no stale results, safe names,
one-line errors for unusable --out, files 0644."""
from __future__ import annotations

import json
import os
import stat

import pytest

from sim.core.errors import UserError
from sim.core.runfolder import RunFolder, check_out_dir, default_out, run_folder, safe_name
from sim.scenario import load_scenario, with_overrides
from sim.study.run import run


def tiny():
    return with_overrides(load_scenario("day"), {"simulation.horizon_s": 20.0})


def mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_run_writes_config_first_and_a_complete_manifest(tmp_path):
    out = tmp_path / "r"
    run(tiny(), seed=2, out_dir=out)
    man = json.loads((out / "manifest.json").read_text())
    assert man["status"] == "complete"
    names = [f["name"] for f in man["files"]]
    assert names[0] == "config.json" and {"summary.json", "requests.parquet", "timeseries.parquet"} <= set(names)
    for f in man["files"]:
        assert (out / f["name"]).stat().st_size == f["bytes"]
        assert mode(out / f["name"]) == 0o644
    assert json.loads((out / "config.json").read_text())["simulation"]["seed"] == 2
    assert not list(out.glob(".*.part"))


def test_a_failed_run_leaves_no_stale_results(tmp_path, monkeypatch):
    out = tmp_path / "r"
    run(tiny(), out_dir=out)
    (out / "notes.txt").write_text("mine")     # the user's own file is left alone

    import sim.study.run as run_mod

    def boom(self):
        raise RuntimeError("engine exploded")
    monkeypatch.setattr(run_mod.World, "summary", boom)
    with pytest.raises(RuntimeError):
        run(tiny(), out_dir=out)
    man = json.loads((out / "manifest.json").read_text())
    assert man["status"] == "failed"
    assert "engine exploded" in (out / "error.txt").read_text()
    assert (out / "config.json").exists() and not (out / "summary.json").exists()
    assert not (out / "requests.parquet").exists() and (out / "notes.txt").read_text() == "mine"


def test_interrupted_is_said(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with run_folder(tmp_path / "i", config={"a": 1}):
            raise KeyboardInterrupt
    assert json.loads((tmp_path / "i" / "manifest.json").read_text())["status"] == "interrupted"


def test_names_never_escape_the_output_root(tmp_path):
    assert safe_name("../../x") == "_.._x"
    assert safe_name("..") == "scenario" or "/" not in safe_name("..")
    p = default_out("../../etc/passwd", root=tmp_path / "runs")
    assert p.resolve().parent == (tmp_path / "runs").resolve()


def test_out_a_file_or_unwritable_is_one_line(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(UserError, match="is a file"):
        check_out_dir(f)
    from sim.cli import main
    assert main(["run", "day", "--out", str(f), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--out" in err[0] and "Traceback" not in err[0]
    if os.geteuid() != 0:   # root can write anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        with pytest.raises(UserError, match="not writable"):
            check_out_dir(ro)


def test_econ_run_takes_the_run_arguments_and_writes_its_folder(tmp_path, capsys):
    from sim.cli import main
    out = tmp_path / "e"
    assert main(["econ", "run", "day", "--set", "simulation.horizon_s=20", "--seed", "3", "--out", str(out)]) == 0
    assert "gross margin" in capsys.readouterr().out.lower() or (out / "summary.json").exists()
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"
    assert "report.html" in [f["name"] for f in json.loads((out / "manifest.json").read_text())["files"]]
    assert json.loads((out / "summary.json").read_text())["seed"] == 3
    assert "economics" in json.loads((out / "summary.json").read_text())


def test_runfolder_cleans_what_its_previous_manifest_listed(tmp_path):
    rf = RunFolder(tmp_path / "x")
    rf.write_text("extra_figure.png", "not really a png")
    rf.complete()
    RunFolder(tmp_path / "x")
    assert not (tmp_path / "x" / "extra_figure.png").exists()
