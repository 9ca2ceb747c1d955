"""`sovsim figures --check` on a real committed figure: it regenerates byte for byte."""
from __future__ import annotations

from pathlib import Path

import pytest

from sim.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not (ROOT / "experiments" / "moe_batching.py").is_file(), reason="needs the source checkout")
def test_moe_batching_regenerates_byte_for_byte(capsys):
    before = {p: p.read_bytes() for p in (ROOT / "results" / "moe_batching").iterdir()}
    rc = main(["figures", "--check", "moe_batching", "--root", str(ROOT)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "moe_batching" in out and "same" in out
    assert {p: p.read_bytes() for p in (ROOT / "results" / "moe_batching").iterdir()} == before
