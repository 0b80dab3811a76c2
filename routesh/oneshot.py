"""`routesh DSN -e TEXT`: one question (or one SQL statement) from the command line or stdin.

The SQL goes to stdout; it runs only with --yes, and then the result follows it. Progress and notices
go to stderr so that `-e ... > out.sql` captures just the SQL. Exit codes as DESIGN.md: 4 when the
pipeline abstains, with its reason on stderr.
"""

from __future__ import annotations

import contextlib
import sys

from routesh.cancel import CancelToken
from routesh.db import Database, ExecOptions
from routesh.db.cancellable import run_cancellable
from routesh.errors import Abstained, UsageError
from routesh.pipeline.options import SCHEMA_SAMPLES, PipelineOptions
from routesh.pipeline.pipeline import Pipeline
from routesh.pipeline.stages import Answer, StageConfig, StageEvent, Starting


def run_text(db: Database, text: str, *, run: bool, fmt: str, options: ExecOptions, model: str | None,
             backend: str, stages: StageConfig) -> int:
    from routesh.cli import run_one
    from routesh.sql.classify import classify, is_command

    text = text.strip()
    if is_command(text):
        raise UsageError("-e takes a question or a SQL statement, not a shell command")
    schema = db.introspect(samples=SCHEMA_SAMPLES)
    if classify(text, schema, db.dialect).kind == "sql":
        return run_one(db, text, run=run, fmt=fmt, options=options)
    answer = _ask(db, schema, text, model=model, backend=backend, stages=stages)
    if answer.abstained:
        raise Abstained(f"no SQL: {answer.reason}")
    return run_one(db, answer.sql or "", run=run, fmt=fmt, options=options)


def _ask(db: Database, schema, question: str, *, model: str | None, backend: str, stages: StageConfig) -> Answer:  # noqa: ANN001
    from routesh.engine import load_engine

    with contextlib.redirect_stdout(sys.stderr):  # libraries that print while loading must not mix into the SQL
        engine = load_engine(model, backend=backend)
    token = CancelToken()
    token.on_cancel(engine.cancel)
    token.on_cancel(db.cancel)

    def progress(event: StageEvent | Starting) -> None:
        if isinstance(event, Starting):
            print(f"routesh: {event.label}…", file=sys.stderr, flush=True)

    try:
        pipeline = Pipeline(engine, db, schema, options=PipelineOptions(stages=stages))
        # Ctrl-C: stop the model and the database, give them 5 s, then leave as an interrupt (exit 130)
        return run_cancellable(lambda: pipeline.ask(question, cancel=token, on_event=progress), cancel=token.cancel,
                               when_cancelled=lambda err: KeyboardInterrupt(), grace=5, name="routesh-ask")
    finally:
        engine.close()
