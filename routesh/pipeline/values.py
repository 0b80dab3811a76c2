"""The `values` stage: the question's words matched to the values the database stores, so that the model
writes `WHERE city = 'Lyon'` with the stored spelling. Matches are put first among their columns'
example values (the prompt templates are unchanged: only which examples show), and a matched column of
a table that linking keeps is kept too.

    phrases    the question's quoted literals and its 1–4-word runs that neither start nor end with a
               stop word, longest first
    exact      a phrase equal to a stored value, case, accents and punctuation aside ('lyon' → 'Lyon')
    contains   a phrase found as whole words inside a longer value ('tesla' → 'Tesla Motors'), unless
               its words are the schema's own ('city' is inside 'Kansas City', but names a column)
    near       a phrase spelled almost like a value (difflib ratio ≥ NEAR_CUTOFF; 'Franse' → 'France')

Tuned on spider-train with bench/values_recall.py (docs/benchmarks.md).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from typing import Any

from routesh.db.schema import Schema, Table
from routesh.db.values import StoredValue, ValueIndex, normalize
from routesh.pipeline.linking import ReducedSchema
from routesh.pipeline.run import QuestionRun
from routesh.pipeline.stages import Stage
from routesh.sql.repair import words as name_words

MAX_WORDS = 4
NEAR_CUTOFF = 0.9  # 0.75–0.9 found as much on spider-train; 0.9 matched the least noise
MIN_NEAR_CHARS = 4  # shorter words are too often one letter away from some unrelated value
PER_COLUMN = 3  # matched values shown per column
PER_PHRASE = 6  # a phrase held by more values than this (in 'contains') is too common to mean one
MAX_COLUMNS = 8

STOP_WORDS = frozenset("""
a about above after all also an and any are as at be been before below between both but by can could did do
does each either every find for from give had has have how i if in into is it its list many me more most much
my name names no not number of on one or order other our per please return show sorted than that the their
them then there these they this those to total tell under up was we were what when where which while who whom
whose why will with would you your
""".split())

_QUOTED = re.compile(r"\"([^\"]+)\"|(?<!\w)'([^']+)'(?!\w)|“([^”]+)”|‘([^’]+)’")


@dataclass(frozen=True)
class ValueMatch:
    phrase: str  # the question's words, normalized
    stored: StoredValue
    how: str  # "exact" | "contains" | "near"

    def as_artifact(self) -> dict[str, Any]:
        return {"phrase": self.phrase, "table": self.stored.table, "column": self.stored.column,
                "value": self.stored.value, "how": self.how}

    def __str__(self) -> str:
        return f"{self.phrase!r} → {self.stored.table}.{self.stored.column} = {self.stored.value!r}"


def phrases(question: str) -> list[str]:
    """What of the question may be a stored value, longest first, each once."""
    quoted = [normalize(next(g for g in m.groups() if g)) for m in _QUOTED.finditer(question)]
    words = normalize(question).split()
    runs = []
    for n in range(MAX_WORDS, 0, -1):
        for i in range(len(words) - n + 1):
            gram = words[i:i + n]
            if gram[0] in STOP_WORDS or gram[-1] in STOP_WORDS:
                continue
            if n == 1 and (len(gram[0]) < 2 or gram[0].isdigit()):
                continue
            runs.append(" ".join(gram))
    return list(dict.fromkeys(p for p in quoted + runs if p))


def find(index: ValueIndex, question: str) -> list[ValueMatch]:
    """The question's phrases matched to stored values: exact ones first, then whole-word containment,
    then near spellings; a phrase inside an already matched longer phrase is not looked up again."""
    found: list[ValueMatch] = []
    matched: list[str] = []
    pending = phrases(question)
    schema_words = _schema_words(index.schema)
    for how in ("exact", "contains", "near"):
        for phrase in pending:
            if any(f" {phrase} " in f" {longer} " for longer in matched):
                continue
            if how == "contains" and all(_singular(w) in schema_words for w in phrase.split()):
                continue
            hits = _lookup(index, phrase, how)
            if hits:
                found += [ValueMatch(phrase, stored, how) for stored in hits]
                matched.append(phrase)
    return _bounded(found)


def _singular(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def _schema_words(schema: Schema) -> set[str]:
    names = [t.name for t in schema.tables] + [c.name for t in schema.tables for c in t.columns]
    return {_singular(w) for name in names for w in name_words(name)}


def _lookup(index: ValueIndex, phrase: str, how: str) -> list[StoredValue]:
    if how == "exact":
        return index.exact(phrase)
    if how == "contains":
        held = index.containing(phrase)
        return held if len(held) <= PER_PHRASE else []
    if len(phrase) < MIN_NEAR_CHARS:
        return []
    near = sorted(index.near(phrase, NEAR_CUTOFF), key=lambda rv: -rv[0])
    best = near[0][0] if near else 0.0
    return [stored for ratio, stored in near if ratio == best]


def _bounded(found: list[ValueMatch]) -> list[ValueMatch]:
    per_column: dict[tuple[str, str], list[ValueMatch]] = {}
    for match in found:
        shown = per_column.setdefault((match.stored.table, match.stored.column), [])
        if len(shown) < PER_COLUMN and all(m.stored.value != match.stored.value for m in shown):
            shown.append(match)
    return [m for column in list(per_column.values())[:MAX_COLUMNS] for m in column]


def with_matches(schema: Schema, matches: list[ValueMatch]) -> Schema:
    """A copy of `schema` whose matched columns show their matched values first among their examples."""
    values: dict[tuple[str, str], list[str]] = {}
    for m in matches:
        values.setdefault((m.stored.table, m.stored.column), []).append(m.stored.value)
    if not values:
        return schema
    tables = []
    for table in schema.tables:
        columns = tuple(
            replace(c, samples=_first(values[(table.display_name, c.name)], c.samples))
            if (table.display_name, c.name) in values else c
            for c in table.columns)
        tables.append(replace(table, columns=columns) if columns != table.columns else table)
    return replace(schema, tables=tuple(tables))


def _first(matched: list[str], samples: tuple[Any, ...]) -> tuple[Any, ...]:
    rest = [s for s in samples if s not in matched]
    return tuple(matched + rest)[:max(len(samples), len(matched))]


def matched_columns(matches: list[ValueMatch]) -> ReducedSchema:
    out: ReducedSchema = {}
    for m in matches:
        out.setdefault(m.stored.table, set()).add(m.stored.column)
    return out


def _named_by(question: str) -> set[str]:
    return {_singular(w) for w in normalize(question).split() if w not in STOP_WORDS}


def _mentioned(words: set[str], table: Table) -> bool:
    return any(_singular(w) in words for w in name_words(table.name))


def link_values(run: QuestionRun, index: ValueIndex) -> None:
    """Index more of the database within the time budget (tables the question names first), match the
    question, and show the matches in the schema the rest of the run reads."""
    run.starting(Stage.VALUES, "matching values")
    started = time.perf_counter()
    words = _named_by(run.question)
    index.extend(run.database, budget_s=run.options.values_budget, first=lambda t: _mentioned(words, t))
    matches = find(index, run.question)
    run.schema = with_matches(run.schema, matches)
    run.matched = matched_columns(matches)
    summary = ", ".join(str(m) for m in matches) or "no stored value matches the question"
    if not index.complete:
        summary += f" (index incomplete: {index.size} values so far)"
    run.emit(Stage.VALUES, summary, artifact=[m.as_artifact() for m in matches], accepted=True if matches else None,
             seconds=time.perf_counter() - started)
