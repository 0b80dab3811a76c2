"""routesh-eval's data: gold alternatives in sql-eval's convention, postgres-defog, FILE data sets,
loading the defog databases on a server, and judging a prediction against several alternatives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from routesh.errors import UsageError
from routesh.evaluate.alternatives import expand_gold
from routesh.sql.split import split_statements
from routesh.evaluate.compare import any_match, results_match
from routesh.evaluate.datasets import Example, load_data, load_defog, load_file
from routesh.evaluate.gold import check_gold
from routesh.evaluate.pgload import attach_databases, created_tables, load_databases
from routesh.evaluate.runner import Receipt, judge, evaluate, load_receipts, summarize
from routesh.pipeline.options import PipelineOptions
from routesh.pipeline.stages import StageConfig
from tests.helpers import SHARED_DATA
from tests.test_pipeline import ScriptedEngine

SPIDER = SHARED_DATA / "spider"
DEFOG = SHARED_DATA / "postgres-defog"
needs_defog = pytest.mark.skipif(not DEFOG.is_dir(), reason="../shared/data/postgres-defog is absent")
needs_spider = pytest.mark.skipif(not SPIDER.is_dir(), reason="../shared/data/spider is absent")


# ---- gold alternatives ----------------------------------------------------------------------------


def test_semicolons_split_alternatives_but_not_inside_strings_identifiers_or_comments():
    cell = ("SELECT 'a;b' AS \"c;d\" FROM t -- e;f\n WHERE x = 'it''s;';"
            "SELECT $$g;h$$, $q$i;j$q$;  ;SELECT E'k\\';l' /* m;n */;")
    assert split_statements(cell) == [
        "SELECT 'a;b' AS \"c;d\" FROM t -- e;f\n WHERE x = 'it''s;'",
        "SELECT $$g;h$$, $q$i;j$q$",
        "SELECT E'k\\';l' /* m;n */",
    ]
    assert split_statements("SELECT 1") == ["SELECT 1"]
    assert split_statements(" ; SELECT 1 ;; ") == ["SELECT 1"]


def test_braces_expand_to_every_column_choice_and_empty_braces_repeat_it():
    cell = "SELECT {author.name, author.aid}, count(*) FROM author GROUP BY {} ORDER BY {}"
    assert expand_gold(cell) == (
        "SELECT author.name, count(*) FROM author GROUP BY author.name ORDER BY author.name",
        "SELECT author.aid, count(*) FROM author GROUP BY author.aid ORDER BY author.aid",
        "SELECT author.name, author.aid, count(*) FROM author GROUP BY author.name, author.aid "
        "ORDER BY author.name, author.aid",
    )


def test_braces_inside_strings_stay_and_commas_inside_parentheses_do_not_split_options():
    assert expand_gold("SELECT {a,b} FROM t WHERE s = '{x,y}' AND j = '{}'") == (
        "SELECT a FROM t WHERE s = '{x,y}' AND j = '{}'",
        "SELECT b FROM t WHERE s = '{x,y}' AND j = '{}'",
        "SELECT a, b FROM t WHERE s = '{x,y}' AND j = '{}'",
    )
    assert expand_gold("SELECT {COALESCE(a, 0), b} FROM t") == (
        "SELECT COALESCE(a, 0) FROM t", "SELECT b FROM t", "SELECT COALESCE(a, 0), b FROM t")


def test_alternatives_combine_semicolons_and_braces_without_duplicates():
    cell = "SELECT {a, b} FROM t;SELECT c FROM u;SELECT c FROM u;"
    assert expand_gold(cell) == ("SELECT a FROM t", "SELECT b FROM t", "SELECT a, b FROM t", "SELECT c FROM u")
    assert expand_gold("SELECT x FROM t;") == ("SELECT x FROM t",)


def test_two_choice_groups_multiply_and_each_empty_pair_repeats_the_group_before_it():
    out = expand_gold("SELECT {a,b}, {c,d} FROM t GROUP BY {}")
    assert len(out) == 9
    assert "SELECT a, d FROM t GROUP BY d" in out and "SELECT a, b, c, d FROM t GROUP BY c, d" in out


# ---- comparing against alternatives ---------------------------------------------------------------


def test_a_prediction_matching_any_alternative_counts():
    golds = [("SELECT name FROM a", [("ann",), ("bob",)]),
             ("SELECT aid FROM a", [(1,), (2,)]),
             ("SELECT name, aid FROM a ORDER BY aid", [("ann", 1), ("bob", 2)])]
    assert any_match(golds, [(2,), (1,)]) == 1
    assert any_match(golds, [(1, "ann"), (2, "bob")]) == 2  # columns in another order
    assert any_match(golds, [(2, "bob"), (1, "ann")]) is None  # the third alternative orders its rows
    assert any_match(golds, [(3,)]) is None
    # an extra predicted column: wrong by the test-suite rule, right by sql-eval's lenient subset rule
    assert any_match(golds, [("ann", 10), ("bob", 20)]) is None
    assert any_match(golds, [("ann", 10), ("bob", 20)], extra_columns=True) == 0


def test_extra_columns_rule():
    gold = [("ann",), ("bob",)]
    assert results_match(gold, [(7, "ann"), (8, "bob")], ordered=False, extra_columns=True)
    assert not results_match(gold, [(7, "ann"), (8, "bob")], ordered=False)
    assert not results_match(gold, [(7, "ann"), (8, "cid")], ordered=False, extra_columns=True)
    assert not results_match([("ann", 1)], [("ann",)], ordered=False, extra_columns=True)  # fewer columns
    assert not results_match(gold, [(7, "bob"), (8, "ann")], ordered=True, extra_columns=True)


# ---- postgres-defog -------------------------------------------------------------------------------


@needs_defog
def test_postgres_defog_loads_with_categories_hints_and_alternatives():
    examples = load_defog()
    assert len(examples) == 210 and len({ex.db_id for ex in examples}) == 11
    assert all(ex.dialect == "postgres" and ex.setup_sql is not None and ex.answerable for ex in examples)
    categories = {ex.category for ex in examples}
    assert categories == {"group_by", "order_by", "ratio", "table_join", "instruct", "date_functions"}
    assert sum(ex.hint is not None for ex in examples) == 35
    assert all(ex.category == "instruct" for ex in examples if ex.hint)
    assert sum(len(ex.alternatives) for ex in examples) == 364
    assert all("{" not in alt and not alt.rstrip().endswith(";") for ex in examples for alt in ex.alternatives)
    assert load_data("postgres-defog") == examples


@needs_defog
def test_the_postgres_tuning_set_is_other_questions_on_four_of_the_databases():
    tuning = load_data("postgres-defog-instruct")
    assert len(tuning) == 104 and {ex.db_id for ex in tuning} == {"broker", "car_dealership", "derm_treatment", "ewallet"}
    assert [ex.index for ex in tuning] == list(range(104))
    assert all(ex.dialect == "postgres" and ex.answerable and ex.category for ex in tuning)
    assert sum(ex.hint is not None for ex in tuning) == 64  # instruct_advanced's instructions
    assert not {ex.question for ex in tuning} & {ex.question for ex in load_defog()}  # nothing reported is tuned on


def test_created_tables_reads_the_ddl():
    script = 'CREATE TABLE public.a (x int);\ncreate table if not exists s.b (y int);\nCREATE TABLE "Q" (z int);'
    assert created_tables(script) == ["public.a", "s.b", '"Q"']


# ---- FILE ---------------------------------------------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def tiny_sqlite(tmp_path) -> Path:
    import sqlite3

    folder = tmp_path / "dbs"
    folder.mkdir()
    path = folder / "pets.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript("CREATE TABLE pet (name TEXT, age INT); INSERT INTO pet VALUES ('rex', 3), ('tom', 5);")
    conn.close()
    return path


def test_file_json_and_jsonl(tmp_path, tiny_sqlite):
    records = [
        {"question": "How many pets?", "query": "SELECT count(*) FROM pet", "db_id": "pets", "db_path": "dbs/pets.sqlite"},
        {"question": "Oldest?", "query": "SELECT name FROM pet ORDER BY age DESC LIMIT 1", "db_id": "pets",
         "db_path": "dbs/pets.sqlite", "hint": "age is in years", "category": "order"},
        {"question": "On PG", "query": "SELECT 1", "db_id": "x", "dsn": "postgresql://u@localhost/x"},
    ]
    as_json = load_file(_write(tmp_path / "ex.json", json.dumps(records)))
    as_jsonl = load_file(_write(tmp_path / "ex.jsonl", "\n".join(json.dumps(r) for r in records) + "\n\n"))
    assert as_json == as_jsonl
    first, second, third = as_json
    assert first.db_path == tiny_sqlite.resolve() and first.dialect == "sqlite" and first.index == 0
    assert second.hint == "age is in years" and second.category == "order"
    assert third.dsn == "postgresql://u@localhost/x" and third.dialect == "postgres" and third.db_path is None
    assert all(ex.answerable for ex in as_json)


@needs_spider
def test_spiders_dev_json_with_db_dir():
    examples = load_file(SPIDER / "dev.json", db_dir=SPIDER / "database")
    assert len(examples) == 1034
    assert sum(ex.db_path is None for ex in examples) == 62  # wta_1 is missing, as with --data spider-dev
    spider = load_data("spider-dev")
    def same(e):  # the file route resolves paths; shared/ may be reached through a symbolic link
        return e.db_id, e.question, e.gold_sql, e.db_path and e.db_path.resolve()

    assert [same(e) for e in examples] == [same(e) for e in spider]


@pytest.mark.parametrize("record, message", [
    ({"question": "q", "query": "SELECT 1", "db_id": "pets", "db_path": "dbs/pets.sqlite", "evidence": "x"},
     "record 2: unknown field(s) evidence"),
    ({"question": "q", "db_id": "pets", "db_path": "dbs/pets.sqlite"}, "record 2: missing or empty field(s) query"),
    ({"question": "q", "query": "SELECT 1", "db_id": "pets"}, "record 2: no database: give db_path or dsn"),
    ({"question": "q", "query": "SELECT 1", "db_id": "pets", "db_path": "dbs/pets.sqlite", "dsn": "postgresql://x"},
     "record 2: give db_path or dsn, not both"),
    ({"question": "q", "query": "SELECT 1", "db_id": "pets", "db_path": "dbs/nope.sqlite"},
     "record 2: db_path dbs/nope.sqlite is not a file"),
    ({"question": "q", "query": "SELECT 1", "db_id": "pets", "dsn": "some/file.db"}, "record 2: dsn must name a PostgreSQL"),
    (["not", "an", "object"], "record 2: expected an object"),
])
def test_bad_records_name_the_file_and_the_record(tmp_path, tiny_sqlite, record, message):
    good = {"question": "q", "query": "SELECT 1", "db_id": "pets", "db_path": "dbs/pets.sqlite"}
    path = _write(tmp_path / "bad.jsonl", json.dumps(good) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(UsageError) as caught:
        load_file(path)
    assert str(caught.value).startswith(f"{path}: {message}")
    assert "\n" not in str(caught.value)


def test_a_broken_jsonl_line_and_a_missing_file(tmp_path):
    path = _write(tmp_path / "broken.jsonl", '{"question": "q"}\n\n{"question": \n')
    with pytest.raises(UsageError, match=r"broken.jsonl: record 2 \(line 3\) is not valid JSON"):
        load_file(path)
    with pytest.raises(UsageError, match="neither a data set .* nor a file"):
        load_data(str(tmp_path / "absent.json"))


def _routesh_eval(*args, env=None):
    exe = Path(sys.executable).with_name("routesh-eval")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_cli_file_check_gold_and_a_bad_file(tmp_path, tiny_sqlite):
    records = [{"question": "How many?", "query": "SELECT count(*) FROM pet", "db_id": "pets", "db_path": "dbs/pets.sqlite"},
               {"question": "Names?", "query": "SELECT name FROM pet;", "db_id": "pets", "db_path": "dbs/pets.sqlite"}]
    good = _write(tmp_path / "ok.json", json.dumps(records))
    run = _routesh_eval("--data", str(good), "--check-gold")
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith("ok.json: 2 gold queries — ran 2, refused 0")
    bad = _write(tmp_path / "bad.json", json.dumps([records[0], {"question": "q", "db_id": "pets"}]))
    run = _routesh_eval("--data", str(bad), "--check-gold")
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [f"routesh-eval: {bad}: record 2: missing or empty field(s) query"]
    run = _routesh_eval("--data", "postgres-defog", "--check-gold")
    assert run.returncode == 1 and "needs a PostgreSQL server" in run.stderr
    run = _routesh_eval("--data", "spider-dev", "--db-dir", str(tmp_path), "--check-gold")
    assert run.returncode == 1 and "--db-dir applies to --data FILE only" in run.stderr


# ---- receipts stay readable -----------------------------------------------------------------------


def test_old_receipts_still_load_and_new_fields_are_optional(tmp_path):
    old = {"index": 3, "db_id": "pets", "question": "q", "gold_sql": "SELECT 1", "hardness": "easy",
           "predicted_sql": "SELECT 1", "correct": True, "abstained": False, "reason": "", "seconds": 1.0,
           "tokens": 10, "stages": "ts", "events": [], "error": None}
    newer = {**old, "index": 4, "category": "ratio", "correct_subset": True, "a_field_from_the_future": 1}
    path = _write(tmp_path / "r.jsonl", json.dumps(old) + "\n" + json.dumps(newer) + "\n")
    receipts = load_receipts(path)
    assert receipts[3].category is None and receipts[3].correct_subset is None and receipts[3].alternatives == 1
    assert receipts[4].category == "ratio"
    summary = summarize([receipts[3]])
    assert summary.by_category == {} and any(line.startswith("  easy") for line in summary.lines())
    mixed = summarize(list(receipts.values())).lines()
    assert "  by category:" in mixed
    assert any(line.startswith("  (none)") and line.endswith("(1/1)") for line in mixed)  # the old receipt


# ---- on a real PostgreSQL server ------------------------------------------------------------------


@pytest.mark.postgres
@needs_defog
def test_databases_load_once_then_are_reused(pg_server):
    sources = {"restaurants": DEFOG / "databases" / "restaurants.sql"}
    first = load_databases(pg_server.admin_dsn, sources, prefix="pgload_")
    assert first["restaurants"].action == "loaded" and first["restaurants"].database == "pgload_restaurants"
    with psycopg.connect(first["restaurants"].dsn) as conn:
        oid = conn.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()[0]
        count = conn.execute("SELECT count(*) FROM public.restaurant").fetchone()[0]
    second = load_databases(pg_server.admin_dsn, sources, prefix="pgload_")
    assert second["restaurants"].action == "reused"
    with psycopg.connect(second["restaurants"].dsn) as conn:
        assert conn.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()[0] == oid
        assert conn.execute("SELECT count(*) FROM public.restaurant").fetchone()[0] == count > 0
    # an empty leftover (an interrupted load) is loaded again; someone else's database is left alone
    with pg_server.admin_connect() as admin:
        admin.execute("CREATE DATABASE pgload2_restaurants")
        admin.execute("CREATE DATABASE pgload3_restaurants")
    assert load_databases(pg_server.admin_dsn, sources, prefix="pgload2_")["restaurants"].action == "reloaded"
    with psycopg.connect(pg_server.dsn("pgload3_restaurants"), autocommit=True) as conn:
        conn.execute("CREATE TABLE mine (x int)")
    with pytest.raises(UsageError, match="pgload3_restaurants exists on the server but lacks"):
        load_databases(pg_server.admin_dsn, sources, prefix="pgload3_")
    # a role that may not create databases: one line saying so
    weak = pg_server.dsn("postgres", user=pg_server.password_user, password=pg_server.password)
    with pytest.raises(UsageError, match="preparing database nope_restaurants failed: permission denied") as caught:
        load_databases(weak, sources, prefix="nope_")
    assert pg_server.password not in str(caught.value)


@pytest.mark.postgres
@needs_defog
def test_judging_against_alternatives_on_postgres(defog_db):
    cell = next(ex for ex in load_defog() if ex.index == 1)  # academic: 3 statements with {a, b} choices
    ex = Example(index=1, db_id="academic", question=cell.question, gold_sql=cell.gold_sql, db_path=None,
                 dsn=defog_db("academic"), dialect="postgres", golds=cell.golds)
    assert len(ex.alternatives) == 9
    from routesh.evaluate.datasets import open_database

    db = open_database(ex)
    try:
        for k, alt in enumerate(ex.alternatives):  # each alternative, predicted, is correct
            correct, subset, matched, error = judge(ex, db, alt)
            assert correct and subset and error is None, (k, alt)
            assert ex.alternatives[matched] == alt or matched < k
        fifth = ex.alternatives[4]  # SELECT a.name, COUNT(c.cited) ... GROUP BY a.name ORDER BY total_citations DESC
        assert judge(ex, db, fifth)[:3] == (True, True, 4)
        # an extra column: wrong by the test-suite rule, right by the lenient subset rule
        extra = fifth.replace("SELECT a.name,", "SELECT a.name, 'x' AS extra,")
        assert judge(ex, db, extra)[:3] == (False, True, None)
        assert judge(ex, db, "SELECT 1")[:3] == (False, False, None)
        error = judge(ex, db, "SELECT nope FROM author")[3]
        assert error.startswith("predicted: ")
    finally:
        db.close()


class AlternativeEngine(ScriptedEngine):
    """Answers each question with one of its gold alternatives (the last), or a wrong query for some."""

    def __init__(self, examples, wrong: set[int]):
        super().__init__()
        self.by_question = {ex.question.strip(): ex for ex in examples}
        self.wrong = wrong

    def generate(self, requests, params=None, *, cancel=None):
        from routesh.engine.base import Completion

        out = []
        for request in requests:
            self.calls.append(("ts", request, params))
            question = request.messages[-1].content.split("\n", 1)[0].removeprefix("Question: ")
            ex = self.by_question[question]
            sql = "SELECT 1" if ex.index in self.wrong else ex.alternatives[-1]
            out.append(Completion(f"```sql\n{sql}\n```", 50, 5, "stop", 0.01))
        return out


@pytest.mark.postgres
@needs_defog
def test_runner_on_postgres_defog_with_hints_and_categories(pg_server, tmp_path):
    everything = load_defog()
    picked = [ex for ex in everything if ex.db_id == "broker"][:5]  # 5 questions, no hints
    picked += [ex for ex in everything if ex.hint and ex.db_id == "restaurants"][:1]
    examples, loaded = attach_databases(picked, pg_server.admin_dsn, prefix="runner_")
    assert set(loaded) == {ex.db_id for ex in picked} and all(ex.dsn for ex in examples)
    wrong = {examples[0].index}
    engine = AlternativeEngine(examples, wrong)
    out = tmp_path / "defog.jsonl"
    summary = evaluate(examples, engine, options=PipelineOptions(stages=StageConfig.parse("ts")), out=out)
    assert summary.total == len(examples) and summary.correct == len(examples) - 1
    receipts = load_receipts(out)
    assert all(r.category for r in receipts.values())
    assert receipts[examples[0].index].correct is False
    assert all(r.alternatives == len(ex.alternatives) for ex in examples for r in [receipts[ex.index]])
    hinted = [r for _, r, _ in engine.calls if "\nHint: " in r.messages[-1].content]
    assert len(hinted) == 1
    lines = summary.lines()
    assert "  by category:" in lines
    assert not any(line.lstrip().startswith(("easy", "medium")) for line in lines)
    # gold check on the same databases: every alternative runs, nothing refused
    report = check_gold(examples)
    assert report.refusals == [] and report.errors == []
    assert report.counts["ran"] == report.queries == sum(len(ex.alternatives) for ex in examples)
    # resuming into receipts of another data set is refused
    with pytest.raises(UsageError, match="holds receipts of another data set"):
        evaluate(load_data("spider-dev")[: max(r.index for r in receipts.values()) + 1], engine,
                 options=PipelineOptions(stages=StageConfig.parse("ts")), out=out)


def test_receipt_fields_are_json_round_trippable():
    from dataclasses import asdict

    r = Receipt(index=0, db_id="d", question="q", gold_sql="g", hardness="easy", predicted_sql=None, correct=False,
                abstained=True, reason="r", seconds=0.1, tokens=1, stages="ts", category="ratio")
    assert Receipt(**json.loads(json.dumps(asdict(r)))) == r


@pytest.mark.postgres
@needs_defog
def test_check_gold_on_postgres_defog_with_a_throwaway_server():
    from routesh.evaluate.pgserver import find_bin_dir

    if find_bin_dir() is None:
        pytest.skip("no PostgreSQL server binaries")
    run = _routesh_eval("--data", "postgres-defog", "--start-pg", "--check-gold", "--limit", "12")
    assert run.returncode == 0, run.stderr[-2000:]
    assert "defog_academic (loaded)" in run.stderr
    first = run.stdout.splitlines()[0]
    assert first.startswith("postgres-defog: ") and "(the alternatives of 12 questions)" in first
    assert "refused 0 (guard 0, database 0), database errors 0" in first
    assert "questions whose every gold alternative ran: 12/12" in run.stdout
