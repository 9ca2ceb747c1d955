"""Progress of long work, the one place that shows it.

Library code never prints progress itself: a long loop (forecast months, sweep runs, capacity
evaluations, cells, calibration stages, validation families) takes a ``progress`` argument and
calls :func:`start` on it, then ``task.update(n, requests=...)`` after each step and
``task.close()`` at the end (or uses the task as a context manager).

``progress`` may be

* a :class:`Progress` (what the command line builds from ``--quiet`` / ``-v``);
* ``None``: the process default, :func:`default` (``auto`` unless the command line set it);
* ``True``: the default, but never off; ``False``: nothing shown.

Modes of a :class:`Progress`:

* ``auto``: a tqdm bar when the stream (stderr) is a terminal, else ``heartbeat``;
* ``bar``: a tqdm bar;
* ``heartbeat``: one plain line at most every ``interval_s`` (default 10 s; assumption: often
  enough to show a job is alive in a CI log, rare enough not to flood it; ``$SOVSIM_PROGRESS_S``
  sets another), e.g.
  ``forecast: month 12/36, 310,000 requests simulated, 25 s elapsed, ETA 40 s``; a background
  thread writes it even while one step runs long; with ``verbose`` a line after every step;
* ``off``: nothing.

The ETA is elapsed time x (steps left / steps done): a linear extrapolation, shown once a step
is done.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
import weakref
from typing import Callable, TextIO

MODES = ("auto", "bar", "heartbeat", "off")
HEARTBEAT_S = 10.0  # assumption: seconds between heartbeat lines when not on a terminal
ENV = "SOVSIM_PROGRESS_S"   # overrides HEARTBEAT_S (e.g. 60 in a quiet CI log)


def heartbeat_s() -> float:
    """Seconds between heartbeat lines: ``$SOVSIM_PROGRESS_S`` if a number > 0, else 10."""
    try:
        v = float(os.environ.get(ENV, ""))
    except ValueError:
        return HEARTBEAT_S
    return v if v > 0 else HEARTBEAT_S


def _duration(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


@dataclasses.dataclass(frozen=True)
class Progress:
    """How to show progress (see the module docstring)."""
    mode: str = "auto"
    interval_s: float = dataclasses.field(default_factory=heartbeat_s)
    verbose: bool = False
    stream: TextIO | None = None            # None: sys.stderr when a task starts
    clock: Callable[[], float] = time.monotonic
    ticker: bool = True                     # heartbeat lines also from a thread between steps

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"progress mode {self.mode!r}; allowed: {', '.join(MODES)}")

    def resolved_mode(self) -> str:
        if self.mode != "auto":
            return self.mode
        s = self.stream or sys.stderr
        try:
            tty = s.isatty()
        except (AttributeError, ValueError):
            tty = False
        return "bar" if tty else "heartbeat"

    def start(self, total: int | float | None, unit: str, desc: str) -> "Task":
        mode = self.resolved_mode()
        if mode == "off":
            return Task()
        if mode == "bar":
            return _Bar(total, unit, desc, self.stream or sys.stderr)
        return _Heartbeat(total, unit, desc, self)


_DEFAULT = Progress()


def default() -> Progress:
    """The process default (``sovsim`` sets it from ``--quiet``/``-v``; else ``auto``)."""
    return _DEFAULT


def set_default(p: Progress) -> Progress:
    """Set the process default; returns the previous one (to restore)."""
    global _DEFAULT
    old, _DEFAULT = _DEFAULT, p
    return old


def resolve(progress: "Progress | bool | None") -> Progress:
    """A :class:`Progress` from what a library function was given (module docstring)."""
    if isinstance(progress, Progress):
        return progress
    if progress is False:
        return Progress(mode="off")
    d = default()
    if progress is True and d.mode == "off":
        return dataclasses.replace(d, mode="auto")
    return d


def start(progress: "Progress | bool | None", total: int | float | None, unit: str, desc: str) -> "Task":
    """Start a task: ``total`` steps of ``unit`` (None: unknown), named ``desc``."""
    return resolve(progress).start(total, unit, desc)


class Task:
    """A running task.  This base class shows nothing (mode ``off``)."""

    def update(self, n: float = 1, **counts: float) -> None:
        """``n`` more steps done; ``counts`` (e.g. ``requests=1200``) add to running totals."""

    def note(self, text: str) -> None:
        """Replace the short status text shown after the count (e.g. ``12 replicas``)."""

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class _Counting(Task):
    def __init__(self, total, unit, desc):
        self.total, self.unit, self.desc = total, unit, desc
        self.done = 0.0
        self.counts: dict[str, float] = {}
        self.status = ""

    def _add(self, n, counts):
        self.done += n
        for k, v in counts.items():
            self.counts[k] = self.counts.get(k, 0.0) + float(v)

    def note(self, text: str) -> None:
        self.status = text

    def _counts_text(self) -> str:
        parts = [f"{v:,.0f} {k} simulated" if k == "requests" else f"{v:,.0f} {k}" for k, v in self.counts.items()]
        return ", ".join(parts)


class _Bar(_Counting):
    def __init__(self, total, unit, desc, stream):
        super().__init__(total, unit, desc)
        from tqdm import tqdm
        self.bar = tqdm(total=total, unit=unit, desc=desc, file=stream, delay=2.0, dynamic_ncols=True)

    def update(self, n=1, **counts):
        self._add(n, counts)
        post = ", ".join(p for p in (self.status, self._counts_text()) if p)
        if post:
            self.bar.set_postfix_str(post, refresh=False)
        self.bar.update(n)

    def note(self, text):
        super().note(text)
        self.bar.set_postfix_str(", ".join(p for p in (text, self._counts_text()) if p))

    def close(self):
        self.bar.close()


SILENT_TICKS = 30   # assumption: after 30 heartbeats without a step done, the thread stops repeating


def _tick(ref, stop: threading.Event, interval_s: float) -> None:
    while not stop.wait(interval_s):
        task = ref()
        if task is None:
            return
        task._maybe_emit()
        del task


class _Heartbeat(_Counting):
    def __init__(self, total, unit, desc, cfg: Progress):
        super().__init__(total, unit, desc)
        self.cfg = cfg
        self.stream = cfg.stream or sys.stderr
        self.t0 = cfg.clock()
        self.last = self.t0
        self.lines = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()   # set when closed
        self.thread = None
        self.silent_ticks = 0
        if cfg.ticker and cfg.interval_s > 0:
            # the thread holds the task weakly: a task dropped unclosed (its loop raised) ends it
            self.thread = threading.Thread(target=_tick, args=(weakref.ref(self), self.stop, cfg.interval_s),
                                           name=f"progress {desc}", daemon=True)
            self.thread.start()

    def line(self, final: bool = False) -> str:
        elapsed = self.cfg.clock() - self.t0
        done = int(self.done) if float(self.done).is_integer() else self.done
        if self.total:
            total = int(self.total) if float(self.total).is_integer() else self.total
            head = f"{self.desc}: {self.unit} {done:,}/{total:,}"
        else:
            head = f"{self.desc}: {self.unit} {done:,}"
        parts = [head] + [p for p in (self.status, self._counts_text()) if p]
        parts.append(f"{_duration(elapsed)} elapsed")
        if final:
            parts[-1] = f"done in {_duration(elapsed)}"
        elif self.total and self.done > 0:
            left = max(self.total - self.done, 0.0)
            parts.append(f"ETA {_duration(elapsed * left / self.done)}")
        return ", ".join(parts)

    def _emit(self, final: bool = False):
        try:
            print(self.line(final), file=self.stream, flush=True)
        except (ValueError, OSError):   # the stream was closed under us
            return
        self.lines += 1
        self.last = self.cfg.clock()

    def _maybe_emit(self):
        with self.lock:
            self.silent_ticks += 1
            if self.silent_ticks > SILENT_TICKS:   # nothing moved for long: stop repeating the line
                return
            if self.cfg.clock() - self.last >= self.cfg.interval_s:
                self._emit()

    def update(self, n=1, **counts):
        with self.lock:
            self.silent_ticks = 0
            self._add(n, counts)
            if self.cfg.verbose or self.cfg.clock() - self.last >= self.cfg.interval_s:
                self._emit()

    def close(self):
        if self.stop.is_set():
            return
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=1.0)
        with self.lock:
            if self.lines or self.cfg.verbose:   # a short task that said nothing stays silent
                self._emit(final=True)
