"""Follow-up questions: the conversation's turns, when a line continues it, the prompts that carry it and the
pipeline stages that use it. A scripted engine stands in for the model where the test is about control flow;
the shell's own conversation runs with the real small model in test_shell_e2e.py."""

from __future__ import annotations

import pytest

from routesh import prompts
from routesh.conversation import Conversation, is_follow_up, read_turns
from routesh.db.sqlite import SqliteDatabase
from routesh.errors import UsageError
from routesh.pipeline.options import PipelineOptions
from routesh.pipeline.pipeline import Pipeline
from routesh.pipeline.stages import Stage, StageConfig
from routesh.prompts import Turn
from tests.helpers import routesh
from tests.test_pipeline import DB, ScriptedEngine

EARLIER = Turn("Which singers are older than 30?", "SELECT Name, Country FROM singer WHERE Age > 30", ("Name", "Country"))
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
        script = dict(sl='{"concert": ["Year"]}', ts=["```sql\nSELECT Year FROM concert\n```", f"```sql\n{ANSWER}\n```"],
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
                    'WHERE Age > 30", "columns": ["Name", "Country"]}\n\n{"question": "only French", "sql": "SELECT 1"}\n')
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
