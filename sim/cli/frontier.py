"""``sovsim frontier``: the throughput-interactivity curve of one deployment."""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from sim.study.frontier import (DEFAULT_CONCURRENCY, DEFAULT_HORIZON_S, DEFAULT_INPUT_TOKENS,
                                DEFAULT_OUTPUT_TOKENS, DEFAULT_WARMUP_S, frontier, frontier_figure)


def _list(kind):
    def parse(text: str):
        try:
            vals = [kind(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a comma-separated list of {'integers' if kind is int else 'numbers'}; allowed: e.g. 1,2,4") from None
        if not vals or any(not math.isfinite(v) or v <= 0 for v in vals):
            raise argparse.ArgumentTypeError(f"{text!r}: every value must be > 0 (and finite); allowed: e.g. 1,2,4")
        return vals
    return parse


def register(sub) -> None:
    p = sub.add_parser("frontier", help="Sweep concurrency (or QPS) through the serving engine: output tokens/s per GPU "
                                        "against tokens/s per user, TTFT and TPOT (CSV + figure).")
    p.add_argument("--model", required=True, help="LLM catalog id (see `sovsim catalog`).")
    p.add_argument("--gpu", required=True, help="GPU catalog id.")
    p.add_argument("--tp", type=int, required=True, help="Tensor-parallel GPUs per replica.")
    p.add_argument("--gpus", type=int, default=None, help="GPUs in the fleet (replicas = gpus / tp; default: one replica).")
    p.add_argument("--input", type=int, default=DEFAULT_INPUT_TOKENS, help=f"Prompt tokens per request (default {DEFAULT_INPUT_TOKENS}).")
    p.add_argument("--output", type=int, default=DEFAULT_OUTPUT_TOKENS, help=f"Output tokens per request (default {DEFAULT_OUTPUT_TOKENS}).")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--concurrency", type=_list(int), default=None,
                   help="Users in flight across the fleet, comma-separated (closed loop, no think time; default "
                        + ",".join(map(str, DEFAULT_CONCURRENCY)) + ").")
    g.add_argument("--qps", type=_list(float), default=None, help="Offered requests/s, comma-separated (Poisson arrivals).")
    p.add_argument("--profile", default=None, help="Engine profile of the deployment (see `sovsim schema`; default: the scenario default).")
    p.add_argument("--framework", default=None, help="Step-time framework profile (trtllm-v0.14, trtllm-v0.17, trtllm-v1.0, trtllm, vllm; see `sovsim throughput --help`; default: the engine profile's, else trtllm).")
    p.add_argument("--precision", default="fp8", help="bf16, fp16 or fp8.")
    p.add_argument("--horizon-s", type=float, default=DEFAULT_HORIZON_S, help=f"Simulated seconds per point (default {DEFAULT_HORIZON_S:g}).")
    p.add_argument("--warmup-s", type=float, default=DEFAULT_WARMUP_S, help=f"Seconds left out of every statistic (default {DEFAULT_WARMUP_S:g}).")
    p.add_argument("--replications", type=int, default=1, help="Runs per point (seeds seed..seed+R-1).")
    p.add_argument("--seed", type=int, default=1, help="Root seed.")
    p.add_argument("--out", default="results/frontier", help="Folder for frontier.csv and frontier.png.")
    p.set_defaults(func=cmd_frontier)


def cmd_frontier(args) -> int:
    df = frontier(args.model, args.gpu, args.tp, args.gpus, args.input, args.output, args.concurrency, args.qps,
                  args.precision, args.profile, args.horizon_s, args.warmup_s, args.replications, args.seed, log=print,
                  framework=args.framework)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "frontier.csv", index=False, float_format="%.6g")
    gpus = args.gpus or args.tp
    title = (f"{args.model} on {gpus} x {args.gpu} (TP{args.tp}, {args.precision}"
             f"{', profile ' + args.profile if args.profile else ''}"
             f"{', framework ' + args.framework if args.framework else ''}), {args.input} in / {args.output} out")
    frontier_figure(df, out / "frontier.png", title)
    print(f"wrote {out / 'frontier.csv'} and {out / 'frontier.png'}")
    return 0
