"""Sales channels: direct, or through a hyperscaler marketplace (AWS, Azure, GCP).

Parameters per marketplace in ``models/market/parameters_channels.csv`` (schema
``sim.scenario.channels``, scenario block ``[market.channels]``):

* **reach** -- at each RFP award (not the t = 0 book, which is direct), the buyer is bound to
  marketplace *p* with probability ``reach_p`` (bound to none with 1 - sum of reaches): a
  bound buyer buys only through its platform.  If the provider is ``listed`` there, its offer
  stays in the buyer's logit choice at the same list price and a win is a marketplace
  contract (``channel = p``); if not, the sovereign offer is left out of that award's choice
  (the competitors' offers are unchanged).
* **fee** -- the platform keeps ``fee_share`` of a marketplace tenant's revenue (ledger line
  ``marketplace_fee``, posted by the forecast, :mod:`sim.forecast.channels`).
* **hosted** -- the tenant's traffic is served on the platform's GPUs: it needs no sovereign
  capacity, costs ``hosting_eur_per_mtok`` per million tokens (line ``marketplace_hosting``),
  delivers ``hosted_attainment`` and counts as *non-sovereign* in the market's ``share``.
* **lock-in** -- each month a marketplace tenant of contract age *a* years moves to a direct
  contract with probability ``1 - (1 - q(a))^(1/12)``, ``q(a) = migrate_prob_per_year x
  2^(-a / lockin_halflife_years)``: the deeper the integration, the rarer the move.  The
  contract (term, price, renewals) is unchanged; from then on it is direct (a hosted tenant
  then needs sovereign capacity).

Randomness: named streams ``market/channel_bind/<vertical>`` (one draw per award, only when
some reach > 0) and ``market/channel_migrate/<vertical>``, so with every reach at 0 (the
default) not one draw of the market changes.
"""
from __future__ import annotations

import math

from sim.scenario.channels import ChannelsSpec, MarketplaceSpec

DIRECT = "direct"


def migration_probability_per_month(mk: MarketplaceSpec, age_years: float) -> float:
    """The month's probability that a tenant of ``mk`` with contract age ``age_years`` moves
    to direct (the yearly q(age) as a constant monthly hazard)."""
    q = mk.migrate_prob_per_year * 2.0 ** (-max(age_years, 0.0) / mk.lockin_halflife_years)
    return 1.0 - (1.0 - min(q, 1.0)) ** (1.0 / 12.0) if q < 1.0 else 1.0


class Channels:
    """The channel mechanisms of a :class:`sim.market.market.Market`: it calls :meth:`bind`
    before an award's choice and :meth:`on_award` after a sovereign win."""

    def __init__(self, market, spec: ChannelsSpec, streams, month_s: float):
        self.market = market
        self.spec = spec
        self.month_s = float(month_s)
        self.by_name = {mk.name: mk for mk in spec.marketplaces}
        self.active = any(mk.reach > 0 for mk in spec.marketplaces)
        self._bind = {v: streams.generator(f"market/channel_bind/{v}") for v in market.verticals}
        self._migrate = {v: streams.generator(f"market/channel_migrate/{v}") for v in market.verticals}
        self.migrations: list[tuple[str, float, str]] = []   # (contract id, t_s, from marketplace)
        self.signed: list[tuple[str, float, str]] = []       # (contract id, t_s, marketplace)

    # ------------------------------------------------------------------ queries
    def marketplace(self, c) -> MarketplaceSpec | None:
        return self.by_name.get(getattr(c, "channel", DIRECT))

    def hosted(self, c) -> bool:
        """Is the contract's traffic served on a hyperscaler's GPUs now?"""
        mk = self.marketplace(c)
        return mk is not None and mk.hosted

    def migrations_in(self, t0_s: float, t1_s: float) -> int:
        return sum(1 for _, t, _ in self.migrations if t0_s <= t < t1_s)

    # ------------------------------------------------------------------ hooks
    def bind(self, vertical: str) -> MarketplaceSpec | None:
        """The marketplace the buyer of an award is bound to (None: free to buy direct)."""
        if not self.active:
            return None
        u = float(self._bind[vertical].random())
        acc = 0.0
        for mk in self.spec.marketplaces:
            acc += mk.reach
            if u < acc:
                return mk
        return None

    def on_award(self, c, binding: MarketplaceSpec | None) -> None:
        """A sovereign win by a buyer bound to a listed marketplace is a marketplace contract."""
        if binding is None or not binding.listed:
            return
        c.channel = binding.name
        self.signed.append((c.id, float(self.market.env.now), binding.name))
        if binding.migrate_prob_per_year > 0:
            self.market.env.process(self._lock_in(c, binding))

    def _lock_in(self, c, mk: MarketplaceSpec):
        env = self.market.env
        rng = self._migrate[c.vertical]
        while True:
            yield env.timeout(self.month_s)
            if c.status != "active":         # churned, expired or cancelled: no longer a tenant
                return
            age_years = (env.now - c.start_s) / (12.0 * self.month_s)
            if float(rng.random()) < migration_probability_per_month(mk, age_years):
                c.channel = DIRECT
                self.migrations.append((c.id, float(env.now), mk.name))
                return
