"""Scale benchmark: a provider's fleet simulated as cells (not a test: numbers go in the README).

For fleets of 16, 256, 2,048 and 10,240 GPUs (Mixtral 8x7B FP8 TP2 on H100, calibrated step
model, chat lengths, Poisson arrivals at ``--load`` of each replica's fluid request capacity),
one simulated ``--horizon-s`` (default one hour), cells of ``--cell-replicas`` replicas:

* exact (every cell) where ``--exact-max-gpus`` allows, and sampled (``--sample`` cells);
  the sampled-vs-exact error of attainment, utilisation and TTFT/TPOT p99, and whether the
  exact value lies in the sampled interval; and, from the exact run alone, how often the
  interval of a sampled run would cover the exact value (``sampled_interval_coverage``: 200
  random samples of ``--sample`` cells drawn from the exact run's cells);
* wall and CPU seconds, peak RSS of each run (each in a fresh process), simulated requests
  per CPU-second vs fleet size;
* the speed-up of 2 workers over 1 on the sampled runs, with a process pool and with a local
  Dask cluster (``--dask``).

    python benchmarks/scale.py [--horizon-s 3600] [--gpus 16,256,2048,10240] [--json]

With --json the last line is one JSON object with one row per (fleet, mode, workers).
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time

from _path import ROOT, engine_build, use_sim  # noqa: E402

use_sim()


def fleet_scenario(gpus: int, horizon_s: float, load: float):
    from sim.perf.roofline import make_step_model
    from sim.scenario import scenario_from_dict
    from sim.serving.fluid import replica_request_capacity_per_s
    from sim.serving.replica import replica_from_spec
    import simpy

    replicas = max(1, gpus // 2)
    dep = {"name": "mixtral", "model": "mixtral-8x7b", "gpu": "h100-sxm", "tp": 2, "precision": "fp8",
           "replicas": replicas}
    work = {"name": "chat", "model": "mixtral-8x7b", "arrivals": {"kind": "poisson", "rate_per_s": 1.0},
            "prompt_tokens": {"dist": "lognormal", "mu": 6.7, "sigma": 0.8, "max": 14050},
            "output_tokens": {"dist": "lognormal", "mu": 4.9, "sigma": 1.0, "max": 1000}}
    data = {"name": f"fleet-{gpus}", "simulation": {"horizon_s": horizon_s, "warmup_s": min(120.0, horizon_s / 10),
                                                    "request_sample_size": 0, "timeseries_interval_s": horizon_s},
            "deployments": [dep], "workloads": [work]}
    sc = scenario_from_dict(data)
    w = sc.workloads[0]
    probe = replica_from_spec(simpy.Environment(), sc.deployments[0], make_step_model(sc.deployments[0]))
    cap = replica_request_capacity_per_s(probe, w.prompt_tokens.build().mean, w.output_tokens.build().mean)
    data["workloads"][0]["arrivals"]["rate_per_s"] = load * cap * replicas
    return scenario_from_dict(data)


def one(args) -> dict:
    """Run one configuration in this process and print its row as JSON."""
    from sim.study.cells import interval_coverage, run_cells
    from sim.study.sweep import make_executor
    sc = fleet_scenario(args.one_gpus, args.horizon_s, args.load)
    ex, close = (None, lambda: None)
    if args.one_workers > 0:
        if args.one_dask:
            from distributed import Client, LocalCluster
            cluster = LocalCluster(n_workers=args.one_workers, threads_per_worker=1, processes=True,
                                   dashboard_address=None)
            client = Client(cluster)
            ex = client.get_executor()

            def close():
                client.close()
                cluster.close()
        else:
            ex, close = make_executor(args.one_workers)
    t0, c0 = time.perf_counter(), time.process_time()
    ch0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    # a benchmark sizes its own work: no work limit (an exact hour of 2,048 GPUs is ~70 M requests)
    res = run_cells(sc, seed=1, max_replicas=args.cell_replicas,
                    sample=None if args.one_mode == "exact" else args.sample, executor=ex, max_work=math.inf)
    close()
    ch1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = time.process_time() - c0 + (ch1.ru_utime + ch1.ru_stime - ch0.ru_utime - ch0.ru_stime)
    s = res.summary
    row = {"gpus": args.one_gpus, "mode": args.one_mode, "workers": args.one_workers,
           "executor": "dask" if args.one_dask else ("pool" if args.one_workers else "serial"),
           "cells": s["cells"], "cells_simulated": s["cells_simulated"],
           "wall_s": time.perf_counter() - t0, "cpu_s": cpu,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "peak_rss_children_mb": ch1.ru_maxrss / 1024,
           "simulated_requests": sum(c["totals"]["arrivals"] for c in res.per_cell.values()),
           "fleet_requests": s["arrivals"]["value"]}
    row["requests_per_cpu_s"] = row["simulated_requests"] / cpu if cpu > 0 else None
    for k in ("sla_attainment", "gpu_utilisation", "request_utilisation"):
        row[k] = s[k]
    for k in ("ttft_s", "tpot_s"):
        row[f"{k}_p99"] = s[k]["p99"]
    if args.one_mode == "exact" and s["cells"] > args.sample:
        # how often a sampled run's interval would cover these exact values: random samples
        # of --sample cells drawn from this run's cells (no further simulation)
        row["sampled_interval_coverage"] = interval_coverage(res.cells, res.per_cell, args.sample, draws=200)
    print(json.dumps(row))
    return row


def child(argv: list[str]) -> dict:
    p = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, cwd=ROOT)
    if p.returncode != 0:
        raise SystemExit(p.stderr[-2000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpus", default="16,256,2048,10240")
    ap.add_argument("--horizon-s", type=float, default=3600.0)
    ap.add_argument("--load", type=float, default=0.6, help="share of each replica's fluid request capacity")
    ap.add_argument("--cell-replicas", type=int, default=16)
    ap.add_argument("--sample", type=int, default=4)
    ap.add_argument("--exact-max-gpus", type=int, default=2048)
    ap.add_argument("--dask", action="store_true", help="also time a local Dask cluster with 1 and 2 workers")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--one-gpus", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--one-mode", default="exact", help=argparse.SUPPRESS)
    ap.add_argument("--one-workers", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--one-dask", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one_gpus:
        one(args)
        return
    build = engine_build()
    print(f"sim: {build} engine")
    common = ["--horizon-s", str(args.horizon_s), "--load", str(args.load),
              "--cell-replicas", str(args.cell_replicas), "--sample", str(args.sample)]
    rows = []
    for g in [int(x) for x in args.gpus.split(",")]:
        exact = None
        if g <= args.exact_max_gpus:
            exact = child(["--one-gpus", str(g), "--one-mode", "exact", "--one-workers", "2", *common])
            rows.append(exact)
        runs = [("1", False), ("2", False)] + ([("1", True), ("2", True)] if args.dask else [])
        for w, dask in runs:
            r = child(["--one-gpus", str(g), "--one-mode", "sampled", "--one-workers", w, *common]
                      + (["--one-dask"] if dask else []))
            if exact is not None:
                for k in ("sla_attainment", "gpu_utilisation", "request_utilisation"):
                    e, s = exact[k]["value"], r[k]["value"]
                    r[f"{k}_error"] = (s - e) if e is not None and s is not None else None
                    r[f"{k}_exact_in_ci"] = (r[k]["ci_low"] <= e <= r[k]["ci_high"]) if e is not None else None
                for k in ("ttft_s_p99", "tpot_s_p99"):
                    e, s = exact[k]["value"], r[k]["value"]
                    r[f"{k}_rel_error"] = (s / e - 1) if e else None
                    r[f"{k}_exact_in_ci"] = r[k]["ci_low"] <= e <= r[k]["ci_high"] if e is not None else None
            rows.append(r)
        one_w = [x for x in rows if x["gpus"] == g and x["mode"] == "sampled"]
        for ex_name in ("pool", "dask"):
            a = [x for x in one_w if x["executor"] == ex_name and x["workers"] == 1]
            b = [x for x in one_w if x["executor"] == ex_name and x["workers"] == 2]
            if a and b:
                b[0]["speedup_vs_1_worker"] = a[0]["wall_s"] / b[0]["wall_s"]
    for r in rows:
        r["engine_build"] = build
        print(f"{r['gpus']:>6} GPUs {r['mode']:>7} {r['executor']:>6} x{r['workers']}  cells {r['cells_simulated']:>4}/{r['cells']:<4}"
              f" wall {r['wall_s']:8.1f} s  cpu {r['cpu_s']:8.1f} s  {r['requests_per_cpu_s'] or 0:9.0f} req/cpu-s"
              f"  rss {max(r['peak_rss_mb'], r['peak_rss_children_mb']):6.0f} MB"
              f"  SLA {r['sla_attainment']['value']:.4f}  TTFT p99 {r['ttft_s_p99']['value']:.3f} s"
              + (f"  speed-up {r['speedup_vs_1_worker']:.2f}x" if "speedup_vs_1_worker" in r else ""))
        for k, c in r.get("sampled_interval_coverage", {}).items():
            print(f"{'':>12}coverage of the {args.sample}-cell sampled 95 % interval, {k}: {c['coverage']:.1%} "
                  f"of {c['draws']} draws (median width {c['median_rel_width'] or 0:.2%}, "
                  f"median error {c['median_rel_error'] or 0:+.2%} of the exact value)")
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
