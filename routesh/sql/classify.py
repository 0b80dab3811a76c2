"""Is a typed line a command, SQL, or a question in plain language?

DESIGN.md: "a line is a question unless it parses as SQL". Parsing alone is too generous — "select the
five newest customers" is grammatical SQL to sqlglot — so a query must also name only tables this
database has. Statements that are not queries (INSERT, CREATE, ...) only need to parse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlglot import exp

from routesh.db.schema import Schema
from routesh.sql.parse import statements as parse_statements

# A line starting with one of these is SQL being typed: Enter continues it until it ends with `;`.
# Words that also open ordinary English questions ("show", "explain", "list", "table") are left out.
_SQL_VERBS = frozenset("""select with insert update delete create drop alter pragma values grant revoke truncate
    begin commit rollback vacuum copy replace reindex attach detach""".split())
_EXPLAIN = re.compile(r"\s*explain(\s+query\s+plan|\s+analyze)?(\s+verbose)?\s+", re.IGNORECASE)
_FIRST_WORDS = re.compile(r"\s*\(?\s*([A-Za-z]+)(?:\s+([A-Za-z]+))?")


@dataclass(frozen=True)
class Kind:
    kind: str  # "command" | "sql" | "question"
    note: str = ""  # why SQL-looking text is treated as a question


def starts_like_sql(text: str) -> bool:
    match = _FIRST_WORDS.match(text)
    if not match:
        return False
    first, second = match.group(1).lower(), (match.group(2) or "").lower()
    if first == "explain":  # "explain select ..." is SQL; "explain the sales dip" is not
        return second in _SQL_VERBS or second in ("analyze", "query")
    return first in _SQL_VERBS


def is_command(text: str) -> bool:
    stripped = text.lstrip()
    return stripped.startswith("\\") or (stripped.startswith(".") and stripped[1:2].isalpha())


def ready_to_submit(text: str) -> bool:
    """What Enter does at the prompt: submit a command, a question, or SQL that ends with `;`; a
    blank line ends SQL too. Otherwise Enter starts a new line of the statement being typed."""
    stripped = text.strip()
    if not stripped or is_command(stripped) or not starts_like_sql(stripped):
        return True
    return stripped.endswith(";") or text.endswith("\n")


def classify(text: str, schema: Schema | None, dialect: str) -> Kind:
    stripped = text.strip()
    if is_command(stripped):
        return Kind("command")
    if not starts_like_sql(stripped):
        return Kind("question")
    explained = _EXPLAIN.match(stripped)
    if explained:  # sqlglot reads EXPLAIN as an opaque command: judge the statement it explains
        inner = classify(stripped[explained.end():], schema, dialect)
        return inner if inner.kind == "sql" else Kind("question", inner.note)
    try:
        statements = parse_statements(stripped, dialect)
    except Exception:  # noqa: BLE001 - sqlglot's errors vary by version; any failure means "not SQL"
        return Kind("question", "it does not parse as SQL")
    if not statements or any(isinstance(s, exp.Command) for s in statements):
        return Kind("question", "it does not parse as SQL")
    if schema is not None:
        unknown = _unknown_tables(statements, schema)
        if unknown:
            return Kind("question", f"this database has no table {', '.join(unknown)}")
    return Kind("sql")


def _unknown_tables(statements: list[exp.Expression], schema: Schema) -> list[str]:
    """Tables a *query* reads that are neither in the schema nor defined by its own CTEs."""
    missing: list[str] = []
    for statement in statements:
        if not isinstance(statement, exp.Query):
            continue
        ctes = {cte.alias_or_name.lower() for cte in statement.find_all(exp.CTE)}
        for table in statement.find_all(exp.Table):
            name = table.name
            if not name or name.lower() in ctes or _is_catalog(name, table.db):
                continue
            qualified = f"{table.db}.{name}" if table.db else name
            if schema.table(qualified) is None and schema.table(name) is None and name not in missing:
                missing.append(name)
    return missing


def _is_catalog(name: str, namespace: str) -> bool:
    """sqlite_master, pg_tables, information_schema.columns...: real, but never introspected."""
    return name.lower().startswith(("sqlite_", "pg_")) or namespace.lower() in ("information_schema", "pg_catalog")
