"""ROUTE's multitask collaboration prompting (MCP): one question in, checked SQL (or a reasoned
abstention) out.

    1. schema linking ‖ pseudo-SQL on the full schema, in one batched model call
    2. reduced schema = linked columns ∪ the pseudo-SQL's columns ∪ foreign-key paths joining them
    3. SQL generation on the reduced schema (with more example values)
    4. noise correction, told the database's error or a summary of the result; a fix must execute
    5. continuation writing from a real clause-boundary prefix when the SQL fails or is hard; the
       completion must execute and return rows
    6. the surviving SQL, or an abstention that says why: it never returns SQL that did not run

Every step emits a StageEvent. Candidates run read-only through the guard, with a small row limit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from routesh import prompts
from routesh.db.base import Database, ExecOptions, Result
from routesh.db.schema import Schema
from routesh.engine.base import ChatRequest, Completion, Engine, GenerationParams
from routesh.errors import QueryCancelled, RoutesError
from routesh.pipeline import linking
from routesh.pipeline.stages import Answer, EventSink, StageConfig, StageEvent
from routesh.sql.extract import extract_sql, says_cannot_answer
from routesh.sql.hardness import hardness
from routesh.sql.parse import same_sql
from routesh.sql.truncate import truncate
from routesh.sql.usage import tables_and_columns


# Example values per column to introspect for the pipeline: the most any of its prompts shows. The shell,
# -e, routesh-eval and finetune all introspect with it, so training and inference see the same values.
SCHEMA_SAMPLES = 5


@dataclass(frozen=True)
class PipelineOptions:
    stages: StageConfig = StageConfig()
    schema_budget: int = 3000  # tokens of schema text in a prompt
    full_samples: int = 2  # example values per column on the full schema
    reduced_samples: int = SCHEMA_SAMPLES  # ... and on the reduced one (ROUTE: more rows of the kept columns)
    sql_tokens: int = 256
    linking_tokens: int = 160
    preview_rows: int = 20  # what a candidate's trial run fetches
    timeout: float = 10.0  # seconds a candidate's trial run may take
    cw_fraction: float = 0.5  # where continuation writing cuts the candidate


SQL_STOP = ("\n```\n",)  # the end of the ```sql block, when prose follows it (finetune uses it too)


@dataclass
class _Trial:
    sql: str
    result: Result | None
    error: str | None
    schema: Schema | None = None  # lets the feedback say where an unknown column does exist

    @property
    def ran(self) -> bool:
        return self.error is None

    @property
    def feedback(self) -> str:
        return prompts.render_feedback(self.result, self.error, self.schema)


class Pipeline:
    def __init__(self, engine: Engine, database: Database, schema: Schema, *,
                 options: PipelineOptions | None = None, on_event: EventSink | None = None,
                 on_start: Callable[[str], None] | None = None):
        self.engine = engine
        self.database = database
        self.schema = schema
        self.dialect = schema.dialect
        self.options = options or PipelineOptions()
        self._on_event = on_event
        self._on_start = on_start  # told the name of each model call before it starts (the shell's spinner)

    def ask(self, question: str, hint: str | None = None) -> Answer:
        answer = Answer(question=question, sql=None, reason="")
        self._answer = answer
        opts, stages = self.options, self.options.stages
        full_text = prompts.render_schema(self.schema, question=question, samples=opts.full_samples,
                                          budget=opts.schema_budget)

        # 1-2: linking and the pseudo-SQL (one batch), merged into the reduced schema
        if stages.linking:
            self._starting("schema linking")
            keep, pseudo = self._link(full_text, question, hint)
            schema_text = prompts.render_schema(self.schema, keep=keep, question=question,
                                                samples=opts.reduced_samples, budget=opts.schema_budget)
        else:
            pseudo, schema_text = None, full_text

        # 3: generation
        self._starting("generation")
        candidate, reply = self._generate(schema_text, question, hint, draft=pseudo)
        if candidate is None:
            if not pseudo:
                return self._abstain(_no_sql_reason(reply))
            candidate = pseudo
            self._emit("ts", "no SQL in the reply; using the pseudo-SQL", artifact=pseudo, accepted=True,
                       reason="generation gave no SQL")
        trial = self._trial(candidate, "candidate")
        if _empty_or_failed(trial) and pseudo and not same_sql(pseudo, candidate):
            trial = self._fall_back_to_pseudo(pseudo, trial)

        # 4: noise correction with execution feedback
        if stages.correction:
            trial = self._correct(schema_text, question, hint, trial)

        # 5: continuation writing when the SQL fails or is hard
        if stages.continuation:
            trial = self._continue(schema_text, question, hint, trial)

        # 6: the answer
        if not trial.ran:
            return self._abstain(f"no candidate SQL executed (last error: {trial.error})")
        answer.sql, answer.result = trial.sql, trial.result
        answer.reason = "the SQL executed" + ("" if trial.result and trial.result.rows else " (no rows)")
        self._emit("final", _one_line(trial.sql), artifact=trial.sql, accepted=True, reason=answer.reason)
        return answer

    # ---- stages ---------------------------------------------------------------------------------------

    def _link(self, full_text: str, question: str, hint: str | None) -> tuple[dict[str, set[str]], str | None]:
        requests = [prompts.sl_prompt(full_text, self.dialect, question, hint),
                    prompts.ts_prompt(full_text, self.dialect, question, hint)]
        started = time.perf_counter()
        sl_out, ts_out = self.engine.generate(requests, GenerationParams(max_new_tokens=self.options.sql_tokens,
                                                                         stop=SQL_STOP))
        seconds = time.perf_counter() - started
        linked = self._known(prompts.parse_sl_reply(sl_out.text) or {})
        self._emit("sl", _columns_summary(linked) or "no usable tables in the reply", raw=sl_out.text,
                   artifact={t: sorted(c) for t, c in linked.items()}, accepted=bool(linked),
                   reason="" if linked else "the reply named no table of this schema", completion=sl_out,
                   seconds=seconds / 2)
        pseudo = extract_sql(ts_out.text, self.dialect)
        used = self._usage(pseudo)
        self._emit("pseudo", _one_line(pseudo) if pseudo else "no SQL in the reply", raw=ts_out.text,
                   artifact=pseudo, accepted=pseudo is not None, completion=ts_out, seconds=seconds / 2)
        keep = linking.reduced_keep(self.schema, linked, used)
        bridged = set(keep) - set(linked) - set(used) if linked or used else set()  # else: the whole schema
        self._emit("merge", f"{len(keep)} of {len(self.schema.tables)} tables kept"
                   + (f" (+{', '.join(sorted(bridged))} to join them)" if bridged else ""),
                   artifact={t: sorted(c) for t, c in keep.items()}, accepted=True)
        return keep, pseudo

    def _generate(self, schema_text: str, question: str, hint: str | None, *,
                  draft: str | None) -> tuple[str | None, str]:
        """The generated SQL (None when the reply has none) and the reply itself."""
        request = prompts.ts_prompt(schema_text, self.dialect, question, hint)
        out = self._call(request, draft=draft)
        sql = extract_sql(out.text, self.dialect)
        self._emit("ts", _one_line(sql) if sql else "no SQL in the reply", raw=out.text, artifact=sql,
                   accepted=sql is not None, completion=out)
        return sql, out.text

    def _fall_back_to_pseudo(self, pseudo: str, weak: _Trial) -> _Trial:
        """The generation on the reduced schema failed or returned nothing; the pseudo-SQL, written on
        the full schema, is a second candidate that costs one trial run and no model call. It is taken
        if it runs where the candidate failed, or returns rows where the candidate returned none."""
        second = self._trial(pseudo, "pseudo-SQL")
        taken = second.ran and (not weak.ran or not _empty_or_failed(second))
        why = f"the candidate fails: {weak.error}" if not weak.ran else "the candidate returns no rows"
        self._emit("fallback", "the pseudo-SQL replaces the candidate" if taken
                   else "the pseudo-SQL does no better; the candidate stays", artifact=pseudo, accepted=taken,
                   reason=why)
        return second if taken else weak

    def _correct(self, schema_text: str, question: str, hint: str | None, trial: _Trial) -> _Trial:
        self._starting("noise correction")
        request = prompts.nc_prompt(schema_text, self.dialect, question, trial.sql, trial.feedback, hint)
        out = self._call(request, draft=trial.sql)
        verdict = prompts.parse_nc_verdict(out.text)
        fixed = extract_sql(out.text, self.dialect) if verdict is not True else None
        if fixed is None or same_sql(fixed, trial.sql):
            why = "the model judged it correct" if verdict else "no different SQL proposed"
            self._emit("nc", why, raw=out.text, artifact=trial.feedback, accepted=False, reason=why, completion=out)
            return trial
        proposal = self._trial(fixed, "correction")
        if proposal.ran:
            self._emit("nc", f"corrected: {_one_line(fixed)}", raw=out.text, artifact=fixed, accepted=True,
                       reason="the correction executes", completion=out)
            return proposal
        self._emit("nc", "correction rejected", raw=out.text, artifact=fixed, accepted=False,
                   reason=f"the correction fails: {proposal.error}", completion=out)
        return trial

    def _continue(self, schema_text: str, question: str, hint: str | None, trial: _Trial) -> _Trial:
        hard = trial.ran and _is_hard(trial.sql, self.dialect)
        if trial.ran and not hard:
            return trial
        prefix = truncate(trial.sql, self.dialect, fraction=self.options.cw_fraction)
        if not prefix.strip():
            return trial
        self._starting("continuation writing")
        request = prompts.cw_prompt(schema_text, self.dialect, question, prefix, hint)
        out = self._call(request, draft=trial.sql)
        completed = extract_sql(out.text, self.dialect)
        trigger = "the SQL is hard" if trial.ran else "the SQL fails"
        if completed is None:
            self._emit("cw", "no SQL in the reply", raw=out.text, artifact=prefix, accepted=False,
                       reason=trigger, completion=out)
            return trial
        attempt = self._trial(completed, "continuation")
        taken = attempt.ran and attempt.result is not None and bool(attempt.result.rows)
        why = "it executes and returns rows" if taken else (
            f"it fails: {attempt.error}" if not attempt.ran else "it returns no rows")
        self._emit("cw", f"from “{_one_line(prefix)}”: {_one_line(completed)}", raw=out.text, artifact=completed,
                   accepted=taken, reason=f"{trigger}; {why}", completion=out)
        return attempt if taken else trial

    # ---- helpers -------------------------------------------------------------------------------------

    def _starting(self, stage: str) -> None:
        if self._on_start:
            self._on_start(stage)

    def _call(self, request: ChatRequest, *, draft: str | None) -> Completion:
        params = GenerationParams(max_new_tokens=self.options.sql_tokens, stop=SQL_STOP, prompt_lookup=True,
                                  draft_text=draft or "")
        return self.engine.generate([request], params)[0]

    def _trial(self, sql: str, label: str) -> _Trial:
        """Run a candidate read-only (guard included) with a small row limit: feedback, not the answer."""
        started = time.perf_counter()
        options = ExecOptions(row_limit=self.options.preview_rows, timeout=self.options.timeout)
        try:
            trial = _Trial(sql, self.database.execute(sql, options=options), None, self.schema)
        except QueryCancelled:  # the user's Ctrl-C, not the candidate's fault: stop the whole question
            raise
        except RoutesError as err:
            trial = _Trial(sql, None, str(err), self.schema)
        self._emit("execute", f"{label}: {trial.feedback}", artifact=trial.feedback, accepted=trial.ran,
                   seconds=time.perf_counter() - started)
        return trial

    def _known(self, linked: Mapping[str, list[str]]) -> dict[str, set[str]]:
        return linking.known_columns(self.schema, linked)

    def _usage(self, sql: str | None) -> dict[str, set[str]]:
        if not sql:
            return {}
        return self._known(tables_and_columns(sql, self.dialect, self.schema).as_linking())

    def _abstain(self, reason: str) -> Answer:
        self._answer.reason = reason
        self._emit("final", f"abstained: {reason}", accepted=False, reason=reason)
        return self._answer

    def _emit(self, stage: str, summary: str, *, raw: str | None = None, artifact: object = None,
              accepted: bool | None = None, reason: str = "", completion: Completion | None = None,
              seconds: float | None = None) -> None:
        event = StageEvent(stage, summary, raw, artifact, accepted, reason)
        if completion is not None:
            event = replace(event, prompt_tokens=completion.prompt_tokens, output_tokens=completion.output_tokens,
                            seconds=completion.seconds if seconds is None else seconds)
        elif seconds is not None:
            event.seconds = seconds
        self._answer.events.append(event)
        if self._on_event:
            self._on_event(event)


def _empty_or_failed(trial: _Trial) -> bool:
    return not trial.ran or trial.result is None or not trial.result.rows


def _is_hard(sql: str, dialect: str) -> bool:
    """ROUTE's trigger for continuation writing; SQL the database ran but sqlglot cannot read is
    treated as not hard (nothing to cut it at reliably)."""
    try:
        return hardness(sql, dialect).is_hard
    except ValueError:
        return False


def _no_sql_reason(reply: str) -> str:
    if says_cannot_answer(reply):
        return f"the model says this database cannot answer it: {_one_line(reply)[:200]}"
    return "the model wrote no SQL"


def _columns_summary(linked: Mapping[str, set[str]]) -> str:
    return "; ".join(f"{t}({', '.join(sorted(c))})" for t, c in linked.items())


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())
