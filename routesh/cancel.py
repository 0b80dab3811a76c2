"""One question's cancellation token: whoever starts the work (the shell's Ctrl-C, -e's interrupt, a
timeout) cancels the token; the work checks it between steps, and what is running right now (the model,
the database) is stopped through the callbacks registered on it. The work itself never has to raise
from a progress callback to stop."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

from routesh.errors import Cancelled


class CancelToken:
    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], object]] = []

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self) -> None:
        """Mark the work cancelled and stop what is running; safe from any thread, and more than once."""
        with self._lock:
            first = not self._event.is_set()
            self._event.set()
            callbacks = list(self._callbacks)
        if first:
            for stop in callbacks:
                stop()

    def on_cancel(self, stop: Callable[[], object]) -> None:
        """Call `stop` when the token is cancelled (at once when it already is)."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(stop)
                return
        stop()

    def check(self) -> None:
        """Raise Cancelled when the token was cancelled: the work's checkpoints call this."""
        if self._event.is_set():
            raise Cancelled("cancelled")


@contextlib.contextmanager
def interrupts_noted() -> Iterator[list[int]]:
    """Inside, Ctrl-C on the main thread is noted in the list yielded instead of raised, for a thread that
    waits on workers and polls. A KeyboardInterrupt raised inside Event.wait can land between
    Condition.wait's release of its lock and its `try`, and the `with` then releases an unlocked lock:
    "RuntimeError: release unlocked lock" instead of a cancel; a second Ctrl-C during the wind-down would
    leave while the workers still run. Only the main thread can set a handler, and only Python's default
    one is replaced (elsewhere the list stays empty and KeyboardInterrupt is raised as usual). Once a
    Ctrl-C was noted, later ones stay ignored: the caller is on its way out."""
    noted: list[int] = []
    on_main = threading.current_thread() is threading.main_thread()
    if not on_main or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield noted
        return
    signal.signal(signal.SIGINT, lambda signum, frame: noted.append(signum))
    try:
        yield noted
    finally:  # after a Ctrl-C the caller is stopping: a second one would cut short its wind-down (joining a
        # model's thread, say) and leave while native threads still run ("terminate called ...")
        signal.signal(signal.SIGINT, signal.SIG_IGN if noted else signal.default_int_handler)


def ignore_further_interrupts() -> None:
    """A command already stopping for a Ctrl-C: a second one must not cut its exit short (a traceback from an
    atexit handler, a half-written line)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
