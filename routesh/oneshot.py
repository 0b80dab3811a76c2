"""`routesh DSN -e TEXT`: one question (or one SQL statement) from the command line or stdin.

The SQL goes to stdout; it runs only with --yes, and then the result follows it. Progress and notices
go to stderr so that `-e ... > out.sql` captures just the SQL. Exit codes as DESIGN.md: 4 when the
pipeline abstains, with its reason on stderr.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from collections.abc import Sequence

from routesh.cancel import CancelToken
from routesh.conversation import Turn
from routesh.db import Database
from routesh.db.cancellable import execute_cancellable, run_cancellable
from routesh.errors import Abstained, QueryError, UsageError
from routesh.pipeline.options import SCHEMA_SAMPLES, PipelineOptions
from routesh.pipeline.stages import Answer, StageEvent, Starting
from routesh.render import STREAMED_FORMATS, footer, render, row_writer, stopped_part_way
from routesh.settings import Settings
from routesh.sql import guard
from routesh.sql.classify import classify, is_command


def run_text(db: Database, text: str, *, run: bool, settings: Settings, context: Sequence[Turn] = ()) -> int:
    """A question (asked after `context`, the conversation it follows) or one SQL statement."""
    text = text.strip()
    if is_command(text):
        raise UsageError("-e takes a question or a SQL statement, not a shell command")
    schema = db.introspect(samples=SCHEMA_SAMPLES)
    if classify(text, schema, db.dialect).kind == "sql":
        return run_one(db, text, run=run, settings=settings)
    if context:
        _notice(f"asked as a follow-up to {len(context)} earlier question{'s' if len(context) != 1 else ''} "
                f"(--context; the pipeline uses the last {PipelineOptions.context_turns})")
    answer = _ask(db, schema, text, settings, context)
    if answer.abstained:
        raise Abstained(f"no SQL: {answer.reason}")
    if answer.agreement:
        _notice(f"{answer.agreement}" + (" — check this SQL" if answer.agreement.low else ""))
    return run_one(db, answer.sql or "", run=run, settings=settings)


def run_one(db: Database, sql: str, *, run: bool, settings: Settings) -> int:
    """The one-shot contract: check, print the SQL, and run it only when asked."""
    sql, fmt, options = sql.strip(), settings.format, settings.options
    guard.check(sql, db.dialect, writes_allowed=db.writes_allowed)  # refused → exit 2 before anything runs
    if not run:
        print(sql)
        _notice("not run: add --yes to run it")
        return 0
    print(sql, file=sys.stderr)
    if fmt not in STREAMED_FORMATS:  # a chart draws every row at once: at most the screen's limit of them
        applied = options.for_screen()
        result = execute_cancellable(db, sql, options=applied, guard=False)
        sys.stdout.write(render(result, fmt, width=shutil.get_terminal_size().columns))
        if result.truncated:
            _notice(footer(result, row_limit=applied.row_limit, screen_limit=not options.row_limit))
        return 0
    on_screen = sys.stdout.isatty()  # the row limit's 0 ("no limit") is for files and pipes only
    applied = options.for_screen() if on_screen else options
    writer = row_writer(fmt, sys.stdout)
    with stopped_part_way(writer, "before it stopped"):  # rows stream to stdout as they are fetched
        result = execute_cancellable(db, sql, options=applied, guard=False, sink=writer)  # guard checked above
    writer.finish()
    note = footer(result, row_limit=applied.row_limit, widths_from=writer.widths_from,
                  screen_limit=on_screen and not options.row_limit)
    if fmt == "table":
        print(note)
    elif result.truncated:
        _notice(note)
    return 0


def _notice(message: str) -> None:
    print(f"routesh: {message}", file=sys.stderr)


def _ask(db: Database, schema, question: str, settings: Settings, context: Sequence[Turn]) -> Answer:  # noqa: ANN001
    # imported here, not at the top: a statement run with --sql (an export) starts without the pipeline's modules
    from routesh.engine import load_engine
    from routesh.memory import QueryMemory, schema_fingerprint
    from routesh.pipeline.pipeline import Pipeline

    with contextlib.redirect_stdout(sys.stderr):  # libraries that print while loading must not mix into the SQL
        engine = load_engine(settings.model, backend=settings.backend)
    token = CancelToken()  # the pipeline hands it to the engine with every model call
    token.on_cancel(db.cancel)

    def progress(event: StageEvent | Starting) -> None:
        if isinstance(event, Starting):
            print(f"routesh: {event.label}…", file=sys.stderr, flush=True)

    try:
        memory = QueryMemory().for_schema(schema_fingerprint(schema)) if settings.memory else None  # the shell's
        pipeline = Pipeline(engine, db, schema, options=PipelineOptions(stages=settings.stages), examples=memory)
        # Ctrl-C: stop the model and the database, give them 5 s, then leave as an interrupt (exit 130)
        return run_cancellable(lambda: pipeline.ask(question, cancel=token, on_event=progress, context=context),
                               cancel=token.cancel, when_cancelled=lambda err: KeyboardInterrupt(), grace=5,
                               name="routesh-ask")
    finally:
        engine.close()
