"""Parameter sweeps: a grid over scenario fields x replications, on any Executor.

A sweep is a base scenario, a grid of dotted scenario fields (``deployments.0.replicas``) each
with a list of values, and a number of replications.  Every combination of grid values is a
*point*; every (point, replication) pair is a *task* that runs the simulator once.

Randomness and common random numbers
    The replication seeds come from one root ``numpy.random.SeedSequence``: replication ``r``
    gets the same seed at every grid point, so differences between points are paired (common
    random numbers).  The root seed defaults to the base scenario's ``simulation.seed``.

Execution
    Tasks run through any :class:`concurrent.futures.Executor`: a local process pool by
    default, a Dask cluster with ``distributed.Client(address).get_executor()``.  The task
    function is a top-level, picklable function (default :func:`run_point`); tests pass a
    cheap fake.  Results travel back to the submitting process, which writes them, so the
    workers need no shared file system.

Persistence and resume
    Each finished task is written atomically (temporary file, then ``os.replace``) to
    ``SWEEP_DIR/points/KEY.json`` where KEY hashes the resolved scenario JSON and the seed.
    A rerun skips every task whose file is a complete record (every field of the right type,
    a non-empty summary matching its SHA-256 checksum), so a killed sweep computes only what
    is missing; any other file is recomputed.  ``config.json`` (the base scenario) and
    ``sweep.json`` (the plan) are written before any work; ``error.txt`` when a sweep fails.
    One sweep at a time per folder (``.lock`` holds the owner's pid; a second sweep is
    refused in one line); pool workers end when the sweep's process dies.

Tables
    ``replications.parquet``: one row per task (point, replication, seed, grid fields, the
    flattened summary's fields sorted by name, then ``elapsed_s``, the one timing column:
    the same columns in the same order fresh and resumed).
    ``points.parquet``: one row per grid point, sorted by point index: the grid values and,
    for every numeric summary field, ``FIELD_mean``, ``FIELD_ci95_lo``, ``FIELD_ci95_hi``
    (Student-t 95% interval of the mean over replications; NaN with one replication; the
    interval of a utilisation or an attainment is clipped to [0, 1], see :func:`metric_bounds`).
"""
from __future__ import annotations

import concurrent.futures as cf
import hashlib
import itertools
import json
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from sim.core import progress as progress_mod
from sim.core.errors import UserError
from sim.core.runfolder import check_out_dir, write_atomic, write_json_atomic
from sim.core.stats import UNIT_INTERVAL, mean_ci
from sim.scenario import Scenario, scenario_from_dict, with_overrides
from sim.core.version import VERSION as __version__
from sim.forecast.forecast import run_forecast
from sim.study.run import _json_default, run

POINTS_SUBDIR = "points"
SWEEP_FORMAT = 1


# ------------------------------------------------------------------ the task function
def run_point(scenario_json: str, seed: int) -> dict:
    """Run the simulator once; return its JSON-able summary.  Top-level so it pickles."""

    scenario = scenario_from_dict(json.loads(scenario_json), "sweep point")
    if scenario.forecast is not None:  # a forecast scenario sweeps its forecast summary
        result = run_forecast(scenario, seed=seed, out_dir=None, progress=False, figures=False)
    else:
        result = run(scenario, seed=seed, out_dir=None, progress=False)
    # round-trip through JSON so what is cached is exactly what a rerun reads back

    return json.loads(json.dumps(result.summary, default=_json_default))


# ------------------------------------------------------------------ grid parsing
def _parse_value(text: str) -> Any:
    t = text.strip()
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    for conv in (int, float):
        try:
            return conv(t)
        except ValueError:
            pass
    if t[:1] in "[{\"":
        try:
            return json.loads(t)
        except json.JSONDecodeError:
            pass
    return t


def parse_grid_arg(spec: str) -> tuple[str, list[Any]]:
    """``field=v1,v2,...`` or ``field=LO..HI`` (inclusive integers) or ``field=LO..HI..STEP``."""
    if "=" not in spec:
        raise UserError(f"--grid {spec!r}: expected FIELD=v1,v2,... or FIELD=LO..HI[..STEP]")
    name, _, values = spec.partition("=")
    name = name.strip()
    if not name or not values.strip():
        raise UserError(f"--grid {spec!r}: expected FIELD=v1,v2,... or FIELD=LO..HI[..STEP]")
    if ".." in values and "," not in values:
        parts = values.split("..")
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            raise UserError(f"--grid {spec!r}: a range LO..HI[..STEP] takes integers") from None
        if len(nums) not in (2, 3) or (len(nums) == 3 and nums[2] <= 0) or nums[1] < nums[0]:
            raise UserError(f"--grid {spec!r}: a range is LO..HI[..STEP] with LO <= HI and STEP > 0")
        step = nums[2] if len(nums) == 3 else 1
        return name, list(range(nums[0], nums[1] + 1, step))
    return name, [_parse_value(v) for v in values.split(",") if v.strip() != ""]


def apply_sets(scenario: Scenario, sets: Iterable[str]) -> Scenario:
    """``scenario`` with ``FIELD=VALUE`` overrides (the ``--set`` flag) applied and validated."""
    overrides: dict[str, Any] = {}
    for s in sets:
        k, sep, v = s.partition("=")
        if not sep or not k.strip():
            raise UserError(f"--set {s!r}: expected FIELD=VALUE")
        overrides[k.strip()] = _parse_value(v)
    return with_overrides(scenario, overrides) if overrides else scenario


def parse_grid(specs: Iterable[str]) -> dict[str, list[Any]]:
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        name, values = parse_grid_arg(spec)
        if name in grid:
            raise UserError(f"--grid {name}: given twice")
        if not values:
            raise UserError(f"--grid {name}: no values")
        grid[name] = values
    return grid


# ------------------------------------------------------------------ points and seeds
def replication_seeds(root_seed: int, replications: int) -> list[int]:
    """Distinct seeds for ``replications`` replications, spawned from one SeedSequence.

    Replication ``r`` uses the same seed at every grid point (common random numbers)."""
    if replications < 1:
        raise UserError(f"--replications {replications}: must be >= 1")
    children = np.random.SeedSequence(int(root_seed)).spawn(replications)
    # 63-bit non-negative ints: valid as simulation.seed (ge=0) and as a SeedSequence entropy
    return [int(c.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)) for c in children]


def resolved_json(scenario: Scenario) -> str:
    """Canonical JSON of a validated scenario (sorted keys): the identity of a point."""
    return json.dumps(scenario.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def task_key(scenario_json: str, seed: int) -> str:
    """Hash of the resolved scenario, the seed and the package version.

    The version is in the key so that a release with different model code does not reuse
    old results; between releases, delete a sweep folder after changing the simulator."""

    h = hashlib.sha256()
    h.update(f"sovsim {__version__}\0".encode())
    h.update(scenario_json.encode())
    h.update(b"\0seed=")
    h.update(str(int(seed)).encode())
    return h.hexdigest()[:24]


@dataclass(frozen=True)
class Point:
    index: int
    overrides: dict[str, Any]
    scenario_json: str


@dataclass(frozen=True)
class Task:
    point: int
    replication: int
    seed: int
    key: str


def expand_grid(base: Scenario, grid: dict[str, list[Any]]) -> list[Point]:
    """Cartesian product of the grid, first field slowest; every point validated now."""
    names = list(grid)
    points = []
    for i, combo in enumerate(itertools.product(*(grid[n] for n in names)) if names else [()]):
        overrides = dict(zip(names, combo))
        scen = with_overrides(base, overrides) if overrides else base
        points.append(Point(i, overrides, resolved_json(scen)))
    return points


# ------------------------------------------------------------------ persistence
def atomic_write_json(path: Path, obj: Any) -> None:
    """Write JSON to ``path`` so that readers see the old file or the whole new one (0644)."""
    write_json_atomic(path, obj, sort_keys=True)


def simulated_requests(summary: dict) -> int:
    """Requests a run simulated (a single run's ``arrivals``, a forecast's
    ``simulated_requests``), for progress lines; 0 when the summary has neither."""
    v = summary.get("simulated_requests", summary.get("arrivals", 0))
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0


def summary_checksum(summary: dict) -> str:
    """SHA-256 of a summary's canonical JSON: a point file is reused only if it matches."""
    return hashlib.sha256(json.dumps(summary, sort_keys=True, default=_json_default).encode()).hexdigest()


RECORD_FIELDS = {"key": str, "point": int, "replication": int, "seed": int, "summary": dict,
                 "summary_sha256": str}


def load_record(path: Path) -> dict | None:
    """A finished task's record, or None if missing, unreadable, incomplete (a field missing
    or of the wrong type, an empty summary) or damaged (its summary does not match its
    checksum): then it is recomputed."""
    try:
        with open(path) as f:
            rec = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError, IsADirectoryError):
        return None
    if not isinstance(rec, dict):
        return None
    for name, typ in RECORD_FIELDS.items():
        if not isinstance(rec.get(name), typ) or isinstance(rec.get(name), bool):
            return None
    if not rec["summary"] or summary_checksum(rec["summary"]) != rec["summary_sha256"]:
        return None
    return rec


class SweepLock:
    """One sweep at a time per folder: ``.lock`` holds the owner's pid; a second sweep on
    the same folder is refused in one line while the owner lives; a lock left by a dead
    process is taken over."""

    def __init__(self, folder: Path):
        self.path = folder / ".lock"
        self.held = False

    def __enter__(self):
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and pid != os.getpid() and _alive(pid):
                    raise UserError(f"sweep folder {self.path.parent}: in use by another sweep (process {pid}); "
                                    f"wait for it to finish or give another --out") from None
                self.path.unlink(missing_ok=True)   # stale: its owner died
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            self.held = True
            return self
        raise UserError(f"sweep folder {self.path.parent}: cannot take its lock")

    def __exit__(self, *exc):
        if self.held:
            self.path.unlink(missing_ok=True)
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _exit_with_parent(parent_pid: int, poll_s: float = 0.5) -> None:
    """Pool-worker initializer: a daemon thread ends the worker when its parent is gone
    (``kill -9`` of a sweep must not leave workers running)."""
    import threading

    def watch():
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(poll_s)
    threading.Thread(target=watch, daemon=True, name="sovsim-parent-watch").start()


# ------------------------------------------------------------------ executors
def make_executor(workers: int | None = None, scheduler: str | None = None,
                  connect_timeout_s: float = 10.0) -> tuple[cf.Executor | None, Callable[[], None]]:
    """``(executor, close)``.  ``scheduler`` -> Dask; ``workers == 0`` -> in-process (None)."""
    if scheduler:
        try:
            from distributed import Client
        except ImportError:  # pragma: no cover - dask is an optional extra
            raise UserError("--scheduler needs dask.distributed (pip install 'sovsim[dask]')") from None
        try:
            client = Client(scheduler, timeout=f"{connect_timeout_s}s")
        except (OSError, TimeoutError) as err:
            raise UserError(f"--scheduler {scheduler}: cannot connect ({err})") from None
        ex = client.get_executor()
        return ex, client.close
    if workers == 0:
        return None, lambda: None
    if workers is not None and workers < 0:
        raise UserError(f"--workers {workers}: must be >= 0 (0 = in this process)")
    ex = cf.ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1,
                                initializer=_exit_with_parent, initargs=(os.getpid(),))
    return ex, lambda: ex.shutdown(wait=True, cancel_futures=True)


def _execute(fn: Callable, scenario_json: str, seed: int) -> tuple[dict, float]:
    t0 = time.perf_counter()
    summary = fn(scenario_json, seed)
    return summary, time.perf_counter() - t0


# ------------------------------------------------------------------ the sweep
@dataclass
class SweepResult:
    out_dir: Path
    points: list[Point]
    tasks: list[Task]
    computed: int  # tasks run this time
    reused: int  # tasks read from the folder
    wall_s: float
    points_table: Any = None  # pandas.DataFrame
    replications_table: Any = None
    records: dict[str, dict] = field(default_factory=dict)


def run_sweep(
    base: Scenario,
    grid: dict[str, list[Any]],
    replications: int,
    out_dir: str | Path,
    *,
    root_seed: int | None = None,
    executor: cf.Executor | None = None,
    point_fn: Callable[[str, int], dict] = run_point,
    progress: "progress_mod.Progress | bool | None" = None,
    write_tables: bool = True,
    write_manifest: bool = True,
    desc: str = "sweep",
) -> SweepResult:
    """Run (or resume) a sweep into ``out_dir``; see the module docstring.

    ``executor=None`` runs the tasks in this process.  ``progress`` (:mod:`sim.core.progress`;
    None: the process default, a bar on a terminal and a heartbeat line every ~10 s otherwise;
    False: nothing) counts runs and the requests they simulated, under the name ``desc``."""
    t0 = time.perf_counter()
    out = check_out_dir(out_dir)
    pdir = out / POINTS_SUBDIR
    pdir.mkdir(parents=True, exist_ok=True)
    root = base.simulation.seed if root_seed is None else int(root_seed)
    seeds = replication_seeds(root, replications)
    points = expand_grid(base, grid)
    tasks = [Task(p.index, r, s, task_key(p.scenario_json, s)) for p in points for r, s in enumerate(seeds)]
    with SweepLock(out):
        if write_manifest:
            _write_plan(out, base, grid, replications, root, seeds, points)
        records, todo = _finished(tasks, pdir)
        reused = len(records)
        try:
            _run_tasks(todo, points, pdir, records, executor, point_fn, len(tasks), reused, progress, desc)
        except BaseException:
            if write_manifest:
                (out / "error.txt").write_text(traceback.format_exc())
            raise
        if write_manifest:
            (out / "error.txt").unlink(missing_ok=True)
        res = SweepResult(out, points, tasks, computed=len(todo), reused=reused,
                          wall_s=time.perf_counter() - t0, records=records)
        res.replications_table = replications_table(points, tasks, records, grid)
        res.points_table = points_table(res.replications_table, list(grid))
        if write_tables:
            write_atomic(out / "replications.parquet", lambda t: res.replications_table.to_parquet(t, index=False))
            write_atomic(out / "points.parquet", lambda t: res.points_table.to_parquet(t, index=False))
    return res


def _write_plan(out: Path, base: Scenario, grid: dict, replications: int, root: int, seeds: list[int],
                points: list[Point]) -> None:
    """``sweep.json`` (the plan) and ``config.json`` (the base scenario), before any work."""
    atomic_write_json(out / "config.json", json.loads(resolved_json(base)))
    atomic_write_json(out / "sweep.json", {
        "format": SWEEP_FORMAT,
        "base_scenario": json.loads(resolved_json(base)),
        "grid": grid,
        "replications": replications,
        "root_seed": root,
        "seeds": seeds,
        "points": [{"index": p.index, "overrides": p.overrides} for p in points],
    })


def _finished(tasks: list[Task], pdir: Path) -> tuple[dict[str, dict], list[Task]]:
    """The valid records of tasks already done (:func:`load_record`), and the tasks to run."""
    records: dict[str, dict] = {}
    todo: list[Task] = []
    for t in tasks:
        rec = load_record(pdir / f"{t.key}.json")
        if rec is not None and rec["key"] == t.key and rec["seed"] == t.seed:
            records[t.key] = rec
        else:
            todo.append(t)
    return records, todo


def _run_tasks(todo: list[Task], points: list[Point], pdir: Path, records: dict, executor, point_fn,
               total: int, reused: int, progress, desc: str = "sweep") -> None:
    """Run ``todo`` in this process or on ``executor``; write each record as it finishes."""
    by_index = {p.index: p for p in points}
    bar = progress_mod.start(progress if todo else False, total, "run", desc)
    if reused:
        bar.update(reused)
        bar.note(f"{reused} reused")

    def finish(t: Task, summary: dict, elapsed_s: float) -> None:
        p = by_index[t.point]
        rec = {"key": t.key, "point": t.point, "replication": t.replication, "seed": t.seed,
               "overrides": p.overrides, "elapsed_s": elapsed_s, "summary": summary,
               "summary_sha256": summary_checksum(summary)}
        atomic_write_json(pdir / f"{t.key}.json", rec)
        records[t.key] = rec
        bar.update(1, requests=simulated_requests(summary))

    def named(t: Task, err: UserError) -> UserError:
        return UserError(f"sweep point {t.point} {by_index[t.point].overrides}: {err}")

    try:
        if executor is None:
            for t in todo:
                try:
                    out_ = _execute(point_fn, by_index[t.point].scenario_json, t.seed)
                except UserError as err:
                    raise named(t, err) from None
                finish(t, *out_)
            return
        futures = {executor.submit(_execute, point_fn, by_index[t.point].scenario_json, t.seed): t for t in todo}
        try:
            for fut in cf.as_completed(futures):
                t = futures[fut]
                try:
                    out_ = fut.result()
                except UserError as err:
                    raise named(t, err) from None
                finish(t, *out_)
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
    finally:
        bar.close()


# ------------------------------------------------------------------ tables
def flatten(d: dict, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested dict as ``a.b.c`` keys (bools and None become skipped)."""
    out: dict[str, float] = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, name + "."))
        elif isinstance(v, bool) or v is None:
            continue
        elif isinstance(v, (int, float)):
            out[name] = float(v)
    return out


def replications_table(points: Sequence[Point], tasks: Sequence[Task], records: dict[str, dict],
                       grid: dict[str, list[Any]]):
    import pandas as pd

    by_index = {p.index: p for p in points}
    rows = []
    for t in tasks:
        rec = records[t.key]
        row = {"point": t.point, "replication": t.replication, "seed": t.seed}
        for name in grid:
            v = by_index[t.point].overrides[name]
            row[name] = json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v
        row["elapsed_s"] = rec.get("elapsed_s", float("nan"))
        row.update(flatten(rec["summary"]))
        rows.append(row)
    df = pd.DataFrame(rows)
    # a fixed column order, the same fresh and resumed: ids, grid fields, the summary's
    # fields sorted by name, then the timing column (which differs between runs)
    lead = ["point", "replication", "seed", *grid]
    science = sorted(c for c in df.columns if c not in lead and c != "elapsed_s")
    df = df[lead + science + ["elapsed_s"]]
    return df.sort_values(["point", "replication"], kind="stable").reset_index(drop=True)


def mean_ci95(values: np.ndarray, bounds: tuple[float, float] | None = None) -> tuple[float, float, float]:
    """Mean and Student-t 95% interval of the mean (:func:`sim.core.stats.mean_ci`)."""
    r = mean_ci(values, 0.95, bounds)
    return r.mean, r.low, r.high


# columns that are shares of requests or of time, so lie in [0, 1]: by the last part of the
# name, an attainment or an availability (any), or a busy-time utilisation.  Not
# throughput_utilisation or request_utilisation: ratios to a reference rate, they can pass 1.
UNIT_INTERVAL_SUFFIXES = ("attainment", "availability")
UNIT_INTERVAL_NAMES = ("utilisation", "gpu_utilisation", "busy_share")


def metric_bounds(name: str) -> tuple[float, float] | None:
    """The physical range a table column's interval is clipped to: ``UNIT_INTERVAL`` for an
    attainment, an availability or a GPU (busy-time) utilisation, else none."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf.endswith(UNIT_INTERVAL_SUFFIXES) or leaf in UNIT_INTERVAL_NAMES:
        return UNIT_INTERVAL
    return None


def ci_columns(group, metrics: Iterable[str]) -> dict[str, float]:
    """``{M_mean, M_ci95_lo, M_ci95_hi}`` for each column ``M`` of the DataFrame ``group``
    (one table row: the replications of one point), bounded by :func:`metric_bounds`."""
    out = {}
    for m in metrics:
        mean, lo, hi = mean_ci95(group[m].to_numpy(dtype=float), metric_bounds(m))
        out[f"{m}_mean"], out[f"{m}_ci95_lo"], out[f"{m}_ci95_hi"] = mean, lo, hi
    return out


def points_table(reps, grid_fields: list[str]):
    """One row per grid point (sorted by index): grid values, n, and mean/CI of each metric."""
    import pandas as pd

    id_cols = {"point", "replication", "seed", *grid_fields}
    metrics = [c for c in reps.columns if c not in id_cols and pd.api.types.is_numeric_dtype(reps[c])]
    rows = []
    for idx, g in reps.groupby("point", sort=True):
        row: dict[str, Any] = {"point": int(idx)}
        for name in grid_fields:
            row[name] = g[name].iloc[0]
        row["replications"] = len(g)
        row.update(ci_columns(g, metrics))
        rows.append(row)
    return pd.DataFrame(rows).sort_values("point").reset_index(drop=True)
