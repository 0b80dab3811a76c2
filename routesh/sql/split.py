"""THE one statement splitter: a script or a gold cell cut at its top-level `;`, each statement's text
kept as written. A `;` inside a string, a quoted name or a comment does not split."""

from __future__ import annotations

import re
from collections.abc import Iterator

from sqlglot.dialects.dialect import Dialect
from sqlglot.tokens import TokenType

_DOLLAR = re.compile(r"\$([A-Za-z_][A-Za-z_0-9]*)?\$")


def code_positions(sql: str) -> Iterator[int]:
    """Indexes of the characters of `sql` that are code: outside strings, quoted identifiers and comments."""
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c == "'":
            backslashes = i > 0 and sql[i - 1] in "eE" and (i < 2 or not (sql[i - 2].isalnum() or sql[i - 2] == "_"))
            i += 1
            while i < n:
                if backslashes and sql[i] == "\\":
                    i += 2
                    continue
                if sql[i] == "'":
                    if i + 1 < n and sql[i + 1] == "'":
                        i += 2
                        continue
                    break
                i += 1
            i += 1
        elif c == '"':
            end = sql.find('"', i + 1)
            while end != -1 and end + 1 < n and sql[end + 1] == '"':
                end = sql.find('"', end + 2)
            i = n if end == -1 else end + 1
        elif c == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end == -1 else end + 1
        elif c == "/" and sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end == -1 else end + 2
        elif c == "$" and (m := _DOLLAR.match(sql, i)) and not (i > 0 and (sql[i - 1].isalnum() or sql[i - 1] == "_")):
            end = sql.find(m.group(0), m.end())
            i = n if end == -1 else end + len(m.group(0))
        else:
            yield i
            i += 1


def split_statements(text: str, dialect: str | None = None) -> list[str]:
    """The `;`-separated statements of `text`, stripped, without empty ones.

    With a dialect, the cuts are sqlglot's `;` tokens (it knows that dialect's strings, quoted names
    and comments) and pieces that are only comments are dropped too; an unterminated string or
    comment raises sqlglot's error. Without one, a character scan that knows both SQLite's and
    PostgreSQL's quoting ($tag$ strings, E'...' escapes) and accepts text no tokenizer would, such as
    a gold cell's `{a, b}` choices; comments then stay in their statement."""
    if dialect is None:
        cuts = [(i, i + 1) for i in code_positions(text) if text[i] == ";"]
    else:
        cuts = [(t.start, t.end + 1) for t in Dialect.get_or_raise(dialect).tokenize(text)
                if t.token_type == TokenType.SEMICOLON]
    pieces, start = [], 0
    for cut, after in cuts:
        pieces.append(text[start:cut].strip())
        start = after
    pieces.append(text[start:].strip())
    if dialect is None:
        return [p for p in pieces if p]
    return [p for p in pieces if p and not _only_comments(p, dialect)]


def _only_comments(text: str, dialect: str) -> bool:
    return not Dialect.get_or_raise(dialect).tokenize(text)
