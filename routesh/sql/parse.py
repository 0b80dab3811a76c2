"""THE one quiet parse: sqlglot's tokens and statements in a dialect, with its logger silenced, and the
small facts every other module asks of a parse (is it one query, its first word, is it the same text).

Model replies and typed lines are arbitrary text: sqlglot raises more than SqlglotError on them
(RecursionError on FLOOR(FLOOR(FLOOR(..., ValueError), so each caller here says what a failure means.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import sqlglot
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import SqlglotError
from sqlglot.tokens import Token

from routesh.sql.quiet import quiet_sqlglot

# Statement roots that are queries: what the guard lets run and what extraction accepts. Everything
# else (including sqlglot's Command fallback for syntax it does not model) is not a query.
QUERY_ROOTS: tuple[type[exp.Expression], ...] = (exp.Select, exp.SetOperation, exp.Subquery, exp.Values)

# The refusal for input nested past sqlglot's recursion limit: fail closed, never crash.
TOO_DEEP = "nested too deeply to check (sqlglot ran out of recursion depth)"


def tokenize(text: str, dialect: str, *, partial: bool = True) -> list[Token]:
    """sqlglot's tokens for `text`. When tokenizing fails (an apostrophe in trailing prose opens a
    string that never closes): with `partial`, the tokens read before the failure (everything up to
    there is sound) and never an exception; without, no tokens."""
    d = Dialect.get_or_raise(dialect)
    tokenizer = d.tokenizer_class(dialect=d)
    try:
        return tokenizer.tokenize(text)
    except SqlglotError:
        return list(getattr(tokenizer, "tokens", [])) if partial else []
    except Exception:  # noqa: BLE001 - arbitrary model text must never crash the pipeline
        if not partial:
            raise
        return []


def statements(sql: str, dialect: str) -> list[exp.Expression]:
    """The statements sqlglot reads in `sql`, without empty ones and bare `;`. Raises what sqlglot raises."""
    with quiet_sqlglot():
        parsed = sqlglot.parse(sql, read=dialect)
    return [s for s in parsed if s is not None and not isinstance(s, exp.Semicolon)]


def tree(sql: str, dialect: str) -> exp.Expression | None:
    """sqlglot's tree for `sql` (a Block for several statements), or None when it does not parse."""
    try:
        with quiet_sqlglot():
            return sqlglot.parse_one(sql, read=dialect)
    except Exception:  # noqa: BLE001 - sqlglot raises more than SqlglotError on garbage
        return None


def parse_query(text: str, dialect: str) -> exp.Expression | None:
    """The single query in `text`, or None: not SQL, several statements, or not a query."""
    if not text.strip():
        return None
    try:
        found = statements(text, dialect)
    except Exception:  # noqa: BLE001 - sqlglot raises more than SqlglotError on garbage (RecursionError, ValueError)
        return None
    if len(found) != 1 or not isinstance(found[0], QUERY_ROOTS):
        return None
    return found[0]


def parse_one(sql: str, dialect: str) -> tuple[exp.Expression | None, str]:
    """Exactly one statement of any kind, or None and why not (the guard's wording)."""
    if not sql or not sql.strip():
        return None, "empty statement"
    try:
        found = statements(sql, dialect)
    except SqlglotError as err:
        return None, f"could not parse as {dialect} SQL ({error_line(err)})"
    except RecursionError:
        return None, TOO_DEEP
    if not found:
        return None, "empty statement"
    if len(found) > 1:
        return None, f"{len(found)} statements in one string; only one is allowed"
    return found[0], ""


def validate(sql: str, dialect: str) -> str | None:
    """None when `sql` parses as exactly one query in `dialect`, else a one-line reason."""
    if not sql or not sql.strip():
        return "empty SQL"
    try:
        found = statements(sql, dialect)
    except SqlglotError as err:
        return f"does not parse as {dialect} SQL: {error_line(err)}"
    except Exception as err:  # noqa: BLE001
        return f"does not parse as {dialect} SQL: {type(err).__name__}"
    if len(found) != 1:
        return f"{len(found)} statements; expected one query"
    if not isinstance(found[0], QUERY_ROOTS):
        return f"not a query ({type(found[0]).__name__.upper()})"
    return None


def error_line(err: Exception) -> str:
    """The first line of a sqlglot error (they run to several, with the SQL underlined)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# ---- first words ------------------------------------------------------------------------------------


def first_token(sql: str, dialect: str) -> str:
    """The statement's first token (upper case), as sqlglot's tokenizer reads the dialect, comments
    skipped; "statement" when there is none. What a user would call the statement."""
    found = tokenize(sql, dialect, partial=False)
    return found[0].text.upper() if found else "statement"


_LINE_END = re.compile(r"[\r\n]")  # a CR ends a line comment too


def first_keyword(sql: str) -> str:
    """The statement's first word (upper case) after whitespace and comments, or "(" for a
    parenthesised query; "" when there is none. Reads the text itself, without a tokenizer, so it also
    works on what sqlglot cannot tokenize; block comments nest, as in PostgreSQL."""
    pos, depth = 0, 0
    while pos < len(sql):
        if sql.startswith("/*", pos):
            depth, pos = depth + 1, pos + 2
        elif depth and sql.startswith("*/", pos):
            depth, pos = depth - 1, pos + 2
        elif depth or sql[pos].isspace():
            pos += 1
        elif sql.startswith("--", pos):
            newline = _LINE_END.search(sql, pos)
            pos = newline.end() if newline else len(sql)
        else:
            break
    if sql[pos : pos + 1] == "(":
        return "("
    word = re.match(r"[A-Za-z_]+", sql[pos:])
    return word[0].upper() if word else ""


# ---- equality of SQL text ---------------------------------------------------------------------------


def squash(sql: str) -> str:
    """SQL text folded for a cheap equality test: lower case, whitespace runs as one space, trailing
    `;` gone (with a space before it). Literals fold too: this tells rewrites apart, it does not prove two
    queries differ."""
    return " ".join(sql.lower().split()).rstrip(";").rstrip()


def same_sql(a: str, b: str) -> bool:
    """Are `a` and `b` the same query text up to case, spacing and a trailing `;`?"""
    return squash(a) == squash(b)


# ---- one parsed candidate ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Sql:
    """A SQL text in a dialect whose tree is parsed once, on first use, and shared by every reader
    (usage, hardness and truncation accept it in place of a string). Equality and hashing are the text
    and dialect; cached_property writes the instance dict directly, so `frozen` does not stop it."""

    text: str
    dialect: str

    @cached_property
    def tree(self) -> exp.Expression | None:
        """The single query, or None (see parse_query)."""
        return parse_query(self.text, self.dialect)


def query_of(sql: str | Sql, dialect: str) -> exp.Expression | None:
    """The single query of a string or an Sql (whose cached tree is reused when its dialect matches)."""
    if isinstance(sql, Sql) and sql.dialect == dialect:
        return sql.tree
    return parse_query(text_of(sql), dialect)


def text_of(sql: str | Sql) -> str:
    """The text of a string or an Sql."""
    return sql.text if isinstance(sql, Sql) else sql


# ---- small tree facts shared by usage and hardness --------------------------------------------------


def is_real_table(node: object) -> bool:
    """A table read from the database, not a table function (`json_each(x)`, `generate_series(...)`)."""
    return isinstance(node, exp.Table) and isinstance(node.this, exp.Identifier)


def leftmost_select(node: exp.Expression) -> exp.Select | None:
    """The SELECT a set operation or parenthesised query starts with (Spider reads its counts there)."""
    while isinstance(node, (exp.SetOperation, exp.Subquery)):
        node = node.this
    return node if isinstance(node, exp.Select) else None


# ---- unfinished text ----------------------------------------------------------------------------------

# A forgiving lexer for text still being typed, which sqlglot cannot read (an open string, half a
# statement): strings and quoted names may be unterminated, and shell commands (`\d`) are tokens.
_LOOSE_TOKEN = re.compile(
    r"""(?P<str>'(?:[^']|'')*(?P<str_end>')?)
      | (?P<qid>"(?:[^"]|"")*(?P<qid_end>")?)
      | (?P<comment>--[^\n]*|/\*[\s\S]*?(?:\*/|$))
      | (?P<id>[^\W\d][\w$]*)
      | (?P<num>\d[\w.]*)
      | (?P<cmd>\\[^\s\\]*)
      | (?P<op><=|>=|<>|!=|\|\||::|[^\s\w])""",
    re.X,
)


class LooseToken(NamedTuple):
    kind: str  # str | qid | comment | id | num | cmd | op
    text: str
    start: int
    end: int
    closed: bool  # False for an unterminated string or quoted identifier

    @property
    def low(self) -> str:
        return self.text.lower()

    @property
    def is_name(self) -> bool:
        return self.kind == "id" or (self.kind == "qid" and self.closed)

    @property
    def name(self) -> str:
        """The identifier without its quotes."""
        return self.text[1:-1].replace('""', '"') if self.kind == "qid" else self.text


def loose_tokens(text: str) -> list[LooseToken]:
    """The tokens of unfinished text (see _LOOSE_TOKEN); never fails."""
    out = []
    for m in _LOOSE_TOKEN.finditer(text):
        kind = next(k for k in ("str", "qid", "comment", "id", "num", "cmd", "op") if m.group(k) is not None)
        closed = not ((kind == "str" and m.group("str_end") is None) or (kind == "qid" and m.group("qid_end") is None))
        out.append(LooseToken(kind, m.group(), m.start(), m.end(), closed))
    return out
