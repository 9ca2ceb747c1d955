"""The cyclic garbage collector while a simulation runs: fewer, larger collections.

A run allocates millions of short-lived container objects (event-queue entries, metric rows)
while thousands of requests and replicas stay alive.  Under CPython's default thresholds
(700, 10, 10) a young collection runs every 700 net allocations, and the older generations,
which hold every live request and every imported module's objects, are scanned again and
again; at 1,024 replicas that is 6 % of a run's CPU (`perf record` of
`benchmarks/routing.py`).  :func:`relaxed` raises the thresholds for the duration of a run
and restores them afterwards.  Garbage cycles are still collected, later; results never
depend on when (nothing in a run has a finaliser).  Nested and concurrent runs (threads)
share one setting and the last to finish restores the caller's.
"""
from __future__ import annotations

import gc
import threading
from contextlib import contextmanager
from typing import Iterator

# run setting (assumption, chosen by measurement: `benchmarks/routing.py` at 1,024 replicas ran
# 10-20 % faster than under the defaults, and no slower at 16)
RUN_THRESHOLDS = (20_000, 20, 20)

_lock = threading.Lock()
_depth = 0
_saved: tuple[int, ...] = ()


@contextmanager
def relaxed() -> Iterator[None]:
    """Raise the collector's thresholds to at least :data:`RUN_THRESHOLDS` inside the block
    (a collector switched off with threshold 0, or set higher, is left as it is)."""
    global _depth, _saved
    with _lock:
        if _depth == 0:
            _saved = gc.get_threshold()
            if _saved[0] > 0:
                gc.set_threshold(*(max(a, b) for a, b in zip(_saved, RUN_THRESHOLDS)))
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                gc.set_threshold(*_saved)
