"""Where the catalog (``models/``) is, installed or not.

Installed (editable or not), ``models/`` is the package ``sim.models``; running from a source
tree with ``PYTHONPATH`` it is the ``models/`` folder beside ``sim/``.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path


def models_dir() -> Path:
    """The catalog folder as a real path (it ships as plain files, never zipped)."""
    try:
        return Path(str(resources.files("sim.models")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / "models"


def model_file(*parts: str) -> Path:
    return models_dir().joinpath(*parts)
