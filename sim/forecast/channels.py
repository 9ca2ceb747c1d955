"""Marketplace channels in the forecast: hosted traffic, the platforms' fees, money by channel.

Each month (sim/market/channels.py decides who is a marketplace tenant):

* **hosted** tenants (a marketplace with ``hosted = true``) are not simulated on the fleet:
  their contracted volume for the month (rate x month x the tenant workload's mean prompt and
  output tokens, like public capacity) is billed at the contract price at ledger site
  ``marketplace-<name>``, with an SLA count at ``hosted_attainment`` (fed back to the market
  as the tenant's delivered SLA), and the platform's hosting fee
  (``hosting_eur_per_mtok`` x tokens) is posted on cost line ``marketplace_hosting``;
* every marketplace tenant (hosted or on the fleet) pays the platform ``fee_share`` of its
  month's revenue (cost line ``marketplace_fee``,
  :meth:`sim.economics.ledger.Ledger.charge_revenue_share`).

After the ledger closes, :meth:`MarketplaceBilling.columns` splits each month by channel
from the ledger's per-tenant cents: ``direct_revenue_eur + marketplace_revenue_eur =
revenue_eur``; ``marketplace_margin_eur`` = marketplace revenue - its SLA credits - fees -
hosting - its token share of the fleet's cost (capacity and power, allocated by tokens
served on the fleet, floor to the cent); ``direct_margin_eur`` the rest, so the two margins
sum to ``gross_margin_eur`` to the cent.
"""
from __future__ import annotations

from collections import defaultdict

from sim.economics.ledger import REVENUE_LINES, Ledger
from sim.market.market import MONTH_S
from sim.scenario import WorkloadSpec
from sim.forecast.windows import tenant_workload

SITE_PREFIX = "marketplace-"
SLA_COUNT_BASE = 10 ** 6   # run setting: whole-count SLA base, so the credit tier is decided exactly

COLUMNS = ("direct_revenue_eur", "marketplace_revenue_eur", "direct_margin_eur", "marketplace_margin_eur",
           "marketplace_contracts_active", "marketplace_share", "channel_migrations")


def site_of(marketplace: str) -> str:
    return SITE_PREFIX + marketplace


class MarketplaceBilling:
    """The marketplace tenants of a forecast, month by month."""

    def __init__(self, market, forecast_spec):
        self.market = market
        self.channels = market.channels
        self.forecast_spec = forecast_spec
        self._means: dict[str, tuple[float, float]] = {}
        self.names: dict[int, set[str]] = defaultdict(set)        # month -> marketplace tenants (ledger names)
        self.hosted_names: dict[int, set[str]] = defaultdict(set)

    def _tokens_mean(self, c) -> tuple[float, float]:
        if c.vertical not in self._means:
            w = WorkloadSpec.model_validate(tenant_workload(c, self.forecast_spec))
            self._means[c.vertical] = (w.prompt_tokens.build().mean, w.output_tokens.build().mean)
        return self._means[c.vertical]

    def place_hosted(self, m: int, contracts: list, ledger: Ledger, tenants, delivered) -> tuple[set[str], float]:
        """Bill month ``m``'s hosted marketplace tenants (their tokens, the hosting fee);
        returns their contract ids (the fleet does not serve them) and their tokens."""
        t_mid = (m + 0.5) * MONTH_S
        ids, tokens = set(), 0.0
        for c in sorted((c for c in contracts if self.channels.hosted(c)), key=lambda c: c.id):
            mk = self.channels.marketplace(c)
            p_mean, o_mean = self._tokens_mean(c)
            requests = c.rate_per_s * MONTH_S
            name, site = f"c{c.id}", site_of(mk.name)
            ledger.set_price(name, tenants.price(c))
            prompt, output = round(requests * p_mean), round(requests * o_mean)
            ledger.record_usage(t_mid, name, c.vertical, site, prompt, output,
                                SLA_COUNT_BASE, round(SLA_COUNT_BASE * mk.hosted_attainment))
            ledger.post(m, "marketplace_hosting", site, c.vertical, name,
                        int(round((prompt + output) * mk.hosting_eur_per_mtok * 1e6)))   # pEUR: EUR/Mtok x 1e6 per token
            delivered.add(c.id, requests, requests * mk.hosted_attainment)
            ids.add(c.id)
            self.hosted_names[m].add(name)
            tokens += prompt + output
        return ids, tokens

    def charge_fees(self, m: int, contracts: list, ledger: Ledger) -> None:
        """Each marketplace tenant of month ``m`` pays its platform's share of its revenue
        (after all of the month's tokens are billed)."""
        for c in contracts:
            mk = self.channels.marketplace(c)
            if mk is None:
                continue
            name = f"c{c.id}"
            self.names[m].add(name)
            if mk.fee_share > 0:
                ledger.charge_revenue_share(m, name, "marketplace_fee", mk.fee_share)

    def columns(self, monthly, ledger: Ledger) -> None:
        """Add the channel columns to ``monthly`` (after the ledger closed)."""
        months = len(monthly)
        acc = {m: defaultdict(int) for m in range(months)}   # month -> {(channel, line): cents}
        for (m, who, line), cents in ledger.who_cells.items():
            if 0 <= m < months and (line in REVENUE_LINES or line == "sla_credits"):
                ch = "mk" if who in self.names.get(m, ()) else "direct"
                acc[m][(ch, "revenue" if line in REVENUE_LINES else "credits")] += cents
        fleet_tok, mk_tok = defaultdict(int), defaultdict(int)
        for (m, site, _v), (p, o) in ledger.tokens.items():
            if not site.startswith(SITE_PREFIX):
                fleet_tok[m] += p + o
        for (m, name), t in ledger.workload_tokens.items():
            if name in self.names.get(m, ()) and name not in self.hosted_names.get(m, ()):
                mk_tok[m] += t
        cols = {k: [] for k in COLUMNS}
        t0 = self.market.t0_s
        for m in range(months):
            r = monthly.iloc[m]
            cents = {k: int(round(float(r[k]) * 100)) for k in
                     ("revenue_eur", "cost_eur", "sla_credits_eur", "gross_margin_eur",
                      "marketplace_fee_eur", "marketplace_hosting_cost_eur")}
            a = acc[m]
            fleet_cost = cents["cost_eur"] - cents["marketplace_fee_eur"] - cents["marketplace_hosting_cost_eur"]
            mk_fleet = fleet_cost * mk_tok[m] // fleet_tok[m] if fleet_tok[m] > 0 else 0
            mk_margin = (a[("mk", "revenue")] - a[("mk", "credits")] - cents["marketplace_fee_eur"]
                         - cents["marketplace_hosting_cost_eur"] - mk_fleet)
            direct_margin = a[("direct", "revenue")] - a[("direct", "credits")] - (fleet_cost - mk_fleet)
            cols["direct_revenue_eur"].append(a[("direct", "revenue")] / 100)
            cols["marketplace_revenue_eur"].append(a[("mk", "revenue")] / 100)
            cols["direct_margin_eur"].append(direct_margin / 100)
            cols["marketplace_margin_eur"].append(mk_margin / 100)
            cols["marketplace_contracts_active"].append(len(self.names.get(m, ())))
            cols["marketplace_share"].append(a[("mk", "revenue")] / cents["revenue_eur"] if cents["revenue_eur"] > 0 else 0.0)
            cols["channel_migrations"].append(self.channels.migrations_in(t0 + m * MONTH_S, t0 + (m + 1) * MONTH_S))
        for k in COLUMNS:
            monthly[k] = cols[k]
