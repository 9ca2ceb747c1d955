"""sim.core.progress: a heartbeat line every interval when not on a terminal, nothing when off."""
from __future__ import annotations

import io
import time

import pytest

from sim.core import progress as pg


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def heartbeat(clock, stream, **kw):
    return pg.Progress(mode="heartbeat", interval_s=10.0, stream=stream, clock=clock, ticker=False, **kw)


def test_heartbeat_every_interval_with_counts_and_eta():
    clock, out = FakeClock(), io.StringIO()
    task = pg.start(heartbeat(clock, out), 36, "month", "forecast")
    for m in range(36):
        clock.t += 2.5                      # 2.5 s a month: a line every 4 months
        task.update(1, requests=10_000)
    task.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 36 // 4 + 1, lines   # 9 heartbeats and the final line
    assert lines[2] == "forecast: month 12/36, 120,000 requests simulated, 30 s elapsed, ETA 60 s"
    assert lines[-1] == "forecast: month 36/36, 360,000 requests simulated, done in 1.5 min"


def test_short_task_says_nothing_and_verbose_says_every_step():
    clock, out = FakeClock(), io.StringIO()
    with pg.start(heartbeat(clock, out), 3, "run", "sweep") as task:
        for _ in range(3):
            clock.t += 1.0
            task.update(1)
    assert out.getvalue() == ""
    with pg.start(heartbeat(clock, out, verbose=True), 3, "run", "sweep") as task:
        for _ in range(3):
            task.update(1)
    assert len(out.getvalue().splitlines()) == 4


def test_the_thread_writes_while_a_step_runs_long():
    out = io.StringIO()
    cfg = pg.Progress(mode="heartbeat", interval_s=0.05, stream=out)
    task = pg.start(cfg, 2, "window", "run")
    time.sleep(0.3)                         # one step that lasts six intervals
    task.close()
    lines = out.getvalue().splitlines()
    assert len(lines) >= 3, lines
    assert lines[0].startswith("run: window 0/2")


def test_off_false_and_auto_on_a_pipe():
    out = io.StringIO()
    for p in (pg.Progress(mode="off", stream=out), False):
        t = pg.start(p, 5, "run", "x")
        t.update(5)
        t.close()
    assert out.getvalue() == ""
    assert pg.Progress(stream=out).resolved_mode() == "heartbeat"   # StringIO is no terminal


def test_default_is_what_the_command_line_set():
    old = pg.set_default(pg.Progress(mode="off"))
    try:
        assert pg.resolve(None).mode == "off"
        assert pg.resolve(True).mode == "auto"      # asked for explicitly
        assert pg.resolve(False).mode == "off"
    finally:
        pg.set_default(old)


def test_bad_mode():
    with pytest.raises(ValueError, match="allowed: auto, bar, heartbeat, off"):
        pg.Progress(mode="loud")


def test_a_task_left_unclosed_stops_its_thread():
    """A loop that raised leaves its task unclosed: once dropped, its heartbeat thread ends."""
    import gc

    cfg = pg.Progress(mode="heartbeat", interval_s=0.02, stream=io.StringIO())
    task = pg.start(cfg, 5, "step", "x")
    thread = task.thread
    del task
    gc.collect()
    thread.join(timeout=2.0)
    assert not thread.is_alive()
