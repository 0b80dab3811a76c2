"""Which remembered questions are most like a new one: BM25 over the questions' content words (stemmed, stop
words dropped), or plain word overlap (Jaccard) to measure it against. Small and local: a database's
remembered queries are a few hundred at most, so every question is scored each time, nothing is indexed."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Protocol

from routesh.prompts import Example, question_words

METHODS = ("bm25", "overlap")
_K1, _B = 1.2, 0.75  # BM25's usual constants
__all__ = ["METHODS", "Example", "ExampleSource", "most_similar"]


class ExampleSource(Protocol):
    """Where a pipeline finds its examples: the user's remembered queries, or (routesh-eval) the other
    questions of the same database."""

    def similar(self, question: str, k: int) -> list[Example]: ...


def most_similar(question: str, pool: Sequence[Example], k: int, method: str = "bm25") -> list[Example]:
    """The k examples of `pool` most like `question`, the closest last (next to the question in the prompt);
    an example sharing no word with it is never one of them."""
    if k <= 0 or not pool:
        return []
    words = question_words(question)
    docs = [question_words(e.question) for e in pool]
    scores = _bm25(words, docs) if method == "bm25" else _overlap(words, docs)
    ranked = sorted((i for i, s in enumerate(scores) if s > 0), key=lambda i: (-scores[i], i))[:k]
    return [pool[i] for i in reversed(ranked)]


def _bm25(query: list[str], docs: list[list[str]]) -> list[float]:
    n = len(docs)
    average = sum(map(len, docs)) / n or 1.0
    df = Counter(w for doc in docs for w in set(doc))
    idf = {w: math.log(1 + (n - df[w] + 0.5) / (df[w] + 0.5)) for w in set(query)}
    scores = []
    for doc in docs:
        tf = Counter(doc)
        norm = _K1 * (1 - _B + _B * len(doc) / average)
        scores.append(sum(idf[w] * tf[w] * (_K1 + 1) / (tf[w] + norm) for w in set(query) if tf[w]))
    return scores


def _overlap(query: list[str], docs: list[list[str]]) -> list[float]:
    q = set(query)
    return [len(q & set(doc)) / len(q | set(doc)) if q or doc else 0.0 for doc in docs]
