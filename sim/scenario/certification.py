"""Schema of ``[market.compliance]`` (certifications as a cost and a gate, the EU AI Act and
DORA costs, supply-chain sovereignty) and of a site's planned certifications.

Defaults are not written here: they are the rows of the tables in ``models/market/``
(``certifications.csv``, ``buyer_rules.csv``, ``buyer_countries.csv``,
``competitor_certifications.csv``, ``compliance.csv``, ``supply_chain.csv``; each row has a
``source`` column, a real source or ``assumption``), read by :func:`default_compliance_dict`.
``docs/market.md`` ("Compliance") describes the mechanism, :mod:`sim.market.compliance` runs
the gate and the fit, :mod:`sim.forecast.compliance` the costs.

This module imports nothing of ``sim.scenario.market`` (which imports it).
"""
from __future__ import annotations

import copy
import csv
import functools
from typing import Any, Literal

from pydantic import Field, model_validator

from sim.core.resources import model_file
from sim.scenario.rules import StrictSpec as _Spec, fail
from sim.scenario.table import parse_value

_NOTE = "Default and source: models/market/"
ANY_COUNTRY = "*"      # a buyer rule for every country
OTHER_COUNTRY = "other"  # buyers from countries with no rule of their own


class CertificationSpec(_Spec):
    """One certification a site may hold: what it costs and how long it takes."""
    name: str = Field(min_length=1, description="Certification label as sites and buyer rules write it (SecNumCloud, BSI-C5, HDS, ISO27001, ...).")
    one_off_eur: float = Field(ge=0.0, le=1e12, description=f"One-off cost of obtaining it at one site, EUR, booked evenly over months_to_obtain from the start month. {_NOTE}certifications.csv (assumption)")
    yearly_eur: float = Field(ge=0.0, le=1e12, description=f"Yearly cost of keeping it at one site (surveillance audits, controls), EUR, booked monthly while held. {_NOTE}certifications.csv (assumption)")
    months_to_obtain: int = Field(ge=0, le=600, description=f"Months from the start of a planned certification until it is held. {_NOTE}certifications.csv (assumption)")


class BuyerRuleSpec(_Spec):
    """A buyer population that awards only to providers holding a certification."""
    vertical: str = Field(min_length=1, description="Buyer vertical (finance, healthcare, public_sector, ...).")
    country: str = Field(min_length=1, description="Buyer country (ISO alpha-2 as in buyer_countries, or '*' = every country).")
    certification: str = Field(min_length=1, description=f"Certification the provider must hold at a site to win (a name of certifications). {_NOTE}buyer_rules.csv")


class SupplyChainPenaltySpec(_Spec):
    """How much a site attribute lowers the sovereign offer's fit for the strict verticals."""
    attribute: Literal["colo_owner", "gpu_origin"] = Field(description="Site attribute (sites.colo_owner, sites.gpu_origin).")
    value: str = Field(min_length=1, description="Its value (eu, us, other).")
    fit_penalty: float = Field(ge=0.0, le=1.0, description=f"Subtracted from the sovereignty fit (0..1) of a site with this value. {_NOTE}supply_chain.csv (assumption)")


class PlannedCertificationSpec(_Spec):
    """A certification a site starts to obtain during the forecast."""
    name: str = Field(min_length=1, description="Certification (a name of market.compliance.certifications).")
    start_month: int = Field(ge=0, le=1200, description="Month the work starts; its one-off cost is booked evenly from here over months_to_obtain, and it is held (gates, yearly cost) from start_month + months_to_obtain.")


class ComplianceSpec(_Spec):
    """Certifications as a cost and a gate, AI Act and DORA costs, supply-chain fit."""
    gate: Literal["exclude", "off"] = Field(description=f"exclude: a provider holding no required certification (sovereign: at none of its sites) is left out of that buyer's choice; off: no gate (costs still booked). {_NOTE}compliance.csv (assumption)")
    tenant_residency: Literal["buyer", "vertical"] = Field(description=f"buyer: a won tenant whose buyer's rules name certifications is served only at sites holding them (allowed jurisdictions: its vertical's plus its buyer's country); vertical: every tenant keeps its vertical's residency (the gate and the costs only). {_NOTE}compliance.csv (assumption)")
    certifications: list[CertificationSpec] = Field(description=f"The certifications sites may hold, with their costs and lead times. {_NOTE}certifications.csv")
    buyer_rules: list[BuyerRuleSpec] = Field(description=f"Which vertical x buyer country needs which certification. {_NOTE}buyer_rules.csv")
    buyer_countries: dict[str, float] = Field(description=f"Share of each vertical's RFPs per buyer country ('other' = countries without a rule of their own); sums to 1. {_NOTE}buyer_countries.csv (assumption)")
    competitor_certifications: dict[str, list[str]] = Field(description=f"Certifications each competitor holds (gate); a competitor not listed holds none. {_NOTE}competitor_certifications.csv (assumption)")
    ai_act_one_off_eur_per_model: float = Field(ge=0.0, le=1e12, description=f"EU AI Act documentation of each served model, first drafting, EUR (booked in the model's first month on the fleet). {_NOTE}compliance.csv (assumption)")
    ai_act_yearly_eur_per_model: float = Field(ge=0.0, le=1e12, description=f"Keeping a served model's AI Act documentation current, EUR per year. {_NOTE}compliance.csv (assumption)")
    dora_yearly_eur_per_finance_contract: float = Field(ge=0.0, le=1e12, description=f"DORA third-party ICT risk duties per active finance contract, EUR per year. {_NOTE}compliance.csv (assumption)")
    strict_verticals: list[str] = Field(description=f"Verticals whose sovereignty fit falls with a site's supply chain. {_NOTE}compliance.csv (assumption)")
    supply_chain: list[SupplyChainPenaltySpec] = Field(description=f"Fit penalty per site attribute value. {_NOTE}supply_chain.csv (assumption)")

    @model_validator(mode="after")
    def _check(self):
        names = [c.name for c in self.certifications]
        if len(set(names)) != len(names):
            fail("certifications", f"names {names} repeat", "unique names")
        for i, r in enumerate(self.buyer_rules):
            if r.certification not in names:
                fail(f"buyer_rules.{i}.certification", f"{r.certification!r} is not a certification", f"one of {names}")
        for comp, certs in self.competitor_certifications.items():
            bad = [c for c in certs if c not in names]
            if bad:
                fail(f"competitor_certifications.{comp}", f"{bad} are not certifications", f"names of {names}")
        if any(v < 0 for v in self.buyer_countries.values()) or abs(sum(self.buyer_countries.values()) - 1.0) > 1e-9:
            fail("buyer_countries", f"shares {self.buyer_countries} are negative or do not sum to 1", "shares >= 0 summing to 1")
        keys = [(p.attribute, p.value) for p in self.supply_chain]
        if len(set(keys)) != len(keys):
            fail("supply_chain", f"(attribute, value) pairs {keys} repeat", "each pair once")
        return self

    def catalogue(self) -> dict[str, CertificationSpec]:
        return {c.name: c for c in self.certifications}


def _csv(name: str) -> list[dict[str, str]]:
    with open(model_file("market", name), newline="") as f:
        return list(csv.DictReader(f))


@functools.lru_cache(maxsize=1)
def _defaults() -> dict[str, Any]:
    scal = {r["key"]: parse_value(r["value"]) for r in _csv("compliance.csv")}
    return {
        "gate": scal["gate"],
        "tenant_residency": scal["tenant_residency"],
        "certifications": [{"name": r["certification"], "one_off_eur": float(r["one_off_eur"]),
                            "yearly_eur": float(r["yearly_eur"]), "months_to_obtain": int(r["months_to_obtain"])}
                           for r in _csv("certifications.csv")],
        "buyer_rules": [{"vertical": r["vertical"], "country": r["country"], "certification": r["certification"]}
                        for r in _csv("buyer_rules.csv")],
        "buyer_countries": {r["country"]: float(r["share"]) for r in _csv("buyer_countries.csv")},
        "competitor_certifications": {r["competitor"]: [c for c in r["certifications"].split(";") if c]
                                      for r in _csv("competitor_certifications.csv")},
        "ai_act_one_off_eur_per_model": float(scal["ai_act_one_off_eur_per_model"]),
        "ai_act_yearly_eur_per_model": float(scal["ai_act_yearly_eur_per_model"]),
        "dora_yearly_eur_per_finance_contract": float(scal["dora_yearly_eur_per_finance_contract"]),
        "strict_verticals": [v for v in str(scal["strict_verticals"]).split(";") if v],
        "supply_chain": [{"attribute": r["attribute"], "value": r["value"], "fit_penalty": float(r["fit_penalty"])}
                         for r in _csv("supply_chain.csv")],
    }


def default_compliance_dict() -> dict[str, Any]:
    """The default ``[market.compliance]`` block (fresh dict) as the tables define it."""
    return copy.deepcopy(_defaults())


def merge_compliance(data: Any) -> Any:
    """A partial block completes from the tables (each given key replaces the default's)."""
    if not isinstance(data, dict):
        return data
    return {**default_compliance_dict(), **data}
