"""Pull the SQL out of a model's reply, and tell when the reply declines to write any.

Everything works on sqlglot's tokenizer and parse tree in the target dialect, never on substrings:
ROUTE's research code missed a lowercase `select` and cut at a `;` inside a string literal. Those
are exactly the failures the tests pin down.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

from sqlglot import exp
from sqlglot.tokens import Token, TokenType

from routesh.sql.parse import parse_query, tokenize


# A fence: ``` plus an optional language word on the opening line; unclosed fences run to the end.
_FENCE = re.compile(r"```[ \t]*(?P<lang>[A-Za-z0-9_+-]*)[ \t]*(?:\n|(?=\S))(?P<body>.*?)(?:```|\Z)", re.S)
_INLINE_CODE = re.compile(r"(?<!`)`(?P<body>[^`\n]{6,})`(?!`)")
_SQL_LANGS = frozenset({"", "sql", "sqlite", "sqlite3", "postgres", "postgresql", "psql", "pgsql", "plpgsql",
                        "mysql", "tsql", "ansi"})
# Where a query can begin. ASCII look-behind only: "如下：SELECT" and "查询SELECT" both start one.
_START = re.compile(
    r"(?<![A-Za-z0-9_$.])(?:select|with|values)(?![A-Za-z0-9_$])"
    r"|\((?=\s*(?:select|with)(?![A-Za-z0-9_$]))",
    re.I,
)
_WITH_HEAD = re.compile(
    r"with\s+(?:recursive\s+)?(?:[\w$]+|\"[^\"]+\"|`[^`]+`|\[[^\]]+\])\s*(?:\([^()]*\)\s*)?"
    r"as\s*(?:(?:not\s+)?materialized\s*)?\(",
    re.I,
)
_FROM_WORD = re.compile(r"(?<![A-Za-z0-9_$])from(?![A-Za-z0-9_$])", re.I)
_START_TOKENS = frozenset({TokenType.SELECT, TokenType.WITH, TokenType.VALUES, TokenType.L_PAREN})
# Tokens that never occur in English prose after a query: a tail holding one is SQL, not prose.
_NOT_PROSE = frozenset(
    {TokenType.L_PAREN, TokenType.R_PAREN, TokenType.EQ, TokenType.NEQ, TokenType.GT, TokenType.GTE, TokenType.LT,
     TokenType.LTE, TokenType.STAR, TokenType.PLUS, TokenType.SLASH, TokenType.SELECT, TokenType.FROM,
     TokenType.WHERE, TokenType.GROUP_BY, TokenType.ORDER_BY, TokenType.HAVING, TokenType.LIMIT, TokenType.JOIN,
     TokenType.ON, TokenType.UNION, TokenType.INTERSECT, TokenType.EXCEPT, TokenType.STRING}
)
_MAX_TOKEN_CUTS = 60  # parses tried per start when only a token-level cut can separate SQL from prose
_MAX_SEGMENT = 20_000  # characters of reply text looked at per start


@dataclass(frozen=True)
class _Segment:
    text: str
    kind: str  # "fence" (a sql or bare fence), "other-fence", "code" (`inline`), "prose"


@dataclass(frozen=True)
class _Candidate:
    sql: str
    rank: int  # 0 clean in code, 1 clean in prose, 2 unparsed code, 3 cut out of prose mid-line, 4 unparsed prose


def extract_sql(reply: str, dialect: str) -> str | None:
    """The SQL query in a model reply, as the model wrote it (stripped, no trailing `;`), or None.

    Code fences come first (```sql, bare ```, unclosed), then `inline code`, then the prose. In each,
    every place a query can begin (SELECT, WITH, VALUES, a parenthesised SELECT; any case) is tried in
    order; the statement runs to its first `;` token (never one inside a literal or comment), a
    sentence-ending `. `, a blank line in prose, or the end. The first candidate that sqlglot parses as
    one query in `dialect` wins; trailing prose is dropped at a line end, else at a token. A fenced
    query that does not parse is returned as written when nothing parses, so noise correction can fix
    it; prose with no query gives None.
    """
    if not reply or not reply.strip():
        return None
    whole = reply.strip()
    if whole.endswith(";"):
        whole = whole[:-1].rstrip()
    tree = parse_query(whole, dialect)
    if tree is not None and (tree.find(exp.From) or isinstance(tree, exp.Values) or whole.split(None, 1)[0].isupper()):
        return whole  # the reply is nothing but the query (`SELECT 1` counts; "select the names" does not)
    found: list[_Candidate] = []
    for segment in _segments(reply):
        for candidate in _candidates(segment, dialect):
            if candidate.rank <= 1:
                return candidate.sql
            found.append(candidate)
    if not found:
        return None
    return min(found, key=lambda c: c.rank).sql  # min keeps the first of equal rank


def _segments(reply: str) -> Iterator[_Segment]:
    """The reply's parts, most SQL-like first: sql fences, other fences, inline code, the prose."""
    fences = list(_FENCE.finditer(reply))
    for m in fences:
        if m.group("lang").lower() in _SQL_LANGS or _looks_like_query_start(m.group("lang")):
            body = m.group("body")
            if _looks_like_query_start(m.group("lang")):  # ```SELECT ...``` on one line
                body = m.group("lang") + reply[m.end("lang"):m.end("body")]
            yield _Segment(body, "fence")
    for m in fences:
        if not (m.group("lang").lower() in _SQL_LANGS or _looks_like_query_start(m.group("lang"))):
            yield _Segment(m.group("body"), "other-fence")
    prose = _FENCE.sub("\n\n", reply)
    for m in _INLINE_CODE.finditer(prose):
        yield _Segment(m.group("body"), "code")
    yield _Segment(prose, "prose")


def _looks_like_query_start(word: str) -> bool:
    return word.lower() in ("select", "with", "values")


def _candidates(segment: _Segment, dialect: str) -> Iterator[_Candidate]:
    text = segment.text
    code = segment.kind != "prose"
    starts = [m.start() for m in _START.finditer(text) if _plausible_start(text, m.start(), prose=not code)]
    if segment.kind == "fence":
        starts = _starts_outside_comments(text, starts, dialect)
    covered: list[tuple[int, int]] = []  # parenthesised spans of unparsed queries: no fragment from inside
    for start in starts:
        if any(lo < start < hi for lo, hi in covered):
            continue
        body = text[start:start + _MAX_SEGMENT]
        if not code:  # a prose statement ends at a blank line anyway: do not tokenize the rest of the reply
            body = re.split(r"\n[ \t\r]*\n", body, maxsplit=1)[0]
        tokens, end = _statement(body, dialect)
        if not tokens:
            continue
        clean = _clean_parse(body, tokens, end, dialect, need_from=not code)
        if clean is not None:
            yield _Candidate(clean, 0 if code else 1)
            continue
        # Broken SQL rather than English: in code, or an upper-case keyword opening a line ("SQL: SELECT").
        sql_looking = code or (_at_line_start(text, start) and tokens[0].text.isupper())
        if sql_looking:
            covered.extend((start + lo, start + hi) for lo, hi in _paren_spans(tokens))
        cut = _token_cut_parse(body, tokens, dialect)
        if cut is not None:
            yield _Candidate(cut, 3)
        elif sql_looking and tokens[0].token_type != TokenType.L_PAREN:
            raw = body[:end].strip()
            if raw:
                yield _Candidate(raw, 2 if code else 4)


def _plausible_start(text: str, start: int, *, prose: bool) -> bool:
    """A cheap look at what follows, so that English "with" and "values" cost nothing: WITH needs
    `name AS (`, VALUES needs `(`, and a SELECT in prose a FROM later in its paragraph (or none at all:
    `SELECT 1` in a fence)."""
    head = text[start:start + 300]
    word = head[:6].lower()
    if word.startswith("with"):
        return _WITH_HEAD.match(head) is not None
    if word.startswith("values"):
        return re.match(r"values\s*\(", head, re.I) is not None
    if prose and word.startswith("select"):
        paragraph = re.split(r"\n[ \t\r]*\n", text[start:start + _MAX_SEGMENT], maxsplit=1)[0]
        return _FROM_WORD.search(paragraph) is not None
    return True


def _starts_outside_comments(text: str, starts: list[int], dialect: str) -> list[int]:
    """Drop starts that sit inside a comment or a literal (`-- select the rows; then ...`): in code,
    a real start is the start of a token. Past the point where tokenizing failed, keep them all."""
    tokens = tokenize(text, dialect)
    token_starts = {t.start for t in tokens if t.token_type in _START_TOKENS}
    tokenized_to = tokens[-1].end if tokens else -1
    return [s for s in starts if s in token_starts or s > tokenized_to]


def _at_line_start(text: str, pos: int) -> bool:
    """Only whitespace or a short label ("SQL:", "Answer:") between the line start and `pos`."""
    line = text[text.rfind("\n", 0, pos) + 1:pos].strip()
    return not line or bool(re.fullmatch(r"[*_#>\-\s]*[A-Za-z ]{1,20}:[*_\s]*", line))


def _statement(body: str, dialect: str) -> tuple[list[Token], int]:
    """The tokens of the statement that begins `body`, and the offset where its text ends: at the first
    `;`, a `.` followed by a space or the end (a sentence, not `t.name`), or prose punctuation glued to
    a word (`singer。这是`). Tokenizes a growing window, not the whole reply:
    most starts in prose ("with care.") end within a few words."""
    window = 512
    while True:
        chunk = body[:window]
        tokens, end, stopped = _scan(tokenize(chunk, dialect), complete=window >= len(body))
        if stopped or window >= len(body):
            return tokens, end
        window *= 4


def _scan(tokens: list[Token], *, complete: bool) -> tuple[list[Token], int, bool]:
    """Walk tokens to the statement's end. `stopped` says a stop was found that more text cannot move
    (with an incomplete window, a stop in the window's last token may be a cut-off `t.name`)."""
    kept: list[Token] = []
    end = 0
    for i, tok in enumerate(tokens):
        last = i + 1 == len(tokens)
        if not complete and last:
            break  # possibly cut by the window: decide with more text
        if tok.token_type == TokenType.SEMICOLON:
            return kept, end, True
        if tok.token_type == TokenType.DOT and (last or tokens[i + 1].start > tok.end + 1):
            return kept, end, True
        stop = _prose_stop(tok)
        if stop is not None:
            return kept, (tok.start + stop if stop > 0 else end), True
        kept.append(tok)
        end = tok.end + 1
    return kept, end, False


def _prose_stop(tok: Token) -> int | None:
    """Where a bare word turns into prose: the first non-ASCII punctuation or symbol in it (。，！🎉)."""
    if tok.token_type != TokenType.VAR:
        return None
    for i, ch in enumerate(tok.text):
        if ord(ch) > 127 and unicodedata.category(ch)[0] in "PSZ":
            return i
    return None


def _clean_parse(body: str, tokens: list[Token], end: int, dialect: str, *, need_from: bool) -> str | None:
    """The longest candidate ending at the statement end or at a line end that parses as a query."""
    cuts = [end] + [a.end + 1 for a, b in reversed(list(zip(tokens, tokens[1:]))) if "\n" in body[a.end + 1:b.start]]
    for cut in cuts:
        sql = _accept(body[:cut], dialect, need_from=need_from)
        if sql is not None:
            return sql
    return None


def _token_cut_parse(body: str, tokens: list[Token], dialect: str) -> str | None:
    """Prose on the same line as the query ("... FROM singer which lists them"): the longest prefix cut
    at a token that parses as a query with a FROM, provided what is cut off reads as words, not SQL
    (no operator, parenthesis or clause keyword: `age > (SELECT ...` unclosed is broken SQL to keep
    whole). A cut right after an implicit alias is skipped: the word is more likely prose
    (`singer which`), and an alias that nothing follows is never used anyway."""
    if not any(t.token_type == TokenType.FROM for t in tokens):
        return None  # no cut could give a query with a FROM
    tried = 0
    for i in range(len(tokens) - 2, 0, -1):
        if tokens[i + 1].token_type in _NOT_PROSE:
            break  # everything shorter would cut SQL off too
        if tried >= _MAX_TOKEN_CUTS:
            break
        tok, before = tokens[i], tokens[i - 1]
        if tok.token_type == TokenType.VAR and before.token_type in (TokenType.VAR, TokenType.IDENTIFIER,
                                                                     TokenType.R_PAREN):
            continue
        tried += 1
        sql = _accept(body[:tok.end + 1], dialect, need_from=True)
        if sql is not None:
            return sql
    return None


def _accept(text: str, dialect: str, *, need_from: bool) -> str | None:
    sql = text.strip()
    if sql.endswith("."):  # "... WHERE age > 30." read the dot into the number
        shorter = sql[:-1].rstrip()
        if parse_query(shorter, dialect) is not None:
            sql = shorter
    tree = parse_query(sql, dialect)
    if tree is None:
        return None
    if need_from and not isinstance(tree, exp.Values) and tree.find(exp.From) is None:
        return None  # "select the names" in prose is English, not a query
    return sql


def _paren_spans(tokens: list[Token]) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    stack: list[int] = []
    for tok in tokens:
        if tok.token_type == TokenType.L_PAREN:
            stack.append(tok.start)
        elif tok.token_type == TokenType.R_PAREN and stack:
            spans.append((stack.pop(), tok.end))
    end = tokens[-1].end + 1 if tokens else 0
    spans.extend((lo, end) for lo in stack)
    return spans


# ---- the model declining -----------------------------------------------------------------------

# Phrases that only a refusal uses. Conservative: "cannot find", "cannot produce duplicates" or "not
# possible to sort" are not enough; the model must say the question cannot be answered, that it cannot
# write the query, or that the data is not there. `\w*\b` keeps backtracking from shortening a verb.
_CANNOT = r"\b(?:can ?not|can't|cannot|could\s+not|couldn't|unable\s+to|not\s+able\s+to|impossible\s+to)\s+"
_DECLINE = re.compile(
    r"|".join(
        [
            _CANNOT + r"(?:be\s+)?answer\w*\b",
            _CANNOT + r"(?:write|generate|produce|create|construct|formulate|provide|give)\s+"
            r"(?:(?:a|an|the|any|this|that|such\s+a|valid|correct|sql|sqlite|postgresql)\s+)*(?:query|sql|answer)\b",
            _CANNOT + r"(?:be\s+)?determined?\s+(?:\w+\s+){0,3}?from\s+(?:the|this|these|given)\s+"
            r"(?:given\s+)?(?:schema|database|data|tables?)\b",
            r"\b(?:not|isn't)\s+(?:possible|answerable|feasible)\s+"
            r"(?:to\s+(?:answer|determine|write|generate)\b|(?:with|from)\s+(?:this|the\s+given|the)\s+"
            r"(?:schema|database|data|tables?)\b)",
            r"\bunanswerable\b",
            r"\bno\s+(?:such|relevant)\s+(?:information|data|columns?|tables?|fields?)\b",
            r"\b(?:insufficient|not\s+enough)\s+(?:information|data)\b",
            r"\b(?:schema|database|tables?|data)\s+(?:does\s+not|doesn't|do\s+not|don't)\s+"
            r"(?:contain|have|include|store|provide|record)\s+(?:any\s+|the\s+|enough\s+)?"
            r"(?:information|data|columns?|tables?|fields?|details?)\b",
            r"\b(?:information|data)\s+(?:is|are)\s+not\s+(?:available|present|stored|included|contained)\s+in\b",
        ]
    ),
    re.I,
)


def says_cannot_answer(reply: str, dialect: str = "sqlite") -> bool:
    """Does the model say the question cannot be answered from this database? Only the prose counts:
    fenced code and the extracted SQL (whose comments may say anything) are removed first."""
    if not reply:
        return False
    prose = _FENCE.sub(" ", reply)
    sql = extract_sql(reply, dialect)
    if sql:
        prose = prose.replace(sql, " ")
    return _DECLINE.search(prose) is not None
