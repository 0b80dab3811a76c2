"""The shell's tab completion, against a schema introspected from a real SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from routesh.db import connect
from routesh.db.schema import Column, Schema, Table
from routesh.shell.completer import SqlCompleter
from tests.helpers import make_shop_db

COMMANDS = ["\\?", "\\q", "\\d", "\\d+", "\\dt", "\\dt+", "\\timing", "\\T", "\\x", "\\conninfo", ".tables", ".schema"]


@pytest.fixture(scope="module")
def shop_schema(tmp_path_factory: pytest.TempPathFactory) -> Schema:
    path = make_shop_db(tmp_path_factory.mktemp("completer") / "shop.db")
    db = connect(str(path))
    try:
        return db.introspect()
    finally:
        db.close()


@pytest.fixture
def completer(shop_schema: Schema) -> SqlCompleter:
    c = SqlCompleter("sqlite", COMMANDS)
    c.set_schema(shop_schema)
    return c


def complete(completer: SqlCompleter, text: str, cursor: int | None = None, *, tab: bool = False) -> list[str]:
    doc = Document(text, len(text) if cursor is None else cursor)
    return [c.text for c in completer.get_completions(doc, CompleteEvent(completion_requested=tab))]


def completions(completer: SqlCompleter, text: str, *, tab: bool = False):
    return list(completer.get_completions(Document(text), CompleteEvent(completion_requested=tab)))


def test_table_after_from(completer: SqlCompleter) -> None:
    got = completions(completer, "SELECT * FROM cu")
    assert got[0].text == "customer"
    assert got[0].start_position == -2
    assert got[0].display_meta_text == "table"
    # views are tables too, and tables come before keywords such as CURRENT_DATE
    assert complete(completer, "select * from bi")[0] == "big_orders"
    assert complete(completer, "SELECT * FROM orders JOIN cu")[0] == "customer"
    assert complete(completer, "SELECT * FROM orders o, cu")[0] == "customer"


def test_alias_columns_with_from_later_in_text(completer: SqlCompleter) -> None:
    text = "SELECT o. FROM orders o"
    got = complete(completer, text, cursor=len("SELECT o."))
    assert got == ["id", "customer_id", "total", "placed"]
    text = "SELECT o.to FROM orders AS o JOIN customer c ON c.id = o.customer_id"
    assert complete(completer, text, cursor=len("SELECT o.to")) == ["total", "customer_id"]  # prefix, then substring
    assert complete(completer, "SELECT c.ci FROM orders o JOIN customer c", cursor=len("SELECT c.ci")) == ["city"]
    # a table's own name qualifies too, mentioned or not
    assert complete(completer, "SELECT customer.na") == ["name"]
    # an unknown qualifier offers nothing rather than guessing
    assert complete(completer, "SELECT x.na FROM orders o", cursor=len("SELECT x.na")) == []


def test_columns_of_mentioned_tables_rank_first(completer: SqlCompleter) -> None:
    got = complete(completer, "SELECT * FROM orders WHERE c")
    assert got[0] == "customer_id"  # orders' column before customer's city
    assert "city" in got
    assert got.index("customer_id") < got.index("city")
    got = complete(completer, "SELECT id, c FROM customer", cursor=len("SELECT id, c"))
    assert got[:2] == ["city", "customer_id"]


def test_select_column_and_keyword_case(completer: SqlCompleter) -> None:
    got = complete(completer, "select na")
    assert got[0] == "name"
    assert "natural" in got and "NATURAL" not in got
    upper = complete(completer, "SELECT NA")
    assert upper[0] == "name"
    assert "NATURAL" in upper and "natural" not in upper
    assert complete(completer, "sel")[0] == "select"
    assert complete(completer, "SEL")[0] == "SELECT"
    assert "count" in complete(completer, "select co")
    assert "COALESCE" in complete(completer, "SELECT CO")
    assert complete(completer, "SELECT * FROM orders o WH")[:2] == ["WHERE", "WHEN"]  # common keywords first


def test_prefix_before_substring(completer: SqlCompleter) -> None:
    got = complete(completer, "SELECT * FROM orders WHERE to")
    assert got[0] == "total"
    # `customer_id` contains "id" but ranks after the prefix match `id`
    got = complete(completer, "SELECT * FROM orders WHERE id")
    assert got.index("id") < got.index("customer_id")


def test_backslash_d_completes_tables(completer: SqlCompleter) -> None:
    assert complete(completer, "\\d cus") == ["customer"]
    assert complete(completer, "\\d+ ord") == ["orders", "big_orders"]
    assert complete(completer, ".schema big") == ["big_orders"]
    assert complete(completer, "\\d ") == []  # nothing while typing an empty word
    assert set(complete(completer, "\\d ", tab=True)) == {"customer", "orders", "big_orders"}
    assert complete(completer, "\\x o") == []  # not a table argument


def test_commands(completer: SqlCompleter) -> None:
    got = complete(completer, "\\t")
    exact = [c for c in COMMANDS if c.startswith("\\t")]
    assert got[: len(exact)] == exact
    assert all(c.lower().startswith("\\t") for c in got)
    assert complete(completer, "\\d") == ["\\d", "\\d+", "\\dt", "\\dt+"]
    assert complete(completer, ".ta") == [".tables"]
    assert completions(completer, "\\ti")[0].start_position == -3
    # commands complete only at the start of the line
    assert "\\timing" not in complete(completer, "select \\t")


def test_empty_word_and_plain_english(completer: SqlCompleter) -> None:
    assert complete(completer, "") == []
    assert complete(completer, "SELECT * FROM ") == []
    assert complete(completer, "SELECT * FROM ", tab=True)[:3] == ["customer", "orders", "big_orders"]
    # a question ending with a period does not pop the table's columns
    assert complete(completer, "how many orders.") == []
    # an English word that starts no name or keyword pops nothing, even if some name contains it
    assert complete(completer, "how many customers live in Lyon") == []
    assert complete(completer, "which ustom") == []
    assert "customer" in complete(completer, "which ustom", tab=True)
    # no completion inside a string literal or a comment
    assert complete(completer, "SELECT * FROM customer WHERE city = 'Ly") == []
    assert complete(completer, "SELECT 1 -- cu") == []


def test_current_statement_only(completer: SqlCompleter) -> None:
    text = "SELECT * FROM orders o; SELECT o.na FROM customer o"
    assert complete(completer, text, cursor=len("SELECT * FROM orders o; SELECT o.na")) == ["name"]


def test_no_schema_only_keywords_and_commands() -> None:
    c = SqlCompleter("sqlite", COMMANDS)
    assert c.schema is None
    got = complete(c, "SELECT * FROM cu")
    assert "current_date" in got and "customer" not in got
    assert all(k in c.keywords or k.upper() in c.functions or k in c.functions for k in complete(c, "SELECT * FROM CU"))
    assert complete(c, "SELECT o. FROM orders o", cursor=len("SELECT o.")) == []
    assert complete(c, "\\dt") == ["\\dt", "\\dt+"]
    assert complete(c, "\\d cus") == []


def test_keywords_come_from_sqlglot() -> None:
    sqlite = SqlCompleter("sqlite", [])
    pg = SqlCompleter("postgres", [])
    for word in ("SELECT", "FROM", "WHERE", "GROUP", "ORDER", "BY", "JOIN", "LIMIT"):
        assert word in sqlite.keywords and word in pg.keywords
    assert all(" " not in k for k in sqlite.keywords)
    assert "char_length" in pg.functions and "length" in sqlite.functions


def test_set_schema_replaces_names(completer: SqlCompleter) -> None:
    assert complete(completer, "SELECT * FROM cu")[0] == "customer"
    completer.set_schema(Schema("sqlite", (Table("cup", (Column("handle", "TEXT"),)),)))
    got = complete(completer, "SELECT * FROM cu")
    assert got[0] == "cup" and "customer" not in got
    assert complete(completer, "SELECT ha")[0] == "handle"
    assert "name" not in complete(completer, "SELECT na")


def test_postgres_names_are_quoted() -> None:
    schema = Schema("postgres", (
        Table("Order Items", (Column("Item ID", "integer"), Column("qty", "integer")), schema="public"),
        Table("orders", (Column("id", "integer"),), schema="sales", display_name="sales.orders"),
        Table("Users", (Column("id", "integer"),), schema="public"),
    ))
    c = SqlCompleter("postgres", ["\\d", "\\dt"])
    c.set_schema(schema)
    got = completions(c, "SELECT * FROM ord")
    assert got[0].text == '"Order Items"'
    assert got[0].start_position == -3
    assert "sales.orders" in [x.text for x in got]
    assert complete(c, "SELECT * FROM us")[0] == '"Users"'
    # a word typed with its opening quote is replaced whole
    got = completions(c, 'SELECT * FROM "Ord')
    assert got[0].text == '"Order Items"' and got[0].start_position == -4
    # columns of a quoted table, through an alias and through the quoted name itself
    assert complete(c, 'SELECT oi.it FROM "Order Items" oi', cursor=len("SELECT oi.it")) == ['"Item ID"']
    assert complete(c, 'SELECT "Order Items".q') == ["qty"]
    # schema-qualified: the namespace's tables, then that table's columns
    assert complete(c, "SELECT * FROM sales.or") == ["orders"]
    assert complete(c, "SELECT s.i FROM sales.orders s", cursor=len("SELECT s.i")) == ["id"]
    assert complete(c, "\\d ord")[0] == '"Order Items"'

