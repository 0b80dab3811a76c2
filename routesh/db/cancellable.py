"""Run blocking work so that Ctrl-C cancels it instead of waiting for it.

A blocked database call (or a model's generate) does not see Python's SIGINT until it returns, so the
work runs on a worker thread while the calling thread waits; a KeyboardInterrupt there calls the work's
own cancel (Database.cancel(), Engine.cancel()), and the caller decides what a cancelled run raises.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from routesh.cancel import interrupts_noted
from routesh.db.base import Database, ExecOptions, Result, RowSink
from routesh.errors import QueryCancelled

T = TypeVar("T")


def run_cancellable(work: Callable[[], T], *, cancel: Callable[[], None],
                    when_cancelled: Callable[[BaseException | None], BaseException],
                    grace: float | None = None, name: str = "routesh-work") -> T:
    """`work()`, on a worker thread. The first Ctrl-C calls `cancel` (later ones change nothing); the
    work is then given `grace` seconds to wind down (None: as long as it takes), and what is raised is
    `when_cancelled(the work's own error, or None)`."""
    outcome: dict[str, object] = {}
    finished = threading.Event()

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as err:  # handed back to the waiting thread
            outcome["error"] = err
        finally:
            finished.set()

    # The wait is on an Event, not Thread.join: on Python 3.11 a Ctrl-C that interrupts join() can mark a
    # thread that is still running as stopped (the bpo-45274 fix), and the caller would go on while the work
    # still writes, or leave the interpreter while a model's threads still run.
    cancelled_at: float | None = None
    with interrupts_noted() as interrupts:
        threading.Thread(target=target, name=name, daemon=True).start()
        while not finished.is_set():
            if cancelled_at is not None and grace is not None and time.monotonic() - cancelled_at >= grace:
                break
            try:
                finished.wait(0.1)
            except KeyboardInterrupt:  # off the main thread, or a handler of the caller's own
                interrupts.append(signal.SIGINT)
            if interrupts and cancelled_at is None:
                cancel()
                cancelled_at = time.monotonic()
    if cancelled_at is not None:
        raise when_cancelled(outcome.get("error"))  # type: ignore[arg-type]
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


def execute_cancellable(db: Database, sql: str, *, options: ExecOptions, guard: bool = True,
                        sink: RowSink | None = None) -> Result:
    """db.execute; Ctrl-C cancels the statement, and the statement's own QueryCancelled comes back."""
    return run_cancellable(lambda: db.execute(sql, options=options, guard=guard, sink=sink), cancel=db.cancel,
                           when_cancelled=lambda err: err or QueryCancelled("query cancelled"),
                           name="routesh-statement")
