"""Attach the economics of a scenario to a serving world: the ledger, faults, capacity policy.

The world knows nothing of money.  :class:`WorldEconomics` subscribes to the world's
observer hooks (a request completed, a request rejected) and drives the world only through
its public fleet operations (fail, repair, add, drain, retire a replica).
"""
from __future__ import annotations

import math
from typing import Any

from sim.economics.capacity import FleetCapacity, initial_tranches
from sim.economics.contracts import HOUR_S
from sim.economics.faults import FaultInjector, config_from_spec
from sim.economics.ledger import BusyView, Ledger, price_for


class WorldEconomics:
    """Attach a ledger (and, if ``scenario.faults.enabled``, a fault injector; if the capacity
    policy is not ``fixed``, the policy) to a :class:`sim.serving.world.World` before it runs;
    :meth:`finish` after it ran.

    It observes the world through :meth:`World.observe` (each completion is billed, each
    rejection after the warm-up is an SLA miss, as in :mod:`sim.serving.metrics`) and reads
    each replica's ``busy_s`` + ``partial_run(now)`` for metered power."""

    def __init__(self, world, tick_s: float = HOUR_S):
        self.world = world
        sc = world.scenario
        env = world.env
        self.ledger = Ledger(fleet=self._fleet, start_s=env.now)
        self.implicit_contracts = not any(s.contracts for s in sc.sites)
        site_tranches, order_terms = initial_tranches(sc, env.now)
        for trs in site_tranches.values():
            for tr in trs:
                self.ledger.add_tranche(tr)
        cp = sc.capacity_policy
        for w in sc.workloads:
            self.ledger.set_price(w.name, price_for(sc.pricing, w))
        world.observe(on_complete=self._completed, on_reject=self._rejected)
        self.faults = None
        if sc.faults.enabled:
            self.fault_cfg = config_from_spec(sc.faults)
            self.faults = FaultInjector(env, world.replicas, self.fault_cfg, world.streams.generator,
                                        self._down, self._up)
        self.capacity = None
        if cp.kind != "fixed":
            self.capacity = FleetCapacity(world, self.ledger, cp, dict(site_tranches), order_terms, self.faults)
        self.requeued = 0
        self.tick_s = tick_s
        env.process(self._ticker())

    def _fleet(self):
        now = self.world.env.now
        return [BusyView(r.index + 1, r.site, r.gpus, r.busy_s + r.partial_run(now)[0])
                for r in self.world.replicas]

    def _ticker(self):
        env = self.world.env
        while True:
            nxt = (math.floor(env.now / self.tick_s) + 1) * self.tick_s
            yield env.timeout(nxt - env.now)
            self.ledger.advance(env.now)

    def _sla_met(self, r) -> bool:
        w = self.world.scenario.workloads[r.workload]
        ttft = r.first_token_s - r.arrival_s + r.latency_s
        if ttft > w.sla.ttft_s:
            return False
        if r.output_tokens > 1:
            return (r.completion_s - r.first_token_s) / (r.output_tokens - 1) <= w.sla.tpot_s
        return True

    def _completed(self, r, now):
        sc = self.world.scenario
        w = sc.workloads[r.workload]
        rep = self.world.replicas[r.replica] if r.replica >= 0 else None
        measured = r.arrival_s >= sc.simulation.warmup_s
        self.ledger.record_request(now, w.name, w.vertical, rep.site if rep is not None else None,
                                   r.prompt_tokens, r.output_tokens,
                                   self._sla_met(r) if measured else True, measured=measured)

    def _rejected(self, r, reason, now):
        if r.arrival_s >= self.world.scenario.simulation.warmup_s:
            self.ledger.record_miss(now, self.world.scenario.workloads[r.workload].name)

    def _down(self, rep, now):
        # the engine's World.fail_replica: replica.fail + requeue through the router
        n = self.world.fail_replica(rep.index, keep_generated=self.fault_cfg.keep_generated)
        self.requeued += n
        self.faults.log.requeued += n

    def _up(self, rep, now):
        self.world.repair_replica(rep.index)

    def finish(self) -> dict[str, Any]:
        now = self.world.env.now
        self.ledger.close(now)
        out = self.ledger.report()
        out["contracts_implicit"] = self.implicit_contracts
        if self.capacity is not None:
            out["capacity"] = self.capacity.report()
        if self.faults is not None:
            out["availability"] = self.faults.availability(now)
        else:
            out["availability"] = {"replica_availability": 1.0, "failures": {"gpu": 0, "node": 0, "site": 0}}
        return out
