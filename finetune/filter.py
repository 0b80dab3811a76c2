"""Noisy-correspondence filtering, and running candidate SQL the way the pipeline does.

A training pair (question, gold SQL) is dropped when its database is missing, it has no question
(Spider's train_others), its gold SQL fails, times out, returns nothing, or does not parse (then
neither schema linking nor the reduced schema can be read off it). Every drop is counted by reason.

Candidates (corruptions of the gold SQL, the model's own generations) are labelled by executing them
through the pipeline's own trial run (routesh.pipeline.trial) and comparing the result with the gold
result as routesh-eval does (routesh.evaluate.compare). Their execution feedback is the trial's own,
cut to the pipeline's `preview_rows`, so it is byte-identical to what noise correction is shown.
"""

from __future__ import annotations

from routesh.db.base import Database
from routesh.evaluate.compare import order_matters, results_match
from routesh.pipeline.trial import Trial, run_trial

COMPARE_ROWS = 100_000  # what routesh-eval fetches to compare results (runner._COMPARE)

# Why a (question, gold SQL) pair gives no training data, in the order they are checked.
DROP_REASONS = ("no_question", "missing_database", "gold_fails", "gold_timeout", "gold_empty", "gold_too_large",
                "gold_unparsed", "judged_wrong")


def execute(db: Database, sql: str, *, timeout: float) -> Trial:
    """The pipeline's trial run with the whole result kept (up to COMPARE_ROWS rows) for the comparison;
    Trial.feedback(schema, preview_rows) then shows what the pipeline's own trial run would have shown."""
    return run_trial(db, sql, row_limit=COMPARE_ROWS, timeout=timeout)


def gold_drop_reason(gold: Trial) -> str | None:
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


def same_result(gold: Trial, candidate: Trial, gold_sql: str) -> bool | None:
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
