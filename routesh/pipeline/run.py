"""One question's run through the pipeline: everything that changes while a question is answered (its
answer and events, its cancellation token, where its events go) lives here, not on the Pipeline, so
one pipeline can answer several questions at once. The steps (steps.py) work on this object."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from routesh.cancel import CancelToken
from routesh.db.base import Database
from routesh.db.schema import Schema
from routesh.engine.base import ChatRequest, Completion, Engine, GenerationParams
from routesh.pipeline import linking
from routesh.pipeline.linking import ReducedSchema
from routesh.pipeline.options import SQL_STOP, PipelineOptions
from routesh.pipeline.stages import Answer, EventSink, Stage, StageEvent, Starting
from routesh.pipeline.trial import Trial, run_trial
from routesh.prompts import Turn
from routesh.retrieval import Example
from routesh.sql.extract import extract_sql
from routesh.sql.parse import Sql
from routesh.sql.usage import tables_and_columns


@dataclass
class QuestionRun:
    engine: Engine
    database: Database
    schema: Schema
    options: PipelineOptions
    question: str
    hint: str | None
    cancel: CancelToken
    sink: EventSink | None
    answer: Answer
    matched: ReducedSchema = field(default_factory=dict)  # columns holding a value the question names
    examples: tuple[Example, ...] = ()  # remembered queries, shown before the question where SQL is written
    context: tuple[Turn, ...] = ()  # the conversation it follows: every task is asked after it

    @property
    def dialect(self) -> str:
        return self.schema.dialect

    # ---- the model ----------------------------------------------------------------------------------

    def starting(self, stage: Stage, label: str) -> None:
        """A checkpoint before each model call: stop here when cancelled, else say what starts."""
        self.cancel.check()
        if self.sink:
            self.sink(Starting(stage, label))

    def call(self, request: ChatRequest, *, draft: str | None) -> Completion:
        """One SQL-writing call; the draft feeds prompt-lookup decoding (the reply mostly copies it)."""
        return self.engine.generate([request], self.sql_params(draft), cancel=self.cancel)[0]

    def sql_params(self, draft: str | None) -> GenerationParams:
        """How every SQL-writing call decodes: greedy, up to the ```sql block's end, drafting from `draft`."""
        return GenerationParams(max_new_tokens=self.options.sql_tokens, stop=SQL_STOP, prompt_lookup=True,
                                draft_text=draft or "")

    # ---- the database -------------------------------------------------------------------------------

    def trial(self, sql: Sql, label: str) -> Trial:
        """Run a candidate read-only (guard included) with a small row limit: feedback, not the answer."""
        self.cancel.check()
        started = time.perf_counter()
        trial = run_trial(self.database, sql, row_limit=self.options.preview_rows, timeout=self.options.timeout)
        feedback = self.feedback(trial)
        self.emit(Stage.EXECUTE, f"{label}: {feedback}", artifact=feedback, accepted=trial.ran,
                  seconds=time.perf_counter() - started)
        return trial

    def feedback(self, trial: Trial) -> str:
        return trial.feedback(self.schema)

    # ---- names --------------------------------------------------------------------------------------

    def known(self, linked: Mapping[str, list[str]]) -> ReducedSchema:
        return linking.known_columns(self.schema, linked)

    def usage(self, sql: Sql | None) -> ReducedSchema:
        """The tables and columns `sql` uses, as this schema spells them."""
        if sql is None:
            return {}
        return self.known(tables_and_columns(sql, self.dialect, self.schema).as_linking())

    def extract(self, reply: str) -> Sql | None:
        """The SQL of a model reply, as the one typed value the later steps share (None: no SQL)."""
        text = extract_sql(reply, self.dialect)
        return Sql(text, self.dialect) if text else None

    # ---- what it reports ------------------------------------------------------------------------------

    def emit(self, stage: Stage, summary: str, *, raw: str | None = None, artifact: object = None,
             accepted: bool | None = None, reason: str = "", completion: Completion | None = None,
             seconds: float | None = None, output_tokens: int = 0) -> None:
        event = StageEvent(stage, summary, raw, artifact, accepted, reason, output_tokens=output_tokens)
        if completion is not None:
            event = replace(event, prompt_tokens=completion.prompt_tokens, output_tokens=completion.output_tokens,
                            seconds=completion.seconds if seconds is None else seconds)
        elif seconds is not None:
            event.seconds = seconds
        self.answer.events.append(event)
        if self.sink:
            self.sink(event)

    def finish(self, trial: Trial) -> Answer:
        answer = self.answer
        answer.sql, answer.result = trial.sql, trial.result
        answer.reason = "the SQL executed" + ("" if trial.result and trial.result.rows else " (no rows)")
        self.emit(Stage.FINAL, one_line(trial.sql), artifact=trial.sql, accepted=True, reason=answer.reason)
        return answer

    def abstain(self, reason: str) -> Answer:
        self.answer.reason = reason
        self.emit(Stage.FINAL, f"abstained: {reason}", accepted=False, reason=reason)
        return self.answer


def one_line(text: str | None) -> str:
    return " ".join((text or "").split())
