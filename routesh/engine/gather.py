"""Calls from many threads gathered for one worker thread, which serves them in batches.

A caller's submit() blocks until the worker resolves or fails its Pending, or until the caller's
CancelToken is cancelled: then it raises GenerationCancelled at once, whatever the worker is doing, and
the worker, finding the Pending cancelled, skips it (or discards its result). Nothing here knows what an
item is or how a batch runs; the engine's worker loop does:

    while batch := gather.take_all(block=True):   # [] once the gather is closed
        ...; pending.resolve(result)  or  pending.fail(error)
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Generic, TypeVar, cast

from routesh.errors import GenerationCancelled

if TYPE_CHECKING:
    from routesh.cancel import CancelToken

T = TypeVar("T")
R = TypeVar("R")


class Pending(Generic[T, R]):
    """One submitted call. Its first outcome (result, error or cancellation) wins; later ones are
    ignored, so a worker may resolve a Pending that its caller has already given up on."""

    def __init__(self, item: T) -> None:
        self.item = item
        self._lock = threading.RLock()  # RLock: cancel() may come from a signal handler on the caller's thread
        self._done = threading.Event()
        self._result: R | None = None
        self._error: BaseException | None = None
        self._cancelled = False

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    @property
    def done(self) -> bool:
        """Answered, failed or cancelled: nothing more will reach the caller."""
        return self._done.is_set()

    def resolve(self, result: R) -> None:
        with self._lock:
            if not self._done.is_set():
                self._result = result
                self._done.set()

    def fail(self, error: BaseException) -> None:
        with self._lock:
            if not self._done.is_set():
                self._error = error
                self._done.set()

    def cancel(self) -> None:
        with self._lock:
            if not self._done.is_set():
                self._cancelled = True
                self._done.set()

    def _wait(self) -> R:
        self._done.wait()
        if self._cancelled:
            raise GenerationCancelled("generation cancelled")
        if self._error is not None:
            raise self._error
        return cast(R, self._result)


class Gather(Generic[T, R]):
    """A thread-safe queue of pending calls for one worker thread."""

    def __init__(self) -> None:
        self._lock = threading.RLock()  # RLock: cancel_all() may run in a signal handler during submit()
        self._ready = threading.Condition(self._lock)
        self._queue: list[Pending[T, R]] = []  # submitted, not yet taken by the worker
        self._live: set[Pending[T, R]] = set()  # submitted, their callers still waiting
        self._closed: BaseException | None = None

    def submit(self, item: T, cancel: CancelToken | None = None) -> R:
        """Queue `item` and block until the worker answers it. Raises what the worker failed it with,
        GenerationCancelled when `cancel` is (or already was) cancelled, and the close() error once closed."""
        pending: Pending[T, R] = Pending(item)
        if cancel is not None:
            cancel.on_cancel(pending.cancel)  # at once when already cancelled: then it is never queued
        with self._lock:
            if self._closed is not None:
                raise self._closed
            if not pending.cancelled:
                self._queue.append(pending)
                self._live.add(pending)
                self._ready.notify()
        try:
            return pending._wait()
        except BaseException:
            pending.cancel()  # Ctrl-C while waiting: the worker must not submit it either
            raise
        finally:
            with self._lock:
                self._live.discard(pending)

    def take_all(self, block: bool = True) -> list[Pending[T, R]]:
        """Everything submitted and not cancelled since the last take, oldest first. With `block`, wait
        until there is at least one; [] means the gather is closed (or, without `block`, nothing waits)."""
        with self._lock:
            while True:
                taken = [p for p in self._queue if not p.cancelled]
                if taken or not block or self._closed is not None:
                    self._queue = []
                    return taken
                self._queue = []  # only cancelled ones were left
                self._ready.wait()

    def __len__(self) -> int:
        """How many calls wait to be taken (cancelled ones excepted)."""
        with self._lock:
            return sum(not p.cancelled for p in self._queue)

    def cancel_all(self) -> None:
        """Cancel every call whose caller still waits, queued or already taken."""
        with self._lock:
            live = list(self._live)
        for pending in live:
            pending.cancel()

    @property
    def closed(self) -> bool:
        return self._closed is not None

    def close(self, error: BaseException) -> None:
        """Fail every waiting call with `error`, and every later submit(); take_all() returns [] from now
        on, which tells the worker to stop. Closing again keeps the first error."""
        with self._lock:
            if self._closed is None:
                self._closed = error
            error = self._closed
            live = list(self._live)
            self._queue = []
            self._ready.notify_all()
        for pending in live:
            pending.fail(error)
