"""run_cancellable: Ctrl-C on the waiting thread cancels the work and waits for it to wind down."""

from __future__ import annotations

import _thread
import signal
import threading
import time

import pytest

from routesh.db.cancellable import run_cancellable


class Stopped(Exception):
    pass


@pytest.fixture(autouse=True)
def ctrl_c_reaches_python():
    """interrupt_main does nothing where SIGINT is ignored, as in a test run started in the background (`&`)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_cancels_and_waits_for_the_work_to_end():
    """The work keeps going for a while after its cancel (a batch being written, a model step): the caller
    must not go on before it ends. On Python 3.11 a Thread.join interrupted by Ctrl-C could mark the
    still-running worker as stopped; this fails there if the wait relies on join."""
    cancelled = threading.Event()
    log: list[str] = []

    def work() -> str:
        threading.Timer(0.2, _thread.interrupt_main).start()  # Ctrl-C while the caller waits
        cancelled.wait(5)
        time.sleep(0.5)  # winding down takes time
        log.append("work ended")
        raise Stopped("stopped")

    with pytest.raises(Stopped):
        run_cancellable(work, cancel=cancelled.set, when_cancelled=lambda err: err or RuntimeError("none"))
    log.append("caller went on")
    assert log == ["work ended", "caller went on"]


def test_grace_bounds_the_wait_and_the_result_comes_back_otherwise():
    def stuck() -> None:
        threading.Timer(0.1, _thread.interrupt_main).start()
        time.sleep(3)

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_cancellable(stuck, cancel=lambda: None, when_cancelled=lambda err: KeyboardInterrupt(), grace=0.3)
    assert time.monotonic() - started < 2
    assert run_cancellable(lambda: 42, cancel=lambda: None, when_cancelled=lambda err: RuntimeError()) == 42


def test_every_ctrl_c_becomes_the_cancel_wherever_it_lands_in_the_wait():
    """A real SIGINT at any moment of the wait: it must come back as the work's own cancel, never as a bare
    KeyboardInterrupt from the loop, nor as "release unlocked lock" from inside Event.wait (CI saw that
    once)."""
    import os
    import random

    chance = random.Random(3)
    for _ in range(50):
        cancelled = threading.Event()
        calls: list[str] = []

        def work() -> None:
            cancelled.wait(5)
            raise Stopped("stopped")

        def cancel() -> None:
            calls.append("cancel")
            cancelled.set()

        threading.Timer(chance.uniform(0, 0.03), os.kill, (os.getpid(), signal.SIGINT)).start()
        with pytest.raises(Stopped):
            run_cancellable(work, cancel=cancel, when_cancelled=lambda err: err or RuntimeError("none"))
        assert calls == ["cancel"]
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # stopping: a second Ctrl-C cuts nothing short
        signal.signal(signal.SIGINT, signal.default_int_handler)
    assert run_cancellable(lambda: 5, cancel=lambda: None, when_cancelled=lambda err: RuntimeError()) == 5
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # no Ctrl-C: Python's own is back


def test_off_the_main_thread_the_work_still_runs_and_no_handler_is_touched():
    results: list[object] = []
    waiter = threading.Thread(target=lambda: results.append(
        run_cancellable(lambda: 7, cancel=lambda: None, when_cancelled=lambda err: RuntimeError())))
    waiter.start()
    waiter.join(5)
    assert results == [7]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
