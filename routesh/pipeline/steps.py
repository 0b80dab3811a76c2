"""MCP's steps, each a function of one question's run (run.py). pipeline.py decides which run, in
what order; each step here says what it did through run.emit and returns what the next one needs."""

from __future__ import annotations

import time
from dataclasses import replace

from routesh import prompts
from routesh.engine.base import GenerationParams
from routesh.pipeline import linking
from routesh.pipeline.linking import ReducedSchema
from routesh.pipeline.options import SQL_STOP
from routesh.pipeline.run import QuestionRun, one_line
from routesh.pipeline.stages import Stage
from routesh.pipeline.trial import Trial, run_trial
from routesh.sql.dialect import postgres_rewrites
from routesh.sql.extract import says_cannot_answer
from routesh.sql.hardness import hardness
from routesh.sql.mistakes import fix_mistakes
from routesh.sql.parse import Sql, same_sql
from routesh.sql.repair import Repaired, follow_database_hint, repair_names
from routesh.sql.truncate import truncate

_MOST_REPAIRS = 4  # trial runs one failing candidate may cost the repair stage


def link(run: QuestionRun, full_text: str) -> tuple[ReducedSchema, Sql | None]:
    """Steps 1-2: schema linking ‖ the pseudo-SQL in one batch, merged into the reduced schema."""
    run.starting(Stage.SL, "schema linking")
    requests = [prompts.sl_prompt(full_text, run.dialect, run.question, run.hint, run.context),
                prompts.ts_prompt(full_text, run.dialect, run.question, run.hint, run.examples,
                                  run.context)]
    started = time.perf_counter()
    sl_out, ts_out = run.engine.generate(requests, GenerationParams(max_new_tokens=run.options.sql_tokens, stop=SQL_STOP),
                                         cancel=run.cancel)
    seconds = time.perf_counter() - started
    linked = run.known(prompts.parse_sl_reply(sl_out.text) or {})
    run.emit(Stage.SL, _columns_summary(linked) or "no usable tables in the reply", raw=sl_out.text,
             artifact=_listed(linked), accepted=bool(linked),
             reason="" if linked else "the reply named no table of this schema", completion=sl_out,
             seconds=seconds / 2)
    pseudo = run.extract(ts_out.text)
    # a follow-up keeps what the conversation's SQL used
    used = linking.union(run.usage(pseudo), *(run.usage(Sql(turn.sql, run.dialect)) for turn in run.context))
    run.emit(Stage.PSEUDO, one_line(pseudo.text) if pseudo else "no SQL in the reply", raw=ts_out.text,
             artifact=pseudo.text if pseudo else None, accepted=pseudo is not None, completion=ts_out,
             seconds=seconds / 2)
    keep = linking.with_matched(linking.reduced_keep(run.schema, linked, used), run.matched)
    bridged = set(keep) - set(linked) - set(used) if linked or used else set()  # else: the whole schema
    run.emit(Stage.MERGE, f"{len(keep)} of {len(run.schema.tables)} tables kept"
             + (f" (+{', '.join(sorted(bridged))} to join them)" if bridged else ""),
             artifact=_listed(keep), accepted=True)
    return keep, pseudo


def generate(run: QuestionRun, schema_text: str, *, draft: Sql | None) -> tuple[Sql | None, str]:
    """Step 3: the generated SQL (None when the reply has none) and the reply itself."""
    run.starting(Stage.TS, "generation")
    request = prompts.ts_prompt(schema_text, run.dialect, run.question, run.hint, run.examples, run.context)
    out = run.call(request, draft=draft.text if draft else None)
    sql = run.extract(out.text)
    run.emit(Stage.TS, one_line(sql.text) if sql else "no SQL in the reply", raw=out.text,
             artifact=sql.text if sql else None, accepted=sql is not None, completion=out)
    return sql, out.text


def fall_back_to_pseudo(run: QuestionRun, pseudo: Sql, weak: Trial) -> Trial:
    """The generation on the reduced schema failed or returned nothing; the pseudo-SQL, written on
    the full schema, is a second candidate that costs one trial run and no model call. It is taken
    if it runs where the candidate failed, or returns rows where the candidate returned none."""
    second = run.trial(pseudo, "pseudo-SQL")
    taken = second.ran and (not weak.ran or not second.empty_or_failed)
    why = f"the candidate fails: {weak.error}" if not weak.ran else "the candidate returns no rows"
    run.emit(Stage.FALLBACK, "the pseudo-SQL replaces the candidate" if taken
             else "the pseudo-SQL does no better; the candidate stays", artifact=pseudo.text, accepted=taken,
             reason=why)
    return second if taken else weak


def repair(run: QuestionRun, trial: Trial, *, label: str = "candidate", row_limit: int | None = None,
           quiet: bool = False) -> Trial:
    """With `repair`: a failing candidate's unknown tables and columns renamed to the schema's closest
    (routesh/sql/repair.py) and, on PostgreSQL, other dialects' syntax rewritten (routesh/sql/dialect.py),
    each rewrite with its names repaired too; the first repaired SQL that executes is taken. Then the
    mistakes of SQL that runs are fixed (routesh/sql/mistakes.py), taken if the fixed SQL executes.
    `quiet` leaves the events to the caller (the vote reports its candidates' repairs at once)."""
    if not run.options.stages.repair:
        return trial
    if not trial.ran:
        trial = _first_that_runs(run, trial, _repairs(trial, run), label, row_limit, quiet)
    if trial.ran and (fix := fix_mistakes(trial.query, run.dialect, run.schema)):
        trial = _first_that_runs(run, trial, [fix], label, row_limit, quiet)
    return trial


def _first_that_runs(run: QuestionRun, trial: Trial, fixes: list[Repaired], label: str, row_limit: int | None,
                     quiet: bool) -> Trial:
    """Run each fix in turn; the first that executes replaces the trial (its repairs added to the trial's)."""
    attempt, fix = trial, None
    for fix in fixes:
        run.cancel.check()
        attempt = replace(run_trial(run.database, Sql(fix.sql, run.dialect),
                                    row_limit=row_limit or run.options.preview_rows, timeout=run.options.timeout),
                          repairs=trial.repairs + fix.renames)
        if attempt.ran:
            break
    if fix is not None and not quiet:  # the repair taken, or the last one tried
        run.emit(Stage.REPAIR, f"{label}: {fix.summary()}" if attempt.ran else f"{label}: {fix.summary()} still fails",
                 artifact=fix.sql, accepted=attempt.ran,
                 reason="the repaired SQL executes" if attempt.ran else f"it fails: {attempt.error}")
    return attempt if attempt.ran else trial


def _repairs(trial: Trial, run: QuestionRun) -> list[Repaired]:
    """The repairs to try in turn: the column the database's error suggests (PostgreSQL's "Perhaps you
    meant ..."), the names alone, then (PostgreSQL) each dialect rewrite with its names repaired as well
    (a misspelt column inside strftime() needs both)."""
    sql = trial.query
    out = [fix for fix in (follow_database_hint(sql, run.dialect, trial.error),
                           repair_names(sql, run.dialect, run.schema)) if fix]
    for rewrite in postgres_rewrites(sql) if run.dialect == "postgres" else []:
        renamed = repair_names(rewrite.sql, run.dialect, run.schema)
        out.append(Repaired(renamed.sql, rewrite.renames + renamed.renames) if renamed else rewrite)
    return out[:_MOST_REPAIRS]


def correct(run: QuestionRun, schema_text: str, trial: Trial) -> Trial:
    """Step 4: noise correction told the execution feedback; a proposed fix is taken only if it runs."""
    run.starting(Stage.NC, "noise correction")
    feedback = run.feedback(trial)
    request = prompts.nc_prompt(schema_text, run.dialect, run.question, trial.sql, feedback, run.hint, run.context)
    out = run.call(request, draft=trial.sql)
    verdict = prompts.parse_nc_verdict(out.text)
    fixed = run.extract(out.text) if verdict is not True else None
    if fixed is None or same_sql(fixed.text, trial.sql):
        why = "the model judged it correct" if verdict else "no different SQL proposed"
        run.emit(Stage.NC, why, raw=out.text, artifact=feedback, accepted=False, reason=why, completion=out)
        return trial
    proposal = repair(run, run.trial(fixed, "correction"), label="correction")
    if proposal.ran:
        run.emit(Stage.NC, f"corrected: {one_line(fixed.text)}", raw=out.text, artifact=fixed.text, accepted=True,
                 reason="the correction executes", completion=out)
        return proposal
    run.emit(Stage.NC, "correction rejected", raw=out.text, artifact=fixed.text, accepted=False,
             reason=f"the correction fails: {proposal.error}", completion=out)
    return trial


def continue_writing(run: QuestionRun, schema_text: str, trial: Trial) -> Trial:
    """Step 5, when the SQL fails or is hard: complete a clause-boundary prefix of it; the completion is
    taken only if it runs and returns rows. A follow-up (asked after earlier turns) is completed only when
    its SQL fails: on SParC's tuning turns, completions of hard follow-up SQL that ran turned 8 of 21 right
    answers wrong and none of 29 wrong ones right (docs/benchmarks.md)."""
    hard = trial.ran and not run.context and _is_hard(trial.query)
    if trial.ran and not hard:
        return trial
    prefix = truncate(trial.query, run.dialect, fraction=run.options.cw_fraction)
    if not prefix.strip():
        return trial
    run.starting(Stage.CW, "continuation writing")
    request = prompts.cw_prompt(schema_text, run.dialect, run.question, prefix, run.hint, run.context)
    out = run.call(request, draft=trial.sql)
    completed = run.extract(out.text)
    trigger = "the SQL is hard" if trial.ran else "the SQL fails"
    if completed is None:
        run.emit(Stage.CW, "no SQL in the reply", raw=out.text, artifact=prefix, accepted=False,
                 reason=trigger, completion=out)
        return trial
    attempt = repair(run, run.trial(completed, "continuation"), label="continuation")
    taken = attempt.ran and attempt.result is not None and bool(attempt.result.rows)
    why = "it executes and returns rows" if taken else (
        f"it fails: {attempt.error}" if not attempt.ran else "it returns no rows")
    run.emit(Stage.CW, f"from “{one_line(prefix)}”: {one_line(completed.text)}", raw=out.text, artifact=completed.text,
             accepted=taken, reason=f"{trigger}; {why}", completion=out)
    return attempt if taken else trial


def no_sql_reason(reply: str) -> str:
    if says_cannot_answer(reply):
        return f"the model says this database cannot answer it: {one_line(reply)[:200]}"
    return "the model wrote no SQL"


def _is_hard(sql: Sql) -> bool:
    """ROUTE's trigger for continuation writing; SQL the database ran but sqlglot cannot read is
    treated as not hard (nothing to cut it at reliably)."""
    try:
        return hardness(sql, sql.dialect).is_hard
    except ValueError:
        return False


def _listed(keep: ReducedSchema) -> dict[str, list[str]]:
    return {t: sorted(c) for t, c in keep.items()}


def _columns_summary(linked: ReducedSchema) -> str:
    return "; ".join(f"{t}({', '.join(sorted(c))})" for t, c in linked.items())
