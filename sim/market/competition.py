"""Competitors with capacity, a delivered SLA drawn per competitor and a price response.

Parameters per competitor in ``models/market/parameters_competition.csv`` (schema
``sim.scenario.competition``, scenario block ``[market.competition]``):

* **capacity** -- competitor *c* can sell ``capacity_rfp_months x U x
  capacity_growth_per_year^(month / 12)`` contracted tokens/s (prompt + output) to this
  market, ``U`` the market's t = 0 RFP volume (expected contracted tokens/s of one month's
  RFPs, all verticals: sum of ``rfp_rate_per_month x`` the mean contract's tokens/s), so the
  capacity scales with a scenario's market (the provider scenario's contracts are ~1,280x the
  table's); while the contracted tokens/s of its active contracts are at or above it, it is not
  in the choice set of new RFP awards (renewals of its contracts go on).  A capacity shortage
  (stochastic or a scheduled ``shortage`` event, sim/market/market.py) is capacity 0 for its
  duration, so it leaves the choice set whatever ``capacity_limits`` says.
* **delivered SLA** -- at t = 0 and at each month's start, the month's delivered attainment
  is drawn, ``Beta(m k, (1 - m) k)`` with ``m`` the competitor's ``sla_attainment``
  (parameters.csv) and ``k = sla_concentration``, from stream ``market/competitor_sla/<c>``.
  Buyers compare its mean over the trailing ``window_months`` months (drawn so far: the
  competitor's reputation) in the logit, as they compare the sovereign's measured attainment;
  a competitor tenant's churn at expiry reads the mean over the months of its own contract
  (the sovereign tenant's churn reads its whole-life attainment too).
* **price response** -- at each month's start, from the RFP awards of the trailing
  ``window_months`` completed months: ``share = awards won by c / awards c bid for`` (c in the
  award's choice set, so months at capacity do not count as share lost) and the multiplier
  ``clip((share / reference_share)^elasticity, price_floor, 1)`` of its t = 0 price; a cut
  (stochastic or scheduled, ``Market._cut_price``) applies on top.  A competitor that is not
  available (at capacity or in a shortage) holds its multiplier: it lost share for want of
  capacity, not of price.  No award in the window: the multiplier holds.
  ``reference_share = t0`` is the competitor's expected award share at t = 0 conditions
  (logit probabilities at the mean SLA, weighted by each vertical's RFP rate).  The
  response moves the competitor's list price only: the sovereign ``price_response`` follows
  list-price cuts (a price war), not these moves.

With the three switches off the market is the former one (unlimited capacity, constant SLA,
prices moved by cuts only) and draws the same numbers: the SLA stream is its own.
"""
from __future__ import annotations

import math

from sim.market.sizing import mean_tokens_per_s
from sim.scenario.competition import CompetitionSpec

COLUMN_PREFIXES = ("sla_", "used_tokens_per_s_", "capacity_tokens_per_s_", "capacity_used_", "award_share_",
                   "window_share_", "price_factor_", "price_in_", "price_out_", "available_")


def beta_parameters(mean: float, concentration: float) -> tuple[float, float]:
    """(a, b) of the Beta law with this mean and concentration (a + b)."""
    m = min(max(mean, 1e-9), 1.0 - 1e-9)
    return m * concentration, (1.0 - m) * concentration


def response_multiplier(share: float, reference: float, elasticity: float, floor: float) -> float:
    """The price multiplier for a trailing award share: (share / reference)^elasticity in
    [floor, 1]."""
    if share <= 0.0:
        return floor if elasticity > 0 else 1.0
    return min(1.0, max(floor, (share / reference) ** elasticity))


def competition_columns(row: dict) -> dict:
    """The competition columns of a market-log row (what the forecast's monthly table shows)."""
    return {k: v for k, v in row.items() if k.startswith(COLUMN_PREFIXES) and not k.endswith("_sovereign")}


class Competition:
    """The competitors' capacity, SLA and price state of a :class:`sim.market.market.Market`.

    The market asks :meth:`available` and :meth:`sla` in its choice; it calls
    :meth:`start_month` at each month's end (after that month's log row) and :meth:`columns`
    for each log row."""

    def __init__(self, market, spec: CompetitionSpec, streams, month_s: float):
        self.market = market
        self.spec = spec
        self.month_s = float(month_s)
        self.names = list(market.competitors)
        self.of = {c: spec.of(c) for c in self.names}
        self.rfp_volume_tokens_per_s = sum(v.rfp_rate_per_month * mean_tokens_per_s(v)
                                           for v in market.verticals.values())   # U: one month's RFPs at t = 0
        self._rng = {c: streams.generator(f"market/competitor_sla/{c}") for c in self.names}
        self.sla_now = {c: market.competitors[c].sla_attainment for c in self.names}   # this month's draw
        self.sla_history: dict[str, list[float]] = {c: [] for c in self.names}        # one draw per month
        self.factor = dict.fromkeys(self.names, 1.0)       # response multiplier now
        self.window_share = dict.fromkeys(self.names, math.nan)
        self.reference = dict.fromkeys(self.names, math.nan)
        self._month = self._new_month()                    # this month's bids and wins per competitor
        self._months: list[dict] = []                      # completed months

    # ------------------------------------------------------------------ state
    def capacity_tokens_per_s(self, c: str, t_s: float) -> float:
        """Capacity of ``c`` at ``t_s``: 0 in a shortage, unlimited without a limit."""
        if t_s < self.market.shortage_until_s[c]:
            return 0.0
        cc = self.of[c]
        if not self.spec.capacity_limits or cc is None:
            return math.inf
        month = self.market.month_of(t_s)
        return cc.capacity_rfp_months * self.rfp_volume_tokens_per_s * cc.capacity_growth_per_year ** (month / 12.0)

    def used_tokens_per_s(self, c: str, t_s: float) -> float:
        return sum(k.contracted_tokens_per_s for k in self.market.contracts
                   if k.provider == c and k.start_s <= t_s < k.end_s)

    def available(self, c: str, t_s: float) -> bool:
        cap = self.capacity_tokens_per_s(c, t_s)
        if cap == 0.0:
            return False
        return math.isinf(cap) or self.used_tokens_per_s(c, t_s) < cap

    def sla(self, c: str) -> float:
        """The delivered SLA buyers see: the mean draw of the trailing window (the constant
        without draws)."""
        h = self.sla_history[c]
        if not h:
            return self.sla_now[c]
        w = h[-self.spec.window_months:]
        return sum(w) / len(w)

    def delivered(self, contract) -> float:
        """Mean delivered SLA over the months of ``contract`` so far (a competitor's tenant)."""
        h = self.sla_history[contract.provider]
        if not h:
            return self.sla_now[contract.provider]
        first = min(max(0, int(self.market.month_of(contract.start_s))), len(h) - 1)
        w = h[first:]
        return sum(w) / len(w)

    def _new_month(self) -> dict:
        return {"bids": dict.fromkeys(self.names, 0), "wins": dict.fromkeys(self.names, 0), "awards": 0}

    def on_award(self, offers, provider: str) -> None:
        """An RFP award among ``offers`` (the choice set) went to ``provider``."""
        mo = self._month
        mo["awards"] += 1
        for c in offers:
            if c in mo["bids"]:
                mo["bids"][c] += 1
        if provider in mo["wins"]:
            mo["wins"][provider] += 1

    # ------------------------------------------------------------------ monthly moves
    def open(self) -> None:
        """At t = 0, before the initial book: the reference shares (at the mean SLA), then
        month 0's SLA draws."""
        self._set_references()
        self._draw_sla()

    def _set_references(self) -> None:
        m = self.market
        t0 = m.t0_s
        wanted = [c for c in self.names if self.of[c] is not None and self.of[c].reference_share == "t0"]
        if wanted:
            total = sum(v.rfp_rate_per_month for v in m.verticals.values())
            acc = dict.fromkeys(wanted, 0.0)
            for v in m.verticals.values():
                probs = m.choice_probabilities(v.name, t0)
                for c in wanted:
                    acc[c] += v.rfp_rate_per_month / total * probs.get(c, 0.0)
            for c in wanted:
                self.reference[c] = acc[c]
        for c in self.names:
            cc = self.of[c]
            if cc is not None and cc.reference_share != "t0":
                self.reference[c] = float(cc.reference_share)

    def _draw_sla(self) -> None:
        if not self.spec.sla_draws:
            return
        for c in self.names:
            cc = self.of[c]
            if cc is None:
                continue
            a, b = beta_parameters(self.market.competitors[c].sla_attainment, cc.sla_concentration)
            self.sla_now[c] = float(self._rng[c].beta(a, b))
            self.sla_history[c].append(self.sla_now[c])

    def start_month(self, k: int) -> None:
        """At the start of month ``k`` (k >= 1): new SLA draws and the price response read
        from the trailing window's awards."""
        self._draw_sla()
        self._months.append(self._month)
        self._month = self._new_month()
        window = self._months[-self.spec.window_months:]
        now = self.market.env.now
        for c in self.names:
            bids = sum(mo["bids"][c] for mo in window)
            if bids:
                self.window_share[c] = sum(mo["wins"][c] for mo in window) / bids
            cc = self.of[c]
            if not self.spec.price_response or cc is None or not bids or not self.available(c, now):
                continue
            ref = self.reference[c]
            if not ref > 0:
                continue
            f = response_multiplier(self.window_share[c], ref, cc.elasticity, cc.price_floor)
            if f != self.factor[c]:
                ratio = f / self.factor[c]
                self.market.price_in[c] *= ratio
                self.market.price_out[c] *= ratio
                self.factor[c] = f

    # ------------------------------------------------------------------ log
    def columns(self, now: float) -> dict:
        """Columns of a market-log row (the month so far)."""
        out: dict = {}
        mo = self._month
        for c in self.names:
            cap = self.capacity_tokens_per_s(c, now)
            used = self.used_tokens_per_s(c, now)
            out[f"sla_{c}"] = self.sla_now[c]
            out[f"sla_seen_{c}"] = self.sla(c)
            out[f"used_tokens_per_s_{c}"] = used
            out[f"capacity_tokens_per_s_{c}"] = cap if not math.isinf(cap) else math.nan
            out[f"capacity_used_{c}"] = used / cap if 0.0 < cap < math.inf else math.nan   # nan: no limit, or a shortage
            out[f"award_share_{c}"] = mo["wins"][c] / mo["awards"] if mo["awards"] else math.nan
            out[f"window_share_{c}"] = self.window_share[c]
            out[f"price_factor_{c}"] = self.factor[c]
        return out
