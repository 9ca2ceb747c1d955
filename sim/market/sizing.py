"""Contract sizing: an RFP asks for a token volume; its request rate follows from its vertical's
own length mix.

A buyer contracts for work (tokens), not for a number of calls: a healthcare contract that
carries long clinical records (Mooncake-like prompts, ~10,200 tokens per request) and a chat
contract of the same money differ in their request rate, not in their volume.  With
``size_basis = "tokens"`` (the default, ``models/market/parameters_contracts.csv``) a contract's
size is drawn as a token rate,

    tokens_per_s = rate_per_s_median * reference_tokens_per_request * exp(rate_per_s_sigma * Z),

``Z`` standard normal (``rate_per_s_median`` counts requests of the reference length mix, the
Azure 2023 conversation means 1,155 + 211 tokens the table's sizes were set in), and its request
rate is

    rate_per_s = tokens_per_s / (prompt_tokens_mean + output_tokens_mean)

with the vertical's own mean lengths (the means of the length laws the forecast draws its
requests from, ``sim/demand/verticals.py``; ``tests/market/test_sizing.py`` checks that they
agree).  ``size_basis = "requests"`` keeps the former sizing: ``rate_per_s`` is drawn and the
tokens follow from it.  Either way a contract carries both, with units in their names
(``CustomerContract.rate_per_s``, ``CustomerContract.contracted_tokens_per_s``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from sim.scenario.market import VerticalMarketSpec

MONTH_S = 30.4375 * 86400.0   # as sim.market.market.MONTH_S (a mean Gregorian month)


@dataclass(frozen=True)
class ContractSize:
    """A contract's size: its steady-state request rate and the token rate it contracts."""
    rate_per_s: float
    tokens_per_s: float

    @property
    def tokens_per_month(self) -> float:
        return self.tokens_per_s * MONTH_S


def size_of(v: VerticalMarketSpec, z: float) -> ContractSize:
    """The size of a contract of vertical ``v`` whose standard-normal size draw is ``z``."""
    x = v.rate_per_s_median * math.exp(v.rate_per_s_sigma * z)   # in units of rate_per_s_median
    if v.size_basis == "requests":
        return ContractSize(x, x * v.tokens_per_request)
    tokens = x * v.reference_tokens_per_request
    return ContractSize(tokens / v.tokens_per_request, tokens)


def size_from_tokens(v: VerticalMarketSpec, tokens_per_s: float) -> ContractSize:
    """A contract of ``tokens_per_s`` for vertical ``v`` (e.g. a churned tenant's re-tender)."""
    return ContractSize(tokens_per_s / v.tokens_per_request, tokens_per_s)


def mean_tokens_per_s(v: VerticalMarketSpec) -> float:
    """Expected contracted tokens/s of one contract of ``v`` (lognormal mean)."""
    unit = v.reference_tokens_per_request if v.size_basis == "tokens" else v.tokens_per_request
    return v.rate_per_s_median * unit * math.exp(v.rate_per_s_sigma ** 2 / 2.0)
