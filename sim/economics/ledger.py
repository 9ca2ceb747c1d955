"""The ledger: revenue, costs and gross margin, conserved to the cent.

Money is kept in integer pico-euros (``1 EUR = 10**12 pEUR``) and *posted* in integer cents.
Every amount goes to an **account** (a cost or revenue line at a site, for one vertical,
workload or contract); each account carries its sub-cent remainder forward and posts whole
cents to the **cell** ``(month, site, vertical, line)`` of the moment it accrues.  At
:meth:`Ledger.close` each account's remainder is rounded once.  Hence

* every account's posted cents equal its exact total rounded to the nearest cent, once;
* every report (per month, site, vertical, line) is a sum of integer cents, so revenue
  minus every cost line equals the margin exactly, at every level of aggregation.

Revenue lines: ``revenue_input``, ``revenue_output`` (tokens x the tenant's price).
Cost lines: ``rental``, ``partner``, ``depreciation``, ``colocation`` (fixed charges of the
tranches in force, accrued continuously), ``power`` (owned GPUs, from the replicas' actual
busy time: busy draw while the batch is non-empty, idle draw otherwise, times PUE and the
site's EUR/kWh), ``marketplace_fee`` (a hyperscaler marketplace's share of a tenant's
revenue, :meth:`Ledger.charge_revenue_share`), ``marketplace_hosting`` (tokens served on a
hyperscaler's GPUs; sim/forecast/channels.py), ``certification``, ``ai_act`` and ``dora``
(compliance costs; sim/forecast/compliance.py) and ``sla_credits`` (paid per workload and
month when its SLA attainment falls under a tier of its pricing entry).

Besides the cells, the ledger keeps each account holder's whole cents per month and line
(:attr:`Ledger.who_cells`) and each workload's tokens per month, so a report by channel
(a set of tenants) is a sum of the same cents.

Costs are booked per site with vertical ``""``; :meth:`Ledger.report` allocates each site's
month of costs to verticals in proportion to the tokens (prompt + output) they had served
there that month (largest remainder, so cents are conserved); a site-month with no tokens
goes to the vertical ``unallocated`` (idle capacity).
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from sim.core.errors import UserError
from sim.economics.contracts import HOUR_S, MONTH_S, Terms, Tranche, d

PEUR_PER_EUR = 10 ** 12
PEUR_PER_CENT = 10 ** 10

REVENUE_LINES = ("revenue_input", "revenue_output")
FIXED_LINES = ("rental", "partner", "depreciation", "colocation")
MARKETPLACE_LINES = ("marketplace_fee", "marketplace_hosting")
COMPLIANCE_LINES = ("certification", "ai_act", "dora")   # sim/forecast/compliance.py
COST_LINES = FIXED_LINES + ("power",) + MARKETPLACE_LINES + COMPLIANCE_LINES + ("sla_credits",)
UNALLOCATED = "unallocated"


def peur(eur: float) -> int:
    """EUR (float) to integer pico-euros, rounded to nearest. A non-finite amount (a price,
    capex or power price the schema would refuse, reached through the Python API) is a
    one-line user error, not an OverflowError."""
    x = eur * PEUR_PER_EUR
    if not math.isfinite(x):
        raise UserError(f"ledger: an amount of {eur!r} EUR is not finite; allowed: finite prices, capex, PUE and power prices")
    return int(round(x))


@dataclass(frozen=True)
class Price:
    """A tenant's price: pico-euros per prompt token and per output token, plus SLA tiers."""

    input_peur_per_token: int
    output_peur_per_token: int
    credit_tiers: tuple[tuple[float, float], ...]  # (below_attainment, credit_share), any order

    @classmethod
    def from_eur_per_mtok(cls, input_eur: float, output_eur: float,
                          credit_tiers: Iterable[tuple[float, float]]) -> "Price":
        # EUR per 1e6 tokens -> pEUR per token = EUR * 1e6; exact for up to 6 decimals.
        if not (math.isfinite(input_eur) and math.isfinite(output_eur)):
            raise UserError(f"price: {input_eur!r} / {output_eur!r} EUR per 1M tokens; allowed: finite prices >= 0")
        return cls(int(round(input_eur * 1e6)), int(round(output_eur * 1e6)), tuple(credit_tiers))

    def credit_share(self, attainment: float) -> float:
        share = 0.0
        for below, s in self.credit_tiers:
            if attainment < below:
                share = max(share, s)
        return share


def default_credit_tiers(attainment_target: float) -> tuple[tuple[float, float], ...]:
    return ((attainment_target, d("sla_credit_share_below_target")),
            (min(attainment_target, 0.95), d("sla_credit_share_below_95")))


@dataclass(frozen=True)
class BusyView:
    """One replica as the ledger's ``fleet`` sees it: a stable ``key``, its site, GPUs and
    cumulative busy seconds."""
    key: int
    site: str | None
    gpus: int
    busy_s: float


class Ledger:
    """Accrues money over simulated time. All times in seconds from the run's start.

    ``fleet``: optional callable returning the replicas (objects with ``site``, ``gpus``,
    ``busy_s`` (cumulative) and ``up``); polled at each :meth:`advance` to meter the power of
    owned GPUs.  Owned GPUs at a site that host no replica draw idle power.
    """

    def __init__(self, month_s: float = MONTH_S, fleet: Callable[[], Iterable[Any]] | None = None,
                 start_s: float = 0.0):
        self.month_s = float(month_s)
        self.fleet = fleet
        self.now_s = float(start_s)
        self.tranches: list[Tranche] = []
        self._open: list[Tranche] = []        # not yet accrued to their end
        self._written_off: set[int] = set()   # tranches whose end has been booked
        self._accrued_to: dict[int, float] = {}
        self.cells: dict[tuple[int, str, str, str], int] = defaultdict(int)   # cents
        self._resid: dict[tuple, int] = defaultdict(int)                      # pEUR < 1 cent
        self.exact_peur: dict[tuple, int] = defaultdict(int)                  # per account
        self.posted_cents: dict[tuple, int] = defaultdict(int)                # per account
        self.who_cells: dict[tuple[int, str, str], int] = defaultdict(int)    # (month, who, line) -> cents
        self.workload_tokens: dict[tuple[int, str], int] = defaultdict(int)   # (month, workload) -> tokens billed
        # tokens served per (month, site, vertical): allocation keys and cost per Mtok
        self.tokens: dict[tuple[int, str, str], list[int]] = defaultdict(lambda: [0, 0])
        # SLA bookkeeping per (month, workload): [n, met], and revenue per (month, workload, site, vertical)
        self.sla_counts: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0, 0])
        self.workload_rev: dict[tuple[int, str], dict[tuple[str, str], int]] = defaultdict(lambda: defaultdict(int))
        self.prices: dict[str, Price] = {}
        self._credited_months: set[int] = set()
        self._busy_seen: dict[int, float] = {}
        self.energy_kwh = 0.0
        self.gpu_s_by_kind: dict[str, float] = defaultdict(float)
        self.closed = False

    # ------------------------------------------------------------------ posting
    def month_of(self, t: float) -> int:
        return int(t // self.month_s)

    def post(self, month: int, line: str, site: str, vertical: str, who: str, amount_peur: int) -> None:
        """Add ``amount_peur`` (>= 0) to the account ``(line, site, vertical, who)``; whole
        cents go to cell ``(month, site, vertical, line)``."""
        if amount_peur < 0:
            raise ValueError(f"negative posting {amount_peur} to {line}")
        if amount_peur == 0:
            return
        acct = (line, site, vertical, who)
        self.exact_peur[acct] += amount_peur
        r = self._resid[acct] + amount_peur
        cents, r = divmod(r, PEUR_PER_CENT)
        self._resid[acct] = r
        if cents:
            self.cells[(month, site, vertical, line)] += cents
            self.posted_cents[acct] += cents
            self.who_cells[(month, who, line)] += cents

    # ------------------------------------------------------------------ capacity
    def add_tranche(self, tranche: Tranche) -> None:
        self.tranches.append(tranche)
        self._open.append(tranche)
        self._accrued_to[tranche.id] = tranche.start_s

    def end_tranche(self, tranche: Tranche, end_s: float) -> None:
        """Set when billing of ``tranche`` stops (>= now). Owned hardware released before the
        end of its life writes off its remaining book value at ``end_s`` (no resale value,
        assumption)."""
        if end_s < self._accrued_to.get(tranche.id, tranche.start_s) - 1e-9:
            raise ValueError(f"tranche {tranche.key}: end {end_s} is before already-accrued time")
        tranche.end_s = end_s
        if end_s <= self._accrued_to.get(tranche.id, tranche.start_s):
            self._accrued_to[tranche.id] = end_s
            self._write_off(tranche)  # advance() will not reach it again

    def _fixed(self, tr: Tranche, a: float, b: float) -> None:
        for line, rate in tr.terms.fixed_eur_per_gpu_s.items():
            lo, hi = a, b
            if line == "depreciation":
                hi = min(hi, tr.start_s + tr.terms.life_s)
            if hi > lo:
                self.post(self.month_of(lo), line, tr.site, "", tr.key, peur(rate * tr.gpus * (hi - lo)))
        self.gpu_s_by_kind[tr.terms.kind] += tr.gpus * (b - a)

    def _write_off(self, tr: Tranche) -> None:
        if tr.id in self._written_off:
            return
        self._written_off.add(tr.id)
        t = tr.terms
        if t.capex_eur_per_gpu <= 0 or tr.end_s is None:
            return
        used = min(max(tr.end_s - tr.start_s, 0.0), t.life_s)
        # book value left = capex - depreciation accrued; computed the way it was accrued
        left = tr.gpus * t.capex_eur_per_gpu - tr.gpus * (t.capex_eur_per_gpu / t.life_s) * used
        if left > 0:
            self.post(self.month_of(tr.end_s - 1e-9 if tr.end_s > 0 else 0.0), "depreciation",
                      tr.site, "", tr.key, peur(left))

    def _month_pieces(self, a: float, b: float):
        while b - a > 1e-12:
            m = self.month_of(a)
            edge = (m + 1) * self.month_s
            hi = min(b, edge)
            yield m, a, hi
            a = hi

    def advance(self, now: float) -> None:
        """Accrue fixed charges, power and month-end SLA credits up to ``now``."""
        if now < self.now_s - 1e-9:
            raise ValueError(f"ledger time goes backwards: {now} < {self.now_s}")
        if now <= self.now_s:
            return
        t0 = self.now_s
        # power: busy GPU-seconds per site since the last poll, spread uniformly over [t0, now]
        busy_by_site = self._poll_busy(now - t0)
        for m, a, b in self._month_pieces(t0, now):
            frac = (b - a) / (now - t0)
            for tr in self._open:
                lo = max(a, tr.start_s, self._accrued_to[tr.id])
                hi = b if tr.end_s is None else min(b, tr.end_s)
                if hi > lo:
                    self._fixed(tr, lo, hi)
                    self._accrued_to[tr.id] = hi
                if tr.end_s is not None and tr.end_s <= b and tr.id not in self._written_off:
                    self._accrued_to[tr.id] = max(self._accrued_to[tr.id], tr.end_s)
                    self._write_off(tr)
            self._power(a, b, {s: v * frac for s, v in busy_by_site.items()})
            self._open = [tr for tr in self._open
                          if tr.end_s is None or self._accrued_to[tr.id] < tr.end_s]
            if b >= (m + 1) * self.month_s - 1e-9:
                self._credit_month(m)
        self.now_s = now

    def _poll_busy(self, dt: float) -> dict[str, float]:
        """Busy GPU-seconds per site since the last poll (replica busy_s deltas x gpus)."""
        out: dict[str, float] = defaultdict(float)
        if self.fleet is None:
            return out
        for r in self.fleet():
            k = getattr(r, "key", None) or id(r)
            prev = self._busy_seen.get(k, 0.0)
            cur = float(r.busy_s)
            self._busy_seen[k] = cur
            out[r.site or "-"] += max(0.0, cur - prev) * r.gpus
        return out

    def _power(self, a: float, b: float, busy_gpu_s_by_site: dict[str, float]) -> None:
        by_site: dict[str, list[Tranche]] = defaultdict(list)
        for tr in self._open:
            if tr.terms.metered_power:
                by_site[tr.site].append(tr)
        for site, trs in by_site.items():
            busy_left = busy_gpu_s_by_site.get(site, 0.0)
            for tr in trs:  # replicas fill owned tranches first, in contract order
                lo = max(a, tr.start_s)
                hi = b if tr.end_s is None else min(b, tr.end_s)
                if hi <= lo:
                    continue
                cap = tr.gpus * (hi - lo)
                busy = min(busy_left, cap)
                busy_left -= busy
                idle = cap - busy
                kwh = (busy * tr.terms.busy_w_per_gpu + idle * tr.terms.idle_w_per_gpu) \
                    * tr.terms.pue / 1000.0 / HOUR_S
                self.energy_kwh += kwh
                self.post(self.month_of(a), "power", site, "", tr.key, peur(kwh * tr.terms.power_eur_per_kwh))

    # ------------------------------------------------------------------ revenue
    def set_price(self, workload: str, price: Price) -> None:
        self.prices[workload] = price

    def _bill_tokens(self, m: int, workload: str, vertical: str, site: str,
                     prompt_tokens: int, output_tokens: int) -> None:
        """Revenue of ``prompt_tokens`` + ``output_tokens`` at ``workload``'s price, in month
        ``m``: the one pricing function every money path uses (single runs per request, the
        forecast and the market-only mode per tenant-month)."""
        price = self.prices[workload]
        rin = prompt_tokens * price.input_peur_per_token
        rout = output_tokens * price.output_peur_per_token
        self.post(m, "revenue_input", site, vertical, workload, rin)
        self.post(m, "revenue_output", site, vertical, workload, rout)
        tk = self.tokens[(m, site, vertical)]
        tk[0] += prompt_tokens
        tk[1] += output_tokens
        self.workload_rev[(m, workload)][(site, vertical)] += rin + rout
        self.workload_tokens[(m, workload)] += prompt_tokens + output_tokens

    def charge_revenue_share(self, m: int, workload: str, line: str, share: float) -> None:
        """Post ``share`` of ``workload``'s revenue billed so far in month ``m`` to cost line
        ``line`` (a marketplace's fee), at the revenue's site and vertical; call it once per
        workload-month, after the month's tokens are billed."""
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"charge_revenue_share: share {share}")
        for (site, vertical), rev in self.workload_rev.get((m, workload), {}).items():
            self.post(m, line, site, vertical, workload, int(round(rev * share)))

    def record_request(self, now: float, workload: str, vertical: str, site: str | None,
                       prompt_tokens: int, output_tokens: int, sla_met: bool,
                       measured: bool = True) -> None:
        """A completed request: bill its tokens at ``workload``'s price; if ``measured``
        (after warm-up) count it for the SLA."""
        m = self.month_of(now)
        if measured:
            c = self.sla_counts[(m, workload)]
            c[0] += 1
            c[1] += 1 if sla_met else 0
        self._bill_tokens(m, workload, vertical, site or "-", prompt_tokens, output_tokens)

    def record_usage(self, now: float, workload: str, vertical: str, site: str | None,
                     prompt_tokens: int, output_tokens: int, measured: float, met: float) -> None:
        """Many requests at once (a forecast's tenant-month, estimated from sampled windows;
        the market-only mode's contracted demand): bill the tokens (whole tokens) at
        ``workload``'s price and add ``measured`` requests of which ``met`` met the SLA to the
        month's SLA count.  The month's credit is then decided exactly as for single runs
        (:meth:`_credit_month`: share of the workload-month's revenue by the tiers of its
        :class:`Price`); only the ratio ``met / measured`` matters, so counts from unscaled
        windows give the credit of the scaled month."""
        if prompt_tokens < 0 or output_tokens < 0 or measured < 0 or not 0 <= met <= measured + 1e-9:
            raise ValueError(f"record_usage: tokens {prompt_tokens}/{output_tokens}, measured {measured}, met {met}")
        m = self.month_of(now)
        if measured > 0:
            c = self.sla_counts[(m, workload)]
            c[0] += measured
            c[1] += met
        self._bill_tokens(m, workload, vertical, site or "-", int(prompt_tokens), int(output_tokens))

    def record_miss(self, now: float, workload: str) -> None:
        """A rejected request: no revenue, an SLA miss."""
        self.sla_counts[(self.month_of(now), workload)][0] += 1

    def _credit_month(self, m: int) -> None:
        if m in self._credited_months:
            return
        self._credited_months.add(m)
        for (mm, wl), (n, met) in list(self.sla_counts.items()):
            if mm != m or n == 0:
                continue
            share = self.prices[wl].credit_share(met / n)
            if share <= 0:
                continue
            for (site, vertical), rev in self.workload_rev[(m, wl)].items():
                self.post(m, "sla_credits", site, vertical, wl, int(round(rev * share)))

    # ------------------------------------------------------------------ closing
    def close(self, now: float) -> None:
        """Accrue to ``now``, credit the last (partial) month, round every account's
        remainder once."""
        self.advance(now)
        self._credit_month(self.month_of(now - 1e-9) if now > 0 else 0)
        last = self.month_of(now - 1e-9) if now > 0 else 0
        for acct, r in self._resid.items():
            if r * 2 >= PEUR_PER_CENT:  # round half up
                line, site, vertical, _ = acct
                self.cells[(last, site, vertical, line)] += 1
                self.posted_cents[acct] += 1
                self.who_cells[(last, acct[3], line)] += 1
            self._resid[acct] = 0
        self.closed = True

    # ------------------------------------------------------------------ reports
    def _allocated_cells(self) -> dict[tuple[int, str, str, str], int]:
        """Cells with each site-month cost (vertical "") allocated to verticals by tokens."""
        out: dict[tuple[int, str, str, str], int] = defaultdict(int)
        for (m, site, vertical, line), c in self.cells.items():
            if vertical != "":
                out[(m, site, vertical, line)] += c
                continue
            keys = sorted(v for (mm, s, v) in self.tokens if mm == m and s == site)
            weights = [sum(self.tokens[(m, site, v)]) for v in keys]
            total = sum(weights)
            if total == 0:
                out[(m, site, UNALLOCATED, line)] += c
                continue
            shares = [c * w // total for w in weights]
            rem = c - sum(shares)
            order = sorted(range(len(keys)), key=lambda i: (-(c * weights[i] % total), keys[i]))
            for i in order[:rem]:
                shares[i] += 1
            for v, sh in zip(keys, shares):
                out[(m, site, v, line)] += sh
        return out

    def report(self) -> dict[str, Any]:
        """JSON-able summary: totals and breakdowns by month, site and vertical, in cents and
        EUR; cost per million tokens; margin share."""
        cells = self._allocated_cells()

        def group(keyf) -> dict[Any, dict[str, int]]:
            g: dict[Any, dict[str, int]] = defaultdict(lambda: {ln: 0 for ln in REVENUE_LINES + COST_LINES})
            for (m, site, vertical, line), c in cells.items():
                g[keyf(m, site, vertical)][line] += c
            return g

        def finish(lines: dict[str, int]) -> dict[str, Any]:
            rev = sum(lines[ln] for ln in REVENUE_LINES)
            cost = sum(lines[ln] for ln in COST_LINES)
            out = {f"{ln}_cents": lines[ln] for ln in REVENUE_LINES + COST_LINES}
            out.update(revenue_cents=rev, costs_cents=cost, margin_cents=rev - cost,
                       revenue_eur=rev / 100, costs_eur=cost / 100, margin_eur=(rev - cost) / 100,
                       margin_share=(rev - cost) / rev if rev else None)
            return out

        total = group(lambda m, s, v: "all")["all"] if cells else {ln: 0 for ln in REVENUE_LINES + COST_LINES}
        tok_in = sum(v[0] for v in self.tokens.values())
        tok_out = sum(v[1] for v in self.tokens.values())
        summary = finish(total)
        costs_eur = summary["costs_eur"]
        summary.update(
            prompt_tokens=tok_in, output_tokens=tok_out,
            cost_eur_per_mtok=(costs_eur / ((tok_in + tok_out) / 1e6)) if tok_in + tok_out else None,
            cost_eur_per_mtok_output=(costs_eur / (tok_out / 1e6)) if tok_out else None,
            energy_kwh=self.energy_kwh,
            gpu_hours_by_kind={k: v / HOUR_S for k, v in self.gpu_s_by_kind.items()},
            by_month={str(k): finish(v) for k, v in sorted(group(lambda m, s, v: m).items())},
            by_site={k: finish(v) for k, v in sorted(group(lambda m, s, v: s).items())},
            by_vertical={k: finish(v) for k, v in sorted(group(lambda m, s, v: v).items())},
        )
        return summary


# ====================================================================== pricing
def _pricing_entry(pricing: list, workload):
    """The first ``[[pricing]]`` entry naming the workload, else the first whose vertical and
    model match (``*`` = any), else None."""
    chosen = next((p for p in pricing if p.workload == workload.name), None)
    if chosen is None:
        chosen = next((p for p in pricing if p.workload is None
                       and p.vertical in ("*", workload.vertical) and p.model in ("*", workload.model)), None)
    return chosen


def credit_tiers_for(pricing: list, workload) -> tuple[tuple[float, float], ...]:
    """The SLA credit tiers of a workload: its pricing entry's ``sla_credits``, else the
    defaults around its attainment target (:func:`default_credit_tiers`)."""
    entry = _pricing_entry(pricing, workload)
    if entry is not None and entry.sla_credits is not None:
        return tuple((t.below_attainment, t.credit_share) for t in entry.sla_credits)
    return default_credit_tiers(workload.sla.attainment_target)


def price_for(pricing: list, workload) -> Price:
    """The tenant price of a scenario workload: the first ``[[pricing]]`` entry naming the
    workload, else the first whose vertical and model match (``*`` = any), else the default
    (the sovereign list price, see :data:`sim.economics.contracts.DEFAULTS`)."""
    chosen = _pricing_entry(pricing, workload)
    tiers = credit_tiers_for(pricing, workload)
    if chosen is None:
        return Price.from_eur_per_mtok(d("price_input_eur_per_mtok"), d("price_output_eur_per_mtok"), tiers)
    return Price.from_eur_per_mtok(chosen.input_eur_per_mtok, chosen.output_eur_per_mtok, tiers)


def month_lines_eur(report: dict, months: int) -> list[dict[str, float]]:
    """Per month ``0 .. months-1`` of a :meth:`Ledger.report`: each revenue and cost line
    (``<line>_eur``), ``revenue_eur``, ``capacity_cost_eur`` (the fixed lines),
    ``power_cost_eur``, ``marketplace_fee_eur``, ``marketplace_hosting_cost_eur``, the compliance
    lines (``certification_cost_eur``, ``ai_act_cost_eur``, ``dora_cost_eur`` and their sum
    ``compliance_cost_eur``), ``cost_eur`` (capacity + power + the marketplace and compliance lines), ``sla_credits_eur`` and
    ``gross_margin_eur`` = revenue - cost - credits.  Every amount is a whole number of cents
    taken from the ledger's cells, so the identity holds to the cent."""
    out = []
    for m in range(months):
        r = report["by_month"].get(str(m))
        c = {ln: (r[f"{ln}_cents"] if r is not None else 0) for ln in REVENUE_LINES + COST_LINES}
        rev = sum(c[ln] for ln in REVENUE_LINES)
        fixed = sum(c[ln] for ln in FIXED_LINES)
        compliance = sum(c[ln] for ln in COMPLIANCE_LINES)
        cost = fixed + c["power"] + c["marketplace_fee"] + c["marketplace_hosting"] + compliance
        row = {f"{ln}_eur": c[ln] / 100 for ln in REVENUE_LINES}
        row.update({f"{ln}_cost_eur": c[ln] / 100 for ln in FIXED_LINES})
        row.update(marketplace_fee_eur=c["marketplace_fee"] / 100,
                   marketplace_hosting_cost_eur=c["marketplace_hosting"] / 100)
        row.update({f"{ln}_cost_eur": c[ln] / 100 for ln in COMPLIANCE_LINES}, compliance_cost_eur=compliance / 100)
        row.update(revenue_eur=rev / 100, capacity_cost_eur=fixed / 100, power_cost_eur=c["power"] / 100,
                   cost_eur=cost / 100, sla_credits_eur=c["sla_credits"] / 100,
                   gross_margin_eur=(rev - cost - c["sla_credits"]) / 100)
        out.append(row)
    return out
