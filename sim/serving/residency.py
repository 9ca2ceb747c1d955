"""Residency: which sites may process a tenant's data (the sovereignty invariant)."""
from __future__ import annotations

from sim.scenario import ResidencySpec, Scenario, SiteSpec


def site_allows(site: SiteSpec | None, rule: ResidencySpec) -> bool:
    """Whether a site may process data under a residency rule (the sovereignty invariant)."""
    if rule.allowed_jurisdictions is not None:
        if site is None or site.jurisdiction not in rule.allowed_jurisdictions:
            return False
    if rule.required_certifications:
        have = set(site.certifications) if site is not None else set()
        if not set(rule.required_certifications) <= have:
            return False
    return True


def serving_sites(scenario: Scenario, model: str, rule: ResidencySpec) -> set[str]:
    """Names of the sites (``"-"`` for unsited deployments) with a deployment of ``model``
    that ``rule`` allows."""
    sites = {s.name: s for s in scenario.sites}
    return {dep.site or "-" for dep in scenario.deployments
            if dep.model == model and site_allows(sites.get(dep.site) if dep.site else None, rule)}
