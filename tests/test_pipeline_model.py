"""The pipeline end to end with a real model (the catalog test model, SmolLM2-135M) on a real Spider
database. It checks that every stage ran and the answer is well formed, not that the small model is right."""

from __future__ import annotations

import pytest

from routesh.db.sqlite import SqliteDatabase
from routesh.engine.hf import TransformersEngine
from routesh.engine.models import TEST_MODEL, materialize
from routesh.pipeline.options import PipelineOptions
from routesh.pipeline.pipeline import Pipeline
from routesh.pipeline.stages import StageEvent
from tests.helpers import SHARED_DATA

DB = SHARED_DATA / "spider" / "database" / "concert_singer" / "concert_singer.sqlite"


@pytest.fixture(scope="module")
def engine(model_cache):
    return TransformersEngine(materialize(TEST_MODEL, progress=False), name=TEST_MODEL)


@pytest.mark.parametrize("question", [
    "How many singers do we have?",
    "What are the names of singers who performed in a concert in 2014?",
])
def test_every_stage_runs_with_a_real_model(engine, question):
    db = SqliteDatabase.open(DB)
    try:
        events = []
        pipeline = Pipeline(engine, db, db.introspect(samples=5), options=PipelineOptions(sql_tokens=96))
        answer = pipeline.ask(question, on_event=lambda e: events.append(e) if isinstance(e, StageEvent) else None)
    finally:
        db.close()
    stages = [e.stage for e in events]
    assert stages[:3] == ["sl", "pseudo", "merge"]
    assert "ts" in stages and stages[-1] == "final"
    for event in events:
        if event.stage in ("sl", "pseudo", "ts", "nc", "cw"):
            assert event.raw is not None and event.prompt_tokens > 0 and event.seconds > 0
    if answer.abstained:
        assert answer.reason and events[-1].accepted is False
    else:
        # a returned SQL always ran; its verdict came from the database, and noise correction saw it
        assert answer.result is not None
        assert any(e.stage == "execute" and e.accepted for e in events)
        assert "nc" in stages


def test_the_vote_with_a_real_model_is_seeded_and_counts_every_candidate(engine):
    from routesh.pipeline.stages import Stage, StageConfig

    db = SqliteDatabase.open(DB)
    options = PipelineOptions(stages=StageConfig.parse("sl,vote"), sql_tokens=64, vote_k=4)
    try:
        pipeline = Pipeline(engine, db, db.introspect(samples=5), options=options)
        first = pipeline.ask("How many singers do we have?")
        again = pipeline.ask("How many singers do we have?")
    finally:
        db.close()
    vote = next(e for e in first.events if e.stage == Stage.VOTE)
    ts = next(e for e in first.events if e.stage == Stage.TS)
    candidates = vote.artifact
    assert candidates[0]["source"] == "greedy" and candidates[0]["sql"] == ts.artifact
    assert len(candidates) <= 5 and {c["source"] for c in candidates} <= {"greedy", "sample 1", "sample 2", "sample 3",
                                                                           "pseudo"}
    assert all(c["logprob"] is None or c["logprob"] < 0 for c in candidates)
    assert vote.output_tokens > 0  # the samples' tokens count in the answer's
    if first.agreement:  # some candidate ran: the winner's group is what the agreement counts
        assert first.agreement.candidates == len(candidates)
        assert first.agreement.votes == sum(c["won"] for c in candidates)
    # seeded: the same question gets the same candidates and the same answer
    assert [c["sql"] for c in next(e for e in again.events if e.stage == Stage.VOTE).artifact] == [
        c["sql"] for c in candidates]
    assert again.sql == first.sql and again.agreement == first.agreement
