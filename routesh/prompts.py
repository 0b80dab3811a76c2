"""THE prompt text: the schema serializer, execution feedback, and the four ROUTE task prompts.

Inference (routesh/pipeline) and training (finetune/) both render through this module, so the model is
trained on exactly the text it sees (DESIGN.md decision 1). Changing any output here changes what the
shipped adapter was trained on: retrain it.

Every task prompt is two messages: a system message holding the dialect and the schema, identical
across the four tasks for the same schema text, and a user message holding the task. Engines reuse the
computation of the shared system message (see routesh/engine/hf.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from routesh.db.base import Result
from routesh.db.schema import Column, Schema, Table
from routesh.engine.base import ChatRequest

DIALECT_NAMES = {"sqlite": "SQLite", "postgres": "PostgreSQL"}
NC_CORRECT = "correct"
NC_WRONG = "wrong, the correct SQL is:"
_FEEDBACK_ROWS = 3
_FEEDBACK_CHARS = 600
_SAMPLE_CHARS = 40

# Words that must be quoted when used as names, in both dialects (a conservative common core).
_RESERVED = frozenset(
    """all analyse analyze and any array as asc between both by case cast check collate column constraint create
    cross current_date current_time current_timestamp default delete desc distinct do drop else end except exists
    false fetch for foreign from full grant group having in index inner insert intersect into is join key left
    like limit natural not null offset on only or order outer primary references right select set some table then
    to true union unique update user using values when where window with""".split()
)
# Question words that say nothing about which table or column is meant.
_STOPWORDS = frozenset(
    """a about all also an and any are as at be by do does each every for from give has have how in is it list
    me of on or show tell than that the their them there these this those to was we were what when where which
    who whom whose why with""".split()
)
_PLAIN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_WORDS = re.compile(r"[A-Za-z][a-z]*|[0-9]+")


def dialect_name(dialect: str) -> str:
    return DIALECT_NAMES.get(dialect, dialect)


def quote(name: str, dialect: str) -> str:
    """A name as the dialect needs it written: quoted when it is not a plain lower/any-case word, is
    reserved, or (PostgreSQL) has upper-case letters that would otherwise fold to lower case."""
    needs = (not _PLAIN_NAME.match(name) or name.lower() in _RESERVED
             or (dialect == "postgres" and name != name.lower()))
    return '"' + name.replace('"', '""') + '"' if needs else name


def approx_tokens(text: str) -> int:
    """A tokenizer-free estimate (about 3.5 characters a token for code-like text); pass the model's
    own counter where exactness matters."""
    return (len(text) * 2 + 6) // 7


# ---- the schema -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Line:
    text: str
    table: str
    column: str | None  # None for the table's header, keys and footer
    is_key: bool  # primary or foreign key column: never dropped while its table stays


def render_schema(
    schema: Schema,
    *,
    keep: Mapping[str, Collection[str]] | None = None,
    question: str = "",
    samples: int = 3,
    budget: int | None = None,
    count_tokens: Callable[[str], int] = approx_tokens,
) -> str:
    """The schema as CREATE TABLE statements in its dialect, with real primary and foreign keys and a few
    example values per column.

    keep: a reduced schema (table → columns) as the pipeline's linking step chose it; join keys of kept
    tables are always shown. budget: at most this many tokens; over it, examples go first, then the
    columns least related to `question`, then whole tables, always deterministically and never a join
    key of a kept table."""
    tables = _chosen_tables(schema, keep)
    for sample_count in sorted({samples, min(samples, 1), 0}, reverse=True):
        lines = [line for table in tables for line in _table_lines(table, schema.dialect, keep, sample_count)]
        if budget is None or _cost(lines, count_tokens) <= budget:
            return _join(lines)
    return _join(_fit(lines, budget, question, count_tokens))


def _chosen_tables(schema: Schema, keep: Mapping[str, Collection[str]] | None) -> list[Table]:
    if keep is None:
        return list(schema.tables)
    wanted = {name.lower() for name in keep}
    return [t for t in schema.tables if t.display_name.lower() in wanted or t.name.lower() in wanted]


def _table_lines(table: Table, dialect: str, keep: Mapping[str, Collection[str]] | None, samples: int) -> list[_Line]:
    keys = set(table.primary_key) | {c for fk in table.foreign_keys for c in fk.columns}
    wanted = _kept_columns(table, keep)
    columns = [c for c in table.columns if wanted is None or c.name.lower() in wanted or c.name in keys]
    single_pk = len(table.primary_key) == 1
    name = table.display_name
    kind = "VIEW" if "view" in table.kind else "TABLE"
    lines = [_Line(f"CREATE {kind} {_quote_display(name, dialect)} (", name, None, True)]
    for column in columns:
        text = f"  {quote(column.name, dialect)} {column.type or 'ANY'}"
        if single_pk and column.primary_key:
            text += " PRIMARY KEY"
        text += ","
        examples = _examples(column, samples)
        if examples:
            text += f" -- examples: {examples}"
        lines.append(_Line(text, name, column.name, column.name in keys))
    if table.primary_key and not single_pk:
        cols = ", ".join(quote(c, dialect) for c in table.primary_key)
        lines.append(_Line(f"  PRIMARY KEY ({cols}),", name, None, True))
    for fk in table.foreign_keys:
        src = ", ".join(quote(c, dialect) for c in fk.columns)
        dst = ", ".join(quote(c, dialect) for c in fk.ref_columns)
        lines.append(_Line(f"  FOREIGN KEY ({src}) REFERENCES {_quote_display(fk.ref_table, dialect)} ({dst}),",
                           name, None, True))
    lines.append(_Line(");", name, None, True))
    return lines


def _kept_columns(table: Table, keep: Mapping[str, Collection[str]] | None) -> set[str] | None:
    if keep is None:
        return None
    for key, columns in keep.items():
        if key.lower() in (table.display_name.lower(), table.name.lower()):
            return {c.lower() for c in columns}
    return set()


def _quote_display(display_name: str, dialect: str) -> str:
    return ".".join(quote(part, dialect) for part in display_name.split(".")) if "." in display_name else quote(display_name, dialect)


def _examples(column: Column, samples: int) -> str:
    shown = []
    for value in column.samples[:samples]:
        if isinstance(value, str):
            text = value if len(value) <= _SAMPLE_CHARS else value[: _SAMPLE_CHARS - 3] + "..."
            shown.append("'" + text.replace("'", "''").replace("\n", " ") + "'")
        else:
            shown.append(str(value))
    return ", ".join(shown)


def _join(lines: Sequence[_Line]) -> str:
    out, previous = [], None
    for line in lines:
        if line.text == ");" and out and line.table == previous:
            out[-1] = _drop_trailing_comma(out[-1])
        if line.table != previous and out:
            out.append("")
        out.append(line.text)
        previous = line.table
    return "\n".join(out)


def _drop_trailing_comma(text: str) -> str:
    """`  name TEXT, -- examples: ...` → `  name TEXT -- examples: ...` for the last item of a table."""
    head, sep, comment = text.partition(" -- ")
    return head.rstrip().removesuffix(",") + (sep + comment if sep else "")


def _cost(lines: Sequence[_Line], count_tokens: Callable[[str], int]) -> int:
    return count_tokens(_join(lines))


def _fit(lines: list[_Line], budget: int, question: str, count_tokens: Callable[[str], int]) -> list[_Line]:
    """Cut until within budget, least relevant to the question first, in tiers: unrelated columns of
    unrelated tables; unrelated tables; unrelated columns of related tables; related columns, weakest
    first; related tables, weakest first (one table always stays). Keys go only with their table. Each
    line is counted once (a newline is a token) and the total kept as lines go."""
    words = _words(question)
    cost = [count_tokens(line.text) + 1 for line in lines]
    total = sum(cost)
    tables = list(dict.fromkeys(line.table for line in lines))
    order = {t: i for i, t in enumerate(tables)}
    column_score = {i: _score(l.column, words) for i, l in enumerate(lines) if l.column}
    table_score = {t: _score(t, words) for t in tables}
    for i, score in column_score.items():
        table_score[lines[i].table] = max(table_score[lines[i].table], score)

    cuts: list[tuple[tuple[int, ...], list[int]]] = []  # (sort key, line indexes to drop)
    for i, line in enumerate(lines):
        if line.column and not line.is_key:
            own, related = column_score[i], table_score[line.table] > 0
            tier = 3 if own else (2 if related else 0)
            cuts.append(((tier, own, -order[line.table], -i), [i]))
    by_score = sorted(tables, key=lambda t: (table_score[t], -order[t]))
    for t in by_score[:-1]:  # the most relevant table always stays
        tier = 4 if table_score[t] else 1
        cuts.append(((tier, table_score[t], -order[t], 0), [i for i, l in enumerate(lines) if l.table == t]))
    alive = [True] * len(lines)
    for _, indexes in sorted(cuts):
        if total <= budget:
            break
        for i in indexes:
            if alive[i]:
                alive[i], total = False, total - cost[i]
    return [line for i, line in enumerate(lines) if alive[i]]


def question_words(text: str) -> list[str]:
    """The words of `text` that can say what is meant: stemmed, lower case, without stop words, in order."""
    return [_stem(w) for w in _WORDS.findall(text.replace("_", " ")) if len(w) > 1 and w.lower() not in _STOPWORDS]


def _words(text: str) -> set[str]:
    return set(question_words(text))


def _score(name: str | None, words: set[str]) -> int:
    return len(_words(name or "") & words)


def _stem(word: str) -> str:
    word = word.lower()
    for suffix in ("ies", "es", "s"):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


# ---- execution feedback ----------------------------------------------------------------------------


def render_feedback(result: Result | None = None, error: str | None = None, schema: Schema | None = None) -> str:
    """What noise correction is told about a candidate: the database's error, or a short summary of what
    it returned (row count, columns, first rows, empty and all-NULL flags). Given the schema, an unknown
    column or table is followed by where such a name does exist (a small model's commonest error is a
    column taken from the wrong table of a join)."""
    if error is not None:
        where = _where_names_exist(error, schema) if schema is not None else ""
        return _clip(f"Execution failed: {error}" + (f" {where}" if where else ""))
    if result is None:
        return "The query was not run."
    if not result.rows:
        return f"The query ran and returned no rows (columns: {', '.join(result.columns)})."
    more = "+" if result.truncated else ""
    parts = [f"The query ran and returned {result.row_count}{more} row{'s' if result.row_count != 1 else ''} "
             f"(columns: {', '.join(result.columns)})."]
    shown = "; ".join("(" + ", ".join(_value(v) for v in row) + ")" for row in result.rows[:_FEEDBACK_ROWS])
    parts.append(f"First rows: {shown}.")
    null_columns = [c for i, c in enumerate(result.columns) if all(row[i] is None for row in result.rows)]
    if null_columns:
        parts.append(f"Every value is NULL in: {', '.join(null_columns)}.")
    return _clip(" ".join(parts))


# SQLite: "no such column: T3.pet_type"; PostgreSQL: 'column t3.pet_type does not exist', 'column "x" does not exist'
_UNKNOWN_COLUMN = re.compile(r'no such column: ([\w."]+)|column ([\w."]+) does not exist', re.IGNORECASE)
_UNKNOWN_TABLE = re.compile(r'no such table: ([\w."]+)|relation ([\w."]+) does not exist', re.IGNORECASE)
_CLOSE_NAMES = 4


def _where_names_exist(error: str, schema: Schema) -> str:
    """"PetType is a column of Pets." / "No table has a column pet_name; similar: Pets.PetName"."""
    import difflib

    if match := _UNKNOWN_COLUMN.search(error):
        name = (match.group(1) or match.group(2)).replace('"', "").split(".")[-1]
        homes = [t.display_name for t in schema.tables if t.column(name) is not None]
        if homes:
            return f"{name} is a column of {', '.join(homes)}."
        every = {f"{t.display_name}.{c.name}": c.name.lower() for t in schema.tables for c in t.columns}
        close = difflib.get_close_matches(name.lower(), set(every.values()), n=_CLOSE_NAMES, cutoff=0.6)
        similar = [qualified for qualified, bare in every.items() if bare in close][:_CLOSE_NAMES]
        return f"No table has a column {name}" + (f"; similar: {', '.join(similar)}." if similar else ".")
    if match := _UNKNOWN_TABLE.search(error):
        name = (match.group(1) or match.group(2)).replace('"', "")
        close = difflib.get_close_matches(name.lower(), [t.display_name.lower() for t in schema.tables],
                                          n=_CLOSE_NAMES, cutoff=0.6)
        similar = [t.display_name for t in schema.tables if t.display_name.lower() in close]
        return f"There is no table {name}" + (f"; similar: {', '.join(similar)}." if similar else ".")
    return ""


def _value(value: Any) -> str:
    if value is None:
        return "NULL"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= _SAMPLE_CHARS else text[: _SAMPLE_CHARS - 3] + "..."


def _clip(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _FEEDBACK_CHARS else text[: _FEEDBACK_CHARS - 3] + "..."


# ---- the four tasks ----------------------------------------------------------------------------------


def system_message(schema_text: str, dialect: str) -> str:
    return (f"You are an expert in {dialect_name(dialect)} SQL. You answer questions about this "
            f"{dialect_name(dialect)} database.\n\n{schema_text}")


def _ask(schema_text: str, dialect: str, task: str) -> ChatRequest:
    return ChatRequest.of(("system", system_message(schema_text, dialect)), ("user", task))


def _question(question: str, hint: str | None, context: Sequence[Turn] = ()) -> str:
    """The question, after the conversation it follows (if any), labelled a follow-up there."""
    label = "Follow-up question" if context else "Question"
    return (f"{_context_text(context)}{label}: {question.strip()}"
            + (f"\nHint: {hint.strip()}" if hint and hint.strip() else ""))


@dataclass(frozen=True)
class Example:
    """An earlier question with the SQL that answered it (a remembered query), shown before a new question."""

    question: str
    sql: str


@dataclass(frozen=True)
class Turn:
    """An earlier question of the conversation, with the SQL that the user ran for it (as run: edited or not)
    and its result's columns; a follow-up question is asked after the last few."""

    question: str
    sql: str
    columns: tuple[str, ...] = ()


def _context_text(context: Sequence[Turn]) -> str:
    if not context:
        return ""
    shown = "\n\n".join(f"Question: {t.question.strip()}\nSQL: {' '.join(t.sql.split())}"
                         + (f"\nColumns: {', '.join(t.columns)}" if t.columns else "") for t in context)
    return f"The conversation so far, each question with the SQL that answered it:\n\n{shown}\n\n"


def ts_prompt(schema_text: str, dialect: str, question: str, hint: str | None = None,
              examples: Sequence[Example] = (), context: Sequence[Turn] = ()) -> ChatRequest:
    """Text-to-SQL: one query answering the question; `examples`, earlier questions on this database with the
    SQL that answered them (remembered queries), come first, the closest last; then `context`, the
    conversation the question follows (every task takes it)."""
    return _ask(schema_text, dialect, f"{_examples_text(examples)}{_question(question, hint, context)}\n\nWrite one "
                f"{dialect_name(dialect)} query that answers the question. Reply with only the SQL in a ```sql "
                "block, no explanation.")


def _examples_text(examples: Sequence[Example]) -> str:
    if not examples:
        return ""
    shown = "\n\n".join(f"Question: {e.question.strip()}\nSQL: {' '.join(e.sql.split())}" for e in examples)
    return f"Questions answered before on this database, with their SQL:\n\n{shown}\n\n"


def sl_prompt(schema_text: str, dialect: str, question: str, hint: str | None = None,
              context: Sequence[Turn] = ()) -> ChatRequest:
    """Schema linking: the tables and columns the answer needs."""
    return _ask(schema_text, dialect, f"{_question(question, hint, context)}\n\nWhich tables and columns does the SQL "
                'answering this question need? Reply with only one line of JSON, no explanation: '
                '{"table": ["column", ...], ...}.')


def nc_prompt(schema_text: str, dialect: str, question: str, sql: str, feedback: str,
              hint: str | None = None, context: Sequence[Turn] = ()) -> ChatRequest:
    """Noise correction: is the candidate right, given what it returned? If not, the corrected SQL."""
    return _ask(schema_text, dialect, f"{_question(question, hint, context)}\n\nCandidate SQL:\n```sql\n"
                f"{sql.strip()}\n```\n"
                f"Execution: {feedback}\n\nIs the candidate SQL correct for the question? Reply "
                f"only \"{NC_CORRECT}\", or \"{NC_WRONG}\" followed by the corrected SQL in a ```sql block; no "
                "explanation.")


def cw_prompt(schema_text: str, dialect: str, question: str, sql_prefix: str, hint: str | None = None,
              context: Sequence[Turn] = ()) -> ChatRequest:
    """Continuation writing: finish a query from its beginning."""
    return _ask(schema_text, dialect, f"{_question(question, hint, context)}\n\nHere is the beginning of a "
                f"{dialect_name(dialect)} query that answers the question:\n```sql\n{sql_prefix.rstrip()}\n```\n"
                "Write the complete query. Reply with only the SQL in a ```sql block, no explanation.")


# The replies the tasks are trained to give (finetune/ renders its targets with these).


def sql_reply(sql: str) -> str:
    return f"```sql\n{sql.strip().rstrip(';').strip()}\n```"


def sl_reply(usage: Mapping[str, Collection[str]]) -> str:
    return json.dumps({table: sorted(columns) for table, columns in usage.items()}, ensure_ascii=False)


def nc_reply(correct: bool, sql: str | None = None) -> str:
    if correct:
        return NC_CORRECT
    if not sql:
        raise ValueError("a 'wrong' verdict needs the corrected SQL")
    return f"{NC_WRONG}\n{sql_reply(sql)}"


def parse_sl_reply(reply: str) -> dict[str, list[str]] | None:
    """The JSON object in a schema-linking reply (the first {...} that parses), or None."""
    for match in re.finditer(r"\{", reply):
        depth = 0
        for end in range(match.start(), len(reply)):
            depth += {"{": 1, "}": -1}.get(reply[end], 0)
            if depth == 0:
                try:
                    data = json.loads(reply[match.start(): end + 1])
                except json.JSONDecodeError:
                    break
                if isinstance(data, dict):
                    return {str(t): [str(c) for c in (cols if isinstance(cols, list) else [cols])]
                            for t, cols in data.items()}
                break
    return None


def parse_nc_verdict(reply: str) -> bool | None:
    """True for "correct", False for "wrong ...", None when the reply says neither (the corrected SQL
    itself is extracted by routesh.sql.extract)."""
    head = reply.strip().lower()
    if head.startswith("wrong") or NC_WRONG in head:
        return False
    if head.startswith(NC_CORRECT):
        return True
    return None
