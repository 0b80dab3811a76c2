"""Follow-up items for fine-tuning, from Spider train (SParC's train set is not here, and its dev subset is kept
for tuning and measuring): a question is paired with another question of its database whose SQL its own extends,
shown as the conversation it follows, the way the pipeline shows one (prompts.ts_prompt(..., context=)).

"Extends": the other query reads no table the question's does not, is shorter, and most of its SQL tokens
stand in the question's (SELECT name FROM singer → SELECT name FROM singer WHERE age > 30). Of those, the one
sharing the most tokens is taken (ties: the lower index). The question itself stays Spider's, a whole question:
what the item teaches is to build on the SQL that ran before, which a user's follow-up needs most."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from routesh.evaluate.datasets import Example
from routesh.sql.parse import squash, tokenize
from routesh.sql.usage import tables_and_columns

DIALECT = "sqlite"
_SHARED = 0.7  # of the earlier query's tokens, at least this share must stand in the question's


@dataclass(frozen=True)
class _Query:
    index: int
    question: str
    sql: str
    tables: frozenset[str]
    tokens: Counter[str]


def earlier_turns(everything: Sequence[Example]) -> Callable[[Example], Example | None]:
    """For a question, the other question of its database (the whole set's) whose SQL its own extends, or None."""
    by_database: dict[str, list[_Query]] = defaultdict(list)
    for ex in everything:
        if ex.question and ex.answerable:
            by_database[ex.db_id].append(_query(ex))
    examples = {ex.index: ex for ex in everything}

    def earlier(asked: Example) -> Example | None:
        if not asked.question:
            return None
        own = _query(asked)
        best: tuple[int, int] | None = None  # (shared tokens, -index)
        for other in by_database[asked.db_id]:
            if other.index == asked.index or squash(other.sql) == squash(own.sql) or not other.tables:
                continue
            if not other.tables <= own.tables or sum(other.tokens.values()) >= sum(own.tokens.values()):
                continue
            shared = sum((other.tokens & own.tokens).values())
            if shared >= _SHARED * sum(other.tokens.values()) and (best is None or (shared, -other.index) > best):
                best = (shared, -other.index)
        return examples[-best[1]] if best else None

    return earlier


def _query(ex: Example) -> _Query:
    sql = ex.alternatives[0]
    usage = tables_and_columns(sql, DIALECT)
    tokens = Counter(t.text.lower() for t in tokenize(sql, DIALECT))
    return _Query(ex.index, ex.question or "", sql, frozenset(t.lower() for t in usage.tables), tokens)
