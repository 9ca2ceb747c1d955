"""Every experiments/*.py runs in --quick mode and writes its CSV, PNG and HTML report."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(p for p in (ROOT / "experiments").glob("*.py") if not p.name.startswith("_"))


def test_there_are_experiments():
    assert SCRIPTS, "experiments/ has no scripts"


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_experiment_quick(script, tmp_path):
    out = tmp_path / script.stem
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, str(script), "--quick", "--workers", "0", "--out", str(out)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert list(out.glob("*.csv")), "no CSV written"
    assert list(out.glob("*.png")), "no PNG written"
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "Resolved scenario" in html
