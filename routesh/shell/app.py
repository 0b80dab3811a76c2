"""The interactive shell: read a line, decide what it is (command, SQL, question), do it, repeat.

A question goes through the pipeline on a worker thread behind a spinner (Ctrl-C cancels it); the SQL
it produces waits, formatted and highlighted, in the prompt's buffer: Enter runs it, editing changes it,
Ctrl-C drops it. SQL typed by the user runs directly, read-only unless `\\write on`. The prompt is ready
before the model has loaded: loading starts with the first prompt, on a background thread.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import TextIO

import platformdirs
from prompt_toolkit import PromptSession
from prompt_toolkit.filters import Condition
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.history import FileHistory
from prompt_toolkit.key_binding import KeyBindings
from prompt_toolkit.lexers import PygmentsLexer
from prompt_toolkit.styles import Style, merge_styles, style_from_pygments_cls
from pygments.lexers.sql import PostgresLexer, SqlLexer
from pygments.styles import get_style_by_name

from routesh.cancel import CancelToken
from routesh.db import Database, Result
from routesh.db.base import ExecOptions, RowSink
from routesh.errors import Cancelled, ConnectionLost, QueryError, RoutesError, UsageError
from routesh.pipeline.options import PipelineOptions
from routesh.pipeline.pipeline import Pipeline
from routesh.pipeline.stages import REVISING, Answer, StageEvent, Starting
from routesh.memory import QueryMemory
from routesh.render import STREAMED_FORMATS, footer, render, row_writer, stopped_part_way, widest_line
from routesh.settings import Settings
from routesh.shell import commands
from routesh.shell.busy import BusyView
from routesh.shell.completer import SqlCompleter
from routesh.shell.modelload import ModelLoader
from routesh.shell.output import Output
from routesh.shell.session import ShellSession
from routesh.shell.stagesview import event_line
from routesh.shell.toolbar import toolbar
from routesh.sql.classify import classify, is_command, ready_to_submit, starts_like_sql
from routesh.sql.dialect import pretty_sql

_UI_STYLE = Style.from_dict({
    "prompt": "bold ansigreen", "prompt.run": "bold ansiyellow", "continuation": "ansigray",
    "error": "ansired", "warning": "ansiyellow", "info": "ansigray", "spinner": "ansicyan",
    "bottom-toolbar": "noreverse bg:#303030 #d0d0d0", "bottom-toolbar.model": "bg:#303030 #87afff",
    "bottom-toolbar.ro": "bg:#303030 #5fd75f bold", "bottom-toolbar.rw": "bg:#af0000 #ffffff bold",
    "bottom-toolbar.busy": "bg:#303030 #ffd75f",
    "stage.ok": "ansigreen bold", "stage.no": "ansired bold", "stage.info": "ansigray",
    "stage.name": "ansicyan", "stage.text": "", "stage.cost": "ansigray", "stage.title": "bold",
    "stage.raw": "ansigray", "stage.artifact": "ansiblue",
})
_WRITE_WORDS = ("insert", "update", "delete", "create", "drop", "alter", "replace", "truncate", "grant", "revoke")


def run_shell(db: Database, settings: Settings) -> int:
    if not sys.stdin.isatty() or not sys.stdout.isatty():
        print("routesh: the shell needs a terminal; use -e TEXT (or --sql SQL) for one-shot use", file=sys.stderr)
        return 1
    style = merge_styles([style_from_pygments_cls(get_style_by_name(settings.style)), _UI_STYLE])
    session = ShellSession(
        db=db, model=ModelLoader(settings.model, settings.backend), style=style, output=Output(settings.pager),
        options=settings.options, fmt=settings.format, expanded=settings.expanded, timing=settings.timing,
        stages=settings.stages, show_stages=settings.show_stages, named_queries=dict(settings.named_queries),
        memory=QueryMemory() if settings.memory else None,
    )
    session.completer = SqlCompleter(db.dialect, commands.names())
    if settings.warning:
        session.say(settings.warning, "class:warning")
    session.refresh_schema()
    prompt = _build_prompt(session, vi_mode=settings.key_bindings == "vi")
    confirm: PromptSession = PromptSession(style=style)  # its own, so confirmations stay out of the history
    session.read_line = lambda message: confirm.prompt(message)
    session.say(f"routesh on {session.database_name}, read-only. Ask a question, or type SQL ending with ';'. "
                "\\? for help, \\q to quit.", "class:info")
    try:
        return _loop(session, prompt)
    finally:
        session.output.close()
        session.model.close()
        if session.memory is not None:
            session.memory.close()


def _loop(session: ShellSession, prompt: PromptSession) -> int:
    first = True
    while True:
        confirming = bool(session.prefill)
        message = [("class:prompt.run", "run> ")] if confirming else [("class:prompt", f"{_prompt_name(session)}> ")]
        try:
            text = prompt.prompt(message, default=session.prefill,
                                 pre_run=session.model.start if first else None)
        except KeyboardInterrupt:
            if confirming:
                session.say("Dropped.", "class:info")
            session.prefill = ""
            continue
        except EOFError:
            return 0
        finally:
            first = False
        session.prefill = ""
        answering, session.prefilled_question = session.prefilled_question if confirming else None, None
        if not text.strip():
            continue
        try:
            if not _handle(session, text, confirming=confirming, answering=answering):
                return 0
        except KeyboardInterrupt:  # while printing: drop the rest, keep the shell
            session.say("Cancelled.", "class:info")


def _handle(session: ShellSession, text: str, *, confirming: bool = False, answering: str | None = None) -> bool:
    """Do what a submitted text says; False means quit. `answering`: the question whose generated SQL was at the
    prompt, remembered with the SQL that ran (as it was, or as the user edited it)."""
    try:
        if is_command(text) or commands.find(text):
            return _command(session, text)
        kind = classify(text, session.schema(wait=False), session.db.dialect)
        # generated SQL the user accepted (or edited) stays SQL, even if its tables are misspelt now
        if kind.kind == "sql" or (confirming and starts_like_sql(text)):
            result = run_sql(session, text)
            if result is not None and answering:  # what the user ran for the question: a turn, and remembered
                if not session.conversation.turns:  # unless a follow-up: "only those in Lyon" means nothing alone
                    remember(session, answering, text)
                session.conversation.add(answering, text, result.columns)
        else:
            if kind.note:
                session.say(f"(asking the model: {kind.note}; use \\sql to run it as SQL)", "class:info")
            ask(session, text.strip())
    except RoutesError as err:
        session.error(_error_line(err))
    return True


def _command(session: ShellSession, text: str) -> bool:
    found = commands.find(text)
    if found is None:
        session.error(f"unknown command: {text.split()[0]} (\\? lists the commands)")
        return True
    command, args, plus = found
    outcome = command.handler(session, args, plus)
    if outcome is None:
        return True
    if outcome.quit:
        return False
    for statement in outcome.sql:
        run_sql(session, statement)
    if outcome.question:
        ask(session, outcome.question)
    if outcome.prefill is not None:
        session.prefill, session.prefilled_question = outcome.prefill, None
    return True


# ---- questions ----------------------------------------------------------------------------------------


def ask(session: ShellSession, question: str) -> Answer | None:
    session.last_question = question
    context = session.conversation.ask_with(question)  # a question of its own starts a new topic
    token = CancelToken()
    token.on_cancel(session.db.cancel)

    def work(view: BusyView) -> Answer:
        engine = session.model.wait(0)
        if engine is None:
            view.set_label(f"waiting for the model to load ({session.model.name})")
            while engine is None:
                token.check()
                _show_notices(session, view)  # a first use says it is converting, as it happens
                engine = session.model.wait(0.2)
        _show_notices(session, view)
        token.check()  # from here the pipeline hands the token to the engine with every model call
        view.set_label("reading the schema")
        schema = session.schema()

        def report(event: StageEvent | Starting) -> None:
            if isinstance(event, Starting):
                session.running = event.label
                view.set_label(event.label)
            elif session.show_stages:
                view.add_line(event_line(event))

        pipeline = Pipeline(engine, session.db, schema, options=PipelineOptions(stages=session.stages),
                            value_index=session.value_index(schema), examples=session.schema_memory(schema))
        with session.db_lock:
            return pipeline.ask(question, cancel=token, on_event=report, context=context)

    try:
        answer = BusyView(work, cancel=token.cancel, toolbar=lambda: toolbar(session), style=session.style,
                          replay_enter=False).run()  # typed text waits at run>, but its Enter never runs the SQL
    except Cancelled:
        session.say("Cancelled.", "class:info")
        return None
    finally:
        session.running = ""
    if token.cancelled:  # Ctrl-C after the last step that checks for it: the user still said stop
        session.say("Cancelled.", "class:info")
        return None
    session.last_answer = answer
    if answer.abstained:
        session.say(f"No SQL: {answer.reason}", "class:warning")
        return answer
    session.last_sql = answer.sql
    session.prefill = pretty_sql(answer.sql or "", session.db.dialect)
    session.prefilled_question = question
    session.say(f"{_answer_note(answer)} Enter runs it, editing changes it, Ctrl-C drops it.", "class:info")
    if answer.agreement and answer.agreement.low:  # the pipeline itself is unsure: say so before it runs
        session.say(f"{answer.agreement} — check this SQL.", "class:warning")
    return answer


def _prompt_name(session: ShellSession) -> str:
    """`demo.sqlite>`, or `demo.sqlite (2)>` while a conversation of two turns goes on (\\new ends it)."""
    turns = len(session.conversation)
    return f"{session.database_name} ({turns})" if turns else session.database_name


def remember(session: ShellSession, question: str, sql: str) -> None:
    """Keep (question, SQL) for later questions on this schema, and say so in one line."""
    memory = session.schema_memory()
    if memory is None:
        return
    kept = memory.remember(question, sql, session.database_name)
    session.say(f"Remembered as #{kept.id} (\\memory lists them, \\forget {kept.id} drops it).", "class:info")


def _show_notices(session: ShellSession, view: BusyView) -> None:
    for notice in session.model.take_notices():
        view.add_line(FormattedText([("class:info", notice)]))


def _answer_note(answer: Answer) -> str:
    taken = [e.stage for e in answer.events if e.stage in REVISING and e.accepted]
    how = f" (revised by {', '.join(taken)})" if taken else ""
    sure = f"; {answer.agreement}" if answer.agreement and not answer.agreement.low else ""
    return f"SQL ready in {answer.seconds:.1f} s{how}{sure}."


# ---- SQL ----------------------------------------------------------------------------------------------


def run_sql(session: ShellSession, sql: str) -> Result | None:
    sql = sql.strip()
    session.last_sql = sql
    if session.output.file is not None and session.fmt in STREAMED_FORMATS:
        session.last_result = None
        return _run_to_file(session, sql, session.output.file)
    options = session.options.for_screen()
    result = _execute(session, sql, options)
    if result is None:
        return None
    session.last_result = result
    text = _shown(session, result)
    note = footer(result, row_limit=options.row_limit, timing=session.timing,
                  screen_limit=not session.options.row_limit)
    session.output.results(text + note + "\n")
    _after(session, sql)
    return result


def _shown(session: ShellSession, result: Result) -> str:
    width = shutil.get_terminal_size().columns
    if session.fmt == "chart":
        try:
            return render(result, "chart", width=width)
        except UsageError as err:  # not something to draw: the table, and why
            session.say(f"{err}; shown as a table.", "class:warning")
            return render(result, "table")
    text = render(result, session.fmt, expanded=session.expanded == "on")
    if session.expanded == "auto" and session.fmt == "table" and widest_line(text) > width:
        text = render(result, session.fmt, expanded=True)
    return text


def _run_to_file(session: ShellSession, sql: str, out: TextIO) -> Result | None:
    """\\o FILE: the rows stream into the file as they are fetched (no screen limit: row_limit 0 is every row);
    the screen says how many went there."""
    writer = row_writer(session.fmt, out, expanded=session.expanded == "on")
    with stopped_part_way(writer, f"to {session.output.file_name}"):
        result = _execute(session, sql, session.options, sink=writer)
    if result is None:
        return None
    writer.finish()
    note = footer(result, row_limit=session.options.row_limit, timing=session.timing, widths_from=writer.widths_from)
    if session.fmt == "table":
        out.write(note + "\n")
        out.flush()
    where = f"{result.row_count} row{'s' if result.row_count != 1 else ''} written to {session.output.file_name}"
    if result.truncated:
        session.say(f"{where}; {note}", "class:warning")
    else:
        session.say(f"{where}.", "class:info")
    _after(session, sql)
    return result


def _execute(session: ShellSession, sql: str, options: ExecOptions, sink: RowSink | None = None) -> Result | None:
    def work(view: BusyView) -> Result:
        view.set_label("running the statement")
        session.running = "query"
        with session.db_lock:
            return session.db.execute(sql, options=options, sink=sink)

    try:
        return BusyView(work, cancel=session.db.cancel, toolbar=lambda: toolbar(session), style=session.style).run()
    except ConnectionLost as err:  # its message already says that the next statement reconnects
        session.error(f"ERROR: {err}")
        return None
    finally:
        session.running = ""


def _after(session: ShellSession, sql: str) -> None:
    if session.db.writes_allowed and sql.lstrip().lower().startswith(_WRITE_WORDS):
        session.refresh_schema()  # DDL or data changed: names for completion, samples for prompts


def _error_line(err: RoutesError) -> str:
    return f"ERROR: {err}"


# ---- the prompt ---------------------------------------------------------------------------------------


def _build_prompt(session: ShellSession, *, vi_mode: bool) -> PromptSession:
    keys = KeyBindings()

    @keys.add("enter", filter=Condition(lambda: True))
    def _(event) -> None:  # noqa: ANN001
        buffer = event.current_buffer
        if buffer.complete_state and buffer.complete_state.current_completion is not None:
            buffer.apply_completion(buffer.complete_state.current_completion)
            return
        if session.prefill or ready_to_submit(buffer.text):
            buffer.validate_and_handle()
        else:
            buffer.insert_text("\n")

    @keys.add("escape", "enter")
    def _(event) -> None:  # noqa: ANN001 - Alt-Enter submits whatever is there
        event.current_buffer.validate_and_handle()

    typing_code = Condition(lambda: _typing_code(prompt.default_buffer.text))
    lexer = PygmentsLexer(PostgresLexer if session.db.dialect == "postgres" else SqlLexer)
    prompt: PromptSession = PromptSession(
        history=FileHistory(str(_history_file())), lexer=lexer, completer=session.completer,  # type: ignore[arg-type]
        complete_while_typing=typing_code, bottom_toolbar=lambda: toolbar(session), style=session.style,
        multiline=True, key_bindings=keys, vi_mode=vi_mode,
        prompt_continuation=lambda width, line, wrap: [("class:continuation", "...> ".rjust(width))],
        refresh_interval=0.5, include_default_pygments_style=False,
    )
    return prompt


def _typing_code(text: str) -> bool:
    """Pop completions while typing SQL or a command, not while typing an English question."""
    return is_command(text) or starts_like_sql(text)


def _history_file() -> Path:
    directory = Path(platformdirs.user_data_dir("routesh"))
    directory.mkdir(parents=True, exist_ok=True)
    return directory / "history"
