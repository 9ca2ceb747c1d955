"""Per-site and per-deployment load and cost of a forecast, and the owned vs leased split.

Each month, after its windows ran on the month's fleet, :class:`SiteMonths` keeps per site
the GPUs in force at mid-month (a capacity policy's managers, else the scenario's deployed
GPUs; they sum to the fleet's ``gpus_in_force``) and the site's request utilisation
(requests completed after the warm-up over what its replicas could complete at full batch,
summed over the month's windows: the fleet's ``request_utilisation`` restricted to the
site), and per deployment the same.

Money is read from the forecast's one ledger (:class:`sim.economics.ledger.Ledger`), never
recomputed: its cells are integer cents keyed ``(month, site, vertical, line)``, so

* ``site_<site>_cost_eur`` = the site's cost lines (rental, partner, depreciation,
  colocation, power) that month; the sites sum to the fleet's ``cost_eur`` to the cent;
* ``owned_cost_eur`` = depreciation + colocation + power (power is metered only on owned
  GPUs, :attr:`sim.economics.contracts.Terms.metered_power`), ``leased_cost_eur`` = rental +
  partner (public AI capacity, if used, is rental); owned + leased = ``cost_eur`` to the cent.

A deployment's cost (``monthly_deployments.csv``) is its site's month of cost allocated
over the site's deployments in proportion to their GPUs in force (largest remainder in
cents, so the deployments of a site sum to its cost exactly; assumption: a site's fixed
charges and power are shared by GPU, the ledger books costs per site, not per deployment).
"""
from __future__ import annotations

import re
from collections import defaultdict

import pandas as pd

from sim.economics.ledger import FIXED_LINES

OWNED_LINES = ("depreciation", "colocation", "power")
LEASED_LINES = ("rental", "partner")
COST_LINES = FIXED_LINES + ("power",)      # the fleet's cost_eur (SLA credits are not a cost here)
UNSITED = "unsited"

assert set(OWNED_LINES) | set(LEASED_LINES) == set(COST_LINES)


def column_site(site: str) -> str:
    """The site name as it appears in a column name (``site_<this>_gpus``)."""
    if site in ("-", ""):
        return UNSITED
    return re.sub(r"[^0-9A-Za-z]+", "_", site).strip("_").lower() or UNSITED


def _ratio(st: dict | None, gpus: int, fleet_ru) -> float | None:
    if st is not None and st["capacity_requests"] > 0:
        return st["completed"] / st["capacity_requests"]
    # GPUs in force that no window's traffic reached: idle, when the fleet served anything
    return 0.0 if gpus > 0 and fleet_ru is not None else None


def _split_cents(total: int, weights: list[int]) -> list[int]:
    """``total`` cents over ``weights`` (largest remainder; all to the first when no weight)."""
    if not weights:
        return []
    w = sum(weights)
    if w == 0:
        return [total] + [0] * (len(weights) - 1)
    shares = [total * x // w for x in weights]
    order = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % w), i))
    for i in order[:total - sum(shares)]:
        shares[i] += 1
    return shares


class SiteMonths:
    """Collects the per-site and per-deployment columns of a forecast month by month
    (:meth:`record`), then reads their money from the closed ledger (:meth:`finish`)."""

    def __init__(self, scenario):
        self.scenario = scenario
        self.sites = sorted({d.site or "-" for d in scenario.deployments})
        self.rows: list[dict] = []          # per month: site -> (gpus, ru)
        self.dep_rows: list[dict] = []      # per month x deployment

    def record(self, m: int, base, fleet, per: dict, t_mid: float) -> None:
        """The month's GPUs in force and request utilisation per site and deployment."""
        managers = getattr(fleet, "managers", None)
        dep_gpus = defaultdict(int)
        for d in base.deployments:
            dep_gpus[d.site or "-"] += d.gpus
        gpus = {s: (managers[s].gpus_in_force(t_mid) if managers and s in managers else dep_gpus.get(s, 0))
                for s in self.sites}
        fleet_ru = per.get("request_utilisation")
        self.rows.append({s: (gpus[s], _ratio(per["sites"].get(s), gpus[s], fleet_ru)) for s in self.sites})
        stats = per.get("deployments", {})
        for d in base.deployments:
            site = d.site or "-"
            self.dep_rows.append({"month": m, "site": site, "deployment": d.name, "model": d.model, "gpu": d.gpu,
                                  "gpus": d.gpus,
                                  "request_utilisation": _ratio(stats.get((site, d.name)), d.gpus, fleet_ru)})

    def _cents(self, ledger, months: int):
        """Per month: cost cents per site and per line group, from the ledger's cells."""
        site_c = [defaultdict(int) for _ in range(months)]
        owned = [0] * months
        leased = [0] * months
        for (m, site, _vertical, line), c in ledger.cells.items():
            if line not in COST_LINES or not 0 <= m < months:
                continue
            site_c[m][site] += c
            if line in OWNED_LINES:
                owned[m] += c
            else:
                leased[m] += c
        return site_c, owned, leased

    def _site_lines(self, ledger, months: int) -> dict[str, list[int]]:
        """Per site over the horizon: [owned cents, leased cents]."""
        out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for (m, site, _vertical, line), c in ledger.cells.items():
            if line in COST_LINES and 0 <= m < months:
                out[site][0 if line in OWNED_LINES else 1] += c
        return out

    def finish(self, monthly: pd.DataFrame, ledger) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
        """``monthly`` with the site and owned/leased columns, the per-deployment table and the
        per-site summary (``summary["sites"]``).  ``ledger`` must be closed."""
        months = len(monthly)
        site_c, owned, leased = self._cents(ledger, months)
        billed = sorted({s for mc in site_c for s in mc} - set(self.sites))   # e.g. public AI capacity
        cols: dict[str, list] = {}
        for s in self.sites + billed:
            key = column_site(s)
            cols[f"site_{key}_gpus"] = [r[s][0] if s in r else 0 for r in self.rows]
            cols[f"site_{key}_request_utilisation"] = [r[s][1] if s in r else None for r in self.rows]
            cols[f"site_{key}_cost_eur"] = [site_c[m].get(s, 0) / 100 for m in range(months)]
        cols["owned_cost_eur"] = [c / 100 for c in owned]
        cols["leased_cost_eur"] = [c / 100 for c in leased]
        monthly = pd.concat([monthly, pd.DataFrame(cols, index=monthly.index)], axis=1)
        deployments = self._deployment_table(site_c)
        lines = self._site_lines(ledger, months)
        summary = {}
        for s in self.sites + billed:
            key = column_site(s)
            g = cols[f"site_{key}_gpus"]
            ru = [v for v in cols[f"site_{key}_request_utilisation"] if v is not None]
            summary[s] = {"gpus_start": int(g[0]) if g else 0, "gpus_end": int(g[-1]) if g else 0,
                          "request_utilisation_mean": sum(ru) / len(ru) if ru else None,
                          "cost_eur": sum(site_c[m].get(s, 0) for m in range(months)) / 100,
                          "owned_cost_eur": lines[s][0] / 100, "leased_cost_eur": lines[s][1] / 100}
        return monthly, deployments, summary

    def _deployment_table(self, site_c) -> pd.DataFrame:
        rows = [dict(r) for r in self.dep_rows]
        by_site_month: dict[tuple[int, str], list[dict]] = defaultdict(list)
        for r in rows:
            by_site_month[(r["month"], r["site"])].append(r)
        for (m, site), rs in by_site_month.items():
            total = site_c[m].get(site, 0) if m < len(site_c) else 0
            for r, c in zip(rs, _split_cents(total, [r["gpus"] for r in rs])):
                r["cost_eur"] = c / 100
        cols = ["month", "site", "deployment", "model", "gpu", "gpus", "request_utilisation", "cost_eur"]
        return pd.DataFrame(rows, columns=cols)
