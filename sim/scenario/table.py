"""The market parameter table: ``models/market/parameters.csv`` and its
``parameters_<mechanism>.csv`` companions (same columns: block, name, key, value, low, high,
unit, source), read by every market block's defaults (:mod:`sim.scenario.market`,
:mod:`sim.scenario.channels`, :mod:`sim.scenario.public_sector`)."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from sim.core.resources import model_file

TABLE = ("market", "parameters.csv")


def parse_value(value: str) -> Any:
    """A table cell as a bool, int, float or, failing those, the string itself."""
    if value in ("true", "false"):
        return value == "true"
    for conv in (int, float):
        try:
            return conv(value)
        except ValueError:
            pass
    return value


def table_files() -> list[Path]:
    """The market parameter table's files: ``parameters.csv`` then each
    ``parameters_<mechanism>.csv`` beside it (one per market mechanism, same columns),
    in name order."""
    main = Path(model_file(*TABLE))
    return [main] + sorted(main.parent.glob("parameters_*.csv"))


def read_table() -> list[dict[str, str]]:
    """Rows of models/market/parameters.csv and its ``parameters_*.csv`` companions, as
    dicts of strings; a (block, name, key) defined twice is an error."""
    rows: list[dict[str, str]] = []
    seen: dict[tuple, str] = {}
    for path in table_files():
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                k = (row["block"], row["name"], row["key"])
                if k in seen:
                    raise ValueError(f"{path.name}: market parameter {'.'.join(k)} is already defined in {seen[k]}")
                seen[k] = path.name
                rows.append(row)
    return rows


def block_rows(block: str) -> list[dict[str, str]]:
    """The table's rows of one ``block`` (e.g. ``channel``, ``public_sector``), in table order."""
    return [r for r in read_table() if r["block"] == block]
