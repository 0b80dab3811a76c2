"""Mistakes in SQL that runs: a small model's slips the database accepts but no question means.

- A join on a column equal to itself (`JOIN p ON a.aid = a.aid`) is a cross join: one side gets the
  other table (`p.aid`), when the joined table has that column (or, for `JOIN p ON p.aid = p.aid`, when
  exactly one other table of the query has it).
- PostgreSQL truncates the quotient of two integers (`COUNT(a) / COUNT(b)` is 0 for a ratio below 1):
  the dividend is cast and a zero divisor becomes NULL (`CAST(a AS DOUBLE PRECISION) / NULLIF(b, 0)`), as
  a ratio is written by hand. SQLite truncates too, but Spider's gold never divides (nothing to go by).

The pipeline's repair stage applies these to every candidate and takes the fixed SQL if it executes."""

from __future__ import annotations

import re

from sqlglot import exp
from sqlglot.optimizer.scope import Scope, traverse_scope

from routesh.db.schema import Schema
from routesh.sql.parse import Sql, is_real_table, query_of
from routesh.sql.quiet import quiet_sqlglot
from routesh.sql.repair import Rename, Repaired, owners_of, scope_tables, written_table

_INTEGER = re.compile(r"^(small|big)?int(eger)?[248]?$|^(small|big)?serial[248]?$", re.IGNORECASE)


def fix_mistakes(sql: str | Sql, dialect: str, schema: Schema) -> Repaired | None:
    """The SQL with the mistakes above fixed; None when it does not parse or has none."""
    tree = query_of(sql, dialect)
    if tree is None:
        return None
    tree = tree.copy()
    fixes: list[Rename] = []
    try:
        with quiet_sqlglot():
            for scope in traverse_scope(tree):
                _self_joins(scope, schema, dialect, fixes)
                if dialect == "postgres":
                    _integer_divisions(scope, schema, dialect, fixes)
            text = tree.sql(dialect=dialect)
    except Exception:  # noqa: BLE001 - sqlglot's scope builder rejects some odd trees: nothing to fix
        return None
    return Repaired(text, tuple(fixes)) if fixes else None


# ---- a join on a column equal to itself ----------------------------------------------------------------

def _self_joins(scope: Scope, schema: Schema, dialect: str, fixes: list[Rename]) -> None:
    select = scope.expression
    if not isinstance(select, exp.Select):
        return
    for join in select.args.get("joins") or []:
        joined = join.this
        if not (isinstance(joined, exp.Table) and is_real_table(joined)):
            continue
        table = schema.table(written_table(joined))
        on = join.args.get("on")
        if table is None or on is None:
            continue
        for eq in on.find_all(exp.EQ, bfs=False):
            left, right = eq.this, eq.expression
            if not (isinstance(left, exp.Column) and isinstance(right, exp.Column)):
                continue
            if left.table.lower() != right.table.lower() or left.name.lower() != right.name.lower():
                continue
            own = joined.alias_or_name
            if left.table.lower() != own.lower():  # `JOIN p ON a.x = a.x`: p's x, if it has one
                other, column = own, table.column(left.name)
            else:  # `JOIN p ON p.x = p.x`: the x of the one other table that has it
                owners = [a for a in owners_of(scope, left.name, schema) if a.lower() != own.lower()]
                found = scope_tables(scope, owners[0], schema) if len(owners) == 1 else None
                other, column = (owners[0], found[0].column(left.name)) if found else (own, None)
            if column is None:
                continue  # nowhere else to take it from, or several places: which is meant is a guess
            before = eq.sql(dialect=dialect)
            right.set("table", exp.to_identifier(other))
            right.set("this", exp.to_identifier(column.name, quoted=right.this.args.get("quoted", False)))
            fixes.append(Rename(before, eq.sql(dialect=dialect)))


# ---- integer division (PostgreSQL) ----------------------------------------------------------------------

def _integer_divisions(scope: Scope, schema: Schema, dialect: str, fixes: list[Rename]) -> None:
    for div in list(scope.expression.find_all(exp.Div, bfs=False)):  # in the order written
        if _scope_of(div) is not scope.expression:
            continue  # a subquery's division: its own scope sees it
        if not (_is_integer(div.this, scope, schema) and _is_integer(div.expression, scope, schema)):
            continue
        before = div.sql(dialect=dialect)
        divisor = div.expression
        div.set("this", exp.cast(div.this.copy(), "double"))
        if not (isinstance(divisor, exp.Literal) and divisor.this not in ("0", "")):
            div.set("expression", exp.Nullif(this=divisor.copy(), expression=exp.Literal.number(0)))
        fixes.append(Rename(before, div.sql(dialect=dialect)))


def _scope_of(node: exp.Expression) -> exp.Expression | None:
    """The query (SELECT or set operation) a node belongs to."""
    return node.find_ancestor(exp.Select, exp.SetOperation)


def _is_integer(node: exp.Expression, scope: Scope, schema: Schema) -> bool:
    """Is this expression's type an integer, as far as it can be told without the database?"""
    if isinstance(node, exp.Paren):
        return _is_integer(node.this, scope, schema)
    if isinstance(node, exp.Count):
        return True
    if isinstance(node, exp.Literal):
        return not node.is_string and node.this.isdigit()
    if isinstance(node, exp.Cast):
        return bool(_INTEGER.match(node.to.sql()))
    if isinstance(node, (exp.Sum, exp.Max, exp.Min, exp.Abs)):
        return _is_integer(node.this, scope, schema)
    if isinstance(node, (exp.Add, exp.Sub, exp.Mul)):
        return _is_integer(node.this, scope, schema) and _is_integer(node.expression, scope, schema)
    if isinstance(node, exp.Case):
        branches = [i.args.get("true") for i in node.args.get("ifs") or []] + [node.args.get("default")]
        return all(b is not None and _is_integer(b, scope, schema) for b in branches)
    if isinstance(node, exp.Column):
        column = _column_type(node, scope, schema)
        return column is not None and bool(_INTEGER.match(column.strip()))
    return False


def _column_type(column: exp.Column, scope: Scope, schema: Schema) -> str | None:
    """The declared type of a column of a real table of this scope; None when it cannot be told."""
    tables = scope_tables(scope, column.table, schema)
    found = [own.type for t in tables or [] if (own := t.column(column.name)) is not None]
    return found[0] if len(found) == 1 else None
