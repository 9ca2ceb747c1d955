"""Streaming metrics: memory does not grow with the number of requests.

Completed and rejected requests are buffered as tidy rows and folded, a few thousand at a
time, into exact running sums (counts, token totals, mean latencies, SLA hits) and
log-binned histograms (percentiles, relative resolution 0.2 %).  A uniform reservoir sample
of per-request rows is kept for ``requests.parquet``.  Per-replica busy time, output tokens
and KV occupancy are accumulated in fixed-width time bins.

Every metric is defined once in ``docs/metrics.md``.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

# request record columns (the tidy per-request schema)
COLUMNS = ("request_id", "workload", "replica", "arrival_s", "admitted_s", "first_token_s",
           "completion_s", "prompt_tokens", "output_tokens", "generated_tokens", "preemptions",
           "restarts", "network_s", "outcome")
OUTCOMES = ("completed", "rejected", "in_flight")
# a buffered row's outcome column holds the index of its outcome in OUTCOMES
OUTCOME_COMPLETED, OUTCOME_REJECTED, OUTCOME_IN_FLIGHT = range(len(OUTCOMES))
_OUTCOME_COL = COLUMNS.index("outcome")
REJECT_REASONS = ("no_eligible_capacity", "exceeds_kv_capacity", "queue_full", "ttft_shed")

_H_LO = 1e-6          # seconds; smaller values fall in the underflow bin (reported as 0)
_H_RATIO = 1.002
_H_BINS = int(math.ceil(math.log(1e6 / _H_LO) / math.log(_H_RATIO))) + 2
_H_LOG_RATIO = math.log(_H_RATIO)


class LogHistogram:
    """Counts of positive values in geometric bins of ratio 1.002 over [1 us, 1e6 s].

    Only the span of bins that hold values is stored (a latency law covers a few decades of the
    twelve: ~10x less memory than the full ~13,800 bins, which matters with hundreds of streams
    per world); :attr:`counts` gives the full-length array."""

    __slots__ = ("_under", "_lo", "_counts")

    def __init__(self):
        self._under = 0                              # bin 0: values below 1 us
        self._lo = 1                                 # first stored bin (>= 1)
        self._counts = np.zeros(0, dtype=np.int64)   # bins _lo .. _lo + size - 1

    def _cover(self, lo: int, hi: int) -> None:
        """Grow the stored span to include bins ``lo..hi``."""
        c = self._counts
        if c.size == 0:
            self._lo, self._counts = lo, np.zeros(hi - lo + 1, dtype=np.int64)
            return
        new_lo, new_hi = min(self._lo, lo), max(self._lo + c.size - 1, hi)
        if new_lo == self._lo and new_hi == self._lo + c.size - 1:
            return
        grown = np.zeros(new_hi - new_lo + 1, dtype=np.int64)
        grown[self._lo - new_lo:self._lo - new_lo + c.size] = c
        self._lo, self._counts = new_lo, grown

    def add(self, values: np.ndarray):
        v = np.asarray(values, dtype=float)
        if v.size == 0:
            return
        idx = np.zeros(len(v), dtype=np.int64)
        pos = v >= _H_LO
        idx[pos] = 1 + np.floor(np.log(v[pos] / _H_LO) / _H_LOG_RATIO).astype(np.int64)
        np.clip(idx, 0, _H_BINS - 1, out=idx)
        idx = idx[pos]
        self._under += int(v.size - idx.size)   # below 1 us (a zero wait): the underflow bin
        if idx.size:
            self._cover(int(idx.min()), int(idx.max()))
            self._counts += np.bincount(idx - self._lo, minlength=self._counts.size)

    def merge(self, other: "LogHistogram"):
        self._under += other._under
        if other._counts.size == 0:
            return
        self._cover(other._lo, other._lo + other._counts.size - 1)
        off = other._lo - self._lo
        self._counts[off:off + other._counts.size] += other._counts

    @property
    def counts(self) -> np.ndarray:
        """The full-length counts (``_H_BINS`` bins; bin 0 is the underflow)."""
        full = np.zeros(_H_BINS, dtype=np.int64)
        full[self._lo:self._lo + self._counts.size] = self._counts
        full[0] = self._under
        return full

    @property
    def n(self) -> int:
        return self._under + int(self._counts.sum())

    def quantile(self, q: float) -> float | None:
        n = self.n
        if n == 0:
            return None
        rank = q * n
        if rank <= self._under:   # within the underflow bin (cumulative count >= rank there)
            return 0.0
        cum = np.cumsum(self._counts)
        i = self._lo + int(np.searchsorted(cum, rank - self._under, side="left"))
        i = min(i, _H_BINS - 1)
        if i == 0:
            return 0.0
        lo = _H_LO * _H_RATIO ** (i - 1)
        return lo * math.sqrt(_H_RATIO)


class Stream:
    """Exact sums and histograms of one group of requests (a workload, or all)."""

    def __init__(self):
        self.completed = 0
        self.rejected = {r: 0 for r in REJECT_REASONS}
        self.arrivals = 0
        self.measured_arrivals = 0  # arrivals after warm-up
        self.arrived_prompt_tokens = 0
        self.arrived_output_tokens = 0
        # second moments of the arrived lengths (the fluid capacity's length-biased context)
        self.arrived_prompt_tokens_sq = 0
        self.arrived_output_tokens_sq = 0
        self.arrived_prompt_output_tokens = 0
        self.measured = 0           # completed requests past warm-up
        self.measured_prompt_tokens = 0
        self.measured_output_tokens = 0
        self.sla_met = 0
        self.ttft_met = 0
        self.tpot_met = 0
        self.prompt_tokens = 0
        self.output_tokens = 0
        self.sum_ttft = 0.0
        self.sum_tpot = 0.0
        self.n_tpot = 0
        self.sum_e2e = 0.0
        self.sum_wait = 0.0
        self.sum_wait2 = 0.0
        self.preemptions = 0
        self.rejected_measured = 0  # rejected requests that arrived after warm-up
        self.inflight_missed = 0    # in flight at the horizon and already past the TTFT target
        self.h_ttft = LogHistogram()
        self.h_tpot = LogHistogram()
        self.h_e2e = LogHistogram()
        self.h_wait = LogHistogram()

    def merge(self, o: "Stream"):
        for k in ("completed", "arrivals", "measured_arrivals", "arrived_prompt_tokens", "arrived_output_tokens",
                  "arrived_prompt_tokens_sq", "arrived_output_tokens_sq", "arrived_prompt_output_tokens", "measured",
                  "measured_prompt_tokens", "measured_output_tokens", "sla_met", "ttft_met", "tpot_met",
                  "prompt_tokens", "output_tokens", "sum_ttft", "sum_tpot", "n_tpot", "sum_e2e",
                  "sum_wait", "sum_wait2", "preemptions", "rejected_measured", "inflight_missed"):
            setattr(self, k, getattr(self, k) + getattr(o, k))
        for r in REJECT_REASONS:
            self.rejected[r] += o.rejected[r]
        for h in ("h_ttft", "h_tpot", "h_e2e", "h_wait"):
            getattr(self, h).merge(getattr(o, h))

    def _dist(self, h: LogHistogram, total: float, n: int) -> dict:
        return {
            "mean": (total / n) if n else None,
            "p50": h.quantile(0.50),
            "p90": h.quantile(0.90),
            "p99": h.quantile(0.99),
        }

    def summary(self, attainment_target: float | None = None) -> dict:
        n = self.measured
        rej = sum(self.rejected.values())
        d: dict[str, Any] = {
            "arrivals": self.arrivals,
            "measured_arrivals": self.measured_arrivals,
            "arrived_prompt_tokens": self.arrived_prompt_tokens,
            "arrived_output_tokens": self.arrived_output_tokens,
            "completed": self.completed,
            "rejected": rej,
            "rejected_by_reason": dict(self.rejected),
            "rejected_share": (rej / self.arrivals) if self.arrivals else 0.0,
            "measured_rejected": self.rejected_measured,
            "inflight_missed": self.inflight_missed,
            "measured": n,
            "measured_prompt_tokens": self.measured_prompt_tokens,
            "measured_output_tokens": self.measured_output_tokens,
            "completed_prompt_tokens": self.prompt_tokens,
            "completed_output_tokens": self.output_tokens,
            "preemptions": self.preemptions,
            "ttft_s": self._dist(self.h_ttft, self.sum_ttft, n),
            "tpot_s": self._dist(self.h_tpot, self.sum_tpot, self.n_tpot),
            "e2e_s": self._dist(self.h_e2e, self.sum_e2e, n),
            "wait_s": self._dist(self.h_wait, self.sum_wait, n),
            # SLA attainment: share of measured requests (completed or rejected after warm-up)
            # meeting both targets; a rejected request misses.
            "sla_attainment": None,
            "ttft_attainment": None,
            "tpot_attainment": None,
        }
        denom = n + self.rejected_measured + self.inflight_missed
        if denom:
            d["sla_attainment"] = self.sla_met / denom
            d["ttft_attainment"] = self.ttft_met / denom
            d["tpot_attainment"] = self.tpot_met / denom
        if attainment_target is not None:
            d["sla_target"] = attainment_target
            d["sla_met"] = (d["sla_attainment"] is not None and d["sla_attainment"] >= attainment_target)
        return d


class Metrics:
    """Collects everything a run reports.  ``workloads`` gives each workload's SLA."""

    def __init__(self, workloads, n_replicas: int, horizon_s: float, warmup_s: float,
                 interval_s: float, sample_size: int, rng: np.random.Generator,
                 flush_every: int = 8192):
        self.workloads = workloads
        self.streams = [Stream() for _ in workloads]
        self.ttft_target = [w.sla.ttft_s for w in workloads]
        self.tpot_target = [w.sla.tpot_s for w in workloads]
        self.warmup_s = warmup_s
        self.interval_s = interval_s
        self.horizon_s = horizon_s
        self.rng = rng
        self.sample_size = sample_size
        self.sample: list[tuple] = []
        self.seen = 0
        self.buffer: list[tuple] = []
        self.flush_every = flush_every
        self.first_arrival_s: float | None = None
        self.last_completion_s = 0.0
        nb = max(1, int(math.ceil(min(horizon_s, 1e7) / interval_s)))
        self.nbins = nb  # grows when events fall past it (offline runs)
        self.busy = [[0.0] * nb for _ in range(n_replicas)]
        self.tokens = [[0.0] * nb for _ in range(n_replicas)]
        self.kv_block_s = [[0.0] * nb for _ in range(n_replicas)]
        self.arrival_bins = [0] * nb
        self.completion_bins = [0] * nb
        self.reject_bins = [0] * nb

    def add_replica(self):
        """Bins for a replica that joined the fleet during the run (index = previous count)."""
        nb = self.nbins
        self.busy.append([0.0] * nb)
        self.tokens.append([0.0] * nb)
        self.kv_block_s.append([0.0] * nb)

    def _grow(self, b: int):
        extra = max(b + 1 - self.nbins, self.nbins)
        for lst in (*self.busy, *self.tokens, *self.kv_block_s):
            lst.extend([0.0] * extra)
        for counts in (self.arrival_bins, self.completion_bins, self.reject_bins):
            counts.extend([0] * extra)
        self.nbins += extra

    # ------------------------------------------------------------------ hooks
    def _bin(self, t: float) -> int:
        b = int(t / self.interval_s)
        if b >= self.nbins:
            self._grow(b)
        return b

    def on_arrival(self, r, now: float):
        s = self.streams[r.workload]
        s.arrivals += 1
        if now >= self.warmup_s:
            s.measured_arrivals += 1
        p, o = r.prompt_tokens, r.output_tokens
        s.arrived_prompt_tokens += p
        s.arrived_output_tokens += o
        s.arrived_prompt_tokens_sq += p * p
        s.arrived_output_tokens_sq += o * o
        s.arrived_prompt_output_tokens += p * o
        if self.first_arrival_s is None:
            self.first_arrival_s = now
        self.arrival_bins[self._bin(now)] += 1

    def on_complete(self, r, now: float):
        self.last_completion_s = now
        self.completion_bins[self._bin(now)] += 1
        buf = self.buffer
        buf.append(self._row(r, OUTCOME_COMPLETED))
        if len(buf) >= self.flush_every:
            self.flush()

    def on_reject(self, r, reason: str, now: float):
        self.streams[r.workload].rejected[reason] += 1
        self.reject_bins[self._bin(now)] += 1
        if r.arrival_s >= self.warmup_s:
            self.streams[r.workload].rejected_measured += 1
        r.outcome = "rejected"
        r.reason = reason
        self.buffer.append(self._row(r, OUTCOME_REJECTED))

    def on_busy(self, rep, t0: float, t1: float, tokens: int, kv_blocks: int):
        if t1 <= t0:
            return
        iv = self.interval_s
        b0 = int(t0 / iv)
        b1 = int(t1 / iv)
        if b1 >= self.nbins:
            self._grow(b1)
        i = rep.index
        busy = self.busy[i]
        if b0 == b1:
            d = t1 - t0
            busy[b0] += d
            self.tokens[i][b0] += tokens
            self.kv_block_s[i][b0] += kv_blocks * d
            return
        dur = t1 - t0
        for b in range(b0, b1 + 1):
            lo = max(t0, b * iv)
            hi = min(t1, (b + 1) * iv) if b < b1 else t1
            f = hi - lo
            if f <= 0:
                continue
            busy[b] += f
            self.tokens[rep.index][b] += tokens * f / dur
            self.kv_block_s[rep.index][b] += kv_blocks * f

    def _row(self, r, outcome_code: int) -> tuple:
        return (r.rid, r.workload, r.replica, r.arrival_s, r.admitted_s, r.first_token_s,
                r.completion_s, r.prompt_tokens, r.output_tokens, r.generated, r.preemptions,
                r.restarts, r.latency_s, outcome_code)

    # ------------------------------------------------------------------ folding
    def flush(self):
        rows = self.buffer
        if not rows:
            return
        self.buffer = []
        self._reservoir(rows)
        a = np.array(rows, dtype=float)
        w = a[:, 1].astype(np.int64)
        done = a[:, _OUTCOME_COL] == OUTCOME_COMPLETED
        for wi in np.unique(w[done]):
            m = done & (w == wi)
            self._fold(int(wi), a[m])

    def _fold(self, wi: int, a: np.ndarray):
        s = self.streams[wi]
        s.completed += len(a)
        s.prompt_tokens += int(a[:, 7].sum())
        s.output_tokens += int(a[:, 8].sum())
        s.preemptions += int(a[:, 10].sum())
        a = a[a[:, 3] >= self.warmup_s]
        if len(a) == 0:
            return
        net = a[:, 12]
        ttft = a[:, 5] - a[:, 3] + net
        e2e = a[:, 6] - a[:, 3] + net
        wait = a[:, 4] - a[:, 3]
        out = a[:, 8]
        multi = out > 1
        tpot = (a[multi, 6] - a[multi, 5]) / (out[multi] - 1)
        s.measured += len(a)
        s.measured_prompt_tokens += int(a[:, 7].sum())
        s.measured_output_tokens += int(a[:, 8].sum())
        s.sum_ttft += float(ttft.sum())
        s.sum_e2e += float(e2e.sum())
        s.sum_wait += float(wait.sum())
        s.sum_wait2 += float((wait * wait).sum())
        s.sum_tpot += float(tpot.sum())
        s.n_tpot += len(tpot)
        s.h_ttft.add(ttft)
        s.h_e2e.add(e2e)
        s.h_wait.add(wait)
        s.h_tpot.add(tpot)
        ttft_ok = ttft <= self.ttft_target[wi]
        tpot_ok = np.ones(len(a), dtype=bool)
        tpot_ok[multi] = tpot <= self.tpot_target[wi]
        s.ttft_met += int(ttft_ok.sum())
        s.tpot_met += int(tpot_ok.sum())
        s.sla_met += int((ttft_ok & tpot_ok).sum())

    def _reservoir(self, rows: list[tuple]):
        k = self.sample_size
        if k == 0:
            self.seen += len(rows)
            return
        n0 = self.seen
        self.seen += len(rows)
        i = 0
        while len(self.sample) < k and i < len(rows):
            self.sample.append(rows[i])
            i += 1
        if i == len(rows):
            return
        idx = np.arange(n0 + i, n0 + len(rows))
        j = (self.rng.random(len(idx)) * (idx + 1)).astype(np.int64)
        for pos in np.nonzero(j < k)[0]:
            self.sample[int(j[pos])] = rows[i + int(pos)]

    # ------------------------------------------------------------------ results
    def count_inflight_misses(self, requests, now: float):
        """Requests still in the system at the horizon that already missed their TTFT target
        (no first token yet and older than the target, or a first token that came too late)
        count as SLA misses; the others are undecided and left out."""
        for r in requests:
            if r.arrival_s < self.warmup_s:
                continue
            target = self.ttft_target[r.workload]
            ttft = (r.first_token_s if r.first_token_s >= 0.0 else now) - r.arrival_s + r.latency_s
            if ttft > target:
                self.streams[r.workload].inflight_missed += 1

    def add_in_flight(self, requests):
        """Requests still in the system at the horizon enter the sample, not the sums."""
        rows = [self._row(r, OUTCOME_IN_FLIGHT) for r in requests]
        self.flush()
        self._reservoir(rows)

    def total(self) -> Stream:
        t = Stream()
        for s in self.streams:
            t.merge(s)
        return t

    def requests_frame(self, replica_names: list[str]):
        import pandas as pd
        df = pd.DataFrame(self.sample, columns=list(COLUMNS))
        df = df.sort_values("request_id", kind="stable").reset_index(drop=True)
        df["outcome"] = [OUTCOMES[int(c)] for c in df["outcome"]]
        df["workload"] = [self.workloads[int(i)].name for i in df["workload"]]
        df["replica"] = [replica_names[int(i)] if i >= 0 else "" for i in df["replica"]]
        for c in ("admitted_s", "first_token_s", "completion_s"):
            df.loc[df[c] < 0, c] = np.nan
        net = df["network_s"]
        df["ttft_s"] = df["first_token_s"] - df["arrival_s"] + net
        df["e2e_s"] = df["completion_s"] - df["arrival_s"] + net
        df["wait_s"] = df["admitted_s"] - df["arrival_s"]
        multi = df["output_tokens"] > 1
        df["tpot_s"] = np.where(multi, (df["completion_s"] - df["first_token_s"]) /
                                (df["output_tokens"] - 1).clip(lower=1), np.nan)
        return df

    def timeseries_frame(self, replicas, horizon_s: float):
        import pandas as pd
        nb = min(self.nbins, max(1, int(math.ceil(horizon_s / self.interval_s))))
        iv = self.interval_s
        starts = np.arange(nb) * iv
        widths = np.minimum(iv, np.maximum(horizon_s - starts, 0.0))
        frames = []
        for rep in replicas:
            i = rep.index
            busy = np.array(self.busy[i][:nb])
            frames.append(pd.DataFrame({
                "bin_start_s": starts,
                "replica": rep.name,
                "busy_s": busy,
                "utilisation": np.divide(busy, widths, out=np.zeros(nb), where=widths > 0),
                "output_tokens": np.array(self.tokens[i][:nb]),
                "output_tokens_per_s": np.divide(np.array(self.tokens[i][:nb]), widths, out=np.zeros(nb), where=widths > 0),
                "kv_occupancy": np.divide(np.array(self.kv_block_s[i][:nb]), widths * max(rep.total_blocks, 1),
                                          out=np.zeros(nb), where=widths > 0),
            }))
        in_fleet = np.zeros(nb)
        for rep in replicas:
            hi_r = rep.retired_s if rep.retired_s is not None else math.inf
            ov = np.minimum(starts + widths, hi_r) - np.maximum(starts, rep.added_s)
            in_fleet += np.clip(ov, 0.0, None) * rep.gpus
        fleet = pd.DataFrame({
            "bin_start_s": starts,
            "replica": "__fleet__",
            "gpus_in_fleet": np.divide(in_fleet, widths, out=np.zeros(nb), where=widths > 0),
            "arrivals": self.arrival_bins[:nb],
            "completions": self.completion_bins[:nb],
            "rejections": self.reject_bins[:nb],
        })
        return pd.concat(frames + [fleet], ignore_index=True)
