"""Which GPU generation serves Mixtral 8x7B most cheaply at the same latency SLA?

For each GPU generation (A100, H100, H200, B200) the script finds, by bisection with
replications (``sim.study.capacity_search``), the smallest number of TP2 replicas that meets the
workload's SLA attainment target at a fixed Poisson demand, and reports GPU-hours per million
output tokens of that demand (arrived output tokens per second; the fleet meets the SLA for it).
Cost per million output tokens = GPU-hours per million x the generation's on-demand rental
price per GPU-hour at an EU provider (a row of models/economics/gpu_prices.csv, through
``sim.economics.contracts.rental_terms``; rental bills every provisioned hour and includes power).  The
data has EUR prices for A100 (OVHcloud), H100 SXM (Scaleway) and H200 (OVHcloud); B200 only in
USD (Nebius USD 8.50 per GPU-hour from 2026-10-01, region not stated, the price the ``provider``
scenario uses), converted at the EUR/USD rate of models/economics/fx.csv and flagged so.  (The runs' own ledger
block is not used here: without contracts it prices every GPU at the H100 default.)
H200 and B200 step times are extrapolated from datasheet ceilings (see ``sim.perf``): treat
them as estimates.

    python experiments/gpu_generations.py            # four generations, 5 replications
    python experiments/gpu_generations.py --quick    # smoke run
"""
from __future__ import annotations

import _common  # noqa: F401  (sets sys.path and the matplotlib backend)
from _common import apply_sets, executor, main_wrapper, out_dir, parser, save_png, sweep_dir, write_csv, write_report

# (catalog id, precision): A100 has no FP8 tensor cores, so it serves BF16 weights.
GENERATIONS = [("a100-sxm-80gb", "bf16"), ("h100-sxm", "fp8"), ("h200", "fp8"), ("b200", "fp8")]
# assumption: demand and run length chosen so each run is a few simulated minutes
FULL = dict(rate_per_s=100.0, replications=5, horizon_s=120.0, warmup_s=30.0)
QUICK = dict(rate_per_s=25.0, replications=2, horizon_s=20.0, warmup_s=5.0)


# On-demand rental price per GPU-hour of each generation at an EU provider, in EUR, as a row
# of models/economics/gpu_prices.csv (item, GPUs per instance).  B200: the data holds only
# USD prices (AWS p6-b200 Paris, Nebius): the Nebius price (as in experiments/_provider_scenario.py)
# times the EUR/USD rate of models/economics/fx.csv.
PRICE_ROWS = {
    "a100-sxm-80gb": ("OVHcloud a100-180 (1x A100 80GB) hourly", 1),
    "h100-sxm": ("Scaleway H100-SXM-8-80G (8x H100 SXM) on-demand, fr-par-2", 8),
    "h200": ("OVHcloud h200-1920 (8x H200 141GB) hourly", 8),
}
USD_PRICES = {"b200": (8.50, "Nebius B200 USD 8.50/GPU-h from 2026-10-01 (gpu_prices.csv 'Nebius H100 (HGX) on-demand' notes; "
                           "region not stated)")}
NO_PRICE: dict[str, str] = {}


def gpu_hour_price_eur(gpu: str):
    """(EUR per GPU-hour, source) of on-demand rental for ``gpu``, or (None, why not).

    The price is the gpu_prices.csv row's EUR per instance-hour over its GPUs, turned into
    contract terms by ``sim.economics.contracts.rental_terms`` (rental includes power, so the cost of a
    GPU-hour does not depend on how busy it is)."""
    import pandas as pd

    from sim.economics.contracts import rental_terms
    from sim.core.resources import model_file

    if gpu in USD_PRICES:
        usd, src = USD_PRICES[gpu]
        fx = pd.read_csv(model_file("economics", "fx.csv")).set_index("item")
        rate = float(fx.loc["EUR per USD, conversion of USD list prices", "value"])
        terms = rental_terms(f"on_demand_{gpu}", "on_demand", price_eur_per_gpu_h=usd * rate)
        return terms.cost_eur_per_gpu_h(busy_share=1.0), f"{src} x {rate:g} EUR/USD (fx.csv)"
    if gpu not in PRICE_ROWS:
        return None, NO_PRICE.get(gpu, f"no price row for {gpu} in models/economics/gpu_prices.csv")
    item, n_gpus = PRICE_ROWS[gpu]
    table = pd.read_csv(model_file("economics", "gpu_prices.csv"))
    row = table[table["item"] == item]
    if len(row) != 1 or not str(row["unit"].iloc[0]).startswith("EUR per instance-hour"):
        raise RuntimeError(f"gpu_prices.csv: expected one EUR per instance-hour row {item!r}")
    price = float(row["value"].iloc[0]) / n_gpus
    terms = rental_terms(f"on_demand_{gpu}", "on_demand", price_eur_per_gpu_h=price)
    return terms.cost_eur_per_gpu_h(busy_share=1.0), f"gpu_prices.csv '{item}' {float(row['value'].iloc[0]):g} EUR/instance-h / {n_gpus} GPU"


def main(argv=None) -> int:
    args = parser(__file__, __doc__).parse_args(argv)
    cfg = QUICK if args.quick else FULL
    reps = args.replications or cfg["replications"]
    out = out_dir(args)

    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd

    from sim.study.capacity_search import capacity_search
    from sim.scenario import load_scenario, with_overrides
    from sim.study.sweep import mean_ci95, run_sweep

    base = with_overrides(apply_sets(load_scenario("day"), args), {
        "simulation.horizon_s": cfg["horizon_s"], "simulation.warmup_s": cfg["warmup_s"],
        "workloads.0.arrivals.rate_per_s": cfg["rate_per_s"]})
    targets = {w.vertical: w.sla.attainment_target for w in base.workloads}
    rows, notes = [], set()
    with sweep_dir(args, "gpu_generations") as sdir, executor(args) as ex:
        for gpu, precision in GENERATIONS:
            scen = with_overrides(base, {"deployments.0.gpu": gpu, "deployments.0.precision": precision})
            r = capacity_search(scen, targets, replications=reps, out_dir=sdir / gpu, root_seed=args.seed,
                                executor=ex, max_replicas=64)
            row = {"gpu": gpu, "precision": precision, "tp": scen.deployments[0].tp,
                   "rate_per_s": cfg["rate_per_s"], "min_replicas": r.replicas, "min_gpus": r.gpus}
            if r.replicas is not None:
                # the runs at the answer are cached: this reads them back, it does not rerun
                res = run_sweep(scen, {"deployments.0.replicas": [r.replicas]}, reps, sdir / gpu,
                                root_seed=args.seed, executor=ex, write_tables=False, write_manifest=False)
                sums = [res.records[t.key]["summary"] for t in res.tasks]
                # the demand the fleet meets the SLA for: output tokens that arrived per second.
                # (Tokens generated inside a short run from an empty start undercount a slow GPU:
                # its long requests are still in flight at the horizon.)
                tput = np.array([sum(w["arrived_output_tokens"] for w in s_["workloads"].values()) / s_["horizon_s"]
                                 for s_ in sums])
                att = np.array([s_["sla_attainment"] for s_ in sums], dtype=float)
                gph = r.gpus * 1e6 / (tput * 3600.0)  # GPU-hours per million output tokens, per replication
                m, lo, hi = mean_ci95(gph)
                row.update({"sla_attainment_mean": float(np.nanmean(att)),
                            "demand_output_tokens_per_s_mean": float(tput.mean()),
                            "gpu_hours_per_m_tokens_mean": m, "gpu_hours_per_m_tokens_ci95_lo": lo,
                            "gpu_hours_per_m_tokens_ci95_hi": hi})
                price, note = gpu_hour_price_eur(gpu)
                row["price_eur_per_gpu_h"] = price
                row["price_source"] = note
                if price is not None:
                    # rental bills every provisioned GPU-hour: cost = GPU-hours x price
                    em, elo, ehi = mean_ci95(gph * price)
                    row.update({"eur_per_m_tokens_mean": em, "eur_per_m_tokens_ci95_lo": elo,
                                "eur_per_m_tokens_ci95_hi": ehi})
                else:
                    row.update({"eur_per_m_tokens_mean": None, "eur_per_m_tokens_ci95_lo": None,
                                "eur_per_m_tokens_ci95_hi": None})
                    notes.add(f"{gpu}: {note}")
            rows.append(row)
            print(f"{gpu:14s} {precision}: min replicas {r.replicas}, GPUs {r.gpus}")
    table = pd.DataFrame(rows)
    write_csv(table, out, "gpu_generations")

    ok = table.dropna(subset=["min_gpus"]) if "min_gpus" in table else table
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    x = np.arange(len(ok))
    axes[0].bar(x, ok["min_gpus"], color="tab:blue")
    axes[0].set_ylabel(f"GPUs to meet SLA at {cfg['rate_per_s']:g} req/s")
    if "gpu_hours_per_m_tokens_mean" in ok:
        yerr = np.vstack([ok["gpu_hours_per_m_tokens_mean"] - ok["gpu_hours_per_m_tokens_ci95_lo"],
                          ok["gpu_hours_per_m_tokens_ci95_hi"] - ok["gpu_hours_per_m_tokens_mean"]])
        axes[1].bar(x, ok["gpu_hours_per_m_tokens_mean"], yerr=np.nan_to_num(yerr), capsize=4, color="tab:orange")
    axes[1].set_ylabel("GPU-hours per million output tokens")
    eur = pd.to_numeric(ok["eur_per_m_tokens_mean"], errors="coerce") if "eur_per_m_tokens_mean" in ok else None
    if eur is not None:
        lo_ = pd.to_numeric(ok["eur_per_m_tokens_ci95_lo"], errors="coerce")
        hi_ = pd.to_numeric(ok["eur_per_m_tokens_ci95_hi"], errors="coerce")
        yerr = np.nan_to_num(np.vstack([eur - lo_, hi_ - eur]))
        axes[2].bar(x, np.nan_to_num(eur), yerr=yerr, capsize=4, color="tab:green")
        for i, v in enumerate(eur):
            if not np.isfinite(v):
                axes[2].text(i, 0, "no EUR\nprice in\nthe data", ha="center", va="bottom", fontsize=8)
    axes[2].set_ylabel("EUR per million output tokens (on-demand rental)")
    for ax in axes:
        ax.set_xticks(x, [f"{g.split('-')[0].upper()}\n{p}" for g, p in zip(ok["gpu"], ok["precision"])])
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"Mixtral 8x7B, TP2, equal SLA ({', '.join(f'{v} >= {t:g}' for v, t in targets.items())}); "
                 f"{reps} replications", fontsize=10)
    png = save_png(fig, out, "gpu_generations")
    summary = {f"{r_['gpu']} min GPUs": r_["min_gpus"] for r_ in rows}
    summary.update({f"{r_['gpu']} GPU-h per M tokens": r_.get("gpu_hours_per_m_tokens_mean") for r_ in rows})
    summary.update({f"{r_['gpu']} EUR per M output tokens": (r_.get("eur_per_m_tokens_mean") if r_.get("price_eur_per_gpu_h")
                     else "no EUR price in the data") for r_ in rows})
    for i, n in enumerate(sorted(notes)):
        summary[f"cost note {i + 1}"] = n
    write_report(out, "GPU generations at equal SLA", summary, [("GPUs, GPU-hours and EUR per M tokens", png)], base,
                 [{"field": "generations", "value": str(GENERATIONS), "source / meaning": "assumption: A100 serves BF16 (no FP8 on Ampere)"}]
                 + [{"field": f"price_eur_per_gpu_h ({r_['gpu']})", "value": r_.get("price_eur_per_gpu_h"),
                     "source / meaning": r_.get("price_source")} for r_ in rows])
    print(table.to_string(index=False))
    for n in sorted(notes):
        print(f"note: {n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main_wrapper(main))
