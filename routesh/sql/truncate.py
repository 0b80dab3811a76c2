"""Cutting a query at its clause boundaries (continuation writing's prefixes), on THE one clause scanner:
sqlglot's tokens annotated with their parenthesis depth and the clause of their query level, so that
nothing is ever cut inside a literal, an identifier or a comment. finetune/corrupt.py edits queries
on the same scan."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlglot.tokens import Token, TokenType

from routesh.sql.parse import Sql, text_of, tokenize

_CLAUSE_TOKENS = frozenset(
    {TokenType.FROM, TokenType.WHERE, TokenType.GROUP_BY, TokenType.HAVING, TokenType.ORDER_BY,
     TokenType.LIMIT, TokenType.OFFSET, TokenType.ON, TokenType.UNION, TokenType.INTERSECT, TokenType.EXCEPT}
)
SET_OPS = frozenset({TokenType.UNION, TokenType.INTERSECT, TokenType.EXCEPT})
# Words that may stand before JOIN and belong with it: cut before `LEFT OUTER JOIN`, not inside it.
JOIN_PREFIX = frozenset(
    {TokenType.LEFT, TokenType.RIGHT, TokenType.FULL, TokenType.INNER, TokenType.OUTER, TokenType.CROSS,
     TokenType.NATURAL, TokenType.SEMI, TokenType.ANTI}
)
_QUERY_OPENERS = frozenset({TokenType.SELECT, TokenType.WITH, TokenType.VALUES})
_CONDITION_CLAUSES = frozenset({TokenType.WHERE, TokenType.HAVING, TokenType.ON})
# The clauses truncation tracks (a set operation's clause is the operation itself: no condition).
TRUNCATION_CLAUSES = _CLAUSE_TOKENS | {TokenType.JOIN}


# ---- the clause scanner -------------------------------------------------------------------------------


@dataclass
class ScannedToken:
    """One token with its context in the query."""

    token: Token
    depth: int  # parentheses around it
    clause: TokenType | None  # the clause of its parenthesis level it sits in (WHERE, ON, ...)
    in_between: bool = False  # the AND of a BETWEEN
    in_case: bool = False  # inside CASE ... END
    in_query: bool = True  # its parenthesis level is a query (not a call, a list or a window spec)


@dataclass
class _Frame:
    """One level of parentheses while scanning tokens: is it a query, which clause are we in."""

    query: bool
    clause: TokenType | None = None
    betweens: int = 0  # BETWEENs whose AND is still to come
    cases: int = 0  # open CASE ... END


def scan(tokens: list[Token], clauses: Collection[TokenType]) -> list[ScannedToken]:
    """Each token with its depth and the clause it sits in, a clause being opened by any token type in
    `clauses` at its parenthesis level. A parenthesis belongs to the level outside it; BETWEEN's AND
    and the words inside CASE are marked, so that they are not taken for conditions' connectors."""
    out: list[ScannedToken] = []
    stack = [_Frame(query=True)]
    for i, tok in enumerate(tokens):
        kind = tok.token_type
        if kind == TokenType.L_PAREN:
            out.append(_parenthesis(tok, stack))
            nxt = tokens[i + 1] if i + 1 < len(tokens) else None
            stack.append(_Frame(query=nxt is not None and nxt.token_type in _QUERY_OPENERS))
            continue
        if kind == TokenType.R_PAREN:
            if len(stack) > 1:
                stack.pop()
            out.append(_parenthesis(tok, stack))
            continue
        frame = stack[-1]
        between_and = False
        if kind == TokenType.CASE:
            frame.cases += 1
        elif kind == TokenType.END and frame.cases:
            frame.cases -= 1
        elif kind == TokenType.BETWEEN:
            frame.betweens += 1
        elif kind == TokenType.AND and frame.betweens:
            frame.betweens -= 1
            between_and = True
        elif kind in clauses:
            frame.clause = kind
        out.append(ScannedToken(tok, len(stack) - 1, frame.clause, between_and, frame.cases > 0, frame.query))
    return out


def _parenthesis(tok: Token, stack: list[_Frame]) -> ScannedToken:
    """A parenthesis, at the level outside it."""
    outer = stack[-1]
    return ScannedToken(tok, len(stack) - 1, outer.clause, in_query=outer.query)


# ---- truncation ---------------------------------------------------------------------------------------


def truncation_points(sql: str | Sql, dialect: str) -> list[int]:
    """Offsets into `sql` where it can be cut at a clause boundary: before FROM, WHERE, GROUP BY, HAVING,
    ORDER BY, LIMIT, OFFSET, a join (with its LEFT/INNER/... words), ON, UNION/INTERSECT/EXCEPT and the
    query after them, the main query after a WITH clause, and an AND/OR joining WHERE/HAVING/ON
    conditions (not BETWEEN's AND, not inside CASE or parentheses); the same inside subqueries and CTEs,
    plus right after a subquery's opening parenthesis. Window specs and function arguments
    (`OVER (ORDER BY ...)`, `EXTRACT(YEAR FROM ...)`) are not clauses.

    Offsets are token starts from sqlglot's tokenizer, so never inside a literal, identifier or
    comment. Sorted, each with 0 < offset < len(sql) and a non-blank prefix before it."""
    text = text_of(sql)
    tokens = tokenize(text, dialect)
    points: set[int] = set()
    for i, scanned in enumerate(scan(tokens, TRUNCATION_CLAUSES)):
        tok = scanned.token
        kind = tok.token_type
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if kind == TokenType.L_PAREN:
            if nxt is not None and nxt.token_type in _QUERY_OPENERS:
                points.add(nxt.start)  # right after a subquery's opening parenthesis
            continue
        if kind == TokenType.R_PAREN or not scanned.in_query:
            continue
        if kind == TokenType.SELECT and i > 0 and tokens[i - 1].token_type == TokenType.R_PAREN:
            points.add(tok.start)  # the main query after `WITH name AS (...)`
        elif kind in _CLAUSE_TOKENS:
            points.add(tok.start)
            if kind in SET_OPS:
                after = nxt
                if after is not None and after.token_type in (TokenType.ALL, TokenType.DISTINCT):
                    after = tokens[i + 2] if i + 2 < len(tokens) else None
                if after is not None and after.token_type in _QUERY_OPENERS:
                    points.add(after.start)
        elif kind == TokenType.JOIN:
            j = i
            while j > 0 and tokens[j - 1].token_type in JOIN_PREFIX:
                j -= 1
            points.add(tokens[j].start)
        elif (kind in (TokenType.AND, TokenType.OR) and not scanned.in_between
              and scanned.clause in _CONDITION_CLAUSES and not scanned.in_case):
            points.add(tok.start)
    return sorted(p for p in points if 0 < p < len(text) and text[:p].strip())


def token_boundaries(sql: str | Sql, dialect: str) -> list[int]:
    """Every token start after the first: the fallback cut points when a query has no clause boundary."""
    text = text_of(sql)
    return sorted({t.start for t in tokenize(text, dialect)[1:] if 0 < t.start < len(text)})


def truncate(sql: str | Sql, dialect: str, fraction: float | None = None, at: int | None = None) -> str:
    """A real prefix of `sql` (its own text, trailing space removed) cut at the clause boundary nearest
    the requested point: `at` (a character offset) or `fraction` of its length (default one half).
    Without clause boundaries, the nearest token boundary; a single-token query gives ""."""
    if fraction is not None and at is not None:
        raise ValueError("give fraction or at, not both")
    text = text_of(sql)
    target = at if at is not None else round((0.5 if fraction is None else fraction) * len(text))
    points = truncation_points(text, dialect) or token_boundaries(text, dialect)
    if not points:
        return ""
    best = min(points, key=lambda p: (abs(p - target), p))
    return text[:best].rstrip()
