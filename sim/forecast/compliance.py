"""Compliance in the forecast: certification, EU AI Act and DORA costs on the ledger, sites
serving only tenants whose certifications they hold, and the monthly columns.

Each month ``m`` (parameters ``[market.compliance]``, :mod:`sim.scenario.certification`):

* **certifications** (ledger line ``certification``, at the site): a certification a site
  holds at t = 0 costs ``yearly_eur / 12`` every month; a planned one
  (``sites.planned_certifications``: name, start_month) costs ``one_off_eur /
  months_to_obtain`` in each month from ``start_month`` (all of it in ``start_month`` when
  the lead time is 0) and is held, gating buyers and costing ``yearly_eur / 12``, from
  month ``start_month + months_to_obtain``;
* **EU AI Act** (line ``ai_act``, ledger site ``compliance``): each model deployed on the
  month's fleet (a deployment with replicas) costs ``ai_act_one_off_eur_per_model`` in the
  first month it is served and ``ai_act_yearly_eur_per_model / 12`` every month it is;
* **DORA** (line ``dora``, ledger site ``compliance``, vertical finance): each sovereign
  finance contract in force at mid-month costs ``dora_yearly_eur_per_finance_contract / 12``.

Serving: the month's base scenario carries the certifications each site holds then
(:meth:`ComplianceCosts.base_for`).  With ``tenant_residency = "buyer"`` a tenant whose
buyer country was drawn is served only at sites holding its buyer's certifications
(:attr:`sim.market.market.CustomerContract.required_certifications`, possibly none): its
residency's ``required_certifications`` are the buyer's, its allowed jurisdictions the
vertical's plus the buyer's own country (a German healthcare buyer needing BSI C5 is served
at a German C5 site, not at the French HDS one).  With ``"vertical"`` (the default) every
tenant keeps its vertical's residency (sim/demand/verticals.py): the gate and the costs only.

Columns: ``certification_cost_eur``, ``ai_act_cost_eur``, ``dora_cost_eur`` and
``compliance_cost_eur`` (their sum) come from the ledger's cells through
:func:`sim.economics.ledger.month_lines_eur` (they are part of ``cost_eur``, so revenue -
cost - credits = margin still holds to the cent); :meth:`ComplianceCosts.columns` adds
``certifications_held`` ((site, certification) pairs held at mid-month) and
``gated_awards`` (RFP awards the gate removed the sovereign offer from).
"""
from __future__ import annotations

from sim.core.errors import UserError
from sim.economics.ledger import peur
from sim.market.market import MONTH_S
from sim.scenario import with_overrides

SITE = "compliance"     # ledger site of the provider-wide compliance costs (AI Act, DORA)
FINANCE = "finance"


class ComplianceCosts:
    def __init__(self, scenario, market):
        self.market = market
        self.spec = spec = market.spec.compliance
        self.cat = cat = spec.catalogue()
        self.sites = list(scenario.sites)
        self.index = {s.name: i for i, s in enumerate(self.sites)}
        for s in self.sites:
            bad = [c for c in list(s.certifications) + [p.name for p in s.planned_certifications] if c not in cat]
            if bad:
                raise UserError(f"sites[{s.name}]: certifications {bad} are not in market.compliance.certifications; "
                                f"allowed: {sorted(cat)}")
            twice = [p.name for p in s.planned_certifications if p.name in s.certifications]
            names = [p.name for p in s.planned_certifications]
            if twice or len(set(names)) != len(names):
                raise UserError(f"sites[{s.name}].planned_certifications: {twice or names} already held or planned twice; "
                                "allowed: each certification once, held or planned")
        self.held = market.compliance.sites       # sim.market.compliance.SiteCertifications
        self.served_models: set[str] = set()
        self.rows: list[dict] = []

    def base_for(self, base, t_s: float):
        """``base`` with each site's certifications as held at ``t_s`` (planned ones once obtained)."""
        over = {}
        for s in base.sites:
            now = sorted(self.held.held(s.name, t_s))
            if now != sorted(s.certifications):
                over[f"sites.{self.index[s.name]}.certifications"] = now
        return with_overrides(base, over) if over else base

    def tenant(self, contract, workload: dict) -> dict:
        """The tenant's workload, served only at sites holding its buyer's certifications."""
        country = getattr(contract, "buyer_country", None)
        if self.spec.tenant_residency != "buyer" or country is None:
            return workload
        need = list(getattr(contract, "required_certifications", ()) or ())   # the buyer rules are the certification rule
        res = workload.get("residency") or {}
        allowed = res.get("allowed_jurisdictions")
        if allowed is not None and len(country) == 2:
            allowed = sorted(set(allowed) | {country})   # a German buyer may be served in Germany
        workload = dict(workload)
        workload["residency"] = {"allowed_jurisdictions": allowed, "required_certifications": need}
        return workload

    def book(self, m: int, base, contracts, ledger) -> None:
        """Post month ``m``'s certification, AI Act and DORA costs."""
        spec = self.spec
        for s in self.sites:
            for name in sorted(s.certifications):
                ledger.post(m, "certification", s.name, "", f"cert:{s.name}:{name}", peur(self.cat[name].yearly_eur / 12.0))
            for p in s.planned_certifications:
                c = self.cat[p.name]
                lead = c.months_to_obtain
                who = f"cert:{s.name}:{p.name}"
                if lead == 0 and m == p.start_month:
                    ledger.post(m, "certification", s.name, "", who, peur(c.one_off_eur))
                elif p.start_month <= m < p.start_month + lead:
                    ledger.post(m, "certification", s.name, "", who, peur(c.one_off_eur / lead))
                if m >= p.start_month + lead:
                    ledger.post(m, "certification", s.name, "", who, peur(c.yearly_eur / 12.0))
        models = sorted({d.model for d in base.deployments if d.replicas > 0})
        for model in models:
            who = f"ai_act:{model}"
            if model not in self.served_models:
                self.served_models.add(model)
                ledger.post(m, "ai_act", SITE, "", who, peur(spec.ai_act_one_off_eur_per_model))
            ledger.post(m, "ai_act", SITE, "", who, peur(spec.ai_act_yearly_eur_per_model / 12.0))
        finance = sorted(c.id for c in contracts if c.vertical == FINANCE)
        for cid in finance:
            ledger.post(m, "dora", SITE, FINANCE, f"dora:{cid}", peur(spec.dora_yearly_eur_per_finance_contract / 12.0))
        t_mid = (m + 0.5) * MONTH_S
        t0 = self.market.t0_s + m * MONTH_S
        self.rows.append({"certifications_held": self.held.count(t_mid),
                          "gated_awards": self.market.compliance.gated_in(t0, t0 + MONTH_S),
                          "finance_contracts": len(finance), "models_served": len(models)})

    def columns(self, monthly) -> None:
        """Add ``certifications_held`` and ``gated_awards`` to ``monthly``."""
        for k in ("certifications_held", "gated_awards"):
            monthly[k] = [r[k] for r in self.rows]

    def summary(self, monthly) -> dict:
        return {k: float(monthly[k].sum()) for k in ("certification_cost_eur", "ai_act_cost_eur", "dora_cost_eur",
                                                    "compliance_cost_eur")} | {
            "gated_awards": int(monthly["gated_awards"].sum()),
            "certifications_held_end": int(monthly["certifications_held"].iloc[-1]) if len(monthly) else 0}
