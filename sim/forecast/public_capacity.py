"""Public AI capacity in the forecast: eligible tenants served on the EU AI gigafactories.

With ``[market.public_sector] capacity_access = true``, from ``capacity_lead_months`` on,
each month the sovereign tenants of ``capacity_vertical`` (the eligibility gate: EuroHPC
access is for public research, academia and public-sector users, models/market/public_sector.csv)
are placed on public capacity instead of the simulated fleet, in contract-id order while
their GPUs fit under ``capacity_gpus_max``:

* GPUs: the tenant's peak-hour request rate (contract rate x its vertical's profile peak)
  over the fluid request capacity of one replica of the scenario's first deployment
  (:func:`sim.serving.fluid.replica_request_capacity`), times its TP; the month's
  total rounded up to whole GPUs;
* cost: a one-month tranche of those GPUs under
  :func:`sim.economics.contracts.public_capacity_terms` at site ``public-capacity`` on the
  forecast's ledger (cost line ``rental``);
* revenue: the tenant's contracted volume for the month (rate x month x its workload's mean
  prompt and output tokens) at its contract price, on the same ledger, with an SLA count at
  ``capacity_attainment`` (their traffic is not simulated); that attainment is fed back to
  the market as the tenant's delivered SLA.

Without access (the default) nothing changes: every tenant runs on the fleet.
"""
from __future__ import annotations

import math

import numpy as np

from sim.economics.contracts import Tranche, public_capacity_terms
from sim.economics.ledger import MARKETPLACE_LINES, Ledger
from sim.market.market import MONTH_S
from sim.scenario import Scenario, WorkloadSpec
from sim.serving.fluid import LengthMoments, probe_replica, replica_request_capacity
from sim.forecast.windows import tenant_workload

PUBLIC_SITE = "public-capacity"
SLA_COUNT_BASE = 10 ** 6   # run setting: whole-count SLA base, so the credit tier is decided exactly


class PublicCapacity:
    """The public-capacity contract of a forecast and the tenants it serves each month."""

    def __init__(self, scenario: Scenario, market_spec, env, forecast_spec):
        ps = market_spec.public_sector
        self.spec = ps
        self.env = env
        self.forecast_spec = forecast_spec
        self.scenario = scenario
        self.on = bool(ps.capacity_access and ps.capacity_gpus_max > 0 and scenario.deployments)
        self.available_s = ps.capacity_lead_months * MONTH_S
        self.terms = public_capacity_terms("public_capacity", lead_time_s=self.available_s)
        self._cache: dict[str, tuple[float, float, float, float]] = {}
        self.months: dict[int, dict] = {}

    def eligible(self, contract) -> bool:
        """The eligibility gate: only tenants of ``capacity_vertical``."""
        return contract.vertical == self.spec.capacity_vertical

    def available(self, t_s: float) -> bool:
        return self.on and t_s >= self.available_s

    def _tenant(self, contract) -> tuple[float, float, float, float]:
        """(profile peak, GPUs per request/s, mean prompt tokens, mean output tokens) of a
        tenant of ``contract``'s vertical on the first deployment's replica."""
        if contract.vertical not in self._cache:
            w = WorkloadSpec.model_validate(tenant_workload(contract, self.forecast_spec))
            proc = w.arrivals.build()
            peak = float(np.max(proc.multipliers())) if hasattr(proc, "multipliers") else 1.0
            dep = self.scenario.deployments[0]
            prompt, output = w.prompt_tokens.build(), w.output_tokens.build()
            p_mean, o_mean = prompt.mean, output.mean
            cap = replica_request_capacity(probe_replica(self.env, dep), LengthMoments.of_laws(prompt, output))
            self._cache[contract.vertical] = (peak, dep.tp / cap if cap > 0 else math.inf, p_mean, o_mean)
        return self._cache[contract.vertical]

    def place(self, m: int, contracts: list, ledger: Ledger, tenants, delivered) -> set[str]:
        """Serve month ``m``'s eligible tenants on public capacity (bill their tokens and the
        GPUs); returns the ids of the contracts placed there (the fleet does not serve them)."""
        t0 = m * MONTH_S
        t_mid = t0 + 0.5 * MONTH_S
        out = {"public_capacity_gpus": 0, "public_capacity_tenants": 0, "public_capacity_tokens": 0.0}
        self.months[m] = out
        if not self.available(t_mid):
            return set()
        gpus = 0.0
        placed = []
        for c in sorted((c for c in contracts if self.eligible(c)), key=lambda c: c.id):
            peak, gpus_per_rps, _, _ = self._tenant(c)
            g = c.rate_per_s * peak * gpus_per_rps
            if math.ceil(gpus + g) > self.spec.capacity_gpus_max:
                continue
            gpus += g
            placed.append(c)
        if not placed:
            return set()
        n = int(math.ceil(gpus))
        ledger.add_tranche(Tranche(PUBLIC_SITE, self.terms, n, t0, ordered_s=t0 - self.terms.lead_time_s,
                                   end_s=t0 + MONTH_S))
        att = self.spec.capacity_attainment
        tokens = 0
        for c in placed:
            _, _, p_mean, o_mean = self._tenant(c)
            requests = c.rate_per_s * MONTH_S
            name = f"c{c.id}"
            ledger.set_price(name, tenants.price(c))
            prompt, output = round(requests * p_mean), round(requests * o_mean)
            ledger.record_usage(t_mid, name, c.vertical, PUBLIC_SITE, prompt, output,
                                SLA_COUNT_BASE, round(SLA_COUNT_BASE * att))
            delivered.add(c.id, requests, requests * att)
            tokens += prompt + output
        out.update(public_capacity_gpus=n, public_capacity_tenants=len(placed), public_capacity_tokens=float(tokens))
        return {c.id for c in placed}

    def month_columns(self, m: int) -> dict:
        return dict(self.months.get(m, {"public_capacity_gpus": 0, "public_capacity_tenants": 0,
                                        "public_capacity_tokens": 0.0}))


def public_capacity_cost_eur(ledger: Ledger, months: int) -> list[float]:
    """Per month, the cost the ledger posted at the public-capacity site (whole cents)."""
    cents = [0] * months
    for (m, site, _vertical, line), c in ledger.cells.items():
        if (site == PUBLIC_SITE and line != "sla_credits" and line not in MARKETPLACE_LINES   # a marketplace fee is not capacity
                and not line.startswith("revenue") and 0 <= m < months):
            cents[m] += c
    return [c / 100 for c in cents]
