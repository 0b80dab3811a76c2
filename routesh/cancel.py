"""One question's cancellation token: whoever starts the work (the shell's Ctrl-C, -e's interrupt, a
timeout) cancels the token; the work checks it between steps, and what is running right now (the model,
the database) is stopped through the callbacks registered on it. The work itself never has to raise
from a progress callback to stop."""

from __future__ import annotations

import threading
from collections.abc import Callable

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
