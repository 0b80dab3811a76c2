"""Mistakes in SQL that runs (routesh/sql/mistakes.py), on real schemas: a Spider SQLite database and
a postgres-defog database on a real PostgreSQL server, where the fixed SQL runs."""

from __future__ import annotations

import pytest

from routesh.db.postgres import PostgresDatabase
from routesh.db.sqlite import SqliteDatabase
from routesh.sql.mistakes import fix_mistakes
from tests.helpers import SHARED_DATA

CONCERT = SHARED_DATA / "spider" / "database" / "concert_singer" / "concert_singer.sqlite"


@pytest.fixture(scope="module")
def concert():
    db = SqliteDatabase.open(CONCERT)
    try:
        yield db, db.introspect(samples=0)
    finally:
        db.close()


@pytest.fixture(scope="module")
def dealership(defog_db):
    db = PostgresDatabase.connect(defog_db("car_dealership"))
    try:
        yield db, db.introspect(samples=0)
    finally:
        db.close()


def fixed(sql, dialect, schema):
    result = fix_mistakes(sql, dialect, schema)
    return (result.sql, result.summary()) if result else None


def test_a_join_on_a_column_equal_to_itself_joins_the_joined_table(concert):
    db, schema = concert
    sql = ("SELECT T1.Name, COUNT(*) FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.Singer_ID = T1.Singer_ID "
           "GROUP BY T1.Name")
    repaired, summary = fixed(sql, "sqlite", schema)
    assert repaired == ("SELECT T1.Name, COUNT(*) FROM singer AS T1 JOIN singer_in_concert AS T2 "
                        "ON T1.Singer_ID = T2.Singer_ID GROUP BY T1.Name")
    assert summary == "T1.Singer_ID = T1.Singer_ID → T1.Singer_ID = T2.Singer_ID"
    # the cross join counted every concert row for each singer; the fix counts each singer's own
    assert db.execute(repaired).rows == db.execute(
        "SELECT s.Name, COUNT(*) FROM singer s JOIN singer_in_concert c ON s.Singer_ID = c.Singer_ID "
        "GROUP BY s.Name").rows


@pytest.mark.parametrize("sql", [
    "SELECT T1.Name FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.Singer_ID = T2.Singer_ID",  # right
    "SELECT T1.Name FROM singer AS T1 JOIN concert AS T2 ON T1.Singer_ID = T1.Singer_ID",  # concert lacks it
    "SELECT T2.Year FROM singer AS T1 JOIN concert AS T2 ON T2.concert_ID = T2.concert_ID",  # T1 lacks it
    "SELECT 1 FROM singer_in_concert AS a JOIN concert AS b ON a.concert_ID = b.concert_ID "
    "JOIN singer_in_concert AS c ON c.concert_ID = c.concert_ID",  # a and b both have it: a guess
    "SELECT COUNT(*) / 2 FROM singer",  # SQLite: integer division is left as written
])
def test_left_alone_in_sqlite(concert, sql):
    assert fix_mistakes(sql, "sqlite", concert[1]) is None


def test_postgres_divides_integers_as_a_ratio(dealership):
    db, schema = dealership
    sql = ("SELECT COUNT(CASE WHEN year > 2022 THEN 1 END) / COUNT(*) AS share, "
           "SUM(CASE WHEN color = 'red' THEN 1 ELSE 0 END) / SUM(year - 2000) FROM cars")
    repaired, summary = fixed(sql, "postgres", schema)
    assert repaired == (
        "SELECT CAST(COUNT(CASE WHEN year > 2022 THEN 1 END) AS DOUBLE PRECISION) / NULLIF(COUNT(*), 0) AS share, "
        "CAST(SUM(CASE WHEN color = 'red' THEN 1 ELSE 0 END) AS DOUBLE PRECISION) / NULLIF(SUM(year - 2000), 0) "
        "FROM cars")
    assert summary.startswith("COUNT(CASE WHEN year > 2022 THEN 1 END) / COUNT(*) → CAST(")
    truncated, ratio = db.execute(sql).rows[0][0], db.execute(repaired).rows[0][0]
    assert truncated == 0 and 0 < ratio < 1


@pytest.mark.parametrize("sql", [
    "SELECT sale_price / 2 FROM sales",  # NUMERIC divides exactly
    "SELECT AVG(year) / 2 FROM cars",  # AVG is not an integer
    "SELECT CAST(COUNT(*) AS FLOAT) / COUNT(DISTINCT make) FROM cars",  # already a ratio
    "SELECT x.n / 2 FROM (SELECT COUNT(*) AS n FROM cars) AS x",  # a derived table's column: unknown type
])
def test_left_alone_in_postgres(dealership, sql):
    assert fix_mistakes(sql, "postgres", dealership[1]) is None
