"""The text behind the psql-style describe commands (`\\dt[+]`, `\\d[+] [NAME]`, `\\conninfo`) and
sqlite's `.schema`, computed from the introspected Schema. Pure functions: they return text (tables
drawn by render.render) and print nothing; an unknown name raises UsageError."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from typing import Any

from routesh.db.base import ConnectionInfo, Result
from routesh.db.schema import Column, ForeignKey, Schema, Table
from routesh.errors import UsageError
from routesh.prompts import quote
from routesh.render import footer, render

EXAMPLE_CHARS = 40  # the Examples cell of \d+ is clipped to this many characters

_TITLES = {"table": "Table", "view": "View", "materialized view": "Materialized view",
           "foreign table": "Foreign table"}
# Defaults SQLite accepts without parentheses; anything else is written DEFAULT (expr).
_LITERAL_DEFAULT = re.compile(
    r"""^(?:[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?0[xX][0-9a-fA-F]+|'(?:[^']|'')*'|[xX]'[0-9a-fA-F]*'
        |null|true|false|current_time|current_date|current_timestamp)$""",
    re.IGNORECASE | re.VERBOSE,
)
_SERIALS = {"integer": "serial", "bigint": "bigserial", "smallint": "smallserial"}
_NEXTVAL = re.compile(r"^nextval\('(?:[^']|'')+'::regclass\)$")


# ---- \dt and \d without a name --------------------------------------------------------------------


def list_tables(schema: Schema, *, plus: bool = False, pattern: str | None = None) -> str:
    """psql's `\\dt[+] [PATTERN]`: a "List of relations" table, then "(N rows)". `pattern` takes the
    wildcards * and ? and matches case-insensitively against the name, with or without its schema."""
    tables = _ordered(schema.tables)
    if pattern is not None and pattern.strip():
        matcher = _wildcard(pattern.strip())
        tables = [t for t in tables if any(matcher.fullmatch(n) for n in _names(t))]
        if not tables:
            return f'No relations match "{pattern.strip()}".\n'
    if not tables:
        return "No relations found.\n"
    pg = schema.dialect == "postgres"
    columns = (["Schema"] if pg else []) + ["Name", "Type", "Rows"] + (["Columns", "Description"] if plus else [])
    rows = []
    for t in tables:
        row: list[Any] = [t.schema or ""] if pg else []
        row += [t.name if pg else t.display_name, t.kind, _row_count(t)]
        if plus:
            row += [len(t.columns), _one_line(t.comment)]
        rows.append(tuple(row))
    return _titled("List of relations", Result(columns, rows, 0.0))


def describe_all(schema: Schema, *, plus: bool = False) -> str:
    """psql's `\\d[+]` with no name: the list of relations."""
    return list_tables(schema, plus=plus)


# ---- \d NAME -------------------------------------------------------------------------------------


def describe_table(schema: Schema, name: str, *, plus: bool = False) -> str:
    """psql's `\\d[+] NAME`: the columns, then the primary key, foreign keys and the foreign keys of
    other tables that point here; with plus also comments, example values and the row count."""
    table = find_table(schema, name)
    dialect = schema.dialect
    title_name = f"{table.schema}.{table.name}" if dialect == "postgres" and table.schema else table.display_name
    title = f'{_TITLES.get(table.kind, table.kind.capitalize())} "{title_name}"'
    columns = ["Column", "Type", "Nullable", "Default"] + (["Comment", "Examples"] if plus else [])
    rows = []
    for col in table.columns:
        row = [col.name, col.type, "" if col.nullable else "not null", col.default or ""]
        if plus:
            row += [_one_line(col.comment), _examples(col)]
        rows.append(tuple(row))
    text = _titled(title, Result(columns, rows, 0.0), with_footer=False)

    sections: list[str] = []
    if table.primary_key:
        sections.append(f"Primary key: ({_names_list(table.primary_key, dialect)})")
    if table.foreign_keys:
        sections.append("Foreign keys:")
        sections += [f"  {_fk_text(schema, fk)}" for fk in table.foreign_keys]
    incoming = [(other, fk) for other in schema.tables for fk in other.foreign_keys
                if schema.table(fk.ref_table) is table]
    if incoming:
        sections.append("Referenced by:")
        sections += [f"  {_TITLES.get(other.kind, other.kind).upper()} {_qualified(dialect, other)} "
                     f"{_fk_text(schema, fk)}" for other, fk in incoming]
    if plus:
        if table.row_count is not None:
            estimate = "" if table.row_count_exact else " (estimate)"
            sections.append(f"Rows: {_row_count(table)}{estimate}")
        if table.comment:
            sections.append(f"Comment: {_one_line(table.comment)}")
    return text + "".join(line + "\n" for line in sections)


def find_table(schema: Schema, name: str) -> Table:
    """The table or view `name` names: bare, "quoted" (exact case) or schema-qualified. Raises
    UsageError, with a suggestion when one name is close."""
    text = name.strip()
    table = _lookup(schema, text)
    if table is None:
        raise UsageError(_unknown(schema, text))
    return table


# ---- .schema -------------------------------------------------------------------------------------


def schema_ddl(schema: Schema, name: str | None = None) -> str:
    """sqlite's `.schema [NAME]`: CREATE TABLE statements rebuilt from the introspected schema
    (identifiers quoted where needed, types, NOT NULL, DEFAULT, keys), views as a comment listing
    their columns (their defining query is not introspected). NAME may hold * and ? wildcards."""
    if name is None or not name.strip():
        tables = list(schema.tables)
    elif "*" in name or "?" in name:
        matcher = _wildcard(name.strip())
        tables = [t for t in schema.tables if any(matcher.fullmatch(n) for n in _names(t))]
        if not tables:
            raise UsageError(f'no table or view matches "{name.strip()}"')
    else:
        tables = [find_table(schema, name)]
    return "\n".join(_ddl(schema, t) for t in _referenced_first(schema, tables))


def _referenced_first(schema: Schema, tables: list[Table]) -> list[Table]:
    """The tables in their given order, except that a table comes after those its foreign keys
    reference (PostgreSQL checks the target exists); tables in a cycle keep their order."""
    pending = list(tables)
    placed: list[Table] = []
    while pending:
        for table in pending:
            needs = {id(t) for fk in table.foreign_keys if (t := schema.table(fk.ref_table)) is not None}
            needs.discard(id(table))
            if not needs & {id(t) for t in pending}:
                break
        else:
            table = pending[0]  # a cycle: no order satisfies it
        pending.remove(table)
        placed.append(table)
    return placed


def _ddl(schema: Schema, table: Table) -> str:
    dialect = schema.dialect
    head = "".join(f"-- {line}\n" for line in (table.comment or "").splitlines() if line.strip())
    target = _qualified(dialect, table)
    if table.kind != "table":
        cols = ", ".join(quote(c.name, dialect) for c in table.columns)
        return f"{head}-- {table.kind} {target} ({cols})\n"
    inline_pk = len(table.primary_key) == 1 and table.column(table.primary_key[0]) is not None
    lines = [_column_ddl(c, dialect, primary=inline_pk and c.name == table.primary_key[0]) for c in table.columns]
    if table.primary_key and not inline_pk:
        lines.append(f"PRIMARY KEY ({_names_list(table.primary_key, dialect)})")
    for fk in table.foreign_keys:
        refs = _names_list(fk.ref_columns, dialect) if all(fk.ref_columns) else ""
        lines.append(f"FOREIGN KEY ({_names_list(fk.columns, dialect)}) REFERENCES "
                     f"{_ref_target(schema, fk.ref_table)}" + (f" ({refs})" if refs else ""))
    body = ",\n".join(f"  {line}" for line in lines)
    return f"{head}CREATE TABLE {target} (\n{body}\n);\n"


def _column_ddl(col: Column, dialect: str, *, primary: bool) -> str:
    parts = [quote(col.name, dialect)]
    ctype, default = col.type, col.default
    serial = _SERIALS.get(ctype.lower()) if dialect == "postgres" and default else None
    if serial and _NEXTVAL.match(default or ""):
        # PostgreSQL's own spelling of serial: the sequence is not introspected, so name the pseudo-type.
        ctype, default = serial, None
    if ctype:
        parts.append(ctype)
    if primary:
        parts.append("PRIMARY KEY")
    elif not col.nullable and not col.primary_key:
        # A key column's NOT NULL is implied (and SQLite reports every key column as such).
        parts.append("NOT NULL")
    if default is not None:
        default = default.strip()
        parts.append("DEFAULT " + (default if _LITERAL_DEFAULT.match(default) else f"({default})"))
    return " ".join(parts)


# ---- \conninfo -----------------------------------------------------------------------------------


def conninfo(info: ConnectionInfo, *, writes_allowed: bool) -> str:
    """psql's `\\conninfo`: one line saying what this session is connected to (never a password)."""
    mode = "read-write" if writes_allowed else "read-only"
    details = info.details
    if info.dialect == "sqlite":
        file = details.get("file") or info.display
        version = details.get("sqlite_version")
        extra = f"SQLite {version}, {mode}" if version else mode
        return f'You are connected to SQLite database "{file}" ({extra}).'
    if info.dialect == "postgres":
        parts = [f'You are connected to database "{details.get("database") or "?"}"']
        if details.get("user"):
            parts.append(f'as user "{details["user"]}"')
        host = str(details.get("host") or "")
        if host.startswith("/"):
            parts.append(f'via socket in "{host}"')
        elif host:
            parts.append(f'on host "{host}"')
        if details.get("port"):
            parts.append(f'at port "{details["port"]}"')
        notes = []
        version = str(details.get("server_version") or "").split()
        if version:  # "15.18 (Debian 15.18-0+deb12u1)" -> "15.18", as psql prints it
            notes.append(f"PostgreSQL {version[0]}")
        if details.get("superuser"):
            notes.append("superuser")
        notes.append(mode)
        return " ".join(parts) + f" ({', '.join(notes)})."
    return f"You are connected to {info.display} ({mode})."


# ---- helpers -------------------------------------------------------------------------------------


def _titled(title: str, result: Result, *, with_footer: bool = True) -> str:
    """A psql-style table: the title centred over it, "(N rows)" under it when asked."""
    table = render(result, "table")
    width = max((len(line) for line in table.splitlines()), default=len(title))
    text = title.center(width).rstrip() + "\n" + table
    if with_footer:
        text += footer(result, row_limit=max(len(result.rows), 1)) + "\n"
    return text


def _ordered(tables: Iterable[Table]) -> list[Table]:
    """Schema by schema (in the introspected order, which follows the search path), names sorted."""
    order: dict[str | None, int] = {}
    for t in tables:
        order.setdefault(t.schema, len(order))
    return sorted(tables, key=lambda t: (order[t.schema], t.name.lower(), t.name))


def _names(table: Table) -> list[str]:
    names = [table.name, table.display_name]
    if table.schema:
        names.append(f"{table.schema}.{table.name}")
    return names


def _wildcard(pattern: str) -> re.Pattern[str]:
    """psql's wildcards: * any run of characters, ? one character; double quotes are dropped."""
    pattern = re.sub(r'"("?)', r"\1", pattern)  # "" inside quotes stands for one "
    regex = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.compile(regex, re.IGNORECASE | re.DOTALL)


def _split_name(text: str) -> list[tuple[str, bool]] | None:
    """`a."B c".d` -> [("a", False), ("B c", True), ("d", False)]; None when the quotes don't balance."""
    parts: list[tuple[str, bool]] = []
    i, n = 0, len(text)
    while True:
        if i < n and text[i] == '"':
            j, chars = i + 1, []
            while True:
                if j >= n:
                    return None
                if text[j] == '"':
                    if j + 1 < n and text[j + 1] == '"':
                        chars.append('"')
                        j += 2
                        continue
                    break
                chars.append(text[j])
                j += 1
            parts.append(("".join(chars), True))
            i = j + 1
        else:
            j = i
            while j < n and text[j] not in '."':
                j += 1
            parts.append((text[i:j].strip(), False))
            i = j
        if i >= n:
            return parts
        if text[i] != ".":
            return None
        i += 1


def _lookup(schema: Schema, text: str) -> Table | None:
    if not text:
        return None
    parts = _split_name(text)
    if parts is None or not any(quoted for _, quoted in parts):
        # Plain text: display name, bare name or schema.name (exact case first).
        found = schema.table(text)
        if found is not None or parts is None:
            return found
    if len(parts) == 1:
        bare, quoted = parts[0]
        if quoted:
            return next((t for t in schema.tables if bare in (t.display_name, t.name)), None)
        return schema.table(bare)
    if len(parts) == 2:
        (ns, ns_quoted), (bare, quoted) = parts
        for t in schema.tables:
            if t.schema is None:
                continue
            if (t.schema == ns or (not ns_quoted and t.schema.lower() == ns.lower())) and \
                    (t.name == bare or (not quoted and t.name.lower() == bare.lower())):
                return t
        # SQLite has no schemas: a name with a dot in it, however it was quoted.
        return schema.table(f"{ns}.{bare}")
    return None


def _unknown(schema: Schema, name: str) -> str:
    message = f'no table or view named "{name}"'
    parts = _split_name(name)
    wanted = ".".join(p for p, _ in parts) if parts else name.strip('"')
    candidates = {t.display_name.lower(): t.display_name for t in schema.tables}
    candidates.update({t.name.lower(): t.display_name for t in schema.tables if t.name.lower() not in candidates})
    close = difflib.get_close_matches(wanted.lower(), list(candidates), n=1, cutoff=0.6)
    if close:
        message += f", did you mean {candidates[close[0]]}?"
    return message


def _row_count(table: Table) -> int | str:
    if table.row_count is None:
        return ""
    return table.row_count if table.row_count_exact else f"~{table.row_count}"


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())


def _examples(col: Column) -> str:
    text = ", ".join(_one_line(_sample(v)) for v in col.samples)
    return text if len(text) <= EXAMPLE_CHARS else text[: EXAMPLE_CHARS - 3] + "..."


def _sample(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return f"{value:.1f}"
    return str(value)


def _names_list(names: Sequence[str], dialect: str) -> str:
    return ", ".join(quote(n, dialect) for n in names)


def _qualified(dialect: str, table: Table) -> str:
    """How to write the table in SQL: quoted where needed, schema-qualified outside the default schema."""
    if table.schema and table.display_name != table.name:
        return f"{quote(table.schema, dialect)}.{quote(table.name, dialect)}"
    return quote(table.name, dialect)


def _ref_target(schema: Schema, ref_table: str) -> str:
    target = schema.table(ref_table)
    if target is not None and target.display_name == ref_table:
        return _qualified(schema.dialect, target)
    # A table outside the introspected schemas; PostgreSQL names it "schema.name".
    if schema.dialect == "postgres" and "." in ref_table:
        ns, bare = ref_table.split(".", 1)
        return f"{quote(ns, schema.dialect)}.{quote(bare, schema.dialect)}"
    return quote(ref_table, schema.dialect)


def _fk_text(schema: Schema, fk: ForeignKey) -> str:
    dialect = schema.dialect
    refs = f"({_names_list(fk.ref_columns, dialect)})" if all(fk.ref_columns) else ""
    return f"({_names_list(fk.columns, dialect)}) REFERENCES {_ref_target(schema, fk.ref_table)}{refs}"
