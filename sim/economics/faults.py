"""GPU, node and whole-site failures as Poisson processes; repairs from a lognormal.

Default rates come from the Llama 3 405B interruption table (Meta, "The Llama 3 Herd of
Models", 2024, Table 5; 16,384 H100 80GB GPUs, 54 days), rows in
``models/economics/failures.csv``.  :func:`llama3_rates` reads the rows and does the
arithmetic (shown in docs/economics.md):

* **GPU** (fails the replica holding the GPU): the GPU categories, Faulty GPU 148 + GPU HBM3
  memory 72 + GPU SRAM memory 19 + GPU system processor 17 + Silent data corruption 6 + GPU
  thermal interface + sensor 6 = 268 interruptions over 16,384 x 54 = 884,736 GPU-days:
  3.03e-4 per GPU-day (one per ~9 years per GPU).
* **Node** (fails every replica on the node): Host rows (NIC 7, SSD 3, Power supply 3,
  Server chassis 2, IO expansion board 2, CPU 2, System memory 2) + Network switch/cable 35
  + Host maintenance (unplanned) 32 = 88 over 2,048 nodes x 54 days = 110,592 node-days:
  7.96e-4 per node-day.
* Left out: Software bug 54, Dependency 2, NCCL watchdog timeouts 7 (training-job
  software, not an inference server's) and the 47 planned interruptions (scheduled).

Whole-site outages have no recorded figure: their rate and duration are assumptions.

A failure is *thinned* while its unit is already down, so the number of failures of a unit
is Poisson with mean ``rate x (time the unit was up)``; tests check exactly that.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from sim.economics.contracts import DAY_S, YEAR_S
from sim.core.errors import UserError
from sim.core.resources import model_file

LLAMA3_GPUS = 16384
LLAMA3_DAYS = 54
LLAMA3_GPUS_PER_NODE = 8
GPU_ROWS = ("Faulty GPU", "GPU HBM3 memory", "GPU SRAM memory", "GPU system processor",
            "Silent data corruption", "GPU thermal interface + sensor")
NODE_ROWS = ("NIC", "SSD", "Power supply", "Server chassis", "IO expansion board", "CPU",
             "System memory", "Network switch/cable", "Host maintenance (unplanned)")
EXCLUDED_ROWS = ("Software bug", "Dependency", "NCCL watchdog timeouts")


@dataclass(frozen=True)
class Llama3Rates:
    gpu_events: int
    node_events: int
    gpu_days: int
    node_days: int
    rows: dict[str, int]

    @property
    def gpu_per_gpu_day(self) -> float:
        return self.gpu_events / self.gpu_days

    @property
    def node_per_node_day(self) -> float:
        return self.node_events / self.node_days


def llama3_rates(path: Path | None = None) -> Llama3Rates:
    """Failure rates per GPU-day and per node-day from the Llama 3 rows of failures.csv."""
    path = path or model_file("economics", "failures.csv")
    rows: dict[str, int] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            item = row["item"]
            if item.startswith("Llama 3: "):
                try:
                    rows[item[len("Llama 3: "):]] = int(float(row["value"]))
                except ValueError:
                    raise UserError(f"{path}: row {item!r}: value {row['value']!r} is not a number") from None
    missing = [r for r in GPU_ROWS + NODE_ROWS if r not in rows]
    if missing:
        raise UserError(f"{path}: Llama 3 rows missing: {', '.join(missing)}")
    return Llama3Rates(
        gpu_events=sum(rows[r] for r in GPU_ROWS),
        node_events=sum(rows[r] for r in NODE_ROWS),
        gpu_days=LLAMA3_GPUS * LLAMA3_DAYS,
        node_days=LLAMA3_GPUS // LLAMA3_GPUS_PER_NODE * LLAMA3_DAYS,
        rows=rows,
    )


@dataclass(frozen=True)
class FaultConfig:
    gpu_rate_per_s: float            # per GPU
    node_rate_per_s: float           # per node
    gpus_per_node: int = 8
    repair_median_s: float = 4 * 3600.0
    repair_sigma: float = 1.0
    site_rate_per_s: float = 0.5 / YEAR_S
    site_median_s: float = 4 * 3600.0
    site_sigma: float = 1.0
    keep_generated: bool = True


def config_from_spec(spec) -> FaultConfig:
    """Resolve a scenario ``[faults]`` block (defaults from the Llama 3 table)."""
    rates = None
    if spec.gpu_failures_per_gpu_day is None or spec.node_failures_per_node_day is None:
        rates = llama3_rates()
    g = rates.gpu_per_gpu_day if spec.gpu_failures_per_gpu_day is None else spec.gpu_failures_per_gpu_day
    n = rates.node_per_node_day if spec.node_failures_per_node_day is None else spec.node_failures_per_node_day
    return FaultConfig(g / DAY_S, n / DAY_S, spec.gpus_per_node, spec.repair_median_s, spec.repair_sigma,
                       spec.site_outages_per_year / YEAR_S, spec.site_outage_median_s, 1.0,
                       spec.requeue == "preserve")


@dataclass(eq=False)
class _Unit:
    """A GPU group (one replica), a node or a site: something that fails and is repaired."""

    kind: str
    name: str
    rate_per_s: float
    replicas: list[Any]
    down: bool = False
    t0: float = 0.0                    # exposure starts (capacity that arrives later)
    retired_s: float | None = None     # exposure ends (its capacity left)


@dataclass
class FaultLog:
    failures: dict[str, int] = field(default_factory=lambda: {"gpu": 0, "node": 0, "site": 0})
    #: sum over units of rate x up time: the Poisson mean of ``failures`` (compensator)
    expected: dict[str, float] = field(default_factory=lambda: {"gpu": 0.0, "node": 0.0, "site": 0.0})
    requeued: int = 0
    events: list[tuple[float, str, str]] = field(default_factory=list)


class FaultInjector:
    """Runs the failure processes of ``replicas`` in ``env``.

    ``replicas``: objects with ``name``, ``gpus``, ``site`` and ``up``.  ``on_down(replica,
    now)`` is called when a replica goes down (it must call ``replica.fail`` and requeue),
    ``on_up(replica, now)`` when its last cause is repaired.  ``rng``: a generator factory
    ``name -> numpy.random.Generator`` (named streams, so adding a replica does not shift
    another's draws) or one Generator (children are spawned from it, in replica order).
    """

    def __init__(self, env, replicas: Iterable[Any], config: FaultConfig,
                 rng: np.random.Generator | Callable[[str], np.random.Generator],
                 on_down: Callable[[Any, float], None], on_up: Callable[[Any, float], None]):
        self.env = env
        self.cfg = config
        self.replicas = list(replicas)
        self.on_down = on_down
        self.on_up = on_up
        self.log = FaultLog()
        self._causes: dict[int, int] = {id(r): 0 for r in self.replicas}
        self._up_since: dict[int, float | None] = {id(r): env.now for r in self.replicas}
        self.up_s: dict[int, float] = {id(r): 0.0 for r in self.replicas}
        self.units: list[_Unit] = []
        self.t0 = env.now
        self._added_s: dict[int, float] = {id(r): env.now for r in self.replicas}
        self._retired_s: dict[int, float] = {}
        self._site_units: dict[str, _Unit] = {}
        self._nodes_per_site: dict[str, int] = {}
        if callable(rng) and not isinstance(rng, np.random.Generator):
            self._gen = rng
        else:
            children = iter(rng.spawn(10_000))
            self._gen = lambda name: next(children)
        # units: one GPU group per replica, nodes by packing, one per site
        by_site: dict[str, list[Any]] = {}
        for r in self.replicas:
            by_site.setdefault(r.site or "-", []).append(r)
            self.units.append(_Unit("gpu", r.name, config.gpu_rate_per_s * r.gpus, [r]))
        for site, reps in by_site.items():
            nodes = pack_nodes(reps, config.gpus_per_node)
            for k, node in enumerate(nodes):
                self.units.append(_Unit("node", f"{site}/node{k}", config.node_rate_per_s, node[0], t0=env.now))
            self._nodes_per_site[site] = len(nodes)
            su = _Unit("site", site, config.site_rate_per_s, reps, t0=env.now)
            self._site_units[site] = su
            self.units.append(su)
        for u in self.units:
            u.t0 = env.now
            if u.rate_per_s > 0:
                env.process(self._process(u, self._gen(f"faults/{u.kind}/{u.name}")))

    # ------------------------------------------------------------------ capacity changes
    def add_replicas(self, replicas: list[Any]) -> None:
        """Replicas that joined during the run (capacity arrived): their own GPU units,
        new nodes (packed like the initial ones) and their site's outage process."""
        env, cfg = self.env, self.cfg
        now = env.now
        new_units: list[_Unit] = []
        by_site: dict[str, list[Any]] = {}
        for r in replicas:
            k = id(r)
            self.replicas.append(r)
            self._causes[k] = 0
            self._up_since[k] = now
            self.up_s[k] = 0.0
            self._added_s[k] = now
            by_site.setdefault(r.site or "-", []).append(r)
            new_units.append(_Unit("gpu", r.name, cfg.gpu_rate_per_s * r.gpus, [r], t0=now))
        for site, reps in by_site.items():
            k0 = self._nodes_per_site.get(site, 0)
            nodes = pack_nodes(reps, cfg.gpus_per_node)
            for j, node in enumerate(nodes):
                new_units.append(_Unit("node", f"{site}/node{k0 + j}", cfg.node_rate_per_s, node[0], t0=now))
            self._nodes_per_site[site] = k0 + len(nodes)
            su = self._site_units.get(site)
            if su is None:
                su = self._site_units[site] = _Unit("site", site, cfg.site_rate_per_s, [], t0=now)
                new_units.append(su)
            su.replicas.extend(reps)
            if su.down:   # arrived during a site outage: down until the site is back
                for r in reps:
                    self._causes[id(r)] += 1
                    self._up_since[id(r)] = None
                    self.on_down(r, now)
        for u in new_units:
            self.units.append(u)
            if u.rate_per_s > 0:
                env.process(self._process(u, self._gen(f"faults/{u.kind}/{u.name}")))

    def retire(self, replica: Any) -> None:
        """The replica's capacity left: stop its exposure (and its units' when all theirs left)."""
        now = self.env.now
        k = id(replica)
        if k in self._retired_s:
            return
        since = self._up_since.get(k)
        if since is not None:
            self.up_s[k] += now - since
            self._up_since[k] = None
        self._retired_s[k] = now
        for u in self.units:
            if u.retired_s is None and u.kind != "site" and replica in u.replicas \
                    and all(id(r) in self._retired_s for r in u.replicas):
                if u.down:
                    u.downtime_s = getattr(u, "downtime_s", 0.0) + (now - u.down_since)
                    u.down = False
                u.retired_s = now

    # ------------------------------------------------------------------ processes
    def _process(self, u: _Unit, rng: np.random.Generator):
        env = self.env
        while True:
            last = env.now
            yield env.timeout(rng.exponential(1.0 / u.rate_per_s))
            if u.retired_s is not None:
                return
            if u.down:  # thinned: the unit is already down (its exposure excluded)
                continue
            self._fail(u)
            if u.kind == "site":
                dur = rng.lognormal(math.log(self.cfg.site_median_s), self.cfg.site_sigma)
            else:
                dur = rng.lognormal(math.log(self.cfg.repair_median_s), self.cfg.repair_sigma)
            env.process(self._repair_after(u, dur))

    def _fail(self, u: _Unit) -> None:
        now = self.env.now
        u.down = True
        u.down_since = now
        self.log.failures[u.kind] += 1
        self.log.events.append((now, u.kind, u.name))
        for r in u.replicas:
            k = id(r)
            if k in self._retired_s:
                continue
            self._causes[k] += 1
            if self._causes[k] == 1:
                since = self._up_since[k]
                self.up_s[k] += now - since
                self._up_since[k] = None
                self.on_down(r, now)

    def _repair_after(self, u: _Unit, dur: float):
        yield self.env.timeout(dur)
        now = self.env.now
        if u.retired_s is not None:
            return
        u.down = False
        u.downtime_s = getattr(u, "downtime_s", 0.0) + (now - u.down_since)
        for r in u.replicas:
            k = id(r)
            if k in self._retired_s:
                continue
            self._causes[k] -= 1
            if self._causes[k] == 0:
                self._up_since[k] = now
                self.on_up(r, now)

    def force_failure(self, kind: str, name: str, duration_s: float) -> bool:
        """Fail unit ``kind``/``name`` now (what-if and tests) and repair it after
        ``duration_s``; False if it is already down."""
        u = next((u for u in self.units if u.kind == kind and u.name == name), None)
        if u is None:
            raise KeyError(f"no {kind} unit named {name!r}")
        if u.down:
            return False
        self._fail(u)
        self.env.process(self._repair_after(u, duration_s))
        return True

    # ------------------------------------------------------------------ reporting
    def replica_up_s(self, r, now: float) -> float:
        k = id(r)
        since = self._up_since[k]
        return self.up_s[k] + (now - since if since is not None else 0.0)

    def unit_up_s(self, u: _Unit, now: float) -> float:
        end = now if u.retired_s is None else u.retired_s
        down = getattr(u, "downtime_s", 0.0) + (now - u.down_since if u.down else 0.0)
        return (end - u.t0) - down

    def expected_failures(self, now: float) -> dict[str, float]:
        """Poisson mean of the failure counts so far: sum of rate x up time per unit."""
        out = {"gpu": 0.0, "node": 0.0, "site": 0.0}
        for u in self.units:
            out[u.kind] += u.rate_per_s * self.unit_up_s(u, now)
        return out

    def availability(self, now: float) -> dict[str, Any]:
        """Share of replica-time (weighted by GPUs) up, overall and per site."""
        tot = up = 0.0
        per_site: dict[str, list[float]] = {}
        for r in self.replicas:
            k = id(r)
            span = self._retired_s.get(k, now) - self._added_s[k]
            u = self.replica_up_s(r, now) * r.gpus
            t = span * r.gpus
            tot += t
            up += u
            s = per_site.setdefault(r.site or "-", [0.0, 0.0])
            s[0] += u
            s[1] += t
        return {
            "replica_availability": up / tot if tot > 0 else None,
            "by_site": {k: v[0] / v[1] if v[1] > 0 else None for k, v in per_site.items()},
            "failures": dict(self.log.failures),
            "expected_failures": self.expected_failures(now),
            "requeued_requests": self.log.requeued,
        }


def pack_nodes(replicas: list[Any], gpus_per_node: int) -> list[tuple[list[Any], int]]:
    """Place replicas on nodes of ``gpus_per_node`` GPUs in order (first fit on the current
    node; a replica larger than a node gets whole nodes of its own).  Returns
    ``(replicas on the node, GPUs of the node)`` per node."""
    nodes: list[tuple[list[Any], int]] = []
    cur: list[Any] = []
    free = 0
    for r in replicas:
        g = r.gpus
        if g > gpus_per_node:
            if cur:
                nodes.append((cur, gpus_per_node))
                cur, free = [], 0
            n = math.ceil(g / gpus_per_node)
            for _ in range(n):
                nodes.append(([r], gpus_per_node))
            continue
        if g > free:
            if cur:
                nodes.append((cur, gpus_per_node))
            cur, free = [], gpus_per_node
        cur.append(r)
        free -= g
    if cur:
        nodes.append((cur, gpus_per_node))
    return nodes
