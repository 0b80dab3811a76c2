"""The Database protocol and what executing a statement returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from routesh.db.schema import Schema

DEFAULT_ROW_LIMIT = 1000
DEFAULT_TIMEOUT_S = 30.0


@dataclass
class Result:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    elapsed: float  # seconds, statement start to last row fetched
    truncated: bool = False  # more rows existed than row_limit allowed through
    status: str | None = None  # e.g. "UPDATE 3" for a statement that returns no rows

    @property
    def row_count(self) -> int:
        return len(self.rows)


@dataclass(frozen=True)
class ExecOptions:
    row_limit: int = DEFAULT_ROW_LIMIT
    timeout: float = DEFAULT_TIMEOUT_S  # seconds; 0 disables


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

    def execute(self, sql: str, *, options: ExecOptions | None = None, guard: bool = True) -> Result:
        """Run one statement. With guard=True the sqlglot layer checks it first (read-only unless
        writes are allowed); guard=False skips only that layer, never the database envelope."""
        ...

    def cancel(self) -> None:
        """Stop the statement running on another thread (safe to call when nothing runs)."""
        ...

    def set_writes(self, allowed: bool) -> None: ...

    def close(self) -> None: ...
