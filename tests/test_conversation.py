"""Follow-up questions: the conversation's turns, when a line continues it, the prompts that carry it and the
pipeline stages that use it. A scripted engine stands in for the model where the test is about control flow;
the shell's own conversation runs with the real small model in test_shell_e2e.py."""

from __future__ import annotations

import json

import pytest

from routesh import prompts
from routesh.conversation import Conversation, is_follow_up, read_turns
from routesh.db.sqlite import SqliteDatabase
from routesh.errors import UsageError
from routesh.evaluate.datasets import CONTEXTS, load_file
from routesh.evaluate.runner import evaluate, load_receipts, sample
from routesh.pipeline.options import PipelineOptions
from routesh.pipeline.pipeline import Pipeline
from routesh.pipeline.stages import Stage, StageConfig
from routesh.prompts import Turn
from tests.helpers import routesh
from tests.test_eval_runner import _routesh_eval
from tests.test_pipeline import DB, ScriptedEngine

EARLIER = Turn("Which singers are older than 30?", "SELECT Name, Country FROM singer WHERE Age > 30",
               ("Name", "Country"))
FOLLOW_UP = "only those from France"
ANSWER = "SELECT Name, Country FROM singer WHERE Age > 30 AND Country = 'France'"


@pytest.mark.parametrize("line", [
    "only those from France", "and how much did they spend?", "sort them by date", "What about in 2014?",
    "How many are there?", "in Lyon", "Which of them are from France?", "Show the same for concerts.",
    "What are their names?", "Count how many there are for each continent name and id!", "Which did not?",
])
def test_lines_that_lean_on_the_one_before_are_follow_ups(line):
    assert is_follow_up(line)


@pytest.mark.parametrize("line", [
    "How many singers do we have?", "What is the average age of singers from France?",
    "Show names of actors and names of musicals they are in.", "List the name of every stadium with a concert in 2014.",
])
def test_questions_of_their_own_are_not(line):
    assert not is_follow_up(line)


def test_a_conversation_keeps_its_turns_until_a_question_of_its_own_starts_a_new_topic():
    conversation = Conversation()
    assert conversation.ask_with(FOLLOW_UP) == ()  # nothing to follow yet
    conversation.add(EARLIER.question, EARLIER.sql + "\n", EARLIER.columns)
    assert conversation.ask_with(FOLLOW_UP) == (EARLIER,)
    conversation.add(FOLLOW_UP, ANSWER, ("Name", "Country"))
    assert len(conversation) == 2 and conversation.ask_with("sort them by name")[-1].question == FOLLOW_UP
    assert conversation.ask_with("How many concerts were there in 2014?") == () and len(conversation) == 0


def test_every_prompt_carries_the_conversation_and_is_unchanged_without_one():
    schema_text, dialect, question = "CREATE TABLE singer (Name TEXT);", "sqlite", FOLLOW_UP
    plain = [prompts.ts_prompt(schema_text, dialect, question), prompts.sl_prompt(schema_text, dialect, question),
             prompts.nc_prompt(schema_text, dialect, question, ANSWER, "1 row"),
             prompts.cw_prompt(schema_text, dialect, question, "SELECT Name")]
    followed = [prompts.ts_prompt(schema_text, dialect, question, context=[EARLIER]),
                prompts.sl_prompt(schema_text, dialect, question, context=[EARLIER]),
                prompts.nc_prompt(schema_text, dialect, question, ANSWER, "1 row", context=[EARLIER]),
                prompts.cw_prompt(schema_text, dialect, question, "SELECT Name", context=[EARLIER])]
    shown = ("The conversation so far, each question with the SQL that answered it:\n\n"
             f"Question: {EARLIER.question}\nSQL: {EARLIER.sql}\nColumns: Name, Country\n\n"
             f"Follow-up question: {FOLLOW_UP}")
    for alone, after in zip(plain, followed):
        assert alone.messages[-1].content.startswith(f"Question: {FOLLOW_UP}")
        assert after.messages[-1].content == alone.messages[-1].content.replace(f"Question: {FOLLOW_UP}", shown)
    # with remembered queries too: the examples come first, then the conversation, then the question
    both = prompts.ts_prompt(schema_text, dialect, question, examples=[prompts.Example("How many?", "SELECT 1")],
                             context=[EARLIER]).messages[-1].content
    assert both.index("answered before") < both.index("conversation so far") < both.index("Follow-up question")


def test_the_pipeline_asks_every_stage_after_the_conversation_and_keeps_its_tables_in_the_reduced_schema():
    db = SqliteDatabase.open(DB)
    try:
        schema = db.introspect(samples=5)
        # the linking and the pseudo-SQL name only concert: singer can only come from the earlier SQL
        script = dict(sl='{"concert": ["Year"]}',
                      ts=["```sql\nSELECT Year FROM concert\n```", f"```sql\n{ANSWER}\n```"],
                      nc="correct", cw=f"```sql\n{ANSWER}\n```")
        engine = ScriptedEngine(**script)
        options = PipelineOptions(stages=StageConfig.parse("sl,nc,cw"), context_turns=2)
        turns = [Turn("How many singers are there?", "SELECT count(*) FROM singer"), EARLIER]
        answer = Pipeline(engine, db, schema, options=options).ask(FOLLOW_UP, context=[Turn("x", "SELECT 1"), *turns])
        alone = ScriptedEngine(**script)
        Pipeline(alone, db, schema, options=options).ask(FOLLOW_UP)
    finally:
        db.close()
    context = answer.events[0]
    assert context.stage == Stage.CONTEXT and context.summary == (
        f"a follow-up to 2 earlier questions: How many singers are there?; {EARLIER.question}")  # the last two
    assert answer.sql.strip() == ANSWER
    asked = {task for task, _, _ in engine.calls}
    assert asked >= {"sl", "ts", "nc"}
    for task, request, _ in engine.calls:
        assert f"SQL: {EARLIER.sql}" in request.messages[-1].content, task
        assert "Question: x\n" not in request.messages[-1].content  # older than context_turns
    def reduced(calls) -> str:  # noqa: ANN001 - the schema the generation was asked on
        return [r for task, r, _ in calls if task == "ts"][1].messages[0].content
    assert "CREATE TABLE singer" in reduced(engine.calls)  # kept: the earlier SQL used it
    assert "CREATE TABLE singer" not in reduced(alone.calls) and "CREATE TABLE concert" in reduced(alone.calls)
    assert not any("conversation so far" in r.messages[-1].content for _, r, _ in alone.calls)


def test_read_turns_takes_json_lines_and_says_in_one_line_what_is_wrong(tmp_path):
    good = tmp_path / "turns.jsonl"
    good.write_text('{"question": "Which singers are older than 30?", "sql": "SELECT Name, Country FROM singer '
                    'WHERE Age > 30", "columns": ["Name", "Country"]}\n\n'
                    '{"question": "only French", "sql": "SELECT 1"}\n')
    assert read_turns(good) == (EARLIER, Turn("only French", "SELECT 1"))
    for text, message in [("{nope", "line 1: not JSON"), ('{"question": "q"}', 'line 1: each line needs "question"'),
                          ('{"question": "q", "sql": "SELECT 1", "columns": "a"}', "may have \"columns\"")]:
        good.write_text(text)
        with pytest.raises(UsageError, match=message):
            read_turns(good)
    with pytest.raises(UsageError, match="cannot read the context file"):
        read_turns(tmp_path / "missing.jsonl")


def test_the_command_line_refuses_a_bad_context_before_connecting_or_loading_a_model(tmp_path):
    bad = tmp_path / "turns.jsonl"
    bad.write_text("not json\n")
    run = routesh(str(tmp_path / "nowhere.sqlite"), "-e", "only those from France", "--context", str(bad))
    assert run.code == 1 and run.err.strip() == f"routesh: {bad} line 1: not JSON (Expecting value)", run.err
    run = routesh(str(DB), "--sql", "SELECT 1", "--context", str(bad))
    assert run.code == 1 and run.err.strip() == "routesh: --context only applies with -e"


# ---- routesh-eval on multi-turn data ---------------------------------------------------------------------

def _interactions_file(tmp_path):
    """Two interactions over concert_singer, SParC's record shape; the second turn leans on the first."""
    first = "How many singers are there?"
    records = [
        {"interaction_id": 7, "turn": 0, "db_id": "concert_singer", "question": first,
         "query": "SELECT count(*) FROM singer", "previous_questions": [], "previous_queries": []},
        {"interaction_id": 7, "turn": 1, "db_id": "concert_singer", "question": "and how many of them are French?",
         "query": "SELECT count(*) FROM singer WHERE Country = 'France'", "previous_questions": [first],
         "previous_queries": ["SELECT count(*) FROM singer"]},
        {"interaction_id": 9, "turn": 0, "db_id": "concert_singer", "question": "List the stadium names.",
         "query": "SELECT Name FROM stadium", "previous_questions": [], "previous_queries": []},
    ]
    path = tmp_path / "turns.json"
    path.write_text(json.dumps(records))
    return path


def test_routesh_eval_asks_each_follow_up_after_the_earlier_turns_and_scores_interactions(tmp_path):
    examples = load_file(_interactions_file(tmp_path), db_dir=DB.parent.parent)
    assert [(ex.interaction, ex.turn, len(ex.earlier)) for ex in examples] == [(7, 0, 0), (7, 1, 1), (9, 0, 0)]
    assert [ex.index for ex in sample(examples, limit=1, seed=None)] == [0, 1]  # an interaction, all its turns
    asked: dict[str, list[str]] = {}
    for context in CONTEXTS:
        engine = ScriptedEngine(ts=["```sql\nSELECT count(*) AS n FROM singer\n```",
                                    "```sql\nSELECT count(*) FROM singer WHERE Country = 'France'\n```",
                                    "```sql\nSELECT Name FROM stadium\n```"])
        out = tmp_path / f"{context}.jsonl"
        summary = evaluate(examples, engine, options=PipelineOptions(stages=StageConfig.parse("ts")), out=out,
                           context=context)
        asked[context] = [r.messages[-1].content for _, r, _ in engine.calls]
        receipts = load_receipts(out)
        assert [(r.interaction, r.turn, r.context) for r in receipts.values()] == [(7, 0, context), (7, 1, context),
                                                                                  (9, 0, context)]
        assert summary.by_turn == {0: (2, 2), 1: (1, 1)} and summary.interactions == (2, 2)
        assert "interactions with every turn right: 100.0% (2/2)" in "\n".join(summary.lines())
    own, gold, alone = (asked[c][1] for c in ("own", "gold", "none"))
    assert "SQL: SELECT count(*) AS n FROM singer\nColumns: n" in own  # the pipeline's own SQL and its columns
    assert "SQL: SELECT count(*) FROM singer\nColumns: count(*)" in gold  # the data set's
    assert "conversation so far" not in alone and not any("conversation so far" in a for a in asked["own"][::2])
    assert asked["cues"] == asked["own"]  # "and how many of them ...?" leans on the turn before, as the shell sees it


@pytest.mark.model
def test_routesh_eval_runs_sparc_interactions_with_the_real_test_model(tmp_path, model_cache):
    out = tmp_path / "sparc.jsonl"
    run = _routesh_eval("--data", "sparc-dev", "--model", "smollm2-135m", "--limit", "1", "--sample-seed", "3",
                        "--stages", "ts", "--out", str(out), env={"ROUTESH_CACHE_DIR": str(model_cache)})
    assert run.returncode == 0, run.stderr[-2000:]
    assert "1 interactions, follow-ups asked after the pipeline's own earlier SQL" in run.stderr
    receipts = sorted(load_receipts(out).values(), key=lambda r: r.turn)
    assert len(receipts) >= 2 and [r.turn for r in receipts] == list(range(len(receipts)))
    assert len({r.interaction for r in receipts}) == 1 and all(r.context == "own" for r in receipts)
    for earlier, later in zip(receipts, receipts[1:]):  # a turn with SQL is the next one's context
        context = [e for e in later.events if e["stage"] == "context"]
        if earlier.predicted_sql:
            assert context and earlier.question in context[0]["summary"]
    assert "interactions with every turn right:" in run.stdout and "turn 2:" in run.stdout


@pytest.mark.model
def test_e_asks_after_the_context_file_with_the_real_test_model(tmp_path, model_cache):
    turns = tmp_path / "turns.jsonl"
    turns.write_text(json.dumps({"question": EARLIER.question, "sql": EARLIER.sql, "columns": list(EARLIER.columns)})
                     + "\n")
    run = routesh(str(DB), "-e", FOLLOW_UP, "--context", str(turns), "--model", "smollm2-135m",
                  env={"ROUTESH_CACHE_DIR": str(model_cache)}, timeout=300)
    assert run.code in (0, 4), run.err  # SQL on stdout, or the small model abstained (exit 4)
    assert "routesh: asked as a follow-up to 1 earlier question (--context; the pipeline uses the last 3)" in run.err
    assert "Traceback" not in run.err
