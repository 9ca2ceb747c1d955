"""``sovsim sweep``, ``sovsim capacity`` and ``sovsim figures``."""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sim.core import progress as progress_mod
from sim.core.errors import UserError
from sim.core.runfolder import check_out_dir, default_out
from sim.cli.run import add_max_work, apply_max_work
from sim.scenario import load_scenario
from sim.study.capacity_search import capacity_search, parse_targets
from sim.study.experiments import compare_with_committed, discover_experiments, project_root, regenerate
from sim.study.sweep import apply_sets, make_executor, parse_grid, run_sweep


def register(sub) -> None:
    p = sub.add_parser("sweep", help="run a scenario over a grid of fields x replications (resumable)",
                       description="Run SCENARIO over every combination of --grid values, R replications each "
                                   "(same seeds at every point: common random numbers). Finished runs are kept "
                                   "under --out; rerunning computes only what is missing.")
    _scenario_args(p)
    p.add_argument("--grid", action="append", default=[], metavar="FIELD=V1,V2,...",
                   help="dotted scenario field and its values, or an integer range LO..HI[..STEP]; repeat for more fields")
    p.add_argument("--out", type=Path, default=None,
                   help="sweep folder (default: sweeps/SCENARIO_NAME: a study of many runs lives under sweeps/, "
                        "a single run under runs/)")
    p.set_defaults(func=cmd_sweep)

    c = sub.add_parser("capacity", help="smallest GPU count meeting every vertical's SLA attainment target",
                       description="Bisection on the replica count of the deployments in --scope, with replications, "
                                   "until every vertical's SLA attainment reaches its --target.")
    _scenario_args(c)
    c.add_argument("--target", action="append", default=[], metavar="VERTICAL=ATTAINMENT",
                   help="e.g. finance=0.99 (default: each vertical's strictest workload attainment_target)")
    c.add_argument("--scope", default="total", help="total | site:NAME | deployment:NAME (default total)")
    c.add_argument("--max-replicas", type=int, default=256, help="give up above this many replicas per deployment (default 256)")
    c.add_argument("--conservative", action="store_true",
                   help="require the lower end of the 95%% confidence interval to reach the target, not the mean")
    c.add_argument("--no-load-range", action="store_true",
                   help="skip the search for the offered-load factors at which the answer changes "
                        "(bisection on every workload's rate at the answer and one replica fewer; about 8-12 more "
                        "evaluations of R replications)")
    c.add_argument("--out", type=Path, default=None,
                   help="folder for cached runs, capacity.json, capacity_evaluations.csv and capacity.png "
                        "(default: sweeps/capacity-SCENARIO_NAME: a study of many runs lives under sweeps/, "
                        "a single run under runs/)")
    c.set_defaults(func=cmd_capacity)

    f = sub.add_parser("figures", help="regenerate every committed figure in results/ from experiments/*.py",
                       description="Run every experiments/*.py (fixed seeds) and report which files under results/ changed.")
    f.add_argument("names", nargs="*", help="only these experiments (default: all)")
    f.add_argument("--root", type=Path, default=None, help="project root holding experiments/ and results/ (default: found from here)")
    f.add_argument("--quick", action="store_true", help="pass --quick to each script (smoke run, writes to a temporary folder)")
    f.add_argument("--check", action="store_true",
                   help="regenerate into a temporary folder and list the committed files under results/ that would "
                        "change (byte for byte) or be added, without touching them; exit 1 if any")
    f.set_defaults(func=cmd_figures)


def _scenario_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("scenario", help="scenario TOML file, or a packaged scenario name (default, day)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a dotted scenario field before sweeping, e.g. simulation.horizon_s=300")
    p.add_argument("--replications", "-r", type=int, default=3, help="replications per point (default 3)")
    p.add_argument("--seed", type=int, default=None, help="root seed of the replication seeds (default: the scenario's simulation.seed)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--workers", type=int, default=None, help="local worker processes (default: all cores; 0 = in this process)")
    g.add_argument("--scheduler", default=None, metavar="ADDRESS", help="Dask scheduler address, e.g. tcp://10.0.0.5:8786")
    p.add_argument("--no-progress", action="store_true", help="no progress (bar on a terminal, else a line every 10 s on stderr); the tables are still printed, --quiet prints nothing")
    add_max_work(p)


def _load(args):
    apply_max_work(args)

    return apply_sets(load_scenario(args.scenario), args.set)


def cmd_sweep(args) -> int:

    scen = _load(args)
    grid = parse_grid(args.grid)
    out = check_out_dir(args.out or default_out(scen.name, SWEEPS_ROOT))   # one line, exit 2, before any work
    executor, close = make_executor(args.workers, args.scheduler)
    try:
        res = run_sweep(scen, grid, args.replications, out, root_seed=args.seed, executor=executor,
                        progress=False if args.no_progress else None)
    finally:
        close()
    t = res.points_table
    print(f"sweep: {len(res.points)} points x {args.replications} replications = {len(res.tasks)} runs; "
          f"computed {res.computed}, reused {res.reused}; wall {res.wall_s:.1f} s")
    cols = ["point", *grid]
    for m in ("sla_attainment", "ttft_s.p99", "request_utilisation", "throughput_utilisation"):
        if f"{m}_mean" in t:
            cols += [f"{m}_mean", f"{m}_ci95_lo", f"{m}_ci95_hi"]
    import pandas as pd

    with pd.option_context("display.max_rows", 40, "display.width", 160):
        print(t[cols].to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    print(f"tables: {out / 'points.parquet'}, {out / 'replications.parquet'}")
    return 0


def cmd_capacity(args) -> int:

    scen = _load(args)
    targets = parse_targets(args.target, scen)
    out = check_out_dir(args.out or default_out(f"capacity-{scen.name}", SWEEPS_ROOT))
    executor, close = make_executor(args.workers, args.scheduler)
    try:
        r = capacity_search(scen, targets, scope=args.scope, replications=args.replications, out_dir=out,
                            max_replicas=args.max_replicas, conservative=args.conservative,
                            root_seed=args.seed, executor=executor,
                            progress=False if args.no_progress else None,
                            load_range=not args.no_load_range)
    finally:
        close()
    print(f"capacity: scope {r.scope} ({', '.join(r.deployments)}), targets "
          + ", ".join(f"{v}>={x:g}" for v, x in sorted(r.targets.items()))
          + f", {args.replications} replications, {'lower 95% CI' if args.conservative else 'mean'} attainment")
    for e in r.evaluations:
        att = "  ".join(f"{v} {m:.4f} [{lo:.4f}, {hi:.4f}]" for v, (m, lo, hi) in sorted(e.attainment.items()))
        print(f"  replicas {e.replicas:4d}  gpus {e.gpus:5d}  {'ok  ' if e.feasible else 'miss'}  {att}")
    if r.replicas is None:
        print(f"no replica count up to {args.max_replicas} meets every target")
        return 1
    print(f"smallest: {r.replicas} replicas per deployment in scope = {r.gpus} GPUs")
    print(r.cost_note if r.cost is None else f"cost and margin: {r.cost_note}")
    if r.load_note:
        print(f"load: {r.load_note}")
    print(f"details: {out / 'capacity.json'}; figure: {out / 'capacity.png'}")
    return 0


# default output roots: `sovsim run` writes one run folder under runs/ (sim.core.runfolder);
# sweep and capacity are studies of many cached runs (resumable), kept apart under sweeps/
SWEEPS_ROOT = "sweeps"


# ------------------------------------------------------------------ figures
def _hashes(folder: Path) -> dict[str, str]:
    if not folder.is_dir():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def cmd_figures(args) -> int:
    import tempfile

    if getattr(args, "check", False):
        return cmd_figures_check(args)
    root = project_root(args.root)
    plans = _plans(root, args.names)
    env = _figures_env(root)
    failed = 0
    tmp = tempfile.mkdtemp(prefix="sovsim-figures-") if args.quick else None
    print(f"{'experiment':24s} {'runtime_s':>9s}  status  changed (under its output folder)")
    bar = progress_mod.start(None, len(plans), "experiment", "figures")
    for plan in plans:
        bar.note(plan.name)
        bar.update(0)
        if args.quick and plan.no_out:
            print(f"{plan.name:24s} {'':9s}  skip    (takes no --out; would overwrite its committed results)")
            continue
        out = (Path(tmp) / plan.name) if tmp else plan.out
        out.mkdir(parents=True, exist_ok=True)
        before = _hashes(out)
        cmd = plan.command(out, args.quick)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
        dt = time.perf_counter() - t0
        after = _hashes(out)
        changed = sorted(k for k in after if before.get(k) != after[k])
        removed = sorted(k for k in before if k not in after)
        status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}"
        if proc.returncode != 0:
            failed += 1
        what = ", ".join(changed) if changed else "none"
        if removed:
            what += f"; removed: {', '.join(removed)}"
        print(f"{plan.name:24s} {dt:9.1f}  {status:6s}  {what}")
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            for line in tail:
                print(f"    {line}")
        bar.update(1)
    bar.close()
    return 1 if failed else 0


def _plans(root: Path, names: list[str]):
    plans = discover_experiments(root)
    if names:
        known = {p.name: p for p in plans}
        bad = [n for n in names if n not in known]
        if bad:
            raise UserError(f"unknown experiment {bad[0]!r}; experiments: {', '.join(sorted(known))}")
        plans = [known[n] for n in names]
    return plans


def _figures_env(root: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def cmd_figures_check(args) -> int:
    """``sovsim figures --check [NAMES]``: each experiment's full run into a temporary folder,
    compared byte for byte with what is committed under its output folder."""
    import tempfile

    if args.quick:
        raise UserError("--check compares the full runs with the committed results; --quick runs differ by design, "
                        "give one of them")
    root = project_root(args.root)
    plans = _plans(root, args.names)
    env = _figures_env(root)
    bad = 0
    print(f"{'experiment':24s} {'runtime_s':>9s}  status  would change (under {'its output folder'})")
    with tempfile.TemporaryDirectory(prefix="sovsim-figures-check-") as tmp, \
            progress_mod.start(None, len(plans), "experiment", "figures --check") as bar:
        for plan in plans:
            bar.note(plan.name)
            bar.update(0)
            t0 = time.perf_counter()
            proc, fresh = regenerate(plan, root, Path(tmp) / plan.name, env)
            dt = time.perf_counter() - t0
            if proc.returncode != 0:
                bad += 1
                print(f"{plan.name:24s} {dt:9.1f}  exit {proc.returncode}")
                for line in (proc.stderr or proc.stdout).strip().splitlines()[-5:]:
                    print(f"    {line}")
                bar.update(1)
                continue
            changed, new = compare_with_committed(plan.out, fresh)
            what = ", ".join(changed) if changed else "none"
            if new:
                what += f"; not committed: {', '.join(new)}"
            if changed or new:
                bad += 1
            rel = plan.out.relative_to(root) if plan.out.is_relative_to(root) else plan.out
            print(f"{plan.name:24s} {dt:9.1f}  {'differs' if changed or new else 'same  '}  {what}   ({rel})")
            bar.update(1)
    return 1 if bad else 0
