"""sim.core.collector: thresholds raised inside a run, the caller's restored after, nested
and concurrent blocks sharing one setting, a disabled collector left alone."""
import gc
import threading

from sim.core import collector


def test_relaxed_raises_and_restores(monkeypatch):
    old = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        with collector.relaxed():
            assert gc.get_threshold() == collector.RUN_THRESHOLDS
            with collector.relaxed():   # nested: same setting, restored only by the outer block
                assert gc.get_threshold() == collector.RUN_THRESHOLDS
            assert gc.get_threshold() == collector.RUN_THRESHOLDS
        assert gc.get_threshold() == (700, 10, 10)
        gc.set_threshold(50_000, 5, 100)   # a higher setting of the caller's is kept
        with collector.relaxed():
            assert gc.get_threshold() == (50_000, 20, 100)
        assert gc.get_threshold() == (50_000, 5, 100)
        gc.set_threshold(0)                # switched off: left off
        with collector.relaxed():
            assert gc.get_threshold()[0] == 0
    finally:
        gc.set_threshold(*old)


def test_restored_after_an_exception_and_across_threads():
    old = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        try:
            with collector.relaxed():
                raise ValueError
        except ValueError:
            pass
        assert gc.get_threshold() == (700, 10, 10)
        inside, go = threading.Event(), threading.Event()

        def worker():
            with collector.relaxed():
                inside.set()
                go.wait(5)
        t = threading.Thread(target=worker)
        t.start()
        inside.wait(5)
        with collector.relaxed():        # ends first: the worker's block is still open
            pass
        assert gc.get_threshold() == collector.RUN_THRESHOLDS
        go.set()
        t.join()
        assert gc.get_threshold() == (700, 10, 10)
    finally:
        gc.set_threshold(*old)
