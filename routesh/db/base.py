"""The Database protocol and what executing a statement returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

from routesh.db.schema import Schema

DEFAULT_ROW_LIMIT = 1000
DEFAULT_TIMEOUT_S = 30.0
NO_ROW_LIMIT = 0  # row_limit 0: every row (meant for a RowSink; without one, every row is held in memory)


@dataclass
class Result:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    elapsed: float  # seconds, statement start to last row fetched
    truncated: bool = False  # more rows existed than row_limit allowed through
    status: str | None = None  # e.g. "UPDATE 3" for a statement that returns no rows
    streamed: int | None = None  # rows handed to a RowSink instead of kept in `rows`

    @property
    def row_count(self) -> int:
        return len(self.rows) if self.streamed is None else self.streamed


@dataclass(frozen=True)
class ExecOptions:
    row_limit: int = DEFAULT_ROW_LIMIT  # NO_ROW_LIMIT (0): every row
    timeout: float = DEFAULT_TIMEOUT_S  # seconds; 0 disables. With a RowSink it bounds each batch's fetch,
    # as PostgreSQL's statement_timeout bounds each FETCH: a long export is not a slow statement

    def for_screen(self) -> ExecOptions:
        """The screen is never unlimited: row_limit 0 shows DEFAULT_ROW_LIMIT rows there."""
        return self if self.row_limit else replace(self, row_limit=DEFAULT_ROW_LIMIT)


class RowSink(Protocol):
    """Where a streamed result goes as it is fetched: `begin` once with the column names (only for a
    statement that returns rows), then `write` for each batch. Memory stays one batch deep."""

    def begin(self, columns: list[str]) -> None: ...

    def write(self, rows: Sequence[tuple[Any, ...]]) -> None: ...


@runtime_checkable
class TextSink(RowSink, Protocol):
    """A RowSink of delimited text (csv, tsv), which takes values as the database spells them: from PostgreSQL
    its own text (booleans t/f, json as JSON, arrays as {1,2}), as psql's csv writes them, whatever the path;
    and, for an export without a row limit, whole lines the server formatted itself (COPY)."""

    delimiter: str

    def write_lines(self, text: str, rows: int) -> None:
        """`rows` whole rows, already formatted, after the header that `begin` wrote."""
        ...


@dataclass
class ConnectionInfo:
    dialect: str
    display: str  # the DSN with any password removed
    details: dict[str, Any] = field(default_factory=dict)


class Database(Protocol):
    """One open connection. Read-only unless `set_writes(True)` was called."""

    dialect: str
    info: ConnectionInfo
    writes_allowed: bool

    def introspect(self, *, samples: int = 3) -> Schema: ...

    def execute(self, sql: str, *, options: ExecOptions | None = None, guard: bool = True,
                sink: RowSink | None = None) -> Result:
        """Run one statement. With guard=True the sqlglot layer checks it first (read-only unless
        writes are allowed); guard=False skips only that layer, never the database envelope. With a
        sink the rows go there batch by batch (Result.streamed counts them) instead of into Result.rows."""
        ...

    def cancel(self) -> None:
        """Stop the statement running on another thread (safe to call when nothing runs)."""
        ...

    def set_writes(self, allowed: bool) -> None: ...

    def close(self) -> None: ...
