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
    # and the other order: the subpackage first, then the API through it
    code2 = ("import sim.forecast.forecast as f, sim; import sim.study.run as r; "
             "print(callable(sim.forecast), sim.forecast.forecast is f, callable(sim.run))")
    out2 = subprocess.run([sys.executable, "-c", code2], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out2.strip() == "True True True"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.split("\n")[:2] == ["[]", "True True"]


def test_top_level_names_are_the_api_functions(monkeypatch):
    import sim
    import sim.forecast.forecast as fc   # the subpackage records itself on sim, and stays importable

    assert fc.run_forecast is sys.modules["sim.forecast.forecast"].run_forecast
    # sim.forecast is the subpackage, callable as the API function
    assert sim.forecast is sys.modules["sim.forecast"] and callable(sim.forecast)
    seen = []
    monkeypatch.setattr(sim.api, "forecast", lambda *a, **k: seen.append((a, k)) or "called")
    assert sim.forecast("default", seed=3) == "called" and seen == [(("default",), {"seed": 3})]
    assert sim.run is sim.api.run
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
