"""SQL utilities shared by the pipeline and finetune/: pull the SQL out of a model's reply, say which
tables and columns a query uses, grade it by Spider's hardness rules, cut it at clause boundaries,
and check (or transpile) it for the target dialect.

Everything works on sqlglot's tokenizer and parse tree in the target dialect, never on substrings:
ROUTE's research code matched table names as substrings, missed a lowercase `select` and cut at a `;`
inside a string literal. Those are exactly the failures the tests pin down.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.scope import Scope, traverse_scope
from sqlglot.tokens import Token, TokenType

from routesh.db.schema import Schema, Table
from routesh.sqllog import quiet_sqlglot

# Statement roots that are queries (the guard accepts the same set).
_QUERY_ROOTS: tuple[type[exp.Expression], ...] = (exp.Select, exp.SetOperation, exp.Subquery, exp.Values)

# Spider's five aggregates (AGG_OPS); other aggregate functions do not count towards hardness.
_SPIDER_AGGS: tuple[type[exp.Expression], ...] = (exp.Count, exp.Max, exp.Min, exp.Sum, exp.Avg)


# ---- parsing helpers ------------------------------------------------------------------------------




def _tokens(text: str, dialect: str) -> list[Token]:
    """sqlglot's tokens for `text`. When tokenizing fails (an apostrophe in trailing prose opens a
    string that never closes), the tokens read before the failure: everything up to there is sound."""
    d = Dialect.get_or_raise(dialect)
    tokenizer = d.tokenizer_class(dialect=d)
    try:
        return tokenizer.tokenize(text)
    except SqlglotError:
        return list(getattr(tokenizer, "tokens", []))
    except Exception:  # noqa: BLE001 - arbitrary model text must never crash the pipeline
        return []


def _parse_query(text: str, dialect: str) -> exp.Expression | None:
    """The single query in `text`, or None: not SQL, several statements, or not a query."""
    if not text.strip():
        return None
    try:
        with quiet_sqlglot():
            statements = [s for s in sqlglot.parse(text, read=dialect) if s is not None]
    except Exception:  # noqa: BLE001 - sqlglot raises more than SqlglotError on garbage (RecursionError, ValueError)
        return None
    statements = [s for s in statements if not isinstance(s, exp.Semicolon)]
    if len(statements) != 1 or not isinstance(statements[0], _QUERY_ROOTS):
        return None
    return statements[0]


# ---- 1. extracting the SQL from a model reply -----------------------------------------------------

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
    tree = _parse_query(whole, dialect)
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
    tokens = _tokens(text, dialect)
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
        tokens, end, stopped = _scan(_tokens(chunk, dialect), complete=window >= len(body))
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
        if _parse_query(shorter, dialect) is not None:
            sql = shorter
    tree = _parse_query(sql, dialect)
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


# ---- 2. the model declining -----------------------------------------------------------------------

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


# ---- 3. tables and columns a query uses -----------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """What a query reads. With a schema, names are the schema's spelling and every name here exists in
    it; without one, names are as first written (matched case-insensitively).

    A projection `*` (or `T1.*`) is recorded as the column "*" of its tables, not expanded: a reduced
    schema must then keep all of that table's columns. COUNT(*) reads no column.
    """

    tables: frozenset[str] = frozenset()
    columns: dict[str, frozenset[str]] = field(default_factory=dict)  # one entry per table, maybe empty
    unresolved: frozenset[str] = frozenset()  # columns not attributable: "name" (ambiguous/unknown), "T9.x"
    unknown_tables: frozenset[str] = frozenset()  # tables the schema lacks (schema given only)
    error: str | None = None  # set when the SQL does not parse; everything else is then empty

    def as_linking(self) -> dict[str, list[str]]:
        """The schema-linking target: {"table": ["col", ...]}, sorted for stable training data."""
        return {t: sorted(self.columns.get(t, frozenset()), key=str.lower) for t in sorted(self.tables, key=str.lower)}


def tables_and_columns(sql: str, dialect: str, schema: Schema | None = None) -> Usage:
    """The tables a query reads and, per table, the columns it uses, through aliases, CTEs, derived
    tables, correlated subqueries and set operations. Never raises: unparseable SQL gives an empty Usage
    with `error` set.

    Unqualified columns go to the one table in scope that has them (by the schema); without a schema,
    to the only table in scope, else they stay unresolved. CTE names and derived tables are not tables:
    their columns are traced to the tables they come from. In SQLite a double-quoted name that is no
    column in scope is a string literal (Spider writes `name = "Bob"`), as SQLite itself reads it.
    """
    tree = _parse_query(sql, dialect)
    if tree is None:
        return Usage(error=f"could not parse as one {dialect} query")
    collector = _Collector(schema, dialect)
    try:
        with quiet_sqlglot():
            collector.walk_scopes(tree)
    except Exception:  # noqa: BLE001 - sqlglot's scope builder rejects some odd trees; fall back
        collector = _Collector(schema, dialect)
        collector.walk_flat(tree)
    return collector.usage()


class _Collector:
    def __init__(self, schema: Schema | None, dialect: str):
        self.schema = schema
        self.dialect = dialect
        self.tables: dict[str, str] = {}  # lower-case key -> reported spelling
        self.columns: dict[str, dict[str, str]] = {}  # reported table -> lower column -> spelling
        self.unresolved: dict[str, str] = {}
        self.unknown: dict[str, str] = {}
        self.by_node: dict[int, Scope] = {}  # id(query expression) -> its scope

    def usage(self) -> Usage:
        return Usage(
            tables=frozenset(self.tables.values()),
            columns={t: frozenset(self.columns.get(t, {}).values()) for t in self.tables.values()},
            unresolved=frozenset(self.unresolved.values()),
            unknown_tables=frozenset(self.unknown.values()),
        )

    # -- recording --

    def _schema_table(self, table: exp.Table) -> Table | None:
        if self.schema is None:
            return None
        if table.db:
            found = self.schema.table(f"{table.db}.{table.name}")
            if found is not None:
                return found
        return self.schema.table(table.name)

    def add_table(self, table: exp.Table) -> str | None:
        """Record a real table; its reported name, or None when the schema lacks it."""
        known = self._schema_table(table)
        if known is not None:
            name = known.display_name
        else:
            name = f"{table.db}.{table.name}" if table.db else table.name
            if self.schema is not None:
                self.unknown.setdefault(name.lower(), name)
                return None
        self.tables.setdefault(name.lower(), name)
        name = self.tables[name.lower()]
        self.columns.setdefault(name, {})
        return name

    def add_column(self, table: exp.Table, column: str) -> None:
        name = self.add_table(table)
        if name is None:
            self._unresolved(f"{table.name}.{column}")
            return
        known = self._schema_table(table)
        if known is not None and column != "*":
            col = known.column(column)
            if col is None:
                self._unresolved(f"{name}.{column}")
                return
            column = col.name
        self.columns[name].setdefault(column.lower(), column)

    def _unresolved(self, text: str) -> None:
        self.unresolved.setdefault(text.lower(), text)

    def _has_column(self, table: exp.Table, column: str) -> bool | None:
        """Does the table have this column? None when there is no schema entry to ask."""
        known = self._schema_table(table)
        if known is None:
            return None
        return known.column(column) is not None

    # -- scoped resolution (the normal path) --

    def walk_scopes(self, tree: exp.Expression) -> None:
        scopes = traverse_scope(tree)
        self.by_node = by_node = {id(s.expression): s for s in scopes}
        for scope in scopes:
            for _, source in scope.selected_sources.values():
                if _is_real_table(source):
                    self.add_table(source)
        for join in tree.find_all(exp.Join):
            self._using(join, by_node)
        for node in tree.find_all(exp.Column, exp.Star):
            if isinstance(node, exp.Star) and not isinstance(node.parent, exp.Select):
                continue  # COUNT(*), or the Star inside a Column `T1.*` (handled as the Column)
            scope = _enclosing_scope(node, by_node)
            if scope is None:
                continue
            if isinstance(node, exp.Star):
                for _, source in scope.selected_sources.values():
                    if _is_real_table(source):
                        self.add_column(source, "*")
            elif node.table:
                self._qualified(scope, node.table, node.name, node)
            else:
                self._unqualified(scope, node.name, node)

    def _using(self, join: exp.Join, by_node: dict[int, Scope]) -> None:
        """`JOIN u USING (id)`: id is a column of the joined table and of the tables before it that have
        it (by the schema; without one, of the FROM table)."""
        names = [i.name for i in join.args.get("using") or []]
        scope = _enclosing_scope(join, by_node)
        if not names or scope is None or not _is_real_table(join.this):
            return
        select = scope.expression
        first = (select.args.get("from_") or select.args.get("from")) if isinstance(select, exp.Select) else None
        earlier = [first.this] if first is not None else []
        for other in select.args.get("joins") or [] if isinstance(select, exp.Select) else []:
            if other is join:
                break
            earlier.append(other.this)
        for name in names:
            self.add_column(join.this, name)
            having = [t for t in earlier if _is_real_table(t) and self._has_column(t, name)]
            if self.schema is None and earlier and _is_real_table(earlier[0]):
                having = [earlier[0]]
            for table in having:
                self.add_column(table, name)

    def _qualified(self, scope: Scope, qualifier: str, name: str, node: exp.Expression | None, depth: int = 0) -> None:
        source = _find_source(scope, qualifier)
        if isinstance(source, exp.Table):
            self.add_column(source, name)
        elif isinstance(source, Scope):
            self._trace(source, name, depth + 1)
        else:
            self._unresolved(f"{qualifier}.{name}")

    def _unqualified(self, scope: Scope, name: str, node: exp.Expression | None, depth: int = 0) -> None:
        """Inner scope first: a table here that has the column, a select alias, a string in disguise, the
        one table here that may have it (no schema); then, from a subquery only, the enclosing scopes."""
        if isinstance(scope.expression, exp.SetOperation):
            return  # ORDER BY of a UNION names its output columns
        looked: Scope | None = scope
        while looked is not None:
            sure = [src for _, src in looked.selected_sources.values() if self._source_has(src, name)]
            if len(sure) == 1:
                self._attribute(sure[0], name, depth)
                return
            if len(sure) > 1:
                self._unresolved(name)  # ambiguous: the database would refuse it too
                return
            if looked is scope:
                if _is_projection_alias(scope, name):
                    return  # ORDER BY cnt where cnt is `count(*) AS cnt`
                if node is not None and self.schema is None and self._is_string_literal(node):
                    return
                unsure = [src for _, src in scope.selected_sources.values() if self._source_has(src, name) is None]
                if len(unsure) == 1:  # the only table here that may have it: no schema, or a `*` hides it
                    self._attribute(unsure[0], name, depth)
                    return
            # Only a subquery (or a branch of a set operation inside one) sees the enclosing query;
            # derived tables and CTEs do not.
            if not (looked.is_subquery or looked.is_set_operation):
                break
            looked = looked.parent
        if node is not None and self._is_string_literal(node):
            return
        self._unresolved(name)

    def _attribute(self, source: exp.Expression | Scope, name: str, depth: int) -> None:
        if isinstance(source, exp.Table):
            if _is_real_table(source):
                self.add_column(source, name)
        elif isinstance(source, Scope):
            self._trace(source, name, depth + 1)

    def _source_has(self, source: exp.Expression | Scope, name: str) -> bool | None:
        if isinstance(source, exp.Table):
            return self._has_column(source, name) if _is_real_table(source) else None
        if isinstance(source, Scope):
            outputs = _output_names(source)
            if outputs is None:
                return None
            return name.lower() in outputs
        return None

    def _trace(self, scope: Scope, name: str, depth: int) -> None:
        """A column of a CTE or derived table: follow it to the table it comes from. Computed outputs
        need nothing here: their own columns are recorded where they are written."""
        if depth > 8 or name == "*":
            return  # `T.*` of a derived table: its own columns are recorded inside it
        select = _leftmost_select(scope.expression)
        if select is None:
            return
        inner = self.by_node.get(id(select), scope)  # a set operation's leftmost branch has its own scope
        listed = [c.lower() for c in _alias_columns(scope)]
        if name.lower() in listed:  # `WITH r(n) AS (SELECT x ...)`: n is the projection in that position
            position = listed.index(name.lower())
            if position >= len(select.expressions):
                return
            projection = select.expressions[position]
            name = projection.alias_or_name
        for projection in select.expressions:
            if isinstance(projection, exp.Star):
                self._unqualified(inner, name, None, depth)
                return
            if isinstance(projection, exp.Column) and isinstance(projection.this, exp.Star):
                self._qualified(inner, projection.table, name, None, depth)
                return
            if projection.alias_or_name.lower() == name.lower():
                target = projection.unalias()
                if isinstance(target, exp.Column) and not isinstance(target.this, exp.Star):
                    if target.table:
                        self._qualified(inner, target.table, target.name, None, depth)
                    else:
                        self._unqualified(inner, target.name, None, depth)
                return

    def _is_string_literal(self, node: exp.Expression) -> bool:
        """SQLite reads a double-quoted name that matches no column as a string ("Bob")."""
        if self.dialect != "sqlite" or not isinstance(node, exp.Column) or node.table:
            return False
        ident = node.this
        if not (isinstance(ident, exp.Identifier) and ident.quoted):
            return False
        if self.schema is not None:
            return True  # the caller found no table in any enclosing scope with this column
        parent = node.parent
        if isinstance(parent, (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Like, exp.ILike)):
            return parent.this is not node
        return isinstance(parent, (exp.In, exp.Between)) and parent.this is not node

    # -- flat resolution (when sqlglot cannot build scopes) --

    def walk_flat(self, tree: exp.Expression) -> None:
        """Without scopes: a column looks for its table among the tables of its own SELECT, then of the
        SELECTs around it, then anywhere in the query."""
        ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
        tables = [t for t in tree.find_all(exp.Table) if _is_real_table(t) and t.name.lower() not in ctes]
        for table in tables:
            self.add_table(table)
        for column in tree.find_all(exp.Column):
            tiers, select = [], column.find_ancestor(exp.Select)
            while select is not None:
                tiers.append([t for t in tables if t.find_ancestor(exp.Select) is select])
                select = select.find_ancestor(exp.Select)
            tiers.append(tables)
            if column.table:
                wanted = column.table.lower()
                target = next((t for tier in tiers for t in tier if t.alias_or_name.lower() == wanted), None)
                target = target or next((t for t in tables if t.name.lower() == wanted), None)
                if target is not None:
                    self.add_column(target, "*" if isinstance(column.this, exp.Star) else column.name)
                elif wanted not in ctes:
                    self._unresolved(f"{column.table}.{column.name}")
                continue
            self._flat_unqualified(column, tiers)

    def _flat_unqualified(self, column: exp.Column, tiers: list[list[exp.Table]]) -> None:
        for tier in tiers:
            having = [t for t in tier if self._has_column(t, column.name)]
            if len({self._schema_table(t).display_name for t in having}) == 1:  # type: ignore[union-attr]
                self.add_column(having[0], column.name)
                return
            if having:
                break  # ambiguous at this level
        if self._is_string_literal(column):
            return
        if self.schema is None and len(tiers[0]) == 1:
            self.add_column(tiers[0][0], column.name)
            return
        self._unresolved(column.name)


def _is_real_table(node: object) -> bool:
    """A table read from the database, not a table function (`json_each(x)`, `generate_series(...)`)."""
    return isinstance(node, exp.Table) and isinstance(node.this, exp.Identifier)


def _enclosing_scope(node: exp.Expression, by_node: dict[int, Scope]) -> Scope | None:
    parent = node.parent
    while parent is not None:
        scope = by_node.get(id(parent))
        if scope is not None:
            return scope
        parent = parent.parent
    return None


def _find_source(scope: Scope | None, qualifier: str) -> exp.Expression | Scope | None:
    """What `qualifier` names in this scope or an enclosing one: an alias first, then a table name."""
    wanted = qualifier.lower()
    looked = scope
    while looked is not None:
        for key, (_, source) in looked.selected_sources.items():
            if key.lower() == wanted:
                return source
        looked = looked.parent
    looked = scope
    while looked is not None:  # `singer.name` written beside `FROM singer AS T1`
        for _, source in looked.selected_sources.values():
            if isinstance(source, exp.Table) and source.name.lower() == wanted:
                return source
        looked = looked.parent
    return None


def _is_projection_alias(scope: Scope, name: str) -> bool:
    expression = scope.expression
    if not isinstance(expression, exp.Select):
        return False
    return any(isinstance(p, exp.Alias) and p.alias.lower() == name.lower() for p in expression.expressions)


def _output_names(scope: Scope) -> set[str] | None:
    """The column names a derived table or CTE exposes; None when a `*` hides them."""
    listed = _alias_columns(scope)
    if listed:
        return {c.lower() for c in listed}
    select = _leftmost_select(scope.expression)
    if select is None:
        return None
    names: set[str] = set()
    for projection in select.expressions:
        if _is_star(projection):
            return None
        names.add(projection.alias_or_name.lower())
    return names


def _alias_columns(scope: Scope) -> list[str]:
    """The column list written after a CTE's or derived table's name: `WITH r(n) AS (...)`."""
    holder = scope.expression.parent
    while isinstance(holder, exp.SetOperation):  # a recursive CTE's self-reference is scoped to its anchor
        holder = holder.parent
    alias = holder.args.get("alias") if isinstance(holder, (exp.CTE, exp.Subquery)) else None
    return [c.name for c in alias.columns] if isinstance(alias, exp.TableAlias) else []


def _is_star(projection: exp.Expression) -> bool:
    """`*` or `T.*` in a select list (not COUNT(*))."""
    return isinstance(projection, exp.Star) or (
        isinstance(projection, exp.Column) and isinstance(projection.this, exp.Star)
    )


def _leftmost_select(node: exp.Expression) -> exp.Select | None:
    while isinstance(node, (exp.SetOperation, exp.Subquery)):
        node = node.this
    return node if isinstance(node, exp.Select) else None


# ---- 4. hardness ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hardness:
    """Spider's hardness (evaluation.py `eval_hardness`) re-derived on sqlglot's tree, plus the counts
    the pipeline uses to decide whether a query is hard enough for continuation writing.

    Spider reads its counts off the *top* query only: for `A UNION B` that is A, and B is one nested
    query; a derived table in FROM is one more table unit, not nesting. Mapping to its parser's fields:
      component1 = [WHERE] + [GROUP BY] + [ORDER BY] + [LIMIT] + (FROM items - 1) + ORs + LIKEs
                   (ORs and LIKEs counted in ON, WHERE and HAVING conditions)
      component2 = subqueries that are operands of ON/WHERE/HAVING conditions + [set operation]
                   (+ CTEs, which Spider's grammar lacks; each counts as one nested query)
      others     = [aggregates > 1] + [select items > 1] + [WHERE conditions > 1] + [GROUP BY items > 1]
    Spider's aggregate count keeps its quirks, so that levels match the official ones: a select item,
    GROUP BY item or ORDER BY operand counts when its outermost function is one of COUNT/MAX/MIN/SUM/AVG;
    a WHERE condition counts when negated (NOT IN, NOT LIKE: Spider tests the not-flag); HAVING counts
    its AND/OR connectors and negated conditions, not its aggregates.
    """

    level: str  # "easy" | "medium" | "hard" | "extra"
    tables: int  # distinct tables read anywhere in the query
    joins: int  # top query: FROM items beyond the first
    nesting: int  # deepest query inside another (subquery, derived table, CTE); 0 when flat
    set_operations: int  # UNION/INTERSECT/EXCEPT anywhere
    subqueries: int  # top query: subqueries inside ON/WHERE/HAVING conditions
    where_conditions: int
    group_by: int
    having: bool
    order_by: bool
    limit: bool
    aggregates: int  # Spider's count (see above)
    component1: int
    component2: int
    others: int

    @property
    def is_hard(self) -> bool:
        """ROUTE's trigger for continuation writing: three or more tables, nesting, or a set operation."""
        return self.tables >= 3 or self.nesting > 0 or self.set_operations > 0


def hardness(sql: str, dialect: str) -> Hardness:
    """Spider hardness and structure counts of one query. Raises ValueError when it does not parse."""
    tree = _parse_query(sql, dialect)
    if tree is None:
        raise ValueError(f"could not parse as one {dialect} query")
    top = _leftmost_select(tree)
    set_op = isinstance(_unwrap(tree), exp.SetOperation)
    if top is None:  # VALUES: nothing Spider grades
        top = exp.Select()

    where = top.args.get("where")
    having = top.args.get("having")
    group = top.args.get("group")
    joins = top.args.get("joins") or []
    from_ = top.args.get("from_") or top.args.get("from")
    on_conditions = [j.args["on"] for j in joins if j.args.get("on") is not None]

    where_leaves, where_ors = _condition_leaves(where.this if where is not None else None)
    having_leaves, having_ors = _condition_leaves(having.this if having is not None else None)
    on_leaves, on_ors = [], 0
    for cond in on_conditions:
        leaves, ors = _condition_leaves(cond)
        on_leaves += leaves
        on_ors += ors
    all_leaves = on_leaves + where_leaves + having_leaves

    table_units = (1 if from_ is not None else 0) + len(joins)
    likes = sum(1 for leaf in all_leaves if isinstance(_strip_not(leaf), (exp.Like, exp.ILike)))
    group_exprs = group.expressions if group is not None else []
    group_items = len(group_exprs)
    order = top.args.get("order")
    component1 = (
        (where is not None) + (group_items > 0) + (order is not None) + (top.args.get("limit") is not None)
        + max(table_units - 1, 0) + on_ors + where_ors + having_ors + likes
    )

    subqueries = sum(_operand_subqueries(leaf) for leaf in all_leaves)
    with_ = tree.args.get("with_") or tree.args.get("with")
    ctes = len(with_.expressions) if with_ is not None else 0
    component2 = subqueries + int(set_op) + ctes

    aggregates = (
        sum(_is_agg(p.unalias()) for p in top.expressions)
        + sum(isinstance(leaf, exp.Not) for leaf in where_leaves)
        + sum(_is_agg(g) for g in group_exprs)
        + sum(_order_aggs(o.this) for o in (order.expressions if order is not None else []))
        + max(len(having_leaves) - 1, 0) + sum(isinstance(leaf, exp.Not) for leaf in having_leaves)
    )
    others = (aggregates > 1) + (len(top.expressions) > 1) + (len(where_leaves) > 1) + (group_items > 1)

    return Hardness(
        level=_spider_level(component1, component2, others),
        tables=len({t.name.lower() for t in _real_tables(tree)}),
        joins=max(table_units - 1, 0),
        nesting=_nesting(tree),
        set_operations=sum(1 for _ in tree.find_all(exp.SetOperation)),
        subqueries=subqueries,
        where_conditions=len(where_leaves),
        group_by=group_items,
        having=having is not None,
        order_by=order is not None,
        limit=top.args.get("limit") is not None,
        aggregates=aggregates,
        component1=component1,
        component2=component2,
        others=others,
    )


def _spider_level(c1: int, c2: int, others: int) -> str:
    """eval_hardness, verbatim in its logic."""
    if c1 <= 1 and others == 0 and c2 == 0:
        return "easy"
    if (others <= 2 and c1 <= 1 and c2 == 0) or (c1 <= 2 and others < 2 and c2 == 0):
        return "medium"
    if (others > 2 and c1 <= 2 and c2 == 0) or (2 < c1 <= 3 and others <= 2 and c2 == 0) or (
        c1 <= 1 and others == 0 and c2 <= 1
    ):
        return "hard"
    return "extra"


def _unwrap(node: exp.Expression) -> exp.Expression:
    while isinstance(node, exp.Subquery):
        node = node.this
    return node


def _condition_leaves(cond: exp.Expression | None) -> tuple[list[exp.Expression], int]:
    """The predicates joined by AND/OR (through parentheses), and how many ORs join them."""
    if cond is None:
        return [], 0
    if isinstance(cond, exp.Paren):
        return _condition_leaves(cond.this)
    if isinstance(cond, exp.Connector):  # And, Or
        left, left_ors = _condition_leaves(cond.this)
        right, right_ors = _condition_leaves(cond.expression)
        return left + right, left_ors + right_ors + isinstance(cond, exp.Or)
    return [cond], 0


def _strip_not(node: exp.Expression) -> exp.Expression:
    while isinstance(node, (exp.Not, exp.Paren)):
        node = node.this
    return node


def _operand_subqueries(leaf: exp.Expression) -> int:
    """Queries used as operands of one condition (`x IN (SELECT ...)`, `x > (SELECT ...)`), not
    counting queries nested inside those."""
    count = 0
    for node in leaf.find_all(exp.Select, exp.SetOperation):
        parent = node.parent
        while parent is not None and parent is not leaf and not isinstance(parent, (exp.Select, exp.SetOperation)):
            parent = parent.parent
        if parent is leaf:
            count += 1
    return count


def _is_agg(node: exp.Expression) -> bool:
    while isinstance(node, exp.Paren):
        node = node.this
    return isinstance(node, _SPIDER_AGGS)


def _order_aggs(node: exp.Expression) -> int:
    """Spider's ORDER BY unit is `col_unit [op col_unit]`: aggregates on either side of one operator."""
    if isinstance(node, (exp.Add, exp.Sub, exp.Mul, exp.Div)):
        return _is_agg(node.this) + _is_agg(node.expression)
    return int(_is_agg(node))


def _real_tables(tree: exp.Expression) -> Iterator[exp.Table]:
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    for table in tree.find_all(exp.Table):
        if _is_real_table(table) and table.name.lower() not in ctes:
            yield table


def _nesting(tree: exp.Expression) -> int:
    """How many SELECTs enclose the deepest SELECT (set operation branches are siblings, not nested)."""
    deepest = 0
    for select in tree.find_all(exp.Select):
        depth, parent = 0, select.parent
        while parent is not None:
            if isinstance(parent, exp.Select):
                depth += 1
            parent = parent.parent
        deepest = max(deepest, depth)
    return deepest


# ---- 5. truncation for continuation writing -------------------------------------------------------

_CLAUSE_TOKENS = frozenset(
    {TokenType.FROM, TokenType.WHERE, TokenType.GROUP_BY, TokenType.HAVING, TokenType.ORDER_BY,
     TokenType.LIMIT, TokenType.OFFSET, TokenType.ON, TokenType.UNION, TokenType.INTERSECT, TokenType.EXCEPT}
)
_SET_OPS = frozenset({TokenType.UNION, TokenType.INTERSECT, TokenType.EXCEPT})
# Words that may stand before JOIN and belong with it: cut before `LEFT OUTER JOIN`, not inside it.
_JOIN_PREFIX = frozenset(
    {TokenType.LEFT, TokenType.RIGHT, TokenType.FULL, TokenType.INNER, TokenType.OUTER, TokenType.CROSS,
     TokenType.NATURAL, TokenType.SEMI, TokenType.ANTI}
)
_QUERY_OPENERS = frozenset({TokenType.SELECT, TokenType.WITH, TokenType.VALUES})
_CONDITION_CLAUSES = frozenset({TokenType.WHERE, TokenType.HAVING, TokenType.ON})


@dataclass
class _Frame:
    """One level of parentheses while scanning tokens: is it a query, which clause are we in."""

    query: bool
    clause: TokenType | None = None
    betweens: int = 0  # BETWEENs whose AND is still to come
    cases: int = 0  # open CASE ... END


def truncation_points(sql: str, dialect: str) -> list[int]:
    """Offsets into `sql` where it can be cut at a clause boundary: before FROM, WHERE, GROUP BY, HAVING,
    ORDER BY, LIMIT, OFFSET, a join (with its LEFT/INNER/... words), ON, UNION/INTERSECT/EXCEPT and the
    query after them, the main query after a WITH clause, and an AND/OR joining WHERE/HAVING/ON
    conditions (not BETWEEN's AND, not inside CASE or parentheses); the same inside subqueries and CTEs,
    plus right after a subquery's opening parenthesis. Window specs and function arguments
    (`OVER (ORDER BY ...)`, `EXTRACT(YEAR FROM ...)`) are not clauses.

    Offsets are token starts from sqlglot's tokenizer, so never inside a literal, identifier or
    comment. Sorted, each with 0 < offset < len(sql) and a non-blank prefix before it."""
    tokens = _tokens(sql, dialect)
    points: set[int] = set()
    stack = [_Frame(query=True)]
    for i, tok in enumerate(tokens):
        kind = tok.token_type
        frame = stack[-1]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if kind == TokenType.L_PAREN:
            opens_query = nxt is not None and nxt.token_type in _QUERY_OPENERS
            if opens_query and nxt is not None:
                points.add(nxt.start)
            stack.append(_Frame(query=opens_query))
            continue
        if kind == TokenType.R_PAREN:
            if len(stack) > 1:
                stack.pop()
            continue
        if not frame.query:
            continue
        if kind == TokenType.CASE:
            frame.cases += 1
        elif kind == TokenType.END and frame.cases:
            frame.cases -= 1
        elif kind == TokenType.BETWEEN:
            frame.betweens += 1
        elif kind == TokenType.SELECT and i > 0 and tokens[i - 1].token_type == TokenType.R_PAREN:
            points.add(tok.start)  # the main query after `WITH name AS (...)`
        elif kind in _CLAUSE_TOKENS:
            points.add(tok.start)
            frame.clause = kind
            if kind in _SET_OPS:
                frame.clause = None
                after = nxt
                if after is not None and after.token_type in (TokenType.ALL, TokenType.DISTINCT):
                    after = tokens[i + 2] if i + 2 < len(tokens) else None
                if after is not None and after.token_type in _QUERY_OPENERS:
                    points.add(after.start)
        elif kind == TokenType.JOIN:
            j = i
            while j > 0 and tokens[j - 1].token_type in _JOIN_PREFIX:
                j -= 1
            points.add(tokens[j].start)
            frame.clause = TokenType.JOIN
        elif kind in (TokenType.AND, TokenType.OR):
            if kind == TokenType.AND and frame.betweens:
                frame.betweens -= 1
            elif frame.clause in _CONDITION_CLAUSES and not frame.cases:
                points.add(tok.start)
    return sorted(p for p in points if 0 < p < len(sql) and sql[:p].strip())


def token_boundaries(sql: str, dialect: str) -> list[int]:
    """Every token start after the first: the fallback cut points when a query has no clause boundary."""
    return sorted({t.start for t in _tokens(sql, dialect)[1:] if 0 < t.start < len(sql)})


def truncate(sql: str, dialect: str, fraction: float | None = None, at: int | None = None) -> str:
    """A real prefix of `sql` (its own text, trailing space removed) cut at the clause boundary nearest
    the requested point: `at` (a character offset) or `fraction` of its length (default one half).
    Without clause boundaries, the nearest token boundary; a single-token query gives ""."""
    if fraction is not None and at is not None:
        raise ValueError("give fraction or at, not both")
    target = at if at is not None else round((0.5 if fraction is None else fraction) * len(sql))
    points = truncation_points(sql, dialect) or token_boundaries(sql, dialect)
    if not points:
        return ""
    best = min(points, key=lambda p: (abs(p - target), p))
    return sql[:best].rstrip()


# ---- 6. dialect checks ----------------------------------------------------------------------------


def validate(sql: str, dialect: str) -> str | None:
    """None when `sql` parses as exactly one query in `dialect`, else a one-line reason."""
    if not sql or not sql.strip():
        return "empty SQL"
    try:
        with quiet_sqlglot():
            statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except SqlglotError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return f"does not parse as {dialect} SQL: {first}"
    except Exception as err:  # noqa: BLE001
        return f"does not parse as {dialect} SQL: {type(err).__name__}"
    statements = [s for s in statements if not isinstance(s, exp.Semicolon)]
    if len(statements) != 1:
        return f"{len(statements)} statements; expected one query"
    if not isinstance(statements[0], _QUERY_ROOTS):
        return f"not a query ({type(statements[0]).__name__.upper()})"
    return None


# Tokens sqlglot's SQLite reader accepts but SQLite itself does not run: the query was written for
# PostgreSQL and must be transpiled (x::date, ILIKE).
_POSTGRES_ONLY_TOKENS = frozenset({TokenType.DCOLON, TokenType.ILIKE})


def normalize_for_dialect(sql: str, dialect: str) -> str:
    """`sql` made fit for `dialect`: unchanged when it already is; otherwise transpiled from the other
    dialect when it parses there (backtick quotes written for SQLite, `::` casts written for PostgreSQL).
    Text that parses in neither is returned unchanged, for the caller's validate() to report."""
    other = "postgres" if dialect == "sqlite" else "sqlite"
    fits = validate(sql, dialect) is None
    postgres_isms = dialect == "sqlite" and any(t.token_type in _POSTGRES_ONLY_TOKENS for t in _tokens(sql, dialect))
    if fits and not postgres_isms:
        return sql
    if validate(sql, other) is not None:
        return sql
    try:
        with quiet_sqlglot():
            return sqlglot.transpile(sql, read=other, write=dialect)[0]
    except Exception:  # noqa: BLE001 - keep what we had; validate() will say what is wrong
        return sql
