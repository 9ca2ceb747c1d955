"""sovsim: a discrete-event simulation of a sovereign European AI inference cloud.

The library API (:mod:`sim.api`, docs/api.md) is loaded on first use, so ``import sim``
stays cheap: ``sim.load_scenario``, ``sim.run``, ``sim.forecast``, ``sim.sweep``,
``sim.capacity``.  (``sim.forecast`` is also the forecast subpackage; calling it calls
:func:`sim.api.forecast`.)
"""
import importlib as _importlib
import sys as _sys
import types as _types

from sim.core.version import VERSION as __version__

API = ("load_scenario", "run", "forecast", "sweep", "capacity")


def __getattr__(name: str):
    if name in API:
        # the package root sits below every layer; it reaches the API (above them) only
        # through the import system, on first use (tests/test_layers.py: EXTRA_LAYER)
        return getattr(_importlib.import_module("sim.api"), name)
    raise AttributeError(f"module 'sim' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *API])


class _CallablePackage(_types.ModuleType):
    """The subpackage ``sim.forecast``, callable as the API function :func:`sim.api.forecast`
    (so ``sim.forecast(...)`` works and ``import sim.forecast.forecast as f`` still does)."""

    def __call__(self, *args, **kwargs):
        return _importlib.import_module("sim.api").forecast(*args, **kwargs)


class _Package(_types.ModuleType):
    """``sim.forecast`` names both the subpackage and the API function: the import system
    records the subpackage on its parent through this property's setter, which makes it
    callable; reading it before the subpackage is imported imports the API (and so it)."""

    @property
    def forecast(self):
        if "_forecast_package" not in self.__dict__:
            _importlib.import_module("sim.api")   # imports sim.forecast, recorded by the setter
        return self.__dict__["_forecast_package"]

    @forecast.setter
    def forecast(self, module):
        module.__class__ = _CallablePackage
        self.__dict__["_forecast_package"] = module


_sys.modules[__name__].__class__ = _Package
