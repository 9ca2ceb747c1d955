"""One set of output flags on every command: --quiet (nothing but errors and warnings), -v/--verbose;
progress as heartbeat lines on stderr when it is not a terminal."""
from __future__ import annotations

import pytest

from sim.cli import main
from sim.cli.app import build_parser, leaf_parsers
from sim.core import progress as pg

SMALL = """
name = "flags-small"
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
arrivals = { kind = "poisson", rate_per_s = 5.0 }
prompt_tokens = { dist = "constant", value = 100 }
output_tokens = { dist = "geometric", mean = 50 }
"""

COMMANDS = [" ".join(path) for path, _ in leaf_parsers(build_parser())]


def test_the_walk_finds_every_command():
    for name in ("run", "schema", "sweep", "capacity", "figures", "calibrate", "fit-demand", "validate",
                 "step", "throughput", "catalog", "econ run", "econ defaults", "econ rates"):
        assert name in COMMANDS


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_accepts_quiet_and_verbose(command):
    parsers = dict((" ".join(path), p) for path, p in leaf_parsers(build_parser()))
    p = parsers[command]
    for flag in ("--quiet", "-v", "--verbose"):
        action = p._option_string_actions.get(flag)
        assert action is not None, f"sovsim {command} has no {flag}"
        assert action.nargs == 0   # a switch, never one that takes a value
        assert action.dest == ("quiet" if flag == "--quiet" else "verbose")


SWEEP = ["sweep", "day", "--set", "simulation.horizon_s=20",
         "--set", 'deployments.0.step_time={"kind":"constant","decode_step_s":0.03,"kv_cache_tokens":200000}',
         "--grid", "deployments.0.replicas=1..2", "-r", "1", "--workers", "0"]


def test_heartbeat_lines_when_not_a_terminal_and_quiet_is_silent(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(pg.ENV, "0.000001")   # a line at every step (stderr is captured: no terminal)
    assert main([*SWEEP, "--out", str(tmp_path / "a")]) == 0
    cap = capsys.readouterr()
    lines = [ln for ln in cap.err.splitlines() if ln.startswith("sweep: run")]
    assert lines and lines[-1].startswith("sweep: run 2/2, ") and "requests simulated" in lines[-1], cap.err
    assert "done in" in lines[-1]
    assert main([*SWEEP, "--out", str(tmp_path / "b"), "--quiet"]) == 0
    cap = capsys.readouterr()   # warnings, if any, still reach stderr
    assert cap.out == "" and all(ln.startswith("sovsim: warning: ") for ln in cap.err.splitlines())
    assert pg.default().mode == "auto"   # the command's settings do not leak


def test_verbose_says_every_step_and_no_progress_only_hides_progress(tmp_path, capsys):
    assert main([*SWEEP, "--out", str(tmp_path / "a"), "-v"]) == 0
    cap = capsys.readouterr()
    assert sum(ln.startswith("sweep: run") for ln in cap.err.splitlines()) == 3   # 2 steps + done
    assert main([*SWEEP, "--out", str(tmp_path / "b"), "--no-progress", "-v"]) == 0
    cap = capsys.readouterr()
    assert "sweep: run" not in cap.err and "2 points x 1 replications" in cap.out


def test_quiet_on_a_printing_command(capsys):
    assert main(["catalog", "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["step", "--model", "nosuch", "--gpu", "h100-sxm", "--quiet"]) == 2
    assert capsys.readouterr().err.startswith("sovsim: error:")


def test_progress_does_not_change_results(tmp_path, capsys):
    """With progress the run advances in slices; the summary is the same as without."""
    import json

    scen = tmp_path / "s.toml"
    scen.write_text(SMALL)
    out = {}
    for flag in ("--quiet", "-v"):
        assert main(["run", str(scen), "--out", str(tmp_path / flag), flag]) == 0
        s = json.loads((tmp_path / flag / "summary.json").read_text())
        s.pop("wall_s", None)
        out[flag] = s
    assert "run: sim-s 120/120" in capsys.readouterr().err   # -v: a line after every slice, and done
    assert out["--quiet"] == out["-v"]


def test_forecast_months_as_heartbeat_lines(tmp_path, capsys):
    """The forecast's month loop reports through sim.core.progress (here -v: every month)."""
    argv = ["run", "--set", "forecast.months=2", "--out", str(tmp_path / "f")]
    assert main([*argv, "-v"]) == 0
    err = capsys.readouterr().err.splitlines()
    months = [ln for ln in err if ln.startswith("forecast: month")]
    assert months[0].startswith("forecast: month 1/2, ") and "requests simulated" in months[0]
    assert months[-1].startswith("forecast: month 2/2, ") and "done in" in months[-1]
    assert main([*argv, "--quiet"]) == 0
    cap = capsys.readouterr()   # the months' warning (2 months of the default: the fleet idles) stays
    assert cap.out == "" and all(ln.startswith("sovsim: warning: ") for ln in cap.err.splitlines())


def test_a_commands_own_quiet_keeps_its_json(tmp_path, capsys):
    import json

    scen = tmp_path / "s.toml"
    scen.write_text(SMALL)
    for cmd in (["run"], ["econ", "run"]):
        assert main([*cmd, str(scen), "--out", str(tmp_path / "o"), "--quiet", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["scenario"] == "flags-small"
