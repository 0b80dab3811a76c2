"""Noisy-correspondence filtering, and running candidate SQL the way the pipeline does.

A training pair (question, gold SQL) is dropped when its database is missing, it has no question
(Spider's train_others), its gold SQL fails, times out, returns nothing, or does not parse (then
neither schema linking nor the reduced schema can be read off it). Every drop is counted by reason.

Candidates (corruptions of the gold SQL, the model's own generations) are labelled by executing them
and comparing the result with the gold result as routesh-eval does (routesh.evaluate.compare). Their
execution feedback is rendered from the same preview the pipeline's trial run sees (the first
`preview_rows` rows through the read-only path), so it is byte-identical to what noise correction is
shown at inference.
"""

from __future__ import annotations

from dataclasses import dataclass

from routesh import prompts
from routesh.db.base import Database, ExecOptions, Result
from routesh.db.schema import Schema
from routesh.errors import QueryTimeout, RoutesError
from routesh.evaluate.compare import order_matters, results_match

COMPARE_ROWS = 100_000  # what routesh-eval fetches to compare results (runner._COMPARE)

# Why a (question, gold SQL) pair gives no training data, in the order they are checked.
DROP_REASONS = ("no_question", "missing_database", "gold_fails", "gold_timeout", "gold_empty", "gold_too_large",
                "gold_unparsed", "judged_wrong")


@dataclass
class Execution:
    """One run of one query: its full result (up to COMPARE_ROWS rows) or the error the pipeline would see."""

    sql: str
    result: Result | None
    error: str | None
    timed_out: bool = False

    @property
    def ran(self) -> bool:
        return self.error is None

    @property
    def complete(self) -> bool:
        """It ran and every row came back (a comparison on a cut result would be a guess)."""
        return self.result is not None and not self.result.truncated

    def preview(self, rows: int) -> Result | None:
        """The result as the pipeline's trial run (row_limit=rows) would have returned it."""
        if self.result is None:
            return None
        r = self.result
        return Result(list(r.columns), list(r.rows[:rows]), r.elapsed, r.truncated or len(r.rows) > rows, r.status)

    def feedback(self, schema: Schema, rows: int) -> str:
        return prompts.render_feedback(self.preview(rows), self.error, schema)


def execute(db: Database, sql: str, *, timeout: float, row_limit: int = COMPARE_ROWS) -> Execution:
    """Run `sql` through the guard and the read-only envelope, as the pipeline's trial does."""
    try:
        return Execution(sql, db.execute(sql, options=ExecOptions(row_limit=row_limit, timeout=timeout)), None)
    except QueryTimeout as err:
        return Execution(sql, None, str(err), timed_out=True)
    except RoutesError as err:
        return Execution(sql, None, str(err))


def gold_drop_reason(gold: Execution) -> str | None:
    """Why this gold result makes the pair noisy (None: keep it)."""
    if gold.timed_out:
        return "gold_timeout"
    if not gold.ran:
        return "gold_fails"
    if gold.result is None or not gold.result.rows:
        return "gold_empty"
    if gold.result.truncated:
        return "gold_too_large"
    return None


def same_result(gold: Execution, candidate: Execution, gold_sql: str) -> bool | None:
    """True/False: does the candidate return the gold result (routesh-eval's rule)? None: cannot tell
    (the candidate timed out under a shorter limit than the pipeline's, or returned too many rows)."""
    if candidate.timed_out:
        return None
    if not candidate.ran:
        return False
    if not candidate.complete:
        return None
    assert gold.result is not None and candidate.result is not None
    return results_match(gold.result.rows, candidate.result.rows, ordered=order_matters(gold_sql))
