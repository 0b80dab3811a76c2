"""Typed corruptions of a gold query: the mistakes a small model makes, made on purpose.

Every corruption is a small edit of the gold text at sqlglot token positions (never inside a string
literal or a comment), so the rest of the query keeps the gold's own spelling. Whether a corruption
really is wrong is decided later by executing it against the gold result (filter.same_result): an
edit that happens to return the same rows is discarded.

Kinds (ROUTE: wrong column, dropped join or condition, wrong aggregate, wrong comparison, wrong
ORDER/LIMIT; and wrong table, literal, DISTINCT, GROUP BY):
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlglot.tokens import Token, TokenType

from routesh import prompts
from routesh.db.schema import Schema, Table
from routesh.sql.parse import squash, tokenize, tree
from routesh.sql.truncate import scan
from routesh.sql.usage import aliases, schema_tables

KINDS = (
    "wrong_column",  # another column of the same table
    "wrong_column_other_table",  # a column the table lacks, taken from another table (often fails: feedback names its home)
    "wrong_table",  # another table of the schema in FROM/JOIN
    "drop_join_condition",  # JOIN ... ON cond → JOIN without it (a cross join)
    "drop_condition",  # one WHERE/HAVING condition gone (the whole WHERE when it has one)
    "and_or",  # AND ↔ OR between conditions
    "flip_comparison",  # > ↔ <, >= → <, = ↔ !=
    "wrong_aggregate",  # max ↔ min, avg → sum, sum → avg, count(x) ↔ count(DISTINCT x)
    "drop_distinct",
    "drop_group_by",  # GROUP BY (with its HAVING)
    "wrong_literal",  # a number changed, a string replaced by another value of the database
    "order_direction",  # ASC ↔ DESC (DESC added when none is written)
    "wrong_limit",  # LIMIT n → n+1, or no LIMIT
)
__doc__ += "\n".join(f"    {k}" for k in KINDS)


@dataclass(frozen=True)
class Corruption:
    kind: str
    sql: str


_CLAUSES = frozenset({TokenType.SELECT, TokenType.FROM, TokenType.WHERE, TokenType.GROUP_BY, TokenType.HAVING,
                      TokenType.ORDER_BY, TokenType.LIMIT, TokenType.OFFSET, TokenType.ON, TokenType.JOIN,
                      TokenType.UNION, TokenType.INTERSECT, TokenType.EXCEPT})
_JOIN_WORDS = frozenset({TokenType.LEFT, TokenType.RIGHT, TokenType.FULL, TokenType.INNER, TokenType.OUTER,
                         TokenType.CROSS, TokenType.NATURAL, TokenType.JOIN})
_CONDITION_CLAUSES = frozenset({TokenType.WHERE, TokenType.HAVING})
_FLIP = {TokenType.GT: "<", TokenType.LT: ">", TokenType.GTE: "<", TokenType.LTE: ">", TokenType.EQ: "!=",
         TokenType.NEQ: "="}
_AGG_SWAP = {"max": "min", "min": "max", "avg": "sum", "sum": "avg"}


class _Query:
    """The gold query's tokens with their context, and its tables."""

    def __init__(self, sql: str, dialect: str, schema: Schema):
        self.sql, self.dialect, self.schema = sql, dialect, schema
        self.toks = scan(tokenize(sql, dialect, partial=False), _CLAUSES)
        parsed = tree(sql, dialect)
        # lower alias or table name → schema table; the tables the query reads, first use first
        self.aliases: dict[str, Table] = aliases(parsed, schema) if parsed is not None else {}
        self.tables: list[Table] = schema_tables(parsed, schema) if parsed is not None else []

    def edit(self, start: int, end: int, text: str) -> str:
        """The query with sql[start:end] replaced; whitespace is tidied where text was removed."""
        before, after = self.sql[:start], self.sql[end:]
        if not text:
            before = before.rstrip()
            after = after.lstrip()
            if before and after and not after.startswith((")", ",")) and not before.endswith("("):
                return f"{before} {after}"
            return before + after
        return before + text + after

    def boundary(self, i: int) -> int:
        """Where the clause or condition that token i opens ends: the start of the next token at the
        same depth that opens another clause/condition, a closing parenthesis of the level, or the end."""
        depth = self.toks[i].depth
        for t in self.toks[i + 1:]:
            if t.depth < depth:
                return t.token.start
            if t.depth == depth and (t.token.token_type in _CLAUSES or t.token.token_type in _JOIN_WORDS
                                     or (t.token.token_type in (TokenType.AND, TokenType.OR)
                                         and not t.in_between and not t.in_case)):
                return t.token.start
        return len(self.sql)

    def clause_end(self, i: int) -> int:
        """Where the clause that token i opens ends (through its ANDs and ORs): the start of the next
        clause or join at the same depth, a closing parenthesis of the level, or the end."""
        depth = self.toks[i].depth
        for t in self.toks[i + 1:]:
            if t.depth < depth:
                return t.token.start
            if t.depth == depth and (t.token.token_type in _CLAUSES or t.token.token_type in _JOIN_WORDS):
                return t.token.start
        return len(self.sql)

    def column_sites(self) -> list[tuple[int, Table]]:
        """Tokens naming a column, with the table it belongs to."""
        sites = []
        toks = self.toks
        for i, t in enumerate(toks):
            tok = t.token
            if tok.token_type not in (TokenType.VAR, TokenType.IDENTIFIER):
                continue
            nxt = toks[i + 1].token.token_type if i + 1 < len(toks) else None
            prev = toks[i - 1].token.token_type if i > 0 else None
            if nxt in (TokenType.L_PAREN, TokenType.DOT) or prev in (TokenType.ALIAS, TokenType.FROM, TokenType.JOIN):
                continue
            if prev == TokenType.DOT and i >= 2:
                table = self.aliases.get(toks[i - 2].token.text.lower())
                if table is not None and table.column(tok.text) is not None:
                    sites.append((i, table))
                continue
            if tok.token_type == TokenType.IDENTIFIER and tok.text not in {c.name for tb in self.tables for c in tb.columns}:
                continue  # "Bob": a string to SQLite
            homes = [tb for tb in self.tables if tb.column(tok.text) is not None]
            if homes:
                sites.append((i, homes[0]))
        return sites


def _span(tok: Token) -> tuple[int, int]:
    return tok.start, tok.end + 1


def _requote(original: str, name: str, dialect: str) -> str:
    if original.startswith(("`", '"', "[")):
        return '"' + name.replace('"', '""') + '"'
    return prompts.quote(name, dialect)


# ---- the kinds: each lists every edit it could make; the caller's RNG picks one ----------------------


def _wrong_column(q: _Query, rng: random.Random) -> list[str]:
    return _replace_columns(q, rng, lambda table, tok: [c.name for c in table.columns
                                                          if c.name.lower() != tok.text.lower()])


def _wrong_column_other_table(q: _Query, rng: random.Random) -> list[str]:
    def names(table: Table, tok: Token) -> list[str]:
        donors = [t for t in q.tables if t is not table] or [t for t in q.schema.tables if t is not table]
        return sorted({c.name for t in donors for c in t.columns if table.column(c.name) is None})

    return _replace_columns(q, rng, names)


def _replace_columns(q: _Query, rng: random.Random, names: Callable[[Table, Token], list[str]]) -> list[str]:
    """One edit per column reference: its name replaced by one of `names(its table, its token)`."""
    out = []
    for i, table in q.column_sites():
        tok = q.toks[i].token
        choices = names(table, tok)
        if choices:
            start, end = _span(tok)
            out.append(q.edit(start, end, _requote(q.sql[start:end], rng.choice(choices), q.dialect)))
    return out


def _wrong_table(q: _Query, rng: random.Random) -> list[str]:
    out = []
    for i, t in enumerate(q.toks):
        prev = q.toks[i - 1].token.token_type if i > 0 else None
        tok = t.token
        in_from = prev in (TokenType.FROM, TokenType.JOIN) or (prev == TokenType.COMMA and t.clause == TokenType.FROM)
        if not in_from or tok.token_type not in (TokenType.VAR, TokenType.IDENTIFIER):
            continue
        if q.schema.table(tok.text) is None:
            continue
        others = [tb.name for tb in q.schema.tables if tb.name.lower() != tok.text.lower()]
        if others:
            start, end = _span(tok)
            out.append(q.edit(start, end, _requote(q.sql[start:end], rng.choice(others), q.dialect)))
    return out


def _drop_join_condition(q: _Query, rng: random.Random) -> list[str]:
    return [q.edit(t.token.start, q.clause_end(i), "") for i, t in enumerate(q.toks)
            if t.token.token_type == TokenType.ON]


def _condition_connectors(q: _Query) -> list[int]:
    return [i for i, t in enumerate(q.toks) if t.token.token_type in (TokenType.AND, TokenType.OR)
            and t.clause in _CONDITION_CLAUSES and not t.in_between and not t.in_case]


def _drop_condition(q: _Query, rng: random.Random) -> list[str]:
    connectors = _condition_connectors(q)
    out = [q.edit(q.toks[i].token.start, q.boundary(i), "") for i in connectors]  # `AND cond` gone
    for i, t in enumerate(q.toks[:-1]):
        if t.token.token_type not in _CONDITION_CLAUSES:
            continue
        end = q.clause_end(i)
        inner = [j for j in connectors if t.token.start < q.toks[j].token.start < end and q.toks[j].depth == t.depth]
        if inner:  # the first condition and its connector gone
            out.append(q.edit(q.toks[i + 1].token.start, q.toks[inner[0] + 1].token.start, ""))
        elif t.token.token_type == TokenType.WHERE:  # the only condition: no WHERE at all
            out.append(q.edit(t.token.start, end, ""))
    return out


def _and_or(q: _Query, rng: random.Random) -> list[str]:
    out = []
    for i in _condition_connectors(q):
        tok = q.toks[i].token
        word = "OR" if tok.token_type == TokenType.AND else "AND"
        out.append(q.edit(*_span(tok), word if tok.text.isupper() else word.lower()))
    return out


def _flip_comparison(q: _Query, rng: random.Random) -> list[str]:
    return [q.edit(*_span(t.token), _FLIP[t.token.token_type]) for t in q.toks
            if t.token.token_type in _FLIP and t.clause in _CONDITION_CLAUSES]


def _wrong_aggregate(q: _Query, rng: random.Random) -> list[str]:
    out = []
    toks = q.toks
    for i, t in enumerate(toks[:-2]):
        name = t.token.text.lower()
        if t.token.token_type != TokenType.VAR or toks[i + 1].token.token_type != TokenType.L_PAREN:
            continue
        if name in _AGG_SWAP:
            swap = _AGG_SWAP[name]
            out.append(q.edit(*_span(t.token), swap.upper() if t.token.text.isupper() else swap))
        elif name == "count":
            inside = toks[i + 2].token
            if inside.token_type == TokenType.DISTINCT:
                out.append(q.edit(inside.start, toks[i + 3].token.start, ""))
            elif inside.token_type != TokenType.STAR:
                out.append(q.edit(inside.start, inside.start, "DISTINCT "))
    return out


def _drop_distinct(q: _Query, rng: random.Random) -> list[str]:
    return [q.edit(t.token.start, q.toks[i + 1].token.start, "") for i, t in enumerate(q.toks[:-1])
            if t.token.token_type == TokenType.DISTINCT]


def _drop_group_by(q: _Query, rng: random.Random) -> list[str]:
    out = []
    for i, t in enumerate(q.toks):
        if t.token.token_type != TokenType.GROUP_BY:
            continue
        end = q.clause_end(i)
        j = next((k for k, u in enumerate(q.toks) if u.token.start == end), None)
        if j is not None and q.toks[j].token.token_type == TokenType.HAVING and q.toks[j].depth == t.depth:
            end = q.clause_end(j)  # HAVING needs GROUP BY: both go
        out.append(q.edit(t.token.start, end, ""))
    return out


def _string_values(tables: Sequence[Table]) -> list[str]:
    values = {v for t in tables for c in t.columns for v in c.samples if isinstance(v, str)}
    return sorted(v for v in values if "\n" not in v and len(v) <= 40)


_COMPARISONS = frozenset({TokenType.EQ, TokenType.NEQ, TokenType.GT, TokenType.GTE, TokenType.LT, TokenType.LTE,
                          TokenType.LIKE})


def _wrong_literal(q: _Query, rng: random.Random) -> list[str]:
    out = []
    every = None
    known_columns = {c.name for tb in q.tables for c in tb.columns}
    sites = dict(q.column_sites())
    for n, t in enumerate(q.toks):
        tok = t.token
        if t.clause not in _CONDITION_CLAUSES:
            continue
        if tok.token_type == TokenType.NUMBER:
            text = tok.text
            try:
                number = int(text)
                new = str(rng.choice([number + 1, number - 1, number * 10 if number else 5]))
            except ValueError:
                try:
                    new = repr(float(text) + 1.5)
                except ValueError:
                    continue
            out.append(q.edit(*_span(tok), new))
        elif tok.token_type == TokenType.STRING or (tok.token_type == TokenType.IDENTIFIER
                                                    and tok.text not in known_columns):
            choices: list[str] = []
            # `column = 'value'`: another value of that column first
            if n >= 2 and q.toks[n - 1].token.token_type in _COMPARISONS and (n - 2) in sites:
                column = sites[n - 2].column(q.toks[n - 2].token.text)
                if column is not None:
                    choices = sorted({v for v in column.samples if isinstance(v, str) and v != tok.text
                                      and "\n" not in v and len(v) <= 40})
            if not choices:
                if every is None:
                    every = _string_values(q.tables or list(q.schema.tables))
                choices = [s for s in every if s != tok.text]
            if not choices:
                continue
            start, end = _span(tok)
            mark = q.sql[start]
            value = rng.choice(choices)
            quoted = (mark + value.replace(mark, mark * 2) + mark) if mark in "'\"" else "'" + value.replace("'", "''") + "'"
            out.append(q.edit(start, end, quoted))
    return out


def _order_direction(q: _Query, rng: random.Random) -> list[str]:
    out = []
    for i, t in enumerate(q.toks):
        if t.token.token_type != TokenType.ORDER_BY:
            continue
        end = q.clause_end(i)
        directions = [u for u in q.toks[i + 1:] if u.token.start < end and u.depth == t.depth
                      and u.token.token_type in (TokenType.ASC, TokenType.DESC)]
        if directions:
            for u in directions:
                word = "ASC" if u.token.token_type == TokenType.DESC else "DESC"
                out.append(q.edit(*_span(u.token), word if u.token.text.isupper() else word.lower()))
        else:
            cut = len(q.sql[:end].rstrip())
            out.append(q.sql[:cut] + " DESC" + q.sql[cut:])
    return out


def _wrong_limit(q: _Query, rng: random.Random) -> list[str]:
    out = []
    for i, t in enumerate(q.toks[:-1]):
        nxt = q.toks[i + 1].token
        if t.token.token_type == TokenType.LIMIT and nxt.token_type == TokenType.NUMBER and nxt.text.isdigit():
            out.append(q.edit(*_span(nxt), str(int(nxt.text) + 1)))
            out.append(q.edit(t.token.start, q.clause_end(i), ""))
    return out


_MAKERS: dict[str, Callable[[_Query, random.Random], list[str]]] = {
    "wrong_column": _wrong_column,
    "wrong_column_other_table": _wrong_column_other_table,
    "wrong_table": _wrong_table,
    "drop_join_condition": _drop_join_condition,
    "drop_condition": _drop_condition,
    "and_or": _and_or,
    "flip_comparison": _flip_comparison,
    "wrong_aggregate": _wrong_aggregate,
    "drop_distinct": _drop_distinct,
    "drop_group_by": _drop_group_by,
    "wrong_literal": _wrong_literal,
    "order_direction": _order_direction,
    "wrong_limit": _wrong_limit,
}
assert tuple(_MAKERS) == KINDS


@dataclass
class Corrupter:
    """Corruptions of one gold query, kind by kind, each edit site chosen by the given RNG."""

    sql: str
    schema: Schema
    dialect: str = "sqlite"
    _query: _Query | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._query = _Query(self.sql, self.dialect, self.schema)

    def candidates(self, kind: str, rng: random.Random) -> list[str]:
        """Every distinct edit of this kind (differing from the gold text), in a seeded order."""
        assert self._query is not None
        seen, out = {squash(self.sql)}, []
        for sql in _MAKERS[kind](self._query, rng):
            key = squash(sql)
            if key not in seen and sql.strip():
                seen.add(key)
                out.append(sql)
        rng.shuffle(out)
        return out

    def one(self, kind: str, rng: random.Random) -> Corruption | None:
        found = self.candidates(kind, rng)
        return Corruption(kind, found[0]) if found else None


def corruptions(sql: str, schema: Schema, rng: random.Random, kinds: Sequence[str] = KINDS,
                dialect: str = "sqlite") -> list[Corruption]:
    """One corruption per applicable kind (the site chosen by `rng`), in the order of `kinds`."""
    corrupter = Corrupter(sql, schema, dialect)
    return [c for c in (corrupter.one(k, rng) for k in kinds) if c is not None]
