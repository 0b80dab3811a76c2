"""The MCP pipeline's control flow, with a scripted engine (replies chosen per task) on a real Spider
database. The end-to-end run with a real model is in test_pipeline_model.py."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from routesh import prompts
from routesh.db.sqlite import SqliteDatabase
from routesh.engine.base import ChatRequest, Completion, GenerationParams
from routesh.pipeline.options import PipelineOptions
from routesh.pipeline.pipeline import Pipeline
from routesh.pipeline.stages import Stage, StageConfig, StageEvent, Starting
from tests.helpers import SHARED_DATA, sha256

DB = SHARED_DATA / "spider" / "database" / "concert_singer" / "concert_singer.sqlite"
QUESTION = "Show the names of singers who performed in concerts in 2014."


def task_of(request: ChatRequest) -> str:
    user = request.messages[-1].content
    if "Which tables and columns" in user:
        return "sl"
    if "Is the candidate SQL correct" in user:
        return "nc"
    if "Here is the beginning" in user:
        return "cw"
    return "ts"


class ScriptedEngine:
    """Replies from a script: task → list of replies, used in order (the last one repeats)."""

    name, backend = "scripted", "test"

    def __init__(self, **script: str | list[str]):
        self.script = {task: ([r] if isinstance(r, str) else list(r)) for task, r in script.items()}
        self.calls: list[tuple[str, ChatRequest, GenerationParams]] = []

    def generate(self, requests: Sequence[ChatRequest], params: GenerationParams | None = None, *,
                 cancel=None) -> list[Completion]:
        out = []
        for request in requests:
            task = task_of(request)
            self.calls.append((task, request, params))
            replies = self.script.get(task, ["I don't know."])
            text = replies.pop(0) if len(replies) > 1 else replies[0]
            out.append(Completion(text, prompt_tokens=100, output_tokens=10, finish_reason="stop", seconds=0.01))
        return out

    def cancel(self) -> None: ...

    def close(self) -> None: ...


@pytest.fixture(scope="module")
def db():
    database = SqliteDatabase.open(DB)
    yield database
    database.close()


@pytest.fixture(scope="module")
def schema(db):
    return db.introspect(samples=5)


GOOD = ("SELECT T2.Name FROM singer_in_concert AS T1 JOIN singer AS T2 ON T1.Singer_ID = T2.Singer_ID "
        "JOIN concert AS T3 ON T1.concert_ID = T3.concert_ID WHERE T3.Year = 2014")
SIMPLE = "SELECT Name FROM singer WHERE Age > 30"


def run(db, schema, engine, stages="sl,nc,cw", context=()):
    seen = []
    pipeline = Pipeline(engine, db, schema, options=PipelineOptions(stages=StageConfig.parse(stages)))
    answer = pipeline.ask(QUESTION, on_event=seen.append, context=context)
    assert answer.events == [e for e in seen if isinstance(e, StageEvent)]
    # every model call is announced first, by a Starting notice the answer's record leaves out
    starts = [e.stage for e in seen if isinstance(e, Starting)]
    assert len(starts) == len(engine.calls) - (1 if Stage.SL in starts else 0)  # linking asks two in one call
    return answer


def test_full_pipeline_happy_path(db, schema):
    engine = ScriptedEngine(
        sl='{"singer": ["Name"], "concert": ["Year"]}',
        ts=[f"```sql\n{GOOD}\n```", f"Here you go:\n```sql\n{GOOD}\n```"],
        nc="correct",
        cw=f"```sql\n{GOOD}\n```",
    )
    answer = run(db, schema, engine)
    assert answer.sql == GOOD and not answer.abstained
    # each proposal's trial run comes just before the event that gives its verdict
    assert [e.stage for e in answer.events] == ["sl", "pseudo", "merge", "ts", "execute", "nc", "execute", "cw", "final"]
    merge = next(e for e in answer.events if e.stage == "merge")
    assert set(merge.artifact) == {"singer", "concert", "singer_in_concert"}
    # the first call is one batch of SL and the pseudo-SQL, on the full schema
    first_two = engine.calls[:2]
    assert [t for t, _, _ in first_two] == ["sl", "ts"]
    full = prompts.render_schema(schema, question=QUESTION, samples=2, budget=3000)
    assert first_two[0][1].messages[0].content == prompts.system_message(full, "sqlite")
    # generation runs on the reduced schema, drafting from the pseudo-SQL
    _, generation, params = engine.calls[2]
    assert "CREATE TABLE stadium" not in generation.messages[0].content
    assert params.draft_text == GOOD and params.prompt_lookup
    # the query is hard (3 tables), so continuation writing ran from a real prefix of it
    _, cw_request, _ = engine.calls[-1]
    prefix = cw_request.messages[-1].content.split("```sql\n", 1)[1].split("\n```", 1)[0]
    assert GOOD.startswith(prefix) and 0 < len(prefix) < len(GOOD)
    assert answer.result is not None and answer.result.rows


def test_merge_bridges_the_tables_that_join_the_linked_ones(db, schema):
    engine = ScriptedEngine(sl='{"singer": ["Name"], "concert": ["Year"]}', ts=f"```sql\n{SIMPLE}\n```")
    answer = run(db, schema, engine, stages="sl")
    merge = next(e for e in answer.events if e.stage == "merge")
    assert set(merge.artifact) == {"singer", "concert", "singer_in_concert"}
    assert "+singer_in_concert to join them" in merge.summary
    generation = [r for t, r, _ in engine.calls if t == "ts"][-1].messages[0].content
    assert "CREATE TABLE singer_in_concert" in generation and "CREATE TABLE stadium" not in generation


def test_star_keeps_every_column_of_its_table(db, schema):
    engine = ScriptedEngine(sl='{"stadium": ["Name"]}', ts="```sql\nSELECT * FROM singer\n```")
    answer = run(db, schema, engine, stages="sl")
    merge = next(e for e in answer.events if e.stage == "merge")
    assert set(merge.artifact["singer"]) == {c.name for c in schema.table("singer").columns}


def test_linking_reply_shaped_like_the_template_is_understood(db, schema):
    engine = ScriptedEngine(sl='{"table": ["singer", "nonexistent"], "column": ["Name", "Age", "bogus"]}',
                            ts=f"```sql\n{SIMPLE}\n```")
    answer = run(db, schema, engine, stages="sl")
    sl = next(e for e in answer.events if e.stage == "sl")
    assert sl.accepted and sl.artifact == {"singer": ["Age", "Name"]}


def test_correction_accepted_only_when_it_executes(db, schema):
    bad = "SELECT Nam FROM singer"
    fixed = "SELECT Name FROM singer"
    engine = ScriptedEngine(sl='{"singer": ["Name"]}', ts=f"```sql\n{bad}\n```",
                            nc=f"wrong, the correct SQL is:\n```sql\n{fixed}\n```")
    answer = run(db, schema, engine, stages="sl,nc")
    assert answer.sql == fixed
    nc = next(e for e in answer.events if e.stage == "nc")
    assert nc.accepted and "executes" in nc.reason
    # the model saw the database's error
    nc_request = next(r for t, r, _ in engine.calls if t == "nc")
    assert "no such column: Nam" in nc_request.messages[-1].content

    engine = ScriptedEngine(sl='{"singer": ["Name"]}', ts=f"```sql\n{SIMPLE}\n```",
                            nc="wrong, the correct SQL is:\n```sql\nSELECT Nme FROM singer\n```")
    answer = run(db, schema, engine, stages="sl,nc")
    assert answer.sql == SIMPLE
    nc = next(e for e in answer.events if e.stage == "nc")
    assert nc.accepted is False and "fails" in nc.reason


def test_failing_sql_goes_to_continuation_writing(db, schema):
    broken = "SELECT Name FROM singer WHERE Agee > 30"
    engine = ScriptedEngine(sl='{"singer": ["Name", "Age"]}', ts=f"```sql\n{broken}\n```", nc="correct",
                            cw=f"```sql\n{SIMPLE}\n```")
    answer = run(db, schema, engine)
    assert answer.sql == SIMPLE
    cw = next(e for e in answer.events if e.stage == "cw")
    assert cw.accepted and "the SQL fails" in cw.reason


def test_a_follow_up_s_hard_sql_that_runs_is_not_rewritten_but_its_failing_sql_is(db, schema):
    earlier = (prompts.Turn("Which singers are there?", "SELECT Name FROM singer", ("Name",)),)
    replaced = f"```sql\n{SIMPLE}\n```"
    engine = ScriptedEngine(sl='{"singer": ["Name"], "concert": ["Year"]}', ts=f"```sql\n{GOOD}\n```", nc="correct",
                            cw=replaced)
    answer = run(db, schema, engine, context=earlier)  # GOOD joins three tables: hard, and it runs
    assert answer.sql == GOOD and "cw" not in [t for t, _, _ in engine.calls]
    assert run(db, schema, ScriptedEngine(sl='{"singer": ["Name"], "concert": ["Year"]}', ts=f"```sql\n{GOOD}\n```",
                                          nc="correct", cw=replaced)).sql == SIMPLE  # alone, CW takes it

    broken = "SELECT Name FROM singer WHERE Agee > 30"
    engine = ScriptedEngine(sl='{"singer": ["Name", "Age"]}', ts=f"```sql\n{broken}\n```", nc="correct", cw=replaced)
    answer = run(db, schema, engine, context=earlier)
    assert answer.sql == SIMPLE and next(e for e in answer.events if e.stage == "cw").accepted


def test_a_follow_up_answered_with_an_earlier_turn_s_sql_is_asked_again_alone(db, schema):
    earlier = (prompts.Turn("Which singers are there?", "SELECT Name FROM singer", ("Name",)),)
    engine = ScriptedEngine(ts=["```sql\nselect name from singer;\n```", f"```sql\n{SIMPLE}\n```"])
    answer = run(db, schema, engine, stages="ts", context=earlier)
    assert answer.sql == SIMPLE
    first, second = (request.messages[-1].content for _, request, _ in engine.calls)
    assert "Which singers are there?" in first and "Which singers are there?" not in second
    retried = [e for e in answer.events if e.stage == "context" and e.accepted is False]
    assert len(retried) == 1 and "repeats the answer to “Which singers are there?”" in retried[0].summary
    assert [e.stage for e in answer.events].count("final") == 1

    # asked alone it writes nothing: the copy stays, rather than no answer
    engine = ScriptedEngine(ts=["```sql\nSELECT Name FROM singer\n```", "I don't know."])
    assert run(db, schema, engine, stages="ts", context=earlier).sql == "SELECT Name FROM singer"

    # a new query is kept as it is: one call
    engine = ScriptedEngine(ts=f"```sql\n{SIMPLE}\n```")
    assert run(db, schema, engine, stages="ts", context=earlier).sql == SIMPLE and len(engine.calls) == 1


def test_abstains_when_nothing_executes(db, schema):
    engine = ScriptedEngine(sl='{"singer": ["Name"]}', ts="```sql\nSELECT x FROM nowhere\n```", nc="correct",
                            cw="```sql\nSELECT y FROM nowhere\n```")
    answer = run(db, schema, engine)
    assert answer.abstained and "no candidate SQL executed" in answer.reason
    assert answer.events[-1].stage == "final" and answer.events[-1].accepted is False


def test_abstains_when_the_model_declines(db, schema):
    engine = ScriptedEngine(sl="{}", ts="This question cannot be answered from the database: there is no salary data.")
    answer = run(db, schema, engine)
    assert answer.abstained and "cannot answer" in answer.reason


def test_writes_from_the_model_never_run(db, schema):
    before = sha256(DB)
    engine = ScriptedEngine(sl='{"singer": ["Name"]}', ts="```sql\nDELETE FROM singer\n```", nc="correct",
                            cw="```sql\nDROP TABLE singer\n```")
    answer = run(db, schema, engine)
    assert answer.abstained and answer.sql is None
    # extraction keeps only queries, so a write is never even tried; anything tried was refused
    assert all("refused" in e.summary for e in answer.events if e.stage == "execute")
    assert sha256(DB) == before


def test_plain_prompting_is_one_call(db, schema):
    engine = ScriptedEngine(ts=f"```sql\n{SIMPLE}\n```")
    answer = run(db, schema, engine, stages="ts")
    assert answer.sql == SIMPLE
    assert [t for t, _, _ in engine.calls] == ["ts"]
    assert [e.stage for e in answer.events] == ["ts", "execute", "final"]


def test_stage_config_parsing():
    assert StageConfig.parse("ts") == StageConfig(False, False, False)
    assert StageConfig.parse("sl,nc,cw") == StageConfig()
    assert StageConfig.parse("sl").label() == "ts,sl"
    with pytest.raises(ValueError, match="unknown stage"):
        StageConfig.parse("ts,xx")


def test_a_failing_candidate_falls_back_to_the_pseudo_sql_that_runs(db, schema):
    broken = "SELECT T2.Name FROM singer_in_concert AS T1 JOIN singer AS T2 ON T1.Singer_ID = T2.Singer_ID WHERE T1.Year = 2014"
    engine = ScriptedEngine(sl='{"singer": ["Name"]}', ts=[f"```sql\n{GOOD}\n```", f"```sql\n{broken}\n```"],
                            nc="correct")
    answer = run(db, schema, engine)
    fallback = [e for e in answer.events if e.stage == "fallback"]
    assert len(fallback) == 1 and fallback[0].accepted and "no such column" in fallback[0].reason
    assert answer.sql == GOOD


def test_noise_correction_is_told_where_the_unknown_column_lives(db, schema):
    broken = "SELECT Name FROM singer_in_concert WHERE Year = 2014"
    engine = ScriptedEngine(sl='{"singer": ["Name"]}', ts=f"```sql\n{broken}\n```", nc="correct",
                            cw=f"```sql\n{GOOD}\n```")
    run(db, schema, engine)
    nc_prompt = next(request for task, request, _ in engine.calls if task == "nc").messages[-1].content
    assert "no such column: Name Name is a column of " in nc_prompt


def test_an_empty_candidate_gives_way_to_a_pseudo_sql_that_returns_rows(db, schema):
    empty = "SELECT Name FROM singer WHERE Age > 1000"
    engine = ScriptedEngine(sl='{"singer": ["Name", "Age"]}', ts=[f"```sql\n{SIMPLE}\n```", f"```sql\n{empty}\n```"],
                            nc="correct")
    answer = run(db, schema, engine, stages="sl,nc")
    fallback = next(e for e in answer.events if e.stage == "fallback")
    assert fallback.accepted and fallback.reason == "the candidate returns no rows"
    assert answer.sql == SIMPLE


def test_a_pseudo_sql_that_returns_nothing_either_does_not_replace_the_candidate(db, schema):
    empty = "SELECT Name FROM singer WHERE Age > 1000"
    engine = ScriptedEngine(sl='{"singer": ["Name", "Age"]}',
                            ts=[f"```sql\n{empty} AND Age < 0\n```", f"```sql\n{empty}\n```"], nc="correct")
    answer = run(db, schema, engine, stages="sl,nc")
    assert not next(e for e in answer.events if e.stage == "fallback").accepted
    assert answer.sql == empty


def test_a_cancelled_trial_run_stops_the_question_instead_of_counting_as_a_failure(db, schema):
    from routesh.errors import QueryCancelled

    class CancelledDatabase:
        dialect = "sqlite"

        def execute(self, sql, *, options=None, guard=True):
            raise QueryCancelled("query cancelled")

    engine = ScriptedEngine(sl='{"singer": ["Name"]}', ts=f"```sql\n{SIMPLE}\n```", nc="correct")
    pipeline = Pipeline(engine, CancelledDatabase(), schema)
    with pytest.raises(QueryCancelled):
        pipeline.ask(QUESTION)
    assert [task for task, _, _ in engine.calls] == ["sl", "ts", "ts"]  # nothing after the cancelled trial


def test_a_cancelled_token_stops_the_question_before_the_next_model_call(db, schema):
    from routesh.cancel import CancelToken
    from routesh.errors import Cancelled

    token = CancelToken()
    stopped = []
    token.on_cancel(lambda: stopped.append("engine"))
    engine = ScriptedEngine(sl='{"singer": ["Name"]}', ts=f"```sql\n{SIMPLE}\n```", nc="correct")

    def cancel_after_generation(event):
        if isinstance(event, StageEvent) and event.stage == Stage.TS:
            token.cancel()

    with pytest.raises(Cancelled):
        Pipeline(engine, db, schema).ask(QUESTION, cancel=token, on_event=cancel_after_generation)
    assert stopped == ["engine"]  # what was running was told to stop, once
    assert [task for task, _, _ in engine.calls] == ["sl", "ts", "ts"]  # no trial run, no correction after it


def test_one_pipeline_answers_concurrent_questions_independently(db, schema):
    """Each ask() keeps its own answer and events: two questions at once on one Pipeline do not mix."""
    import threading

    other = "SELECT Name FROM singer WHERE Age < 30"
    by_question = {QUESTION: SIMPLE, "Who is young?": other}
    barrier = threading.Barrier(2)

    class PerQuestionEngine(ScriptedEngine):
        def generate(self, requests, params=None, *, cancel=None):
            barrier.wait(timeout=10)  # both questions are inside the pipeline at the same time
            question = next(q for q in by_question if q in requests[0].messages[-1].content)
            return [Completion(f"```sql\n{by_question[question]}\n```" if task_of(r) != "nc" else "correct",
                               prompt_tokens=1, output_tokens=1, finish_reason="stop", seconds=0.0) for r in requests]

    pipeline = Pipeline(PerQuestionEngine(), db, schema, options=PipelineOptions(stages=StageConfig.parse("nc")))
    answers = {}
    threads = [threading.Thread(target=lambda q=q: answers.__setitem__(q, pipeline.ask(q))) for q in by_question]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    for question, sql in by_question.items():
        assert answers[question].question == question and answers[question].sql == sql
        assert all(e.artifact != by_question[q] for q in by_question if q != question
                   for e in answers[question].events)
