"""Run a data set's gold SQL through the read-only path: a check of the guard (no false refusals)
and of the data itself (which gold queries fail on their own database).

Every gold alternative counts as one gold query (Spider has one per question; postgres-defog's cells
expand to several, see alternatives.py): the guard classifies it in the example's dialect, then it
runs through the database's read-only envelope with the guard skipped (so a refusal there is the
database layer's own)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from routesh.db import Database, ExecOptions
from routesh.errors import QueryError, QueryTimeout, Refused

from routesh.evaluate.datasets import Example, database_key, open_database
from routesh.sql import guard


@dataclass
class GoldCheck:
    # per gold query: ran, refused_guard, refused_database, error, timeout, missing_db
    counts: Counter = field(default_factory=Counter)
    # (the example with gold_sql set to the failing alternative, why)
    refusals: list[tuple[Example, str]] = field(default_factory=list)
    errors: list[tuple[Example, str]] = field(default_factory=list)
    questions: int = 0
    queries: int = 0  # gold queries (alternatives) looked at, missing databases included
    questions_all_ran: int = 0  # questions every alternative of which ran


def check_gold(examples: Iterable[Example], *, timeout: float = 30.0, row_limit: int = 1000) -> GoldCheck:
    report = GoldCheck()
    options = ExecOptions(row_limit=row_limit, timeout=timeout)
    open_dbs: dict[str, Database] = {}
    try:
        for ex in examples:
            report.questions += 1
            alternatives = ex.alternatives
            report.queries += len(alternatives)
            if ex.db_path is None and ex.dsn is None:
                report.counts["missing_db"] += len(alternatives)
                continue
            where = database_key(ex)
            db = open_dbs.get(where) or open_dbs.setdefault(where, open_database(ex))
            ran = 0
            for sql in alternatives:
                one = ex if len(alternatives) == 1 else replace(ex, gold_sql=sql, golds=(sql,))
                verdict = guard.classify(sql, ex.dialect)
                if not verdict.read_only:
                    report.counts["refused_guard"] += 1
                    report.refusals.append((one, f"guard: {verdict.reason}"))
                    continue
                try:
                    db.execute(sql, options=options, guard=False)
                    report.counts["ran"] += 1
                    ran += 1
                except Refused as err:
                    report.counts["refused_database"] += 1
                    report.refusals.append((one, str(err)))
                except QueryTimeout as err:
                    report.counts["timeout"] += 1
                    report.errors.append((one, str(err)))
                except QueryError as err:
                    report.counts["error"] += 1
                    report.errors.append((one, str(err)))
            report.questions_all_ran += ran == len(alternatives)
    finally:
        for db in open_dbs.values():
            db.close()
    return report
