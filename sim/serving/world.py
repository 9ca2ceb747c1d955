"""The serving world: one simpy.Environment holding replicas, router, arrivals and metrics.

The world knows nothing of money or of capacity contracts.  Layers above it observe it
through explicit hooks (:meth:`World.observe`: a request completed, a request rejected) and
change its fleet only through its public operations (:meth:`World.add_replica`,
:meth:`World.drain_replica`, :meth:`World.retire_replica`, :meth:`World.fail_replica`,
:meth:`World.repair_replica`).
"""
from __future__ import annotations

import math
from collections import Counter

import simpy

from sim.core import collector
from sim.core import progress as progress_mod
from sim.core.rng import RandomStreams
from sim.demand.arrivals import ClosedLoopProcess
from sim.perf.roofline import make_step_model
from sim.scenario import Scenario
from sim.serving.engine import REJECTED, ArrivalFeed, Replica, Request, RequestIds, admit_arrival
from sim.serving.fluid import LengthMoments, replica_request_capacity, saturation_tokens_per_s
from sim.serving.metrics import Metrics, Stream
from sim.serving.replica import replica_from_spec
from sim.serving.residency import site_allows
from sim.serving.router import Router


# a closed-loop user whose request was rejected waits this long before its next one: assumption
CLOSED_LOOP_BACKOFF_S = 1.0


class World:
    """One simpy.Environment holding replicas, router, arrivals and metrics."""

    def __init__(self, scenario: Scenario, seed: int):
        self.scenario = scenario
        self.seed = seed
        sim = scenario.simulation
        self.env = env = simpy.Environment()
        self.streams = RandomStreams(seed)
        sites = {s.name: s for s in scenario.sites}
        self.replicas: list[Replica] = []
        self.workloads = scenario.workloads
        self.metrics = Metrics(scenario.workloads, sum(d.replicas for d in scenario.deployments),
                               sim.horizon_s, sim.warmup_s, sim.timeseries_interval_s,
                               sim.request_sample_size, self.streams.generator("metrics/sample"))
        self._per_iteration = sim.engine_mode == "per_iteration"
        # observers of completions and rejections (World.observe); the metrics come first
        self._complete_observers: list = []
        self._reject_observers: list = []
        # completion callback of every replica, present and future
        self.replica_on_complete = self.metrics.on_complete
        self._closed = False   # summary() has counted the requests still in flight
        self._sites = sites
        self._step_models: dict[int, object] = {}
        self.dep_of_replica: list[int] = []
        self._replicas_made: Counter[int] = Counter()  # replicas made per deployment (O(1) naming)
        for di, dep in enumerate(scenario.deployments):
            for _ in range(dep.replicas):
                self._new_replica(di)
        # residency-eligible replicas and network round trips, per workload
        self.eligible: list[list[int]] = [[] for _ in scenario.workloads]
        self.rtt_s: list[list[float]] = [[] for _ in scenario.workloads]
        self.max_tokens: list[int] = [0] * len(scenario.workloads)
        for rep in self.replicas:
            self._index_replica(rep)
        self.router = Router(env, self.replicas, self.eligible, scenario.router.policy,
                             self.streams.generator("router"), scenario.router.max_wait_s,
                             self._reject, self.rtt_s, max_queue=scenario.router.max_queue,
                             ttft_shed_s=scenario.router.ttft_shed_s)
        self.ids = RequestIds()
        self.arrival_procs: list = [None] * len(scenario.workloads)
        for wi, w in enumerate(scenario.workloads):
            self._arrivals(wi, w)

    # ------------------------------------------------------------------ observers
    def observe(self, on_complete=None, on_reject=None) -> None:
        """Subscribe to the world's events: ``on_complete(request, now)`` after each completed
        request, ``on_reject(request, reason, now)`` after each rejection (the metrics have
        recorded it first).  Observers are called in subscription order."""
        if on_complete is not None:
            self._complete_observers.append(on_complete)
            observers = tuple(self._complete_observers)
            record = self.metrics.on_complete

            def completed(r, now):
                record(r, now)
                for fn in observers:
                    fn(r, now)
            self.replica_on_complete = completed
            for rep in self.replicas:
                rep.on_complete = completed
        if on_reject is not None:
            self._reject_observers.append(on_reject)

    # ------------------------------------------------------------------ fleet
    def _new_replica(self, di: int) -> Replica:
        dep = self.scenario.deployments[di]
        model = self._step_models.get(di)
        if model is None:
            model = self._step_models[di] = make_step_model(dep)
        k = self._replicas_made[di]  # this deployment's k-th replica
        self._replicas_made[di] += 1
        rep = replica_from_spec(self.env, dep, model, len(self.replicas), f"{dep.name}/{k}",
                                per_iteration=self._per_iteration, on_complete=self.replica_on_complete,
                                on_busy=self.metrics.on_busy, site=dep.site, deployment=di)
        self.replicas.append(rep)
        self.dep_of_replica.append(di)
        return rep

    def _index_replica(self, rep: Replica) -> list[int]:
        """Add ``rep`` to the eligibility, round-trip and KV-cap tables; return the
        workloads that may use it."""
        sc = self.scenario
        dep = sc.deployments[rep.deployment]
        site = self._sites.get(dep.site) if dep.site else None
        ws = []
        for wi, w in enumerate(sc.workloads):
            self.rtt_s[wi].append(2.0 * site.network_latency_s.get(w.region, 0.0) if site else 0.0)
            if dep.model == w.model and site_allows(site, w.residency):
                self.eligible[wi].append(rep.index)
                ws.append(wi)
                cap = rep.total_blocks * rep.bs
                others = len(self.eligible[wi]) > 1
                self.max_tokens[wi] = min(self.max_tokens[wi], cap) if others else cap
        return ws

    def add_replica(self, deployment: int) -> Replica:
        """A new replica of deployment ``deployment`` joins the fleet now (capacity arrived):
        the router may send it requests at once."""
        rep = self._new_replica(deployment)
        self.metrics.add_replica()
        ws = self._index_replica(rep)
        self.router.add_replica(rep, ws)
        return rep

    def drain_replica(self, index: int):
        """Stop sending new requests to a replica; what it holds runs to completion."""
        rep = self.replicas[index]
        rep.accepting = False
        self.router.replica_state_changed()

    def retire_replica(self, index: int) -> int:
        """The replica's capacity leaves now: whatever it still holds is requeued through
        the router keeping the tokens it emitted (a live migration), then it is gone for
        good. Returns the number of requests moved."""
        rep = self.replicas[index]
        if rep.retired_s is not None:
            return 0
        rep.accepting = False
        held = rep.fail(self.env.now, keep_generated=True) if rep.up else []
        rep.up = False
        rep.retired_s = self.env.now
        self.router.remove_replica(rep)
        for r in held:
            self.router.submit(r)
        return len(held)

    # ------------------------------------------------------------------ traffic
    def _reject(self, r: Request, reason: str, now: float):
        r.state = REJECTED
        self.metrics.on_reject(r, reason, now)
        for fn in self._reject_observers:
            fn(r, reason, now)

    def _arrivals(self, wi: int, w):
        """Start the arrivals of workload ``wi``: an :class:`ArrivalFeed` over the process's
        chunks (open loop) or the closed-loop users."""
        horizon = self.scenario.simulation.horizon_s
        proc = w.arrivals.build()
        rng_t = self.streams.generator(f"workload/{w.name}/arrivals")
        rng_len = self.streams.generator(f"workload/{w.name}/lengths")
        # trace replay carries its own lengths; other processes need the distributions
        prompt_d = w.prompt_tokens.build() if w.prompt_tokens is not None else None
        output_d = w.output_tokens.build() if w.output_tokens is not None else None
        self.arrival_procs[wi] = proc
        if isinstance(proc, ClosedLoopProcess):
            self._closed_loop(wi, proc, prompt_d, output_d, rng_t, rng_len)
            return

        def blocks():
            for times, prompts, outputs in proc.chunks(rng_t, horizon):
                n = len(times)
                if prompts is None:
                    prompts = prompt_d.sample(rng_len, n)
                if outputs is None:
                    outputs = output_d.sample(rng_len, n)
                yield times.tolist(), prompts.tolist(), outputs.tolist()
        ArrivalFeed(self.env, wi, blocks(), self.ids, self.metrics.on_arrival, self.router.submit,
                    self._reject, self.max_tokens)

    def _closed_loop(self, wi: int, proc: ClosedLoopProcess, prompt_d, output_d, rng_t, rng_len):
        """``proc.users`` user processes; each waits for its request's completion or rejection
        (through :meth:`observe`), thinks, and submits the next one."""
        env, metrics, router, max_tokens = self.env, self.metrics, self.router, self.max_tokens
        pending: dict[int, simpy.Event] = {}

        def ended(r, *_):
            ev = pending.pop(r.rid, None)
            if ev is not None:
                ev.succeed(r.state != REJECTED)
        self.observe(on_complete=ended, on_reject=ended)

        def user():
            while True:
                now = env.now
                r = Request(self.ids.take(), wi, now, int(prompt_d.sample(rng_len, 1)[0]),
                            int(output_d.sample(rng_len, 1)[0]))
                ev = pending[r.rid] = env.event()   # before a rejection ends it
                admit_arrival(r, now, metrics.on_arrival, router.submit, self._reject, max_tokens)
                served = yield ev
                z = proc.think(rng_t)
                if not served:  # a rejected user backs off, so a user that is always refused cannot spin at one instant
                    z = max(z, CLOSED_LOOP_BACKOFF_S)
                if z > 0.0:
                    yield env.timeout(z)
        for _ in range(proc.users):
            env.process(user())

    # ------------------------------------------------------------------ faults
    def fail_replica(self, index: int, keep_generated: bool = True) -> int:
        """Take a replica down now and requeue everything it held through the router (so
        residency rules still hold). Returns the number of requests requeued."""
        rep = self.replicas[index]
        if not rep.up:
            return 0
        held = rep.fail(self.env.now, keep_generated=keep_generated)
        self.router.replica_state_changed()
        for r in held:
            self.router.submit(r)
        return len(held)

    def repair_replica(self, index: int):
        rep = self.replicas[index]
        if rep.up or rep.retired_s is not None:
            return
        rep.repair(self.env.now)
        self.router.replica_state_changed()
        if self.router.central:
            self.router.pull(rep)

    def in_flight(self) -> list[Request]:
        out = []
        for rep in self.replicas:
            out.extend(rep.running.values())
            out.extend(rep.waiting)
        for lst in self.router.parked:
            out.extend(lst)
        out.extend(self.router.queued())
        return out

    # ------------------------------------------------------------------ run
    def run(self, progress=False):
        """Run to the horizon.  ``progress`` (:mod:`sim.core.progress`: a ``Progress``, True,
        None for the process default, False) is told the simulated seconds done."""
        horizon = self.scenario.simulation.horizon_s
        if progress_mod.resolve(progress).resolved_mode() == "off":
            with collector.relaxed():
                self.env.run(until=horizon)
            return
        slices = 200
        with progress_mod.start(progress, horizon, "sim-s", "run") as task, collector.relaxed():
            done = 0.0
            seen = 0
            for i in range(1, slices + 1):
                t = horizon * i / slices
                self.env.run(until=t)
                arrived = sum(st.arrivals for st in self.metrics.streams)
                task.update(t - done, requests=arrived - seen)
                done, seen = t, arrived

    def close(self) -> list[Request]:
        """Flush the metrics and count the requests still in flight as SLA misses, once
        (later calls only return the requests in flight)."""
        inflight = self.in_flight()
        self.metrics.flush()
        if not self._closed:
            self.metrics.count_inflight_misses(inflight, self.env.now)
            self._closed = True
        return inflight

    def summary(self) -> dict:
        """The run's summary (docs/metrics.md defines every key): totals, latency
        percentiles, attainment, and per workload, vertical, site and deployment."""
        sc = self.scenario
        m = self.metrics
        inflight = self.close()
        total = m.total()
        offline = all(w.arrivals.kind == "offline" for w in sc.workloads)
        duration = (m.last_completion_s if offline else sc.simulation.horizon_s) or 0.0
        fleet = _FleetTime(self.replicas, duration, self.env.now)
        s = total.summary()
        summary = {
            "scenario": sc.name,
            "seed": self.seed,
            "engine_mode": sc.simulation.engine_mode,
            "horizon_s": sc.simulation.horizon_s,
            "duration_s": duration,
            "arrivals": total.arrivals,
            "completed": total.completed,
            "rejected": s["rejected"],
            "rejected_by_reason": s["rejected_by_reason"],
            "in_flight": len(inflight),
            "output_tokens_total": fleet.out_tokens,
            "prefill_tokens_total": sum(rep.prefill_tokens for rep in self.replicas),
            "prompt_tokens_total": total.prompt_tokens,
            "completed_output_tokens": total.output_tokens,
            "first_arrival_s": m.first_arrival_s,
            "last_completion_s": m.last_completion_s,
            "gpus": sum(r.gpus for r in self.replicas if r.retired_s is None),
            "replicas": sum(1 for r in self.replicas if r.retired_s is None),
            "replicas_ever": len(self.replicas),
            "gpu_hours": fleet.gpu_s / 3600.0,
            "gpu_utilisation": fleet.busy_gpu_s / fleet.gpu_s if fleet.gpu_s > 0 else 0.0,
            "throughput_utilisation": None,
            "throughput_output_tokens_per_s": fleet.out_tokens / duration if duration > 0 else 0.0,
            "throughput_requests_per_s": total.completed / duration if duration > 0 else 0.0,
            "preemptions": total.preemptions,
            "measured": s["measured"],
            "ttft_s": s["ttft_s"],
            "tpot_s": s["tpot_s"],
            "e2e_s": s["e2e_s"],
            "wait_s": s["wait_s"],
            "sla_attainment": s["sla_attainment"],
            "ttft_attainment": s["ttft_attainment"],
            "tpot_attainment": s["tpot_attainment"],
            "residency_violations": self.residency_violations(),
            "workloads": self._workload_summaries(),
            "deployments": {},
            "engine": {
                "events": sum(rep.events for rep in self.replicas),
                "iterations": sum(rep.iterations for rep in self.replicas),
            },
        }
        summary["verticals"] = self._vertical_summaries()
        summary["sites"] = self._site_summaries(fleet)
        summary["deployments"] = self._deployment_summaries(fleet)
        sat_tokens = sum(d["saturation_output_tokens"] for d in summary["deployments"].values())
        summary["throughput_utilisation"] = fleet.out_tokens / sat_tokens if sat_tokens > 0 else 0.0
        summary["request_utilisation"] = self._request_utilisation(summary, fleet.life)
        return summary

    def _workload_summaries(self) -> dict:
        out = {}
        for wi, w in enumerate(self.scenario.workloads):
            ws = self.metrics.streams[wi].summary(w.sla.attainment_target)
            ws.update({"vertical": w.vertical, "model": w.model,
                       "ttft_target_s": w.sla.ttft_s, "tpot_target_s": w.sla.tpot_s,
                       "eligible_replicas": len(self.eligible[wi])})
            proc = self.arrival_procs[wi]
            if proc is not None and hasattr(proc, "report"):
                ws["trace"] = proc.report()  # skipped rows and their line numbers
            out[w.name] = ws
        return out

    def _vertical_summaries(self) -> dict:
        sc = self.scenario
        verticals: dict[str, list[int]] = {}
        for wi, w in enumerate(sc.workloads):
            verticals.setdefault(w.vertical, []).append(wi)
        out = {}
        for v, idx in verticals.items():
            st = Stream()
            for wi in idx:
                st.merge(self.metrics.streams[wi])
            vs = st.summary()
            vs["workloads"] = [sc.workloads[i].name for i in idx]
            out[v] = vs
        return out

    def _site_summaries(self, fleet: "_FleetTime") -> dict:
        sc = self.scenario
        out = {}
        site_names = [s_.name for s_ in sc.sites] + (
            [None] if any(d.site is None for d in sc.deployments) else [])
        for sn in site_names:
            reps = [r for r in self.replicas if r.site == sn]
            key = sn if sn is not None else "(unsited)"
            site = next((s_ for s_ in sc.sites if s_.name == sn), None)
            g_s = sum(fleet.life[r.index] * r.gpus for r in reps)
            out[key] = {
                "jurisdiction": site.jurisdiction if site else None,
                "certifications": list(site.certifications) if site else [],
                "replicas": sum(1 for r in reps if r.retired_s is None),
                "gpus": sum(r.gpus for r in reps if r.retired_s is None),
                "gpu_hours": g_s / 3600.0,
                "gpu_utilisation": (sum(fleet.busy_s[r.index] * r.gpus for r in reps) / g_s) if g_s > 0 else 0.0,
                "completed": sum(r.completed for r in reps),
                "output_tokens": sum(fleet.rep_tokens[r.index] for r in reps),
            }
        return out

    def _deployment_summaries(self, fleet: "_FleetTime") -> dict:
        m = self.metrics
        life = fleet.life
        out = {}
        for di, dep in enumerate(self.scenario.deployments):
            reps = [r for r in self.replicas if r.deployment == di]
            busy = sum(fleet.busy_s[r.index] for r in reps)
            rep_s = sum(life[r.index] for r in reps)
            kv = [sum(m.kv_block_s[r.index]) / (life[r.index] * max(r.total_blocks, 1)) if life[r.index] > 0 else 0.0
                  for r in reps]
            peak = saturation_tokens_per_s(reps[0]) if reps else 0.0
            live = sum(1 for r in reps if r.retired_s is None)
            tokens = sum(fleet.rep_tokens[r.index] for r in reps)
            out[dep.name] = {
                "model": dep.model, "gpu": dep.gpu, "precision": dep.precision, "tp": dep.tp,
                "site": dep.site, "replicas": live, "gpus": live * dep.tp,
                "replica_hours": rep_s / 3600.0,
                "kv_capacity_tokens": reps[0].total_blocks * reps[0].bs if reps else 0,
                "busy_s": busy,
                "utilisation": busy / rep_s if rep_s > 0 else 0.0,
                "output_tokens": tokens,
                "saturation_output_tokens_per_s": peak * live,
                "saturation_output_tokens": peak * rep_s,
                "throughput_utilisation": (tokens / (peak * rep_s)) if peak > 0 and rep_s > 0 else 0.0,
                "kv_occupancy_mean": sum(kv) / len(kv) if kv else 0.0,
            }
        return out

    def _request_utilisation(self, summary: dict, life: list[float]) -> float | None:
        """Requests completed / the requests the fleet could complete at full batch over its
        replicas' time in the fleet, for the arrival mix of the workloads each deployment
        serves (:func:`sim.serving.fluid.replica_request_capacity`). Also per deployment."""
        m = self.metrics
        cap_total = 0.0
        done_total = 0
        for di, dep in enumerate(self.scenario.deployments):
            reps = [r for r in self.replicas if r.deployment == di]
            ws = {w for w, idx in enumerate(self.eligible) if any(self.replicas[i].deployment == di for i in idx)}
            n = sum(m.streams[w].arrivals for w in ws)
            d = summary["deployments"][dep.name]
            if not reps or n == 0:
                d["request_utilisation"] = None
                continue
            lengths = LengthMoments.of_streams([m.streams[w] for w in sorted(ws)])
            cap = replica_request_capacity(reps[0], lengths) * sum(life[r.index] for r in reps)
            done = sum(r.completed for r in reps)
            d["request_utilisation"] = done / cap if cap > 0 else None
            cap_total += cap
            done_total += done
        return done_total / cap_total if cap_total > 0 else None

    def residency_violations(self) -> int:
        """Requests found on a replica their rule does not allow (must be 0)."""
        bad = 0
        allowed = [set(idx) for idx in self.eligible]
        for rep in self.replicas:
            for r in list(rep.running.values()) + list(rep.waiting):
                if rep.index not in allowed[r.workload]:
                    bad += 1
        return bad + self.router.violations


class _FleetTime:
    """Each replica's time in the fleet over a run of ``duration`` seconds (capacity policies
    add and retire replicas during the run; a fixed fleet is in for the whole duration), its
    busy seconds and output tokens including the decode run in progress at ``now``."""

    def __init__(self, replicas: list[Replica], duration: float, now: float):
        self.life = [max(0.0, min(duration, r.retired_s if r.retired_s is not None else math.inf) - r.added_s)
                     for r in replicas]
        self.gpu_s = sum(l_ * r.gpus for l_, r in zip(self.life, replicas))
        partial = [rep.partial_run(now) for rep in replicas]
        self.busy_s = [rep.busy_s + p[0] for rep, p in zip(replicas, partial)]
        self.rep_tokens = [rep.output_tokens + p[1] for rep, p in zip(replicas, partial)]
        self.busy_gpu_s = sum(b * rep.gpus for b, rep in zip(self.busy_s, replicas))
        self.out_tokens = sum(self.rep_tokens)
