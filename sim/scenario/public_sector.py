"""Schema of ``[market.public_sector]``: public-sector anchors and public capacity.

Defaults are not written here: they are the rows of block ``public_sector`` in
``models/market/parameters_public_sector.csv`` (value, low, high, unit, source), read by
:func:`default_public_sector_dict`; ``docs/market.md`` ("Public-sector anchors") describes
the mechanisms and ``sim.market.public_sector`` runs them.

This module imports nothing of ``sim.scenario.market`` (which imports it); both read the one
table through :mod:`sim.scenario.table`.
"""
from __future__ import annotations

import functools
from typing import Any

from pydantic import Field

from sim.scenario.rules import StrictSpec
from sim.scenario.table import block_rows, parse_value

BLOCK = "public_sector"
_NOTE = "Default and source: models/market/parameters_public_sector.csv."


class PublicSectorSpec(StrictSpec):
    """Public-sector contract terms of one vertical, and the provider's access to public AI
    capacity (the EU AI gigafactories).  Unknown fields are errors; numbers strict and finite."""

    enabled: bool = Field(description=f"Public-sector anchors, public price, budget-shift cancellations and start slips on. {_NOTE}")
    vertical: str = Field(min_length=1, description=f"The vertical whose contracts are public-sector contracts (a name not among market.verticals: nothing is public). {_NOTE}")
    anchor_share: float = Field(ge=0.0, le=1.0, description=f"Share of the vertical's RFP awards that are anchors (large awards; the initial book has none). {_NOTE} (assumption)")
    anchor_size_factor: float = Field(gt=0.0, description=f"Median anchor size over the vertical's median contract size (rate_per_s_median). {_NOTE} (assumption)")
    anchor_size_sigma: float = Field(ge=0.0, description=f"Log-space standard deviation of an anchor's size (lognormal). {_NOTE} (assumption)")
    anchor_term_months: float = Field(gt=0.0, description=f"Term of an anchor contract, months. {_NOTE} (Directive 2014/24/EU Art. 33: framework agreements at most 4 years)")
    price_discount: float = Field(ge=0.0, lt=1.0, description=f"Public buyers pay list price x (1 - price_discount), every provider alike (the logit choice is unchanged). {_NOTE} (assumption)")
    cancel_rate_per_year: float = Field(ge=0.0, le=12.0, description=f"Budget-shift cancellation hazard of a signed public contract, per contract-year (exponential, from signature, across renewals). {_NOTE} (assumption from ESSU 2007)")
    slip_prob: float = Field(ge=0.0, le=1.0, description=f"Probability that an awarded public contract's start slips. {_NOTE} (ESSU 2007: 33% major delays)")
    slip_mean_months: float = Field(gt=0.0, le=120.0, description=f"Mean slip of a slipped start, months (exponential); the term moves with it. {_NOTE} (assumption)")
    capacity_access: bool = Field(description=f"The provider may serve eligible tenants on public AI capacity (EU AI gigafactories) once available. {_NOTE} (assumption: off)")
    capacity_vertical: str = Field(min_length=1, description=f"The vertical eligible for public capacity. {_NOTE} (EuroHPC access policy)")
    capacity_gpus_max: int = Field(ge=0, le=1_000_000, description=f"Most GPUs of public capacity the provider may hold at once. {_NOTE} (assumption)")
    capacity_lead_months: float = Field(ge=0.0, le=240.0, description=f"Months from t = 0 until public capacity is available. {_NOTE} (assumption)")
    capacity_attainment: float = Field(ge=0.0, le=1.0, description=f"Latency-SLA attainment of tenants served on public capacity (not simulated). {_NOTE} (assumption)")


@functools.lru_cache(maxsize=1)
def _rows() -> tuple:
    return tuple((r["key"], parse_value(r["value"])) for r in block_rows(BLOCK))


def default_public_sector_dict() -> dict[str, Any]:
    """The default ``[market.public_sector]`` block (fresh dict) as the table defines it."""
    return dict(_rows())


def default_public_sector_spec() -> PublicSectorSpec:
    return PublicSectorSpec.model_validate(default_public_sector_dict())
