"""Execution accuracy: do two queries' results agree? Compared as the Spider test-suite does
(taoyds/test-suite-sql-eval, exec_eval.result_eq): rows as multisets, their order only when the gold
query orders them, and the columns in any order (the predicted query may list them differently).
Values are normalised first so that 2, 2.0 and Decimal('2.00') agree and floats agree to 1e-6.

`extra_columns=True` is the lenient variant after defog sql-eval's `subset_df`: the predicted result may
carry more columns than the gold, as long as some of its columns, one for each gold column, give
exactly the gold rows (same multiset, same order where order counts). Unlike sql-eval this keeps
duplicate rows (multisets, as the test-suite does) and takes order from the gold query's ORDER BY, not
from the question's wording.

A gold with several alternatives (postgres-defog, see alternatives.py) is matched by any_match: the
prediction is correct when it matches at least one alternative under the rule above, with the order
rule taken from that alternative's own SQL."""

from __future__ import annotations

import re
from collections.abc import Sequence

from routesh.db.compare import Rows, results_match

__all__ = ["any_match", "order_matters", "results_match"]

_ORDER_BY = re.compile(r"\border\s+by\b", re.IGNORECASE)


def order_matters(gold_sql: str) -> bool:
    return bool(_ORDER_BY.search(gold_sql))


def any_match(golds: Sequence[tuple[str, Rows]], predicted: Rows, *, extra_columns: bool = False) -> int | None:
    """The index of the first (gold SQL, gold rows) alternative the predicted rows match, else None."""
    for k, (sql, rows) in enumerate(golds):
        if results_match(rows, predicted, ordered=order_matters(sql), extra_columns=extra_columns):
            return k
    return None
