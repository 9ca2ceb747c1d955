"""The market parameter table: parameters.csv plus its parameters_<mechanism>.csv companions."""
import shutil

import pytest

from sim.scenario import market as market_mod
from sim.scenario import table as table_mod


def _fake_models(tmp_path, monkeypatch, extra: dict[str, str]):
    src = table_mod.model_file(*table_mod.TABLE)
    d = tmp_path / "market"
    d.mkdir()
    shutil.copy(src, d / "parameters.csv")
    for name, text in extra.items():
        (d / name).write_text(text)
    monkeypatch.setattr(table_mod, "model_file", lambda *parts: tmp_path.joinpath(*parts))
    return d


HEADER = "block,name,key,value,low,high,unit,source\n"


def test_companion_files_are_read_after_the_main_table(tmp_path, monkeypatch):
    _fake_models(tmp_path, monkeypatch, {
        "parameters_b.csv": HEADER + "fallback,fallback,zz_b,2,,,x,assumption\n",
        "parameters_a.csv": HEADER + "fallback,fallback,zz_a,1,,,x,assumption\n",
        "other.csv": HEADER + "fallback,fallback,zz_other,3,,,x,assumption\n"})
    keys = [r["key"] for r in market_mod.read_table()]
    assert keys[-2:] == ["zz_a", "zz_b"]          # name order, after parameters.csv
    assert "zz_other" not in keys                   # only parameters_*.csv are companions
    assert market_mod.fallback_parameters()["zz_b"] == 2


def test_a_parameter_defined_twice_is_refused(tmp_path, monkeypatch):
    _fake_models(tmp_path, monkeypatch, {
        "parameters_dup.csv": HEADER + "sovereign,sovereign,asc,1.0,,,utility,assumption\n"})
    with pytest.raises(ValueError, match="parameters_dup.csv: market parameter sovereign.sovereign.asc is already defined in parameters.csv"):
        market_mod.read_table()
