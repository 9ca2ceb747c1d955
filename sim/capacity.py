"""Capacity policy: a SimPy process that orders and releases GPU tranches at one site.

Every ``check_interval_s`` it observes the site (busy share of the GPUs in force since the
last look, and optionally a demand forecast) and decides:

* ``fixed`` -- nothing: the contracts' GPUs only;
* ``threshold`` -- busy share above ``high_utilisation``: order ``step_gpus`` (one order in
  transit at a time); below ``low_utilisation``: ask to release the tranche that can leave
  soonest, never going under ``min_gpus``;
* ``forecast`` -- keep ``ceil(forecast x (1 + headroom))`` GPUs: order what the forecast at
  ``now + lead_time`` needs beyond what is in force or in transit; release a tranche when
  the forecast peak until that tranche could leave stays covered without it.

Orders arrive after the contract's lead time; a release takes effect after its notice and
never before the tranche's minimum term.  ``on_ready(tranche)`` is called when GPUs arrive
(place replicas on them), ``on_leaving(tranche, effective_s)`` when a release is asked
(drain the replicas before ``effective_s``).  Every tranche is on the ledger from its start
to its end, so the money follows the decisions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from sim.contracts import Terms, Tranche


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

    @classmethod
    def from_spec(cls, spec) -> "PolicyParams":
        return cls(spec.kind, spec.check_interval_s, spec.high_utilisation, spec.low_utilisation,
                   spec.step_gpus, spec.min_gpus, spec.max_gpus, spec.headroom)


class CapacityManager:
    """Owns the tranches of one site; ``busy_gpu_s()`` returns cumulative busy GPU-seconds
    at the site (for the threshold policy); ``forecast_gpus(t)`` the GPUs demand needs at
    time ``t`` (for the forecast policy)."""

    def __init__(self, env, ledger, site: str, order_terms: Terms, params: PolicyParams,
                 busy_gpu_s: Callable[[], float] | None = None,
                 forecast_gpus: Callable[[float], float] | None = None,
                 on_ready: Callable[[Tranche], None] | None = None,
                 on_leaving: Callable[[Tranche, float], None] | None = None,
                 initial: list[Tranche] | None = None):
        if params.kind == "threshold" and busy_gpu_s is None:
            raise ValueError("threshold policy needs busy_gpu_s")
        if params.kind == "forecast" and forecast_gpus is None:
            raise ValueError("forecast policy needs forecast_gpus")
        self.env = env
        self.ledger = ledger
        self.site = site
        self.terms = order_terms
        self.p = params
        self.busy_gpu_s = busy_gpu_s
        self.forecast_gpus = forecast_gpus
        self.on_ready = on_ready or (lambda tr: None)
        self.on_leaving = on_leaving or (lambda tr, t: None)
        self.tranches: list[Tranche] = []
        self.in_transit: list[Tranche] = []
        self.orders = 0
        self.releases = 0
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
        self.in_transit.append(tr)
        if self.ledger is not None:
            self.ledger.add_tranche(tr)   # billing starts at arrival (start_s)
        self.env.process(self._arrive(tr))
        return tr

    def _arrive(self, tr: Tranche):
        yield self.env.timeout(tr.start_s - self.env.now)
        self.in_transit.remove(tr)
        self.tranches.append(tr)
        self.on_ready(tr)

    def release(self, tr: Tranche) -> float:
        now = self.env.now
        eff = tr.release_effective_s(now)
        tr.release_asked_s = now
        self.releases += 1
        if self.ledger is not None:
            self.ledger.end_tranche(tr, eff)
        else:
            tr.end_s = eff
        self.on_leaving(tr, eff)
        return eff

    def _releasable(self) -> list[Tranche]:
        now = self.env.now
        c = [tr for tr in self.tranches if tr.active(now) and tr.release_asked_s is None]
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
        busy = self.busy_gpu_s()
        g = self.gpus_in_force()
        dt = now - self._last_t
        u = (busy - self._last_busy) / (g * dt) if g > 0 and dt > 0 else (1.0 if busy > self._last_busy else 0.0)
        self._last_busy, self._last_t = busy, now
        staying = self.gpus_staying()
        if u > self.p.high_utilisation and not self.in_transit and staying + self.p.step_gpus <= self.p.max_gpus:
            self.order(self.p.step_gpus)
        elif u < self.p.low_utilisation:
            for tr in self._releasable():
                if staying - tr.gpus >= self.p.min_gpus:
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
            horizon_peak = max(need(t) for t in _grid(now, eff + p.check_interval_s, p.check_interval_s))
            if have - tr.gpus >= horizon_peak:
                self.release(tr)
                have -= tr.gpus
            else:
                break


def _grid(a: float, b: float, step: float, max_points: int = 2000):
    n = max(1, min(max_points, int(math.ceil((b - a) / step)) + 1))
    h = (b - a) / (n - 1) if n > 1 else 0.0
    return [a + i * h for i in range(n)]
