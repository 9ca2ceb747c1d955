"""Schema of ``[market.competition]``: competitor capacity, delivered SLA and price response.

Defaults are not written here: they are the rows of block ``competition`` in
``models/market/parameters_competition.csv`` (name ``market`` for the block's switches, one
``name`` per competitor for its own numbers: value, low, high, unit, source), read by
:func:`default_competition_dict`; ``docs/market.md`` ("Competitors") describes the mechanism
and ``sim.market.competition`` runs it.

This module imports nothing of ``sim.scenario.market`` (which imports it); both read the one
table through :mod:`sim.scenario.table`.
"""
from __future__ import annotations

import copy
import functools
from typing import Any, Literal, Union

from pydantic import Field, model_validator

from sim.scenario.rules import StrictSpec as _Spec, fail
from sim.scenario.table import block_rows, parse_value

BLOCK = "competition"
TOP = "market"      # the table's name of the block-level rows
_NOTE = "Default and source: models/market/parameters_competition.csv."


class CompetitorCompetitionSpec(_Spec):
    """One competitor's capacity, SLA variability and price response."""
    name: str = Field(min_length=1, description="Competitor (a name of market.competitors).")
    capacity_rfp_months: float = Field(gt=0.0, le=1e6, description=f"Contracted tokens/s (prompt + output) it can sell to this market at t = 0, in months of the market's t = 0 RFP volume (the expected contracted tokens/s of one month's RFPs over all verticals, sum of rfp_rate_per_month x mean contract tokens/s), so it scales with the scenario's market; at or above it (its active contracts' tokens/s) it does not bid for new RFPs. {_NOTE} (assumption)")
    capacity_growth_per_year: float = Field(gt=0.0, le=100.0, description=f"Yearly growth factor of that capacity (compounded continuously). {_NOTE} (assumption)")
    sla_concentration: float = Field(gt=0.0, le=1e9, description=f"Concentration k of the monthly delivered-SLA draw Beta(mean k, (1 - mean) k), mean = the competitor's sla_attainment; larger = steadier. {_NOTE} (assumption)")
    elasticity: float = Field(ge=0.0, le=10.0, description=f"Price response: each month the competitor's price multiplier is (trailing award share / reference_share) ** elasticity, between price_floor and 1. {_NOTE} (assumption)")
    reference_share: Union[float, Literal["t0"]] = Field(description=f"Award share the competitor defends: a number in (0, 1], or 't0' = its expected award share at t = 0 conditions (the choice model, RFP-rate weighted over verticals). {_NOTE} (assumption)")
    price_floor: float = Field(gt=0.0, le=1.0, description=f"Lowest price multiplier of the response (scheduled and stochastic cuts apply on top). {_NOTE} (assumption)")

    @model_validator(mode="after")
    def _check(self):
        if not isinstance(self.reference_share, str) and not 0.0 < self.reference_share <= 1.0:
            fail("reference_share", f"{self.reference_share:g} is outside (0, 1]", "a share in (0, 1] or 't0'")
        return self


class CompetitionSpec(_Spec):
    """Competitor capacity, delivered-SLA draws and price response to share loss."""
    capacity_limits: bool = Field(description=f"A competitor whose active contracts reach its capacity leaves the choice set of new RFPs (a shortage is capacity 0 for its duration either way). {_NOTE}")
    sla_draws: bool = Field(description=f"Each competitor's delivered SLA is drawn monthly (else the constant sla_attainment). {_NOTE}")
    price_response: bool = Field(description=f"Competitors reprice monthly on their trailing award share. {_NOTE}")
    window_months: int = Field(ge=1, le=120, description=f"Trailing window of the award share the response reads, months. {_NOTE} (assumption)")
    competitors: list[CompetitorCompetitionSpec] = Field(description=f"Per competitor; a competitor not listed has no capacity limit, a constant SLA and no price response. {_NOTE}")

    @model_validator(mode="after")
    def _check(self):
        names = [c.name for c in self.competitors]
        if len(set(names)) != len(names):
            fail("competitors", f"names {names} repeat", "unique competitor names")
        return self

    def of(self, name: str) -> CompetitorCompetitionSpec | None:
        return next((c for c in self.competitors if c.name == name), None)


@functools.lru_cache(maxsize=1)
def _rows() -> tuple:
    top: dict[str, Any] = {}
    per: dict[str, dict] = {}
    for r in block_rows(BLOCK):
        target = top if r["name"] == TOP else per.setdefault(r["name"], {"name": r["name"]})
        target[r["key"]] = parse_value(r["value"])
    return tuple(top.items()), tuple(per.values())


def default_competition_dict() -> dict[str, Any]:
    """The default ``[market.competition]`` block (fresh dict) as the table defines it."""
    top, per = _rows()
    return {**dict(top), "competitors": copy.deepcopy(list(per))}


def merge_competition(data: Any, competitors: list[str] | None = None) -> Any:
    """A partial block completes from the table: a competitor named like a default one is
    merged onto it; a given list lists exactly the competitors with these mechanisms; without
    a list, the table's entries of the market's ``competitors`` (all when None)."""
    if not isinstance(data, dict):
        return data
    base = default_competition_dict()
    out = {**{k: v for k, v in base.items() if k != "competitors"}, **data}
    items = data.get("competitors")
    if isinstance(items, list):
        defaults = {d["name"]: d for d in base["competitors"]}
        out["competitors"] = [{**defaults[i["name"]], **i} if isinstance(i, dict) and i.get("name") in defaults else i
                              for i in items]
    else:
        out["competitors"] = [d for d in base["competitors"] if competitors is None or d["name"] in competitors]
    return out


def check_competitor_names(spec: CompetitionSpec, competitors: list[str]) -> None:
    """Every competition entry names a market competitor (raises ValueError)."""
    unknown = [c.name for c in spec.competitors if c.name not in competitors]
    if unknown:
        raise ValueError(f"market.competition.competitors: {unknown} are not market competitors {competitors}")


def default_competition_spec() -> CompetitionSpec:
    return CompetitionSpec.model_validate(default_competition_dict())
