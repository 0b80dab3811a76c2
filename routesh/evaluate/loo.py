"""`routesh-eval --memory loo`: remembered queries measured without a user. For each question, the other
questions of its database in the set, with their gold SQL, play what the user asked before (leave one out).

Spider writes most questions twice, in other words, with the same SQL, so leave-one-out usually finds the
answer itself among the examples. `--memory loo-distinct` leaves out every example whose SQL is the asked
question's own gold: what memory gives when the user never asked this before."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from routesh.evaluate.datasets import Example as Question
from routesh.retrieval import Example, most_similar
from routesh.sql.parse import squash


@dataclass(frozen=True)
class LeaveOneOut:
    pool: tuple[Example, ...]
    method: str

    def similar(self, question: str, k: int) -> list[Example]:
        return most_similar(question, self.pool, k, self.method)


def leave_one_out(everything: Sequence[Question], method: str, *,
                  distinct: bool = False) -> Callable[[Question], LeaveOneOut]:
    """For a question, its database's other answerable questions (the whole set's, not only the sample's);
    `distinct`: none whose SQL is the question's own gold."""
    by_database: dict[str, list[tuple[int, Example]]] = defaultdict(list)
    for q in everything:
        if q.answerable and q.question:
            by_database[q.db_id].append((q.index, Example(q.question, q.alternatives[0])))

    def pool(asked: Question) -> LeaveOneOut:
        own = {squash(sql) for sql in asked.alternatives} if distinct else set()
        return LeaveOneOut(tuple(e for i, e in by_database[asked.db_id]
                                 if i != asked.index and squash(e.sql) not in own), method)

    return pool
