"""SQLite's date functions in PostgreSQL SQL, rewritten (routesh/sql/dialect.py): each rewritten query
runs on a real PostgreSQL server and returns what SQLite itself returns for the original."""

from __future__ import annotations

import datetime
import sqlite3

import pytest

from routesh.db.postgres import PostgresDatabase
from routesh.sql.dialect import postgres_rewrites, sqlite_functions_to_postgres

# One row, the same on both sides: a date, a timestamp, and a later date.
_ROWS = ("2023-03-05", "2023-03-05 14:30:00", "2023-04-01")


@pytest.fixture(scope="module")
def both(pg_server):
    dsn = pg_server.create_database("dialect_convert", sql_text=(
        "CREATE TABLE t (d DATE, ts TIMESTAMP, later DATE);"
        f"INSERT INTO t VALUES ('{_ROWS[0]}', '{_ROWS[1]}', '{_ROWS[2]}');"))
    pg = PostgresDatabase.connect(dsn)
    lite = sqlite3.connect(":memory:")
    lite.execute("CREATE TABLE t (d TEXT, ts TEXT, later TEXT)")
    lite.execute("INSERT INTO t VALUES (?, ?, ?)", _ROWS)
    try:
        yield pg, lite
    finally:
        pg.close()
        lite.close()


def _pg_value(pg, sql):
    converted = sqlite_functions_to_postgres(sql)
    assert converted is not None, sql
    return pg.execute(converted.sql).rows[0][0]


@pytest.mark.parametrize("sql", [
    "SELECT strftime('%Y', d) FROM t",
    "SELECT strftime('%Y-%m', d) FROM t",
    "SELECT strftime('%m/%d %H:%M', ts) FROM t",
    "SELECT strftime('%w', d) FROM t",  # 0 is Sunday, as text
    "SELECT strftime('%Y', d) = '2023' FROM t",
    "SELECT CAST(julianday(later) - julianday(d) AS INTEGER) FROM t",
    "SELECT julianday(ts) - julianday(d) FROM t",
    "SELECT date(d, '+1 month') FROM t",
    "SELECT date(d, 'start of month', '-1 day') FROM t",
    "SELECT datetime(ts, '-30 minutes') FROM t",
    "SELECT strftime('%s', ts) FROM t",
])
def test_the_rewrite_returns_what_sqlite_returns(both, sql):
    pg, lite = both
    expected = lite.execute(sql).fetchone()[0]
    got = _pg_value(pg, sql)
    if isinstance(got, (datetime.date, datetime.datetime)):
        got = str(got)
    if isinstance(expected, float):
        assert got == pytest.approx(expected)
    else:
        assert str(got) == str(expected) if not isinstance(got, bool) else got == bool(expected)


def test_now_becomes_the_current_date_and_time(both):
    pg, _ = both
    today = datetime.date.today()
    assert _pg_value(pg, "SELECT date('now')") == today
    assert _pg_value(pg, "SELECT date('now', '-7 days')") == today - datetime.timedelta(days=7)
    assert _pg_value(pg, "SELECT COUNT(*) FROM t WHERE d >= date('now', '-100 years')") == 1
    assert abs(_pg_value(pg, "SELECT julianday('now') - julianday(d) FROM t")
               - (today - datetime.date(2023, 3, 5)).days) < 1.01


def test_what_it_changed_is_named():
    converted = sqlite_functions_to_postgres("SELECT strftime('%Y', d), julianday(d) FROM t WHERE d > date('now')")
    assert converted.summary() == (
        "strftime() → TO_CHAR(), julianday() → EXTRACT(EPOCH ...), date() → CURRENT_DATE ± INTERVAL")


@pytest.mark.parametrize("sql", [
    "SELECT d FROM t",  # nothing of SQLite's
    "SELECT date(d) FROM t",  # PostgreSQL has date(x) too
    "SELECT EXTRACT(YEAR FROM d) FROM t",
    "SELECT date('now', 'weekday 0')",  # a modifier with no faithful PostgreSQL form
    "SELECT strftime(fmt, d) FROM t",  # a format that is not a literal
    "not sql at all (",
])
def test_left_alone(sql):
    assert sqlite_functions_to_postgres(sql) is None


# ---- every rewrite of a failing candidate ------------------------------------------------------------

def _runs(pg, sql):
    try:
        pg.execute(sql)
    except Exception as err:  # noqa: BLE001 - the database's refusal is what is tested
        return str(err)
    return None


@pytest.mark.parametrize("sql, first", [
    # SQLite's bare column beside an aggregate: PostgreSQL wants it grouped
    ("SELECT d, COUNT(*) AS n FROM t GROUP BY later ORDER BY n DESC",
     "SELECT d, COUNT(*) AS n FROM t GROUP BY later, d ORDER BY n DESC"),
    ("SELECT strftime('%Y', d) AS y, ts, COUNT(*) FROM t GROUP BY y",
     "SELECT TO_CHAR(CAST(d AS TIMESTAMP), 'YYYY') AS y, ts, COUNT(*) FROM t GROUP BY y, ts"),
    # MySQL's spelling of PostgreSQL's syntax: sqlglot's PostgreSQL writer knows it
    ("SELECT COUNT(*) FROM t WHERE d >= NOW() - INTERVAL 100 YEAR", None),
    ("SELECT YEAR(d), MONTH(d) FROM t LIMIT 0, 1", None),
    # MySQL's own functions: read as MySQL
    ("SELECT COUNT(*) FROM t WHERE d >= DATE_SUB(CURDATE(), INTERVAL 100 YEAR)", None),
    ("SELECT DATE_FORMAT(d, '%Y-%m') FROM t ORDER BY 1", None),
])
def test_a_failing_candidate_has_a_rewrite_that_runs(both, sql, first):
    pg, _ = both
    assert _runs(pg, sql) is not None  # as written, PostgreSQL refuses it
    rewrites = postgres_rewrites(sql)
    working = [r for r in rewrites if _runs(pg, r.sql) is None]
    assert working, [r.sql for r in rewrites]
    if first is not None:
        assert working[0].sql == first and rewrites[0] is working[0]


def test_the_mysql_reading_keeps_postgres_null_order():
    rewrite = postgres_rewrites("SELECT d FROM t WHERE d > CURDATE() ORDER BY d, ts DESC")[-1]
    assert rewrite.summary().startswith("read as MySQL → written as PostgreSQL")
    assert rewrite.sql.endswith("ORDER BY d, ts DESC")  # no NULLS FIRST: the model meant PostgreSQL's order


def test_nothing_to_rewrite_in_plain_postgres():
    assert postgres_rewrites("SELECT d, COUNT(*) FROM t GROUP BY d ORDER BY 2 DESC") == []


# ---- in the pipeline: the repair stage on a real PostgreSQL database ----------------------------------

def test_the_repair_stage_rewrites_a_sqlite_candidate_for_postgres(defog_db):
    from routesh.pipeline.options import PipelineOptions
    from routesh.pipeline.pipeline import Pipeline
    from routesh.pipeline.stages import Stage, StageConfig
    from tests.test_pipeline import ScriptedEngine

    db = PostgresDatabase.connect(defog_db("car_dealership"))
    try:
        schema = db.introspect(samples=2)
        # SQLite's strftime and a misspelt column: the rewrite and the rename together make it run
        written = "SELECT strftime('%Y', sale_dat) AS year, COUNT(*) FROM sales GROUP BY 1 ORDER BY 1"
        engine = ScriptedEngine(sl='{"sales": ["sale_date"]}', ts=f"```sql\n{written}\n```", nc="correct")
        for stages, repaired in (("sl,repair", True), ("sl", False)):
            answer = Pipeline(engine, db, schema, options=PipelineOptions(stages=StageConfig.parse(stages))).ask(
                "How many cars were sold each year?")
            assert answer.abstained is not repaired
            if repaired:
                assert answer.sql == ("SELECT TO_CHAR(CAST(sale_date AS TIMESTAMP), 'YYYY') AS year, COUNT(*) "
                                      "FROM sales GROUP BY 1 ORDER BY 1")
                expected = db.execute("SELECT TO_CHAR(sale_date, 'YYYY'), COUNT(*) FROM sales GROUP BY 1 ORDER BY 1")
                assert answer.result.rows == expected.rows
                event = next(e for e in answer.events if e.stage == Stage.REPAIR)
                assert event.accepted and event.summary == "candidate: strftime() → TO_CHAR(), sale_dat → sale_date"
    finally:
        db.close()
