"""What introspection returns: typed, immutable descriptions of a database's tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # the declared type, as the database reports it ("" when SQLite has none)
    nullable: bool = True
    primary_key: bool = False
    default: str | None = None
    comment: str | None = None
    samples: tuple[Any, ...] = ()  # a few distinct non-NULL values, for prompts


@dataclass(frozen=True)
class ForeignKey:
    columns: tuple[str, ...]
    ref_table: str  # the referenced table's display name (schema-qualified outside the default schema)
    ref_columns: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    schema: str | None = None  # PostgreSQL namespace; None on SQLite
    kind: str = "table"  # "table" | "view" | "materialized view" | "foreign table"
    primary_key: tuple[str, ...] = ()
    foreign_keys: tuple[ForeignKey, ...] = ()
    row_count: int | None = None
    row_count_exact: bool = False  # False when the count is the planner's estimate
    comment: str | None = None
    display_name: str = ""  # how to refer to it: bare in the default schema, else "schema.name"

    def __post_init__(self) -> None:
        if not self.display_name:
            object.__setattr__(self, "display_name", self.name)

    def column(self, name: str) -> Column | None:
        return _find(self.columns, name)


@dataclass(frozen=True)
class Schema:
    dialect: str  # sqlglot dialect name: "sqlite" | "postgres"
    tables: tuple[Table, ...] = field(default_factory=tuple)

    def table(self, name: str) -> Table | None:
        """Look a table up by display name, bare name or schema.name; exact case first."""
        for key in ("display_name", "name"):
            for table in self.tables:
                if getattr(table, key) == name:
                    return table
        for table in self.tables:
            if name.lower() in (table.display_name.lower(), table.name.lower(), f"{table.schema}.{table.name}".lower()):
                return table
        return None


def _find(columns: tuple[Column, ...], name: str) -> Column | None:
    for col in columns:
        if col.name == name:
            return col
    lowered = name.lower()
    return next((c for c in columns if c.name.lower() == lowered), None)


def distinct_samples(rows: list[tuple], n_columns: int, limit: int) -> list[tuple[Any, ...]]:
    """Per column, up to `limit` distinct non-NULL values in first-seen order."""
    out: list[list[Any]] = [[] for _ in range(n_columns)]
    for row in rows:
        for i, value in enumerate(row[:n_columns]):
            if value is None or len(out[i]) >= limit:
                continue
            if isinstance(value, (bytes, bytearray, memoryview)):
                value = f"<{len(bytes(value))} bytes>"
            elif isinstance(value, str) and len(value) > 80:
                value = value[:77] + "..."
            if value not in out[i]:
                out[i].append(value)
    return [tuple(v) for v in out]
