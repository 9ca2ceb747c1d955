"""Schema of the scenario's optional ``[market]`` block (the customer market).

Default values are not written here: they live, with their sources, in one table users can
read, ``models/market/parameters.csv`` (columns block, name, key, value, low, high, unit,
source).  ``default_market_dict()`` turns that table into the nested dict this schema
validates, so the table *is* the default scenario's market and cannot drift from it
(tests/market/test_market.py checks the round trip).  ``low``/``high`` are the ranges the
one-at-a-time sensitivity experiment uses.

This module does not import ``sim.scenario`` (which imports it), so it carries its own base.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Literal

from pydantic import Field, model_validator

from sim.scenario.certification import ComplianceSpec, default_compliance_dict, merge_compliance
from sim.scenario.channels import ChannelsSpec, default_channels_dict, merge_channels
from sim.scenario.competition import CompetitionSpec, check_competitor_names, default_competition_dict, merge_competition
from sim.scenario.public_sector import PublicSectorSpec, default_public_sector_dict
from sim.scenario.rules import StrictSpec, fail
from sim.scenario.table import TABLE, parse_value as _parse, read_table, table_files  # noqa: F401  (re-exported)

_TABLE_NOTE = "Default and source: models/market/parameters.csv."


class _Spec(StrictSpec):
    """The market blocks' base (:class:`sim.scenario.rules.StrictSpec`), which also takes
    numpy scalars as Python numbers."""

    @model_validator(mode="before")
    @classmethod
    def _plain_values(cls, data: Any) -> Any:
        if isinstance(data, dict):   # numpy scalars (computed sensitivity values) to Python numbers
            return {k: (v.item() if hasattr(v, "item") and not isinstance(v, (list, dict, str)) else v)
                    for k, v in data.items()}
        return data


class MarketSLASpec(_Spec):
    ttft_s: float = Field(gt=0.0, description=f"TTFT target written into this vertical's contracts, seconds. {_TABLE_NOTE} (MLPerf Server, sla.csv)")
    tpot_s: float = Field(gt=0.0, description=f"TPOT target of contracts, seconds per output token. {_TABLE_NOTE} (MLPerf Server, sla.csv)")
    attainment_target: float = Field(gt=0.0, le=1.0, description=f"Share of requests that must meet both targets; churn grows with the shortfall below it. {_TABLE_NOTE}")


class VerticalMarketSpec(_Spec):
    name: str = Field(min_length=1, description="Buyer vertical (finance, healthcare, public_sector, ...); names the RNG streams market/*/<name>.")
    rfp_rate_per_month: float = Field(gt=0.0, description=f"Mean RFPs per month from this vertical at t = 0, all providers (Poisson). {_TABLE_NOTE} (assumption)")
    rfp_growth_per_year: float = Field(gt=0.0, description=f"Yearly growth factor of the RFP rate (compounded continuously). {_TABLE_NOTE} (Gartner sovereign-cloud spending, market.csv)")
    rate_per_s_median: float = Field(gt=0.0, description=f"Median contract size: mean requests/s at steady state (lognormal). {_TABLE_NOTE} (assumption)")
    rate_per_s_sigma: float = Field(ge=0.0, description=f"Log-space standard deviation of the contract size. {_TABLE_NOTE} (assumption)")
    prompt_tokens_mean: float = Field(gt=0.0, description=f"Mean prompt tokens per request (prices a blended offer; the demand layer may use its own fit). {_TABLE_NOTE} (Azure LLM trace 2023)")
    output_tokens_mean: float = Field(gt=0.0, description=f"Mean output tokens per request. {_TABLE_NOTE} (Azure LLM trace 2023)")
    procurement_months_min: float = Field(ge=0.0, description=f"Shortest RFP-to-award time, months (uniform between min and max). {_TABLE_NOTE} (public sector: 18 to 36 months as stated in the project brief; others assumption)")
    procurement_months_max: float = Field(ge=0.0, description=f"Longest RFP-to-award time, months. {_TABLE_NOTE}")
    term_months: float = Field(gt=0.0, description=f"Contract term, months; at expiry the contract renews for another term, churns or expires. {_TABLE_NOTE} (assumption)")
    beta_price: float = Field(ge=0.0, description=f"Logit weight of price: utility falls by beta_price per unit of ln(blended EUR per 1M tokens). {_TABLE_NOTE} (assumption)")
    beta_sla_per_pp: float = Field(ge=0.0, description=f"Logit weight of delivered SLA attainment, utility per percentage point. {_TABLE_NOTE} (assumption)")
    beta_sovereignty: float = Field(ge=0.0, description=f"Logit weight of sovereignty fit (0..1). {_TABLE_NOTE} (assumption)")
    churn_base_prob: float = Field(ge=0.0, le=1.0, description=f"Churn probability at expiry when the tenant's SLA was met. {_TABLE_NOTE} (assumption)")
    churn_per_pp_shortfall: float = Field(ge=0.0, description=f"Added churn probability per percentage point of attainment below the target. {_TABLE_NOTE} (assumption)")
    need_end_prob: float = Field(ge=0.0, le=1.0, description=f"Probability at expiry that the tenant's need ends (contract expires, no re-tender). {_TABLE_NOTE} (assumption)")
    initial_contracts: int = Field(ge=0, description=f"Contracts of this vertical in force at t = 0 across all providers, awarded by the same choice model at t = 0 with remaining terms uniform over the term. {_TABLE_NOTE} (assumption)")
    sla: MarketSLASpec = Field(description="Latency targets written into this vertical's contracts.")
    size_basis: Literal["tokens", "requests"] = Field(description=f"tokens: an RFP's size is a token volume, rate_per_s_median x reference_tokens_per_request tokens/s at the median, and its request rate follows from this vertical's own mean lengths (prompt_tokens_mean + output_tokens_mean; sim/market/sizing.py); requests: rate_per_s_median is the request rate whatever the lengths (the former sizing). {_TABLE_NOTE} (parameters_contracts.csv: definition)")
    reference_tokens_per_request: float = Field(gt=0.0, le=float(1 << 24), description=f"Tokens per request of the length mix rate_per_s_median is counted in (size_basis = tokens). {_TABLE_NOTE} (parameters_contracts.csv: Azure LLM trace 2023 conversation means 1155 + 211)")
    price_factor: float = Field(gt=0.0, le=1e6, description=f"This vertical's price list: the sovereign list price (and its per-model price list) times this factor, in the buyers' choice and on the ledger (sim/market/pricing.py). {_TABLE_NOTE} (parameters_contracts.csv: assumption)")

    @property
    def tokens_per_request(self) -> float:
        """Mean prompt + output tokens of one of this vertical's requests."""
        return self.prompt_tokens_mean + self.output_tokens_mean

    @property
    def rate_per_s_per_size_unit(self) -> float:
        """Requests/s of a contract per unit of rate_per_s_median (1 with size_basis =
        requests; reference / own tokens per request with size_basis = tokens)."""
        return 1.0 if self.size_basis == "requests" else self.reference_tokens_per_request / self.tokens_per_request

    @model_validator(mode="after")
    def _check(self):
        if self.procurement_months_max < self.procurement_months_min:
            fail("procurement_months_max", f"{self.procurement_months_max:g} is below procurement_months_min ({self.procurement_months_min:g})", "procurement_months_max >= procurement_months_min")
        if self.churn_base_prob + self.need_end_prob > 1.0:
            fail("need_end_prob", f"churn_base_prob + need_end_prob = {self.churn_base_prob:g} + {self.need_end_prob:g} is above 1", "a sum <= 1")
        return self


class GapCurveSpec(_Spec):
    """Sovereignty fit of a competitor in one vertical over time: a logistic curve."""
    fit_start: float = Field(ge=0.0, le=1.0, description=f"Fit long before the midpoint (0 = unacceptable, 1 = as sovereign as the sovereign provider). {_TABLE_NOTE} (assumption)")
    fit_end: float = Field(ge=0.0, le=1.0, description=f"Fit once the gap-closing programme is complete. {_TABLE_NOTE} (assumption)")
    midpoint_month: float = Field(description=f"Month (from t = 0) at which half the gap is closed; larger = slower. {_TABLE_NOTE} (assumption)")
    width_months: float = Field(gt=0.0, description=f"Logistic scale, months (about 4.4 x width covers 10%..90% of the move). {_TABLE_NOTE} (assumption)")

    def fit(self, month: float) -> float:
        z = (month - self.midpoint_month) / self.width_months
        z = max(-60.0, min(60.0, z))
        return self.fit_start + (self.fit_end - self.fit_start) / (1.0 + math.exp(-z))


class ModelPriceSpec(_Spec):
    """One model's entry in the sovereign price list, relative to the list price."""
    factor_in: float = Field(gt=0.0, le=1e6, description=f"Price per input token of this model over the sovereign list price (the reference model's). {_TABLE_NOTE} (parameters_contracts.csv: api_prices.csv ratios)")
    factor_out: float = Field(gt=0.0, le=1e6, description=f"Price per output token of this model over the sovereign list price. {_TABLE_NOTE} (parameters_contracts.csv: api_prices.csv ratios)")


class SovereignOfferSpec(_Spec):
    price_eur_per_mtok_in: float = Field(gt=0.0, description=f"Sovereign list price, EUR per 1M input tokens. {_TABLE_NOTE} (assumption at the EU-hosted Mixtral list price, api_prices.csv)")
    price_eur_per_mtok_out: float = Field(gt=0.0, description=f"Sovereign list price, EUR per 1M output tokens. {_TABLE_NOTE}")
    asc: float = Field(description=f"Alternative-specific constant of the sovereign offer (0: the reference). {_TABLE_NOTE}")
    sla_attainment_prior: float = Field(ge=0.0, le=1.0, description=f"Delivered attainment buyers assume until the simulation has measured one. {_TABLE_NOTE} (assumption)")
    price_response: float = Field(ge=0.0, le=1.0, description=f"When a hyperscaler cut lowers the cheapest hyperscaler list price (input + output) by factor f, the sovereign prices are multiplied by f**price_response (0 = hold, 1 = follow). {_TABLE_NOTE} (assumption)")
    sovereignty: dict[str, float] = Field(description=f"Sovereignty fit per vertical (1 by normalisation). {_TABLE_NOTE}")
    price_list: dict[str, ModelPriceSpec] = Field(default_factory=dict, description=f"Per-model price list (catalog model id -> factors on the list price); a model not listed is billed at the list price. The buyers' choice compares the list price itself (the reference model, Mixtral 8x7B); the ledger bills each model's tokens at its factor (sim/market/pricing.py). {_TABLE_NOTE} (parameters_contracts.csv)")


class CompetitorSpec(_Spec):
    name: str = Field(min_length=1, description="Competitor label (aws, azure, eu_alt, ...); names its RNG streams; must not be 'sovereign'.")
    kind: Literal["hyperscaler", "eu_provider"] = Field(description="hyperscaler: US hyperscaler; eu_provider: another EU provider. Only a hyperscaler's cut triggers the sovereign price_response.")
    price_eur_per_mtok_in: float = Field(gt=0.0, description=f"List price at t = 0, EUR per 1M input tokens. {_TABLE_NOTE} (api_prices.csv)")
    price_eur_per_mtok_out: float = Field(gt=0.0, description=f"List price at t = 0, EUR per 1M output tokens. {_TABLE_NOTE} (api_prices.csv)")
    asc: float = Field(description=f"Alternative-specific constant (brand, ecosystem, relationships), utility units. {_TABLE_NOTE} (assumption)")
    sla_attainment: float = Field(ge=0.0, le=1.0, description=f"Latency-SLA attainment buyers expect from this competitor (constant). {_TABLE_NOTE} (assumption)")
    price_cut_rate_per_year: float = Field(ge=0.0, description=f"Stochastic list-price cuts per year (Poisson). {_TABLE_NOTE} (assumption)")
    price_cut_factor_min: float = Field(gt=0.0, le=1.0, description=f"Smallest price multiplier of a stochastic cut (uniform between min and max). {_TABLE_NOTE} (api_prices.csv history)")
    price_cut_factor_max: float = Field(gt=0.0, le=1.0, description=f"Largest price multiplier of a stochastic cut. {_TABLE_NOTE} (assumption)")
    shortage_rate_per_year: float = Field(ge=0.0, description=f"Stochastic capacity shortages per year; during one the competitor does not bid. {_TABLE_NOTE} (assumption)")
    shortage_mean_months: float = Field(gt=0.0, description=f"Mean shortage duration, months (exponential). {_TABLE_NOTE} (assumption)")
    sovereignty: dict[str, GapCurveSpec] = Field(description="Sovereignty-gap closing curve per vertical.")

    @model_validator(mode="after")
    def _check(self):
        if self.name == "sovereign":
            raise ValueError("competitor name 'sovereign' is reserved for the simulated provider")
        if self.price_cut_factor_max < self.price_cut_factor_min:
            fail("price_cut_factor_max", f"{self.price_cut_factor_max:g} is below price_cut_factor_min ({self.price_cut_factor_min:g})", "price_cut_factor_max >= price_cut_factor_min")
        return self


class MarketEventSpec(_Spec):
    month: float = Field(ge=0.0, description="When the event happens, months from t = 0.")
    kind: Literal["price_cut", "shortage"] = Field(description="price_cut: the provider's list price is multiplied by factor; shortage: the competitor does not bid for duration_months.")
    provider: str = Field(min_length=1, description="'sovereign' (price_cut only) or a competitor name.")
    factor: float = Field(default=1.0, gt=0.0, description="Run setting (the event's input): price_cut multiplier of both list prices (0.8 = a 20% cut); default 1 = no change.")
    duration_months: float = Field(default=0.0, ge=0.0, description="Run setting (the event's input): shortage length, months without bids; default 0 = none.")

    @model_validator(mode="after")
    def _fields_of_kind(self):
        if self.kind == "shortage" and self.factor != 1.0:
            fail("factor", f"applies to kind = 'price_cut' only, not 'shortage'", "leave it out, or kind = 'price_cut'")
        if self.kind == "price_cut" and self.duration_months != 0.0:
            fail("duration_months", f"applies to kind = 'shortage' only, not 'price_cut'", "leave it out, or kind = 'shortage'")
        return self


def _default(section: str):
    return lambda: default_market_dict()[section]


class MarketSpec(_Spec):
    verticals: list[VerticalMarketSpec] = Field(validate_default=True, default_factory=_default("verticals"), min_length=1, description="Buyer verticals issuing RFPs. Default: models/market/parameters.csv.")
    sovereign: SovereignOfferSpec = Field(validate_default=True, default_factory=_default("sovereign"), description="The simulated provider's offer. Default: models/market/parameters.csv.")
    competitors: list[CompetitorSpec] = Field(validate_default=True, default_factory=_default("competitors"), description="Competing offers (US hyperscalers, other EU providers). Default: models/market/parameters.csv.")
    events: list[MarketEventSpec] = Field(default_factory=list, description="Scheduled moves (price cuts, capacity shortages) on top of the stochastic ones.")
    retender_on_churn: bool = Field(validate_default=True, default_factory=_default("retender_on_churn"), description="A churned tenant issues a new RFP (with procurement delay) that excludes the provider it left. Default: models/market/parameters.csv (assumption).")
    public_sector: PublicSectorSpec = Field(validate_default=True, default_factory=default_public_sector_dict, description="Public-sector anchors (large awards, public price, budget-shift cancellations, start slips) and access to public AI capacity (docs/market.md). Default: models/market/parameters_public_sector.csv.")
    channels: ChannelsSpec = Field(validate_default=True, default_factory=default_channels_dict, description="Sales channels beside direct: the hyperscaler marketplaces (fee, reach into buyers bound to the platform, hosted traffic, lock-in; docs/market.md). Default: models/market/parameters_channels.csv.")
    compliance: ComplianceSpec = Field(validate_default=True, default_factory=default_compliance_dict, description="Certifications as a cost and a gate (buyer rules per vertical x country), EU AI Act and DORA costs, supply-chain sovereignty fit (docs/market.md, Compliance). Default: models/market/certifications.csv, buyer_rules.csv, compliance.csv, ...")
    competition: CompetitionSpec = Field(validate_default=True, default_factory=default_competition_dict, description="Competitor capacity (at capacity a competitor does not bid), monthly delivered-SLA draws and the price response to share loss (docs/market.md). Default: models/market/parameters_competition.csv.")

    @model_validator(mode="before")
    @classmethod
    def _merge_onto_table(cls, data: Any) -> Any:
        """Partial blocks complete from the table: ``sovereign`` and each vertical or
        competitor *named like a default one* are deep-merged onto the defaults; a list that
        is given lists exactly the verticals/competitors to use (omit one to drop it); an
        item with a new name must be complete."""
        if not isinstance(data, dict):
            return data
        base = default_market_dict()
        out = dict(data)
        if isinstance(data.get("sovereign"), dict):
            out["sovereign"] = _deep_merge(base["sovereign"], data["sovereign"])
        if isinstance(data.get("public_sector"), dict):   # a partial block completes from its table
            out["public_sector"] = _deep_merge(default_public_sector_dict(), data["public_sector"])
        if isinstance(data.get("channels"), dict):        # marketplaces named like a default one complete from its table
            out["channels"] = merge_channels(data["channels"])
        if isinstance(data.get("compliance"), dict):      # a partial block completes from its tables
            out["compliance"] = merge_compliance(data["compliance"])
        if isinstance(data.get("competition", {}), dict):  # from its table, for the market's competitors
            comps = data.get("competitors")
            names = [c.get("name") for c in comps if isinstance(c, dict)] if isinstance(comps, list) else None
            out["competition"] = merge_competition(data.get("competition", {}), names)
        for key in ("verticals", "competitors"):
            items = data.get(key)
            if isinstance(items, list):
                defaults = {d["name"]: d for d in base[key]}
                out[key] = [_deep_merge(defaults[i["name"]], i)
                            if isinstance(i, dict) and i.get("name") in defaults else i
                            for i in items]
        if isinstance(out.get("verticals"), list) and "sovereign" not in data:
            # a new vertical needs a sovereign fit: 1 by normalisation
            names = [v.get("name") for v in out["verticals"] if isinstance(v, dict)]
            sov = base["sovereign"]
            sov["sovereignty"] = {n: sov["sovereignty"].get(n, 1.0) for n in names}
            out["sovereign"] = sov
        return out

    @model_validator(mode="after")
    def _check(self):
        vnames = [v.name for v in self.verticals]
        if len(set(vnames)) != len(vnames):
            raise ValueError(f"market.verticals names must be unique, got {vnames}")
        cnames = [c.name for c in self.competitors]
        if len(set(cnames)) != len(cnames):
            raise ValueError(f"market.competitors names must be unique, got {cnames}")
        missing = [v for v in vnames if v not in self.sovereign.sovereignty]
        if missing:
            raise ValueError(f"market.sovereign.sovereignty: no fit for verticals {missing}")
        for c in self.competitors:
            missing = [v for v in vnames if v not in c.sovereignty]
            if missing:
                raise ValueError(f"market.competitors[{c.name}].sovereignty: no curve for verticals {missing}")
        check_competitor_names(self.competition, cnames)
        for i, e in enumerate(self.events):
            if e.provider != "sovereign" and e.provider not in cnames:
                raise ValueError(f"market.events[{i}].provider: {e.provider!r} is not 'sovereign' or a competitor {cnames}")
            if e.kind == "shortage" and e.provider == "sovereign":
                raise ValueError(f"market.events[{i}]: a shortage applies to competitors only (the sovereign fleet is simulated)")
            if e.kind == "shortage" and e.duration_months <= 0:
                raise ValueError(f"market.events[{i}].duration_months: a shortage needs duration_months > 0")
        return self


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


# ------------------------------------------------------------------ the table
@functools.lru_cache(maxsize=1)
def _default_market_dict_cached() -> tuple:
    verticals: dict[str, dict] = {}
    competitors: dict[str, dict] = {}
    sovereign: dict[str, Any] = {}
    top: dict[str, Any] = {}
    for row in read_table():
        block, name, key = row["block"], row["name"], row["key"]
        if block == "vertical":
            target = verticals.setdefault(name, {"name": name})
        elif block == "competitor":
            target = competitors.setdefault(name, {"name": name})
        elif block == "sovereign":
            target = sovereign
        elif block == "market":
            target = top
        else:  # e.g. 'fallback': parameters of experiments, not of the schema
            continue
        parts = key.split(".")
        for p in parts[:-1]:
            target = target.setdefault(p, {})
        target[parts[-1]] = _parse(row["value"])
    return (list(verticals.values()), sovereign, list(competitors.values()), top.get("retender_on_churn", True))


def default_market_dict() -> dict[str, Any]:
    """The default market (nested dict, fresh copy) as the parameter table defines it."""
    import copy
    v, s, c, r = _default_market_dict_cached()
    return copy.deepcopy({"verticals": v, "sovereign": s, "competitors": c, "retender_on_churn": r})


def default_market_spec() -> MarketSpec:
    return MarketSpec.model_validate(default_market_dict())


def fallback_parameters() -> dict[str, float]:
    """Rows of block 'fallback' (the market-only experiment path's capacity and cost model)."""
    return {row["key"]: _parse(row["value"]) for row in read_table() if row["block"] == "fallback"}


def set_parameter(spec: MarketSpec, block: str, name: str, key: str, value: Any) -> MarketSpec:
    """A copy of ``spec`` with one table parameter (block, name, key) replaced, re-validated."""
    data = spec.model_dump(mode="python")
    if block == "vertical":
        target = next(v for v in data["verticals"] if v["name"] == name)
    elif block == "competitor":
        target = next(c for c in data["competitors"] if c["name"] == name)
    elif block == "sovereign":
        target = data["sovereign"]
    elif block == "market":
        target = data
    elif block == "public_sector":
        target = data["public_sector"]
    elif block == "channel":
        target = next(mk for mk in data["channels"]["marketplaces"] if mk["name"] == name)
    elif block == "competition":
        target = data["competition"] if name == "market" else next(c for c in data["competition"]["competitors"] if c["name"] == name)
    else:
        raise KeyError(block)
    parts = key.split(".")
    for p in parts[:-1]:
        target = target[p]
    if parts[-1] not in target:
        raise KeyError(f"{block}.{name}.{key}")
    old = target[parts[-1]]
    if isinstance(old, int) and not isinstance(old, bool) and isinstance(value, float) and value.is_integer():
        value = int(value)   # a count varied over a float range (the sensitivity experiment)
    target[parts[-1]] = value
    return MarketSpec.model_validate(data)


def table_markdown() -> str:
    """The parameter table as Markdown (models/market/README.md embeds it)."""
    rows = read_table()
    cols = ["block", "name", "key", "value", "low", "high", "unit", "source"]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(str(r[c]).replace("|", "\\|") for c in cols) + " |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":   # python -m sim.scenario.market > table.md
    print(table_markdown(), end="")
