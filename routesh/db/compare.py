"""Do two results hold the same rows? Compared as the Spider test-suite does (taoyds/test-suite-sql-eval,
exec_eval.result_eq): rows as multisets, their order only when asked, and the columns in any order (one
query may list them differently). Values are normalised first so that 2, 2.0 and Decimal('2.00') agree
and floats agree to 1e-6. routesh-eval scores with it, and the pipeline's vote groups candidates with it,
so a vote's "agree" means what "correct" means in the benchmarks.

`extra_columns=True` is the lenient variant after defog sql-eval's `subset_df`: the second result may
carry more columns than the first, as long as some of its columns, one for each of the first's, give
exactly the same rows (same multiset, same order where order counts). Unlike sql-eval this keeps
duplicate rows (multisets, as the test-suite does)."""

from __future__ import annotations

import datetime as dt
import decimal
import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

Rows = Sequence[Sequence[Any]]


def results_match(gold: Rows, predicted: Rows, *, ordered: bool, extra_columns: bool = False) -> bool:
    if not gold and not predicted:
        return True
    if len(gold) != len(predicted):
        return False
    width, pred_width = len(gold[0]), len(predicted[0])
    if pred_width != width and not (extra_columns and pred_width > width):
        return False
    if any(len(row) != width for row in gold) or any(len(row) != pred_width for row in predicted):
        return False
    g = [tuple(_normal(v) for v in row) for row in gold]
    p = [tuple(_normal(v) for v in row) for row in predicted]
    for permutation in _column_matchings(g, p, width, pred_width):
        moved = [tuple(row[i] for i in permutation) for row in p]
        if (moved == g) if ordered else (Counter(moved) == Counter(g)):
            return True
    return False


def _column_matchings(gold: list[tuple], predicted: list[tuple], width: int, pred_width: int):
    """Ways to line predicted columns up with gold columns: column j of gold may only take a predicted
    column holding the same multiset of values (a necessary condition, which keeps the search tiny)."""
    gold_columns = [Counter(row[j] for row in gold) for j in range(width)]
    pred_columns = [Counter(row[i] for row in predicted) for i in range(pred_width)]
    options = [[i for i in range(pred_width) if pred_columns[i] == gold_columns[j]] for j in range(width)]

    def assign(j: int, used: tuple[int, ...]):
        if j == width:
            yield used
            return
        for i in options[j]:
            if i not in used:
                yield from assign(j + 1, used + (i,))

    yield from assign(0, ())


def _normal(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, decimal.Decimal):
        value = float(value)
    if isinstance(value, float):
        if value != value:  # NaN equals NaN here
            return "NaN"
        return int(value) if value.is_integer() else round(value, 6)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):  # a PostgreSQL interval
        return _normal(value.total_seconds())
    if isinstance(value, (list, tuple)):  # a PostgreSQL array (or a row value)
        return tuple(_normal(v) for v in value)
    if isinstance(value, dict):  # json/jsonb
        return json.dumps(value, sort_keys=True, default=str)
    return value
