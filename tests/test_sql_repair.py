"""Unknown names renamed to the schema's closest (routesh/sql/repair.py), on real schemas: a Spider
database and the demo database the shell opens."""

from __future__ import annotations

import pytest

from routesh.db.sqlite import SqliteDatabase
from routesh.sql.repair import THRESHOLD, best_match, repair_names, similarity, words
from tests.helpers import SHARED_DATA

CONCERT = SHARED_DATA / "spider" / "database" / "concert_singer" / "concert_singer.sqlite"


@pytest.fixture(scope="module")
def schema():
    db = SqliteDatabase.open(CONCERT)
    try:
        yield db.introspect(samples=0)
    finally:
        db.close()


def fixed(sql, schema):
    result = repair_names(sql, "sqlite", schema)
    return (result.sql, result.summary()) if result else None


def test_words_split_on_case_and_underscores():
    assert words("listPrice") == words("list_price") == words("LIST PRICE") == ["list", "price"]
    assert similarity("price", "list_price") > 0.8 and similarity("price", "product_id") < THRESHOLD


@pytest.mark.parametrize("sql, expected", [
    ("SELECT Nme FROM singer", ("SELECT Name FROM singer", "Nme → Name")),
    ("SELECT T2.name FROM singers AS T2", ("SELECT T2.name FROM singer AS T2", "singers → singer")),
    ("SELECT count(*) FROM concerts WHERE yr = 2014",
     ("SELECT COUNT(*) FROM concert WHERE Year = 2014", "concerts → concert, yr → Year")),
    # the table's own name inside a column name is not what tells the columns apart
    ("SELECT stadium_name FROM stadium", ("SELECT Name FROM stadium", "stadium_name → Name")),
    ("SELECT T1.name FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.singer_id = T2.singerid",
     ("SELECT T1.name FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.singer_id = T2.Singer_ID",
      "T2.singerid → T2.Singer_ID")),
    ("SELECT name FROM singer WHERE singer_id IN (SELECT singerid FROM singer_in_concert)",
     ("SELECT name FROM singer WHERE singer_id IN (SELECT Singer_ID FROM singer_in_concert)",
      "singerid → Singer_ID")),
    # the wrong alias, not a wrong name: the one other table of the scope that has the column
    ("SELECT T2.Name FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.Singer_ID = T2.Singer_ID",
     ("SELECT T1.Name FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.Singer_ID = T2.Singer_ID",
      "T2.Name → T1.Name")),
    # one table that lacks the columns another one has, all of them: that one
    ("SELECT Name FROM concert WHERE Age > 30", ("SELECT Name FROM singer WHERE Age > 30", "concert → singer")),
    ("SELECT AVG(c.Age) FROM concert AS c", ("SELECT AVG(c.Age) FROM singer AS c", "concert → singer")),
    # a qualifier that names no table of the query: the one table that has the column
    ("SELECT T3.Name FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.Singer_ID = T2.Singer_ID",
     ("SELECT T1.Name FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.Singer_ID = T2.Singer_ID",
      "T3.Name → T1.Name")),
])
def test_unknown_names_become_the_closest_existing_ones(schema, sql, expected):
    assert fixed(sql, schema) == expected


@pytest.mark.parametrize("sql", [
    "SELECT Name FROM singer",  # nothing unknown
    "SELECT zzz FROM stadium",  # nothing close
    "SELECT name, count(*) AS cnt FROM singer GROUP BY name ORDER BY cnt",  # a select alias
    "SELECT * FROM (SELECT name AS n FROM singer) AS x WHERE x.n = 'a'",  # a derived table's own column
    "SELECT s.Name FROM singer s WHERE s.Age > (SELECT avg(Age) FROM stadium WHERE Country = s.Country)",  # correlated
    'SELECT Name FROM stadium WHERE "Lyon" = Location',  # SQLite: an unknown double-quoted name is a string
    "WITH t AS (SELECT Name FROM singer) SELECT Name FROM t",  # a CTE is not a missing table
    "SELECT Name FROM singer UNION SELECT Name FROM stadium ORDER BY Name",
    "SELECT FROM WHERE",  # does not parse
    "SELECT Capacity, Age FROM concert",  # no other table has both
    # a qualifier that names no table, for a column two tables have
    "SELECT T3.Singer_ID FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.Singer_ID = T2.Singer_ID",
    # the wrong alias, with two tables that have the column: not renamed to a similar column
    "SELECT T1.concert_ID FROM singer AS T1 JOIN singer_in_concert AS T2 JOIN concert AS T3 ON T2.concert_ID = T3.concert_ID",
])
def test_left_alone(schema, sql):
    assert fixed(sql, schema) is None


def test_no_guess_between_two_equally_close_names():
    assert best_match("amount", [("amount_paid", ()), ("amount_due", ())]) is None
    assert best_match("amount_pad", [("amount_paid", ()), ("amount_due", ())]) == "amount_paid"


def test_the_demo_question_that_abstained(tmp_path):
    """Issue 13's example: `p.price` where the column is products.list_price."""
    from routesh.demo import ensure_demo_db

    db = SqliteDatabase.open(ensure_demo_db(tmp_path))
    try:
        schema = db.introspect(samples=0)
        sql = ("SELECT AVG(p.price) FROM products AS p JOIN order_items AS oi ON oi.product_id = p.product_id")
        repaired = repair_names(sql, "sqlite", schema)
        assert repaired is not None and repaired.summary() == "p.price → p.list_price"
        assert db.execute(repaired.sql).rows
    finally:
        db.close()


def test_a_table_outside_the_search_path_gets_its_schema(defog_db):
    from routesh.db.postgres import PostgresDatabase

    db = PostgresDatabase.connect(defog_db("ewallet"))
    try:
        schema = db.introspect(samples=0)
        written = ("SELECT u.username, COUNT(*) FROM users AS u JOIN consumer_div.notifications AS n "
                   "ON n.user_id = u.uid GROUP BY u.username")
        fixed = repair_names(written, "postgres", schema)
        assert fixed.summary() == "users → consumer_div.users"
        assert fixed.sql.startswith("SELECT u.username, COUNT(*) FROM consumer_div.users AS u JOIN")
        assert db.execute(fixed.sql).rows
    finally:
        db.close()


def test_postgres_own_suggestion_is_followed(defog_db):
    from routesh.db.postgres import PostgresDatabase
    from routesh.errors import RoutesError
    from routesh.sql.repair import follow_database_hint

    db = PostgresDatabase.connect(defog_db("car_dealership"))
    try:
        written = "SELECT s.first_name, SUM(s.sale_price) FROM sales AS s JOIN salespersons AS SP " \
                  "ON s.salesperson_id = SP.id GROUP BY 1"
        with pytest.raises(RoutesError) as refused:
            db.execute(written)
        assert 'Perhaps you meant to reference the column "sp.first_name"' in str(refused.value)
        fixed = follow_database_hint(written, "postgres", str(refused.value))
        assert fixed.summary() == "s.first_name → SP.first_name"  # the alias as the query spells it
        assert db.execute(fixed.sql).rows
        assert follow_database_hint(written, "postgres", "syntax error at or near \"FROM\"") is None
    finally:
        db.close()
