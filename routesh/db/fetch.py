"""A statement's rows, fetched in batches up to the row limit: kept in a list, or handed to a RowSink as
they come so that memory stays one batch deep whatever the row count. Both databases fetch through here."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from routesh.db.base import RowSink

FETCH_SIZE = 5000  # rows per batch when streaming: large enough that per-batch costs vanish, small in memory


@dataclass
class Fetched:
    rows: list[tuple[Any, ...]]  # empty when a sink took them
    count: int
    truncated: bool  # more rows existed than row_limit let through


def fetch(fetchmany: Callable[[int], Sequence[tuple[Any, ...]]], *, row_limit: int, sink: RowSink | None = None,
          before_batch: Callable[[], None] | None = None, batch: int = FETCH_SIZE) -> Fetched:
    """Rows from `fetchmany(n)` (n at most; fewer only at the end) until the end or `row_limit` (0: no limit),
    asking for one row beyond the limit to learn whether more exist. `before_batch` runs before each
    fetch: where a cancel is noticed between batches and a per-batch timeout restarts."""
    if sink is None and row_limit:
        batch = row_limit + 1  # kept rows are bounded anyway: one fetch, as before streaming existed
    kept: list[tuple[Any, ...]] = []
    count = 0
    while True:
        want = min(batch, row_limit - count + 1) if row_limit else batch
        if before_batch is not None:
            before_batch()
        rows = fetchmany(want)
        over = bool(row_limit) and count + len(rows) > row_limit
        if over:
            rows = rows[: row_limit - count]
        if rows:
            if sink is not None:
                sink.write(rows)
            else:
                kept.extend(tuple(row) for row in rows)
        count += len(rows)
        if over or len(rows) < want:
            return Fetched(kept, count, over)
