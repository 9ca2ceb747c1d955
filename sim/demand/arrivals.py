"""Arrival processes: when requests come.

An arrival process yields *chunks* lazily so memory stays flat over long horizons:
``chunks(rng, horizon_s)`` is an iterator of ``(times_s, prompt_tokens, output_tokens)``
where ``times_s`` is a sorted float array of absolute arrival times (increasing across
chunks, all ``< horizon_s``) and the two length arrays are ``None`` unless the process
carries its own lengths (trace replay); the workload's length distributions fill them in.

Processes: :class:`PoissonProcess`, :class:`OfflineProcess`, :class:`ClosedLoopProcess` (N
users, each submitting its next request when the previous one ends, plus think time; driven by
the world because submissions depend on completions), :class:`NHPPProcess` (hour-of-week
profile by thinning, optional :class:`MarkovBurst` modulation) and :class:`TraceReplayProcess`.
All are deterministic given the ``Generator`` passed in and keep memory flat (one chunk at a
time) however long the horizon.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from sim.core.errors import UserError

CHUNK = 4096

Chunk = tuple[np.ndarray, "np.ndarray | None", "np.ndarray | None"]


class ArrivalProcess:
    def chunks(self, rng: np.random.Generator, horizon_s: float) -> Iterator[Chunk]:  # pragma: no cover
        raise NotImplementedError

    def mean_rate_per_s(self) -> float:  # pragma: no cover
        raise NotImplementedError


@dataclass(frozen=True)
class PoissonProcess(ArrivalProcess):
    rate_per_s: float

    def mean_rate_per_s(self) -> float:
        return self.rate_per_s

    def chunks(self, rng, horizon_s):
        t = 0.0
        scale = 1.0 / self.rate_per_s
        while True:
            times = t + np.cumsum(rng.exponential(scale, size=CHUNK))
            t = float(times[-1])
            if t >= horizon_s:
                times = times[times < horizon_s]
                if len(times):
                    yield times, None, None
                return
            yield times, None, None


@dataclass(frozen=True)
class OfflineProcess(ArrivalProcess):
    count: int

    def mean_rate_per_s(self) -> float:
        return float("inf")

    def chunks(self, rng, horizon_s):
        left = self.count
        while left > 0:
            n = min(CHUNK, left)
            left -= n
            yield np.zeros(n), None, None


@dataclass(frozen=True)
class ClosedLoopProcess(ArrivalProcess):
    """``users`` concurrent users (AIPerf / NIM concurrency sweeps): each submits a request at
    t = 0, and its next one ``think`` seconds after the previous one completes (or is
    rejected).  Submissions depend on completions, so :class:`sim.serving.world.World` drives
    it; :meth:`chunks` is not used."""
    users: int
    think_time_s: float = 0.0

    def mean_rate_per_s(self) -> float:
        return float("inf")  # set by the service times, not known in advance (as offline)

    def think(self, rng: np.random.Generator) -> float:
        """Think time before a user's next request: exponential with mean ``think_time_s``."""
        return float(rng.exponential(self.think_time_s)) if self.think_time_s > 0.0 else 0.0

    def chunks(self, rng, horizon_s):
        raise TypeError("closed-loop arrivals are driven by completions (World), not by chunks")


# ------------------------------------------------------------------ non-homogeneous Poisson
HOURS_PER_WEEK = 168
WEEK_S = HOURS_PER_WEEK * 3600.0


@dataclass(frozen=True)
class MarkovBurst:
    """Two-state Markov modulation (MMPP) of an arrival rate.

    In the *burst* state the rate is ``multiplier`` times the rate of the *normal* state.
    Sojourns are exponential with means ``mean_burst_s`` and ``mean_gap_s`` (time between
    bursts).  Both levels are scaled so that the long-run mean multiplier is exactly 1: the
    process's mean rate is unchanged, only its variance grows.
    """

    multiplier: float
    mean_burst_s: float
    mean_gap_s: float

    def __post_init__(self):
        if not (self.multiplier >= 1.0 and self.mean_burst_s > 0 and self.mean_gap_s > 0):
            raise ValueError("MarkovBurst needs multiplier >= 1 and positive mean durations")

    @property
    def burst_share(self) -> float:
        """Stationary probability of the burst state."""
        return self.mean_burst_s / (self.mean_burst_s + self.mean_gap_s)

    @property
    def levels(self) -> tuple[float, float]:
        """(normal, burst) rate multipliers; their stationary mean is 1."""
        pb = self.burst_share
        a = 1.0 / (1.0 - pb + pb * self.multiplier)
        return a, a * self.multiplier

    @property
    def relative_rate_variance(self) -> float:
        """Var(rate multiplier) under the stationary law."""
        pb = self.burst_share
        lo, hi = self.levels
        return pb * (1.0 - pb) * (hi - lo) ** 2

    @property
    def switching_rate_per_s(self) -> float:
        return 1.0 / self.mean_burst_s + 1.0 / self.mean_gap_s

    def index_of_dispersion(self, mean_rate_per_s: float, window_s: float) -> float:
        """Theoretical Var(N)/E(N) of counts in a window of ``window_s`` for a stationary MMPP
        with this modulation around a constant mean rate (Fischer & Meier-Hellstern 1993)."""
        s = self.switching_rate_per_s
        x = s * window_s
        g = 1.0 - (1.0 - math.exp(-x)) / x
        return 1.0 + 2.0 * mean_rate_per_s * self.relative_rate_variance / s * g


# states of the two-state burst path: indices into (mean_gap_s, mean_burst_s) and ``levels``
NORMAL_STATE, BURST_STATE = 0, 1


class _MarkovPath:
    """Lazily generated two-state path: multiplier at sorted query times, memory flat."""

    def __init__(self, rng: np.random.Generator, burst: MarkovBurst):
        self.rng = rng
        self.means = (burst.mean_gap_s, burst.mean_burst_s)
        self.levels = np.asarray(burst.levels)
        state = BURST_STATE if rng.random() < burst.burst_share else NORMAL_STATE  # stationary start
        # segments: [bounds[i], bounds[i+1]) in states[i]; last segment open-ended to `end`
        self.bounds = [0.0]
        self.states = [state]
        self.end = float(rng.exponential(self.means[state]))

    def multipliers(self, times: np.ndarray) -> np.ndarray:
        t_last = float(times[-1])
        while self.end <= t_last:
            state = NORMAL_STATE if self.states[-1] == BURST_STATE else BURST_STATE
            self.bounds.append(self.end)
            self.states.append(state)
            self.end += float(self.rng.exponential(self.means[state]))
        b = np.asarray(self.bounds)
        seg = np.searchsorted(b, times, side="right") - 1
        out = self.levels[np.asarray(self.states)[seg]]
        # forget segments that end before the last query time (queries only move forward)
        keep = max(0, len(self.bounds) - 1)
        self.bounds = self.bounds[keep:]
        self.states = self.states[keep:]
        return out


def _normalise_profile(profile) -> np.ndarray:
    m = np.asarray(profile, dtype=np.float64)
    if m.shape != (HOURS_PER_WEEK,) or not np.all(np.isfinite(m)) or np.any(m < 0) or m.sum() <= 0:
        raise ValueError(f"a weekly profile needs {HOURS_PER_WEEK} finite multipliers >= 0 with a positive sum")
    return m / m.mean()


@dataclass(frozen=True, eq=False)
class NHPPProcess(ArrivalProcess):
    """Non-homogeneous Poisson arrivals with an hour-of-week rate profile, by thinning.

    ``rate(t) = rate_per_s * m[h(t)] * burst(t)`` where ``m`` is ``profile`` normalised to
    mean 1 (piecewise constant per hour), ``h(t) = floor(t/3600 + start_hour_of_week) mod
    168`` (hour 0 = Monday 00:00-01:00 UTC) and ``burst`` is an optional :class:`MarkovBurst`
    multiplier (mean 1).  So ``rate_per_s`` is the long-run mean rate.  Candidates come from a
    homogeneous Poisson process at the peak rate and are kept with probability
    ``rate(t)/peak`` (Lewis & Shedler 1979), vectorised per chunk.
    """

    rate_per_s: float
    profile: tuple[float, ...] = (1.0,) * HOURS_PER_WEEK
    start_hour_of_week: float = 0.0
    burst: MarkovBurst | None = None

    def __post_init__(self):
        if not self.rate_per_s > 0:
            raise ValueError("rate_per_s must be > 0")
        object.__setattr__(self, "_m", _normalise_profile(self.profile))

    def mean_rate_per_s(self) -> float:
        return self.rate_per_s

    def multipliers(self) -> np.ndarray:
        """The normalised hour-of-week multipliers (mean 1), Monday 00 UTC first."""
        return self._m.copy()

    def hour_of_week(self, t_s: np.ndarray) -> np.ndarray:
        return (np.floor(np.asarray(t_s) / 3600.0 + self.start_hour_of_week).astype(np.int64)) % HOURS_PER_WEEK

    def expected_count(self, t0_s: float, t1_s: float) -> float:
        """Integral of the (burst-free) rate over [t0, t1): expected arrivals."""
        off = self.start_hour_of_week * 3600.0  # hour boundaries, in simulation time, are k*3600 - off
        k = np.arange(math.floor((t0_s + off) / 3600.0), math.ceil((t1_s + off) / 3600.0) + 1)
        edges = k * 3600.0 - off
        lo = np.clip(edges[:-1], t0_s, t1_s)
        hi = np.clip(edges[1:], t0_s, t1_s)
        h = k[:-1] % HOURS_PER_WEEK
        return float(np.sum((hi - lo) * self.rate_per_s * self._m[h]))

    def chunks(self, rng, horizon_s):
        m = self._m
        path = _MarkovPath(rng, self.burst) if self.burst is not None else None
        peak = self.rate_per_s * float(m.max()) * (self.burst.levels[1] if self.burst else 1.0)
        scale = 1.0 / peak
        t = 0.0
        pending: list[np.ndarray] = []
        npend = 0
        while t < horizon_s:
            cand = t + np.cumsum(rng.exponential(scale, size=CHUNK))
            t = float(cand[-1])
            u = rng.random(CHUNK)
            lam = self.rate_per_s * m[self.hour_of_week(cand)]
            if path is not None:
                lam = lam * path.multipliers(cand)
            kept = cand[(u * peak < lam) & (cand < horizon_s)]
            if len(kept):
                pending.append(kept)
                npend += len(kept)
            if npend >= CHUNK:
                yield np.concatenate(pending), None, None
                pending, npend = [], 0
        if npend:
            yield np.concatenate(pending), None, None


# ------------------------------------------------------------------ trace replay
@dataclass(frozen=True, eq=False)
class TraceReplayProcess(ArrivalProcess):
    """Replay a :class:`sim.demand.traces.Trace` (its arrival times *and* token counts).

    * ``time_scale`` stretches the time axis: arrival ``i`` is at ``time_scale * t_i``
      (``0.5`` plays the trace twice as fast, doubling the rate and halving every gap).
    * ``rate_scale`` changes the number of requests, keeping the time profile: each request
      is emitted ``floor(r)`` times plus once more with probability ``r - floor(r)``; extra
      copies carry the request's token counts and are placed uniformly at random between it
      and the next request of the trace, so every stretch of the trace keeps its shape at
      ``r`` times the rate.  ``rate_scale < 1`` is independent thinning.  At ``rate_scale =
      1`` no randomness is used and the trace's times come back exactly.
    * ``repeat`` loops the trace (period = span plus one mean gap) until the horizon.
    """

    trace: "object"  # sim.demand.traces.Trace (not imported at module load: arrivals stays light)
    time_scale: float = 1.0
    rate_scale: float = 1.0
    repeat: bool = False

    def __post_init__(self):
        if not (self.time_scale > 0 and self.rate_scale > 0):
            raise ValueError("time_scale and rate_scale must be > 0")
        if self.repeat and len(self.trace) < 2:
            raise UserError(f"{self.trace.path}: repeat = true needs a trace of at least 2 rows, it has "
                            f"{len(self.trace)}; allowed: repeat = false, or a longer trace")
        if self.repeat and not (self.period_s > 0 and math.isfinite(self.period_s)):
            raise UserError(f"{self.trace.path}: repeat = true needs rows at different times (the loop period "
                            f"span + one mean gap is {self.period_s:g} s, it would never advance); allowed: "
                            "repeat = false, or a trace spanning some time")
        if not math.isfinite(self.trace.span_s * self.time_scale):
            raise UserError(f"{self.trace.path}: the trace spans {self.trace.span_s:g} s x time_scale "
                            f"{self.time_scale:g}, not a finite time; allowed: timestamps within a finite span")

    @property
    def period_s(self) -> float:
        n = len(self.trace)
        base = self.trace.span_s * n / (n - 1) if n > 1 else 0.0
        return base * self.time_scale

    def mean_rate_per_s(self) -> float:
        p = self.period_s
        return float("inf") if p <= 0 else self.rate_scale * len(self.trace) / p

    def report(self) -> dict:
        return self.trace.report()

    def chunks(self, rng, horizon_s):
        tr = self.trace
        n = len(tr)
        times = tr.times_s * self.time_scale
        if n > 1:
            gaps = np.diff(times, append=times[-1] + self.period_s / n)
        else:
            gaps = np.zeros(1)
        whole = math.floor(self.rate_scale)
        frac = self.rate_scale - whole
        offset = 0.0
        while True:
            for a in range(0, n, CHUNK):
                b = min(n, a + CHUNK)
                t = times[a:b] + offset
                if t[0] >= horizon_s:
                    return
                pr, ou = tr.prompt_tokens[a:b], tr.output_tokens[a:b]
                if self.rate_scale != 1.0:
                    mult = np.full(b - a, whole, dtype=np.int64)
                    if frac > 0:
                        mult += rng.random(b - a) < frac
                    idx = np.repeat(np.arange(b - a), mult)
                    first = np.ones(len(idx), dtype=bool)
                    if len(idx):
                        first[1:] = idx[1:] != idx[:-1]
                    jitter = np.where(first, 0.0, rng.random(len(idx)) * gaps[a:b][idx])
                    tt = t[idx] + jitter
                    order = np.argsort(tt, kind="stable")
                    t, pr, ou = tt[order], pr[idx][order], ou[idx][order]
                sel = t < horizon_s
                if np.any(sel):
                    yield t[sel], pr[sel].copy(), ou[sel].copy()
                if not sel.all():
                    return
            if not self.repeat:
                return
            offset += self.period_s
