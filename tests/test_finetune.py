"""finetune/: the four ROUTE task datasets built from Spider train, and training on them.

The data tests use the real Spider train questions and databases in ../shared/data; the prompts are
checked byte for byte against the requests the real Pipeline makes (a recording engine stands in for
the model). The training test runs 5 real optimizer steps on the catalog test model (smollm2-135m)
and loads the adapter back into routesh."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import pytest

from routesh import prompts
from routesh.db.sqlite import SqliteDatabase
from routesh.engine.base import ChatRequest, Completion, GenerationParams
from routesh.evaluate.compare import order_matters, results_match
from routesh.db.base import ExecOptions
from routesh.errors import RoutesError
from routesh.sql.extract import extract_sql
from routesh.sql.hardness import hardness
from routesh.sql.usage import tables_and_columns
from routesh.pipeline.options import PipelineOptions
from routesh.pipeline.pipeline import Pipeline
from routesh.pipeline.stages import StageConfig
from tests.helpers import REPO, SHARED_DATA

from finetune import corrupt
from finetune.synth import SynthOptions, Synthesizer, build_dataset, read_records, tidy_sql

SPIDER = SHARED_DATA / "spider"
pytestmark = pytest.mark.skipif(not (SPIDER / "train_spider.json").is_file(), reason="../shared/data/spider is absent")

# Spider train questions the tests look at: single table, aggregate, GROUP BY/HAVING, a join with
# aliases, ORDER BY, a second join, UNIONs and 3-table joins (hard: continuation writing runs), NOT IN a
# subquery whose reduced schema needs a bridging table.
INDICES = (0, 2, 6, 7, 12, 23, 41, 63, 85, 100, 101, 1000, 3000, 3010, 5000)
# the stages whose prompts the data renders: ROUTE's, each schema text showing the stored values the question names
TRAINED_STAGES = PipelineOptions(stages=StageConfig.parse("values,sl,nc,cw"))


@lru_cache(maxsize=1)
def spider_train():
    from routesh.evaluate.datasets import load_spider

    return load_spider("spider-train")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ft-data")
    build_dataset(out, SynthOptions(seed=0), examples=[spider_train()[i] for i in INDICES], progress=False)
    return out


def records(folder: Path, task: str) -> list[dict]:
    return list(read_records(folder / f"{task}.jsonl"))


@lru_cache(maxsize=None)
def open_db(db_id: str) -> tuple[SqliteDatabase, object]:
    db = SqliteDatabase.open(SPIDER / "database" / db_id / f"{db_id}.sqlite")
    return db, db.introspect(samples=5)


# ---- well-formed examples ------------------------------------------------------------------------------


def test_every_task_has_well_formed_examples(dataset):
    card = json.loads((dataset / "card.json").read_text())
    for task in ("ts", "sl", "nc", "cw"):
        recs = records(dataset, task)
        assert recs, f"no {task} examples"
        assert card["counts"][task] == len(recs)
        for rec in recs:
            assert set(rec) == {"task", "messages", "db_id", "source_index", "kind"}
            assert rec["task"] == task
            assert [m["role"] for m in rec["messages"]] == ["system", "user", "assistant"]
            assert all(isinstance(m["content"], str) and m["content"] for m in rec["messages"])
            ex = spider_train()[rec["source_index"]]
            assert ex.db_id == rec["db_id"] and ex.question is not None
            assert rec["messages"][0]["content"].startswith("You are an expert in SQLite SQL.")
            asked = rec["messages"][1]["content"]
            assert any(f"{label}: {ex.question.strip()}" in asked for label in ("Question", "Follow-up question"))
            gold = tidy_sql(ex.gold_sql)
            target = rec["messages"][2]["content"]
            if task in ("ts", "cw"):
                assert target == prompts.sql_reply(gold)
                assert extract_sql(target, "sqlite") == gold  # what the pipeline takes from the reply
            elif task == "sl":
                assert prompts.parse_sl_reply(target) is not None
            else:
                verdict = prompts.parse_nc_verdict(target)
                assert verdict is (rec["kind"] in ("gold", "model_correct"))
                if verdict is False:
                    assert extract_sql(target, "sqlite") == gold
    # 12 questions, all with a question and a database; each gives TS twice, SL, NC gold and 1 corruption
    assert card["examples"]["considered"] == len(INDICES) and card["examples"]["pairs_kept"] == len(INDICES)
    by_kind = dict(card["counts_by_kind"]["ts"])
    assert {k: by_kind.pop(k) for k in ("full", "reduced")} == {"full": len(INDICES), "reduced": len(INDICES)}
    # a third of the questions that have neighbours in their database; a quarter whose SQL extends another's;
    # a third of those whose database has a table the gold does not use
    assert set(by_kind) <= {"reduced_memory", "reduced_follow_up", "reduced_noisy"}
    assert card["counts_by_kind"]["nc"]["gold"] == len(INDICES)
    assert sum(n for k, n in card["counts_by_kind"]["nc"].items() if k in corrupt.KINDS) == len(INDICES)
    assert card["prompts"]["routesh.prompts sha256"] and card["sources"]["train_spider.json"]["sha256"]


def test_tidied_gold_runs_as_written():
    sql = "SELECT avg(age) ,  min(age) FROM singer WHERE name  =  'a  b' GROUP BY country ;"
    assert tidy_sql(sql) == "SELECT avg(age), min(age) FROM singer WHERE name = 'a  b' GROUP BY country"
    for ex in spider_train()[:200]:
        if ex.question is None or ex.db_path is None:
            continue
        db, _ = open_db(ex.db_id)
        try:
            gold = db.execute(ex.gold_sql, options=ExecOptions(row_limit=10_000))
        except RoutesError:
            continue
        tidy = db.execute(tidy_sql(ex.gold_sql), options=ExecOptions(row_limit=10_000))
        assert tidy.rows == gold.rows, ex.gold_sql


# ---- prompt parity with the pipeline ------------------------------------------------------------------


class Recorder:
    """A scripted model that records every request the pipeline makes."""

    name, backend = "recorder", "test"

    def __init__(self, **replies: str):
        self.replies = replies
        self.calls: list[tuple[str, ChatRequest]] = []

    def generate(self, requests: Sequence[ChatRequest], params: GenerationParams | None = None, *,
                 cancel=None) -> list[Completion]:
        out = []
        for request in requests:
            user = request.messages[-1].content
            task = ("sl" if "Which tables and columns" in user else "nc" if "Is the candidate SQL correct" in user
                    else "cw" if "Here is the beginning" in user else "ts")
            self.calls.append((task, request))
            out.append(Completion(self.replies[task], prompt_tokens=1, output_tokens=1, finish_reason="stop",
                                  seconds=0.0))
        return out

    def cancel(self) -> None: ...

    def close(self) -> None: ...


def pipeline_requests(index: int, candidate: str | None = None) -> list[tuple[str, list[dict]]]:
    """What the pipeline asks, for this question, of a model that links exactly the gold's tables and
    columns, writes `candidate` (default: the gold) and accepts it."""
    ex = spider_train()[index]
    db, schema = open_db(ex.db_id)
    gold = tidy_sql(ex.gold_sql)
    usage = tables_and_columns(gold, "sqlite", schema)
    engine = Recorder(sl=prompts.sl_reply(usage.as_linking()), ts=prompts.sql_reply(candidate or gold),
                      nc=prompts.NC_CORRECT, cw=prompts.sql_reply(gold))
    Pipeline(engine, db, schema, options=TRAINED_STAGES).ask(ex.question)
    return [(task, request.as_dicts()) for task, request in engine.calls]


def prompt_of(rec: dict) -> list[dict]:
    return rec["messages"][:-1]


@pytest.mark.parametrize("index", [12, 41, 6, 63, 85, 100, 3010])
def test_prompts_are_byte_identical_to_what_the_pipeline_asks(dataset, index):
    calls = pipeline_requests(index)
    tasks = [t for t, _ in calls]
    assert tasks[:4] == ["sl", "ts", "ts", "nc"]  # linking ‖ pseudo-SQL, generation, correction (+ cw if hard)
    mine = {task: [r for r in records(dataset, task) if r["source_index"] == index] for task in ("ts", "sl", "nc", "cw")}
    by_kind = {(r["task"], r["kind"]): r for recs in mine.values() for r in recs}
    assert prompt_of(by_kind["sl", "gold"]) == calls[0][1]  # schema linking on the full schema
    assert prompt_of(by_kind["ts", "full"]) == calls[1][1]  # the pseudo-SQL: TS on the full schema
    assert prompt_of(by_kind["ts", "reduced"]) == calls[2][1]  # generation on the reduced schema
    assert prompt_of(by_kind["nc", "gold"]) == calls[3][1]  # correction, with the gold's real feedback
    if "cw" in tasks:  # the gold is hard: continuation writing from the pipeline's own cut
        assert prompt_of(by_kind["cw", "pipeline_cut"]) == calls[tasks.index("cw")][1]
    else:
        ex = spider_train()[index]
        assert not hardness(tidy_sql(ex.gold_sql), "sqlite").is_hard


def test_schema_texts_show_the_stored_values_the_question_names(dataset, tmp_path):
    assert json.loads((dataset / "card.json").read_text())["notes"]["questions_with_value_matches"] == 4  # 6 7 85 3010
    index = 481  # "How many students live in HKG or CHI?": two stored city codes the samples do not show
    texts = {}
    for matched in (True, False):
        build_dataset(tmp_path / str(matched), SynthOptions(seed=0, values=matched), examples=[spider_train()[index]],
                      progress=False)
        texts[matched] = {r["kind"]: r for r in records(tmp_path / str(matched), "ts")}
    for kind in ("full", "reduced"):
        assert "'HKG', 'CHI'" in texts[True][kind]["messages"][0]["content"]
        assert "'HKG', 'CHI'" not in texts[False][kind]["messages"][0]["content"]
    asked = pipeline_requests(index)
    assert prompt_of(texts[True]["full"]) == asked[1][1] and prompt_of(texts[True]["reduced"]) == asked[2][1]


def test_corrupted_candidates_are_shown_as_the_pipeline_shows_them(dataset):
    # kinds that add no table: the reduced schema is then the same whatever order step 2 merges in
    same_tables = {"flip_comparison", "wrong_literal", "wrong_limit", "order_direction", "drop_distinct",
                   "wrong_aggregate", "drop_group_by", "drop_condition", "and_or", "wrong_column"}
    checked = 0
    for rec in records(dataset, "nc"):
        if rec["kind"] not in same_tables:
            continue
        candidate = rec["messages"][1]["content"].split("Candidate SQL:\n```sql\n", 1)[1].split("\n```", 1)[0]
        calls = pipeline_requests(rec["source_index"], candidate)
        nc = [request for task, request in calls if task == "nc"]
        assert nc and prompt_of(rec) == nc[0]
        checked += 1
    assert checked >= 3


# ---- schema linking targets, checked by hand ---------------------------------------------------------------

SL_EXPECTED = {
    # SELECT count(*) FROM head WHERE age > 56
    0: {"head": ["age"]},
    # SELECT DISTINCT T1.age FROM management AS T2 JOIN head AS T1 ON T1.head_id = T2.head_id WHERE T2.temporary_acting = 'Yes'
    12: {"head": ["age", "head_ID"], "management": ["head_ID", "temporary_acting"]},
    # SELECT Theme FROM farm_competition ORDER BY YEAR ASC   (the schema's spelling: Year)
    23: {"farm_competition": ["Theme", "Year"]},
    # SELECT T2.Theme FROM city AS T1 JOIN farm_competition AS T2 ON T1.City_ID = T2.Host_city_ID WHERE T1.Population > 1000
    41: {"city": ["City_ID", "Population"], "farm_competition": ["Host_city_ID", "Theme"]},
    # SELECT student_id FROM student_course_registrations UNION SELECT student_id FROM student_course_attendance
    100: {"Student_Course_Attendance": ["student_id"], "Student_Course_Registrations": ["student_id"]},
}


def test_schema_linking_targets_match_hand_checked_answers(dataset):
    got = {r["source_index"]: json.loads(r["messages"][2]["content"]) for r in records(dataset, "sl")}
    for index, expected in SL_EXPECTED.items():
        assert got[index] == expected, spider_train()[index].gold_sql


# ---- NC negatives really are wrong ------------------------------------------------------------------------


def test_corruption_negatives_return_something_else_than_the_gold(dataset):
    negatives = [r for r in records(dataset, "nc") if r["kind"] in corrupt.KINDS]
    assert len(negatives) == len(INDICES)
    for rec in negatives:
        ex = spider_train()[rec["source_index"]]
        db, _ = open_db(ex.db_id)
        candidate = rec["messages"][1]["content"].split("Candidate SQL:\n```sql\n", 1)[1].split("\n```", 1)[0]
        gold = db.execute(ex.gold_sql, options=ExecOptions(row_limit=100_000))
        try:
            got = db.execute(candidate, options=ExecOptions(row_limit=100_000))
        except RoutesError as err:
            assert f"Execution failed: {err}"[:60] in rec["messages"][1]["content"]  # the error is the feedback
            continue
        assert not results_match(gold.rows, got.rows, ordered=order_matters(ex.gold_sql)), candidate
        assert "Execution: The query ran and returned" in rec["messages"][1]["content"]


def test_every_corruption_kind_applies_to_some_query():
    db, schema = open_db("concert_singer")
    queries = [
        "SELECT T2.name, count(*) FROM concert AS T1 JOIN stadium AS T2 ON T1.stadium_id = T2.stadium_id "
        "WHERE T1.year >= 2014 AND T2.capacity > 1000 GROUP BY T1.stadium_id HAVING count(*) > 1 ORDER BY T2.name LIMIT 3",
        "SELECT DISTINCT country, max(age) FROM singer WHERE is_male = 'F' GROUP BY country",
    ]
    import random

    seen = set()
    for sql in queries:
        gold = db.execute(sql)
        for c in corrupt.corruptions(sql, schema, random.Random(0)):
            seen.add(c.kind)
            assert c.sql != sql
            try:
                db.execute(c.sql)
            except RoutesError:
                pass  # a failing corruption is a fine negative: its error becomes the feedback
        assert gold.rows is not None
    assert seen == set(corrupt.KINDS)


# ---- model generations from receipts -------------------------------------------------------------------------


def test_receipts_give_model_positives_and_negatives_and_never_dev(tmp_path):
    ex = spider_train()[12]
    right = "SELECT DISTINCT head.age FROM head JOIN management ON head.head_ID = management.head_ID WHERE temporary_acting = 'Yes'"
    wrong = "SELECT DISTINCT age FROM head"
    receipts = tmp_path / "receipts.jsonl"
    lines = [
        {"index": 12, "db_id": ex.db_id, "question": ex.question, "gold_sql": ex.gold_sql, "predicted_sql": right,
         "events": [{"stage": "pseudo", "artifact": wrong}, {"stage": "nc", "artifact": "The query ran and ..."}]},
        # a dev question: must never become training data
        {"index": 0, "db_id": "concert_singer", "question": "How many singers do we have?",
         "gold_sql": "SELECT count(*) FROM singer", "predicted_sql": "SELECT count(*) FROM stadium", "events": []},
    ]
    receipts.write_text("".join(json.dumps(line) + "\n" for line in lines))
    card = build_dataset(tmp_path / "out", SynthOptions(seed=0, corruptions_per_question=0),
                         examples=spider_train()[:20], receipts=receipts, progress=False)
    assert card["sources"]["receipts"]["matched"] == 1 and card["sources"]["receipts"]["not_in_spider_train"] == 1
    nc = {r["kind"]: r for r in records(tmp_path / "out", "nc") if r["source_index"] == 12}
    assert nc["model_correct"]["messages"][2]["content"] == prompts.NC_CORRECT
    assert right in nc["model_correct"]["messages"][1]["content"]
    assert nc["model_wrong"]["messages"][2]["content"] == prompts.nc_reply(False, tidy_sql(ex.gold_sql))
    assert wrong in nc["model_wrong"]["messages"][1]["content"]
    assert all(r["db_id"] != "concert_singer" for r in records(tmp_path / "out", "nc"))


# ---- determinism, and the command ----------------------------------------------------------------------------


def run_data(out: Path, *extra: str) -> None:
    from finetune.__main__ import main

    assert main(["data", "--out", str(out), "--limit", "60", "--quiet", *extra]) == 0


def test_same_seed_same_files(tmp_path, capsys):
    run_data(tmp_path / "a", "--seed", "3")
    run_data(tmp_path / "b", "--seed", "3")
    run_data(tmp_path / "c", "--seed", "4")
    for task in ("ts", "sl", "nc", "cw"):
        a = (tmp_path / "a" / f"{task}.jsonl").read_bytes()
        assert a and a == (tmp_path / "b" / f"{task}.jsonl").read_bytes()
    card_a, card_b = (json.loads((tmp_path / d / "card.json").read_text()) for d in "ab")
    card_a.pop("seconds"), card_b.pop("seconds")
    assert json.dumps(card_a, sort_keys=True).replace("/a/", "/b/") == json.dumps(card_b, sort_keys=True)
    # another seed samples other questions
    assert (tmp_path / "c" / "ts.jsonl").read_bytes() != (tmp_path / "a" / "ts.jsonl").read_bytes()
    # the card says what was dropped and why, and which databases are missing
    card_c = json.loads((tmp_path / "c" / "card.json").read_text())
    assert card_c["examples"]["considered"] == 60
    assert sum(card_c["dropped"].values()) + card_c["examples"]["pairs_kept"] == 60
    printed = json.loads(capsys.readouterr().out.split("\n}\n")[0] + "\n}")
    assert printed["counts"] == card_a["counts"]


def test_held_out_databases_are_left_out_of_every_item_and_written_as_a_tuning_set(tmp_path):
    from routesh.evaluate.datasets import load_file

    pool = [ex for ex in spider_train()[:400] if ex.question is not None]  # a few databases' questions
    out = tmp_path / "held"
    card = build_dataset(out, SynthOptions(seed=0, held_out_databases=2, memory_fraction=1.0), examples=pool,
                         progress=False)
    held = set(card["held_out"]["databases"])
    assert len(held) == 2 and card["held_out"]["questions"] == sum(ex.db_id in held for ex in pool)
    for task in ("ts", "sl", "nc", "cw"):
        assert not any(r["db_id"] in held for r in records(out, task))
    assert card["examples"]["considered"] == sum(ex.db_id not in held for ex in pool)
    asked = load_file(out / "held_out.json", db_dir=SPIDER / "database")  # what routesh-eval --data FILE reads
    assert {ex.db_id for ex in asked} == held and all(ex.db_path is not None and ex.gold_sql for ex in asked)
    again = build_dataset(tmp_path / "again", SynthOptions(seed=0, held_out_databases=2), examples=pool,
                          progress=False)
    assert again["held_out"]["databases"] == card["held_out"]["databases"]  # seeded
    with pytest.raises(ValueError, match="only .* databases have questions"):
        build_dataset(tmp_path / "all", SynthOptions(seed=0, held_out_databases=999), examples=pool, progress=False)


def test_kinds_keep_only_the_named_kinds_of_their_task(dataset):
    from finetune.train import load_examples, parse_kinds

    class Chars:  # a tokenizer stand-in: the chat template is not what this test is about
        eos_token = "."

        def apply_chat_template(self, messages, add_generation_prompt=False, tokenize=False):
            return "".join(f"<{m['role']}>{m['content']}" for m in messages) + ("<assistant>" * add_generation_prompt)

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [ord(c) % 256 for c in text]}

    kinds = parse_kinds("ts:reduced", ("ts", "sl"))
    examples, stats = load_examples(dataset, ("ts", "sl"), Chars(), 10**6, progress=False, kinds=kinds)
    reduced = sum(r["kind"] == "reduced" for r in records(dataset, "ts"))
    assert stats["per_task"] == {"ts": reduced, "sl": len(records(dataset, "sl"))}
    for bad in ("nc:gold", "ts", "ts:"):
        with pytest.raises(ValueError, match="--kinds"):
            parse_kinds(bad, ("ts", "sl"))
    with pytest.raises(ValueError, match="has no ts items of kind reduce"):
        load_examples(dataset, ("ts",), Chars(), 10**6, progress=False, kinds=parse_kinds("ts:reduce", ("ts",)))


def test_card_counts_missing_databases_and_train_others():
    synth = Synthesizer(SynthOptions())
    try:
        wanted = [ex for ex in spider_train() if ex.db_id in ("baseball_1", "soccer_1")][:3]
        wanted += [ex for ex in spider_train() if ex.question is None][:2]
        for ex in wanted:
            assert synth.build(ex) == {"ts": [], "sl": [], "nc": [], "cw": []}
    finally:
        synth.close()
    assert synth.dropped["missing_database"] == 3 and synth.dropped["no_question"] == 2
    assert sum(synth.missing_dbs.values()) == 3


def test_eval_forwards_to_routesh_eval_with_the_adapter(tmp_path, monkeypatch):
    import routesh.evaluate.cli as eval_cli
    from finetune.__main__ import main

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "training_card.json").write_text(json.dumps({"base_model": {"spec": "smollm2-135m"}}))
    seen = []
    monkeypatch.setattr(eval_cli, "main", lambda argv: seen.append(list(argv)) or 0)
    assert main(["eval", "--adapter", str(adapter), "--limit", "5", "--stages", "ts"]) == 0
    assert seen == [["--model", "smollm2-135m", "--adapter", str(adapter), "--limit", "5", "--stages", "ts"]]
    assert main(["eval", "--adapter", str(adapter), "--model", "x"]) == 0
    assert seen[-1] == ["--adapter", str(adapter), "--model", "x"]
    assert main(["eval", "--adapter", str(tmp_path)]) == 1  # not an adapter folder


# ---- training -------------------------------------------------------------------------------------------------


def shortest_examples(folder: Path, out: Path) -> Path:
    """One example per task, the shortest: a 5-step CPU run that finishes in about a minute."""
    out.mkdir(parents=True, exist_ok=True)
    for task in ("ts", "sl", "nc", "cw"):
        recs = sorted(records(folder, task), key=lambda r: sum(len(m["content"]) for m in r["messages"]))
        (out / f"{task}.jsonl").write_text(json.dumps(recs[0]) + "\n")
    (out / "card.json").write_text((folder / "card.json").read_text())
    return out


@pytest.mark.model
def test_five_steps_lower_the_loss_and_the_adapter_loads_in_routesh(dataset, tmp_path, model_cache):
    data = shortest_examples(dataset, tmp_path / "four")
    adapter = tmp_path / "adapter"
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    command = [sys.executable, "-m", "finetune", "train", "--data", str(data), "--model", "smollm2-135m",
               "--out", str(adapter), "--steps", "5", "--batch-size", "4", "--grad-accum", "1", "--lr", "1e-3",
               "--precision", "fp32", "--save-every", "4", "--quiet"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    card = json.loads((adapter / "training_card.json").read_text())
    losses = [point["loss"] for point in card["loss_curve"]]
    assert len(losses) == 5 and losses[-1] < losses[0] * 0.7, losses
    assert card["base_model"]["gguf_sha256"] and card["base_model"]["weights_sha256"]
    assert card["data"]["card_sha256"] and card["plan"]["mode"] == "lora"
    assert (adapter / "adapter_model.safetensors").is_file()
    assert (adapter / "checkpoints" / "step-4" / "finetune_state.json").is_file()

    # the shippable form: bf16 weights, the base named, no local paths; routesh loads it as it loads the trained one
    shipped = tmp_path / "shipped"
    done = subprocess.run([sys.executable, "-m", "finetune", "package", "--adapter", str(adapter), "--into", str(shipped)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in shipped.iterdir()) == ["adapter_config.json", "adapter_model.safetensors", "card.json"]
    shipped_card = json.loads((shipped / "card.json").read_text())
    assert shipped_card["base_model"] == "smollm2-135m" and shipped_card["loss_curve"] == card["loss_curve"]
    assert str(tmp_path) not in (shipped / "card.json").read_text()
    assert json.loads((shipped / "adapter_config.json").read_text())["base_model_name_or_path"] == "smollm2-135m"
    from safetensors import safe_open

    with safe_open(str(shipped / "adapter_model.safetensors"), "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.bfloat16"}

    from routesh.engine import load_engine

    engine = load_engine("smollm2-135m", adapter=shipped, backend="transformers", progress=False)
    try:
        assert engine.adapter == shipped
        rec = records(data, "ts")[0]
        request = ChatRequest.of(*[(m["role"], m["content"]) for m in rec["messages"][:-1]])
        out = engine.generate([request], GenerationParams(max_new_tokens=40))[0]
        assert out.output_tokens > 0 and out.text.strip()
    finally:
        engine.close()


def train_small(data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "finetune", "train", "--data", str(data), "--model", "smollm2-135m",
               "--out", str(out), "--batch-size", "1", "--grad-accum", "1", "--lr", "1e-3", "--precision", "fp32",
               "--save-every", "0", "--quiet", *extra]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


def adapter_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


@pytest.mark.model
def test_training_stopped_and_resumed_ends_where_one_uninterrupted_run_ends(dataset, tmp_path, model_cache):
    data = shortest_examples(dataset, tmp_path / "four")  # 4 examples, batch 1: 6 steps cross an epoch's end
    whole = train_small(data, tmp_path / "whole", "--steps", "6")
    assert whole.returncode == 0, whole.stderr[-3000:]

    sliced = tmp_path / "sliced"
    first = train_small(data, sliced, "--steps", "6", "--stop-after-steps", "3")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "stopped after step 3 of 6; continue with --resume" in first.stderr
    assert (sliced / "checkpoints" / "step-3" / "finetune_state.json").is_file()
    assert (sliced / "checkpoints" / "step-3" / "adapter" / "adapter_config.json").is_file()  # measurable mid-run
    assert not (sliced / "adapter_model.safetensors").exists()  # no adapter from a run that did not finish
    rest = train_small(data, sliced, "--steps", "6", "--resume")
    assert rest.returncode == 0, rest.stderr[-3000:]

    curve = [json.loads((folder / "training_card.json").read_text())["loss_curve"] for folder in (tmp_path / "whole", sliced)]
    assert [p["step"] for p in curve[1]] == list(range(1, 7))
    assert [p["loss"] for p in curve[1]] == [p["loss"] for p in curve[0]]  # the same batches, dropout and steps
    ours, theirs = adapter_weights(sliced), adapter_weights(tmp_path / "whole")
    assert ours.keys() == theirs.keys()
    import torch

    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-5, atol=1e-6)


@pytest.mark.model
def test_lora_on_the_upper_layers_adapts_only_those(dataset, tmp_path, model_cache):
    data = shortest_examples(dataset, tmp_path / "four")
    done = train_small(data, tmp_path / "upper", "--steps", "2", "--lora-layers", "3")
    assert done.returncode == 0, done.stderr[-3000:]
    layers = {int(name.split(".layers.")[1].split(".")[0]) for name in adapter_weights(tmp_path / "upper")}
    assert layers == {27, 28, 29}  # smollm2-135m has 30 layers
    refused = train_small(data, tmp_path / "none", "--steps", "1", "--lora-layers", "31")
    assert refused.returncode != 0 and "--lora-layers must be between 1 and the model's 30 layers" in refused.stderr


@pytest.mark.model
def test_generated_negatives_come_from_the_model(tmp_path, model_cache):
    small = [spider_train()[i] for i in (0, 23)]
    card = build_dataset(tmp_path / "gen", SynthOptions(seed=0, corruptions_per_question=0), examples=small,
                         generator_spec="smollm2-135m", negatives_limit=2, progress=False)
    assert card["notes"]["generations"] == 4  # TS on the full and on the reduced schema, per question
    for rec in records(tmp_path / "gen", "nc"):
        assert rec["kind"] in ("gold", "model_correct", "model_wrong")


def test_the_cosine_schedule_is_transformers_own():
    import torch
    from transformers import get_cosine_schedule_with_warmup

    from finetune.train import CosineSchedule

    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    theirs = get_cosine_schedule_with_warmup(optimizer, 7, 100).lr_lambdas[0]
    ours = CosineSchedule(total=100, warmup=7)
    assert [round(ours(s), 12) for s in range(101)] == [round(theirs(s), 12) for s in range(101)]


def test_a_time_budget_replans_the_steps_from_the_measured_pace_and_stops_when_spent():
    from finetune.train import CosineSchedule, TimeBudget

    schedule = CosineSchedule(total=1000, warmup=30)
    budget = TimeBudget(1000.0, warmup_ratio=0.03)
    replans = [budget.replan(schedule, step, 0.0, step * 2.0) for step in range(1, 51)]  # 2 s a step
    # planned at step 10 (10 + 980 / 2); at the 10% mark (step 50) the pace is the same: no change
    assert replans[9] == {"at_step": 10, "elapsed_s": 20.0, "total_steps": 500}
    assert [r for i, r in enumerate(replans) if i != 9] == [None] * 49
    assert (schedule.total, schedule.warmup) == (500, 15)
    # slower than measured: the budget is spent before the plan, and the run stops there
    assert budget.replan(schedule, 300, 0.0, 1000.0)["total_steps"] == 300 and schedule.total == 300
    # never more steps than asked for, however fast
    fast = CosineSchedule(total=20, warmup=1)
    quick = TimeBudget(1000.0, warmup_ratio=0.03)
    assert all(quick.replan(fast, step, 0.0, step * 0.01) is None for step in range(1, 20)) and fast.total == 20


def test_a_step_with_a_non_finite_gradient_is_skipped_and_the_weights_stay_as_they_were():
    import torch
    from accelerate import Accelerator

    from finetune.train import step_if_finite

    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.ones(1, 3)).sum().backward()
    model.weight.grad[0, 0] = float("nan")
    assert step_if_finite(accelerator, model, optimizer, 1.0) is False
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    optimizer.zero_grad()
    model(torch.ones(1, 3)).sum().backward()
    assert step_if_finite(accelerator, model, optimizer, 0.0) is True
    assert not torch.equal(before[0], model.weight) and torch.isfinite(model.weight).all()


def test_remembered_queries_in_training_are_what_the_pipeline_shows(tmp_path):
    from routesh.evaluate.loo import leave_one_out

    pool = [ex for ex in spider_train()[:40] if ex.db_id == spider_train()[0].db_id]  # one database's questions
    out = tmp_path / "memory"
    build_dataset(out, SynthOptions(seed=0, memory_fraction=1.0), examples=pool, progress=False)
    with_memory = [r for r in records(out, "ts") if r["kind"] == "reduced_memory"]
    assert len(with_memory) >= len(pool) - 2  # nearly every question has a neighbour sharing a word
    rec = with_memory[0]
    ex = spider_train()[rec["source_index"]]
    db, schema = open_db(ex.db_id)
    gold = tidy_sql(ex.gold_sql)
    usage = tables_and_columns(gold, "sqlite", schema)
    engine = Recorder(sl=prompts.sl_reply(usage.as_linking()), ts=prompts.sql_reply(gold), nc=prompts.NC_CORRECT,
                      cw=prompts.sql_reply(gold))
    Pipeline(engine, db, schema, options=TRAINED_STAGES, examples=leave_one_out(pool, "bm25")(ex)).ask(ex.question)
    generation = [request.as_dicts() for task, request in engine.calls if task == "ts"][1]
    assert prompt_of(rec) == generation and "Questions answered before on this database" in generation[1]["content"]


def test_noisy_items_are_what_the_pipeline_asks_when_linking_names_tables_the_gold_does_not_use(tmp_path):
    import random

    from finetune.synth import distractors, usage_keep
    from routesh.pipeline.linking import reduced_keep

    out = tmp_path / "noisy"
    build_dataset(out, SynthOptions(seed=0, noisy_fraction=1.0), examples=[spider_train()[i] for i in INDICES],
                  progress=False)
    noisy = [r for r in records(out, "ts") if r["kind"] == "reduced_noisy"]
    assert len(noisy) >= len(INDICES) - 2  # all but questions using every table of their database
    for rec in noisy[:4]:
        ex = spider_train()[rec["source_index"]]
        db, schema = open_db(ex.db_id)
        gold = tidy_sql(ex.gold_sql)
        usage = tables_and_columns(gold, "sqlite", schema)
        linked, keep = usage.as_linking(), reduced_keep(schema, usage_keep(schema, usage))
        extra = distractors(schema, keep, random.Random(f"0:{ex.index}:distractors"))  # the synthesizer's seed
        assert extra and not {t.lower() for t in extra} & {t.lower() for t in keep}
        # a model that links the gold's tables and columns and those extra ones, and writes the gold
        engine = Recorder(sl=prompts.sl_reply({**linked, **{t: sorted(c) for t, c in extra.items()}}),
                          ts=prompts.sql_reply(gold), nc=prompts.NC_CORRECT, cw=prompts.sql_reply(gold))
        Pipeline(engine, db, schema, options=TRAINED_STAGES).ask(ex.question)
        generation = [request.as_dicts() for task, request in engine.calls if task == "ts"][1]
        assert prompt_of(rec) == generation
        assert rec["messages"][2]["content"] == prompts.sql_reply(gold)  # the gold, whatever else is shown
        shown = "\n".join(m["content"] for m in generation)
        assert all(f"CREATE TABLE {t} (" in shown for t in extra)


def test_distractors_are_other_tables_mostly_foreign_key_neighbours():
    import random

    from finetune.synth import distractors
    from routesh.pipeline.linking import foreign_key_graph

    db, schema = open_db("college_2")  # 11 tables
    graph = foreign_key_graph(schema)
    keep = {"instructor": {"name"}}
    near = far = 0
    for seed in range(200):
        extra = distractors(schema, keep, random.Random(seed))
        assert 1 <= len(extra) <= 3 and "instructor" not in extra
        for table, columns in extra.items():
            assert columns <= {c.name for c in schema.table(table).columns}
            near += table in graph["instructor"]
            far += table not in graph["instructor"]
    assert near > 2 * far  # three in four, as the pipeline's own extras are
    only = {t.display_name: set() for t in schema.tables}
    assert distractors(schema, only, random.Random(0)) == {}  # nothing left to add


def test_follow_up_items_in_training_are_what_the_pipeline_asks_after_a_conversation(tmp_path):
    from finetune.followups import earlier_turns
    from routesh.prompts import Turn

    pool = [ex for ex in spider_train()[:40] if ex.db_id == spider_train()[0].db_id]  # one database's questions
    out = tmp_path / "follow-ups"
    build_dataset(out, SynthOptions(seed=0, follow_up_fraction=1.0), examples=pool, progress=False)
    followed = [r for r in records(out, "ts") if r["kind"] == "reduced_follow_up"]
    assert followed and len(followed) <= len(pool)
    rec = followed[0]
    ex = spider_train()[rec["source_index"]]
    before = earlier_turns(pool)(ex)
    assert before is not None and before.index != ex.index
    db, schema = open_db(ex.db_id)
    gold, earlier_sql = tidy_sql(ex.gold_sql), tidy_sql(before.gold_sql)
    columns = tuple(db.execute(earlier_sql).columns)
    usage = tables_and_columns(gold, "sqlite", schema)
    engine = Recorder(sl=prompts.sl_reply(usage.as_linking()), ts=prompts.sql_reply(gold), nc=prompts.NC_CORRECT,
                      cw=prompts.sql_reply(gold))
    Pipeline(engine, db, schema, options=TRAINED_STAGES).ask(ex.question, context=[Turn(before.question, earlier_sql, columns)])
    generation = [request.as_dicts() for task, request in engine.calls if task == "ts"][1]
    assert prompt_of(rec) == generation and "Follow-up question: " in generation[1]["content"]
    assert f"SQL: {' '.join(earlier_sql.split())}" in generation[1]["content"]
