"""Schema of ``[market.channels]``: the direct channel and the hyperscaler marketplaces.

Defaults are not written here: they are the rows of block ``channel`` in
``models/market/parameters_channels.csv`` (one ``name`` per marketplace: value, low, high,
unit, source), read by :func:`default_channels_dict`; ``docs/market.md`` ("Channels")
describes the mechanism and ``sim.market.channels`` runs it.

This module imports nothing of ``sim.scenario.market`` (which imports it); both read the one
table through :mod:`sim.scenario.table`.
"""
from __future__ import annotations

import copy
import functools
from typing import Any

from pydantic import Field, model_validator

from sim.scenario.rules import StrictSpec as _Spec, fail
from sim.scenario.table import block_rows, parse_value

BLOCK = "channel"
_NOTE = "Default and source: models/market/parameters_channels.csv."


class MarketplaceSpec(_Spec):
    """One hyperscaler marketplace the provider may sell through."""
    name: str = Field(min_length=1, description="Marketplace (aws, azure, gcp, ...); names the buyers bound to it and the ledger site marketplace-<name> of its hosted traffic.")
    listed: bool = Field(description=f"The provider's offer is listed on this marketplace (else buyers bound to the platform cannot buy it). {_NOTE}")
    reach: float = Field(ge=0.0, le=1.0, description=f"Share of RFPs from buyers already on this platform who buy only through it (default 0: nobody is bound, today's direct-only market). {_NOTE} (assumption)")
    fee_share: float = Field(ge=0.0, lt=1.0, description=f"Share of marketplace revenue the platform keeps (ledger line marketplace_fee). {_NOTE} (AWS, Azure, Google listing fees: 3%)")
    hosted: bool = Field(description=f"Marketplace traffic is served on the platform's GPUs: no sovereign capacity, a hosting fee per token, and non-sovereign in the sovereign share. {_NOTE} (assumption)")
    hosting_eur_per_mtok: float = Field(ge=0.0, le=1e9, description=f"Hosting fee per million tokens (prompt + output) served on the platform's GPUs (ledger line marketplace_hosting). {_NOTE} (assumption)")
    hosted_attainment: float = Field(ge=0.0, le=1.0, description=f"Latency-SLA attainment of hosted marketplace tenants (their traffic is not simulated). {_NOTE} (assumption)")
    migrate_prob_per_year: float = Field(ge=0.0, le=1.0, description=f"Yearly probability that a marketplace tenant moves to a direct contract, at contract age 0. {_NOTE} (assumption)")
    lockin_halflife_years: float = Field(gt=0.0, le=1000.0, description=f"Contract age (years) that halves the yearly migration probability (integration depth). {_NOTE} (assumption)")


class ChannelsSpec(_Spec):
    """The marketplaces beside the direct channel (which always exists)."""
    marketplaces: list[MarketplaceSpec] = Field(description=f"Hyperscaler marketplaces. {_NOTE}")

    @model_validator(mode="after")
    def _check(self):
        names = [m.name for m in self.marketplaces]
        if len(set(names)) != len(names) or "direct" in names:
            fail("marketplaces", f"names {names} repeat or use 'direct'", "unique names other than 'direct'")
        total = sum(m.reach for m in self.marketplaces)
        if total > 1.0 + 1e-12:
            fail("marketplaces", f"reach sums to {total:g} over {names}",
                 "a total of at most 1 (each buyer is bound to at most one platform)")
        return self


@functools.lru_cache(maxsize=1)
def _rows() -> tuple:
    out: dict[str, dict] = {}
    for r in block_rows(BLOCK):
        out.setdefault(r["name"], {"name": r["name"]})[r["key"]] = parse_value(r["value"])
    return tuple(out.values())


def default_channels_dict() -> dict[str, Any]:
    """The default ``[market.channels]`` block (fresh dict) as the table defines it."""
    return {"marketplaces": copy.deepcopy(list(_rows()))}


def merge_channels(data: Any) -> Any:
    """A partial block completes from the table: a marketplace named like a default one is
    merged onto it; a given list lists exactly the marketplaces to use."""
    if not isinstance(data, dict):
        return data
    out = dict(data)
    items = data.get("marketplaces")
    if isinstance(items, list):
        defaults = {d["name"]: d for d in default_channels_dict()["marketplaces"]}
        out["marketplaces"] = [{**defaults[i["name"]], **i} if isinstance(i, dict) and i.get("name") in defaults else i
                               for i in items]
    else:
        out.setdefault("marketplaces", default_channels_dict()["marketplaces"])
    return out


def default_channels_spec() -> ChannelsSpec:
    return ChannelsSpec.model_validate(default_channels_dict())
