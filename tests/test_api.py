"""The library API (sim/api.py): its docstring examples and docs/api.md run as doctests, the
package root loads it lazily, and ``sim.forecast`` is the function even once the forecast
subpackage is imported."""
from __future__ import annotations

import doctest
import subprocess
import sys
from pathlib import Path

import pytest

import sim.api
import sim.study.glossary

ROOT = Path(__file__).resolve().parents[1]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@pytest.mark.parametrize("module", [sim.api, sim.study.glossary], ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
    r = doctest.testmod(module, optionflags=FLAGS)
    assert r.attempted >= 5 and r.failed == 0


def test_docs_api_md_examples_run():
    r = doctest.testfile(str(ROOT / "docs" / "api.md"), module_relative=False, optionflags=FLAGS)
    assert r.attempted > 15 and r.failed == 0


def test_import_sim_is_cheap_and_lazy():
    code = ("import sys, sim; heavy = [m for m in ('sim.api', 'pandas', 'simpy', 'sim.study.run') if m in sys.modules];"
            "print(heavy); f = sim.forecast; print(callable(f), 'sim.api' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.split("\n")[:2] == ["[]", "True True"]


def test_top_level_names_are_the_api_functions():
    import sim
    import sim.forecast.forecast  # noqa: F401  (the subpackage records itself on sim)

    assert sim.forecast is sim.api.forecast and sim.run is sim.api.run
    assert sim.sweep is sim.api.sweep and sim.capacity is sim.api.capacity
    assert sim.load_scenario is sim.api.load_scenario
    from sim.forecast.forecast import run_forecast   # the subpackage stays importable by name
    assert callable(run_forecast)
    with pytest.raises(AttributeError):
        sim.no_such_function   # noqa: B018


def test_run_refuses_a_forecast_scenario():
    from sim.core.errors import UserError

    with pytest.raises(UserError, match="use sim.forecast"):
        sim.api.run("default")
