"""The customer market: RFPs, discrete choice against competitors, contracts.

SimPy processes on a monthly scale, sharing the serving world's clock (seconds):

* per vertical, requests for proposals (RFPs) arrive as a Poisson process whose rate grows
  by ``rfp_growth_per_year``; each carries a contract size (mean requests/s, lognormal);
* each RFP is awarded after a vertical-specific procurement delay (uniform between min and
  max months) by a multinomial logit over the offers available at award time: the sovereign
  provider, the competitors (US hyperscalers, other EU providers) not in a capacity shortage;
  utility = asc - beta_price ln(blended EUR/Mtok) + beta_sla_per_pp * 100 * attainment
  + beta_sovereignty * fit(vertical, month);
* a contract runs for ``term_months``; at expiry it churns with probability
  ``churn_base_prob + churn_per_pp_shortfall * max(0, 100 (target - attainment))`` (clipped),
  where attainment is what the tenant experienced in the simulation (``attainment_of``,
  supplied by the caller), expires with probability ``need_end_prob`` (the need ended),
  and otherwise renews for another term at the provider's current list price; a churned
  tenant re-tenders (new RFP, procurement delay, the provider it left excluded);
* competitors move: the sovereignty gap closes along a logistic curve per vertical; list
  prices fall by stochastic (Poisson) and scheduled cuts; capacity shortages (stochastic or
  scheduled) keep a competitor from bidding.

Counters (sovereign provider, per vertical and ``total``), with the conservation law
``won == active + expired + churned`` at every instant between events:

* ``won``      contracts that entered the sovereign book: RFPs awarded to it plus the
               ``initial`` book at t = 0 (``initial`` is reported separately; ``awarded_won``
               = won - initial are the RFP wins);
* ``lost``     RFPs awarded to a competitor (``lost_to`` per competitor);
* ``active``   sovereign contracts in force now (a renewal keeps a contract active: it is the
               same contract, ``renewals`` += 1, ``end_s`` extended);
* ``expired``  ended because the tenant's need ended; ``churned``: ended because the tenant
               left (SLA-dependent draw); ``renewed`` counts renewal events (not contracts).

Randomness: named streams ``market/<what>/<vertical or competitor>``; adding a vertical or
a competitor does not shift another vertical's RFP, size, procurement or renewal draws.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import simpy

from sim.core.rng import RandomStreams
from sim.economics.contracts import Tranche, rental_terms
from sim.economics.ledger import Ledger, Price, default_credit_tiers, month_lines_eur
from sim.market.backlog import Backlog
from sim.market.channels import DIRECT, Channels
from sim.market.compliance import Compliance
from sim.market.competition import Competition
from sim.market.pricing import vertical_price
from sim.market.public_sector import PublicSector
from sim.market.sizing import ContractSize, size_of
from sim.scenario.market import MarketSpec, VerticalMarketSpec, default_market_spec, fallback_parameters

MONTH_S = 30.4375 * 86400.0   # a mean Gregorian month: 2,629,800 s
YEAR_S = 12.0 * MONTH_S
SOVEREIGN = "sovereign"
MARKET_ONLY_SITE = "market-only"   # the one site of the market-only mode's fluid fleet
SLA_COUNT_BASE = 10 ** 6           # run setting: requests a constant attainment is counted over

COUNTER_KEYS = ("rfps", "retenders", "won", "initial", "lost", "active", "expired", "churned", "renewed", "cancelled")


@dataclass
class SLATargets:
    ttft_s: float
    tpot_s: float
    attainment_target: float


@dataclass
class CustomerContract:
    """A customer (tenant) contract; not a capacity lease (see sim.economics.contracts)."""
    id: str
    vertical: str
    provider: str                 # "sovereign" or a competitor name
    start_s: float
    end_s: float                  # current end of term (extended on renewal; final once ended)
    rate_per_s: float             # mean requests/s at steady state
    price_eur_per_mtok_in: float  # price of the current term
    price_eur_per_mtok_out: float
    sla: SLATargets
    prompt_tokens_mean: float
    output_tokens_mean: float
    rfp_s: float                  # when the RFP was issued (may be < 0: pipeline before t = 0)
    term_s: float
    initial: bool = False         # part of the book at t = 0
    renewals: int = 0
    status: str = "active"        # active | churned | expired
    attainment_at_end: float | None = None
    contracted_tokens_per_s: float = 0.0   # the contracted volume, prompt + output tokens/s (sim.market.sizing)
    channel: str = DIRECT         # "direct" or the marketplace it was sold through (sim.market.channels)
    buyer_country: str | None = None            # drawn at award when compliance is active (sim.market.compliance)
    required_certifications: tuple[str, ...] = ()   # what the buyer's rules need of the serving site

    @property
    def contracted_tokens_per_month(self) -> float:
        """The contracted volume per month, prompt + output tokens."""
        return self.contracted_tokens_per_s * MONTH_S

    def active_at(self, t_s: float) -> bool:
        return self.start_s <= t_s < self.end_s

    @property
    def tokens_per_month(self) -> float:
        """Prompt + output tokens per month at the steady-state rate."""
        return self.rate_per_s * MONTH_S * (self.prompt_tokens_mean + self.output_tokens_mean)

    @property
    def revenue_eur_per_s(self) -> float:
        """Revenue rate at the contract's steady-state rate and current term price."""
        return self.rate_per_s * (self.prompt_tokens_mean * self.price_eur_per_mtok_in
                                  + self.output_tokens_mean * self.price_eur_per_mtok_out) / 1e6


def logit_probabilities(utilities: np.ndarray) -> np.ndarray:
    u = np.asarray(utilities, dtype=float)
    e = np.exp(u - u.max())
    return e / e.sum()


def churn_probability(v: VerticalMarketSpec, attainment: float | None) -> float:
    """Probability that a tenant churns at expiry given the attainment it experienced."""
    p = v.churn_base_prob
    if attainment is not None and not math.isnan(attainment):
        shortfall_pp = max(0.0, 100.0 * (v.sla.attainment_target - attainment))
        p += v.churn_per_pp_shortfall * shortfall_pp
    return min(p, 1.0 - v.need_end_prob)


class Market:
    """The customer market as SimPy processes in ``env`` (clock in seconds; t = env.now at
    construction is month 0).

    ``attainment_of(contract) -> float | None`` returns the latency-SLA attainment the
    tenant of a sovereign contract experienced (None: nothing measured, treated as met).
    ``sites``: the provider's sites (scenario ``[[sites]]``) for the certification gate and the
    supply-chain fit (sim/market/compliance.py); None (market-only mode): no gate.
    """

    def __init__(self, env: simpy.Environment, spec: MarketSpec | None, rng_streams: RandomStreams,
                 attainment_of: Callable[[CustomerContract], float | None] | None = None, sites=None):
        self.env = env
        self.spec = spec = spec if spec is not None else default_market_spec()
        self.attainment_of = attainment_of if attainment_of is not None else (lambda c: None)
        self.t0_s = float(env.now)
        self.verticals = {v.name: v for v in spec.verticals}
        self.competitors = {c.name: c for c in spec.competitors}
        self.providers = [SOVEREIGN] + list(self.competitors)
        s = spec.sovereign
        self.price_in = {SOVEREIGN: s.price_eur_per_mtok_in}
        self.price_out = {SOVEREIGN: s.price_eur_per_mtok_out}
        for c in spec.competitors:
            self.price_in[c.name] = c.price_eur_per_mtok_in
            self.price_out[c.name] = c.price_eur_per_mtok_out
        self.shortage_until_s = {c: -math.inf for c in self.competitors}
        self.sovereign_delivered_sla = s.sla_attainment_prior
        self.contracts: list[CustomerContract] = []
        self._active: set[int] = set()                  # indices into self.contracts
        self.counters = {k: dict.fromkeys(COUNTER_KEYS, 0) for k in [*self.verticals, "total"]}
        self.lost_to = {k: dict.fromkeys(self.competitors, 0) for k in [*self.verticals, "total"]}
        self.events_log: list[dict] = []
        self._rows: list[dict] = []
        self._month_acc = self._new_acc()
        self._next_id = 0
        self.streams = st = rng_streams
        self._rng = {v: {what: st.generator(f"market/{what}/{v}")
                         for what in ("rfp", "size", "procurement", "choice", "renewal", "initial")}
                     for v in self.verticals}
        self._rng_comp = {c: {what: st.generator(f"market/{what}/{c}") for what in ("price_cut", "shortage")}
                          for c in self.competitors}
        self.backlog = Backlog(self.t0_s, MONTH_S)       # signed sovereign revenue still to come
        self.public = PublicSector(self, spec.public_sector, st, MONTH_S)   # sim/market/public_sector.py
        self.channels = Channels(self, spec.channels, st, MONTH_S)          # sim/market/channels.py
        self.compliance = Compliance(self, spec.compliance, sites, st, MONTH_S)   # sim/market/compliance.py
        self.competition = Competition(self, spec.competition, st, MONTH_S)  # sim/market/competition.py
        self.competition.open()
        for v in spec.verticals:
            self._initial_book(v)
            env.process(self._rfp_process(v))
        self.backlog.open()
        for c in spec.competitors:
            if c.price_cut_rate_per_year > 0:
                env.process(self._price_cut_process(c))
            if c.shortage_rate_per_year > 0:
                env.process(self._shortage_process(c))
        if spec.events:
            env.process(self._scheduled_events())
        env.process(self._monthly())

    # ------------------------------------------------------------------ public API
    def month_of(self, t_s: float) -> float:
        return (t_s - self.t0_s) / MONTH_S

    def active_contracts(self, t_s: float | None = None, provider: str | None = None,
                         vertical: str | None = None) -> list[CustomerContract]:
        """Contracts in force at ``t_s`` (default: now), all providers unless ``provider``
        is given. Exact for t_s <= now; for a future t_s, as currently planned (renewals not
        yet decided are not assumed)."""
        t = self.env.now if t_s is None else t_s
        return [c for c in self.contracts
                if c.start_s <= t < c.end_s
                and (provider is None or c.provider == provider)
                and (vertical is None or c.vertical == vertical)]

    def sovereign_contracts(self, t_s: float | None = None) -> list[CustomerContract]:
        return self.active_contracts(t_s, provider=SOVEREIGN)

    @property
    def won(self) -> int:
        return self.counters["total"]["won"]

    @property
    def lost(self) -> int:
        return self.counters["total"]["lost"]

    @property
    def active(self) -> int:
        return self.counters["total"]["active"]

    @property
    def expired(self) -> int:
        return self.counters["total"]["expired"]

    @property
    def churned(self) -> int:
        return self.counters["total"]["churned"]

    @property
    def renewed(self) -> int:
        return self.counters["total"]["renewed"]

    def available(self, provider: str, t_s: float | None = None) -> bool:
        t = self.env.now if t_s is None else t_s
        return provider == SOVEREIGN or self.competition.available(provider, t)   # capacity, shortages

    def sovereignty_fit(self, provider: str, vertical: str, t_s: float | None = None) -> float:
        t = self.env.now if t_s is None else t_s
        if provider == SOVEREIGN:   # less the supply-chain penalty of the award being decided (sim/market/compliance.py)
            return max(0.0, self.spec.sovereign.sovereignty[vertical] - self.compliance.fit_penalty(vertical))
        return self.competitors[provider].sovereignty[vertical].fit(self.month_of(t))

    def sla_of(self, provider: str) -> float:
        if provider == SOVEREIGN:
            return self.sovereign_delivered_sla
        return self.competition.sla(provider)          # drawn monthly (sim/market/competition.py)

    def blended_price(self, provider: str, vertical: str) -> float:
        v = self.verticals[vertical]
        p_in, p_out = vertical_price(v, provider, self.price_in[provider], self.price_out[provider])   # sim.market.pricing
        return ((v.prompt_tokens_mean * p_in + v.output_tokens_mean * p_out)
                / (v.prompt_tokens_mean + v.output_tokens_mean))

    def utilities(self, vertical: str, t_s: float | None = None, exclude: str | None = None,
                  exclude_also: str | None = None) -> dict[str, float]:
        """Deterministic utility of each offer (the logit's systematic part).

        ``t_s`` sets the point on the sovereignty-gap curves; prices, delivered SLA and
        availability are the market's state now (they are not kept as history)."""
        v = self.verticals[vertical]
        out = {}
        for p in self.providers:
            if p == exclude or p == exclude_also or not self.available(p):
                continue
            if self.compliance.gated(p):     # holds no certification the buyer needs
                continue
            asc = self.spec.sovereign.asc if p == SOVEREIGN else self.competitors[p].asc
            out[p] = (asc - v.beta_price * math.log(self.blended_price(p, vertical))
                      + v.beta_sla_per_pp * 100.0 * self.sla_of(p)
                      + v.beta_sovereignty * self.sovereignty_fit(p, vertical, t_s))
        return out

    def choice_probabilities(self, vertical: str, t_s: float | None = None,
                             exclude: str | None = None, exclude_also: str | None = None) -> dict[str, float]:
        u = self.utilities(vertical, t_s, exclude, exclude_also)
        if not u:
            return {}
        p = logit_probabilities(np.fromiter(u.values(), float))
        return dict(zip(u, p.tolist()))

    @property
    def monthly_log(self) -> list[dict]:
        """One row per completed month, plus the current month so far (``partial`` True)
        when the clock has moved past its start."""
        rows = list(self._rows)
        k = len(self._rows)
        start = self.t0_s + k * MONTH_S
        if self.env.now > start:
            rows.append(self._row(k, partial=self.env.now < start + MONTH_S))
        return rows

    def cancel_contract(self, c: CustomerContract, idx: int) -> None:
        """End contract ``c`` (index ``idx``) now, status ``cancelled`` (a public budget shift,
        sim/market/public_sector.py): no renewal, no re-tender; one not yet started never runs."""
        now = self.env.now
        if c.provider == SOVEREIGN:
            self.backlog.cancelled(c, now)
        c.status = "cancelled"
        c.end_s = now
        c.start_s = min(c.start_s, now)
        if c.provider == SOVEREIGN:
            self._active.discard(idx)
            self._bump(c.vertical, "active", -1)
            self._bump(c.vertical, "cancelled")

    def check_conservation(self) -> None:
        """Raise AssertionError if a counter identity is broken (cheap; used by tests)."""
        for k, c in self.counters.items():
            if c["won"] != c["active"] + c["expired"] + c["churned"] + c["cancelled"]:
                raise AssertionError(f"{k}: won {c['won']} != active {c['active']} + expired {c['expired']} + churned {c['churned']} + cancelled {c['cancelled']}")
        for v in self.verticals:
            n = sum(1 for i in self._active if self.contracts[i].vertical == v and self.contracts[i].provider == SOVEREIGN)
            if n != self.counters[v]["active"]:
                raise AssertionError(f"{v}: active counter {self.counters[v]['active']} != {n} active sovereign contracts")

    # ------------------------------------------------------------------ processes
    def _bump(self, vertical: str, key: str, n: int = 1, monthly: bool = True):
        self.counters[vertical][key] += n
        self.counters["total"][key] += n
        if monthly and key in self._month_acc:
            self._month_acc[key][vertical] += n

    def _new_acc(self) -> dict:
        keys = ("rfps", "retenders", "won", "lost", "expired", "churned", "renewed")
        acc = {k: dict.fromkeys(self.verticals, 0) for k in keys}
        acc["lost_to"] = dict.fromkeys(self.competitors, 0)
        return acc

    def _draw_size(self, v: VerticalMarketSpec) -> ContractSize:
        rng = self._rng[v.name]["size"]
        return size_of(v, float(rng.standard_normal()))   # a token volume (sim.market.sizing)

    def _draw_procurement_s(self, v: VerticalMarketSpec) -> float:
        rng = self._rng[v.name]["procurement"]
        return float(rng.uniform(v.procurement_months_min, v.procurement_months_max)) * MONTH_S

    def _rfp_rate(self, v: VerticalMarketSpec, month: float) -> float:
        return v.rfp_rate_per_month * v.rfp_growth_per_year ** (month / 12.0)

    def _initial_book(self, v: VerticalMarketSpec):
        """Contracts in force at t = 0, awarded by the choice model at t = 0 conditions,
        remaining terms uniform over one term."""
        rng = self._rng[v.name]["initial"]
        term_s = v.term_months * MONTH_S
        probs = self.choice_probabilities(v.name, self.t0_s)
        names, p = list(probs), np.fromiter(probs.values(), float)
        cum = np.cumsum(p)
        for _ in range(v.initial_contracts):
            size = size_of(v, float(rng.standard_normal()))
            u = rng.random()
            remaining = rng.random() * term_s
            with self.compliance.award(v.name, self.t0_s, count=False) as gate:   # the buyer's certification gate
                if gate is not None:
                    probs = self.choice_probabilities(v.name, self.t0_s)
                    names, cum = list(probs), np.cumsum(np.fromiter(probs.values(), float))
                if not names:
                    continue
                provider = names[min(int(np.searchsorted(cum, u * cum[-1], side="right")), len(names) - 1)]
                c = self._sign(v, provider, size, rfp_s=self.t0_s, start_s=self.t0_s + remaining - term_s,
                               initial=True)
                self.compliance.tag(c)
            c.end_s = self.t0_s + remaining
            if provider == SOVEREIGN:
                self.backlog.signed(c, self.t0_s, initial=True)

    def _pipeline(self, v: VerticalMarketSpec):
        """RFPs issued before t = 0 whose award falls after it (own stream: the length of
        this history depends on procurement_months_max, and must not shift later draws)."""
        rng = self.streams.generator(f"market/pipeline/{v.name}")
        first = -int(math.ceil(v.procurement_months_max))
        for k in range(first, 0):
            n = int(rng.poisson(self._rfp_rate(v, k + 0.5)))
            for off in np.sort(rng.random(n)).tolist():
                t = self.t0_s + (k + off) * MONTH_S
                size = size_of(v, float(rng.standard_normal()))
                delay = float(rng.uniform(v.procurement_months_min, v.procurement_months_max)) * MONTH_S
                if t + delay >= self.t0_s:   # earlier awards are represented by the initial book
                    self.env.process(self._procure(v, size, rfp_s=t, award_s=t + delay, exclude=None))

    def _rfp_process(self, v: VerticalMarketSpec):
        env = self.env
        rng = self._rng[v.name]["rfp"]
        self._pipeline(v)
        k = 0
        while True:
            lam = self._rfp_rate(v, k + 0.5)
            n = int(rng.poisson(lam))
            offsets = np.sort(rng.random(n))
            for off in offsets.tolist():
                t = self.t0_s + (k + off) * MONTH_S
                size = self._draw_size(v)
                delay = self._draw_procurement_s(v)
                if t > env.now:
                    yield env.timeout(t - env.now)
                self._bump(v.name, "rfps")
                env.process(self._procure(v, size, rfp_s=t, award_s=t + delay, exclude=None))
            k += 1
            t_next = self.t0_s + k * MONTH_S
            if t_next > env.now:
                yield env.timeout(t_next - env.now)

    def _procure(self, v: VerticalMarketSpec, size: ContractSize, rfp_s: float, award_s: float, exclude: str | None):
        env = self.env
        if award_s > env.now:
            yield env.timeout(award_s - env.now)
        binding = self.channels.bind(v.name)          # a buyer bound to a marketplace (sim/market/channels.py)
        unlisted = binding is not None and not binding.listed
        with self.compliance.award(v.name, env.now, offered=exclude != SOVEREIGN and not unlisted):   # sim/market/compliance.py
            probs = self.choice_probabilities(v.name, env.now, exclude, SOVEREIGN if unlisted else None)
            u = self._rng[v.name]["choice"].random()      # one draw per award, whatever the offer set
            if not probs:
                return
            names = list(probs)
            cum = np.cumsum(np.fromiter(probs.values(), float))
            provider = names[min(int(np.searchsorted(cum, u * cum[-1], side="right")), len(names) - 1)]
            c = self._sign(v, provider, size, rfp_s=rfp_s, start_s=env.now, initial=False)
            self.compliance.tag(c)
            self.competition.on_award(probs, provider)    # the bidders' award shares (price response)
        if provider == SOVEREIGN:
            self.channels.on_award(c, binding)

    def _sign(self, v: VerticalMarketSpec, provider: str, size: ContractSize, rfp_s: float, start_s: float,
              initial: bool) -> CustomerContract:
        term_s = v.term_months * MONTH_S
        p_in, p_out = vertical_price(v, provider, self.price_in[provider], self.price_out[provider])
        c = CustomerContract(
            id=f"{v.name}-{self._next_id:05d}", vertical=v.name, provider=provider,
            start_s=start_s, end_s=start_s + term_s, rate_per_s=size.rate_per_s,
            price_eur_per_mtok_in=p_in, price_eur_per_mtok_out=p_out,
            sla=SLATargets(v.sla.ttft_s, v.sla.tpot_s, v.sla.attainment_target),
            prompt_tokens_mean=v.prompt_tokens_mean, output_tokens_mean=v.output_tokens_mean,
            rfp_s=rfp_s, term_s=term_s, initial=initial, contracted_tokens_per_s=size.tokens_per_s)
        self._next_id += 1
        idx = len(self.contracts)
        self.contracts.append(c)
        self.public.on_sign(c, idx, initial)
        if provider == SOVEREIGN and not initial:
            self.backlog.signed(c, self.env.now)
        if provider == SOVEREIGN:
            self._bump(v.name, "won", monthly=not initial)   # the t = 0 book is not a month-0 win
            self._bump(v.name, "active")
            if initial:
                self._bump(v.name, "initial")
            self._active.add(idx)
        elif not initial:
            self._bump(v.name, "lost")
            self.lost_to[v.name][provider] += 1
            self.lost_to["total"][provider] += 1
            self._month_acc["lost_to"][provider] += 1
        self.env.process(self._lifecycle(v, c, idx))
        return c

    def _lifecycle(self, v: VerticalMarketSpec, c: CustomerContract, idx: int):
        env = self.env
        rng = self._rng[v.name]["renewal"]
        while True:
            if c.end_s > env.now:
                yield env.timeout(c.end_s - env.now)
            if c.status != "active":      # ended early (a public contract cancelled)
                return
            if c.provider == SOVEREIGN:
                a = self.attainment_of(c)
            else:
                a = self.competition.delivered(c)    # mean delivered SLA over its contract
            c.attainment_at_end = a
            p_churn = churn_probability(v, a)
            u = rng.random()
            if u < p_churn:
                outcome = "churned"
            elif u < p_churn + v.need_end_prob:
                outcome = "expired"
            else:
                c.renewals += 1
                c.end_s += c.term_s
                c.price_eur_per_mtok_in, c.price_eur_per_mtok_out = vertical_price(
                    v, c.provider, self.price_in[c.provider], self.price_out[c.provider])
                self.public.on_renew(c)
                if c.provider == SOVEREIGN:
                    self._bump(v.name, "renewed")
                    self.backlog.signed(c, env.now)
                continue
            c.status = outcome
            if c.provider == SOVEREIGN:
                self._active.discard(idx)
                self._bump(v.name, "active", -1)
                self._bump(v.name, outcome)
            if outcome == "churned" and self.spec.retender_on_churn:
                self._bump(v.name, "rfps")
                self._bump(v.name, "retenders")
                delay = self._draw_procurement_s(v)
                env.process(self._procure(v, ContractSize(c.rate_per_s, c.contracted_tokens_per_s), rfp_s=env.now, award_s=env.now + delay,
                                          exclude=c.provider))
            return

    # competitor moves
    def _hyperscaler_price_index(self) -> float | None:
        hs = [c for c, spec in self.competitors.items() if spec.kind == "hyperscaler"]
        return min(self.price_in[c] + self.price_out[c] for c in hs) if hs else None

    def _cut_price(self, provider: str, factor: float, cause: str):
        before = self._hyperscaler_price_index()
        self.price_in[provider] *= factor
        self.price_out[provider] *= factor
        self.events_log.append({"t_s": self.env.now, "month": self.month_of(self.env.now), "kind": "price_cut",
                                "provider": provider, "factor": factor, "cause": cause})
        r = self.spec.sovereign.price_response
        if (provider != SOVEREIGN and r > 0 and self.competitors[provider].kind == "hyperscaler"):
            # follow the cheapest hyperscaler (in+out list price), not every cut: when a
            # second hyperscaler only matches the first one's cut, the sovereign does not move
            f = (self._hyperscaler_price_index() / before) ** r
            if f >= 1.0:
                return
            self.price_in[SOVEREIGN] *= f
            self.price_out[SOVEREIGN] *= f
            self.events_log.append({"t_s": self.env.now, "month": self.month_of(self.env.now), "kind": "price_cut",
                                    "provider": SOVEREIGN, "factor": f, "cause": f"response to {provider}"})

    def _shortage(self, provider: str, duration_s: float, cause: str):
        now = self.env.now
        self.shortage_until_s[provider] = max(self.shortage_until_s[provider], now + duration_s)
        self.events_log.append({"t_s": now, "month": self.month_of(now), "kind": "shortage", "provider": provider,
                                "duration_months": duration_s / MONTH_S, "cause": cause})

    def _price_cut_process(self, c):
        rng = self._rng_comp[c.name]["price_cut"]
        while True:
            yield self.env.timeout(float(rng.exponential(YEAR_S / c.price_cut_rate_per_year)))
            self._cut_price(c.name, float(rng.uniform(c.price_cut_factor_min, c.price_cut_factor_max)), "stochastic")

    def _shortage_process(self, c):
        rng = self._rng_comp[c.name]["shortage"]
        while True:
            yield self.env.timeout(float(rng.exponential(YEAR_S / c.shortage_rate_per_year)))
            self._shortage(c.name, float(rng.exponential(c.shortage_mean_months)) * MONTH_S, "stochastic")

    def _scheduled_events(self):
        for e in sorted(self.spec.events, key=lambda e: e.month):
            t = self.t0_s + e.month * MONTH_S
            if t > self.env.now:
                yield self.env.timeout(t - self.env.now)
            if e.kind == "price_cut":
                self._cut_price(e.provider, e.factor, "scheduled")
            else:
                self._shortage(e.provider, e.duration_months * MONTH_S, "scheduled")

    # monthly bookkeeping
    def _update_delivered_sla(self):
        num = den = 0.0
        for i in self._active:
            c = self.contracts[i]
            a = self.attainment_of(c)
            if a is not None and not math.isnan(a):
                num += c.rate_per_s * a
                den += c.rate_per_s
        if den > 0:
            self.sovereign_delivered_sla = num / den

    def _monthly(self):
        k = 0
        while True:
            t_end = self.t0_s + (k + 1) * MONTH_S
            yield self.env.timeout(t_end - self.env.now)
            self._update_delivered_sla()
            self._rows.append(self._row(k, partial=False))
            self._month_acc = self._new_acc()
            self.competition.start_month(k + 1)          # SLA draws, price response
            k += 1

    def _row(self, k: int, partial: bool) -> dict:
        acc = self._month_acc
        now = self.env.now
        row: dict = {"month": k, "t_start_s": self.t0_s + k * MONTH_S, "partial": partial}
        tot = {key: sum(acc[key].values()) for key in ("rfps", "retenders", "won", "lost", "expired", "churned", "renewed")}
        row.update(tot)
        awards = tot["won"] + tot["lost"]
        row["award_share"] = tot["won"] / awards if awards else float("nan")
        rate = dict.fromkeys(self.providers, 0.0)
        rate_v = {v: 0.0 for v in self.verticals}
        total_v = {v: 0.0 for v in self.verticals}
        hosted = 0.0       # sovereign contracts served on a hyperscaler's GPUs: non-sovereign in the share
        for c in self.contracts:
            if c.start_s <= now < c.end_s:
                rate[c.provider] += c.rate_per_s
                total_v[c.vertical] += c.rate_per_s
                if c.provider == SOVEREIGN:
                    if self.channels.hosted(c):
                        hosted += c.rate_per_s
                    else:
                        rate_v[c.vertical] += c.rate_per_s
        market_rate = sum(rate.values())
        row["active"] = self.counters["total"]["active"]
        row["contracted_rate_per_s"] = rate[SOVEREIGN]
        row["market_rate_per_s"] = market_rate
        row["hosted_rate_per_s"] = hosted
        row["share"] = (rate[SOVEREIGN] - hosted) / market_rate if market_rate > 0 else float("nan")
        row["sovereign_sla"] = self.sovereign_delivered_sla
        for v in self.verticals:
            for key in ("rfps", "won", "lost", "churned"):
                row[f"{key}_{v}"] = acc[key][v]
            row[f"active_{v}"] = self.counters[v]["active"]
            row[f"contracted_rate_per_s_{v}"] = rate_v[v]
            row[f"share_{v}"] = rate_v[v] / total_v[v] if total_v[v] > 0 else float("nan")
        for p in self.providers:
            row[f"price_in_{p}"] = self.price_in[p]
            row[f"price_out_{p}"] = self.price_out[p]
        for c in self.competitors:
            row[f"lost_to_{c}"] = acc["lost_to"][c]
            row[f"available_{c}"] = self.available(c, now)
            for v in self.verticals:
                row[f"fit_{c}_{v}"] = self.sovereignty_fit(c, v, now)
        row.update(self.competition.columns(now))
        return row


# ---------------------------------------------------------------------- market-only path
def simulate_market(spec: MarketSpec | None, seed: int, months: int,
                    attainment: float | None = 0.99) -> Market:
    """Run the market layer alone for ``months`` with a constant delivered attainment."""
    env = simpy.Environment()
    m = Market(env, spec, RandomStreams(seed), lambda c: attainment)
    env.run(until=months * MONTH_S)
    return m


def market_only_forecast(spec: MarketSpec | None, seed: int, months: int = 36,
                         sla_attainment: float = 0.99, fallback: dict | None = None):
    """A monthly forecast from the market layer alone: NOT the serving simulation.

    Delivered SLA is the constant ``sla_attainment``; demand is the contracted demand of the
    sovereign contracts; capacity is a fluid fleet of leased GPUs sized to
    ``target_utilisation`` with a lead time and a minimum lease term (block 'fallback' of
    models/market/parameters.csv).  Money takes the one path every forecast takes, the
    ledger (:class:`sim.economics.ledger.Ledger`): each lease is a rental tranche at the
    table's GPU-hour price; each contract-month posts the tokens served (contracted demand x
    the served fraction) at the contract's price and its SLA count (``sla_attainment`` of
    its requests met), so SLA credits follow the single-run tiers
    (:func:`sim.economics.ledger.default_credit_tiers`); revenue - cost - credits = margin to
    the cent.  The columns match ``sim.forecast.forecast.ForecastResult.monthly`` so
    experiments run either way.
    """
    import pandas as pd

    fb = fallback_parameters() if fallback is None else fallback
    thr = float(fb["output_tokens_per_gpu_s"])
    target = float(fb["target_utilisation"])
    lead = int(fb["lease_lead_months"])
    term = int(fb["lease_term_months"])
    min_gpus = int(fb["min_gpus"])
    block = max(1, int(fb["gpus_per_lease"]))
    lease_terms = rental_terms("market_only_lease", "on_demand", price_eur_per_gpu_h=float(fb["gpu_hour_eur"]))
    ledger = Ledger(month_s=MONTH_S)

    def bill_lease(start_month: int, end_month: int, gpus: int):
        ledger.add_tranche(Tranche(MARKET_ONLY_SITE, lease_terms, gpus, max(start_month, 0) * MONTH_S,
                                   end_s=end_month * MONTH_S))

    env = simpy.Environment()
    m = Market(env, spec, RandomStreams(seed), lambda c: sla_attainment)
    leases: list[list[int]] = [[0 - lead, term, max(min_gpus, block)]]   # [start_month, end_month, gpus]
    bill_lease(*leases[0])
    rows = []
    for k in range(months):
        t0, t1 = k * MONTH_S, (k + 1) * MONTH_S
        env.run(until=t1)
        in_force = []        # (contract, seconds in force this month)
        out_tok_s = 0.0
        for c in m.contracts:
            if c.provider != SOVEREIGN:
                continue
            overlap = min(c.end_s, t1) - max(c.start_s, t0)
            if overlap > 0:
                in_force.append((c, overlap))
                out_tok_s += c.rate_per_s * c.output_tokens_mean * overlap / MONTH_S
        # fleet: renew expiring leases that are still needed, order more when short
        required = max(min_gpus, math.ceil(out_tok_s / (thr * target)))
        active_now = sum(g for s, e, g in leases if s <= k < e)
        for lease in leases:
            if lease[1] == k and active_now - lease[2] < required:
                bill_lease(lease[1], lease[1] + term, lease[2])
                lease[1] += term
        active_now = sum(g for s, e, g in leases if s <= k < e)
        on_order = sum(g for s, e, g in leases if s > k)
        if active_now + on_order < required:
            need = required - active_now - on_order
            leases.append([k + lead, k + lead + term, block * math.ceil(need / block)])
            bill_lease(*leases[-1])
        gpus = sum(g for s, e, g in leases if s <= k < e)
        cap = gpus * thr
        util = min(1.0, out_tok_s / cap) if cap > 0 else 0.0
        served = min(1.0, cap / out_tok_s) if out_tok_s > 0 else 1.0
        for c, overlap in in_force:
            name = f"c{c.id}"
            ledger.set_price(name, Price.from_eur_per_mtok(c.price_eur_per_mtok_in, c.price_eur_per_mtok_out,
                                                           default_credit_tiers(c.sla.attainment_target)))
            requests = c.rate_per_s * overlap * served
            # SLA count: only met / measured decides the credit; whole counts keep it exact
            ledger.record_usage(t0 + 0.5 * MONTH_S, name, c.vertical, MARKET_ONLY_SITE,
                                round(requests * c.prompt_tokens_mean), round(requests * c.output_tokens_mean),
                                SLA_COUNT_BASE, round(SLA_COUNT_BASE * sla_attainment))
        ledger.advance(t1)
        row = m.monthly_log[k]
        rows.append({
            "month": k, "contracts_active": row["active"], "contracts_won": row["won"],
            "contracts_lost": row["lost"], "share": row["share"], "award_share": row["award_share"],
            "gpu_utilisation": util, "sla_attainment": sla_attainment, "gpus": gpus,
            "demand_output_tokens_per_s": out_tok_s, "served_fraction": served,
            "churned": row["churned"], "renewed": row["renewed"],
            "price_in_sovereign": row["price_in_sovereign"],
        })
    ledger.close(months * MONTH_S)
    money = month_lines_eur(ledger.report(), months)
    for r, mo in zip(rows, money):
        r.update({k: mo[k] for k in ("revenue_eur", "rental_cost_eur", "cost_eur", "sla_credits_eur", "gross_margin_eur")})
    return pd.DataFrame(rows), m
