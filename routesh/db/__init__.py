"""The database layer: connect(dsn) gives a Database (SQLite or PostgreSQL), read-only by default."""

from __future__ import annotations

from routesh.db.base import DEFAULT_ROW_LIMIT, DEFAULT_TIMEOUT_S, ConnectionInfo, Database, ExecOptions, Result
from routesh.db.dsn import Target, parse_dsn, redact
from routesh.db.schema import Column, ForeignKey, Schema, Table

__all__ = [
    "DEFAULT_ROW_LIMIT", "DEFAULT_TIMEOUT_S", "Column", "ConnectionInfo", "Database", "ExecOptions",
    "ForeignKey", "Result", "Schema", "Table", "Target", "connect", "parse_dsn", "redact",
]


def connect(dsn: str | None) -> Database:
    """Open the database a DSN names, read-only. Raises UsageError or ConnectError with one clear line."""
    target = parse_dsn(dsn)
    if target.dialect == "sqlite":
        from routesh.db.sqlite import SqliteDatabase

        return SqliteDatabase.open(target.location)
    from routesh.db.postgres import PostgresDatabase  # psycopg loads only when needed

    return PostgresDatabase.connect(target.location)
