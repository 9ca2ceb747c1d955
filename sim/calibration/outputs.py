"""Where the refit commands (``sovsim calibrate``, ``calibrate --throughput``, ``calibrate
--import-from``, ``fit-demand``) write the refitted models.

* ``--out DIR``: into ``DIR``, laid out as ``models/`` is (``DIR/calibration/*.json``,
  ``DIR/demand/*``, ``DIR/measurements/*``);
* else, from a source checkout (the current folder or a parent holds a ``pyproject.toml``
  naming the ``sovsim`` project beside a ``models/`` folder): into that checkout's ``models/``;
* else, when the package's own ``models/`` is a checkout's (an editable install, or a source
  tree on ``PYTHONPATH``): there;
* else (a non-editable install, run outside a checkout) the command is refused in one line
  asking for ``--out``: a refit never writes into site-packages.
"""
from __future__ import annotations

import tomllib
from pathlib import Path

from sim.core.errors import UserError
from sim.core.resources import models_dir
from sim.core.runfolder import check_out_dir

PROJECT = "sovsim"


def is_checkout(folder: Path) -> bool:
    """``folder`` holds a ``pyproject.toml`` naming the sovsim project, beside ``models/``."""
    py = folder / "pyproject.toml"
    if not (py.is_file() and (folder / "models").is_dir()):
        return False
    try:
        return tomllib.loads(py.read_text()).get("project", {}).get("name") == PROJECT
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False


def checkout_root(start: Path | None = None) -> Path | None:
    """The source checkout holding ``start`` (default: the current folder), or None."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if is_checkout(folder):
            return folder
    return None


def refit_models_dir(out: str | Path | None, command: str, start: Path | None = None) -> Path:
    """The ``models/`` folder a refit writes into (module docstring)."""
    if out is not None:
        return check_out_dir(out)
    root = checkout_root(start)
    if root is not None:
        return root / "models"
    installed = models_dir()
    if is_checkout(installed.resolve().parent):
        return installed
    raise UserError(f"{command}: the refitted models would go into the installed package ({installed}), "
                    f"not a source checkout; run it from a sovsim checkout or pass --out DIR")


def results_dir(arg: str | Path | None, default: str, start: Path | None = None) -> Path:
    """A refit's report folder: ``arg`` if given, else ``default`` (``results/NAME``) inside
    the checkout you are in (so a run from a subfolder still updates the committed report),
    else relative to the current folder."""
    if arg is not None:
        return Path(arg)
    root = checkout_root(start)
    return (root / default) if root is not None else Path(default)
