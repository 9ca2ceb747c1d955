"""Which ``sim`` a benchmark measures: the installed package when there is one (after
``pip install .`` its serving engine is compiled with mypyc, see ``setup.py``), else this
checkout (pure Python).  ``SOVSIM_BENCH_CHECKOUT=1`` forces the checkout."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def use_sim() -> None:
    if os.environ.get("SOVSIM_BENCH_CHECKOUT", "") not in ("", "0") or importlib.util.find_spec("sim") is None:
        sys.path.insert(0, str(ROOT))


def engine_build() -> str:
    """``"compiled"`` or ``"pure Python"``: how the imported serving engine runs."""
    import sim.serving.engine as engine
    return "compiled" if not engine.__file__.endswith(".py") else "pure Python"
