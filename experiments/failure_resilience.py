"""How do SLA attainment, availability and margin degrade as GPU and node failures become more frequent?

Scenario: ``experiments/scenarios/contracts_faults.toml`` (Mixtral 8x7B on 16 H100 in two
French sites, owned colo + on-demand rental, finance and healthcare tenants with their own
prices), with its GPU and node failure rates set to a multiple (1x, 100x, 1,000x, 3,000x, 10,000x) of the
Llama 3 rates of the ``[faults]`` defaults (3.029e-4 per GPU-day, 7.957e-4 per node-day,
``sim.economics.faults.llama3_rates``) and the repair time at the schema default (median 4 h,
lognormal sigma 1: an assumption).  Site outages stay at their default (0.5 per site-year,
an assumption) and are not scaled.  Each multiplier runs with both requeue policies:
``preserve`` (a request on a failed replica is requeued keeping the tokens it has emitted;
``sim.economics.faults.FaultConfig.keep_generated = True``) and ``recompute`` (it restarts generation).  Same
seeds across all cells (common random numbers), R replications, mean and 95% CI.

Runs last 20 simulated minutes from an all-up fleet, so at 1x-100x almost no run sees a
failure (its 16 GPUs on 2 nodes see one failure every ~155 days at 1x): those cells measure the model's
no-failure baseline, not zero risk.  The table therefore also gives the *steady-state*
availability of one replica, 1 / (1 + lambda x mean repair time) with lambda = its GPUs' and
its node's failure rates (alternating renewal; no simulation), which is what a long run
would converge to.

    python experiments/failure_resilience.py            # 5 multipliers x 2 policies x 4 replications (~95 s CPU)
    python experiments/failure_resilience.py --quick    # smoke run (seconds)
"""
from __future__ import annotations

import math

import _common  # noqa: F401  (sets sys.path and the matplotlib backend)
from _common import apply_sets, executor, main_wrapper, out_dir, parser, save_png, sweep_dir, write_csv, write_report

SCENARIO = _common.ROOT / "experiments" / "scenarios" / "contracts_faults.toml"
POLICIES = ["preserve", "recompute"]
# assumption: a 20-minute window keeps the full run near 2 minutes on a busy 2-core machine.
# 10x is left out (it sees no failure in 20 minutes, like 1x and 100x); 3000x shows the knee.
FULL = dict(multipliers=[1, 100, 1000, 3000, 10000], replications=4, horizon_s=1200.0)
# quick: 100,000x so that a 5-minute smoke run still exercises failures and requeues
QUICK = dict(multipliers=[1, 100000], replications=1, horizon_s=300.0)
REPAIR_MEDIAN_S = 4 * 3600.0  # the FaultsSpec default (assumption, no MTTR recorded)
REPAIR_SIGMA = 1.0            # the FaultsSpec default (assumption)


def steady_state_availability(gpu_per_day: float, node_per_day: float, tp: int) -> float:
    """Long-run share of time a TP-``tp`` replica is up: it fails when one of its GPUs or its
    node fails, and is repaired after a lognormal time (mean = median x exp(sigma^2 / 2))."""
    lam_per_s = (tp * gpu_per_day + node_per_day) / 86400.0
    mean_repair_s = REPAIR_MEDIAN_S * math.exp(REPAIR_SIGMA ** 2 / 2.0)
    return 1.0 / (1.0 + lam_per_s * mean_repair_s)


def main(argv=None) -> int:
    args = parser(__file__, __doc__).parse_args(argv)
    cfg = QUICK if args.quick else FULL
    reps = args.replications or cfg["replications"]
    out = out_dir(args)

    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd

    from sim.study.capacity_search import vertical_attainment
    from sim.economics.faults import llama3_rates
    from sim.scenario import load_scenario, with_overrides
    from sim.study.sweep import ci_columns, run_sweep

    rates = llama3_rates()
    g1, n1 = rates.gpu_per_gpu_day, rates.node_per_node_day
    base = with_overrides(apply_sets(load_scenario(SCENARIO), args), {
        "simulation.horizon_s": cfg["horizon_s"],
        "faults.repair_median_s": REPAIR_MEDIAN_S, "faults.repair_sigma": REPAIR_SIGMA})
    tp = base.deployments[0].tp
    gpus = sum(d.replicas * d.tp for d in base.deployments)

    reps_rows, rows = [], []
    with sweep_dir(args, "failure_resilience") as sdir, executor(args) as ex:
        for mult in cfg["multipliers"]:
            scen = with_overrides(base, {"faults.enabled": True,
                                         "faults.gpu_failures_per_gpu_day": g1 * mult,
                                         "faults.node_failures_per_node_day": n1 * mult})
            res = run_sweep(scen, {"faults.requeue": POLICIES}, reps, sdir / f"x{mult}", root_seed=args.seed,
                            executor=ex, progress=False, write_tables=False, write_manifest=False)
            for t in res.tasks:
                s = res.records[t.key]["summary"]
                e = s["economics"]
                a = e["availability"]
                reps_rows.append({
                    "multiplier": mult, "requeue": res.points[t.point].overrides["faults.requeue"],
                    "replication": t.replication, "seed": t.seed,
                    "sla_attainment": s["sla_attainment"], "ttft_p99_s": s["ttft_s"]["p99"],
                    **{f"{v}_attainment": a_ for v, a_ in sorted(vertical_attainment(s, scen).items())},
                    "rejected_share": s["rejected"] / s["arrivals"] if s["arrivals"] else float("nan"),
                    "availability": a["replica_availability"],
                    "failures": sum(a["failures"].values()), "requeued_requests": a["requeued_requests"],
                    "margin_share": e["margin_share"], "margin_eur": e["margin_eur"],
                    "revenue_eur": e["revenue_eur"], "costs_eur": e["costs_eur"],
                })
            print(f"x{mult:<6g} done ({res.computed} runs, {res.wall_s:.1f} s)")
    reps_df = pd.DataFrame(reps_rows)
    verticals = sorted({w.vertical for w in base.workloads})
    metrics = ["sla_attainment", *[f"{v}_attainment" for v in verticals], "rejected_share", "availability", "margin_share", "margin_eur", "ttft_p99_s", "failures",
               "requeued_requests"]
    for (mult, pol), grp in reps_df.groupby(["multiplier", "requeue"], sort=True):
        row = {"multiplier": mult, "requeue": pol, "replications": len(grp),
               "gpu_failures_per_gpu_day": g1 * mult, "node_failures_per_node_day": n1 * mult,
               "steady_state_availability": steady_state_availability(g1 * mult, n1 * mult, tp)}
        row.update(ci_columns(grp, metrics))
        rows.append(row)
    table = pd.DataFrame(rows)
    write_csv(table, out, "failure_resilience")
    write_csv(reps_df, out, "failure_resilience_replications")

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    panels = [("sla_attainment", "SLA attainment (both verticals)"), ("availability", "replica availability (GPU-weighted)"),
              ("margin_share", "gross margin share")]
    for ax, (m_, label) in zip(axes, panels):
        for k, (pol, style) in enumerate(zip(POLICIES, ["o-", "s--"])):
            t_ = table[table["requeue"] == pol]
            x = t_["multiplier"].to_numpy(dtype=float) * (1.0 + 0.06 * k)  # small offset to separate bars
            y = t_[f"{m_}_mean"].to_numpy(dtype=float)
            yerr = np.nan_to_num(np.vstack([y - t_[f"{m_}_ci95_lo"], t_[f"{m_}_ci95_hi"] - y]))
            ax.errorbar(x, y, yerr=yerr, fmt=style, capsize=3, label=f"requeue = {pol}")
        if m_ == "availability":
            t_ = table[table["requeue"] == POLICIES[0]]
            ax.plot(t_["multiplier"], t_["steady_state_availability"], ":", color="grey",
                    label="steady state (analytic, long run)")
        ax.set_xscale("log")
        ax.set_xlabel("failure rate / Llama 3 rate")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle(f"Failure resilience (scenario contracts_faults): {gpus} H100, {cfg['horizon_s'] / 60:g}-min runs from an all-up fleet, "
                 f"repair median {REPAIR_MEDIAN_S / 3600:g} h; {reps} replications, 95% CI", fontsize=10)
    png = save_png(fig, out, "failure_resilience")

    summary: dict = {}
    for r_ in rows:
        k = f"x{r_['multiplier']:g} {r_['requeue']}"
        per_v = ", ".join(f"{v} {r_[f'{v}_attainment_mean']:.4f}" for v in verticals)
        summary[k] = (f"attainment {r_['sla_attainment_mean']:.4f} ({per_v}), rejected {r_['rejected_share_mean']:.4f}, availability {r_['availability_mean']:.4f} "
                      f"(steady state {r_['steady_state_availability']:.4f}), margin share {r_['margin_share_mean']:.4f}, "
                      f"failures {r_['failures_mean']:.2f}/run")
    write_report(out, "Failure resilience", summary, [("Attainment, availability and margin vs failure rate", png)], base,
                 [{"field": "failure multipliers", "value": str(cfg["multipliers"]),
                   "source / meaning": f"x the Llama 3 rates {g1:.4g}/GPU-day, {n1:.4g}/node-day (models/economics/failures.csv)"},
                  {"field": "horizon_s", "value": cfg["horizon_s"], "source / meaning": "assumption: run-time budget"},
                  {"field": "site outages", "value": "0.5 per site-year", "source / meaning": "schema default (assumption), not scaled"}])
    cols = ["multiplier", "requeue", "sla_attainment_mean", *[f"{v}_attainment_mean" for v in verticals],
            "rejected_share_mean", "availability_mean", "steady_state_availability",
            "margin_share_mean", "failures_mean", "requeued_requests_mean"]
    print(table[cols].to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main_wrapper(main))
