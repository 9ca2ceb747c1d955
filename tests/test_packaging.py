"""A non-editable install ships only the packages pyproject lists: every package folder under
sim/ must be listed, or `pip install .` silently drops it."""
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(cfg["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "sim").rglob("__init__.py")}
    found |= {"sim.scenarios"}   # data-only package (TOML files)
    missing = sorted(found - listed)
    assert not missing, f"pyproject [tool.setuptools] packages is missing {missing}"
