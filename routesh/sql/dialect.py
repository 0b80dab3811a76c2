"""SQL rendered by sqlglot for a dialect: the layout the shell pre-fills for editing, and the SQLite and
MySQL syntax a model carries into PostgreSQL SQL, rewritten the PostgreSQL way (the repair stage's)."""

from __future__ import annotations

import re
from collections.abc import Callable

import sqlglot
from sqlglot import exp

from routesh.sql.parse import Sql, parse_query, query_of, same_sql, text_of
from routesh.sql.quiet import quiet_sqlglot
from routesh.sql.repair import Rename, Repaired


def pretty_sql(sql: str, dialect: str) -> str:
    """sqlglot's layout of the SQL, in the same dialect; the text as it came when sqlglot cannot."""
    with quiet_sqlglot():
        try:
            statements = sqlglot.transpile(sql, read=dialect, write=dialect, pretty=True)
        except Exception:  # noqa: BLE001 - any failure means: show the text as written
            return sql.strip()
    return statements[0] if len(statements) == 1 else sql.strip()


# ---- other dialects' SQL in PostgreSQL SQL ----------------------------------------------------------

_AS_WRITTEN, _REWRITTEN = "as written", "as sqlglot writes PostgreSQL"
_READ_AS_MYSQL = Rename("read as MySQL", "written as PostgreSQL")


def postgres_rewrites(sql: str | Sql) -> list[Repaired]:
    """What a failing PostgreSQL candidate may have meant, as PostgreSQL, each different from the text and
    from the other: the text read as PostgreSQL, then as MySQL (`CURDATE()`, `DATE_FORMAT`, `DATE_SUB`),
    its SQLite date functions rewritten (sqlite_functions_to_postgres), its GROUP BY completed with the
    bare columns SQLite allows beside aggregates, and written back by sqlglot's PostgreSQL writer (which
    itself turns `INTERVAL 10 YEAR`, `YEAR(d)`, `NOW()`, `LIMIT 5, 10`, `IFNULL`, `GROUP_CONCAT` into
    PostgreSQL). The caller runs them in turn and keeps the first that executes."""
    text = text_of(sql)
    readings = ((query_of(sql, "postgres"), [], (_convert_functions, _complete_group_by)),
                (parse_query(text, "mysql"), [_READ_AS_MYSQL], (_postgres_null_order, _convert_functions,
                                                                 _complete_group_by)))
    out: list[Repaired] = []
    for tree, said, steps in readings:
        rewritten = _rewritten(tree, *steps)
        if rewritten is None:
            continue
        written, renames = rewritten
        if not same_sql(written, text) and all(not same_sql(written, o.sql) for o in out):
            out.append(Repaired(written, tuple(said + renames) or (Rename(_AS_WRITTEN, _REWRITTEN),)))
    return out


def _rewritten(tree: exp.Expression | None, *steps: Callable[[exp.Expression], list[Rename]]
               ) -> tuple[str, list[Rename]] | None:
    """A copy of the tree with each step applied in place, written as PostgreSQL, and what the steps
    changed; None when there is no tree, a step finds no PostgreSQL form, or sqlglot cannot write it."""
    if tree is None:
        return None
    tree = tree.copy()
    try:
        with quiet_sqlglot():
            renames = [rename for step in steps for rename in step(tree)]
            return tree.sql(dialect="postgres"), renames
    except Exception:  # noqa: BLE001 - _Unconvertible, or sqlglot's writer rejecting an odd tree
        return None


def _postgres_null_order(tree: exp.Expression) -> list[Rename]:
    """MySQL sorts NULLs first and sqlglot writes that out; the model meant PostgreSQL's order."""
    for ordered in tree.find_all(exp.Ordered):
        ordered.set("nulls_first", bool(ordered.args.get("desc")))
    return []


_JULIAN_EPOCH = 2440587.5  # the Julian day of 1970-01-01 00:00 UTC
# SQLite's date modifiers: '-7 days', '+1 month', 'start of month'
_SHIFT = re.compile(r"^\s*([+-]?\d+(?:\.\d+)?)\s+(year|month|day|hour|minute|second)s?\s*$", re.IGNORECASE)
_START_OF = re.compile(r"^\s*start of (year|month|day)\s*$", re.IGNORECASE)
_NEW_NAMES = {"strftime": "TO_CHAR()", "julianday": "EXTRACT(EPOCH ...)", "date": "CURRENT_DATE ± INTERVAL",
              "datetime": "CURRENT_TIMESTAMP ± INTERVAL"}


class _Unconvertible(Exception):
    """A SQLite function whose arguments have no faithful PostgreSQL form (an unknown modifier)."""


def sqlite_functions_to_postgres(sql: str | Sql) -> Repaired | None:
    """PostgreSQL SQL with the SQLite date functions it calls rewritten: strftime(fmt, x) → TO_CHAR,
    julianday(x) → EXTRACT(EPOCH ...) in days, date('now', '-7 days') → CURRENT_DATE - INTERVAL, datetime
    → a timestamp. None when the SQL does not parse, calls none of them, or has a modifier without a
    PostgreSQL form. Each rewritten function is a Rename: `strftime() → TO_CHAR()`."""
    rewritten = _rewritten(query_of(sql, "postgres"), _convert_functions)
    return Repaired(rewritten[0], tuple(rewritten[1])) if rewritten and rewritten[1] else None


def _convert_functions(tree: exp.Expression) -> list[Rename]:
    """Rewrite the tree's SQLite date functions in place; what was rewritten, once per function."""
    converted: list[Rename] = []
    for node in list(tree.find_all(exp.Anonymous, exp.Date, exp.Datetime)):
        replacement, name = _convert(node)
        if replacement is not None:
            converted.append(Rename(f"{name}()", _NEW_NAMES[name.lower()]))
            node.replace(replacement)
    return list(dict.fromkeys(converted))


def _complete_group_by(tree: exp.Expression) -> list[Rename]:
    """PostgreSQL refuses a column beside aggregates that the GROUP BY lacks, where SQLite takes any row's
    value (one value when the column depends on the key, `GROUP BY id` with `SELECT name`, as a model
    means it): each such column of the SELECT list and ORDER BY is added to the GROUP BY, in place."""
    added: list[Rename] = []
    for select in list(tree.find_all(exp.Select)):
        group = select.args.get("group")
        if group is None or not group.expressions:
            continue
        keys = list(group.expressions)
        before = group.sql(dialect="postgres")
        covered = {k.sql(dialect="postgres").lower() for k in keys}
        names = {k.name.lower() for k in keys if isinstance(k, exp.Column) and not k.table}
        for key in keys:  # GROUP BY 2 or GROUP BY alias: the SELECT item it names
            item = _item_named(select, key)
            if item is not None:
                covered.add(item.sql(dialect="postgres").lower())
        items = [e for e in select.expressions if e.alias_or_name.lower() not in names]
        order = select.args.get("order")
        for expression in items + (list(order.expressions) if order else []):
            for column in list(expression.find_all(exp.Column)):
                if _grouped(column, expression, select, covered, names):
                    continue
                covered.add(column.sql(dialect="postgres").lower())
                group.append("expressions", column.copy())
        if len(group.expressions) > len(keys):
            added.append(Rename(before, group.sql(dialect="postgres")))
    return added


def _item_named(select: exp.Select, key: exp.Expression) -> exp.Expression | None:
    items = select.expressions
    if isinstance(key, exp.Literal) and key.this.isdigit() and 0 < int(key.this) <= len(items):
        return items[int(key.this) - 1].unalias()
    if isinstance(key, exp.Column) and not key.table:
        return next((e.unalias() for e in items if isinstance(e, exp.Alias) and e.alias.lower() == key.name.lower()),
                    None)
    return None


def _grouped(column: exp.Column, expression: exp.Expression, select: exp.Select, covered: set[str],
             names: set[str]) -> bool:
    """Is this column fine beside aggregates: inside an aggregate or window, in a subquery, a SELECT
    alias, or (it or an expression around it) a GROUP BY key?"""
    if column.find_ancestor(exp.Select) is not select or column.find_ancestor(exp.AggFunc, exp.Window):
        return True
    if not column.table and column.name.lower() in names:
        return True
    node: exp.Expression | None = column
    while node is not None:
        if node.sql(dialect="postgres").lower() in covered:
            return True
        if node is expression:
            break
        node = node.parent
    return any(isinstance(e, exp.Alias) and e.alias.lower() == column.name.lower() and not column.table
               for e in select.expressions)


def _convert(node: exp.Expression) -> tuple[exp.Expression | None, str]:
    if isinstance(node, exp.Anonymous):
        name = node.name.lower()
        args = list(node.expressions)
        if name == "strftime" and len(args) >= 2 and isinstance(args[0], exp.Literal) and args[0].is_string:
            return _strftime(args[0].this, _moment(args[1], args[2:])), node.name
        if name == "julianday" and args:
            return _julianday(_moment(args[0], args[1:])), node.name
        return None, ""
    modifiers = [node.args[key] for key in ("zone", "expression") if node.args.get(key)] + list(node.expressions)
    if isinstance(node, exp.Datetime):
        return _moment(node.this, modifiers), "datetime"
    if _is_now(node.this) or modifiers:  # date(x) alone is PostgreSQL too
        return exp.cast(_moment(node.this, modifiers), "date"), "date"
    return None, ""


def _is_now(node: exp.Expression) -> bool:
    return isinstance(node, exp.Literal) and node.is_string and node.this.strip().lower() == "now"


def _moment(value: exp.Expression, modifiers: list[exp.Expression]) -> exp.Expression:
    """SQLite's time value with its modifiers, as a PostgreSQL timestamp."""
    moment: exp.Expression = exp.CurrentTimestamp() if _is_now(value) else exp.cast(value.copy(), "timestamp")
    for modifier in modifiers:
        if not (isinstance(modifier, exp.Literal) and modifier.is_string):
            raise _Unconvertible(modifier.sql())
        if shift := _SHIFT.match(modifier.this):
            amount, unit = shift.groups()
            interval = exp.Interval(this=exp.Literal.string(amount.lstrip("+-")), unit=exp.var(unit.upper()))
            moment = (exp.Sub if amount.startswith("-") else exp.Add)(this=moment, expression=interval)
        elif start := _START_OF.match(modifier.this):
            moment = exp.TimestampTrunc(this=moment, unit=exp.Literal.string(start.group(1).lower()))
        else:
            raise _Unconvertible(modifier.this)
    return moment


def _strftime(fmt: str, moment: exp.Expression) -> exp.Expression:
    """strftime's text: TO_CHAR for dates and times; %w (day of week from 0, Sunday) and %s (Unix time)
    have no TO_CHAR pattern and come from EXTRACT, as text like SQLite's."""
    special = {"%w": "DOW", "%s": "EPOCH"}
    if fmt in special:
        part = exp.Extract(this=exp.var(special[fmt]), expression=moment)
        return exp.cast(exp.cast(part, "bigint"), "text")
    return exp.TimeToStr(this=moment, format=exp.Literal.string(fmt))


def _julianday(moment: exp.Expression) -> exp.Expression:
    epoch = exp.Extract(this=exp.var("EPOCH"), expression=moment)
    days = exp.Div(this=exp.Paren(this=epoch), expression=exp.Literal.number("86400.0"))
    return exp.Paren(this=exp.Add(this=days, expression=exp.Literal.number(_JULIAN_EPOCH)))
