"""Fixed fleets or a capacity policy: what does following a weekday's demand cost and deliver?

Scenario: ``experiments/scenarios/autoscale_day.toml``: Mixtral 8x7B (FP8, TP2) at one Paris
site serving a finance tenant whose arrivals follow the ``finance`` hour-of-week profile
(mean 40 req/s; about 22 req/s at night and 110 req/s at the afternoon peak of a Monday),
on a committed base of 4 H100s (committed rental, EUR 2.34/GPU-h) plus on-demand tranches
(EUR 3.17/GPU-h, 15-minute lead time: an assumption).  Four ways to run the day:

* ``fixed-base``: the 4 committed GPUs only;
* ``fixed-peak``: 10 committed GPUs all day (the peak fleet the threshold policy reaches);
* ``threshold``: the scenario's policy: look every 15 min, order 2 on-demand GPUs when
  request utilisation (completed / fluid capacity) exceeds 0.6 or more than 4 requests wait
  per replica, release when it is under 0.25 and nothing waits (drained for 10 min first);
* ``forecast``: order a lead time ahead of the tenant's expected demand (its NHPP profile),
  keeping 20 % headroom (the default) over the GPUs that demand needs at a replica's fluid
  request capacity (``sim.serving.fluid.replica_request_capacity``).

Replicas join when ordered GPUs arrive and are drained before released GPUs leave
(:class:`sim.economics.capacity.FleetCapacity`).  Same seeds for every variant (common random
numbers), R replications, mean and 95% CI.  Outputs: ``autoscale.csv`` (per variant),
``autoscale_replications.csv``, ``autoscale.png`` (GPUs in the fleet over the day against
the demand profile; SLA attainment vs cost) and ``report.html``.

    python experiments/autoscale.py            # 4 variants x 2 replications of a full day (~15 min CPU)
    python experiments/autoscale.py --quick    # smoke run (seconds)
"""
from __future__ import annotations

import _common  # noqa: F401  (sets sys.path and the matplotlib backend)
from _common import apply_sets, executor, main_wrapper, out_dir, parser, save_png, sweep_dir, write_csv, write_report

SCENARIO = _common.ROOT / "experiments" / "scenarios" / "autoscale_day.toml"
PEAK_GPUS = 10
FULL = dict(replications=2, horizon_s=86400.0, overrides={})
# quick: 3 h from 06:00 Monday at a tenth of the rate, so the morning ramp is in the window
QUICK = dict(replications=1, horizon_s=3 * 3600.0,
             overrides={"workloads.0.arrivals.rate_per_s": 4.0, "workloads.0.arrivals.start_hour_of_week": 5.0})


def variants(base_gpus: int) -> dict[str, dict]:
    tp = 2
    return {
        "fixed-base": {"capacity_policy.kind": "fixed"},
        "fixed-peak": {"capacity_policy.kind": "fixed", "sites.0.contracts.0.gpus": PEAK_GPUS,
                       "deployments.0.replicas": PEAK_GPUS // tp},
        "threshold": {},
        "forecast": {"capacity_policy.kind": "forecast"},
    }


def fleet_curve(events: list, gpus_start: int, horizon_s: float):
    """GPUs in the fleet over time from the capacity events (arrive +, leave -)."""
    t, g = [0.0], [gpus_start]
    for time_s, kind, gpus in sorted(events, key=lambda e: e[0]):
        if kind in ("arrive", "leave"):
            t.append(time_s)
            g.append(g[-1] + (gpus if kind == "arrive" else -gpus))
    t.append(horizon_s)
    g.append(g[-1])
    return t, g


def main(argv=None) -> int:
    args = parser(__file__, __doc__).parse_args(argv)
    cfg = QUICK if args.quick else FULL
    reps = args.replications or cfg["replications"]
    out = out_dir(args)

    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd

    from sim.scenario import load_scenario, with_overrides
    from sim.study.sweep import ci_columns, run_sweep

    base = with_overrides(apply_sets(load_scenario(SCENARIO), args),
                          {"simulation.horizon_s": cfg["horizon_s"], **cfg["overrides"]})
    horizon = base.simulation.horizon_s
    site = base.sites[0].name
    rows, curves = [], {}
    with sweep_dir(args, "autoscale") as sdir, executor(args) as ex:
        for name, ov in variants(base.sites[0].contracts[0].gpus).items():
            scen = with_overrides(base, ov)
            res = run_sweep(scen, {}, reps, sdir / name, root_seed=args.seed, executor=ex, progress=False,
                            write_tables=False, write_manifest=False)
            for t in res.tasks:
                s = res.records[t.key]["summary"]
                e = s["economics"]
                cap = (e.get("capacity") or {}).get("sites", {}).get(site)
                if cap is not None and t.replication == 0:
                    curves[name] = fleet_curve(cap["events"], cap["gpus_start"], horizon)
                elif t.replication == 0:
                    curves[name] = ([0.0, horizon], [s["gpus"], s["gpus"]])
                w = next(iter(s["workloads"].values()))
                rows.append({
                    "variant": name, "replication": t.replication, "seed": t.seed,
                    "gpu_hours": s["gpu_hours"], "gpus_peak": cap["gpus_peak"] if cap else s["gpus"],
                    "orders": cap["orders"] if cap else 0, "releases": cap["releases"] if cap else 0,
                    "migrated_requests": e["capacity"]["migrated_requests"] if cap else 0,
                    "sla_attainment": s["sla_attainment"], "ttft_p99_s": w["ttft_s"]["p99"],
                    "throughput_utilisation": s["throughput_utilisation"],
                    "rejected": s["rejected"], "costs_eur": e["costs_eur"], "revenue_eur": e["revenue_eur"],
                    "margin_eur": e["margin_eur"], "cost_eur_per_mtok": e["cost_eur_per_mtok"],
                    "sla_credits_eur": e["sla_credits_cents"] / 100,
                })
            print(f"{name:<11} done ({res.computed} runs, {res.wall_s:.1f} s)")
    reps_df = pd.DataFrame(rows)
    metrics = ["gpu_hours", "gpus_peak", "orders", "sla_attainment", "ttft_p99_s", "throughput_utilisation",
               "costs_eur", "sla_credits_eur", "margin_eur", "cost_eur_per_mtok", "migrated_requests"]
    table_rows = []
    order = list(variants(0))
    for name in order:
        grp = reps_df[reps_df["variant"] == name]
        row = {"variant": name, "replications": len(grp)}
        row.update(ci_columns(grp, metrics))
        table_rows.append(row)
    table = pd.DataFrame(table_rows)
    write_csv(table, out, "autoscale")
    write_csv(reps_df, out, "autoscale_replications")

    # figure: fleet over the day against expected demand; attainment vs cost
    w0 = base.workloads[0]
    proc = w0.arrivals.build()
    grid = np.arange(0.0, horizon, 300.0)
    rate = [proc.expected_count(a, a + 300.0) / 300.0 if hasattr(proc, "expected_count") else proc.mean_rate_per_s()
            for a in grid]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    ax = axes[0]
    for name in order:
        if name in curves:
            t_, g_ = curves[name]
            ax.step(np.array(t_) / 3600.0, g_, where="post", label=name)
    ax.set_xlabel("hour of the run (Monday from 00:00 UTC" + (")" if not args.quick else " + offset)"))
    ax.set_ylabel("GPUs in the fleet")
    ax2 = ax.twinx()
    ax2.plot(grid / 3600.0, rate, color="grey", lw=1, alpha=0.6, label="expected arrivals")
    ax2.set_ylabel("expected requests/s (grey)")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Fleet (replication 0) against demand")
    ax = axes[1]
    for name in order:
        r_ = table[table["variant"] == name].iloc[0]
        x, y = r_["costs_eur_mean"], r_["sla_attainment_mean"]
        ax.errorbar([x], [y], xerr=[[x - r_["costs_eur_ci95_lo"]], [r_["costs_eur_ci95_hi"] - x]],
                    yerr=[[y - r_["sla_attainment_ci95_lo"]], [r_["sla_attainment_ci95_hi"] - y]], fmt="o", capsize=3)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=9)
    ax.axhline(w0.sla.attainment_target, color="k", lw=0.5, ls="--")
    ax.set_xlabel("costs of the day, EUR (rental + SLA credits)")
    ax.set_ylabel("SLA attainment (TTFT and TPOT)")
    ax.set_title(f"Attainment vs cost, mean and 95% CI over {reps} replication(s)")
    fig.tight_layout()
    fig_path = save_png(fig, out, "autoscale")

    summary = {r["variant"]: {"gpu_hours": r["gpu_hours_mean"], "sla_attainment": r["sla_attainment_mean"],
                              "costs_eur": r["costs_eur_mean"], "margin_eur": r["margin_eur_mean"]}
               for r in table_rows}
    write_report(out, "Fixed fleets vs capacity policies over a weekday", summary, [fig_path], base)
    print(table[["variant", "gpu_hours_mean", "gpus_peak_mean", "sla_attainment_mean", "ttft_p99_s_mean",
                 "costs_eur_mean", "margin_eur_mean"]].to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main_wrapper(main))
