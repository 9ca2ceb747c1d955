"""Capacity policy: a SimPy process that orders and releases GPU tranches at one site.

Every ``check_interval_s`` it observes the site (busy share of the GPUs in force since the
last look, and optionally a demand forecast) and decides:

* ``fixed`` -- nothing: the contracts' GPUs only;
* ``threshold`` -- utilisation above ``high_utilisation`` (or too many requests waiting):
  order ``step_gpus`` (one order in transit at a time); below ``low_utilisation`` with
  nothing waiting: ask to release the tranche that can leave soonest, never going under
  ``min_gpus`` and only if the same load on the GPUs that stay is still under
  ``high_utilisation`` (no order/release flapping);
* ``forecast`` -- keep ``ceil(forecast x (1 + headroom))`` GPUs: order what the forecast at
  ``now + lead_time`` needs beyond what is in force or in transit; release a tranche when
  the forecast peak until that tranche could leave stays covered without it.

Orders arrive after the contract's lead time; a release takes effect after its notice and
never before the tranche's minimum term.  ``on_ready(tranche)`` is called when GPUs arrive
(place replicas on them), ``on_leaving(tranche, effective_s)`` when a release is asked
(drain the replicas before ``effective_s``), ``on_left(tranche)`` when it has left.  Every
tranche is on the ledger from its start to its end, so the money follows the decisions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from sim.economics.contracts import Terms, Tranche
from sim.core.errors import UserError
from sim.economics.contracts import rental_terms, terms_from_spec
from sim.serving.fluid import LengthMoments, probe_replica, replica_request_capacity
from sim.serving.residency import serving_sites


@dataclass(frozen=True)
class PolicyParams:
    kind: str = "fixed"
    check_interval_s: float = 3600.0
    high_utilisation: float = 0.8
    low_utilisation: float = 0.3
    step_gpus: int = 8
    min_gpus: int = 0
    max_gpus: int = 1 << 20
    headroom: float = 0.2
    max_queue_per_replica: float = math.inf
    drain_s: float = 0.0

    @classmethod
    def from_spec(cls, spec) -> "PolicyParams":
        return cls(spec.kind, spec.check_interval_s, spec.high_utilisation, spec.low_utilisation,
                   spec.step_gpus, spec.min_gpus, spec.max_gpus, spec.headroom,
                   spec.max_queue_per_replica, spec.drain_s)


class CapacityManager:
    """Owns the tranches of one site; ``busy_gpu_s()`` returns cumulative busy GPU-seconds
    at the site (for the threshold policy); ``forecast_gpus(t)`` the GPUs demand needs at
    time ``t`` (for the forecast policy).  ``load()``, if given, replaces ``busy_gpu_s`` for
    the threshold policy: it returns ``(utilisation, queue_per_replica)`` since its last call
    (:class:`FleetCapacity` passes request utilisation and the waiting requests), or None
    when nothing has been measured yet (no decision)."""

    def __init__(self, env, ledger, site: str, order_terms: Terms, params: PolicyParams,
                 busy_gpu_s: Callable[[], float] | None = None,
                 forecast_gpus: Callable[[float], float] | None = None,
                 on_ready: Callable[[Tranche], None] | None = None,
                 on_leaving: Callable[[Tranche, float], None] | None = None,
                 initial: list[Tranche] | None = None,
                 on_left: Callable[[Tranche], None] | None = None,
                 load: Callable[[], tuple[float, float]] | None = None):
        if params.kind == "threshold" and busy_gpu_s is None and load is None:
            raise ValueError("threshold policy needs busy_gpu_s")
        if params.kind == "forecast" and forecast_gpus is None:
            raise ValueError("forecast policy needs forecast_gpus")
        self.env = env
        self.ledger = ledger
        self.site = site
        self.terms = order_terms
        self.p = params
        self.busy_gpu_s = busy_gpu_s
        self.load = load
        self.forecast_gpus = forecast_gpus
        self.on_ready = on_ready or (lambda tr: None)
        self.on_leaving = on_leaving or (lambda tr, t: None)
        self.on_left = on_left or (lambda tr: None)
        self.tranches: list[Tranche] = []
        self.in_transit: list[Tranche] = []
        self.orders = 0
        self.releases = 0
        self.events: list[tuple[float, str, int]] = []   # (time, order|arrive|release|leave, GPUs)
        self.release_grid_points = 2000   # forecast policy: points checked until a tranche could leave
        for tr in initial or []:
            self.tranches.append(tr)
            if ledger is not None and tr not in ledger.tranches:
                ledger.add_tranche(tr)
        self._last_busy = busy_gpu_s() if busy_gpu_s else 0.0
        self._last_t = env.now
        if params.kind != "fixed":
            env.process(self._run())

    # ------------------------------------------------------------------ state
    def gpus_in_force(self, t: float | None = None) -> int:
        t = self.env.now if t is None else t
        return sum(tr.gpus for tr in self.tranches if tr.active(t))

    def gpus_staying(self) -> int:
        """In force and not asked to leave."""
        return sum(tr.gpus for tr in self.tranches if tr.active(self.env.now) and tr.release_asked_s is None)

    def gpus_in_transit(self) -> int:
        return sum(tr.gpus for tr in self.in_transit)

    # ------------------------------------------------------------------ actions
    def order(self, gpus: int) -> Tranche:
        now = self.env.now
        tr = Tranche(self.site, self.terms, gpus, now + self.terms.lead_time_s, ordered_s=now)
        self.orders += 1
        self.events.append((now, "order", gpus))
        self.in_transit.append(tr)
        if self.ledger is not None:
            self.ledger.add_tranche(tr)   # billing starts at arrival (start_s)
        self.env.process(self._arrive(tr))
        return tr

    def _arrive(self, tr: Tranche):
        yield self.env.timeout(tr.start_s - self.env.now)
        self.in_transit.remove(tr)
        self.tranches.append(tr)
        self.events.append((self.env.now, "arrive", tr.gpus))
        self.on_ready(tr)

    def release(self, tr: Tranche) -> float:
        now = self.env.now
        # notice and minimum term, and never before the replicas on it had time to drain
        eff = max(tr.release_effective_s(now), now + self.p.drain_s)
        tr.release_asked_s = now
        self.releases += 1
        self.events.append((now, "release", tr.gpus))
        self.env.process(self._leave(tr, eff))
        if self.ledger is not None:
            self.ledger.end_tranche(tr, eff)
        else:
            tr.end_s = eff
        self.on_leaving(tr, eff)
        return eff

    def _leave(self, tr: Tranche, eff: float):
        yield self.env.timeout(max(0.0, eff - self.env.now))
        self.events.append((self.env.now, "leave", tr.gpus))
        self.on_left(tr)

    def _releasable(self) -> list[Tranche]:
        now = self.env.now
        c = [tr for tr in self.tranches if tr.active(now) and tr.release_asked_s is None and tr.gpus > 0]
        return sorted(c, key=lambda tr: (tr.release_effective_s(now), -tr.start_s))

    # ------------------------------------------------------------------ policy loop
    def _run(self):
        env = self.env
        p = self.p
        while True:
            yield env.timeout(p.check_interval_s)
            if p.kind == "threshold":
                self._threshold()
            else:
                self._forecast()

    def _threshold(self):
        now = self.env.now
        if self.load is not None:
            sig = self.load()
            if sig is None:      # nothing measured yet: no decision
                return
            u, q = sig
        else:
            busy = self.busy_gpu_s()
            g = self.gpus_in_force()
            dt = now - self._last_t
            u = (busy - self._last_busy) / (g * dt) if g > 0 and dt > 0 else (1.0 if busy > self._last_busy else 0.0)
            self._last_busy, self._last_t = busy, now
            q = 0.0
        staying = self.gpus_staying()
        hot = u > self.p.high_utilisation or q > self.p.max_queue_per_replica
        if hot and not self.in_transit and staying + self.p.step_gpus <= self.p.max_gpus:
            self.order(self.p.step_gpus)
        elif u < self.p.low_utilisation and q == 0:
            g_now = self.gpus_in_force()
            for tr in self._releasable():
                left = staying - tr.gpus
                # hysteresis: the same load on what stays must stay under high_utilisation
                u_after = (u * g_now / left if left > 0 else (math.inf if u > 0 else 0.0))
                if left >= self.p.min_gpus and u_after < self.p.high_utilisation:
                    self.release(tr)
                    break

    def _forecast(self):
        now = self.env.now
        p = self.p

        def need(t: float) -> int:
            g = self.forecast_gpus(t) * (1.0 + p.headroom)
            g = math.ceil(g / p.step_gpus - 1e-9) * p.step_gpus
            return min(max(g, p.min_gpus), p.max_gpus)

        lead = self.terms.lead_time_s
        have = self.gpus_staying() + self.gpus_in_transit()
        # order: the forecast at arrival, over the next check interval
        want = max(need(now + lead), need(now + lead + p.check_interval_s))
        if want > have:
            self.order(want - have)
            return
        # release: only if the forecast peak until the tranche could leave stays covered
        for tr in self._releasable():
            eff = tr.release_effective_s(now)
            horizon_peak = max(need(t) for t in _grid(now, eff + p.check_interval_s, p.check_interval_s,
                                                       self.release_grid_points))
            if have - tr.gpus >= horizon_peak:
                self.release(tr)
                have -= tr.gpus
            else:
                break


def _grid(a: float, b: float, step: float, max_points: int = 2000):
    n = max(1, min(max_points, int(math.ceil((b - a) / step)) + 1))
    h = (b - a) / (n - 1) if n > 1 else 0.0
    return [a + i * h for i in range(n)]


# ====================================================================== tranches of a scenario
def initial_tranches(scenario, start_s: float = 0.0) -> tuple[dict[str, list[Tranche]], dict[str, Terms]]:
    """The tranches in force at ``start_s`` per site (each site's contracts; with no contracts
    anywhere, each site's deployed GPUs as on-demand rental) and the terms new orders use at
    each site (``capacity_policy.contract``, else the site's first contract, else on-demand).
    A site whose deployments need more GPUs than its contracts give is a one-line error."""
    from collections import defaultdict


    sc = scenario
    cp = sc.capacity_policy
    sites = {s.name: s for s in sc.sites}
    need: dict[str, int] = defaultdict(int)
    for dep in sc.deployments:
        need[dep.site or "-"] += dep.gpus
    implicit = not any(s.contracts for s in sc.sites)
    out: dict[str, list[Tranche]] = defaultdict(list)
    order_terms: dict[str, Terms] = {}
    for site_name, gpus in need.items():
        site = sites.get(site_name)
        if site is None or not site.contracts:
            if not implicit and gpus:
                raise UserError(f"sites: deployments at {site_name!r} use {gpus} GPUs but the site has "
                                f"no contracts (add [[sites.contracts]] for it)")
            order_terms[site_name] = rental_terms("on_demand")
            out[site_name].append(Tranche(site_name, order_terms[site_name], gpus, start_s))
    for site in sc.sites:
        have = 0
        for c in site.contracts:
            terms = terms_from_spec(c, site.jurisdiction)
            out[site.name].append(Tranche(site.name, terms, c.gpus, start_s))
            have += c.gpus
            if site.name not in order_terms and (cp.contract is None or cp.contract == c.name):
                order_terms[site.name] = terms
        if site.contracts and need.get(site.name, 0) > have:
            raise UserError(f"sites[{site.name}].contracts: deployments there use {need[site.name]} GPUs "
                            f"but contracts provide {have}")
    return dict(out), order_terms


# ====================================================================== inside a run
class FleetCapacity:
    """The capacity policy inside a simulated run (:class:`sim.serving.world.World`).

    One :class:`CapacityManager` per site that hosts deployments.  The site's initial
    tranches (its contracts, or implicit on-demand rental) carry the deployments' replicas,
    GPU by GPU in order.  When an order arrives, ``gpus // tp`` new replicas of the growing
    deployment (``capacity_policy.deployment``, else the site's deployment with the most
    outstanding work per accepting replica) join the router at once, on new nodes for the
    fault model.  When a tranche is released, the replicas on it stop taking new requests
    at once (drain) and keep serving what they hold; at the end of the notice (at least
    ``drain_s`` later) the replicas leave and anything still on them is requeued keeping its
    emitted tokens (``migrated_requests``).  No request is lost and residency still holds:
    requeues go through the router's eligibility lists.

    Signals: ``threshold`` reads the site's *request utilisation* since its last look
    (requests completed / what its replicas could complete at full batch for the site's
    length mix, :func:`replica_request_capacity`; busy share saturates near 1 under
    continuous batching and output-token saturation ignores prefill) and the requests
    waiting per accepting replica; ``forecast`` reads the workloads'
    expected arrival rate over the next check interval (the NHPP profile, burst-free; the
    mean for other processes), split evenly over the sites that may serve them, in GPUs at
    the fluid request capacity of :func:`replica_request_capacity`.
    """

    def __init__(self, world, ledger, spec, site_tranches: dict[str, list[Tranche]],
                 order_terms: dict[str, Terms], faults=None):
        self.world = world
        self.spec = spec
        self.faults = faults
        self.params = PolicyParams.from_spec(spec)
        sc = world.scenario
        self.holders: dict[int, list[int]] = {}
        self.managers: dict[str, CapacityManager] = {}
        self.migrated = 0
        self.added: dict[str, int] = {}
        self.retired: dict[str, int] = {}
        self._last: dict[str, tuple[float, float]] = {}
        self.gpus_start: dict[str, int] = {}
        self.gpus_peak: dict[str, int] = {}
        self.site_deps: dict[str, list[int]] = {}
        for di, dep in enumerate(sc.deployments):
            self.site_deps.setdefault(dep.site or "-", []).append(di)
        # where each workload may be served (for the forecast signal's split)
        self.work_sites = [serving_sites(sc, w.model, w.residency) for w in sc.workloads]
        for site, deps in self.site_deps.items():
            trs = site_tranches.get(site, [])
            # initial placement: the site's replicas fill its tranches GPU by GPU, in order
            reps = [r for r in world.replicas if (r.site or "-") == site]
            free = [[tr, tr.gpus] for tr in trs]
            j = 0
            for r in reps:
                need = r.gpus
                while need > 0 and j < len(free):
                    take = min(need, free[j][1])
                    if take > 0:
                        self.holders.setdefault(free[j][0].id, []).append(r.index)
                    free[j][1] -= take
                    need -= take
                    if free[j][1] == 0:
                        j += 1
            self.added[site] = 0
            self.retired[site] = 0
            self._last[site] = (world.env.now, 0.0)
            mgr = CapacityManager(
                world.env, ledger, site, order_terms[site], self.params,
                load=lambda site=site: self._load(site),
                forecast_gpus=lambda t, site=site: self._forecast_gpus(site, t),
                on_ready=lambda tr, site=site: self._ready(site, tr),
                on_leaving=self._leaving,
                on_left=lambda tr, site=site: self._left(site, tr),
                initial=trs)
            self.managers[site] = mgr
            self.gpus_start[site] = mgr.gpus_in_force()
            self.gpus_peak[site] = self.gpus_start[site]

    # ------------------------------------------------------------------ signals
    def _site_reps(self, site: str):
        return [r for r in self.world.replicas if (r.site or "-") == site]

    def _site_mix(self, site: str) -> LengthMoments | None:
        """Length moments of the requests that arrived so far for the workloads this site may
        serve (weighted by their arrivals and the site's share)."""
        idx = [wi for wi, ws in enumerate(self.work_sites) if site in ws]
        return LengthMoments.of_streams([self.world.metrics.streams[wi] for wi in idx],
                                        [1.0 / len(self.work_sites[wi]) for wi in idx])

    def _load(self, site: str) -> tuple[float, float]:
        """Request utilisation of the site's replicas since the last look (requests
        completed / the requests they could complete at full batch,
        :func:`replica_request_capacity` for the site's length mix), and requests
        waiting (not yet admitted, or parked/queued at the router) per accepting replica."""
        w = self.world
        now = w.env.now
        t_last, done_last = self._last[site]
        mix = self._site_mix(site)
        caps: dict[int, float] = {}
        done = 0
        cap_req = 0.0
        waiting = 0.0
        accepting = 0
        for r in self._site_reps(site):
            done += r.completed
            end = now if r.retired_s is None else min(now, r.retired_s)
            span = end - max(t_last, r.added_s)
            if span > 0 and r.up and mix is not None:
                if r.deployment not in caps:
                    caps[r.deployment] = replica_request_capacity(r, mix)
                cap_req += caps[r.deployment] * span
            if r.up and r.accepting:
                accepting += 1
                waiting += len(r.waiting)
        for wi, ws in enumerate(self.work_sites):
            if site in ws:
                waiting += (len(w.router.parked[wi]) + len(w.router.queues[wi])) / len(ws)
        self._last[site] = (now, done)
        u = (done - done_last) / cap_req if cap_req > 0 else (1.0 if waiting else 0.0)
        q = waiting / accepting if accepting else (math.inf if waiting else 0.0)
        return u, q

    def _forecast_gpus(self, site: str, t: float) -> float:
        """GPUs of the growing deployment that the expected arrivals over the next look need
        at full batch (:func:`replica_request_capacity`), each workload split evenly
        over the sites that may serve it."""
        w = self.world
        dt = self.params.check_interval_s
        di = self._growing(site)
        rep = self._probe(di)
        gpus = 0.0
        for wi, wl in enumerate(w.scenario.workloads):
            ws = self.work_sites[wi]
            if site not in ws:
                continue
            proc = w.arrival_procs[wi]
            if proc is None:
                proc = wl.arrivals.build()
            if hasattr(proc, "expected_count"):
                rate = proc.expected_count(t, t + dt) / dt
            else:
                rate = proc.mean_rate_per_s()
            st = w.metrics.streams[wi]
            if st.arrivals > 0:
                lengths = LengthMoments.of_streams([st])
            elif wl.output_tokens is not None and wl.prompt_tokens is not None:
                lengths = LengthMoments.of_laws(wl.prompt_tokens.build(), wl.output_tokens.build())
            else:
                continue
            cap = replica_request_capacity(rep, lengths)
            if cap > 0:
                gpus += rate / len(ws) / cap * rep.gpus
        return gpus

    def _probe(self, di: int):
        probe = next((r for r in self.world.replicas if r.deployment == di), None)
        return probe if probe is not None else probe_replica(self.world.env, self.world.scenario.deployments[di])

    # ------------------------------------------------------------------ placement
    def _growing(self, site: str) -> int:
        deps = self.site_deps[site]
        sc = self.world.scenario
        if self.spec.deployment is not None:
            named = [di for di in deps if sc.deployments[di].name == self.spec.deployment]
            if named:
                return named[0]
        if len(deps) == 1:
            return deps[0]
        best, score = deps[0], -1.0
        for di in deps:
            reps = [r for r in self.world.replicas if r.deployment == di and r.up and r.accepting]
            load = sum(r.outstanding_tokens for r in reps) / max(len(reps), 1) if reps else math.inf
            if load > score:
                best, score = di, load
        return best

    def _ready(self, site: str, tr: Tranche):
        w = self.world
        di = self._growing(site)
        tp = w.scenario.deployments[di].tp
        new = [w.add_replica(di) for _ in range(tr.gpus // tp)]
        self.holders[tr.id] = [r.index for r in new]
        self.added[site] += len(new)
        if self.faults is not None and new:
            self.faults.add_replicas(new)
        self.gpus_peak[site] = max(self.gpus_peak[site], self.managers[site].gpus_in_force())

    def _leaving(self, tr: Tranche, eff: float):
        for i in self.holders.get(tr.id, []):
            if self.world.replicas[i].retired_s is None:
                self.world.drain_replica(i)

    def _left(self, site: str, tr: Tranche):
        w = self.world
        for i in self.holders.get(tr.id, []):
            rep = w.replicas[i]
            if rep.retired_s is not None:
                continue
            self.migrated += w.retire_replica(i)
            self.retired[site] += 1
            if self.faults is not None:
                self.faults.retire(rep)

    # ------------------------------------------------------------------ report
    def report(self) -> dict:
        out = {"policy": self.params.kind, "migrated_requests": self.migrated, "sites": {}}
        for site, mgr in self.managers.items():
            out["sites"][site] = {
                "gpus_start": self.gpus_start[site],
                "gpus_end": mgr.gpus_in_force(),
                "gpus_peak": self.gpus_peak[site],
                "orders": mgr.orders, "releases": mgr.releases,
                "replicas_added": self.added[site], "replicas_retired": self.retired[site],
                "events": [[t, kind, g] for t, kind, g in mgr.events],
            }
        return out
