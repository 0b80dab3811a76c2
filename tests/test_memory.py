"""Remembered queries: the local store, the retrieval that picks examples, the prompt they go into, the
pipeline's memory stage, and routesh-eval's leave-one-out. The shell's commands are in test_shell_e2e.py."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from routesh import prompts
from routesh.db.schema import Column, Schema, Table
from routesh.db.sqlite import SqliteDatabase
from routesh.evaluate.cli import main as eval_main
from routesh.evaluate.datasets import Example as Question
from routesh.evaluate.loo import leave_one_out
from routesh.memory import QueryMemory, schema_fingerprint
from routesh.pipeline.options import PipelineOptions
from routesh.pipeline.pipeline import Pipeline
from routesh.pipeline.stages import StageConfig
from routesh.retrieval import Example, most_similar
from tests.test_pipeline import DB, GOOD, QUESTION, ScriptedEngine

POOL = [
    Example("How many concerts were held in 2014?", "SELECT count(*) FROM concert WHERE Year = 2014"),
    Example("List the names of all stadiums.", "SELECT Name FROM stadium"),
    Example("Which singers performed in the concert of 2014?", GOOD),
    Example("What is the average age of singers?", "SELECT avg(Age) FROM singer"),
]


@pytest.mark.parametrize("method", ["bm25", "overlap"])
def test_the_closest_remembered_questions_come_last_and_unrelated_ones_never(method):
    chosen = most_similar("Show the names of singers who performed in concerts in 2014.", POOL, 3, method)
    assert chosen[-1] == POOL[2]  # singers, performed, concert, 2014: the closest, next to the question
    assert POOL[1] in chosen[:-1] or POOL[0] in chosen[:-1]
    assert most_similar("Which stadium has the largest capacity?", POOL, 3, method) == [POOL[1]]
    assert most_similar("zebra", POOL, 3, method) == [] and most_similar("singers", [], 3, method) == []


def test_bm25_weighs_rare_words_above_common_ones():
    pool = [Example("singers of France", "a"), Example("singers of Japan", "b"),
            Example("singers younger than 30", "c")]
    # "singers" is in every question, "France" in one: it decides
    assert most_similar("singers from France", pool, 1) == [pool[0]]


def _schema(*tables: tuple[str, tuple[str, ...]]) -> Schema:
    return Schema("sqlite", tuple(Table(name, tuple(Column(c, "TEXT") for c in columns)) for name, columns in tables))


def test_a_schema_is_known_by_its_tables_and_columns_in_any_order_or_case():
    one = schema_fingerprint(_schema(("singer", ("Name", "Age")), ("concert", ("Year",))))
    assert one == schema_fingerprint(_schema(("concert", ("year",)), ("SINGER", ("age", "name"))))
    assert one != schema_fingerprint(_schema(("singer", ("Name", "Age", "Country")), ("concert", ("Year",))))


def test_the_store_keeps_numbers_takes_the_newer_sql_and_forgets(tmp_path):
    path = tmp_path / "data" / "memory.sqlite"
    memory = QueryMemory(path)
    assert memory.entries("a") == [] and not path.exists()  # reading creates nothing
    first = memory.remember("a", "How many  singers?", "SELECT count(*) FROM singer", "concert.sqlite")
    second = memory.remember("a", "Oldest singer?", "SELECT max(Age) FROM singer", "concert.sqlite")
    other = memory.remember("b", "How many singers?", "SELECT 1", "elsewhere.sqlite")
    again = memory.remember("a", "How many singers?", "SELECT count(*) AS n FROM singer;", "concert.sqlite")
    assert first.question == "How many singers?" and again.id == first.id
    memory.close()
    reopened = QueryMemory(path)  # kept on disk
    assert [(r.id, r.sql) for r in reopened.entries("a")] == [(first.id, "SELECT count(*) AS n FROM singer;"),
                                                              (second.id, "SELECT max(Age) FROM singer")]
    assert reopened.forget("a", other.id) is None  # another schema's number is not this schema's
    assert reopened.forget("a", second.id).question == "Oldest singer?"
    assert [r.id for r in reopened.entries("a")] == [first.id] and len(reopened.entries("b")) == 1
    with sqlite3.connect(path) as conn:  # a plain SQLite file the user can read
        assert conn.execute("SELECT count(*) FROM remembered").fetchone()[0] == 2
    assert reopened.for_schema("a").similar("how many singers are there", 3)[0].sql.startswith("SELECT count(*)")


def test_without_examples_the_generation_prompt_is_unchanged_and_with_them_they_come_before_the_question():
    plain = prompts.ts_prompt("CREATE TABLE t (a INT);", "sqlite", "How many?")
    assert plain == prompts.ts_prompt("CREATE TABLE t (a INT);", "sqlite", "How many?", examples=())
    assert plain.messages[-1].content.startswith("Question: How many?\n\nWrite one SQLite query")
    shown = prompts.ts_prompt("CREATE TABLE t (a INT);", "sqlite", "How many?", examples=POOL[:2])
    user = shown.messages[-1].content
    assert user.startswith("Questions answered before on this database, with their SQL:\n\n"
                           f"Question: {POOL[0].question}\nSQL: {POOL[0].sql}\n\nQuestion: {POOL[1].question}")
    assert user.endswith(plain.messages[-1].content) and shown.messages[0] == plain.messages[0]


class _Remembered:
    def __init__(self, examples):
        self.examples, self.asked = examples, []

    def similar(self, question, k):
        self.asked.append((question, k))
        return self.examples[:k]


def test_the_pipeline_shows_remembered_queries_where_sql_is_written_and_says_which():
    db = SqliteDatabase.open(DB)
    try:
        schema = db.introspect(samples=5)
        engine = ScriptedEngine(sl='{"singer": ["Name"], "concert": ["Year"]}', ts=f"```sql\n{GOOD}\n```",
                                nc="correct", cw=f"```sql\n{GOOD}\n```")
        source = _Remembered(POOL)
        options = PipelineOptions(stages=StageConfig.parse("sl,nc,cw"), examples=2)
        answer = Pipeline(engine, db, schema, options=options, examples=source).ask(QUESTION)
    finally:
        db.close()
    assert source.asked == [(QUESTION, 2)]
    memory = answer.events[0]
    assert memory.stage == "memory" and memory.summary.startswith("2 remembered queries as examples: How many")
    written = [request for task, request, _ in engine.calls if task == "ts"]  # the pseudo-SQL and the generation
    assert len(written) == 2 and all(POOL[1].sql in r.messages[-1].content for r in written)
    others = [request for task, request, _ in engine.calls if task != "ts"]
    assert others and not any("answered before" in r.messages[-1].content for r in others)


def _question(index: int, db_id: str, text: str, sql: str) -> Question:
    return Question(index, db_id, text, sql, Path(f"{db_id}.sqlite"))


def test_leave_one_out_offers_the_other_questions_of_the_same_database_only():
    everything = [_question(0, "a", "How many singers?", "SELECT count(*) FROM singer"),
                  _question(1, "a", "How many singers are from France?", "SELECT 2"),
                  _question(2, "b", "How many singers live here?", "SELECT 3"),
                  _question(3, "a", None, "SELECT 4")]  # no question: never an example
    offered = leave_one_out(everything, "bm25")(everything[0])
    assert offered.pool == (Example("How many singers are from France?", "SELECT 2"),)
    assert offered.similar("How many singers?", 3) == list(offered.pool)
    # the same question in other words, with the same SQL: kept by loo, left out by loo-distinct
    everything.append(_question(4, "a", "Count the singers.", "select count(*) from singer;"))
    assert Example("Count the singers.", "select count(*) from singer;") in leave_one_out(everything, "bm25")(
        everything[0]).pool
    assert leave_one_out(everything, "bm25", distinct=True)(everything[0]).pool == offered.pool


def test_routesh_eval_refuses_a_memory_without_examples(capsys):
    assert eval_main(["--memory", "loo", "--memory-k", "0", "--limit", "1"]) == 1
    assert capsys.readouterr().err.strip() == "routesh-eval: --memory-k must be 1 or more"
