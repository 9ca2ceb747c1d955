"""How many GPUs does Mixtral 8x7B on H100 need to meet a 99% latency SLA, as demand grows?

Sweeps the replica count of the default scenario's deployment (TP2, so GPUs = 2 x replicas)
against four Poisson demand levels, five replications each with common random numbers
(replication r uses the same seed at every point, so the curves are paired).  Each run
simulates two minutes of Poisson traffic, the first 30 s left out as warm-up.  Output: SLA attainment and p99
TTFT with 95% confidence intervals against GPUs, and the smallest GPU count whose mean
attainment meets the workload's target at each demand level.

    python experiments/capacity_sweep.py            # 64 points x 5 replications
    python experiments/capacity_sweep.py --quick    # smoke run
"""
from __future__ import annotations

import time

import _common  # noqa: F401  (sets sys.path and the matplotlib backend)
from _common import apply_sets, executor, main_wrapper, out_dir, parser, save_png, sweep_dir, write_csv, write_report

# Sweep design (assumption: chosen so each run is a few simulated minutes and the attainment
# curve crosses the target inside the replica range at every demand level).
FULL = dict(replicas=list(range(1, 17)), rates_per_s=[25.0, 50.0, 100.0, 200.0], replications=5,
            horizon_s=120.0, warmup_s=30.0)
QUICK = dict(replicas=[1, 2, 4], rates_per_s=[50.0], replications=2, horizon_s=20.0, warmup_s=5.0)


def main(argv=None) -> int:
    args = parser(__file__, __doc__).parse_args(argv)
    cfg = QUICK if args.quick else FULL
    reps = args.replications or cfg["replications"]
    out = out_dir(args)

    import matplotlib.pyplot as plt
    import pandas as pd

    from sim.scenario import load_scenario, with_overrides
    from sim.study.sweep import run_sweep

    base = with_overrides(apply_sets(load_scenario("day"), args), {
        "simulation.horizon_s": cfg["horizon_s"],
        "simulation.warmup_s": cfg["warmup_s"],
    })
    dep, wl = base.deployments[0], base.workloads[0]
    target = wl.sla.attainment_target
    grid = {"workloads.0.arrivals.rate_per_s": cfg["rates_per_s"], "deployments.0.replicas": cfg["replicas"]}

    t0 = time.perf_counter()
    with sweep_dir(args, "capacity_sweep") as sdir, executor(args) as ex:
        res = run_sweep(base, grid, reps, sdir, root_seed=args.seed, executor=ex)
    wall_s = time.perf_counter() - t0
    print(f"{len(res.points)} points x {reps} replications: computed {res.computed}, "
          f"reused {res.reused}, {wall_s:.1f} s wall")

    t = res.points_table.rename(columns={"workloads.0.arrivals.rate_per_s": "rate_per_s",
                                          "deployments.0.replicas": "replicas"})
    t["gpus"] = t["replicas"] * dep.tp
    metrics = ["sla_attainment", "ttft_s.p99", "tpot_s.p99", "gpu_utilisation", "throughput_output_tokens_per_s"]
    cols = ["rate_per_s", "replicas", "gpus", "replications"]
    for m in metrics:
        cols += [f"{m}_mean", f"{m}_ci95_lo", f"{m}_ci95_hi"]
    table = t[cols]
    write_csv(table, out, "capacity_sweep")

    # smallest GPU count meeting the target (mean over replications) per demand level
    rows = []
    for rate, g in table.groupby("rate_per_s", sort=True):
        ok = g[g["sla_attainment_mean"] >= target].sort_values("gpus")
        rows.append({"rate_per_s": rate, "target": target,
                     "min_gpus": int(ok["gpus"].iloc[0]) if len(ok) else None,
                     "min_gpus_lower_ci": int(g[g["sla_attainment_ci95_lo"] >= target]["gpus"].min())
                     if (g["sla_attainment_ci95_lo"] >= target).any() else None})
    answer = pd.DataFrame(rows)
    write_csv(answer, out, "min_gpus")

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for rate, g in table.groupby("rate_per_s", sort=True):
        g = g.sort_values("gpus")
        for ax, m in zip(axes, ["sla_attainment", "ttft_s.p99"]):
            line, = ax.plot(g["gpus"], g[f"{m}_mean"], marker="o", ms=3, label=f"{rate:g} req/s")
            ax.fill_between(g["gpus"], g[f"{m}_ci95_lo"], g[f"{m}_ci95_hi"], color=line.get_color(), alpha=0.2)
    axes[0].axhline(target, color="k", ls="--", lw=1, label=f"target {target:g}")
    axes[0].set_ylabel("SLA attainment (TTFT and TPOT met)")
    axes[1].axhline(wl.sla.ttft_s, color="k", ls="--", lw=1, label=f"TTFT target {wl.sla.ttft_s:g} s")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("p99 TTFT, s")
    for ax in axes:
        ax.set_xlabel(f"GPUs ({dep.gpu}, TP{dep.tp} replicas of {dep.model})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Capacity sweep: mean and 95% CI over {reps} replications (common random numbers), "
                 f"{cfg['horizon_s']:g} s simulated per run", fontsize=10)
    png = save_png(fig, out, "capacity_sweep")

    summary = {f"min GPUs at {r['rate_per_s']:g} req/s": r["min_gpus"] for r in rows}
    summary.update({"points": len(res.points), "replications": reps, "target attainment": target})
    write_report(out, "Capacity sweep: GPUs needed for the SLA", summary, [("SLA attainment and p99 TTFT vs GPUs", png)],
                 base, [{"field": "sweep grid", "value": str(grid), "source / meaning": "assumption: design of this experiment"}])
    print(answer.to_string(index=False))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main_wrapper(main))
