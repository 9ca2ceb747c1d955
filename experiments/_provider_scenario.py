"""Write the packaged scenario ``provider-day`` (sim/scenarios/provider-day.toml).

One weekday (Wednesday, UTC) of a sovereign provider at its month-36 scale: 10,240 GPUs over
four EU sites, five models (a small dense model, a Mixtral-class MoE, a 123B dense flagship,
a large MoE, and a DeepSeek-V3-class fine-grained MoE served with expert and attention data
parallelism on 8-GPU replicas, extrapolated) on three GPU generations, every vertical.

How demand is sized (the sources report tens of billions of tokens a day for a public API
alone; a sovereign cloud of this size also carries dedicated tenant deployments and larger
models, so the public-API volume cannot size the fleet): each model's tenants together
are first sized in proportion to ``VERTICAL_SHARE`` (assumption) of the fluid request
capacity (:func:`sim.serving.fluid.replica_request_capacity`) of the deployments their
residency allows; then every rate is scaled by one factor so that the busiest cell (cells
of 16 replicas, as ``sovsim run provider-day`` simulates them) in its busiest hour of the day
(the vertical profiles of docs/demand.md) is offered ``PEAK_LOAD`` of the capacity of one
model's replicas there. The
French sites carry healthcare and public-sector tenants on top of their share of the rest,
so they are the busiest; other sites run lighter. Each workload's
lengths, SLA class and residency rule are its vertical's defaults (docs/demand.md). This
script prints the tokens per day the scenario implies.

The same script writes ``provider`` (sim/scenarios/provider.toml), the 36-month forecast
whose month-36 fleet ``provider-day`` is: the same sites, models, GPUs and prices, starting
at ``START_SHARE`` of provider-day's replicas per site (2,801 GPUs, half of par-1's and 15 % of
the others') and growing under a threshold capacity policy; its tenants come from the RFP
market (models/market/parameters.csv) with every vertical's contract size scaled by one factor
so that the month-0 contracts, in their busiest hour of the week, offer ``START_LOAD`` of the
fluid request capacity of the busiest (site, model) of the month-0 fleet (how: the market alone
is run to the end of month 0 with the scenario's seed and its tenants are those in force at
mid-month, as the forecast takes them; contract sizes scale linearly with the median).

    python experiments/_provider_scenario.py      # rewrites provider-day.toml and provider.toml
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402
import simpy  # noqa: E402

from sim.core.resources import model_file  # noqa: E402

from sim.demand.verticals import vertical_workload  # noqa: E402
from sim.perf.roofline import is_extrapolated, make_step_model  # noqa: E402
from sim.scenario import WorkloadSpec, scenario_from_dict  # noqa: E402
from sim.serving.fluid import LengthMoments, replica_request_capacity  # noqa: E402
from sim.serving.replica import replica_from_spec  # noqa: E402
from sim.serving.residency import site_allows  # noqa: E402

# assumption: the month-0 fleet is half of provider-day's replicas at par-1 (the only SecNumCloud
# site, where the public-sector tenants, the market's largest at month 0, must run) and 15 % elsewhere.
# (The work estimate once counted every replica of the month-0 fleet, which capped it at about
# 1,700 replicas; it now counts the slice each window simulates, sim.forecast.forecast._work_view.)
START_SHARE = {"par-1": 0.5, "gra-1": 0.15, "fra-1": 0.15, "ams-1": 0.15}
# assumption: in its busiest hour of the week the busiest (site, model) is offered 90 % of its fluid
# request capacity by the month-0 contracts (sized on the peak hour: sized on the mean, the peak
# hours of month 0 overloaded par-1)
START_LOAD = 0.9
POLICY = {"kind": "threshold",
          # assumption: order when last month's mean request utilisation is above 0.2, i.e. the busiest
          # hour (about 3x the monthly mean for the public-sector profile) would be above ~0.6 of capacity
          "high_utilisation": 0.2,
          # assumption: release only a nearly idle site (0.05): month-scale windows that fall on quiet
          # hours read well under 0.1, and releasing on them left par-1 short the month after
          "low_utilisation": 0.05,
          "step_gpus": 128,   # assumption: 16 nodes of 8 GPUs an order
          "max_gpus": 8192}   # run setting: at most 8,192 GPUs at one site
POLICY_WHY = {"high_utilisation": "assumption: busiest hour ~3x the monthly mean, so ~0.6 of capacity",
              "low_utilisation": "assumption: release only a nearly idle site (quiet-hour windows read under 0.1)",
              "step_gpus": "assumption: 16 nodes of 8 GPUs an order", "max_gpus": "run setting: GPUs at one site at most"}
PEAK_LOAD = 0.85   # assumption: offered load of the busiest cell in its busiest hour, share of its fluid capacity
VERTICAL_SHARE = {"general": 0.40, "finance": 0.30, "healthcare": 0.15, "public_sector": 0.15}  # assumption
# the conversion models/market/parameters.csv uses for the sovereign list price (models/economics/fx.csv)
USD_EUR = float(pd.read_csv(model_file("economics", "fx.csv")).set_index("item")
                .loc["EUR per USD, conversion of USD list prices", "value"])

SITES = [  # name, jurisdiction, certifications (assumption: the provider's certified sites)
    ("par-1", "FR", ["SecNumCloud", "HDS", "ISO27001"]),
    ("gra-1", "FR", ["HDS", "ISO27001"]),
    ("fra-1", "DE", ["BSI-C5", "ISO27001"]),
    ("ams-1", "NL", ["ISO27001"]),
]
# site, model, GPU, TP, replicas
FLEET = [
    ("par-1", "mixtral-8x7b", "h100-sxm", 2, 1024),
    ("par-1", "mistral-large-2", "b200", 2, 384),
    ("par-1", "deepseek-v3", "b200", 8, 32),   # assumption: a quarter of the flagship's par-1 GPUs
    ("par-1", "mistral-7b", "h100-sxm", 1, 512),
    ("gra-1", "mixtral-8x22b", "h200", 4, 256),
    ("gra-1", "mixtral-8x7b", "h200", 1, 1024),
    ("fra-1", "mixtral-8x7b", "h100-sxm", 2, 768),
    ("fra-1", "mistral-large-2", "h200", 4, 192),
    ("fra-1", "deepseek-v3", "h200", 8, 32),   # assumption: a quarter of the flagship's fra-1 GPUs
    ("fra-1", "mistral-7b", "h100-sxm", 1, 512),
    ("ams-1", "mixtral-8x22b", "b200", 4, 256),
    ("ams-1", "mixtral-8x7b", "h100-sxm", 2, 256),
]
# deployment settings beyond (model, GPU, TP): the large fine-grained MoE runs as TensorRT-LLM's
# DeepSeek-R1 max-throughput layout (EP8 + attention DP, 128 sequences and 1,151 tokens per rank:
# models/measurements/large_moe_ep.csv, the H200 row), on 8-GPU nodes that used to carry the flagship
EXTRA = {
    "deepseek-v3": {"ep": 8, "attention_dp": True, "batching": {"max_num_seqs": 1024, "max_batched_tokens": 9208}},
}
# EUR per GPU-hour, on-demand rental (models/economics/gpu_prices.csv)
GPU_PRICE = {
    "h100-sxm": (3.31, "Scaleway H100-SXM-2-80G, EUR 6.6198/h / 2"),
    "h200": (5.25, "OVHcloud h200-1920, EUR 42.0/h / 8"),
    "b200": (round(8.50 * USD_EUR, 3), "Nebius B200 USD 8.50/GPU-h from 2026-10-01 x 0.86 EUR/USD"),
}
# USD per 1M tokens (in, out), Mistral La Plateforme list prices (models/economics/api_prices.csv)
TOKEN_PRICE = {
    "mistral-7b": (0.25, 0.25), "mixtral-8x7b": (0.7, 0.7),
    "mistral-large-2": (2.0, 6.0), "mixtral-8x22b": (2.0, 6.0),
    # Mistral Large 3 (the DeepSeek-V3 architecture, 675B / 41B active): the deepseek-v3 card stands in (assumption)
    "deepseek-v3": (0.5, 1.5),
}


def main(out_dir: Path | None = None) -> None:
    sites = {n: {"name": n, "jurisdiction": j, "certifications": c} for n, j, c in SITES}
    site_objs = {}
    deployments = []
    for site, model, gpu, tp, n in FLEET:
        deployments.append({"name": f"{model}-{gpu}-{site}", "site": site, "model": model, "gpu": gpu,
                            "precision": "fp8", "tp": tp, **EXTRA.get(model, {}), "replicas": n})
    base = scenario_from_dict({"name": "probe", "sites": list(sites.values()), "deployments": deployments,
                               "workloads": [{"name": "probe", "model": FLEET[0][1],
                                              "arrivals": {"kind": "poisson", "rate_per_s": 1.0},
                                              "prompt_tokens": {"dist": "constant", "value": 1},
                                              "output_tokens": {"dist": "constant", "value": 1}}]})
    site_objs = {s.name: s for s in base.sites}
    env = simpy.Environment()
    probes = [replica_from_spec(env, d, make_step_model(d)) for d in base.deployments]
    workloads = []
    tokens_per_s = 0.0
    for model in TOKEN_PRICE:
        deps = [i for i, d in enumerate(base.deployments) if d.model == model]
        for vertical, share in VERTICAL_SHARE.items():
            w = vertical_workload(vertical, f"{vertical}-{model}", 1.0)
            w["model"] = model
            w["arrivals"] = dict(w["arrivals"], start_hour_of_week=48.0)   # Wednesday 00:00 UTC
            spec = WorkloadSpec.model_validate(w)
            ok = [i for i in deps if site_allows(site_objs[base.deployments[i].site], spec.residency)]
            if not ok:
                continue
            lm = LengthMoments.of_laws(spec.prompt_tokens.build(), spec.output_tokens.build())
            cap = sum(replica_request_capacity(probes[i], lm) * base.deployments[i].replicas for i in ok)
            # this vertical's share of the model's load, on the capacity it may use
            w["arrivals"]["rate_per_s"] = share * cap
            workloads.append((w, spec, lm))
    factor = PEAK_LOAD / _peak_cell_load(base, probes, workloads)
    out_workloads = []
    for w, spec, lm in workloads:
        rate = w["arrivals"]["rate_per_s"] * factor
        w["arrivals"]["rate_per_s"] = round(rate, 3)
        out_workloads.append(w)
        tokens_per_s += rate * (lm.prompt_mean + lm.output_mean)
    workloads = out_workloads
    lines = ['# Generated by experiments/_provider_scenario.py: edit that script, not this file.',
             'name = "provider-day"',
             'description = "One weekday of a 10,240-GPU sovereign provider (month 36): 4 EU sites, 5 models, H100/H200/B200; run with cells (sovsim run provider-day)."',
             "", "[simulation]", "horizon_s = 86400.0", "warmup_s = 0.0", "seed = 1", "request_sample_size = 0",
             "timeseries_interval_s = 3600.0", "",
             "# the fleet as cells of 16 replicas; 2 cells of each exchangeable group, each cell's day",
             "# from 24 windows of 120 s (one per hour, random phase) after 60 s of warm-up",
             "[cells]", "max_replicas = 16", "sample = 2", "windows = 24", "window_s = 120.0", "warmup_s = 60.0", ""]
    lines += _fleet_lines(FLEET, deployments, growing_first=False)
    for w in workloads:
        lines += ["[[workloads]]", f'name = "{w["name"]}"', f'model = "{w["model"]}"', f'vertical = "{w["vertical"]}"',
                  "arrivals = " + _inline(w["arrivals"]), "prompt_tokens = " + _inline(w["prompt_tokens"]),
                  "output_tokens = " + _inline(w["output_tokens"]), "residency = " + _inline(w["residency"]),
                  "sla = " + _inline(w["sla"]), ""]
    for model, (pin, pout) in TOKEN_PRICE.items():
        lines += ["[[pricing]]", f'model = "{model}"', f"input_eur_per_mtok = {round(pin * USD_EUR, 4)}",
                  f"output_eur_per_mtok = {round(pout * USD_EUR, 4)}   # Mistral La Plateforme USD {pin}/{pout} x 0.86", ""]
    out = (out_dir or ROOT / "sim" / "scenarios") / "provider-day.toml"
    out.write_text("\n".join(lines))
    print(f"wrote {out}: {sum(r * tp for *_, tp, r in FLEET)} GPUs, {len(workloads)} workloads, "
          f"{tokens_per_s * 86400 / 1e9:.0f} billion tokens per day offered (peak cell load {PEAK_LOAD})")


def _peak_cell_load(base, probes, workloads) -> float:
    """The largest offered load (share of fluid capacity) of any cell in any hour of the
    simulated day, for the workloads at their provisional rates."""
    import numpy as np

    from sim.study.cells import plan_cells
    d = base.model_dump(mode="python")
    d["workloads"] = [w for w, *_ in workloads]
    sc = scenario_from_dict(d)
    cells = plan_cells(sc, 16)
    hours = 48 + np.arange(24)
    worst = 0.0
    for c in cells:
        site = {s_.name: s_ for s_ in sc.sites}[c.site]
        load: dict[str, np.ndarray] = {}   # per model: each model's replicas are their own resource
        for wi, (w, spec, lm) in enumerate(workloads):
            if c.rates_per_s[wi] <= 0:
                continue
            cap = sum(replica_request_capacity(probes[di], lm) * n for di, n in enumerate(c.replicas)
                      if n and sc.deployments[di].model == spec.model and site_allows(site, spec.residency))
            prof = spec.arrivals.build().multipliers()[hours % 168]
            load.setdefault(spec.model, np.zeros(24))
            load[spec.model] += c.rates_per_s[wi] * prof / cap
        worst = max([worst] + [float(v.max()) for v in load.values()])
    return worst


def _busiest_site_load(sc, probes, contracts, peak: bool = False) -> float:
    """The largest offered load (share of fluid request capacity, per model) at any site, for
    these contracts as the forecast serves them: each tenant spread over the models its
    residency allows (:func:`sim.forecast.windows.portfolio_workloads`), each model's share
    over the allowed sites in proportion to its GPUs there (the front router's split).
    ``peak``: each tenant at its vertical profile's busiest hour of the week (rate x the
    profile's largest multiplier) instead of its mean rate."""
    import numpy as np
    from sim.forecast.windows import portfolio_shares, portfolio_workloads, tenant_workload
    sites = {s_.name: s_ for s_ in sc.sites}
    ws = portfolio_workloads([tenant_workload(c, sc.forecast) for c in contracts], portfolio_shares(sc), sc)
    load: dict[tuple, float] = {}
    for w in ws:
        spec = WorkloadSpec.model_validate(w)
        lm = LengthMoments.of_laws(spec.prompt_tokens.build(), spec.output_tokens.build())
        ok = [i for i, d in enumerate(sc.deployments)
              if d.model == spec.model and site_allows(sites[d.site], spec.residency)]
        gpus = sum(sc.deployments[i].gpus for i in ok)
        for i in ok:
            d = sc.deployments[i]
            proc = spec.arrivals.build()
            mult = float(np.max(proc.multipliers())) if peak and hasattr(proc, "multipliers") else 1.0
            rate = spec.arrivals.rate_per_s * mult * d.gpus / gpus
            key = (d.site, d.model)
            load[key] = load.get(key, 0.0) + rate / (replica_request_capacity(probes[i], lm) * d.replicas)
    return max(load.values())


def _fleet_lines(fleet, deployments: list[dict], growing_first: bool) -> list[str]:
    """TOML of the sites, one on-demand rental contract per site and GPU, and the deployments.

    ``growing_first``: a site's contracts in fleet order (the growing deployment's GPU first,
    so the capacity policy's orders use its terms) instead of sorted by GPU."""
    lines: list[str] = []
    for n, j, c in SITES:
        lines += ["[[sites]]", f'name = "{n}"', f'jurisdiction = "{j}"', f"certifications = {c!r}".replace("'", '"'), ""]
        here = [g for s_, m, g, tp, r in fleet if s_ == n]
        for gpu in (dict.fromkeys(here) if growing_first else sorted(set(here))):
            gpus = sum(tp * r for s_, m, g, tp, r in fleet if s_ == n and g == gpu)
            price, src = GPU_PRICE[gpu]
            lines += ["[[sites.contracts]]", 'kind = "rental"', f'name = "{n}-{gpu}"', 'term = "on_demand"',
                      f"gpus = {gpus}", f"price_eur_per_gpu_h = {price}   # {src}", ""]
    for d in deployments:
        flag = "  # extrapolated (datasheet ceilings)" if is_extrapolated(d["gpu"], d["model"]) else ""
        if d.get("ep", 1) > 1:
            flag = "  # extrapolated (fine-grained MoE, MLA, expert and attention data parallelism; docs/perf.md)"
        lines += ["[[deployments]]"] + [f"{k} = {_inline(v) if isinstance(v, dict) else _toml(v)}" for k, v in d.items()]
        lines[-1] += flag
        lines.append("")
    return lines


def _toml(v) -> str:
    return "true" if v is True else "false" if v is False else f"{v!r}".replace("'", '"')


def _inline(d) -> str:
    def val(v):
        if isinstance(v, str):
            return f'"{v}"'
        if isinstance(v, bool):
            return "true" if v else "false"
        if v is None:
            return None
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        if isinstance(v, dict):
            return _inline(v)
        return repr(v)
    return "{ " + ", ".join(f"{k} = {val(v)}" for k, v in d.items() if v is not None) + " }"


def provider(out_dir: Path | None = None) -> None:
    """Write sim/scenarios/provider.toml (see the module docstring); ``out_dir``: elsewhere."""
    import math

    from sim.core.rng import RandomStreams
    from sim.market.market import MONTH_S, Market
    from sim.scenario.market import MarketSpec, default_market_dict
    from sim.serving.fluid import probe_replica

    growing = "mixtral-8x7b"   # each site's first deployment: the one the policy grows
    fleet = sorted(FLEET, key=lambda r: (SITES.index(next(x for x in SITES if x[0] == r[0])), r[1] != growing))
    fleet = [(site, model, gpu, tp, max(1, math.ceil(n * START_SHARE[site]))) for site, model, gpu, tp, n in fleet]
    deployments = [{"name": f"{model}-{gpu}-{site}", "site": site, "model": model, "gpu": gpu, "precision": "fp8",
                    "tp": tp, **EXTRA.get(model, {}), "replicas": n} for site, model, gpu, tp, n in fleet]
    sites = [{"name": n, "jurisdiction": j, "certifications": c} for n, j, c in SITES]
    probe = scenario_from_dict({"name": "probe", "sites": sites, "deployments": deployments,
                                "workloads": [{"name": "probe", "model": growing,
                                               "arrivals": {"kind": "poisson", "rate_per_s": 1.0},
                                               "prompt_tokens": {"dist": "constant", "value": 1},
                                               "output_tokens": {"dist": "constant", "value": 1}}]})
    env = simpy.Environment()
    probes = [probe_replica(env, d) for d in probe.deployments]

    def capacity_of(vertical: str) -> float:
        """The month-0 fleet's fluid request capacity at this vertical's mean lengths."""
        spec = WorkloadSpec.model_validate(vertical_workload(vertical, "probe", 1.0))
        lm = LengthMoments.of_laws(spec.prompt_tokens.build(), spec.output_tokens.build())
        return sum(replica_request_capacity(r, lm) * d.replicas for r, d in zip(probes, probe.deployments))

    # the default market's month-0 sovereign contracts, same seed as the forecast
    menv = simpy.Environment()
    market = Market(menv, MarketSpec.model_validate({}), RandomStreams(1), lambda c: None)
    menv.run(until=MONTH_S)   # as the forecast: month 0 run to its end, its tenants those in force at mid-month
    month0 = market.sovereign_contracts(0.5 * MONTH_S)
    rate0 = sum(c.rate_per_s for c in month0)
    load0 = _busiest_site_load(probe, probes, month0, peak=True)   # at the default contract sizes, busiest hour
    factor = START_LOAD / load0
    capacity = sum(capacity_of(c.vertical) * c.rate_per_s for c in month0) / rate0
    medians = {v["name"]: v["rate_per_s_median"] for v in default_market_dict()["verticals"]}
    gpus0 = sum(d.gpus for d in probe.deployments)
    lines = ['# Generated by experiments/_provider_scenario.py: edit that script, not this file.',
             "#",
             "# The 36-month forecast of the provider whose month-36 fleet is provider-day: month 0 is "
             + ", ".join(f"{v:.0%} at {k}" for k, v in START_SHARE.items()) + " of",
             f"# provider-day's replicas ({gpus0:,} GPUs, assumption: par-1 alone may serve the SecNumCloud tenants)"
             " over the same 4 EU sites (FR x2, DE, NL), 5 models on",
             "# H100/H200/B200 (the prices, cards and flags of provider-day); a threshold capacity policy orders",
             f"# {POLICY['step_gpus']} GPUs at a site when last month's request utilisation there is above "
             f"{POLICY['high_utilisation']} (assumption) and",
             "# adds mixtral-8x7b replicas (each site's first deployment) on them.",
             "# Demand: the RFP market of models/market/parameters.csv (every source there), each vertical's",
             f"# contract size (rate_per_s_median) x {factor:,.1f}: the factor that makes the month-0 contracts offer",
             f"# in their busiest hour of the week {START_LOAD:.0%} (assumption) of the fluid request capacity of the busiest (site, model) of the month-0",
             "# fleet (the French sites, which alone may serve the HDS and SecNumCloud tenants); the default",
             f"# market's month-0 contracts sum to {rate0:.2f} req/s, {rate0 * factor:,.0f} req/s after scaling. Each",
             "# tenant is spread over the models its residency allows in proportion to each model's request",
             "# capacity in force (docs/forecast.md); tenants pay the sovereign price list (per vertical and model, sim/market/pricing.py).",
             "# Each window simulates one slice of the fleet (one cell of <= cells.max_replicas replicas per",
             "# site, docs/forecast.md) and scales it to the fleet.",
             'name = "provider"',
             f'description = "36-month forecast of a sovereign provider growing from {gpus0:,} GPUs (4 EU sites, 5 models, H100/H200/B200) under a capacity policy; tenants from the RFP market, sized to load the fleet."',
             "", "[simulation]", "seed = 1", "",
             "[cells]", "max_replicas = 8   # run setting: each window simulates one cell of <= 8 replicas per site", "",
             "[capacity_policy]"] + [f"{k} = {v!r}".replace("'", '"') + (f"   # {POLICY_WHY[k]}" if k in POLICY_WHY else "")
                                     for k, v in POLICY.items()] + [""]
    lines += _fleet_lines(fleet, deployments, growing_first=True)
    lines += ["[market]", ""]
    for name, med in medians.items():
        lines += ["[[market.verticals]]", f'name = "{name}"',
                  f"rate_per_s_median = {round(med * factor, 3)}   # parameters.csv median {med} x {factor:,.1f} (sizing above)", ""]
    lines += ["[forecast]", "months = 36",
              "windows_per_month = 4   # run setting: 4 stratified windows of 30 s (10 s warm-up) per month",
              "window_s = 30.0", "warmup_s = 10.0", ""]
    out = (out_dir or ROOT / "sim" / "scenarios") / "provider.toml"
    out.write_text("\n".join(lines))
    print(f"wrote {out}: {gpus0} GPUs at month 0, contract sizes x {factor:.1f} "
          f"(month-0 contracts {rate0 * factor:,.0f} req/s; fleet capacity at their lengths {capacity:,.0f} req/s)")


if __name__ == "__main__":
    main()
    provider()
