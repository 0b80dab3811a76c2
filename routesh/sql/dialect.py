"""SQL rendered by sqlglot for a dialect: the layout the shell pre-fills for editing."""

from __future__ import annotations

import sqlglot

from routesh.sql.quiet import quiet_sqlglot


def pretty_sql(sql: str, dialect: str) -> str:
    """sqlglot's layout of the SQL, in the same dialect; the text as it came when sqlglot cannot."""
    with quiet_sqlglot():
        try:
            statements = sqlglot.transpile(sql, read=dialect, write=dialect, pretty=True)
        except Exception:  # noqa: BLE001 - any failure means: show the text as written
            return sql.strip()
    return statements[0] if len(statements) == 1 else sql.strip()
