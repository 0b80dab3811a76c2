"""The `values` stage: the index of stored text values (real SQLite files, a real PostgreSQL server), the
question's phrases, the matching, and what the pipeline's prompts show (with test_pipeline's scripted
engine on a real Spider database)."""

from __future__ import annotations

import sqlite3

import pytest

from routesh.db import connect
from routesh.db.base import ExecOptions, Result
from routesh.db.sqlite import SqliteDatabase
from routesh.db.values import StoredValue, ValueIndex, normalize
from routesh.errors import QueryTimeout
from routesh.pipeline import values
from routesh.pipeline.options import PipelineOptions
from routesh.pipeline.pipeline import Pipeline
from routesh.pipeline.stages import Stage, StageConfig
from tests.helpers import SHARED_DATA
from tests.test_pipeline import ScriptedEngine, db, schema  # noqa: F401 - fixtures

CARS = SHARED_DATA / "spider" / "database" / "car_1" / "car_1.sqlite"


@pytest.fixture(scope="module")
def cars():
    database = SqliteDatabase.open(CARS)
    index = ValueIndex(database.introspect(samples=5))
    index.extend(database, budget_s=5)
    yield index
    database.close()


def where(matches: list[values.ValueMatch]) -> set[tuple[str, str, str, str]]:
    return {(m.stored.table, m.stored.column, m.stored.value, m.how) for m in matches}


# ---- the index ------------------------------------------------------------------------------------


def test_normalize_folds_case_accents_and_punctuation():
    assert normalize("  São-Paulo!  ") == "sao paulo" == normalize("SAO PAULO")


def test_index_holds_every_short_text_value_of_a_spider_database(cars):
    assert cars.complete and cars.skipped == 0
    assert cars.exact("general motors") == [StoredValue("car_makers", "FullName", "General Motors")]
    assert {v.column for v in cars.exact("volvo")} == {"Maker", "FullName", "Model"}  # every column holding it
    assert cars.exact("1970") == []  # numbers are not text values


@pytest.fixture()
def small_file(tmp_path):
    path = tmp_path / "small.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE city (id INTEGER PRIMARY KEY, name TEXT, blurb TEXT, code INTEGER);
        CREATE TABLE shop (id INTEGER PRIMARY KEY, city TEXT, kind, opened DATE);
    """)
    conn.executemany("INSERT INTO city VALUES (?, ?, ?, ?)",
                     [(i, f"Town {i}", "a very long description " * 5, i) for i in range(50)])
    conn.executemany("INSERT INTO shop VALUES (?, ?, ?, ?)", [(1, "Lyon", "bikes", "2024-01-01"), (2, None, 7, None)])
    conn.commit()
    conn.close()
    database = SqliteDatabase.open(path)
    yield database
    database.close()


def test_caps_per_column_long_texts_and_non_text_values(small_file):
    index = ValueIndex(small_file.introspect(samples=0), per_column=10)
    index.extend(small_file, budget_s=5)
    in_column = lambda table, column: [k for k in index._by_key if any(  # noqa: E731
        v.table == table and v.column == column for v in index._by_key[k])]
    assert len(in_column("city", "name")) == 10  # capped
    assert in_column("city", "blurb") == []  # prose, too long to be a value someone names
    assert in_column("shop", "kind") == ["bikes"]  # an untyped column: its text, not the integer 7
    assert index.exact("lyon") == [StoredValue("shop", "city", "Lyon")]


def test_a_spent_budget_indexes_nothing_and_a_named_table_goes_first(small_file):
    index = ValueIndex(small_file.introspect(samples=0))
    index.extend(small_file, budget_s=0)
    assert index.size == 0 and not index.complete
    index.extend(small_file, budget_s=5, first=lambda table: table.name == "shop")
    assert index.complete and index.exact("bikes")


class _Failing:
    """A database whose every statement times out: the index says what it skipped and stays usable."""

    dialect = "sqlite"

    def execute(self, sql: str, *, options: ExecOptions | None = None, guard: bool = True) -> Result:
        raise QueryTimeout("query stopped after the 0.1 s statement timeout")


def test_a_batch_that_times_out_is_skipped(small_file):
    index = ValueIndex(small_file.introspect(samples=0))
    index.extend(_Failing(), budget_s=5)
    assert index.complete and index.size == 0 and index.skipped == 4  # the four text columns


class _SlowTable:
    """A real database where any statement reading `city` times out (a huge table, say)."""

    def __init__(self, db: SqliteDatabase):
        self.db, self.dialect, self.statements = db, db.dialect, 0

    def execute(self, sql: str, *, options: ExecOptions | None = None, guard: bool = True) -> Result:
        self.statements += 1
        if 'FROM "city"' in sql:
            raise QueryTimeout("query stopped after the 2 s statement timeout")
        return self.db.execute(sql, options=options, guard=guard)


def test_one_slow_table_costs_only_its_own_columns(small_file):
    index = ValueIndex(small_file.introspect(samples=0))
    slow = _SlowTable(small_file)
    index.extend(slow, budget_s=5)
    assert index.complete and index.skipped == 2  # city.name and city.blurb
    assert index.exact("lyon") and index.exact("bikes")  # shop's columns, retried one by one
    assert slow.statements == 1 + 4


def test_postgres_values_are_read_inside_the_guard(defog_db):
    database = connect(defog_db("restaurants"))
    try:
        index = ValueIndex(database.introspect(samples=0))
        index.extend(database, budget_s=10)
        assert index.complete and index.skipped == 0
        assert StoredValue("location", "city_name", "Los Angeles") in index.exact("los angeles")
        assert index.containing("angeles")  # whole words inside a longer value
    finally:
        database.close()


# ---- the question's phrases and the matching ----------------------------------------------------


def test_phrases_skip_stop_words_and_keep_quoted_literals():
    found = values.phrases("How many singers are from 'United States' or the singer's France?")
    assert found[0] == "united states"
    assert "singers" in found and "france" in found
    assert not {"how", "many", "the", "s", "or the"} & set(found)
    assert "singer s france" in found  # a run may hold a possessive's "s" in the middle


def test_exact_before_contains_and_near(cars):
    assert where(values.find(cars, "Which cars does the maker volvo build?")) >= {
        ("car_makers", "Maker", "volvo", "exact"), ("car_makers", "FullName", "Volvo", "exact")}
    near = values.find(cars, "Which models does toyotta make?")
    assert ("car_makers", "Maker", "toyota", "near") in where(near)
    contained = values.find(cars, "What is the horsepower of the impala?")
    assert ("car_names", "Make", "chevrolet impala", "contains") in where(contained)


def test_a_longer_match_hides_its_words(cars):
    found = values.find(cars, "How many car models are produced by General Motors?")
    assert [m.phrase for m in found] == ["general motors"]


def test_with_matches_puts_the_match_first_and_keeps_the_count(cars):
    matches = values.find(cars, "Show the cars made by 'General Motors'.")
    changed = values.with_matches(cars.schema, matches)
    column = changed.table("car_makers").column("FullName")
    original = cars.schema.table("car_makers").column("FullName")
    assert column.samples[0] == "General Motors" and len(column.samples) == len(original.samples)
    assert changed.table("countries") is cars.schema.table("countries")  # untouched tables are shared


# ---- in the pipeline ------------------------------------------------------------------------------


def text_of(request) -> str:
    return "\n".join(m.content for m in request.messages)


def test_the_prompts_show_the_matched_value_first(db, schema):  # noqa: F811 - fixtures
    question = "What are the names of the singers from the united states?"
    engine = ScriptedEngine(sl='{"singer": ["Name"]}', ts="```sql\nSELECT Name FROM singer\n```")
    options = PipelineOptions(stages=StageConfig.parse("values,sl"))
    answer = Pipeline(engine, db, schema, options=options).ask(question)
    event = answer.events[0]
    assert event.stage == Stage.VALUES and event.accepted
    assert {"table": "singer", "column": "Country", "value": "United States", "how": "exact",
            "phrase": "united states"} in event.artifact
    first_examples = "examples: 'United States'"
    linking_prompt = text_of(next(r for task, r, _ in engine.calls if task == "sl"))
    assert first_examples in linking_prompt
    generation = text_of([r for task, r, _ in engine.calls if task == "ts"][-1])
    # linking named only singer.Name; Country is kept because it holds the value the question names
    assert any("Country" in line and first_examples in line for line in generation.splitlines())


def test_why_lists_the_matches(db, schema):  # noqa: F811 - fixtures
    from prompt_toolkit.formatted_text import to_plain_text

    from routesh.shell.stagesview import trace

    engine = ScriptedEngine(sl='{"singer": ["Name"]}', ts="```sql\nSELECT Name FROM singer\n```")
    answer = Pipeline(engine, db, schema, options=PipelineOptions(stages=StageConfig.parse("values,sl"))).ask(
        "Which singers come from netherland?")
    text = to_plain_text(trace(answer))
    assert "matches:\n" in text and "'netherland' → singer.Country = 'Netherlands' (near)" in text


def test_without_the_stage_nothing_is_looked_up(db, schema):  # noqa: F811 - fixtures
    engine = ScriptedEngine(sl='{"singer": ["Name"]}', ts="```sql\nSELECT Name FROM singer\n```")
    answer = Pipeline(engine, db, schema, options=PipelineOptions(stages=StageConfig.parse("sl"))).ask(
        "What are the names of the singers from the united states?")
    assert Stage.VALUES not in {e.stage for e in answer.events}
    linking_prompt = text_of(next(r for task, r, _ in engine.calls if task == "sl"))
    assert "examples: 'Netherlands', 'United States'" in linking_prompt  # the first rows' order
