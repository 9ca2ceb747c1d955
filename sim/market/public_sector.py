"""Public-sector anchors: large awards, a public price, budget-shift cancellations and slips.

The mechanisms act on the contracts of one vertical (``[market.public_sector] vertical``,
default ``public_sector``), for every provider alike (so shares of contracted demand stay
meaningful), with parameters in ``models/market/parameters_public_sector.csv``:

* **anchors** -- an RFP award (not the t = 0 book) is an anchor with probability
  ``anchor_share``: its size is drawn afresh, lognormal with median
  ``anchor_size_factor x rate_per_s_median`` and log-sd ``anchor_size_sigma``, and its term
  is ``anchor_term_months``;
* **public price** -- a public contract's price (at signature and at each renewal) is the
  provider's list price x ``(1 - price_discount)``; the same factor on every offer leaves
  the logit choice unchanged (``ln`` of a common factor cancels);
* **slips** -- an awarded contract's start slips with probability ``slip_prob`` by an
  exponential delay of mean ``slip_mean_months``; its whole term moves with it (signed at
  award, so it is backlog before it starts);
* **budget-shift cancellations** -- each public contract (the t = 0 book included) draws one
  exponential time with rate ``cancel_rate_per_year`` from its signature; if the contract is
  still in force (or not yet started) then, it ends there: status ``cancelled``, no re-tender.
  One draw covers all renewals (the hazard is constant over the contract's life).

Randomness: named streams ``market/public_{anchor,slip,cancel}/<vertical>``, so turning the
mechanism on shifts none of the market's other draws (the renewal draws of the vertical's
cancelled contracts are not made, which only changes that vertical's later renewals).
"""
from __future__ import annotations

import math

from sim.market.sizing import size_of
from sim.scenario.public_sector import PublicSectorSpec

YEARS_PER_MONTH = 1.0 / 12.0


class PublicSector:
    """The public-sector mechanisms of a :class:`sim.market.market.Market`; the market calls
    :meth:`on_sign` for each new contract and :meth:`on_renew` at each renewal."""

    def __init__(self, market, spec: PublicSectorSpec, streams, month_s: float):
        self.market = market
        self.spec = spec
        self.month_s = float(month_s)
        v = spec.vertical
        self.active = spec.enabled and v in market.verticals
        self._rng = {what: streams.generator(f"market/public_{what}/{v}") for what in ("anchor", "slip", "cancel")}
        self.anchors: list[str] = []        # contract ids of anchor awards (all providers)
        self.slips: list[tuple[str, float]] = []       # (contract id, slip in months)
        self.cancellations: list[tuple[str, float]] = []   # (contract id, t_s)
        self.signed_s: dict[str, float] = {}   # contract id -> signature time (start of its cancellation exposure)

    def applies(self, vertical: str) -> bool:
        return self.active and vertical == self.spec.vertical

    # ------------------------------------------------------------------ hooks
    def on_sign(self, c, idx: int, initial: bool) -> None:
        """Public terms of a newly signed contract ``c`` (index ``idx`` in market.contracts)."""
        if not self.applies(c.vertical):
            return
        s = self.spec
        self.signed_s[c.id] = float(self.market.env.now)
        if not initial:
            u, z = self._rng["anchor"].random(), self._rng["anchor"].standard_normal()
            if u < s.anchor_share:
                v = self.market.verticals[c.vertical]
                # an anchor is anchor_size_factor x the vertical's median contract (in its
                # size basis, sim.market.sizing), lognormal around that
                median = size_of(v, 0.0)
                f = s.anchor_size_factor * math.exp(s.anchor_size_sigma * z)
                c.rate_per_s = float(median.rate_per_s * f)
                c.contracted_tokens_per_s = float(median.tokens_per_s * f)
                c.term_s = s.anchor_term_months * self.month_s
                c.end_s = c.start_s + c.term_s
                self.anchors.append(c.id)
            u, x = self._rng["slip"].random(), self._rng["slip"].exponential(s.slip_mean_months)
            if u < s.slip_prob:
                c.start_s += float(x) * self.month_s
                c.end_s = c.start_s + c.term_s
                self.slips.append((c.id, float(x)))
        self._public_price(c)
        if s.cancel_rate_per_year > 0:
            wait_s = float(self._rng["cancel"].exponential(1.0 / s.cancel_rate_per_year)) * 12.0 * self.month_s
            self.market.env.process(self._cancel_after(c, idx, wait_s))

    def on_renew(self, c) -> None:
        """A renewed public contract pays the public price of the new term."""
        if self.applies(c.vertical):
            self._public_price(c)

    def _public_price(self, c) -> None:
        f = 1.0 - self.spec.price_discount
        c.price_eur_per_mtok_in *= f
        c.price_eur_per_mtok_out *= f

    def _cancel_after(self, c, idx: int, wait_s: float):
        yield self.market.env.timeout(wait_s)
        now = self.market.env.now
        if c.status == "active" and now < c.end_s:
            self.cancellations.append((c.id, now))
            self.market.cancel_contract(c, idx)
