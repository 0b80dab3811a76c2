"""Tab completion for the shell's prompt: SQL keywords, functions, tables, columns and shell commands.

Why a hand-written completer rather than a full SQL parse: the buffer is almost always an unfinished
statement (that is when completion matters), and questions in plain language are typed at the same
prompt. So this is pgcli-lite: a forgiving tokenizer (routesh.sql.parse.loose_tokens), the last keyword
before the cursor decides what is offered (tables after FROM, columns after SELECT, a table's columns
after `alias.`, resolved by routesh.sql.usage.typed_references), and ranking is prefix matches before
substring matches. Nothing is offered for an empty word while typing, nor any substring-only match, so
ordinary English does not pop menus unless a word starts like a keyword or
a schema name (an explicit Tab offers everything).

The schema arrives late (introspection can be slow) and changes after DDL, so the names live in one
immutable snapshot that `set_schema` replaces with a single attribute assignment; completion reads
that attribute once per call and never sees a half-built list.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from routesh.db.schema import Schema, Table
from routesh.prompts import quote
from routesh.sql.parse import LooseToken, loose_tokens
from routesh.sql.usage import TABLE_WORDS, typed_references

# Common functions by dialect (immutable constants, not state).
_FUNCTIONS = (
    "abs", "avg", "cast", "coalesce", "count", "lower", "max", "min", "nullif", "replace", "round",
    "substr", "sum", "trim", "upper",
)
_DIALECT_FUNCTIONS = {
    "sqlite": ("date", "datetime", "group_concat", "ifnull", "instr", "julianday", "length", "strftime",
               "time", "typeof"),
    "postgres": ("age", "array_agg", "char_length", "date_part", "date_trunc", "length", "now",
                 "position", "string_agg", "substring", "to_char", "to_date"),
}
# Words sqlglot's tokenizer only knows inside multi-word keywords or as plain identifiers.
_EXTRA_KEYWORDS = (
    "ABORT", "ACTION", "ADD", "AFTER", "BEFORE", "CASCADE", "CONFLICT", "CURRENT", "EACH", "EXCLUDE",
    "FOLLOWING", "IF", "IGNORE", "INSTEAD", "LAST", "NO", "NOTHING", "NULLS", "OF", "PRECEDING",
    "RESTRICT", "TIES", "UNBOUNDED", "WITHOUT",
)
# Keywords offered before the rest (which follow alphabetically): WHERE before WHEN.
_COMMON_KEYWORDS = (
    "SELECT", "FROM", "WHERE", "JOIN", "ON", "GROUP", "ORDER", "BY", "HAVING", "LIMIT", "AND", "OR", "NOT",
    "NULL", "AS", "DISTINCT", "LEFT", "INNER", "INSERT", "INTO", "VALUES", "UPDATE", "SET", "DELETE", "WITH",
    "UNION", "CASE", "WHEN", "THEN", "ELSE", "END", "IN", "IS", "LIKE", "BETWEEN", "EXISTS", "ASC", "DESC",
)
# Commands whose first argument is a table name.
_TABLE_COMMANDS = frozenset({"\\d", "\\d+", "\\dt", "\\dt+", "\\dv", "\\dv+", ".schema"})
# Context keywords: what follows them.
_TABLE_CONTEXT = TABLE_WORDS
_COLUMN_CONTEXT = frozenset({
    "select", "where", "on", "by", "having", "and", "or", "not", "set", "distinct", "when", "then",
    "else", "case", "returning", "like", "ilike", "between",
    "(", "=", "<", ">", "<=", ">=", "<>", "!=", "+", "-", "*", "/", "%", "||",
})
# Clause keywords that decide what a `,` continues.
_CLAUSES = frozenset({"select", "from", "where", "by", "having", "on", "set", "values", "returning",
                      "join", "into", "update", "limit", "offset"})
# First words of a statement, to tell `SELECT o.` (SQL) from "all the orders." (a question).
_STATEMENT_STARTS = frozenset({"select", "with", "insert", "update", "delete", "values", "table",
                               "explain", "create", "alter", "drop", "pragma", "replace"})

@dataclass(frozen=True)
class _Name:
    text: str  # what is inserted (quoted when needed)
    keys: tuple[str, ...]  # lower-cased strings matched against the typed word
    meta: str


@dataclass(frozen=True)
class _Names:
    """One immutable snapshot of everything schema-derived."""

    schema: Schema | None
    tables: tuple[_Name, ...]
    columns: tuple[_Name, ...]  # distinct column names over all tables
    table_columns: MappingProxyType  # id(Table) -> tuple[_Name, ...]


_EMPTY = _Names(None, (), (), MappingProxyType({}))


class SqlCompleter(Completer):
    """Completes SQL and shell commands for one dialect; see the module docstring."""

    def __init__(self, dialect: str, commands: Sequence[str] = ()) -> None:
        self.dialect = dialect
        self.commands: tuple[str, ...] = tuple(commands)
        self.keywords: tuple[str, ...] = _keywords(dialect)
        self.functions: tuple[str, ...] = tuple(sorted(set(_FUNCTIONS) | set(_DIALECT_FUNCTIONS.get(dialect, ()))))
        self._keyword_set = frozenset(k.lower() for k in self.keywords)
        self._names: _Names = _EMPTY

    # ---- the schema -------------------------------------------------------------------------------

    @property
    def schema(self) -> Schema | None:
        return self._names.schema

    def set_schema(self, schema: Schema) -> None:
        """Swap in a new schema's names; the one attribute assignment is what makes it atomic."""
        tables, columns, per_table, seen = [], [], {}, set()
        for table in schema.tables:
            tables.append(_Name(self._table_text(table), _table_keys(table), table.kind))
            cols = tuple(_Name(quote(c.name, self.dialect), (c.name.lower(),), f"column · {table.display_name}")
                         for c in table.columns)
            per_table[id(table)] = cols
            for col in cols:
                if col.text not in seen:
                    seen.add(col.text)
                    columns.append(col)
        self._names = _Names(schema, tuple(tables), tuple(columns), MappingProxyType(per_table))

    def _table_text(self, table: Table) -> str:
        if table.schema and table.display_name != table.name:
            return f"{quote(table.schema, self.dialect)}.{quote(table.name, self.dialect)}"
        return quote(table.name, self.dialect)

    # ---- completion -------------------------------------------------------------------------------

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
        names = self._names  # read once: a concurrent set_schema cannot tear this call
        requested = complete_event.completion_requested
        before = document.text_before_cursor
        stripped = before.lstrip()
        if stripped[:1] in ("\\", "."):
            yield from self._complete_command(stripped, names, requested)
            return

        tokens = loose_tokens(before)
        start = max((i + 1 for i, t in enumerate(tokens) if t.kind == "op" and t.text == ";"), default=0)
        tokens = tokens[start:]
        last = tokens[-1] if tokens else None
        at_end = last is not None and last.end == len(before)
        if at_end and (last.kind in ("str", "num") or (last.kind == "comment" and not _closed_block(last.text))):
            return  # inside a string literal, a comment or a number
        word_tok = last if at_end and (last.kind == "id" or (last.kind == "qid" and not last.closed)) else None
        word = word_tok.text if word_tok else ""
        ctx = [t for t in (tokens[:-1] if word_tok else tokens) if t.kind != "comment"]

        # A qualifier chain right before the word: `o.`, `sales.orders.`
        qualifier: list[str] = []
        pos = word_tok.start if word_tok else len(before)
        while (len(ctx) >= 2 and ctx[-1].text == "." and ctx[-1].end == pos and ctx[-2].is_name
               and ctx[-2].end == ctx[-1].start):
            qualifier.insert(0, ctx[-2].name)
            pos = ctx[-2].start
            ctx = ctx[:-2]
        if not word and not requested and not (qualifier and _looks_like_sql(ctx)):
            return

        statement = tokens + _statement_rest(document.text_after_cursor)
        refs, aliases = typed_references(statement, names.schema, self._keyword_set)

        if qualifier:
            groups = self._qualified(qualifier, aliases, names)
        else:
            groups = self._by_context(ctx, refs, names, word)
        yield from _rank(word, groups, requested)

    def _complete_command(self, stripped: str, names: _Names, requested: bool) -> Iterator[Completion]:
        parts = stripped.split(None, 1)
        if len(parts) == 1 and not stripped[-1:].isspace():
            word = parts[0]
            exact = [c for c in self.commands if c.startswith(word)]
            folded = [c for c in self.commands if c not in exact and c.lower().startswith(word.lower())]
            for command in exact + folded:
                yield Completion(command, -len(word), display_meta="command")
            return
        rest = parts[1] if len(parts) > 1 else ""
        if parts[0] not in _TABLE_COMMANDS or re.search(r"\s", rest):
            return
        if not rest and not requested:
            return
        yield from _rank(rest, [names.tables], requested)

    def _by_context(self, ctx: list[LooseToken], refs: list[Table], names: _Names, word: str) -> list[Iterable[_Name]]:
        keywords = self._keyword_names(word)
        prev = ctx[-1].low if ctx else None
        if prev == ",":
            prev = _clause_of_comma(ctx)
        if prev in _TABLE_CONTEXT:
            return [names.tables, keywords]
        if prev in _COLUMN_CONTEXT:
            mentioned = [c for t in refs for c in names.table_columns.get(id(t), ())]
            return [mentioned, names.columns, keywords, names.tables]
        if prev == "as":
            return [keywords]  # a new alias, or a type in CAST(x AS …)
        return [keywords, names.tables, names.columns]

    def _qualified(self, qualifier: list[str], aliases: dict[str, Table], names: _Names) -> list[Iterable[_Name]]:
        schema = names.schema
        if schema is None:
            return []
        dotted = ".".join(qualifier)
        table = aliases.get(dotted.lower()) or schema.table(dotted)
        if table is not None:
            return [names.table_columns.get(id(table), ())]
        if len(qualifier) == 1:  # a PostgreSQL namespace: its tables, by bare name
            ns = qualifier[0].lower()
            return [[_Name(quote(t.name, self.dialect), (t.name.lower(),), t.kind)
                     for t in schema.tables if (t.schema or "").lower() == ns]]
        return []

    def _keyword_names(self, word: str) -> list[_Name]:
        # keep the case the user types in: lower for lower, upper otherwise
        lower = word.islower()
        out = [_Name(f.lower() if lower else f.upper(), (f.lower(),), "function") for f in self.functions]
        out += [_Name(k.lower() if lower else k, (k.lower(),), "keyword") for k in self.keywords]
        return out


# ---- helpers ------------------------------------------------------------------------------------------


def _keywords(dialect: str) -> tuple[str, ...]:
    """Single-word keywords from sqlglot's tokenizer for the dialect (multi-word ones split), the
    common ones first."""
    from sqlglot.dialects import Dialect

    words = set(_EXTRA_KEYWORDS)
    for key in Dialect.get_or_raise(dialect).tokenizer_class.KEYWORDS:
        for part in key.split():
            if re.fullmatch(r"[A-Z_][A-Z0-9_]*", part):
                words.add(part)
    common = [k for k in _COMMON_KEYWORDS if k in words]
    return tuple(common + sorted(words.difference(common)))


def _table_keys(table: Table) -> tuple[str, ...]:
    keys = [table.display_name, table.name] + ([f"{table.schema}.{table.name}"] if table.schema else [])
    return tuple(dict.fromkeys(k.lower() for k in keys))


def _closed_block(comment: str) -> bool:
    return comment.startswith("/*") and len(comment) >= 4 and comment.endswith("*/")


def _statement_rest(after: str) -> list[LooseToken]:
    """Tokens after the cursor up to the end of the statement (aliases often come later: `SELECT o.|
    FROM orders o`)."""
    out = []
    for tok in loose_tokens(after):
        if tok.kind == "op" and tok.text == ";":
            break
        out.append(tok)
    return out


def _clause_of_comma(ctx: list[LooseToken]) -> str | None:
    """What a `,` continues: the nearest clause keyword before it at the same parenthesis depth, or
    "(" inside a call or a column list."""
    depth = 0
    for tok in reversed(ctx[:-1]):
        if tok.text == ")":
            depth += 1
        elif tok.text == "(":
            if depth == 0:
                return "("
            depth -= 1
        elif depth == 0 and tok.kind == "id" and tok.low in _CLAUSES:
            return tok.low
    return None


def _looks_like_sql(ctx: list[LooseToken]) -> bool:
    return bool(ctx) and ctx[0].kind == "id" and ctx[0].low in _STATEMENT_STARTS


def _rank(word: str, groups: Iterable[Iterable[_Name]], requested: bool) -> Iterator[Completion]:
    """Prefix matches first, then (for words of 2+ characters) substring matches; within each, the
    groups' order, then each group's own order. Substring-only results appear on an explicit Tab."""
    needle = (word[1:].replace('""', '"') if word.startswith('"') else word).lower()
    prefix: list[_Name] = []
    inner: list[_Name] = []
    seen: set[str] = set()
    for group in groups:
        for name in group:
            if name.text in seen:
                continue
            if any(k.startswith(needle) for k in name.keys):
                prefix.append(name)
                seen.add(name.text)
            elif len(needle) >= 2 and any(needle in k for k in name.keys):
                inner.append(name)
                seen.add(name.text)
    if not prefix and not requested:
        return
    for name in prefix + inner:
        yield Completion(name.text, -len(word), display_meta=name.meta)
