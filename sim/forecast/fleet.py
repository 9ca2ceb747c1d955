"""The fleet of a forecast and the ledger that bills it.

Both fleets keep one :class:`sim.economics.ledger.Ledger` on the forecast's clock (month =
:data:`sim.market.market.MONTH_S`), the same ledger a single run bills through: the
tranches of the scenario's capacity contracts (:func:`sim.economics.capacity.initial_tranches`,
as single runs build them) accrue their fixed charges continuously, owned GPUs draw power
from the busy GPU-seconds measured in the month's windows (scaled to the month, per site),
and the forecast posts each tenant-month's tokens and SLA counts to the same ledger
(:meth:`sim.economics.ledger.Ledger.record_usage`), so revenue, every cost line, the SLA
credits and the margin come out of one set of integer-cent cells.

* :class:`FixedFleet` (``capacity_policy.kind = "fixed"``): the scenario's fleet all along;
* :class:`PolicyFleet` (``threshold`` or ``forecast``): capacity managers order and release
  tranches under lead times and terms; each month's windows run on the fleet in force.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from sim.economics.capacity import CapacityManager, PolicyParams, initial_tranches
from sim.economics.ledger import BusyView, Ledger
from sim.market.market import MONTH_S
from sim.scenario import Scenario, WorkloadSpec, with_overrides
from sim.serving.fluid import LengthMoments, probe_replica, replica_request_capacity
from sim.serving.residency import serving_sites
from sim.forecast.windows import tenant_workload


class _LedgerFleet:
    """What both fleets share: the ledger and the busy GPU-seconds it meters power from."""

    def __init__(self):
        self.busy_cum: dict[str, float] = {}
        self.ledger = Ledger(month_s=MONTH_S, fleet=self._views, start_s=0.0)

    def _sites(self) -> list[str]:
        raise NotImplementedError

    def _views(self):
        return [BusyView(i + 1, site, 1, self.busy_cum.get(site, 0.0)) for i, site in enumerate(self._sites())]

    def close(self, months: int) -> dict:
        """Close the ledger at the end of ``months`` and return its report."""
        self.ledger.close(months * MONTH_S)
        return self.ledger.report()


class FixedFleet(_LedgerFleet):
    """The scenario's own fleet for the whole forecast (no capacity policy), billed as a
    single run bills it: every contract's tranche from month 0 (a site without contracts,
    when no site has any: its deployed GPUs as on-demand rental)."""

    def __init__(self, scenario: Scenario):
        super().__init__()
        self.scenario = scenario
        site_tranches, _ = initial_tranches(scenario, 0.0)
        self.sites = sorted(site_tranches)
        for site in self.sites:
            for tr in site_tranches[site]:
                self.ledger.add_tranche(tr)
        self.site_gpus = {site: sum(tr.gpus for tr in trs) for site, trs in site_tranches.items()}
        self.gpus = sum(d.gpus for d in scenario.deployments)

    def _sites(self) -> list[str]:
        return self.sites

    def base_for(self, t: float) -> Scenario:
        return self.scenario

    def gpus_at(self, t: float) -> int:
        return self.gpus

    def events_in(self, m: int, kind: str) -> int:
        return 0

    def record(self, m: int, per: dict, targets: list[float]):
        """Meter the month's busy GPU-seconds (the windows' measure scaled to the month,
        at most the site's GPUs all month) and bill the month."""
        for site, st in per["sites"].items():
            busy = min(st["busy_gpu_s"] * per["scale"], self.site_gpus.get(site, 0) * MONTH_S)
            self.busy_cum[site] = self.busy_cum.get(site, 0.0) + busy
        self.ledger.advance((m + 1) * MONTH_S)

    def report(self) -> None:
        return None


class PolicyFleet(_LedgerFleet):
    """The capacity policy of a forecast (``capacity_policy.kind`` threshold or forecast).

    One :class:`sim.economics.capacity.CapacityManager` per site with deployments runs in the market's
    environment (the forecast's clock), so orders and releases follow lead times, minimum
    terms and notice in seconds, and every tranche is billed by a :class:`sim.economics.ledger.Ledger`
    from its arrival to its end.  Each month's traffic windows run on the fleet in force at
    mid-month: the site's growing deployment (``capacity_policy.deployment``, else the
    site's first) gets ``(GPUs in force - the other deployments' GPUs) // tp`` replicas.

    Signals, at month scale (policies look at most once a day, see ``LOOK_S``):

    * threshold: the site's request utilisation measured in last month's windows (requests
      completed / what its replicas could complete at full batch), rescaled
      to the GPUs in force now (demand held, capacity changed: ``u x GPUs measured / GPUs
      now``); and queueing, seen at month scale as SLA attainment: a month whose attainment
      fell under its tenants' lowest target makes each site not under ``low_utilisation``
      order once;
    * forecast: the peak-hour request rate of the sovereign contracts already signed and in
      force at the time looked at, hosted marketplace tenants left out (contract rate x the vertical's profile peak, split evenly
      over the sites its residency allows), in GPUs at the fluid request capacity of a
      replica for the vertical's length laws (:func:`sim.serving.fluid.replica_request_capacity`).
    """

    LOOK_S = 86400.0   # run setting: a month-scale fleet needs no hourly looks

    def __init__(self, scenario: Scenario, env, market, spec):
        self.scenario = scenario
        self.env = env
        self.market = market
        self.spec = spec
        _LedgerFleet.__init__(self)
        site_tranches, order_terms = initial_tranches(scenario, 0.0)
        for trs in site_tranches.values():
            for tr in trs:
                self.ledger.add_tranche(tr)
        cp = scenario.capacity_policy
        params = PolicyParams.from_spec(cp)
        params = dataclasses.replace(params, check_interval_s=max(params.check_interval_s, self.LOOK_S))
        self.site_deps: dict[str, list[int]] = {}
        for di, dep in enumerate(scenario.deployments):
            self.site_deps.setdefault(dep.site or "-", []).append(di)
        self.growing: dict[str, int] = {}
        for site, deps in self.site_deps.items():
            named = [di for di in deps if scenario.deployments[di].name == cp.deployment]
            self.growing[site] = named[0] if named else deps[0]
        self.measured: dict[str, tuple[float, int]] = {}   # site -> (throughput util, GPUs measured)
        self.attainment_short: set[str] = set()
        self.managers: dict[str, CapacityManager] = {}
        self._tenant_cache: dict[tuple[str, int], tuple[float, float, set[str]]] = {}
        for site in self.site_deps:
            mgr = CapacityManager(env, self.ledger, site, order_terms[site], params,
                                  load=lambda site=site: self._load(site),
                                  forecast_gpus=lambda t, site=site: self._forecast_gpus(site, t),
                                  initial=site_tranches.get(site, []))
            mgr.release_grid_points = 120   # run setting: daily looks need no finer release check
            self.managers[site] = mgr
        self.gpus_start = {site: m.gpus_in_force(0.0) for site, m in self.managers.items()}

    # ------------------------------------------------------------------ the fleet of a month
    def replicas_at(self, t: float) -> dict[int, int]:
        sc = self.scenario
        out = {di: dep.replicas for di, dep in enumerate(sc.deployments)}
        for site, mgr in self.managers.items():
            g = mgr.gpus_in_force(t)
            di = self.growing[site]
            others = sum(sc.deployments[j].gpus for j in self.site_deps[site] if j != di)
            out[di] = max(0, (g - others) // sc.deployments[di].tp)
        return out

    def base_for(self, t: float) -> Scenario:
        reps = self.replicas_at(t)
        return with_overrides(self.scenario, {f"deployments.{di}.replicas": n for di, n in reps.items()})

    def gpus_at(self, t: float) -> int:
        return sum(m.gpus_in_force(t) for m in self.managers.values())

    # ------------------------------------------------------------------ signals
    def _load(self, site: str) -> tuple[float, float] | None:
        if site not in self.measured:
            return None       # the first month is not measured yet
        u, g_meas = self.measured[site]
        g_now = self.managers[site].gpus_in_force()
        u_now = u * g_meas / g_now if g_now > 0 else (1.0 if u > 0 else 0.0)
        q = 0.0
        if site in self.attainment_short:
            self.attainment_short.discard(site)   # one order per short month
            if u_now >= self.managers[site].p.low_utilisation:
                q = math.inf
        return u_now, q

    def _vertical(self, contract, di: int) -> tuple[float, float, set[str]]:
        """(profile peak multiplier, GPUs of deployment ``di`` per request/s at full batch,
        sites its residency allows) of a tenant of ``contract``'s vertical."""
        key = (contract.vertical, di)
        if key not in self._tenant_cache:
            w = WorkloadSpec.model_validate(tenant_workload(contract, self.spec))
            proc = w.arrivals.build()
            peak = float(np.max(proc.multipliers())) if hasattr(proc, "multipliers") else 1.0
            dep = self.scenario.deployments[di]
            cap = replica_request_capacity(probe_replica(self.env, dep),
                                           LengthMoments.of_laws(w.prompt_tokens.build(), w.output_tokens.build()))
            ok = serving_sites(self.scenario, w.model, w.residency)
            self._tenant_cache[key] = (peak, dep.tp / cap if cap > 0 else 0.0, ok)
        return self._tenant_cache[key]

    def _forecast_gpus(self, site: str, t: float) -> float:
        di = self.growing[site]
        gpus = 0.0
        for c in self.market.sovereign_contracts(t):
            if self.market.channels.hosted(c):     # served on a hyperscaler's GPUs (sim/market/channels.py)
                continue
            peak, gpus_per_rps, ok = self._vertical(c, di)
            if site in ok:
                gpus += c.rate_per_s * peak / len(ok) * gpus_per_rps
        return gpus

    # ------------------------------------------------------------------ after a month
    def record(self, m: int, per: dict, targets: list[float]):
        """Feed the month's measurements to the policies and bill the month."""
        t_mid = (m + 0.5) * MONTH_S
        for site, mgr in self.managers.items():
            st = per["sites"].get(site)
            g = mgr.gpus_in_force(t_mid)
            if st is not None and st["capacity_requests"] > 0:
                self.measured[site] = (st["completed"] / st["capacity_requests"], g)
            elif g > 0:
                self.measured[site] = (0.0, g)   # no traffic reached the site this month
            u_busy = 0.0
            if st is not None:
                gpu_s_site = g * per["window_s"] * per["windows"]
                u_busy = min(1.0, st["busy_gpu_s"] / gpu_s_site) if gpu_s_site > 0 else 0.0
            self.busy_cum[site] = self.busy_cum.get(site, 0.0) + u_busy * g * MONTH_S
        att = per["sla_attainment"]
        if att is not None and targets and att < min(targets):
            self.attainment_short = set(self.managers)
        self.ledger.advance((m + 1) * MONTH_S)

    def _sites(self) -> list[str]:
        return sorted(self.managers)

    def events_in(self, m: int, kind: str) -> int:
        lo, hi = m * MONTH_S, (m + 1) * MONTH_S
        return sum(g for mgr in self.managers.values() for t, k, g in mgr.events if k == kind and lo <= t < hi)

    def report(self) -> dict:
        end = self.env.now
        return {"policy": self.scenario.capacity_policy.kind, "sites": {
            site: {"gpus_start": self.gpus_start[site], "gpus_end": mgr.gpus_in_force(end - 1e-9),
                   "orders": mgr.orders, "releases": mgr.releases,
                   "events": [[t, k, g] for t, k, g in mgr.events]}
            for site, mgr in self.managers.items()}}
