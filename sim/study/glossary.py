"""Human labels, units and formats for the keys a person reads: summary keys, the forecast's
monthly columns and the market's parameter keys.

One table (``TERMS``: key -> :class:`Term`) used by the HTML report, the figures and the
tornado's bar labels, so the same quantity carries the same name everywhere.  Keys are the
exact names in ``summary.json`` / ``monthly.csv`` (docs/metrics.md defines each).

>>> label("request_utilisation")
'Request utilisation'
>>> format_value("gross_margin_share", 0.798)
'79.8 %'
>>> format_value("tokens", 8.381e12)
'8.38 trillion'
>>> label("workloads.chat.ttft_s.p99")
'chat: TTFT p99'
>>> label("site_par_1_request_utilisation")
'site par_1: Request utilisation'
>>> parameter_label("vertical", "rfp_growth_per_year")
'buyers: RFP growth per year (factor)'
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Term:
    label: str
    unit: str = ""      # what the value is measured in, for axis labels ("" = a count or a label)
    fmt: str = "num"    # pct | eur | eur_mtok | s | int | big | rate | num | text


TERMS: dict[str, Term] = {
    # load: request utilisation first (a load measure), busy share last (not one)
    "request_utilisation": Term("Request utilisation", "share of request capacity", "pct"),
    "request_utilisation_mean": Term("Request utilisation, mean over months", "share of request capacity", "pct"),
    "throughput_utilisation": Term("Throughput utilisation", "share of decode capacity", "pct"),
    "busy_share": Term("Busy share (time with any request in flight; not a load measure)", "share of time", "pct"),
    "gpu_utilisation": Term("Busy share (time with any request in flight; not a load measure)", "share of time", "pct"),
    "gpu_utilisation_mean": Term("Busy share, mean over months (not a load measure)", "share of time", "pct"),
    "utilisation": Term("Busy share (not a load measure)", "share of time", "pct"),
    "kv_occupancy_mean": Term("KV-cache occupancy", "share of KV blocks", "pct"),
    # requests
    "arrivals": Term("Requests arrived", "requests", "int"),
    "completed": Term("Requests completed", "requests", "int"),
    "rejected": Term("Requests rejected", "requests", "int"),
    "in_flight": Term("Requests in flight at the horizon", "requests", "int"),
    "rejected_share": Term("Rejected share", "share of requests", "pct"),
    "requests": Term("Requests", "requests per month", "big"),
    "simulated_requests": Term("Requests simulated", "requests", "int"),
    "throughput_requests_per_s": Term("Completed requests per second", "requests/s", "rate"),
    "throughput_output_tokens_per_s": Term("Output tokens per second", "tokens/s", "rate"),
    "contracted_rate_per_s": Term("Contracted request rate", "requests/s", "rate"),
    "preemptions": Term("Preemptions", "requests", "int"),
    # fleet
    "gpus": Term("GPUs", "GPUs", "int"),
    "gpus_in_force": Term("GPUs under contract", "GPUs", "int"),
    "gpus_ordered": Term("GPUs ordered", "GPUs", "int"),
    "gpus_released": Term("GPUs released", "GPUs", "int"),
    "replicas": Term("Replicas", "replicas", "int"),
    "gpu_hours": Term("GPU-hours", "GPU-hours", "num"),
    # service
    "sla_attainment": Term("SLA attainment", "share of requests", "pct"),
    "sla_attainment_mean": Term("SLA attainment, mean over months", "share of requests", "pct"),
    "sla_target": Term("SLA attainment target", "share of requests", "pct"),
    "ttft_attainment": Term("TTFT target met", "share of requests", "pct"),
    "tpot_attainment": Term("TPOT target met", "share of requests", "pct"),
    "ttft_s": Term("TTFT", "s", "s"),
    "tpot_s": Term("TPOT", "s", "s"),
    "e2e_s": Term("End-to-end latency", "s", "s"),
    "wait_s": Term("Queueing delay", "s", "s"),
    "ttft_p99_s": Term("TTFT p99 (worst window)", "s", "s"),
    "residency_violations": Term("Residency violations", "requests", "int"),
    # money
    "revenue_eur": Term("Revenue", "EUR", "eur"),
    "costs_eur": Term("Costs", "EUR", "eur"),
    "cost_eur": Term("Costs", "EUR", "eur"),
    "sla_credits_eur": Term("SLA credits granted", "EUR", "eur"),
    "capacity_cost_eur": Term("Capacity cost", "EUR", "eur"),
    "power_cost_eur": Term("Power cost", "EUR", "eur"),
    # per site and owned vs leased (sim/forecast/sites.py)
    "owned_cost_eur": Term("Owned capacity cost (depreciation, colocation, power)", "EUR", "eur"),
    "leased_cost_eur": Term("Leased capacity cost (rental, partner)", "EUR", "eur"),
    "gpus_start": Term("GPUs at start", "GPUs", "int"),
    "gpus_end": Term("GPUs at end", "GPUs", "int"),
    "site": Term("Site"),
    "margin_eur": Term("Gross margin", "EUR", "eur"),
    "gross_margin_eur": Term("Gross margin", "EUR", "eur"),
    "margin_share": Term("Gross margin share of revenue", "share of revenue", "pct"),
    "gross_margin_share": Term("Gross margin share of revenue", "share of revenue", "pct"),
    "cost_eur_per_mtok": Term("Cost per million tokens", "EUR per million tokens", "eur_mtok"),
    "tokens": Term("Tokens served", "tokens", "big"),
    # market
    "months": Term("Months", "months", "int"),
    "month": Term("Month", "month", "int"),
    "share": Term("Sovereign market share", "share of contracted demand", "pct"),
    "final_share": Term("Sovereign market share, last month", "share of contracted demand", "pct"),
    "contracts_active": Term("Contracts active", "contracts", "int"),
    "contracts_won": Term("Contracts won", "contracts", "int"),
    "contracts_lost": Term("RFPs lost", "contracts", "int"),
    "contracts_churned": Term("Contracts churned", "contracts", "int"),
    "won": Term("Contracts won", "contracts", "int"),
    "lost": Term("RFPs lost", "contracts", "int"),
    "active": Term("Contracts active at the end", "contracts", "int"),
    "expired": Term("Contracts expired", "contracts", "int"),
    "churned": Term("Contracts churned", "contracts", "int"),
    "renewed": Term("Contracts renewed", "contracts", "int"),
    "backlog_eur": Term("Contracted backlog", "EUR of signed revenue still to come", "eur"),
    "backlog_signed_eur": Term("Backlog signed", "EUR", "eur"),
    "backlog_recognised_eur": Term("Backlog recognised", "EUR", "eur"),
    "backlog_cancelled_eur": Term("Backlog cancelled", "EUR", "eur"),
    "contracts_cancelled": Term("Contracts cancelled (budget shifts)", "contracts", "int"),
    "public_capacity_gpus": Term("Public AI capacity in use", "GPUs", "int"),
    "public_capacity_tenants": Term("Tenants on public AI capacity", "contracts", "int"),
    "public_capacity_cost_eur": Term("Public AI capacity cost", "EUR", "eur"),
    "direct_revenue_eur": Term("Direct revenue", "EUR", "eur"),
    "marketplace_revenue_eur": Term("Marketplace revenue", "EUR", "eur"),
    "marketplace_fee_eur": Term("Marketplace fees", "EUR", "eur"),
    "marketplace_hosting_cost_eur": Term("Marketplace hosting cost", "EUR", "eur"),
    "direct_margin_eur": Term("Direct gross margin", "EUR", "eur"),
    "marketplace_margin_eur": Term("Marketplace gross margin", "EUR", "eur"),
    "marketplace_contracts_active": Term("Marketplace tenants", "contracts", "int"),
    "marketplace_share": Term("Marketplace share of revenue", "", "pct"),
    "channel_migrations": Term("Marketplace tenants moved to direct", "contracts", "int"),
    "seed": Term("Seed", "", "text"),
    "scenario": Term("Scenario", "", "text"),
}

CAPTIONS = {
    "overview": "Left: the fleet's load per time bin as request utilisation (requests completed / the "
                "requests the fleet could complete at full batch) and throughput utilisation (output tokens / "
                "decode capacity), with KV-cache occupancy; the grey dotted line is the busy share (time with "
                "any request in flight), which reads near 100 % at almost any load and is not a load measure. "
                "Middle and right: the distribution of time to first token and time per output token of each "
                "workload over the request sample; dashed lines are the SLA targets.",
    "forecast": "Month by month: revenue, cost and gross margin (top left); SLA attainment against the "
                "strictest attainment target of the tenants' SLA classes (dashed; the one the warnings use) and the fleet's request utilisation when the monthly table "
                "has it (top right); sovereign contracts active, won and lost (bottom left); the sovereign "
                "provider's share of contracted demand (bottom right).",
    # the experiments' figures: the question each answers (README, "Figures")
    "capacity_sweep": "How many H100s does Mixtral need at each load? (64 points x 5 replications).",
    "gpu_generations": "A100 vs H100 vs H200 vs B200 at equal SLA: GPUs, GPU-hours and EUR per million tokens "
                       "(B200: no EUR price in the data).",
    "moe_batching": "Where does Mixtral lose its small-batch advantage over dense 13B/47B models?",
    "fragmentation": "What does residency cost in SLA attainment, utilisation and GPUs?",
    "failure_resilience": "SLA attainment, availability and margin at 1x to 10,000x the Llama 3 GPU/node failure "
                          "rates, requeue preserving vs recomputing tokens (4 replications, 95 % intervals).",
    "lease_vs_own": "Rent GPU-hours or own hardware in leased colocation? The break-even utilisation.",
    "autoscale": "Fixed fleets or a capacity policy over a weekday of finance demand: GPUs in the fleet hour by "
                 "hour, SLA attainment against cost (2 replications).",
    "channels": "Marketplace vs direct: 36-month gross margin, sovereign share of contracted demand and marketplace "
                "share of revenue as more buyers are bound to a hyperscaler platform: the offer not listed, listed and "
                "hosted on the platform's GPUs, or listed and served on the sovereign fleet (16-GPU forecast, "
                "paired seeds, 95 % CI).",
    "competitors": "What do competitor capacity limits, SLA variability and a price response to share loss do to "
                   "the 36-month margin and the sovereign share? Each mechanism alone and all together against static "
                   "competitors (16-GPU forecast, paired seeds, 95 % CI).",
    "public_sector": "What do public-sector anchors do to revenue visibility and risk? Contracted backlog, backlog "
                     "coverage (backlog / monthly revenue) and 36-month margin without anchors, with anchors, with "
                     "cancellation and slip risk, and with public AI capacity (16-GPU forecast, paired seeds, 95 % CI).",
    "sovereignty_gap": "Margin, market share and utilisation if hyperscalers close the sovereignty gap fast, or "
                       "start a price war (full forecast, 4 replications).",
    "tornado": "Which market assumptions move the 36-month gross margin most? Change of the cumulative margin "
               "with each parameter at its low and high end, one at a time (paired replications, 95 % intervals).",
}


def caption(stem: str) -> str:
    """What the figure named ``stem`` shows (the stem itself, humanised, if unknown)."""
    return CAPTIONS.get(stem, stem.replace("_", " ").capitalize())


_STATS = {"mean": "mean", "p50": "p50", "p90": "p90", "p99": "p99",
          # a cells run's estimates: {value, ci_low, ci_high}
          "value": "", "ci_low": "(95 % CI low)", "ci_high": "(95 % CI high)"}
_GROUPS = {"workloads", "deployments", "sites", "verticals"}
_PREFIX = {"contracts": "", "economics": ""}

# market parameter keys (models/market/parameters.csv), for the tornado's bar labels
PARAMETERS: dict[str, str] = {
    "price_eur_per_mtok_in": "price per 1M input tokens (EUR)",
    "price_eur_per_mtok_out": "price per 1M output tokens (EUR)",
    "asc": "brand constant (utility)",
    "sla_attainment": "SLA attainment buyers expect",
    "sla_attainment_prior": "SLA attainment buyers assume at first",
    "price_response": "price response to hyperscaler cuts",
    "price_cut_rate_per_year": "price cuts per year",
    "price_cut_factor_min": "deepest price cut (factor)",
    "price_cut_factor_max": "shallowest price cut (factor)",
    "shortage_rate_per_year": "capacity shortages per year",
    "shortage_mean_months": "shortage length (months)",
    "fit_start": "sovereignty fit at the start",
    "fit_end": "sovereignty fit once the gap is closed",
    "midpoint_month": "month the gap is half closed",
    "width_months": "gap-closing time scale (months)",
    "rfp_rate_per_month": "RFPs per month",
    "rfp_growth_per_year": "RFP growth per year (factor)",
    "rate_per_s_median": "contract size (median requests/s)",
    "rate_per_s_sigma": "contract size spread (log sd)",
    "prompt_tokens_mean": "prompt tokens per request",
    "output_tokens_mean": "output tokens per request",
    "procurement_months_min": "shortest procurement (months)",
    "procurement_months_max": "longest procurement (months)",
    "term_months": "contract term (months)",
    "beta_price": "price weight in buyer choice",
    "beta_sla_per_pp": "SLA weight in buyer choice (per pp)",
    "beta_sovereignty": "sovereignty weight in buyer choice",
    "churn_base_prob": "churn probability at expiry",
    "churn_per_pp_shortfall": "added churn per pp of SLA shortfall",
    "need_end_prob": "probability the need ends at expiry",
    "initial_contracts": "contracts in force at the start",
    "sla.attainment_target": "SLA attainment target",
    "sla.ttft_s": "TTFT target (s)",
    "sla.tpot_s": "TPOT target (s)",
    "gpu_hour_eur": "GPU-hour price (EUR)",
    "gpus_per_lease": "GPUs per lease",
    "lease_lead_months": "lease lead time (months)",
    "lease_term_months": "lease term (months)",
    "min_gpus": "minimum GPUs",
    "output_tokens_per_gpu_s": "output tokens per GPU-second",
    "target_utilisation": "target utilisation",
    "retender_on_churn": "re-tender on churn",
    "price_factor": "vertical price factor on the list price",
    "size_basis": "contract size basis (tokens or requests)",
    "reference_tokens_per_request": "tokens per request of the contract-size unit",
    # block public_sector (models/market/parameters_public_sector.csv)
    "anchor_share": "share of awards that are anchors",
    "anchor_size_factor": "anchor size (x median contract)",
    "anchor_size_sigma": "anchor size spread (log sd)",
    "anchor_term_months": "anchor term (months)",
    "price_discount": "public price discount",
    "cancel_rate_per_year": "budget-shift cancellations per year",
    "slip_prob": "probability a start slips",
    "slip_mean_months": "mean start slip (months)",
    "capacity_gpus_max": "public AI capacity quota (GPUs)",
    "capacity_lead_months": "public AI capacity lead time (months)",
    "capacity_attainment": "SLA attainment on public AI capacity",
    # block channel (models/market/parameters_channels.csv)
    "listed": "listed on the marketplace",
    "reach": "buyers bound to the platform (share of RFPs)",
    "fee_share": "marketplace fee (share of revenue)",
    "hosted": "marketplace traffic on the platform's GPUs",
    "hosting_eur_per_mtok": "hosting fee (EUR per 1M tokens)",
    "hosted_attainment": "SLA attainment on the platform",
    "migrate_prob_per_year": "yearly migration to direct (new tenant)",
    "lockin_halflife_years": "lock-in half-life (years of contract age)",
    # block competition (models/market/parameters_competition.csv)
    "window_months": "price-response window (months)",
    "capacity_rfp_months": "capacity at t = 0 (months of RFP volume)",
    "capacity_growth_per_year": "capacity growth (x per year)",
    "sla_concentration": "SLA draw concentration",
    "elasticity": "price response to share loss (elasticity)",
    "price_floor": "price-response floor (x t = 0 price)",
}
_BLOCKS = {"sovereign": "sovereign offer", "competitor": "competitors", "vertical": "buyers",
           "fallback": "fluid fleet", "market": "market", "public_sector": "public sector",
           "channel": "marketplaces", "competition": "competitor capacity and response"}


_SITE_COLUMN = re.compile(r"^site_(.+)_(gpus|request_utilisation|cost_eur)$")


def _site_column(key: str) -> tuple[str, str] | None:
    """``site_<site>_<metric>`` (a forecast's per-site column) -> (site, metric)."""
    mt = _SITE_COLUMN.match(key)
    return (mt.group(1), mt.group(2)) if mt else None


def _humanise(key: str) -> str:
    words = key.replace("_eur", " (EUR)").replace("_s", " (s)").replace("_", " ")
    return words[:1].upper() + words[1:]


def term(key: str) -> Term:
    """The :class:`Term` of a key (its last meaningful part for a dotted path)."""
    site_col = _site_column(key)
    if site_col is not None:
        return TERMS[site_col[1]]
    parts = key.split(".")
    while parts and (parts[-1] in _STATS):
        parts.pop()
    last = parts[-1] if parts else key
    return TERMS.get(key) or TERMS.get(last) or Term(_humanise(last))


def label(key: str) -> str:
    """The human label of a summary key, monthly column or dotted path
    (``workloads.chat.ttft_s.p99`` -> ``chat: TTFT p99``)."""
    if key in TERMS:
        return TERMS[key].label
    site_col = _site_column(key)
    if site_col is not None:
        return f"site {site_col[0]}: {TERMS[site_col[1]].label}"
    parts = key.split(".")
    owner = ""
    if len(parts) >= 3 and parts[0] in _GROUPS:
        owner, parts = parts[1], parts[2:]
    elif parts[0] in _PREFIX and len(parts) > 1:
        parts = parts[1:]
    stats = []
    while len(parts) > 1 and parts[-1] in _STATS:
        stats.insert(0, parts.pop())
    base = ".".join(parts)
    text = TERMS[base].label if base in TERMS else _humanise(base)
    for stat in stats:
        if _STATS[stat]:
            text = f"{text} {_STATS[stat]}"
    return f"{owner}: {text}" if owner else text


def axis_label(key: str) -> str:
    """``label (unit)`` for an axis."""
    t = term(key)
    unit = {"pct": "%"}.get(t.fmt, t.unit)
    return f"{label(key)} ({unit})" if unit else label(key)


def _big(v: float) -> str:
    a = abs(v)
    for div, word in ((1e12, "trillion"), (1e9, "billion"), (1e6, "million")):
        if a >= div:
            return f"{v / div:.3g} {word}" if a / div < 100 else f"{v / div:,.0f} {word}"
    return f"{v:,.0f}"


def format_value(key: str, value: Any) -> str:
    """The value of ``key`` as a person reads it: shares as percentages, EUR with separators,
    seconds as ms or s, large counts in words."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    v = float(value)
    if math.isnan(v):
        return "-"
    fmt = term(key).fmt
    if fmt == "pct":
        return f"{v * 100:.1f} %"
    if fmt == "eur":
        if v == 0:
            return "EUR 0"
        return f"EUR {v:,.2f}" if abs(v) < 1000 else f"EUR {v:,.0f}"
    if fmt == "eur_mtok":
        return f"EUR {v:.3f}"
    if fmt == "s":
        return f"{v * 1000:.0f} ms" if abs(v) < 1 else f"{v:.2f} s"
    if fmt == "int":
        return f"{int(round(v)):,}"
    if fmt == "big":
        return _big(v)
    if fmt == "rate":
        return f"{v:,.1f}"
    if v.is_integer() and abs(v) < 1e15:
        return f"{int(v):,}"
    return f"{v:,.4g}" if abs(v) < 1000 else f"{v:,.1f}"


def parameter_label(block: str, key: str) -> str:
    """A market parameter (``block``, ``key`` of models/market/parameters.csv) as a bar label:
    ``sovereignty.*.midpoint_month`` of a competitor -> ``competitors: month the gap is half closed``."""
    last = key
    scope = ""
    if key.startswith("sovereignty."):
        bits = key.split(".")
        last = bits[-1] if len(bits) > 2 else "sovereignty"
        scope = "" if len(bits) < 3 or bits[1] == "*" else f", {bits[1].replace('_', ' ')}"
    text = PARAMETERS.get(key) or PARAMETERS.get(last) or _humanise(last).lower()
    if last == "sovereignty":
        text = "sovereignty fit"
    where = _BLOCKS.get(block, block)
    return f"{where}: {text}{scope}"
