"""Run a statement so that Ctrl-C cancels it instead of waiting for it.

A blocked database call does not see Python's SIGINT until it returns, so the statement runs on a
worker thread while the calling thread waits; a KeyboardInterrupt there becomes Database.cancel(),
and the statement's own QueryCancelled comes back.
"""

from __future__ import annotations

import threading

from routesh.db.base import Database, ExecOptions, Result
from routesh.errors import QueryCancelled


def execute_cancellable(db: Database, sql: str, *, options: ExecOptions, guard: bool = True) -> Result:
    outcome: dict[str, object] = {}

    def work() -> None:
        try:
            outcome["result"] = db.execute(sql, options=options, guard=guard)
        except BaseException as err:  # handed back to the waiting thread
            outcome["error"] = err

    worker = threading.Thread(target=work, name="routesh-statement", daemon=True)
    worker.start()
    cancelled = False
    while worker.is_alive():
        try:
            worker.join(0.1)
        except KeyboardInterrupt:  # a second Ctrl-C while cancelling changes nothing
            if not cancelled:
                db.cancel()
                cancelled = True
    if cancelled:
        outcome.setdefault("error", QueryCancelled("query cancelled"))
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["result"]  # type: ignore[return-value]
