"""ROUTE's multitask collaboration prompting (MCP): one question in, checked SQL (or a reasoned
abstention) out.

    0. with an example source (remembered queries), the few earlier questions most like this one, with
       their SQL, shown before the question wherever SQL is written (steps 1 and 3);
       with `values`, the question's words matched to stored values, shown first among their columns'
       examples in every schema text below (values.py)
    1. schema linking ‖ pseudo-SQL on the full schema, in one batched model call
    2. reduced schema = linked columns ∪ the pseudo-SQL's columns ∪ foreign-key paths joining them
    3. SQL generation on the reduced schema (with more example values); with `vote`, K candidates and
       the pseudo-SQL voted by their results (vote.py); with `repair`, a failing candidate's unknown
       names renamed to the schema's closest, taken if it then executes (here and after steps 4 and 5)
    4. noise correction, told the database's error or a summary of the result; a fix must execute
    5. continuation writing from a real clause-boundary prefix when the SQL fails or is hard (a
       follow-up's only when it fails); the completion must execute and return rows
    6. the surviving SQL, or an abstention that says why: it never returns SQL that did not run

Every step emits a StageEvent. Candidates run read-only through the guard, with a small row limit.
A Pipeline holds only what its questions share (engine, database, schema, options); each ask() has its
own run object (run.py), so concurrent questions do not see each other's state.
"""

from __future__ import annotations

from collections.abc import Sequence

from routesh.cancel import CancelToken
from routesh.db.base import Database
from routesh.db.schema import Schema
from routesh.engine.base import Engine
from routesh.db.values import ValueIndex
from routesh.pipeline import schema_texts, steps, values, vote
from routesh.pipeline.options import PipelineOptions
from routesh.pipeline.run import QuestionRun, one_line
from routesh.pipeline.stages import Answer, EventSink, Stage
from routesh.pipeline.trial import Trial
from routesh.prompts import Turn
from routesh.retrieval import ExampleSource
from routesh.sql.parse import same_sql


class Pipeline:
    def __init__(self, engine: Engine, database: Database, schema: Schema, *,
                 options: PipelineOptions | None = None, value_index: ValueIndex | None = None,
                 examples: ExampleSource | None = None):
        """value_index: the stored values of `database` for the `values` stage, kept by whoever asks many
        questions of one database (the shell's session, routesh-eval); without it this pipeline makes
        its own. examples: where remembered queries come from (none: no examples)."""
        self.engine = engine
        self.database = database
        self.schema = schema
        self.options = options or PipelineOptions()
        self.value_index = value_index
        self.examples = examples

    def ask(self, question: str, hint: str | None = None, *, cancel: CancelToken | None = None,
            on_event: EventSink | None = None, context: Sequence[Turn] = ()) -> Answer:
        """Answer one question. `cancel` stops it at the next step (Cancelled is raised); `on_event` sees
        each Starting notice and each StageEvent as it happens; `context`, the conversation the question
        follows (its last `options.context_turns` turns are asked with; an answer that only repeats one
        of their SQL is asked again without them)."""
        answer = Answer(question=question, sql=None, reason="")
        run = self._start(question, hint, cancel or CancelToken(), on_event, answer)
        if context and self.options.context_turns > 0:
            run.context = tuple(context)[-self.options.context_turns:]
            n = len(run.context)
            run.emit(Stage.CONTEXT, f"a follow-up to {n} earlier question{'s' if n != 1 else ''}: "
                     + "; ".join(t.question for t in run.context),
                     artifact="\n".join(f"{t.question} → {one_line(t.sql)}" for t in run.context),
                     accepted=True)
        outcome = self._write(run)
        repeated = next((t for t in run.context if same_sql(outcome.sql, t.sql)), None) if isinstance(outcome, Trial) \
            else None
        if repeated is not None:
            # A new question answered with an earlier one's SQL: the small model copied the conversation
            # instead of reading the question (on SParC's tuning turns 2 of 54 such answers were right,
            # the same turns asked alone 8: bench/repeated_sql.py). Ask it alone; keep the copy only if
            # that writes nothing.
            run.emit(Stage.CONTEXT, f"the SQL repeats the answer to “{repeated.question}”; asked again on its own",
                     artifact=outcome.sql, accepted=False, reason="it repeats an earlier turn's SQL")
            alone = self._start(question, hint, run.cancel, on_event, answer)
            retried = self._write(alone)
            if isinstance(retried, Trial):
                run, outcome = alone, retried
        return run.finish(outcome) if isinstance(outcome, Trial) else run.abstain(outcome)

    def _start(self, question: str, hint: str | None, cancel: CancelToken, on_event: EventSink | None,
               answer: Answer) -> QuestionRun:
        """A run that adds its events to `answer` (a retry adds to the same record)."""
        return QuestionRun(self.engine, self.database, self.schema, self.options, question, hint, cancel, on_event,
                           answer)

    def _write(self, run: QuestionRun) -> Trial | str:
        """The stages, from the remembered examples to continuation writing: the SQL that survived (it ran),
        or why there is none (an abstention's reason)."""
        question, opts, stages = run.question, self.options, self.options.stages

        # 0: remembered queries like this question, shown where SQL is written
        if self.examples is not None and opts.examples > 0:
            run.examples = tuple(self.examples.similar(question, opts.examples))
            if run.examples:
                n, questions = len(run.examples), "; ".join(e.question for e in run.examples)
                shown = "\n".join(f"{e.question} → {one_line(e.sql)}" for e in run.examples)
                run.emit(Stage.MEMORY, f"{n} remembered quer{'y' if n == 1 else 'ies'} as examples: {questions}",
                         artifact=shown, accepted=True)

        # the question's words matched to stored values; run.schema shows them from here on
        if stages.values:
            if self.value_index is None:
                self.value_index = ValueIndex(self.schema)
            values.link_values(run, self.value_index)
        full_text = schema_texts.full_text(run.schema, question, opts)

        # 1-2: linking and the pseudo-SQL (one batch), merged into the reduced schema
        if stages.linking:
            keep, pseudo = steps.link(run, full_text)
            schema_text = schema_texts.reduced_text(run.schema, question, keep, opts)
        else:
            pseudo, schema_text = None, full_text

        # 3: generation, one candidate or many voted by their results
        if stages.vote:
            voted, reply = vote.vote(run, schema_text, pseudo=pseudo)
            if voted is None:
                return steps.no_sql_reason(reply)
            trial = voted
        else:
            candidate, reply = steps.generate(run, schema_text, draft=pseudo)
            if candidate is None:
                if not pseudo:
                    return steps.no_sql_reason(reply)
                candidate = pseudo
                run.emit(Stage.TS, "no SQL in the reply; using the pseudo-SQL", artifact=pseudo.text,
                         accepted=True, reason="generation gave no SQL")
            trial = steps.repair(run, run.trial(candidate, "candidate"))
            if trial.empty_or_failed and pseudo and not same_sql(pseudo.text, candidate.text):
                trial = steps.fall_back_to_pseudo(run, pseudo, trial)

        # 4: noise correction with execution feedback
        if stages.correction:
            trial = steps.correct(run, schema_text, trial)

        # 5: continuation writing when the SQL fails or is hard
        if stages.continuation:
            trial = steps.continue_writing(run, schema_text, trial)

        # 6: the answer
        if not trial.ran:
            return f"no candidate SQL executed (last error: {trial.error})"
        return trial
