"""routesh/engine/gather.py: calls from many threads, one worker, per-call cancellation, close."""

from __future__ import annotations

import threading
import time

import pytest

from routesh.cancel import CancelToken
from routesh.engine.gather import Gather, Pending
from routesh.errors import GenerationCancelled, ModelError
from tests.helpers import InThread, wait_until


def test_the_worker_takes_every_waiting_call_at_once_and_each_caller_gets_its_own_result() -> None:
    gather: Gather[int, str] = Gather()
    callers = {n: InThread(gather.submit, n) for n in range(5)}
    wait_until(lambda: len(gather) == 5)
    batch = gather.take_all(block=True)
    assert sorted(p.item for p in batch) == [0, 1, 2, 3, 4]
    assert gather.take_all(block=False) == []  # taken means gone from the queue
    assert not any(c.finished(0.05) for c in callers.values())  # nobody is answered before resolve()
    for pending in batch:
        pending.resolve(f"done {pending.item}")
    assert {n: c.result() for n, c in callers.items()} == {n: f"done {n}" for n in range(5)}


def test_take_all_blocks_until_a_call_arrives() -> None:
    gather: Gather[str, str] = Gather()
    worker = InThread(gather.take_all, block=True)
    assert not worker.finished(0.1)
    caller = InThread(gather.submit, "late")
    assert [p.item for p in worker.result()] == ["late"]
    worker.value[0].resolve("ok")
    assert caller.result() == "ok"


def test_a_failed_call_raises_its_error_in_its_caller_only() -> None:
    gather: Gather[str, str] = Gather()
    bad, good = InThread(gather.submit, "bad"), InThread(gather.submit, "good")
    wait_until(lambda: len(gather) == 2)
    for pending in gather.take_all():
        if pending.item == "bad":
            pending.fail(ModelError("it broke"))
        else:
            pending.resolve("fine")
    with pytest.raises(ModelError, match="it broke"):
        bad.result()
    assert good.result() == "fine"


def test_a_cancelled_waiting_call_returns_at_once_and_is_never_taken() -> None:
    gather: Gather[str, str] = Gather()
    token = CancelToken()
    cancelled, other = InThread(gather.submit, "mine", token), InThread(gather.submit, "theirs")
    wait_until(lambda: len(gather) == 2)
    token.cancel()
    with pytest.raises(GenerationCancelled):
        cancelled.result(1)  # no worker has done anything yet
    assert len(gather) == 1
    [pending] = gather.take_all()
    assert pending.item == "theirs"
    pending.resolve("ok")
    assert other.result() == "ok"


def test_a_call_cancelled_while_its_batch_runs_returns_at_once_and_its_result_is_dropped() -> None:
    gather: Gather[str, str] = Gather()
    token = CancelToken()
    caller = InThread(gather.submit, "q", token)
    [pending] = gather.take_all()
    token.cancel()
    with pytest.raises(GenerationCancelled):
        caller.result(1)
    assert pending.cancelled
    pending.resolve("too late")  # the worker finishing its batch: ignored, no error


def test_an_already_cancelled_token_is_never_queued() -> None:
    gather: Gather[str, str] = Gather()
    token = CancelToken()
    token.cancel()
    with pytest.raises(GenerationCancelled):
        gather.submit("q", token)
    assert len(gather) == 0 and gather.take_all(block=False) == []


def running_and_queued(gather: Gather[str, str]) -> tuple[InThread, Pending[str, str], InThread]:
    """A call the worker has taken (its caller and its Pending) and one still queued."""
    running = InThread(gather.submit, "running")
    [taken] = gather.take_all()
    queued = InThread(gather.submit, "queued")
    wait_until(lambda: len(gather) == 1)
    return running, taken, queued


def test_cancel_all_stops_queued_and_running_calls_but_not_later_ones() -> None:
    gather: Gather[str, str] = Gather()
    running, taken, queued = running_and_queued(gather)
    gather.cancel_all()
    assert taken.cancelled
    for caller in (running, queued):
        with pytest.raises(GenerationCancelled):
            caller.result(1)
    assert gather.take_all(block=False) == []
    later = InThread(gather.submit, "later")
    [pending] = gather.take_all()
    pending.resolve("ok")
    assert later.result() == "ok"


def test_close_fails_waiting_callers_wakes_the_worker_and_refuses_new_calls() -> None:
    gather: Gather[str, str] = Gather()
    running, _, queued = running_and_queued(gather)
    gather.close(ModelError("the engine is closed"))
    for caller in (running, queued):
        with pytest.raises(ModelError, match="closed"):
            caller.result(1)
    assert gather.closed
    assert gather.take_all(block=True) == []  # does not block: [] tells the worker to stop
    with pytest.raises(ModelError, match="closed"):
        gather.submit("new")
    gather.close(ModelError("again"))  # closing twice keeps the first error
    with pytest.raises(ModelError, match="the engine is closed"):
        gather.submit("new")


def test_close_wakes_a_worker_blocked_in_take_all() -> None:
    gather: Gather[str, str] = Gather()
    worker = InThread(gather.take_all, block=True)
    time.sleep(0.05)
    gather.close(ModelError("closed"))
    assert worker.result(1) == []


def test_many_threads_against_a_real_worker() -> None:
    """Every caller gets exactly its own answer, whatever batches the worker happens to form."""
    gather: Gather[int, int] = Gather()
    batches: list[int] = []

    def work() -> None:
        while batch := gather.take_all(block=True):
            batches.append(len(batch))
            for pending in batch:
                pending.resolve(pending.item * pending.item)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    callers = [InThread(lambda n=n: [gather.submit(n * 10 + k) for k in range(10)]) for n in range(16)]
    assert [c.result(10) for c in callers] == [[(n * 10 + k) ** 2 for k in range(10)] for n in range(16)]
    assert sum(batches) == 160
    gather.close(ModelError("closed"))
    worker.join(2)
    assert not worker.is_alive()
