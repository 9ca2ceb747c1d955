"""Compliance in the market: certification gates and supply-chain sovereignty fit.

Parameters in ``[market.compliance]`` (:mod:`sim.scenario.certification`, tables in
``models/market/``); the sites (with what they hold at t = 0, what they plan, who owns the
colo and where the GPUs come from) are the scenario's ``[[sites]]``.

* **buyer country** -- each award (and each contract of the t = 0 book) draws its buyer's
  country from ``buyer_countries`` (stream ``market/buyer_country/<vertical>``; one draw per
  award, only when the mechanism is active, so other streams never shift);
* **gate** (``gate = "exclude"``) -- the rules of ``buyer_rules`` for (vertical, country) and
  (vertical, ``*``) name the certifications the buyer needs; a competitor holding none of
  them (``competitor_certifications``) and the sovereign provider when *no site* holds them
  all at award time (held at t = 0, or planned and past its lead time) are left out of that
  buyer's logit choice.  An RFP award the gate removed the sovereign offer from is a
  *gated award* (``gated_in``); the t = 0 book is gated the same way but not counted;
* **supply-chain fit** -- for the ``strict_verticals`` the sovereign offer's sovereignty fit
  is lowered by the smallest supply-chain penalty among the sites eligible for the buyer
  (holding its certifications): penalty of a site = the ``supply_chain`` penalty of its
  ``colo_owner`` + that of its ``gpu_origin`` (the buyer picks the best eligible site).

Without sites (the market-only mode) the mechanism is inactive: no draw, no gate, no change.
The won contract carries ``buyer_country`` and ``required_certifications`` (the forecast
serves it only at sites that hold them, :mod:`sim.forecast.compliance`).
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from sim.scenario.certification import ANY_COUNTRY, OTHER_COUNTRY, ComplianceSpec

SOVEREIGN = "sovereign"


class SiteCertifications:
    """What each site holds at time t (seconds from the start): its t = 0 labels, plus each
    planned certification once ``start_month + months_to_obtain`` has passed."""

    def __init__(self, sites, spec: ComplianceSpec, month_s: float, t0_s: float = 0.0):
        self.sites = list(sites)
        self.month_s = float(month_s)
        self.t0_s = float(t0_s)
        cat = spec.catalogue()
        self.held0 = {s.name: set(s.certifications) for s in self.sites}
        self.planned = {s.name: [(p.name, p.start_month + cat[p.name].months_to_obtain if p.name in cat else p.start_month)
                                 for p in s.planned_certifications] for s in self.sites}

    def held(self, site: str, t_s: float) -> set[str]:
        month = (t_s - self.t0_s) / self.month_s
        out = set(self.held0.get(site, ()))
        out.update(name for name, held_month in self.planned.get(site, ()) if month >= held_month - 1e-9)
        return out

    def sites_holding(self, certs, t_s: float) -> list:
        need = set(certs)
        return [s for s in self.sites if need <= self.held(s.name, t_s)]

    def count(self, t_s: float) -> int:
        """(site, certification) pairs held at ``t_s``."""
        return sum(len(self.held(s.name, t_s)) for s in self.sites)


class Compliance:
    """The gate and fit of a :class:`sim.market.market.Market` (it calls :meth:`award`
    around each choice, :meth:`gated` and :meth:`fit_penalty` inside it, :meth:`tag` on the
    contract signed)."""

    def __init__(self, market, spec: ComplianceSpec, sites, streams, month_s: float):
        self.market = market
        self.spec = spec
        self.month_s = float(month_s)
        self.active = sites is not None and len(sites) > 0
        self.gating = self.active and spec.gate == "exclude"
        self.sites = SiteCertifications(sites or [], spec, month_s, market.t0_s)
        self.countries = list(spec.buyer_countries)
        self._cum = np.cumsum(np.fromiter(spec.buyer_countries.values(), float)) if self.countries else np.array([])
        self._rng = {v: streams.generator(f"market/buyer_country/{v}") for v in market.verticals} if self.active else {}
        comp = spec.competitor_certifications
        self.competitor_holds = {c: set(comp.get(c, ())) for c in market.competitors}
        pen = {(p.attribute, p.value): p.fit_penalty for p in spec.supply_chain}
        self.site_penalty = {s.name: pen.get(("colo_owner", s.colo_owner), 0.0) + pen.get(("gpu_origin", s.gpu_origin), 0.0)
                             for s in self.sites.sites}
        self.strict = set(spec.strict_verticals)
        self.gated_awards: list[tuple[float, str, str]] = []   # (t_s, vertical, country) of RFPs the gate removed us from
        self._cur: dict | None = None                          # the award being decided

    # ------------------------------------------------------------------ rules
    def required(self, vertical: str, country: str) -> list[str]:
        """Certifications a buyer of ``vertical`` in ``country`` needs (rules of its country and of '*')."""
        out = []
        for r in self.spec.buyer_rules:
            if r.vertical == vertical and r.country in (country, ANY_COUNTRY) and r.certification not in out:
                out.append(r.certification)
        return out

    def draw_country(self, vertical: str) -> str:
        u = float(self._rng[vertical].random())
        i = min(int(np.searchsorted(self._cum, u * self._cum[-1], side="right")), len(self.countries) - 1)
        return self.countries[i]

    # ------------------------------------------------------------------ the award
    @contextmanager
    def award(self, vertical: str, t_s: float, offered: bool = True, count: bool = True):
        """Decide one award of ``vertical`` at ``t_s`` inside this context: draws the buyer's
        country, sets who the gate excludes and the sovereign fit penalty.  ``offered``: the
        sovereign offer would be in the choice without the gate (not excluded as the provider
        a churned tenant left, not unlisted on the buyer's marketplace)."""
        if not self.active:
            yield None
            return
        country = self.draw_country(vertical)
        need = self.required(vertical, country)
        eligible = self.sites.sites_holding(need, t_s)
        excluded = set()
        if self.gating and need:
            excluded = {c for c, held in self.competitor_holds.items() if not set(need) <= held}
            if not eligible:
                excluded.add(SOVEREIGN)
        penalty = 0.0
        if vertical in self.strict:
            pool = eligible if eligible else self.sites.sites
            penalty = min((self.site_penalty[s.name] for s in pool), default=0.0)
        if SOVEREIGN in excluded and offered and count:
            self.gated_awards.append((t_s, vertical, country))
        self._cur = {"country": country, "need": need, "excluded": excluded, "penalty": penalty}
        try:
            yield self._cur
        finally:
            self._cur = None

    def gated(self, provider: str) -> bool:
        """The award being decided leaves ``provider`` out (it holds no required certification)."""
        return self._cur is not None and provider in self._cur["excluded"]

    def fit_penalty(self, vertical: str) -> float:
        """What the award being decided takes off the sovereign offer's sovereignty fit."""
        return self._cur["penalty"] if self._cur is not None else 0.0

    def tag(self, contract) -> None:
        """Write the award's buyer country and required certifications on ``contract``."""
        if self._cur is not None:
            contract.buyer_country = self._cur["country"]
            contract.required_certifications = tuple(self._cur["need"])

    # ------------------------------------------------------------------ reports
    def gated_in(self, t0_s: float, t1_s: float) -> int:
        return sum(1 for t, _v, _c in self.gated_awards if t0_s <= t < t1_s)
