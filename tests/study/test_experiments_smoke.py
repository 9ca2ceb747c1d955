"""Every experiment script runs in its quick mode (experiments/figures.toml or --quick)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sim.study.experiments import discover_experiments

ROOT = Path(__file__).resolve().parents[2]
PLANS = discover_experiments(ROOT)


def test_discovery_finds_scripts_not_helpers():
    planned = {p.name for p in PLANS}
    assert {"capacity_sweep", "sovereignty_gap"} <= planned
    assert "_common" not in planned and "market_common" not in planned


QUICK = [p for p in PLANS if not p.no_out]  # a script without --out would overwrite results/


@pytest.mark.parametrize("plan", QUICK, ids=[p.name for p in QUICK])
def test_experiment_quick(plan, tmp_path):
    out = tmp_path / plan.name
    out.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    r = subprocess.run(plan.command(out, quick=True), cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert any(out.iterdir()), "nothing written"
    if "--workers" in plan.quick_args:  # the _common.py convention: CSV + PNG + HTML report
        assert list(out.glob("*.csv")) and list(out.glob("*.png")), "no CSV or PNG written"
        html = (out / "report.html").read_text()
        assert "data:image/png;base64," in html and "Resolved scenario" in html
