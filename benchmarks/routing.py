"""Routing cost against fleet size (not a test: numbers go in the README).

Simulated requests per CPU-second of one saturated pool of N identical replicas behind the
``least_outstanding`` router (or ``--policy``), for N = 16, 256, 1,024 and 4,096.  Every
replica is small and fast (constant step model: 10 ms per iteration, 2 sequences at a
time, ~10 output tokens per request, so a request takes ~0.1 s and a replica serves
~20 requests/s) and the pool is offered 120 % of its capacity over a short horizon (20
service times), so every replica is busy with a queue from the first second and each
replica's work is the same at every size: only the router's (and the event queue's) cost
can grow with N.  Small fleets repeat the run over consecutive seeds until ``--requests``
arrivals are simulated.

    python benchmarks/routing.py [--sizes 16,256,1024,4096] [--requests N] [--policy P] [--repeat R] [--json]

With --json the last line is one JSON object: per size the requests, CPU seconds and
requests per CPU-second (with ``--repeat``, the median over the interleaved rounds and each
round's rate), ``ratio_1024_to_16`` (target: >= 0.8) and the ratio of each round.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

from _path import engine_build, use_sim  # noqa: E402

use_sim()

STEP_S = 0.01
MAX_SEQS = 2
OUT_MEAN = 10.0
LOAD = 1.2


HORIZON_SERVICE_TIMES = 20.0


def fleet_scenario(n_replicas: int, policy: str = "least_outstanding"):
    from sim.scenario import scenario_from_dict
    service_s = OUT_MEAN * STEP_S
    rate = LOAD * n_replicas * MAX_SEQS / service_s
    horizon = HORIZON_SERVICE_TIMES * service_s
    data = {
        "name": f"bench-routing-{n_replicas}",
        "router": {"policy": policy},
        "simulation": {"horizon_s": horizon, "request_sample_size": 0,
                       "timeseries_interval_s": horizon},
        "deployments": [{"name": "pool", "model": "m", "replicas": n_replicas,
                         "batching": {"max_num_seqs": MAX_SEQS, "max_batched_tokens": 4096},
                         "step_time": {"kind": "constant", "decode_step_s": STEP_S,
                                       "prefill_per_token_s": 1e-5, "kv_cache_tokens": 1 << 20}}],
        "workloads": [{"name": "w", "model": "m",
                       "arrivals": {"kind": "poisson", "rate_per_s": rate},
                       "prompt_tokens": {"dist": "constant", "value": 50},
                       "output_tokens": {"dist": "geometric", "mean": OUT_MEAN}}],
    }
    return scenario_from_dict(data)


def bench(n_replicas: int, min_requests: int, policy: str) -> dict:
    from sim.serving.world import World
    sc = fleet_scenario(n_replicas, policy)
    arrivals = completed = runs = 0
    util = 0.0
    c0 = time.process_time()
    while arrivals < min_requests:
        w = World(sc, 1 + runs)
        w.run()
        s = w.summary()
        arrivals += s["arrivals"]
        completed += s["completed"]
        util += s["gpu_utilisation"]
        runs += 1
    cpu = time.process_time() - c0
    return {"replicas": n_replicas, "runs": runs, "requests": arrivals, "completed": completed,
            "cpu_s": cpu, "requests_per_cpu_s": arrivals / cpu, "gpu_utilisation": util / runs}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="16,256,1024,4096", help="comma-separated replica counts")
    ap.add_argument("--requests", type=int, default=200_000,
                    help="at least this many arrivals per size (fewer: a 16-replica round lasts well under a CPU-second and is noisy)")
    ap.add_argument("--policy", default="least_outstanding",
                    choices=["least_outstanding", "power_of_two", "round_robin", "central_queue"])
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds over all sizes, interleaved (16, 256, ..., 16, 256, ...) so drift of a shared "
                         "machine hits every size alike; the rate per size is the median over rounds")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    if a.repeat < 1:
        ap.error(f"--repeat must be >= 1; got {a.repeat}")
    build = engine_build()
    print(f"sim: {build} engine")
    sizes = [int(x) for x in a.sizes.split(",")]
    rounds: dict[int, list[dict]] = {n: [] for n in sizes}
    for k in range(a.repeat):
        for n in sizes:
            r = bench(n, a.requests, a.policy)
            rounds[n].append(r)
            print(f"round {k + 1}: {n:>6} replicas: {r['runs']:>3} runs, {r['requests']:>8} requests in "
                  f"{r['cpu_s']:.2f} CPU-s = {r['requests_per_cpu_s']:,.0f} req/CPU-s "
                  f"(GPU utilisation {r['gpu_utilisation']:.2f})")
    rows = []
    for n in sizes:
        rates = [r["requests_per_cpu_s"] for r in rounds[n]]
        row = dict(rounds[n][0])
        row.update({"cpu_s": statistics.median(r["cpu_s"] for r in rounds[n]),
                    "requests_per_cpu_s": statistics.median(rates), "rounds": rates})
        rows.append(row)
    by = {r["replicas"]: r for r in rows}
    ratio = (by[1024]["requests_per_cpu_s"] / by[16]["requests_per_cpu_s"]) if 16 in by and 1024 in by else None
    per_round = ([r1["requests_per_cpu_s"] / r0["requests_per_cpu_s"] for r0, r1 in zip(rounds[16], rounds[1024])]
                 if ratio is not None else [])
    if ratio is not None:
        print(f"1024 / 16 replicas: {ratio:.2f} (median rates)"
              + (f"; per round {', '.join(f'{x:.2f}' for x in per_round)}" if a.repeat > 1 else ""))
    if a.json:
        print(json.dumps({"policy": a.policy, "sizes": rows, "ratio_1024_to_16": ratio,
                          "ratio_1024_to_16_per_round": per_round, "engine_build": build}))


if __name__ == "__main__":
    main()
