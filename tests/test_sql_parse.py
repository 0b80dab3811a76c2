"""routesh.sql.parse (the one quiet parse, first words, squashing, the Sql value), routesh.sql.split and
routesh.sql.dialect: the small shared pieces the other sql modules and their callers build on."""

from __future__ import annotations

import pytest

from routesh.db.schema import Column, Schema, Table
from routesh.sql import parse
from routesh.sql.dialect import pretty_sql
from routesh.sql.hardness import hardness
from routesh.sql.parse import (
    TOO_DEEP,
    Sql,
    first_keyword,
    first_token,
    parse_one,
    parse_query,
    same_sql,
    squash,
    tokenize,
)
from routesh.sql.split import split_statements
from routesh.sql.truncate import truncate, truncation_points
from routesh.sql.usage import aliases, schema_tables, tables_and_columns

Q = "SELECT T1.name FROM singer AS T1 JOIN concert AS T2 ON T1.id = T2.singer_id WHERE T2.year > 2014"
SCHEMA = Schema(
    "sqlite",
    (
        Table("singer", (Column("id", "int"), Column("name", "text"))),
        Table("concert", (Column("singer_id", "int"), Column("year", "int"))),
    )
)


def test_sql_parses_once_and_every_reader_reuses_the_tree(monkeypatch):
    calls = []
    real = parse.parse_query

    def counting(text, dialect):
        calls.append(text)
        return real(text, dialect)

    monkeypatch.setattr(parse, "parse_query", counting)
    sql = Sql(Q, "sqlite")
    usage = tables_and_columns(sql, "sqlite", SCHEMA)
    level = hardness(sql, "sqlite")
    assert calls == [Q]  # parsed on first use, then shared
    monkeypatch.setattr(parse, "parse_query", real)
    assert usage == tables_and_columns(Q, "sqlite", SCHEMA)
    assert level == hardness(Q, "sqlite")
    assert truncate(sql, "sqlite") == truncate(Q, "sqlite")
    assert truncation_points(sql, "sqlite") == truncation_points(Q, "sqlite")


def test_sql_is_a_value():
    assert Sql(Q, "sqlite") == Sql(Q, "sqlite") and hash(Sql(Q, "sqlite")) == hash(Sql(Q, "sqlite"))
    assert Sql(Q, "sqlite") != Sql(Q, "postgres")
    with pytest.raises(AttributeError):
        Sql(Q, "sqlite").text = "SELECT 1"  # type: ignore[misc]
    assert Sql("DROP TABLE t", "sqlite").tree is None


def test_sql_of_another_dialect_is_parsed_in_the_one_asked_for():
    sql = Sql("SELECT `a` FROM t", "sqlite")
    assert sql.tree is not None
    assert tables_and_columns(sql, "postgres").error  # backticks are no PostgreSQL


def test_parse_query_and_parse_one():
    assert parse_query(Q, "sqlite") is not None
    assert parse_query("SELECT 1; SELECT 2", "sqlite") is None
    assert parse_query("DELETE FROM t", "sqlite") is None
    assert parse_one("DELETE FROM t", "sqlite")[0] is not None  # any statement, if only one
    assert parse_one("SELECT 1; SELECT 2", "sqlite") == (None, "2 statements in one string; only one is allowed")
    assert parse_one("  ", "sqlite") == (None, "empty statement")
    deep = "SELECT " + "FLOOR(" * 3000 + "1" + ")" * 3000
    assert parse_one(deep, "sqlite") == (None, TOO_DEEP)


def test_first_words():
    assert first_token("/* hi */ delete from t", "sqlite") == "DELETE"
    assert first_token("-- nothing", "sqlite") == "statement"
    assert first_keyword("/* a /* nested */ comment */ copy t to '/x'") == "COPY"
    assert first_keyword("-- one\r(SELECT 1)") == "("
    assert first_keyword("   ") == ""


def test_squash_and_same_sql():
    assert squash("SELECT  a\nFROM t;") == "select a from t"
    assert same_sql("SELECT a FROM t;", "select a   from t")
    assert squash("SELECT a FROM t ;") == "select a from t"  # a space before the `;` too
    assert not same_sql("SELECT a FROM t", "SELECT b FROM t")


def test_tokenize_partial_or_not():
    assert [t.text for t in tokenize("SELECT 'it", "sqlite")] == ["SELECT"]  # what was read before the failure
    assert tokenize("SELECT 'it", "sqlite", partial=False) == []


def test_aliases_and_schema_tables():
    tree = parse.tree(Q, "sqlite")
    assert tree is not None
    found = aliases(tree, SCHEMA)
    assert {k: v.name for k, v in found.items()} == {"t1": "singer", "singer": "singer", "t2": "concert",
                                                     "concert": "concert"}
    assert [t.name for t in schema_tables(tree, SCHEMA)] == ["singer", "concert"]


def test_split_statements_with_a_dialect():
    script = "SELECT ';' AS x; -- only a comment\n;\nSELECT 2 /* ; */"
    assert split_statements(script, "sqlite") == ["SELECT ';' AS x", "SELECT 2 /* ; */"]


def test_split_statements_without_a_dialect():
    cell = "SELECT $$;$$, {a, b} FROM t ; SELECT E'\\';' ;; "
    assert split_statements(cell) == ["SELECT $$;$$, {a, b} FROM t", "SELECT E'\\';'"]


def test_pretty_sql():
    assert pretty_sql("select a from t", "sqlite") == "SELECT\n  a\nFROM t"
    assert pretty_sql("SELECT 1; SELECT 2", "sqlite") == "SELECT 1; SELECT 2"
