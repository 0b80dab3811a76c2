"""Run a data set's gold SQL through the read-only path: a check of the guard (no false refusals)
and of the data itself (which gold queries fail on their own database)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from routesh.db import ExecOptions, guard
from routesh.db.sqlite import SqliteDatabase
from routesh.errors import QueryError, QueryTimeout, Refused

from routesh.evaluate.datasets import Example


@dataclass
class GoldCheck:
    counts: Counter = field(default_factory=Counter)  # ran, refused_guard, refused_database, error, timeout, missing_db
    refusals: list[tuple[Example, str]] = field(default_factory=list)
    errors: list[tuple[Example, str]] = field(default_factory=list)


def check_gold(examples: Iterable[Example], *, timeout: float = 30.0, row_limit: int = 1000) -> GoldCheck:
    report = GoldCheck()
    options = ExecOptions(row_limit=row_limit, timeout=timeout)
    open_dbs: dict[str, SqliteDatabase] = {}
    try:
        for ex in examples:
            if ex.db_path is None:
                report.counts["missing_db"] += 1
                continue
            verdict = guard.classify(ex.gold_sql, "sqlite")
            if not verdict.read_only:
                report.counts["refused_guard"] += 1
                report.refusals.append((ex, f"guard: {verdict.reason}"))
                continue
            db = open_dbs.get(ex.db_id) or open_dbs.setdefault(ex.db_id, SqliteDatabase.open(ex.db_path))
            try:
                db.execute(ex.gold_sql, options=options, guard=False)
                report.counts["ran"] += 1
            except Refused as err:
                report.counts["refused_database"] += 1
                report.refusals.append((ex, str(err)))
            except QueryTimeout as err:
                report.counts["timeout"] += 1
                report.errors.append((ex, str(err)))
            except QueryError as err:
                report.counts["error"] += 1
                report.errors.append((ex, str(err)))
    finally:
        for db in open_dbs.values():
            db.close()
    return report
