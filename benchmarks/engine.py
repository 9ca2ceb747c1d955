"""Engine speed and memory benchmark (not a test: numbers go in the README).

Measures simulated requests per wall-second of
  (i)  the serving engine on a saturated 16-replica pool (continuous batching, chunked
       prefill, paged KV cache, event skipping), and
  (ii) a bare SimPy M/M/c loop (Resource + one process per request) with as many requests,
and their ratio; then the peak resident memory of a 1-million-request engine run (in a
fresh process), beside a 250k-request run to show memory is flat in request count.

    python benchmarks/engine.py [--requests N] [--mem-requests N] [--json]

With --json the last line is one JSON object with engine_requests_per_s,
simpy_requests_per_s, ratio, peak_rss_mb (and more).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from _path import ROOT, engine_build, use_sim  # noqa: E402

use_sim()


def pool_scenario(n_requests: int, step_model: str = "constant"):
    from sim.scenario import scenario_from_dict
    # 16 replicas; a constant step model shaped like an H100 Mixtral replica (20 ms decode
    # step plus 50 us per prefill token); ~260 tokens out per request at 256 seqs per
    # replica gives a capacity near 16 * 256 / (0.02 * 260) ~ 790 req/s: offer 95 % of it.
    rate = 150.0
    step = {"kind": "constant", "decode_step_s": 0.02, "prefill_per_token_s": 5e-5,
            "per_kv_token_s": 1e-8, "kv_cache_tokens": 400_000}
    if step_model != "constant":
        step = {"kind": step_model}
    data = {
        "name": "bench-pool",
        "simulation": {"horizon_s": n_requests / rate, "request_sample_size": 10_000,
                       "timeseries_interval_s": 60.0},
        "deployments": [{"name": "pool", "model": "mixtral-8x7b", "gpu": "h100-sxm", "tp": 2,
                         "precision": "fp8", "replicas": 16,
                         "batching": {"max_num_seqs": 256, "max_batched_tokens": 8192},
                         "step_time": step}],
        "workloads": [{"name": "chat", "model": "mixtral-8x7b",
                       "arrivals": {"kind": "poisson", "rate_per_s": rate},
                       "prompt_tokens": {"dist": "lognormal", "mu": 6.7, "sigma": 0.8, "max": 14050},
                       "output_tokens": {"dist": "lognormal", "mu": 4.9, "sigma": 1.0, "max": 1000}}],
    }
    return scenario_from_dict(data)


def bench_engine(n_requests: int, step_model: str) -> dict:
    from sim.serving.world import World
    sc = pool_scenario(n_requests, step_model)
    t0 = time.perf_counter()
    w = World(sc, 1)
    w.run()
    s = w.summary()
    wall = time.perf_counter() - t0
    return {"requests": s["arrivals"], "wall_s": wall, "requests_per_s": s["arrivals"] / wall,
            "gpu_utilisation": s["gpu_utilisation"], "events": s["engine"]["events"],
            "iterations": s["engine"]["iterations"], "completed": s["completed"]}


def bench_simpy(n_requests: int, c: int = 16) -> dict:
    import numpy as np
    import simpy
    rng = np.random.default_rng(1)
    lam, mu = 0.9 * c, 1.0
    inter = rng.exponential(1 / lam, n_requests).tolist()
    serv = rng.exponential(1 / mu, n_requests).tolist()
    env = simpy.Environment()
    servers = simpy.Resource(env, capacity=c)
    done = [0]

    def customer(s):
        with servers.request() as req:
            yield req
            yield env.timeout(s)
        done[0] += 1

    def source():
        for a, s in zip(inter, serv):
            yield env.timeout(a)
            env.process(customer(s))

    t0 = time.perf_counter()
    env.process(source())
    env.run()
    wall = time.perf_counter() - t0
    return {"requests": n_requests, "wall_s": wall, "requests_per_s": n_requests / wall}


def peak_rss_child(n_requests: int, step_model: str) -> float:
    code = (f"import sys, resource; sys.path.insert(0, {str(ROOT / 'benchmarks')!r});"
            f"from engine import bench_engine; r = bench_engine({n_requests}, {step_model!r});"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, r['requests'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    mb, n = out.stdout.split()
    return float(mb)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200_000, help="requests for the speed runs")
    ap.add_argument("--mem-requests", type=int, default=1_000_000, help="requests for the memory run")
    ap.add_argument("--step-model", default="constant", choices=["constant", "calibrated", "roofline"])
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    build = engine_build()
    print(f"sim    : {build} engine")
    eng = bench_engine(a.requests, a.step_model)
    print(f"engine : {eng['requests']:>9} requests in {eng['wall_s']:.2f} s = {eng['requests_per_s']:,.0f} req/s "
          f"(GPU utilisation {eng['gpu_utilisation']:.2f}, {eng['events']} events, {eng['iterations']} iterations)")
    sp = bench_simpy(eng["requests"])
    print(f"simpy  : {sp['requests']:>9} requests in {sp['wall_s']:.2f} s = {sp['requests_per_s']:,.0f} req/s (bare M/M/16)")
    ratio = eng["requests_per_s"] / sp["requests_per_s"]
    print(f"ratio  : {ratio:.2f}")
    small = peak_rss_child(a.mem_requests // 4, a.step_model)
    big = peak_rss_child(a.mem_requests, a.step_model)
    print(f"memory : peak RSS {small:.0f} MB at {a.mem_requests // 4} requests, {big:.0f} MB at {a.mem_requests}")
    if a.json:
        print(json.dumps({"engine_requests_per_s": eng["requests_per_s"],
                          "simpy_requests_per_s": sp["requests_per_s"], "ratio": ratio,
                          "peak_rss_mb": big, "peak_rss_mb_quarter": small,
                          "mem_requests": a.mem_requests, "requests": eng["requests"],
                          "engine_events": eng["events"], "gpu_utilisation": eng["gpu_utilisation"],
                          "step_model": a.step_model, "engine_build": build}))


if __name__ == "__main__":
    main()
