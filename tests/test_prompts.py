"""The single prompt serializer: schema text, feedback, the four task prompts and their replies."""

from __future__ import annotations

import re

import pytest
import sqlglot
from sqlglot import exp

from routesh import prompts
from routesh.db.base import Result
from routesh.db.schema import Column, ForeignKey, Schema, Table
from routesh.db.sqlite import SqliteDatabase
from tests.helpers import SHARED_DATA

SPIDER = SHARED_DATA / "spider" / "database"


def spider_schema(db_id: str) -> Schema:
    db = SqliteDatabase.open(SPIDER / db_id / f"{db_id}.sqlite")
    try:
        return db.introspect()
    finally:
        db.close()


def ddl_statements(text: str, dialect: str) -> list[exp.Expression]:
    without_comments = re.sub(r"--[^\n]*", "", text)
    return [s for s in sqlglot.parse(without_comments, read=dialect) if s is not None]


@pytest.mark.parametrize("db_id", ["concert_singer", "college_2", "flight_2", "car_1"])
def test_schema_is_valid_ddl_with_every_table_column_and_key(db_id):
    schema = spider_schema(db_id)
    text = prompts.render_schema(schema)
    statements = ddl_statements(text, "sqlite")
    assert len(statements) == len(schema.tables)
    assert all(isinstance(s, exp.Create) for s in statements)
    for table in schema.tables:
        assert f"CREATE TABLE {prompts.quote(table.name, 'sqlite')} (" in text
        for column in table.columns:
            assert re.search(rf"^  {re.escape(prompts.quote(column.name, 'sqlite'))} ", text, re.M), column.name
        for fk in table.foreign_keys:
            assert f"REFERENCES {prompts.quote(fk.ref_table, 'sqlite')} (" in text
    assert ",\n);" not in text and not re.search(r",\s*--[^\n]*\n\);", text)


def test_keys_and_examples_are_real():
    text = prompts.render_schema(spider_schema("concert_singer"))
    assert "Singer_ID INT PRIMARY KEY" in text
    assert "PRIMARY KEY (concert_ID, Singer_ID)" in text  # composite key on its own line
    assert "FOREIGN KEY (Stadium_ID) REFERENCES stadium (Stadium_ID)" in text
    assert "examples: 'Joe Sharp'" in text
    assert text.count("PRIMARY KEY") == 4  # not every column, as the research code printed


def postgres_schema() -> Schema:
    return Schema("postgres", (
        Table("OrderItems", (Column("Id", "integer", False, True), Column("order", "text"),
                             Column("qty", "integer", samples=(3, 1))), primary_key=("Id",)),
        Table("audit", (Column("id", "bigint", False, True), Column("item_id", "integer")), schema="ops",
              display_name="ops.audit", primary_key=("id",),
              foreign_keys=(ForeignKey(("item_id",), "OrderItems", ("Id",)),)),
    ))


def test_postgres_names_are_quoted_where_they_must_be():
    text = prompts.render_schema(postgres_schema())
    assert 'CREATE TABLE "OrderItems" (' in text
    assert '"Id" integer PRIMARY KEY' in text
    assert '"order" text' in text  # reserved word
    assert "  qty integer -- examples: 3, 1" in text  # plain name, unquoted
    assert "CREATE TABLE ops.audit (" in text
    assert 'REFERENCES "OrderItems" ("Id")' in text
    assert len(ddl_statements(text, "postgres")) == 2


def test_keep_shows_the_reduced_schema_with_its_join_keys():
    schema = spider_schema("concert_singer")
    text = prompts.render_schema(schema, keep={"singer": ["Name"], "CONCERT": ["year"]})
    assert "CREATE TABLE singer" in text and "CREATE TABLE concert" in text
    assert "stadium (" not in text.split("REFERENCES")[0]  # stadium itself is not shown
    assert "Name TEXT" in text and "Year TEXT" in text
    assert "Age INT" not in text and "Theme" not in text
    assert "Stadium_ID" in text  # concert's foreign key column stays: a join key


def test_budget_cuts_deterministically_and_keeps_join_keys():
    schema = spider_schema("college_2")
    question = "What are the names of instructors in the Comp. Sci. department who earn more than 80000?"
    full = prompts.render_schema(schema)
    for budget in (600, 300, 150):
        text = prompts.render_schema(schema, question=question, budget=budget)
        assert text == prompts.render_schema(schema, question=question, budget=budget)
        assert prompts.approx_tokens(text) <= budget * 1.1 < prompts.approx_tokens(full)
        shown = {s.this.this.name: s for s in ddl_statements(text, "sqlite")}
        assert "instructor" in shown  # the table the question is about stays longest
        for statement in shown.values():
            table = schema.table(statement.this.this.name)
            columns = {c.name for c in statement.find_all(exp.ColumnDef)}
            keys = set(table.primary_key) | {c for fk in table.foreign_keys for c in fk.columns}
            assert keys <= columns, (table.name, keys - columns)
    tight = prompts.render_schema(schema, question=question, budget=150)
    assert "salary" in tight and "dept_name" in tight  # the columns the question names outlast others


def test_feedback():
    assert prompts.render_feedback(error="no such column: nme") == "Execution failed: no such column: nme"
    empty = Result(["a"], [], 0.1)
    assert prompts.render_feedback(empty) == "The query ran and returned no rows (columns: a)."
    rows = Result(["name", "bonus"], [("Ann", None), ("Bob", None), ("Cy", None), ("Di", None)], 0.1, truncated=True)
    text = prompts.render_feedback(rows)
    assert "returned 4+ rows (columns: name, bonus)" in text
    assert "First rows: ('Ann', NULL); ('Bob', NULL); ('Cy', NULL)." in text
    assert "Every value is NULL in: bonus." in text
    long = prompts.render_feedback(error="x" * 5000)
    assert len(long) <= 600


def test_feedback_says_where_an_unknown_column_exists():
    schema = spider_schema("pets_1")
    said = prompts.render_feedback(error="no such column: PetType", schema=schema)
    assert said == "Execution failed: no such column: PetType PetType is a column of Pets."
    aliased = prompts.render_feedback(error="no such column: T3.pettype", schema=schema)
    assert aliased.endswith("pettype is a column of Pets.")
    near = prompts.render_feedback(error="no such column: PetName", schema=schema)
    assert "No table has a column PetName; similar: " in near and "Student.LName" in near
    table = prompts.render_feedback(error="no such table: pet", schema=schema)
    assert table.endswith("There is no table pet; similar: Has_Pet, Pets.")
    pg = prompts.render_feedback(error='column "pettype" does not exist', schema=schema)
    assert pg.endswith("pettype is a column of Pets.")
    assert prompts.render_feedback(error="near \"FROM\": syntax error", schema=schema) == (
        'Execution failed: near "FROM": syntax error')


def test_the_four_prompts_share_their_system_message():
    text = prompts.render_schema(spider_schema("concert_singer"))
    q, hint = "How many singers are there?", "count the rows"
    requests = [
        prompts.ts_prompt(text, "sqlite", q, hint),
        prompts.sl_prompt(text, "sqlite", q, hint),
        prompts.nc_prompt(text, "sqlite", q, "SELECT count(*) FROM singer", "The query ran and returned 1 row.", hint),
        prompts.cw_prompt(text, "sqlite", q, "SELECT count(*)", hint),
    ]
    systems = {r.messages[0].content for r in requests}
    assert len(systems) == 1 and "SQLite" in systems.pop()
    for r in requests:
        assert [m.role for m in r.messages] == ["system", "user"]
        assert r.messages[1].content.startswith(f"Question: {q}\nHint: {hint}")
    assert "PostgreSQL" in prompts.ts_prompt(text, "postgres", q).messages[1].content


def test_replies_round_trip():
    usage = {"singer": ["Name", "Age"], "concert": ["Year"]}
    reply = prompts.sl_reply(usage)
    assert prompts.parse_sl_reply("Sure! " + reply + " Hope it helps {not json}") == {
        "singer": ["Age", "Name"], "concert": ["Year"]}
    assert prompts.parse_sl_reply("no json here") is None
    assert prompts.parse_sl_reply('{"singer": "Name"}') == {"singer": ["Name"]}
    assert prompts.nc_reply(True) == "correct"
    assert prompts.parse_nc_verdict(prompts.nc_reply(True)) is True
    wrong = prompts.nc_reply(False, "SELECT 1;")
    assert wrong == "wrong, the correct SQL is:\n```sql\nSELECT 1\n```"
    assert prompts.parse_nc_verdict(wrong) is False
    assert prompts.parse_nc_verdict("I think so") is None
    with pytest.raises(ValueError):
        prompts.nc_reply(False)
