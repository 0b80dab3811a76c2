"""What the `values` stage costs a question on a database with many tables (bench/introspect.py's: 1,000
tables, each with two text columns and 5 rows).

    python bench/values.py                  # SQLite
    python bench/values.py --start-pg       # also PostgreSQL, on a throwaway server
    python bench/values.py --pg-dsn postgresql://user@host/postgres

For each database, the median over --repeat runs of:
  first question   a fresh index: link_values's indexing within its budget (PipelineOptions.values_budget),
                   the tables the question names first, and the matching
  whole index      indexing every text column, unbounded
  later question   the matching alone, on the whole index
and whether the first question found its value.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from introspect import arguments, build_postgres, build_sqlite, postgres_admin  # noqa: E402
from machine import machine_line  # noqa: E402
from routesh.db import connect  # noqa: E402
from routesh.db.values import ValueIndex  # noqa: E402
from routesh.pipeline import values  # noqa: E402
from routesh.pipeline.options import SCHEMA_SAMPLES, PipelineOptions  # noqa: E402

QUESTION = "What is the price of item 900-3 in t0900?"
EXPECTED = "item 900-3"


def measure(dsn: str, repeat: int) -> dict[str, float | str]:
    db = connect(dsn)
    try:
        schema = db.introspect(samples=SCHEMA_SAMPLES)
        budget = PipelineOptions().values_budget
        words = values._named_by(QUESTION)
        first, whole, later, found = [], [], [], []
        for _ in range(repeat):
            index = ValueIndex(schema)
            started = time.perf_counter()
            index.extend(db, budget_s=budget, first=lambda t: values._mentioned(words, t))
            matches = values.find(index, QUESTION)
            first.append(time.perf_counter() - started)
            found.append(any(m.stored.value == EXPECTED for m in matches))
            index = ValueIndex(schema)
            started = time.perf_counter()
            index.extend(db, budget_s=3600)
            whole.append(time.perf_counter() - started)
            started = time.perf_counter()
            values.find(index, QUESTION)
            later.append(time.perf_counter() - started)
        return {"first question": statistics.median(first), "whole index": statistics.median(whole),
                "later question": statistics.median(later), "values": index.size,
                "found": f"{sum(found)} of {repeat}"}
    finally:
        db.close()


def report(label: str, numbers: dict[str, float | str]) -> None:
    times = "  ".join(f"{k} {v * 1000:7.1f} ms" for k, v in numbers.items() if isinstance(v, float))
    print(f"{label:10} {times}  ({numbers['values']} values; first question found its value {numbers['found']})")


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    print(machine_line(f"{args.tables} tables, medians of {args.repeat} runs"))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "many.sqlite"
        build_sqlite(path, args.tables)
        report("sqlite", measure(str(path), args.repeat))
    with contextlib.ExitStack() as stack:
        admin = postgres_admin(args, stack)
        if admin:
            report("postgresql", measure(build_postgres(admin, args.tables), args.repeat))


if __name__ == "__main__":
    main()
