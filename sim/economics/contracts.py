"""Capacity contracts: what a GPU at a site costs, and on what terms it comes and goes.

Three kinds (``kind`` in the scenario's ``[[sites.contracts]]``):

* ``rental`` -- GPU-hours from a cloud provider, ``on_demand`` (billed per second here,
  Scaleway bills per minute) or ``committed`` (a term with a discount);
* ``owned_colo`` -- own servers in leased co-location: capex depreciated straight-line over
  a life, colocation rent per contracted kW per month, metered power at EUR/kWh x PUE from
  the GPUs' actual busy/idle draw;
* ``partner_reserved`` -- reserved capacity on a partner cloud (monthly-billed instances).

Each contract (and each later order on it) is a :class:`Tranche`: a number of GPUs at a
site, in force from ``start_s``, earliest end ``start_s + min_term_s``; a release takes
effect after ``notice_s`` and never before the earliest end.  An order arrives after
``lead_time_s``.

This module is pure data and arithmetic (no SimPy, no scenario import) so the schema, the
ledger and the experiments share one set of defaults: :data:`DEFAULTS`, each with a unit
and its source or the word ``assumption``; ``models/economics/README.md`` lists them.  The
default tenant price is not a number here: it is the sovereign list price of
``models/market/parameters.csv`` (one source of truth for single runs, the forecast's
contracts and the market-only mode).
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field

from sim.core.errors import UserError
from sim.core.resources import model_file

HOUR_S = 3600.0
DAY_S = 86400.0
#: A billing month: 730 h (= 8760 h / 12), the convention OVHcloud uses for its
#: "monthly = 730 x hourly" comparison (models/economics/gpu_prices.csv).
MONTH_S = 730.0 * HOUR_S
YEAR_S = 8760.0 * HOUR_S


@dataclass(frozen=True)
class Default:
    value: float
    unit: str
    source: str


#: The sovereign list price has one home: the market table (block ``sovereign``), which the
#: market layer's contracts use; single runs' default tenant price reads the same rows.
LIST_PRICE_TABLE = ("market", "parameters.csv")


def _list_price(key: str) -> float:
    """``key`` of block ``sovereign`` in models/market/parameters.csv (EUR per 1M tokens)."""
    with open(model_file(*LIST_PRICE_TABLE), newline="") as f:
        for row in csv.DictReader(f):
            if row["block"] == "sovereign" and row["key"] == key:
                return float(row["value"])
    raise KeyError(f"models/market/parameters.csv has no sovereign row {key!r}")


# Every default number used by contracts, ledger, faults and capacity policy. Rows of
# models/economics/*.csv are cited by their `item` text.
DEFAULTS: dict[str, Default] = {
    # ---------------------------------------------------------------- rental
    "rent_on_demand_eur_per_gpu_h": Default(
        3.16635, "EUR/GPU-h",
        "gpu_prices.csv 'Scaleway H100-SXM-8-80G (8x H100 SXM) on-demand, fr-par-2' "
        "25.3308 EUR/instance-h / 8 GPUs (checked 2026-09-26, secondary transcription)"),
    "rent_committed_discount": Default(
        0.26, "share of on-demand",
        "gpu_prices.csv 'DigitalOcean H100 GPU Droplet on-demand vs 12-month reserved' "
        "(4.41 -> 3.26 USD, -26%); other rows: Civo -10%, GCP 1-yr -31%, Nebius 'up to -35%'"),
    "rent_committed_min_term_s": Default(
        YEAR_S, "s", "gpu_prices.csv DigitalOcean/Civo rows: 12-month reserved terms"),
    "rent_committed_notice_s": Default(
        MONTH_S, "s", "assumption: one billing month's notice at the end of a committed term"),
    "rent_on_demand_lead_time_s": Default(
        HOUR_S, "s", "assumption: an hour to get on-demand instances in an EU region"),
    "rent_committed_lead_time_s": Default(
        7 * DAY_S, "s", "assumption: a week to sign and provision a committed reservation"),
    # ---------------------------------------------------------------- partner reserved
    "partner_eur_per_gpu_h": Default(
        1940.0 / 730.0, "EUR/GPU-h",
        "gpu_prices.csv 'OVHcloud h100-380 (1x H100 80GB) Public Cloud GPU, monthly billing' "
        "EUR 1,940/month / 730 h = 2.6575"),
    "partner_min_term_s": Default(
        MONTH_S, "s", "gpu_prices.csv OVHcloud monthly billing row: a one-month commitment"),
    "partner_notice_s": Default(
        0.0, "s", "assumption: monthly billing ends at the end of the month, no extra notice"),
    "partner_lead_time_s": Default(
        14 * DAY_S, "s", "assumption: two weeks to reserve a block on a partner cloud"),
    # ---------------------------------------------------------------- owned in colo
    "own_gpu_card_eur": Default(
        317000.0 * 0.86 / 8.0, "EUR/GPU",
        "gpu_prices.csv 'Thinkmate HGX H100 8-GPU server (8x H100 SXM5 80GB with InfiniBand cards) quotation' "
        "USD 317,000 / 8 GPUs x 0.86 EUR/USD (fx.csv): one H100 SXM's share of an 8-GPU HGX server, its host "
        "included (SXM modules are sold only inside HGX boards; the PCIe card price, gpu_prices.csv "
        "'NVIDIA H100 PCIe 80GB card, EU B2B price', is a different product)"),
    "own_server_overhead_share": Default(
        0.0, "share of GPU cost",
        "gpu_prices.csv 'Thinkmate HGX H100 8-GPU server (8x H100 SXM5 80GB with InfiniBand cards) quotation': "
        "the server price already includes the host (CPUs, RAM, NICs, chassis), so nothing is added"),
    "own_life_years": Default(
        4.0, "years", "assumption: straight-line depreciation over 4 years, no resale value"),
    "own_lead_time_s": Default(
        12 * 7 * DAY_S, "s", "assumption: 12 weeks from order to servers racked and burnt in"),
    "colo_eur_per_kw_month": Default(
        155.0, "EUR/kW/month",
        "colocation.csv 'Frankfurt colocation rate' 130-180 EUR/kW/month, midpoint "
        "(tertiary market guide; no FLAP wholesale figure recorded)"),
    "colo_kw_per_gpu": Default(
        10.2 / 8.0, "kW/GPU",
        "power.csv 'NVIDIA DGX H100 system max power' 10.2 kW / 8 GPUs: colo contracts bill "
        "the provisioned (maximum) power"),
    "colo_min_term_s": Default(
        3 * YEAR_S, "s", "assumption: a 3-year co-location contract"),
    "colo_notice_s": Default(
        6 * MONTH_S, "s", "assumption: six months' notice to leave a colocation contract"),
    "busy_w_per_gpu": Default(
        7500.0 / 8.0, "W/GPU",
        "power.csv DGX H100 row note: 'typical 6.5-8.5 kW under load' (supercluster.blog), "
        "midpoint 7.5 kW / 8 GPUs, host included"),
    "idle_w_per_gpu": Default(
        60.0, "W/GPU",
        "power.csv 'Measured whole-server draw, 2x H100 NVL + 2x Xeon Gold 6426Y, vLLM Llama-8B batch 256' "
        "note: idle ~120 W (GPUs+CPUs) "
        "for 2 GPUs (HotCarbon 2025); an H100 SXM node likely idles higher: low estimate"),
    "pue": Default(
        1.58, "ratio",
        "power.csv 'Data-centre PUE, global average (Uptime Institute survey 2025)' note: "
        "colocation/enterprise 1.58-1.80 "
        "(Uptime 2025 via secondary); lower end"),
    "power_eur_per_kwh_FR": Default(
        0.1534, "EUR/kWh",
        "electricity.csv 'France non-household electricity, band IC 500-1,999 MWh, excl. VAT' "
        "2025-S2 (Eurostat nrg_pc_205 via secondary); band ID (a 1 MW hall) not retrieved"),
    "power_eur_per_kwh_DE": Default(
        0.178, "EUR/kWh",
        "electricity.csv 'Germany industrial electricity price, 12-month average' "
        "(LOW CONFIDENCE, not Eurostat; Eurostat DE non-household not found)"),
    "power_eur_per_kwh_other": Default(
        0.2179, "EUR/kWh",
        "electricity.csv 'EU-27 non-household electricity, band IB 20-499 MWh, excl. VAT' 2025-S2"),
    # ---------------------------------------------------------------- revenue, SLA credits
    "price_input_eur_per_mtok": Default(
        _list_price("price_eur_per_mtok_in"), "EUR/1M input tokens",
        "api_prices.csv 'OVHcloud AI Endpoints (EU-hosted) | Mixtral-8x7B-Instruct-v0.1 | input' "
        "0.7 USD x 0.86 EUR/USD (fx.csv 'EUR per USD, conversion of USD list prices'): the sovereign "
        "list price, read from its one home, models/market/parameters.csv (sovereign, price_eur_per_mtok_in)"),
    "price_output_eur_per_mtok": Default(
        _list_price("price_eur_per_mtok_out"), "EUR/1M output tokens",
        "api_prices.csv 'OVHcloud AI Endpoints (EU-hosted) | Mixtral-8x7B-Instruct-v0.1 | output' "
        "0.7 USD x 0.86 EUR/USD: read from models/market/parameters.csv (sovereign, price_eur_per_mtok_out)"),
    "sla_credit_share_below_target": Default(
        0.10, "share of month revenue",
        "assumption: 10% service credit when monthly attainment is under target (sla.csv: "
        "Azure OpenAI SLA pays service credits only; its schedule not recorded)"),
    "sla_credit_share_below_95": Default(
        0.25, "share of month revenue",
        "assumption: 25% service credit when monthly attainment is under 0.95"),
    # ---------------------------------------------------------------- public capacity (EU AI gigafactories)
    "public_capacity_cost_share": Default(
        0.5, "share of an owned GPU-hour's all-in cost",
        "assumption: no per-GPU-hour price of EuroHPC AI factory / gigafactory capacity is published "
        "(models/market/public_sector.csv: free for research and SMEs, pay-per-use otherwise); priced at cost "
        "net of the EU's contribution of up to 50% of acquisition and operating costs (Regulation (EU) 2024/1732, "
        "public_sector.csv), i.e. 0.5 x an owned H100 in colo at full load (owned_terms().cost_eur_per_gpu_h(1))"),
}


def d(name: str) -> float:
    """The default value of ``name`` (see :data:`DEFAULTS`)."""
    return DEFAULTS[name].value


def own_capex_eur_per_gpu() -> float:
    return d("own_gpu_card_eur") * (1.0 + d("own_server_overhead_share"))


def power_price_default(jurisdiction: str | None) -> float:
    key = f"power_eur_per_kwh_{jurisdiction}" if jurisdiction else ""
    return DEFAULTS[key].value if key in DEFAULTS else d("power_eur_per_kwh_other")


# ====================================================================== terms
@dataclass(frozen=True)
class Terms:
    """The cost and terms of one contract, resolved from the scenario (all defaults applied).

    Fixed charges are linear in GPUs and time: ``fixed_eur_per_gpu_s`` maps a cost line
    (``rental``, ``partner``, ``depreciation``, ``colocation``) to EUR per GPU-second.
    Power (owned only) is metered: ``busy_w_per_gpu`` / ``idle_w_per_gpu`` x ``pue`` x
    ``power_eur_per_kwh``.
    """

    kind: str
    name: str
    fixed_eur_per_gpu_s: dict[str, float]
    lead_time_s: float
    min_term_s: float
    notice_s: float
    metered_power: bool = False
    busy_w_per_gpu: float = 0.0
    idle_w_per_gpu: float = 0.0
    pue: float = 1.0
    power_eur_per_kwh: float = 0.0
    capex_eur_per_gpu: float = 0.0  # owned: written off at release (book value left)
    life_s: float = math.inf

    @property
    def fixed_eur_per_gpu_h(self) -> float:
        return sum(self.fixed_eur_per_gpu_s.values()) * HOUR_S

    def power_eur_per_gpu_s(self, busy_share: float) -> float:
        if not self.metered_power:
            return 0.0
        w = busy_share * self.busy_w_per_gpu + (1.0 - busy_share) * self.idle_w_per_gpu
        return w * self.pue / 1000.0 / HOUR_S * self.power_eur_per_kwh

    def cost_eur_per_gpu_h(self, busy_share: float) -> float:
        """All-in cost of one GPU-hour at a given busy share (fixed + power)."""
        return self.fixed_eur_per_gpu_h + self.power_eur_per_gpu_s(busy_share) * HOUR_S


def rental_terms(name: str = "rental", term: str = "on_demand", price_eur_per_gpu_h: float | None = None,
                 committed_discount: float | None = None, lead_time_s: float | None = None,
                 min_term_s: float | None = None, notice_s: float | None = None) -> Terms:
    price = d("rent_on_demand_eur_per_gpu_h") if price_eur_per_gpu_h is None else price_eur_per_gpu_h
    if term == "committed":
        disc = d("rent_committed_discount") if committed_discount is None else committed_discount
        price = price * (1.0 - disc)
        lt = d("rent_committed_lead_time_s") if lead_time_s is None else lead_time_s
        mt = d("rent_committed_min_term_s") if min_term_s is None else min_term_s
        nt = d("rent_committed_notice_s") if notice_s is None else notice_s
    elif term == "on_demand":
        lt = d("rent_on_demand_lead_time_s") if lead_time_s is None else lead_time_s
        mt = 0.0 if min_term_s is None else min_term_s
        nt = 0.0 if notice_s is None else notice_s
    else:
        raise ValueError(f"rental term must be on_demand or committed, got {term!r}")
    return Terms("rental", name, {"rental": price / HOUR_S}, lt, mt, nt)


def partner_terms(name: str = "partner", price_eur_per_gpu_h: float | None = None,
                  lead_time_s: float | None = None, min_term_s: float | None = None,
                  notice_s: float | None = None) -> Terms:
    price = d("partner_eur_per_gpu_h") if price_eur_per_gpu_h is None else price_eur_per_gpu_h
    return Terms("partner_reserved", name, {"partner": price / HOUR_S},
                 d("partner_lead_time_s") if lead_time_s is None else lead_time_s,
                 d("partner_min_term_s") if min_term_s is None else min_term_s,
                 d("partner_notice_s") if notice_s is None else notice_s)


def owned_terms(name: str = "owned", jurisdiction: str | None = None, capex_eur_per_gpu: float | None = None,
                life_years: float | None = None, colo_eur_per_kw_month: float | None = None,
                colo_kw_per_gpu: float | None = None, power_eur_per_kwh: float | None = None,
                pue: float | None = None, busy_w_per_gpu: float | None = None,
                idle_w_per_gpu: float | None = None, lead_time_s: float | None = None,
                min_term_s: float | None = None, notice_s: float | None = None) -> Terms:
    capex = own_capex_eur_per_gpu() if capex_eur_per_gpu is None else capex_eur_per_gpu
    life_s = (d("own_life_years") if life_years is None else life_years) * YEAR_S
    colo = d("colo_eur_per_kw_month") if colo_eur_per_kw_month is None else colo_eur_per_kw_month
    kw = d("colo_kw_per_gpu") if colo_kw_per_gpu is None else colo_kw_per_gpu
    busy = d("busy_w_per_gpu") if busy_w_per_gpu is None else busy_w_per_gpu
    idle = d("idle_w_per_gpu") if idle_w_per_gpu is None else idle_w_per_gpu
    if busy < idle:
        raise UserError(f"contract {name!r}: busy_w_per_gpu ({busy:g} W{'' if busy_w_per_gpu is not None else ', default'}) "
                        f"is below idle_w_per_gpu ({idle:g} W{'' if idle_w_per_gpu is not None else ', default'}); "
                        "allowed: busy_w_per_gpu >= idle_w_per_gpu")
    return Terms(
        "owned_colo", name,
        {"depreciation": capex / life_s, "colocation": colo * kw / MONTH_S},
        d("own_lead_time_s") if lead_time_s is None else lead_time_s,
        d("colo_min_term_s") if min_term_s is None else min_term_s,
        d("colo_notice_s") if notice_s is None else notice_s,
        metered_power=True,
        busy_w_per_gpu=busy,
        idle_w_per_gpu=idle,
        pue=d("pue") if pue is None else pue,
        power_eur_per_kwh=power_price_default(jurisdiction) if power_eur_per_kwh is None else power_eur_per_kwh,
        capex_eur_per_gpu=capex, life_s=life_s,
    )


def public_capacity_terms(name: str = "public_capacity", price_eur_per_gpu_h: float | None = None,
                          lead_time_s: float = 0.0) -> Terms:
    """Public AI capacity (the EU AI gigafactories, InvestAI): GPU-hours at a public price
    (default :data:`DEFAULTS` ``public_capacity_cost_share`` x an owned GPU-hour's all-in cost
    at full load), billed on the ``rental`` cost line, available ``lead_time_s`` after t = 0,
    no minimum term.  Who may use it is the caller's gate (``sim.forecast.public_capacity``)."""
    price = (d("public_capacity_cost_share") * owned_terms().cost_eur_per_gpu_h(1.0)
             if price_eur_per_gpu_h is None else price_eur_per_gpu_h)
    return Terms("public_capacity", name, {"rental": price / HOUR_S}, lead_time_s, 0.0, 0.0)


def terms_from_spec(spec, jurisdiction: str | None = None) -> Terms:
    """Resolve a scenario contract block (``sim.scenario.*ContractSpec``) to :class:`Terms`."""
    if spec.kind == "rental":
        return rental_terms(spec.name, spec.term, spec.price_eur_per_gpu_h, spec.committed_discount,
                            spec.lead_time_s, spec.min_term_s, spec.notice_s)
    if spec.kind == "partner_reserved":
        return partner_terms(spec.name, spec.price_eur_per_gpu_h, spec.lead_time_s, spec.min_term_s,
                             spec.notice_s)
    if spec.kind == "owned_colo":
        return owned_terms(spec.name, jurisdiction, spec.capex_eur_per_gpu, spec.life_years,
                           spec.colo_eur_per_kw_month, spec.colo_kw_per_gpu, spec.power_eur_per_kwh,
                           spec.pue, spec.busy_w_per_gpu, spec.idle_w_per_gpu, spec.lead_time_s,
                           spec.min_term_s, spec.notice_s)
    raise ValueError(f"unknown contract kind {spec.kind!r}")


@dataclass(frozen=True)
class BlendedTerms:
    """The GPU-weighted average cost of several contracts at one site (same interface as
    :class:`Terms` for cost arithmetic: ``fixed_eur_per_gpu_s``, ``fixed_eur_per_gpu_h``,
    ``power_eur_per_gpu_s``, ``cost_eur_per_gpu_h``)."""

    parts: tuple[tuple[Terms, float], ...]   # (terms, share of the site's GPUs)

    @property
    def fixed_eur_per_gpu_s(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for t, w in self.parts:
            for line, rate in t.fixed_eur_per_gpu_s.items():
                out[line] = out.get(line, 0.0) + w * rate
        return out

    @property
    def fixed_eur_per_gpu_h(self) -> float:
        return sum(w * t.fixed_eur_per_gpu_h for t, w in self.parts)

    def power_eur_per_gpu_s(self, busy_share: float) -> float:
        return sum(w * t.power_eur_per_gpu_s(busy_share) for t, w in self.parts)

    def cost_eur_per_gpu_h(self, busy_share: float) -> float:
        return self.fixed_eur_per_gpu_h + self.power_eur_per_gpu_s(busy_share) * HOUR_S


def default_terms_for(scenario, site) -> Terms | BlendedTerms:
    """Cost terms of a GPU at ``site`` (a ``SiteSpec`` or None): on-demand rental when the
    site has no contracts, the contract's terms when it has one, else the GPU-weighted blend
    of its contracts.  Used by the monthly forecast (``sim.forecast``)."""
    contracts = list(site.contracts) if site is not None else []
    jur = site.jurisdiction if site is not None else None
    if not contracts:
        return rental_terms("on_demand", "on_demand")
    terms = [(terms_from_spec(c, jur), c.gpus) for c in contracts]
    if len(terms) == 1:
        return terms[0][0]
    total = sum(g for _, g in terms)
    if total == 0:
        return BlendedTerms(tuple((t, 1.0 / len(terms)) for t, _ in terms))
    return BlendedTerms(tuple((t, g / total) for t, g in terms))


# ====================================================================== tranches
_next_id = [0]


@dataclass(eq=False)
class Tranche:
    """``gpus`` GPUs at ``site`` under ``terms``, billed from ``start_s`` until ``end_s``.

    ``ordered_s``: when it was ordered (``start_s = ordered_s + lead_time_s``).  A release
    asked at ``t`` takes effect at :meth:`release_effective_s`."""

    site: str
    terms: Terms
    gpus: int
    start_s: float
    ordered_s: float | None = None
    end_s: float | None = None
    release_asked_s: float | None = None
    id: int = field(default_factory=lambda: _bump())

    @property
    def earliest_end_s(self) -> float:
        return self.start_s + self.terms.min_term_s

    def release_effective_s(self, asked_s: float) -> float:
        return max(asked_s + self.terms.notice_s, self.earliest_end_s)

    def active(self, t: float) -> bool:
        return self.start_s <= t and (self.end_s is None or t < self.end_s)

    @property
    def key(self) -> str:
        return f"{self.terms.name}#{self.id}"


def _bump() -> int:
    _next_id[0] += 1
    return _next_id[0]


def break_even_utilisation(rent: Terms, own: Terms) -> float:
    """Average busy share of an owned fleet above which it costs less per *useful* GPU-hour
    than renting exactly the GPU-hours needed (perfectly elastic rental, idle rented GPUs
    released at once).

    Own, per GPU-hour of capacity: ``F + P(u)`` where ``F`` is the fixed charge and
    ``P(u) = u*Pb + (1-u)*Pi`` the power.  Per useful GPU-hour: ``(F + P(u))/u``.
    Elastic rental per useful GPU-hour: ``R``.  Equal when ``F + Pi + u(Pb - Pi) = u R``:
    ``u* = (F + Pi) / (R - Pb + Pi)``; ``inf`` if renting never loses."""
    f = own.fixed_eur_per_gpu_h
    pb = own.power_eur_per_gpu_s(1.0) * HOUR_S
    pi = own.power_eur_per_gpu_s(0.0) * HOUR_S
    r = rent.cost_eur_per_gpu_h(1.0)
    denom = r - pb + pi
    if denom <= 0:
        return math.inf
    return (f + pi) / denom
