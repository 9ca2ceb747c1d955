"""Price lists: the sovereign provider's price per vertical and per model.

The sovereign offer has one list price (``sovereign.price_eur_per_mtok_in/out`` of
``models/market/parameters.csv``: the EU list price of the reference model, Mixtral 8x7B),
which price cuts and the ``price_response`` move.  On top of it
(``models/market/parameters_contracts.csv``):

* each vertical's ``price_factor`` multiplies it: a contract of vertical *v* is signed (and
  renewed) at ``list price x price_factor_v``; the buyers' choice compares that price with the
  competitors' (``Market.blended_price``);
* the per-model price list ``sovereign.price_list[model].factor_in/out`` (the portfolio
  models' API list prices over the reference model's, same seller) prices each model a tenant
  is served with: the ledger bills a tenant's tokens on model *m* at
  ``contract price x factor_m`` (per input and per output token).  A model not listed is billed
  at the contract price.  The choice model sees the reference model's price: the competitors'
  prices are Mixtral 8x7B prices too.
"""
from __future__ import annotations

from sim.scenario.market import MarketSpec, VerticalMarketSpec

SOVEREIGN = "sovereign"


def vertical_price(v: VerticalMarketSpec, provider: str, list_in_eur: float, list_out_eur: float) -> tuple[float, float]:
    """The EUR per 1M input and output tokens ``provider`` signs a contract of ``v`` at:
    the sovereign list price times the vertical's ``price_factor``; a competitor's list price
    as it is."""
    if provider != SOVEREIGN:
        return list_in_eur, list_out_eur
    return list_in_eur * v.price_factor, list_out_eur * v.price_factor


def model_factors(spec: MarketSpec, model: str | None) -> tuple[float, float]:
    """The price-list factors (input, output) of ``model`` (1, 1 when unlisted or None)."""
    entry = spec.sovereign.price_list.get(model) if model is not None else None
    return (1.0, 1.0) if entry is None else (entry.factor_in, entry.factor_out)


def model_price(spec: MarketSpec, contract, model: str | None) -> tuple[float, float]:
    """EUR per 1M input and output tokens a sovereign tenant pays for ``model``'s tokens: its
    contract's current price (the reference model's) times the model's factors."""
    f_in, f_out = model_factors(spec, model)
    return contract.price_eur_per_mtok_in * f_in, contract.price_eur_per_mtok_out * f_out
