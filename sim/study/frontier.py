"""The throughput-interactivity frontier of one deployment (``sovsim frontier``).

A capacity planner reads one curve: output tokens/s per GPU (what the GPUs earn) against
output tokens/s per user (what a user sees), swept over load.  Each point is a full engine run
of ``gpus / tp`` replicas on fixed-length requests:

* ``concurrency`` sweep -- the ``closed_loop`` arrival kind, N users with zero think time
  (NIM / AIPerf concurrency mode, InferenceMAX);
* ``qps`` sweep -- Poisson arrivals at the offered rate (vLLM ``benchmark_serving`` style).

Per point: requests arriving in the first ``warmup_s`` seconds are left out of the latency
statistics, and throughput counts what the fleet did in ``[warmup_s, horizon_s)`` (output
tokens emitted, requests completed), from the run's time bins.  Tokens/s per user is
``1 / mean TPOT`` (the decode speed a user sees after the first token).  ``littles_n`` is
``completions/s x mean end-to-end latency``: in a closed loop with no think time it must
equal N (Little's law), which the tests check.  A point is on the Pareto front when no other
point has both more tokens/s per GPU and more tokens/s per user.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from sim.core.errors import UserError
from sim.perf import catalog
from sim.scenario import scenario_from_dict
from sim.study.run import run

# assumption: 1,000 in / 1,000 out, the middle InferenceMAX / NVIDIA NIM benchmark shape
DEFAULT_INPUT_TOKENS = 1000
DEFAULT_OUTPUT_TOKENS = 1000
DEFAULT_CONCURRENCY = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)  # assumption: AIPerf-style doubling sweep
# assumption: long enough for hundreds of completions at every point of the default sweep
# (an end-to-end request of 1,000 output tokens takes 5-60 s); the warm-up lets the batch fill
DEFAULT_HORIZON_S = 600.0
DEFAULT_WARMUP_S = 150.0
BIN_S = 10.0  # time-bin width of a point's run; warm-up and horizon are multiples of it
COLUMNS = ["mode", "load", "concurrency", "qps", "replication", "seed", "replicas", "gpus", "completed_per_s",
           "output_tok_s", "output_tok_s_per_gpu", "tok_s_per_user", "ttft_mean_s", "ttft_p50_s", "ttft_p99_s",
           "tpot_mean_s", "tpot_p50_s", "tpot_p99_s", "e2e_mean_s", "littles_n", "measured", "preemptions",
           "rejected", "pareto"]


def _check(model, gpu, tp, gpus, input_tokens, output_tokens, concurrency, qps, horizon_s, warmup_s, replications):
    catalog.llm(model, "--model")
    catalog.gpu(gpu, "--gpu")
    if tp < 1:
        raise UserError(f"--tp: must be >= 1 (got {tp})")
    if gpus < tp or gpus % tp:
        raise UserError(f"--gpus: must be a positive multiple of --tp ({tp}); got {gpus}")
    if any(not isinstance(v, dict) and v < 1 for v in (input_tokens, output_tokens)):
        raise UserError(f"--input and --output: must be >= 1 token (got {input_tokens}, {output_tokens})")
    if (concurrency is None) == (qps is None):
        raise UserError("--concurrency / --qps: give exactly one sweep")
    pts = list(concurrency if concurrency is not None else qps)
    if not pts:
        raise UserError("--concurrency / --qps: the sweep is empty; allowed: a comma-separated list, e.g. 1,2,4")
    if concurrency is not None and any((not isinstance(c, (int, np.integer))) or c < 1 for c in pts):
        raise UserError(f"--concurrency: every value must be an integer >= 1 (got {pts})")
    if qps is not None and any(not (isinstance(q, (int, float)) and math.isfinite(q) and q > 0) for q in pts):
        raise UserError(f"--qps: every value must be a finite rate > 0 requests/s (got {pts})")
    if not (math.isfinite(horizon_s) and math.isfinite(warmup_s)) or warmup_s < 0 or horizon_s <= warmup_s:
        raise UserError(f"--horizon-s / --warmup-s: need 0 <= warm-up < horizon (got {warmup_s}, {horizon_s})")
    if replications < 1:
        raise UserError(f"--replications: must be >= 1 (got {replications})")


def _length(v) -> dict:
    return dict(v) if isinstance(v, dict) else {"dist": "constant", "value": int(v)}


def frontier_scenario(model: str, gpu: str, tp: int, gpus: int, input_tokens, output_tokens,
                      arrivals: dict, horizon_s: float, warmup_s: float, precision: str = "fp8",
                      profile: str | None = None, batching: dict | None = None, framework: str | None = None):
    """The scenario of one frontier point: ``gpus / tp`` replicas; lengths are token counts
    (constant, as benchmarks send) or length-law tables of the scenario schema."""
    dep = {"name": "d", "model": model, "gpu": gpu, "precision": precision, "tp": tp, "replicas": gpus // tp}
    if profile is not None:
        dep["profile"] = profile
    if batching:
        dep["batching"] = dict(batching)
    if framework is not None:
        dep["step_time"] = {"framework": framework}
    return scenario_from_dict({
        "name": "frontier",
        "simulation": {"horizon_s": horizon_s, "warmup_s": warmup_s, "request_sample_size": 0,
                       "timeseries_interval_s": BIN_S},
        "deployments": [dep],
        "workloads": [{"name": "w", "model": model, "arrivals": arrivals,
                       "prompt_tokens": _length(input_tokens),
                       "output_tokens": _length(output_tokens)}]}, "frontier")


def _point(sc, seed: int, warmup_s: float, horizon_s: float) -> dict:
    res = run(sc, seed=seed, figures=False)
    s, ts = res.summary, res.timeseries
    fleet = ts[ts.replica == "__fleet__"]
    reps = ts[ts.replica != "__fleet__"]
    win_f = fleet[(fleet.bin_start_s >= warmup_s - 1e-9) & (fleet.bin_start_s < horizon_s - 1e-9)]
    win_r = reps[(reps.bin_start_s >= warmup_s - 1e-9) & (reps.bin_start_s < horizon_s - 1e-9)]
    span = horizon_s - warmup_s
    w = s["workloads"]["w"]
    x_req = float(win_f.completions.sum()) / span
    tok = float(win_r.output_tokens.sum()) / span
    tpot = w["tpot_s"]["mean"]
    e2e = w["e2e_s"]["mean"]
    nan = math.nan
    return {"replicas": s["replicas"], "gpus": s["gpus"], "completed_per_s": x_req, "output_tok_s": tok,
            "output_tok_s_per_gpu": tok / s["gpus"],
            "tok_s_per_user": (1.0 / tpot) if tpot else nan,
            "ttft_mean_s": w["ttft_s"]["mean"] or nan, "ttft_p50_s": w["ttft_s"]["p50"] or nan,
            "ttft_p99_s": w["ttft_s"]["p99"] or nan,
            "tpot_mean_s": tpot or nan, "tpot_p50_s": w["tpot_s"]["p50"] or nan, "tpot_p99_s": w["tpot_s"]["p99"] or nan,
            "e2e_mean_s": e2e or nan, "littles_n": x_req * e2e if e2e else nan,
            "measured": w["measured"], "preemptions": s["preemptions"], "rejected": s["rejected"]}


def pareto_mask(per_gpu: Sequence[float], per_user: Sequence[float]) -> np.ndarray:
    """True where no other point has both at least as much of each and more of one."""
    g, u = np.asarray(per_gpu, float), np.asarray(per_user, float)
    out = np.zeros(len(g), bool)
    for i in range(len(g)):
        if not (np.isfinite(g[i]) and np.isfinite(u[i])):
            continue
        dom = (g >= g[i]) & (u >= u[i]) & ((g > g[i]) | (u > u[i]))
        out[i] = not dom.any()
    return out


def frontier(model: str, gpu: str, tp: int, gpus: int | None = None,
             input_tokens: int | dict = DEFAULT_INPUT_TOKENS, output_tokens: int | dict = DEFAULT_OUTPUT_TOKENS,
             concurrency: Sequence[int] | None = None, qps: Sequence[float] | None = None,
             precision: str = "fp8", profile: str | None = None, horizon_s: float = DEFAULT_HORIZON_S,
             warmup_s: float = DEFAULT_WARMUP_S, replications: int = 1, seed: int = 1,
             batching: dict | None = None, log=None, framework: str | None = None) -> pd.DataFrame:
    """One row per (load point, replication); columns :data:`COLUMNS`.  Concurrency is the
    total number of users across the fleet.  With neither sweep given, the default
    concurrency sweep.  Replication ``r`` of every point uses seed ``seed + r`` (common random
    numbers across points)."""
    gpus = tp if gpus is None else gpus
    if concurrency is None and qps is None:
        concurrency = DEFAULT_CONCURRENCY
    _check(model, gpu, tp, gpus, input_tokens, output_tokens, concurrency, qps, horizon_s, warmup_s, replications)
    # warm-up and horizon on bin edges, so the throughput window is exact
    warm = math.ceil(warmup_s / BIN_S - 1e-9) * BIN_S
    hor = max(warm + BIN_S, math.floor(horizon_s / BIN_S + 1e-9) * BIN_S)
    rows = []
    mode = "concurrency" if concurrency is not None else "qps"
    for load in (concurrency if concurrency is not None else qps):
        arr = ({"kind": "closed_loop", "users": int(load)} if mode == "concurrency"
               else {"kind": "poisson", "rate_per_s": float(load)})
        sc = frontier_scenario(model, gpu, tp, gpus, input_tokens, output_tokens, arr, hor, warm, precision,
                               profile, batching, framework)
        for r in range(replications):
            p = _point(sc, seed + r, warm, hor)
            rows.append({"mode": mode, "load": float(load),
                         "concurrency": int(load) if mode == "concurrency" else math.nan,
                         "qps": float(load) if mode == "qps" else math.nan,
                         "replication": r, "seed": seed + r, **p})
            if log is not None:
                log(f"{mode} {load:g} (rep {r}): {p['output_tok_s_per_gpu']:.0f} tok/s/GPU, "
                    f"{p['tok_s_per_user']:.1f} tok/s/user, TTFT p99 {p['ttft_p99_s']:.3f} s")
    df = pd.DataFrame(rows)
    mean = df.groupby("load")[["output_tok_s_per_gpu", "tok_s_per_user"]].mean()
    on = dict(zip(mean.index, pareto_mask(mean.output_tok_s_per_gpu, mean.tok_s_per_user)))
    df["pareto"] = df.load.map(on).astype(bool)
    return df[COLUMNS]


def point_labels(m: pd.DataFrame, tol: float = 0.01) -> list[tuple[str, float, float]]:
    """One label per distinct point of the frontier panel: loads whose (tokens/s per user,
    tokens/s per GPU) lie within ``tol`` (relative) of the previous load's share one label,
    "first-last" (past the running-sequence cap extra users only queue, so their points
    coincide and their numbers would print over each other).

    >>> m = pd.DataFrame({"load": [128, 256, 384, 512], "tok_s_per_user": [50.0, 40.0, 40.1, 40.0],
    ...                   "output_tok_s_per_gpu": [3000.0, 4880.0, 4881.0, 4879.0]})
    >>> point_labels(m)
    [('128', 50.0, 3000.0), ('256-512', 40.0, 4880.0)]
    """
    groups: list[list] = []
    for r in m.sort_values("load").itertuples(index=False):
        x, y = float(r.tok_s_per_user), float(r.output_tok_s_per_gpu)
        if groups:
            _, gx, gy = groups[-1][0]
            if abs(x - gx) <= tol * max(abs(gx), 1e-12) and abs(y - gy) <= tol * max(abs(gy), 1e-12):
                groups[-1].append((r.load, x, y))
                continue
        groups.append([(r.load, x, y)])
    out = []
    for g in groups:
        text = f"{g[0][0]:g}" if len(g) == 1 else f"{g[0][0]:g}-{g[-1][0]:g}"
        out.append((text, g[0][1], g[0][2]))
    return out


def frontier_figure(df: pd.DataFrame, path, title: str) -> None:
    """Three panels against output tokens/s per GPU: tokens/s per user (with the Pareto
    curve), TTFT p50/p99, TPOT p50/p99 (means over replications)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    m = df.groupby("load", as_index=False).mean(numeric_only=True).sort_values("load")
    m["pareto"] = m.load.map(dict(zip(df.load, df.pareto))).astype(bool)
    unit = "users" if (df["mode"] == "concurrency").all() else "req/s"
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.4))
    ax = axes[0]
    ax.plot(m.tok_s_per_user, m.output_tok_s_per_gpu, "o", color="C0", alpha=0.5, label="sweep point")
    p = m[m.pareto].sort_values("tok_s_per_user")
    ax.plot(p.tok_s_per_user, p.output_tok_s_per_gpu, "-o", color="C3", label="Pareto front")
    for text, x, y in point_labels(m):
        ax.annotate(text, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("interactivity: output tokens/s per user (1 / mean TPOT)")
    ax.set_ylabel("throughput: output tokens/s per GPU")
    ax.set_title(f"frontier (labels: {unit})")
    ax.legend(fontsize=7)
    for ax, (name, a, b) in zip(axes[1:], (("TTFT", "ttft_p50_s", "ttft_p99_s"), ("TPOT", "tpot_p50_s", "tpot_p99_s"))):
        ax.plot(m.output_tok_s_per_gpu, m[a], "-o", label=f"{name} p50")
        ax.plot(m.output_tok_s_per_gpu, m[b], "-s", label=f"{name} p99")
        ax.set_yscale("log")
        ax.set_xlabel("throughput: output tokens/s per GPU")
        ax.set_ylabel(f"{name}, seconds")
        ax.set_title(f"{name} against throughput")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
