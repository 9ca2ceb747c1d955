"""The price of fragmentation: what does residency cost in utilisation, SLA attainment and GPUs?

The same demand -- the four default verticals (finance, healthcare, public_sector, general,
from ``sim.demand.verticals.vertical_workload``: fitted lengths, weekly profile, burst state, SLA class,
residency rule) -- is served by

* **pooled**: one EU fleet where every site is eligible for every tenant (residency rules
  dropped: what an unconstrained provider could do), and
* **partitioned**: the same GPUs at four sites, each tenant only at sites its rule allows:
  par-1 (FR; SecNumCloud, HDS, ISO 27001), fra-1 (DE; BSI C5, ISO 27001), ams-1 (NL; ISO 27001),
  mil-1 (IT; ISO 27001).  Healthcare (FR + HDS) and public sector (FR + SecNumCloud) may only
  use par-1; finance (EU + ISO 27001) and general (no rule) may use every site.

Model: Mixtral 8x7B on H100 SXM, FP8, TP 2, calibrated step time (the scenario default).

Method (every choice below is also printed in ``results/fragmentation/meta.json``):

* Load is the total request rate at the measured hour (Tuesday 10:00 UTC, office hours),
  split over the verticals by ``MIX`` (assumption).  Each workload's long-run ``rate_per_s``
  is the target divided by its weekly-profile multiplier at that hour, so the offered rate
  during the run is the target.
* Base fleet: ``BASE_REPLICAS`` replicas (x TP 2 GPUs).  The partitioned split of the same
  replicas is *searched*: par-1 gets p replicas, the other sites share the rest evenly, and the
  p with the best worst-vertical attainment (mean over seeds) wins -- the best a planner could
  do with these GPUs, so the fragmentation cost reported is a lower bound.  The pooled fleet
  uses that same placement with the rules dropped.
* Extra GPUs: from the best split, replicas are added one at a time (greedy): to par-1 while
  healthcare or public sector is below its pooled attainment (minus ``TOLERANCE``), else to the
  smallest non-French site while finance or general is, until every vertical reaches its pooled
  attainment or ``MAX_EXTRA_REPLICAS`` are added.
* SLA attainment is computed from the per-request records: requests arriving in
  [warm-up, horizon - tail] count; one meeting both its TTFT and TPOT targets counts as met,
  rejected or still unfinished at the horizon counts as missed.  (The run summary's
  ``sla_attainment`` leaves requests in flight at the horizon out, which overstates
  attainment in overload; the tail gives every counted request at least ``TAIL_S`` to finish.)
* Replications: seeds 1..n, the same seeds for both layouts and every split (common random
  numbers: a workload's arrivals and lengths depend only on seed and workload name).  95 %
  confidence intervals: Student t over seeds.

    PYTHONPATH=. python experiments/fragmentation.py [--quick] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sim.core.stats import mean_ci as stats_mean_ci  # noqa: E402
from sim.demand import verticals as demand  # noqa: E402
from sim.study.run import run  # noqa: E402
from sim.scenario import Scenario, scenario_from_dict, with_overrides  # noqa: E402

VERTICALS = ("finance", "healthcare", "public_sector", "general")
# Share of the request rate per vertical at the measured hour. assumption: general enterprise
# is the largest segment; no market data gives the split.
MIX = {"finance": 0.25, "healthcare": 0.15, "public_sector": 0.20, "general": 0.40}
# (name, jurisdiction, certifications). Certifications: assumption, typical of EU colo sites
# (the default scenario's par-1/fra-1/ams-1 plus an Italian ISO 27001 site).
SITES = (
    ("par-1", "FR", ("SecNumCloud", "HDS", "ISO27001")),
    ("fra-1", "DE", ("BSI-C5", "ISO27001")),
    ("ams-1", "NL", ("ISO27001",)),
    ("mil-1", "IT", ("ISO27001",)),
)
FR_SITE = "par-1"
NETWORK_LATENCY_S = 0.010   # assumption: one-way EU buyer to any site (as the default scenario)
HOUR_OF_WEEK = 24 + 10      # Tuesday 10:00 UTC: office hours, when the regulated verticals peak
BASE_REPLICAS = 8           # x TP 2 = 16 H100, the default scenario's fleet size
TOLERANCE = 0.005           # assumption: attainment within half a point of pooled counts as reached
MAX_EXTRA_REPLICAS = 8
TAIL_S = 60.0               # arrivals in the last TAIL_S seconds are not counted (time to finish)

FULL = dict(loads_per_s=(20.0, 40.0, 60.0, 80.0, 100.0, 120.0), seeds=5, horizon_s=240.0, warmup_s=30.0)
QUICK = dict(loads_per_s=(20.0, 60.0, 90.0), seeds=2, horizon_s=130.0, warmup_s=20.0)


# ------------------------------------------------------------------ scenarios
def split(total_replicas: int, par_replicas: int) -> dict[str, int]:
    """par-1 gets ``par_replicas``; the other sites share the rest evenly (first ones get the remainder)."""
    others = [s[0] for s in SITES if s[0] != FR_SITE]
    rest = total_replicas - par_replicas
    out = {FR_SITE: par_replicas}
    for i, name in enumerate(others):
        out[name] = rest // len(others) + (1 if i < rest % len(others) else 0)
    return out


def build_scenario(load_per_s: float, replicas: dict[str, int], pooled: bool,
                   horizon_s: float, warmup_s: float) -> Scenario:
    """The four verticals at ``load_per_s`` total requests/s (at HOUR_OF_WEEK) on ``replicas``
    per site; ``pooled`` drops every residency rule."""
    workloads = []
    for v in VERTICALS:
        rate = load_per_s * MIX[v] / float(demand.profile(v)[HOUR_OF_WEEK])
        w = demand.vertical_workload(v, v, rate)
        w["arrivals"]["start_hour_of_week"] = float(HOUR_OF_WEEK)
        if pooled:
            w["residency"] = {"allowed_jurisdictions": None, "required_certifications": []}
        workloads.append(w)
    data = {
        "name": f"fragmentation-{'pooled' if pooled else 'partitioned'}",
        "simulation": {"horizon_s": horizon_s, "warmup_s": warmup_s, "request_sample_size": 10_000_000},
        "router": {"policy": "least_outstanding"},
        "sites": [{"name": n, "jurisdiction": j, "certifications": list(c),
                   "network_latency_s": {"eu": NETWORK_LATENCY_S}} for n, j, c in SITES],
        "deployments": [{"name": f"mixtral-{n}", "site": n, "model": "mixtral-8x7b", "gpu": "h100-sxm",
                         "precision": "fp8", "tp": 2, "replicas": int(replicas[n])}
                        for n, _, _ in SITES if replicas.get(n, 0) > 0],
        "workloads": workloads,
    }
    return scenario_from_dict(data, "fragmentation")


def with_replicas(sc: Scenario, replicas: dict[str, int]) -> Scenario:
    """The same scenario with other replica counts per site (sim.scenario.with_overrides)."""
    over = {f"deployments.{i}.replicas": int(replicas[d.site]) for i, d in enumerate(sc.deployments)}
    return with_overrides(sc, over)


# ------------------------------------------------------------------ one run
def attainment(requests: pd.DataFrame, sc: Scenario) -> dict[str, dict]:
    """Per vertical: SLA attainment over requests arriving in [warm-up, horizon - TAIL_S];
    rejected and unfinished requests miss."""
    lo, hi = sc.simulation.warmup_s, sc.simulation.horizon_s - TAIL_S
    out = {}
    for w in sc.workloads:
        r = requests[(requests["workload"] == w.name) & (requests["arrival_s"] >= lo) & (requests["arrival_s"] < hi)]
        done = r["outcome"] == "completed"
        ok = done & (r["ttft_s"] <= w.sla.ttft_s) & (r["tpot_s"].isna() | (r["tpot_s"] <= w.sla.tpot_s))
        n = len(r)
        out[w.vertical] = {"counted": n, "attainment": float(ok.sum()) / n if n else float("nan"),
                           "rejected_share": float((r["outcome"] == "rejected").sum()) / n if n else float("nan"),
                           "unfinished_share": float((r["outcome"] == "in_flight").sum()) / n if n else float("nan")}
    return out


def one_run(sc: Scenario, seed: int) -> dict:
    res = run(sc, seed=seed)
    s = res.summary
    if len(res.requests) < s["arrivals"]:
        raise RuntimeError(f"request sample holds {len(res.requests)} of {s['arrivals']} requests; raise request_sample_size")
    return {"per_vertical": attainment(res.requests, sc),
            "request_utilisation": s["request_utilisation"],
            "gpu_utilisation": s["gpu_utilisation"], "throughput_utilisation": s["throughput_utilisation"],
            "rejected_share": s["rejected"] / s["arrivals"] if s["arrivals"] else 0.0,
            "residency_violations": s["residency_violations"],
            "eligible_replicas": {w["vertical"]: w["eligible_replicas"] for w in s["workloads"].values()},
            # one deployment per site: its throughput utilisation is the site's
            "site_throughput_utilisation": {d["site"]: d["throughput_utilisation"] for d in s["deployments"].values()},
            "gpus": s["gpus"]}


def mean_ci(x) -> tuple[float, float]:
    """Mean and half-width of the 95% interval (:func:`sim.core.stats.mean_ci`; NaN half-width
    under two values)."""
    r = stats_mean_ci(x)
    return r.mean, r.half_width


def evaluate(load_per_s: float, replicas: dict[str, int], pooled: bool, seeds, horizon_s: float,
             warmup_s: float) -> list[dict]:
    sc = build_scenario(load_per_s, replicas, pooled, horizon_s, warmup_s)
    return [one_run(sc, s) for s in seeds]


def vertical_means(runs: list[dict]) -> dict[str, float]:
    return {v: float(np.nanmean([r["per_vertical"][v]["attainment"] for r in runs])) for v in VERTICALS}


# ------------------------------------------------------------------ the experiment at one load
def fragmentation_at_load(load_per_s: float, seeds, horizon_s: float, warmup_s: float,
                          base_replicas: int = BASE_REPLICAS, max_extra: int = MAX_EXTRA_REPLICAS,
                          tolerance: float = TOLERANCE) -> dict:
    """Pooled vs best same-size partition vs the partition grown until it matches pooled."""
    n_other = len(SITES) - 1
    # best same-size split (each non-French site keeps at least one replica, par-1 at least one)
    candidates = {}
    for p in range(1, base_replicas - n_other + 1):
        reps = split(base_replicas, p)
        runs = evaluate(load_per_s, reps, False, seeds, horizon_s, warmup_s)
        m = vertical_means(runs)
        candidates[p] = (min(m.values()), sum(m[v] * MIX[v] for v in VERTICALS), runs)
    best_p = max(candidates, key=lambda p: (candidates[p][0], candidates[p][1], -p))
    part_reps = split(base_replicas, best_p)
    part_runs = candidates[best_p][2]
    pooled_runs = evaluate(load_per_s, part_reps, True, seeds, horizon_s, warmup_s)
    pooled_m = vertical_means(pooled_runs)
    # grow the partition until every vertical reaches its pooled attainment
    reps = dict(part_reps)
    runs = part_runs
    sc = build_scenario(load_per_s, reps, False, horizon_s, warmup_s)
    extra = 0
    path = []
    while True:
        m = vertical_means(runs)
        short = [v for v in VERTICALS if m[v] < pooled_m[v] - tolerance]
        path.append({"replicas": dict(reps), "attainment": m, "short": short})
        if not short or extra >= max_extra:
            break
        if any(v in short for v in ("healthcare", "public_sector")):
            reps[FR_SITE] += 1
        else:
            site = min((s[0] for s in SITES if s[0] != FR_SITE), key=lambda n: (reps[n], n))
            reps[site] += 1
        extra += 1
        sc = with_replicas(sc, reps)
        runs = [one_run(sc, s) for s in seeds]
    reached = not path[-1]["short"]
    return {"load_per_s": load_per_s, "best_par_replicas": best_p, "split": part_reps,
            "split_search": {p: {"worst_vertical": c[0], "mix_weighted": c[1]} for p, c in candidates.items()},
            "pooled": pooled_runs, "partitioned": part_runs,
            "extra_replicas": extra if reached else None, "extra_gpus": 2 * extra if reached else None,
            "extra_search_capped": not reached, "grown_replicas": reps, "grown": runs, "path": path}


# ------------------------------------------------------------------ tables and figure
def tables(results: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, extra = [], []
    for r in results:
        for layout in ("pooled", "partitioned"):
            runs = r[layout]
            base = {"load_per_s": r["load_per_s"], "layout": layout, "seeds": len(runs),
                    "gpus": runs[0]["gpus"], "par_replicas": r["split"][FR_SITE]}
            for v in VERTICALS:
                m, h = mean_ci([x["per_vertical"][v]["attainment"] for x in runs])
                rs, rh = mean_ci([x["per_vertical"][v]["rejected_share"] for x in runs])
                us, _ = mean_ci([x["per_vertical"][v]["unfinished_share"] for x in runs])
                rows.append({**base, "metric": f"sla_attainment_{v}", "mean": m, "ci95": h})
                rows.append({**base, "metric": f"rejected_share_{v}", "mean": rs, "ci95": rh})
                rows.append({**base, "metric": f"unfinished_share_{v}", "mean": us, "ci95": float("nan")})
            for k in ("request_utilisation", "gpu_utilisation", "throughput_utilisation", "rejected_share", "residency_violations"):
                m, h = mean_ci([x[k] for x in runs])
                rows.append({**base, "metric": k, "mean": m, "ci95": h})
            for site, _, _ in SITES:
                m, h = mean_ci([x["site_throughput_utilisation"].get(site, float("nan")) for x in runs])
                rows.append({**base, "metric": f"throughput_utilisation_{site}", "mean": m, "ci95": h})
        extra.append({"load_per_s": r["load_per_s"], "base_gpus": r["pooled"][0]["gpus"],
                      "best_split": " ".join(f"{k}={v}" for k, v in r["split"].items()),
                      "extra_gpus": r["extra_gpus"], "capped": r["extra_search_capped"],
                      "grown_split": " ".join(f"{k}={v}" for k, v in r["grown_replicas"].items())})
    return pd.DataFrame(rows), pd.DataFrame(extra)


FIGURE_NOTE = (
    "Same demand, same GPUs.\n"
    "pooled: any tenant on any replica.\n"
    "partitioned: healthcare (HDS) and public\nsector (SecNumCloud) only at par-1 (FR);\n"
    "finance and general anywhere.\n\n"
    "Attainment: share of requests meeting\nboth TTFT and TPOT targets; rejected or\n"
    "unfinished at the horizon count as missed.\n\n"
    "Utilisation is the same for both layouts\nwhen nothing is rejected: they serve the\nsame tokens on the same GPUs.\n\n"
    "Mixtral 8x7B FP8 TP2, H100 SXM,\ncalibrated step time; least-outstanding\nrouting; Tuesday 10:00 UTC demand mix\n"
    "finance 25 %, healthcare 15 %,\npublic sector 20 %, general 40 %\n(assumption).")


def split_table(results: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([{"load_per_s": r["load_per_s"], "par_replicas": int(p),
                          "worst_vertical_attainment": c["worst_vertical"], "mix_weighted_attainment": c["mix_weighted"],
                          "chosen": int(p) == r["best_par_replicas"]}
                         for r in results for p, c in r["split_search"].items()])


def figure(df: pd.DataFrame, extra: pd.DataFrame, split_df: pd.DataFrame, path: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 4, figsize=(21, 9))
    style = {"pooled": ("C0", "pooled EU fleet (rules dropped)"),
             "partitioned": ("C3", "residency-partitioned, same GPUs")}
    rules = {"finance": "EU + ISO 27001: all 4 sites", "healthcare": "FR + HDS: par-1 only",
             "public_sector": "FR + SecNumCloud: par-1 only", "general": "no rule: all 4 sites"}
    panels = [("sla_attainment_" + v, f"{v} ({rules[v]})") for v in VERTICALS]
    for ax, (metric, title) in zip(axes.flat[:4], panels):
        for layout, (c, label) in style.items():
            d = df[(df.metric == metric) & (df.layout == layout)].sort_values("load_per_s")
            ax.plot(d.load_per_s, d["mean"], "o-", color=c, label=label)
            ax.fill_between(d.load_per_s, (d["mean"] - d.ci95.fillna(0)).clip(lower=0), (d["mean"] + d.ci95.fillna(0)).clip(upper=1),
                            color=c, alpha=0.2)
        target = demand.SLA_CLASSES[demand.VERTICALS[metric.removeprefix("sla_attainment_")].sla_class].attainment_target
        ax.axhline(target, color="grey", ls=":", lw=1, label=f"SLA target {target:.0%}")
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("SLA attainment (TTFT and TPOT met)")
        ax.set_xlabel("offered load, requests/s (all verticals)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8, loc="lower left")
    ax = axes.flat[4]
    cmap = plt.get_cmap("viridis")
    loads = sorted(split_df.load_per_s.unique())
    for i, load in enumerate(loads):
        d = split_df[split_df.load_per_s == load].sort_values("par_replicas")
        ax.plot(d.par_replicas, d.worst_vertical_attainment, "o-", color=cmap(i / max(1, len(loads) - 1)),
                label=f"{load:g} req/s")
    ax.set_title(f"partitioned, same {2 * BASE_REPLICAS} GPUs: how the par-1 share matters\n"
                 "(worst vertical's attainment, mean over seeds)", fontsize=10)
    ax.set_xlabel(f"replicas at par-1 (of {BASE_REPLICAS}; the rest at fra-1, ams-1, mil-1)")
    ax.set_ylabel("worst vertical's SLA attainment")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="offered load")
    ax = axes.flat[5]
    for layout, (c, label) in style.items():
        for metric, ls, name in (("request_utilisation", "--", "requests / request capacity"),
                                 ("throughput_utilisation", "-", "tokens / saturation rate")):
            d = df[(df.metric == metric) & (df.layout == layout)].sort_values("load_per_s")
            ax.plot(d.load_per_s, d["mean"], ls, marker="o", color=c, label=f"{layout}: {name}")
            ax.fill_between(d.load_per_s, d["mean"] - d.ci95.fillna(0), d["mean"] + d.ci95.fillna(0), color=c, alpha=0.2)
    for site, ls in ((FR_SITE, "-."), ("mil-1", ":")):
        d = df[(df.metric == f"throughput_utilisation_{site}") & (df.layout == "partitioned")].sort_values("load_per_s")
        ax.plot(d.load_per_s, d["mean"], ls, marker="s", ms=4, color="C1" if site == FR_SITE else "C2",
                label=f"partitioned, {site} alone: tokens / saturation")
    ax.set_title("load: request and throughput utilisation (fleet)", fontsize=10)
    ax.set_xlabel("offered load, requests/s")
    ax.set_ylabel("utilisation")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax = axes.flat[6]
    e = extra.sort_values("load_per_s")
    y = [v if v == v and v is not None else np.nan for v in e.extra_gpus]
    ax.bar(e.load_per_s, y, width=0.6 * (e.load_per_s.diff().min() if len(e) > 1 else 10), color="C3")
    for x, yy, capped in zip(e.load_per_s, y, e.capped):
        ax.annotate(f">{2 * MAX_EXTRA_REPLICAS}" if capped else f"+{int(yy)}", (x, 0 if capped else yy),
                    ha="center", va="bottom")
    ax.set_title(f"extra GPUs the partition needs to match pooled attainment per vertical\n"
                 f"(not the SLA target; base fleet {2 * BASE_REPLICAS} H100, +2 = one replica at par-1)",
                 fontsize=10)
    ax.set_xlabel("offered load, requests/s")
    ax.set_ylabel("extra H100 GPUs")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3, axis="y")
    axes.flat[7].axis("off")
    axes.flat[7].text(0, 0.98, FIGURE_NOTE, va="top", ha="left", fontsize=9, wrap=True, transform=axes.flat[7].transAxes)
    fig.suptitle("Price of fragmentation: Mixtral 8x7B (FP8, TP2) on H100, four verticals, four EU sites "
                 "(bands: 95% CI over seeds)", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 loads, 2 seeds, short runs (smoke test)")
    ap.add_argument("--out", default=str(ROOT / "results" / "fragmentation"), help="output directory")
    args = ap.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    seeds = list(range(1, cfg["seeds"] + 1))
    results = []
    for load in cfg["loads_per_s"]:
        r = fragmentation_at_load(load, seeds, cfg["horizon_s"], cfg["warmup_s"])
        results.append(r)
        pm, qm = vertical_means(r["pooled"]), vertical_means(r["partitioned"])
        print(f"load {load:5.1f}/s split {r['split']}: " +
              "  ".join(f"{v} {pm[v]:.3f}/{qm[v]:.3f}" for v in VERTICALS) +
              f"  extra GPUs {r['extra_gpus'] if not r['extra_search_capped'] else '>' + str(2 * MAX_EXTRA_REPLICAS)}"
              f"  [{time.perf_counter() - t0:.0f} s]", flush=True)
    df, extra = tables(results)
    df.to_csv(out / "fragmentation.csv", index=False)
    extra.to_csv(out / "extra_gpus.csv", index=False)
    split_df = split_table(results)
    split_df.to_csv(out / "split_search.csv", index=False)
    figure(df, extra, split_df, out / "fragmentation.png")
    wall = time.perf_counter() - t0
    meta = {"config": {**cfg, "seeds": seeds}, "mix": MIX, "sites": SITES, "hour_of_week": HOUR_OF_WEEK,
            "base_replicas": BASE_REPLICAS, "tp": 2, "model": "mixtral-8x7b", "gpu": "h100-sxm", "precision": "fp8",
            "tolerance": TOLERANCE, "tail_s": TAIL_S, "max_extra_replicas": MAX_EXTRA_REPLICAS,
            "split_search": {str(r["load_per_s"]): r["split_search"] for r in results},
            "growth_paths": {str(r["load_per_s"]): r["path"] for r in results}}   # no wall time: byte-identical reruns
    (out / "meta.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    print(f"wrote {out}/fragmentation.csv, extra_gpus.csv, split_search.csv, fragmentation.png, meta.json in {wall:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
