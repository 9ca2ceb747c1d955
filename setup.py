"""Build hook: compile the serving hot path with mypyc when a wheel is built (optional).

``pip install .`` builds a wheel; this compiles the modules in ``COMPILED`` to C extension
modules with mypyc (the same Python source, type-checked by mypy, translated to C).  The
``.py`` files ship beside the extensions, and Python imports the extension first.  The
compiled and the pure-Python engine give identical results
(``tests/serving/test_compiled_engine.py`` checks this against the installed package).

Nothing is compiled

* for an editable install (``pip install -e .``): the checkout stays pure Python, so an edit
  takes effect without a rebuild and a stale extension can never shadow the source;
* when ``SOVSIM_PURE_PYTHON=1`` is set;
* when mypyc or a C compiler is missing or the compile fails: the build says so in one line
  (shown by ``pip install -v``) and installs the pure-Python modules (same results, an engine
  about 2x slower; ``tests/serving/test_compiled_engine.py`` then skips, saying so).

Everything else about the package is declared in ``pyproject.toml``.
"""
from __future__ import annotations

import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

# the serving hot path: the per-replica scheduler and iteration loop with the arrival feed,
# the step-time series it evaluates, the router and the streaming metrics
COMPILED = ["sim/serving/engine.py", "sim/perf/series.py", "sim/serving/router.py",
            "sim/serving/metrics.py"]

_BUILD_COMMANDS = {"bdist_wheel", "build", "build_ext", "install"}


def _warn(msg: str) -> None:
    print(f"sovsim: {msg}; the engine runs as pure Python (same results, slower)", file=sys.stderr)


class OptionalBuildExt(build_ext):
    """``build_ext`` whose failure leaves no partial extension behind instead of failing
    the install."""

    def run(self):
        try:
            super().run()
        except Exception as e:  # no compiler, no Python headers, a compiler error
            _warn(f"compiled engine not built ({type(e).__name__}: {str(e)[:160]})")
            for path in self.get_outputs():
                if os.path.exists(path):
                    os.remove(path)


def ext_modules() -> list:
    if os.environ.get("SOVSIM_PURE_PYTHON", "") not in ("", "0"):
        return []
    if "editable_wheel" in sys.argv or not _BUILD_COMMANDS.intersection(sys.argv):
        return []   # an editable install, or a metadata-only step
    try:
        from mypyc.build import mypycify
    except ImportError:
        _warn("mypyc is not installed")
        return []
    try:
        return mypycify(["--ignore-missing-imports", "--check-untyped-defs", *COMPILED], opt_level="3")
    except BaseException as e:  # mypy reports a type error by exiting
        _warn(f"mypyc could not translate {COMPILED} ({type(e).__name__}: {e})")
        return []


setup(ext_modules=ext_modules(), cmdclass={"build_ext": OptionalBuildExt})
