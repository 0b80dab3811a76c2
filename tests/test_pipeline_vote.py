"""The vote stage's control flow, with the scripted engine of test_pipeline.py on a real Spider database:
which candidates are asked for, how they are grouped by result, who wins, and what the answer says."""

from __future__ import annotations

from routesh.db.compare import results_match
from routesh.pipeline.options import PipelineOptions
from routesh.pipeline.pipeline import Pipeline
from routesh.pipeline.stages import Agreement, Stage, StageConfig
from tests.test_pipeline import GOOD, QUESTION, SIMPLE, ScriptedEngine, db, schema  # noqa: F401 - fixtures

# GOOD's result, written another way (other aliases, other join order): the same answer
GOOD_TOO = ("SELECT s.Name FROM concert AS c JOIN singer_in_concert AS sc ON sc.concert_ID = c.concert_ID "
            "JOIN singer AS s ON s.Singer_ID = sc.Singer_ID WHERE c.Year = 2014")
EMPTY = "SELECT Name FROM singer WHERE Age > 1000"
BROKEN = "SELECT Nom FROM singer"


def sql(text: str) -> str:
    return f"```sql\n{text}\n```"


def ask(db, schema, *, pseudo: str, candidates: list[str], k: int | None = None, stages: str = "sl,vote"):
    """`candidates` are the vote's replies in order: the greedy one first."""
    engine = ScriptedEngine(sl='{"singer": ["Name"], "concert": ["Year"]}', ts=[pseudo, *candidates], nc="correct")
    options = PipelineOptions(stages=StageConfig.parse(stages), vote_k=k or len(candidates), vote_seed=40)
    return Pipeline(engine, db, schema, options=options).ask(QUESTION), engine


def vote_event(answer):
    return next(e for e in answer.events if e.stage == Stage.VOTE)


def test_same_result_written_differently_is_one_group(db):
    a = db.execute(GOOD).rows
    assert results_match(a, db.execute(GOOD_TOO).rows, ordered=False)


def test_the_largest_group_wins_over_the_greedy_candidate(db, schema):
    answer, engine = ask(db, schema, pseudo=sql(GOOD), candidates=[
        sql(SIMPLE), sql(GOOD_TOO), sql(GOOD), sql(BROKEN), sql(SIMPLE), "no idea", sql(BROKEN), sql(GOOD_TOO)])
    # greedy SIMPLE ×2; GOOD_TOO ×2 + GOOD + the pseudo-SQL = 4 with GOOD's result; two failures
    assert answer.agreement == Agreement(4, 8)  # 7 candidates with SQL, and the pseudo-SQL
    assert answer.sql in (GOOD, GOOD_TOO)
    assert results_match(answer.result.rows, db.execute(GOOD).rows, ordered=False)
    event = vote_event(answer)
    assert event.accepted and "4 of 8 candidates agree" in event.summary
    won = [c["source"] for c in event.artifact if c["won"]]
    assert sorted(won) == ["pseudo", "sample 1", "sample 2", "sample 7"]
    assert [c["ran"] for c in event.artifact if c["source"] in ("sample 3", "sample 6")] == [False, False]
    assert answer.agreement.low  # half: the user is told to check


def test_one_call_asks_the_greedy_candidate_and_seeded_samples(db, schema):
    _, engine = ask(db, schema, pseudo=sql(GOOD), candidates=[sql(GOOD)] * 4)
    vote_calls = [(request, params) for task, request, params in engine.calls[2:]]
    assert len(vote_calls) == 4 and len({request for request, _ in vote_calls}) == 1  # copies of one prompt
    params = vote_calls[0][1]  # the call's list of parameters, one per request
    assert [p.temperature for p in params] == [0.0] + [PipelineOptions.vote_temperature] * 3
    assert [p.seed for p in params[1:]] == [41, 42, 43]
    assert all(p.draft_text == GOOD and p.prompt_lookup for p in params)


def test_a_tie_goes_to_the_greedy_candidates_group(db, schema):
    answer, _ = ask(db, schema, pseudo=sql(GOOD), candidates=[sql(SIMPLE), sql(SIMPLE), sql(GOOD)])
    assert answer.sql == SIMPLE and answer.agreement == Agreement(2, 4)


def test_failures_never_win_and_rows_beat_an_empty_result(db, schema):
    answer, _ = ask(db, schema, pseudo=sql(BROKEN), candidates=[sql(BROKEN), sql(EMPTY), sql(EMPTY), sql(SIMPLE)])
    assert answer.sql == SIMPLE and answer.agreement == Agreement(1, 5)
    answer, _ = ask(db, schema, pseudo=sql(BROKEN), candidates=[sql(BROKEN), sql(EMPTY), sql(EMPTY)])
    assert answer.sql == EMPTY and answer.agreement == Agreement(2, 4)


def test_when_nothing_executes_correction_sees_the_greedy_error(db, schema):
    answer, engine = ask(db, schema, pseudo=sql(BROKEN), candidates=[sql(BROKEN)] * 3, stages="sl,vote,nc")
    event = vote_event(answer)
    assert event.accepted is False and "none of 4 candidates executed" in event.summary
    nc_request = next(request for task, request, _ in engine.calls if task == "nc")
    assert "no such column: Nom" in nc_request.messages[-1].content
    assert answer.abstained and answer.agreement is None


def test_all_means_every_stage_and_vote_is_named_in_the_label():
    assert StageConfig.parse("all") == StageConfig(vote=True, repair=True, values=True)
    assert StageConfig.parse("all").label() == "ts,values,sl,vote,repair,nc,cw"
    assert StageConfig.parse("mcp") == StageConfig()
    assert StageConfig.parse("sl,vote,nc,cw").label() == "ts,sl,vote,nc,cw"
    assert not StageConfig.parse("sl,nc,cw").vote


def test_why_lists_the_candidates_and_says_how_sure_it_is(db, schema):
    from prompt_toolkit.formatted_text import to_plain_text

    from routesh.shell.stagesview import trace

    answer, _ = ask(db, schema, pseudo=sql(GOOD), candidates=[sql(SIMPLE), sql(GOOD_TOO), sql(BROKEN)])
    text = to_plain_text(trace(answer))
    assert "candidates:" in text
    assert f"  #0 greedy    4 rows    {SIMPLE}" in text  # not the winner: no star
    assert f"* #1 sample 1  6 rows    {GOOD_TOO}" in text and f"* #1 pseudo    6 rows    {GOOD}" in text
    assert "#2 sample 2  fails: no such column: Nom" in text
    assert "2 of 4 candidates agree — check this SQL" in text


def test_repair_renames_unknown_names_and_the_repaired_candidate_votes(db, schema):
    misspelt = "SELECT Nme FROM singers WHERE Age > 30"  # neither the column nor the table exists
    answer, _ = ask(db, schema, pseudo=sql(BROKEN), candidates=[sql(misspelt), sql(SIMPLE), sql(EMPTY)],
                    stages="sl,vote,repair")
    # the greedy candidate, repaired, returns SIMPLE's result: two votes, and the greedy one's group wins
    assert answer.agreement == Agreement(2, 4)
    assert answer.sql == "SELECT Name FROM singer WHERE Age > 30"
    repair = next(e for e in answer.events if e.stage == Stage.REPAIR)
    assert repair.accepted and "Nme → Name" in repair.summary and "singers → singer" in repair.summary
    greedy = vote_event(answer).artifact[0]
    assert greedy["repaired"] == "singers → singer, Nme → Name" and greedy["won"]


def test_a_repaired_candidate_that_loses_the_vote_is_not_what_revised_the_answer(db, schema):
    misspelt = "SELECT Nme FROM singers WHERE Age > 1000"  # repaired, it returns EMPTY's result: one vote
    answer, _ = ask(db, schema, pseudo=sql(BROKEN), candidates=[sql(SIMPLE), sql(SIMPLE), sql(misspelt)],
                    stages="sl,vote,repair")
    assert answer.sql == SIMPLE and answer.agreement == Agreement(2, 4)
    repair = next(e for e in answer.events if e.stage == Stage.REPAIR)
    assert "1 of 4 candidates repaired" in repair.summary
    assert repair.accepted is None and "none of them won" in repair.reason  # shown, but not "revised by repair"


def test_repair_without_the_vote_fixes_the_one_candidate(db, schema):
    answer, _ = ask(db, schema, pseudo=sql(BROKEN), candidates=["```sql\nSELECT T1.Nme FROM singer AS T1\n```"],
                    stages="sl,repair")
    assert answer.sql == "SELECT T1.Name FROM singer AS T1"
    repair = next(e for e in answer.events if e.stage == Stage.REPAIR)
    assert repair.summary == "candidate: T1.Nme → T1.Name" and repair.accepted
    answer, _ = ask(db, schema, pseudo=sql(BROKEN), candidates=["```sql\nSELECT T1.Nme FROM singer AS T1\n```"],
                    stages="sl")
    assert answer.abstained and not any(e.stage == Stage.REPAIR for e in answer.events)  # off: not tried


def test_repair_fixes_a_join_on_a_column_equal_to_itself_in_sql_that_runs(db, schema):
    crossed = GOOD.replace("ON T1.Singer_ID = T2.Singer_ID", "ON T2.Singer_ID = T2.Singer_ID")
    assert db.execute(crossed).rows  # it runs: a cross join with every concert's singer list
    answer, _ = ask(db, schema, pseudo=sql(BROKEN), candidates=[sql(crossed)], stages="sl,repair")
    assert answer.sql == GOOD.replace("ON T1.Singer_ID = T2.Singer_ID", "ON T2.Singer_ID = T1.Singer_ID")
    assert results_match(answer.result.rows, db.execute(GOOD).rows, ordered=False)
    repair = next(e for e in answer.events if e.stage == Stage.REPAIR)
    assert repair.accepted and repair.summary == (
        "candidate: T2.Singer_ID = T2.Singer_ID → T2.Singer_ID = T1.Singer_ID")
