"""The contracted backlog: EUR of signed sovereign revenue still to come.

Definition (docs/metrics.md, ``backlog_eur``): each signed sovereign contract term is a
*segment* ``[start_s, end_s)`` with a contracted revenue rate ``r`` (EUR/s) = the contract's
**contracted volume** (``rate_per_s`` requests/s at steady state x its prompt and output
token means) x the term's price, i.e. :attr:`CustomerContract.revenue_eur_per_s` when the
term is signed.  It is contracted volume, not the traffic the simulation delivers.  At time
``t`` the backlog is

    B(t) = sum over segments of r x max(0, end_s - max(t, start_s))

(signed, not yet recognised; a term that has not started counts in full).  A renewal adds a
segment for the new term at its price; a cancellation cuts the last segment at the
cancellation time.  Per month ``m`` = ``[t_m, t_m+1)``:

* ``signed``: full value ``r x (end_s - start_s)`` of the segments signed in the month
  (new awards and renewals; the t = 0 book is the opening backlog, not a signing);
* ``recognised``: ``r x |[start_s, end_s) n [t_m, t_m+1)|`` summed over segments;
* ``cancelled``: value removed by cancellations in the month;

so that ``B(t_m+1) = B(t_m) + signed - recognised - cancelled`` (tested to the cent).
The caller closes each month at its end (:meth:`Backlog.close_month`), after the
environment has run to it and before any event at that instant.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Segment:
    contract_id: str
    start_s: float
    end_s: float
    rate_eur_per_s: float
    signed_s: float
    initial: bool = False
    signed_value_eur: float = 0.0      # r x (end_s - start_s) when signed (before any cut)

    def value_after(self, t_s: float) -> float:
        return self.rate_eur_per_s * max(0.0, self.end_s - max(t_s, self.start_s))

    def value_in(self, a_s: float, b_s: float) -> float:
        return self.rate_eur_per_s * max(0.0, min(self.end_s, b_s) - max(self.start_s, a_s))


class Backlog:
    """Segments of signed sovereign revenue and the monthly roll-forward of the backlog."""

    def __init__(self, t0_s: float, month_s: float):
        self.t0_s = float(t0_s)
        self.month_s = float(month_s)
        self.segments: list[Segment] = []
        self._last: dict[str, Segment] = {}          # contract id -> its current term
        self.cancel_events: list[tuple[float, str, float]] = []   # (t_s, contract id, value removed)
        self.rows: list[dict] = []
        self.opening_eur: float | None = None

    # ------------------------------------------------------------------ events
    def signed(self, contract, t_s: float, initial: bool = False) -> None:
        """A new term of ``contract`` (a signature, a renewal or the t = 0 book)."""
        start = float(max(contract.start_s, contract.end_s - contract.term_s))
        rate = float(contract.revenue_eur_per_s)
        seg = Segment(contract.id, start, float(contract.end_s), rate, float(t_s), initial,
                      rate * (float(contract.end_s) - start))
        self.segments.append(seg)
        self._last[contract.id] = seg

    def cancelled(self, contract, t_s: float) -> float:
        """``contract`` is cancelled at ``t_s``: cut its current term; returns the value removed."""
        seg = self._last.get(contract.id)
        if seg is None:
            return 0.0
        removed = seg.value_after(t_s)
        seg.end_s = max(seg.start_s, min(seg.end_s, float(t_s)))
        self.cancel_events.append((float(t_s), contract.id, removed))
        return removed

    # ------------------------------------------------------------------ measures
    def value_at(self, t_s: float) -> float:
        """B(t_s) from the segments as known now (exact for t_s = now)."""
        return sum(s.value_after(t_s) for s in self.segments)

    def open(self) -> float:
        """The opening backlog B(t0) (call once the t = 0 book is signed)."""
        if self.opening_eur is None:
            self.opening_eur = self.value_at(self.t0_s)
        return self.opening_eur

    def close_month(self, m: int) -> dict:
        """The roll-forward of month ``m``, called when the clock is at its end."""
        self.open()
        a = self.t0_s + m * self.month_s
        b = a + self.month_s
        signed = sum(s.signed_value_eur for s in self.segments if not s.initial and a <= s.signed_s < b)
        recognised = sum(s.value_in(a, b) for s in self.segments)
        cancel = [(t, v) for t, _, v in self.cancel_events if a <= t < b]
        row = {"month": m, "backlog_eur": self.value_at(b), "backlog_signed_eur": signed,
               "backlog_recognised_eur": recognised, "backlog_cancelled_eur": sum(v for _, v in cancel),
               "contracts_cancelled": len(cancel)}
        self.rows.append(row)
        return row
