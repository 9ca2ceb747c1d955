"""sovsim: a discrete-event simulation of a sovereign European AI inference cloud.

The library API (:mod:`sim.api`, docs/api.md) is loaded on first use, so ``import sim``
stays cheap: ``sim.load_scenario``, ``sim.run``, ``sim.forecast``, ``sim.sweep``,
``sim.capacity``.
"""
import importlib as _importlib
import sys as _sys
import types as _types

__version__ = "0.1.0"
API = ("load_scenario", "run", "forecast", "sweep", "capacity")


def __getattr__(name: str):
    if name in API:
        # the package root sits below every layer; it reaches the API (above them) only
        # through the import system, on first use (tests/test_layers.py: EXTRA_LAYER)
        return getattr(_importlib.import_module("sim.api"), name)
    raise AttributeError(f"module 'sim' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *API])


class _Package(_types.ModuleType):
    """``sim.forecast`` is the API function even after the subpackage ``sim.forecast`` is
    imported (the import system then records the subpackage as an attribute of its parent;
    the subpackage stays importable by name, as every module imports it)."""

    @property
    def forecast(self):
        return _importlib.import_module("sim.api").forecast

    @forecast.setter
    def forecast(self, module):
        self.__dict__["_forecast_package"] = module


_sys.modules[__name__].__class__ = _Package
