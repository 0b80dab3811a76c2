"""The backslash (and SQLite dot) commands, as one declarative registry: each entry names itself, says
how it is used and what it does (that is what `\\?` prints), and points at a handler.

A handler gets the session, the text after the command, and whether `+` was appended; it prints what it
has to say and returns an Outcome when the shell must do more (run SQL, ask a question, pre-fill the
prompt, quit). Handlers never touch the prompt themselves: that keeps them testable without a terminal.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from routesh import config as config_file
from routesh.chart import chart
from routesh.errors import UsageError
from routesh.memory import QueryMemory, SchemaMemory
from routesh.pipeline.stages import StageConfig
from routesh.render import FORMATS
from routesh.shell import describe
from routesh.shell.modelload import ModelLoader
from routesh.shell.session import ShellSession
from routesh.shell.stagesview import trace
from routesh.sql.split import split_statements


@dataclass(frozen=True)
class Outcome:
    quit: bool = False
    sql: tuple[str, ...] = ()  # statements to run, in order, as if typed (guard included)
    question: str | None = None  # to put through the pipeline
    prefill: str | None = None  # text for the next prompt's buffer


Handler = Callable[[ShellSession, str, bool], "Outcome | None"]


@dataclass(frozen=True)
class Command:
    names: tuple[str, ...]  # the first is the one \? shows
    usage: str  # arguments, as \? shows them
    help: str
    handler: Handler
    plus: bool = False  # accepts a trailing + (more detail), like psql's \dt+


# ---- handlers ---------------------------------------------------------------------------------------


def _help(session: ShellSession, args: str, plus: bool) -> None:
    session.output.results(help_text())


def _quit(session: ShellSession, args: str, plus: bool) -> Outcome:
    return Outcome(quit=True)


def _list(session: ShellSession, args: str, plus: bool) -> None:
    session.output.results(describe.list_tables(_schema(session), plus=plus, pattern=args or None))


def _describe(session: ShellSession, args: str, plus: bool) -> None:
    schema = _schema(session)
    if not args:
        session.output.results(describe.describe_all(schema, plus=plus))
    else:
        session.output.results(describe.describe_table(schema, args, plus=plus))


def _ddl(session: ShellSession, args: str, plus: bool) -> None:
    session.output.results(describe.schema_ddl(_schema(session), args or None))


def _conninfo(session: ShellSession, args: str, plus: bool) -> None:
    session.say(describe.conninfo(session.db.info, writes_allowed=session.db.writes_allowed))


def _expanded(session: ShellSession, args: str, plus: bool) -> None:
    if args not in ("", "on", "off", "auto"):
        raise UsageError("\\x takes on, off or auto")
    session.expanded = args or ("off" if session.expanded == "on" else "on")
    session.say(f"Expanded display is {session.expanded}.")


def _timing(session: ShellSession, args: str, plus: bool) -> None:
    session.timing = _switch(args, session.timing, "\\timing")
    session.say(f"Timing is {'on' if session.timing else 'off'}.")


def _format(session: ShellSession, args: str, plus: bool) -> None:
    if not args:
        session.say(f"Output format is {session.fmt} (choose from {', '.join(FORMATS)}).")
        return
    if args not in FORMATS:
        raise UsageError(f"unknown format {args!r}; choose one of {', '.join(FORMATS)}")
    session.fmt = args
    session.say(f"Output format is {args}.")


def _chart(session: ShellSession, args: str, plus: bool) -> None:
    if session.last_result is None:
        raise UsageError("no result to chart yet: run a query first (results sent to a \\o file are not kept)")
    session.output.results(chart(session.last_result, width=shutil.get_terminal_size().columns,
                                 value=args or None))


def _out(session: ShellSession, args: str, plus: bool) -> None:
    session.say(session.output.to_file(args or None))


def _include(session: ShellSession, args: str, plus: bool) -> Outcome:
    if not args:
        raise UsageError("\\i needs a file name")
    path = Path(args).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        statements = split_statements(text, session.db.dialect)
    except Exception as err:  # an unterminated string or comment
        raise UsageError(f"cannot split the file into statements: {err}") from None
    if not statements:
        raise UsageError(f"{path} holds no SQL statement")
    return Outcome(sql=tuple(statements))


def _edit(session: ShellSession, args: str, plus: bool) -> Outcome:
    start = session.prefill or session.last_sql or ""
    edited = edit_in_editor(start)
    return Outcome(prefill=edited.strip())


def _named(session: ShellSession, args: str, plus: bool) -> Outcome | None:
    queries = session.named_queries
    if not args:
        if not queries:
            session.say("No named queries. Save one with \\n NAME SQL.")
        for name, sql in sorted(queries.items()):
            session.say(f"{name}: {' '.join(sql.split())}")
        return None
    name, _, sql = args.partition(" ")
    if sql.strip():
        config_file.save_named_query(name, sql.strip())
        queries[name] = sql.strip()
        session.say(f"Saved {name}.")
        return None
    if name not in queries:
        raise UsageError(f"no named query {name!r}" + (f"; known: {', '.join(sorted(queries))}" if queries else ""))
    return Outcome(prefill=queries[name])


def _named_delete(session: ShellSession, args: str, plus: bool) -> None:
    if not args:
        raise UsageError("\\nd needs the name of a saved query")
    if not config_file.delete_named_query(args):
        raise UsageError(f"no named query {args!r}")
    session.named_queries.pop(args, None)
    session.say(f"Deleted {args}.")


def _pager(session: ShellSession, args: str, plus: bool) -> None:
    if not args:
        args = "off" if session.output.pager != "off" else "auto"
    session.output.pager = args
    session.say({"off": "Pager is off.", "auto": "Pager is used for output that does not fit the screen.",
                 "on": "Pager is always used."}.get(args, f"Pager is {args}."))


def _model(session: ShellSession, args: str, plus: bool) -> None:
    if not args:
        state = session.model.state
        session.say(f"Model: {session.model.label()}" + (f" — {session.model.error}" if state == "failed" else ""))
        for notice in session.model.take_notices():
            session.say(notice, "class:warning")
        return
    old = session.model
    session.model = ModelLoader(args, old.backend)
    session.model.start()
    old.close()
    session.say(f"Loading {args} in the background; questions wait for it.")


def _write(session: ShellSession, args: str, plus: bool) -> None:
    if args not in ("on", "off"):
        raise UsageError("\\write takes on or off")
    if args == "off":
        session.db.set_writes(False)
        session.say("Read-only again.")
        return
    if session.db.writes_allowed:
        session.say("Writes are already allowed.")
        return
    name = session.database_name
    typed = session.read_line(f"Allow INSERT, UPDATE, DELETE and DDL on {name}? Type the database name to confirm: ")
    if typed.strip() != name:
        session.say("Not confirmed; still read-only.")
        return
    session.db.set_writes(True)
    session.say(f"Writes allowed on {name} until \\write off. Each statement still shows before it runs.",
                "class:warning")


def _stages(session: ShellSession, args: str, plus: bool) -> None:
    words = args.split()
    if words[:1] == ["use"] and len(words) == 2:
        try:
            session.stages = StageConfig.parse(words[1])
        except ValueError as err:
            raise UsageError(str(err)) from None
        session.say(f"Pipeline stages: {session.stages.label()}.")
        return
    if len(words) > 1 or (words and words[0] not in ("on", "off")):
        raise UsageError("\\stages takes on, off, or use STAGES (e.g. use ts, use sl,nc,cw, use all)")
    session.show_stages = _switch(args, session.show_stages, "\\stages")
    session.say(f"Stages view is {'on' if session.show_stages else 'off'} (pipeline: {session.stages.label()}).")


def _memory(session: ShellSession, args: str, plus: bool) -> None:
    if args:
        if args not in ("on", "off"):
            raise UsageError("\\memory takes on or off, or nothing to list the remembered queries")
        if args == "on":
            session.memory = session.memory or QueryMemory()
        elif session.memory is not None:
            session.memory.close()
            session.memory = None
        session.say(f"Memory is {args} for this session (memory = {'true' if args == 'on' else 'false'} in "
                    "config.toml keeps it so).")
        return
    memory = _schema_memory(session)
    entries = memory.entries()
    if not entries:
        session.say("Nothing remembered for this schema yet: a question whose SQL you run is kept "
                    "(\\remember QUESTION keeps the last SQL under a question of your own).")
        return
    session.say(f"{len(entries)} remembered for this schema ({memory.path}):")
    for entry in entries:
        session.say(f"{entry.id:>4}  {entry.question}", "class:info")
        session.say(f"      {' '.join(entry.sql.split())}")


def _forget(session: ShellSession, args: str, plus: bool) -> None:
    if not args.isdigit():
        raise UsageError("\\forget needs the number \\memory shows")
    memory = _schema_memory(session)
    gone = memory.forget(int(args))
    if gone is None:
        raise UsageError(f"nothing remembered as #{args} for this schema (\\memory lists them)")
    session.say(f"Forgot #{gone.id}: {gone.question}")


def _remember(session: ShellSession, args: str, plus: bool) -> None:
    if not args:
        raise UsageError("\\remember needs the question to keep the last SQL under")
    if not session.last_sql:
        raise UsageError("no SQL has run yet to remember")
    memory = _schema_memory(session)
    kept = memory.remember(args, session.last_sql, session.database_name)
    session.say(f"Remembered as #{kept.id}: {kept.question}")


def _schema_memory(session: ShellSession) -> SchemaMemory:
    memory = session.schema_memory()
    if memory is None:
        raise UsageError("memory is off (\\memory on, or memory = true in config.toml)")
    return memory


def _why(session: ShellSession, args: str, plus: bool) -> None:
    if session.last_answer is None:
        session.say("No question asked yet.")
        return
    session.show(trace(session.last_answer))


def _retry(session: ShellSession, args: str, plus: bool) -> Outcome | None:
    if not session.last_question:
        session.say("No question asked yet.")
        return None
    return Outcome(question=session.last_question)


def _new(session: ShellSession, args: str, plus: bool) -> Outcome | None:
    turns = len(session.conversation)
    session.conversation.clear()
    if args:  # asked on its own, whatever it looks like
        return Outcome(question=args)
    session.say(f"New topic: the conversation of {turns} question{'s' if turns != 1 else ''} is set aside; the next "
                "question is asked on its own." if turns else "No conversation going on: each question is asked on "
                "its own until its SQL runs.")
    return None


def _context(session: ShellSession, args: str, plus: bool) -> None:
    turns = session.conversation.turns
    if not turns:
        session.say("No conversation going on. A question whose SQL you run starts one; a follow-up (\"and only in "
                    "Lyon\", \"sort them by date\") is asked after it.")
        return
    session.say(f"The conversation so far ({len(turns)} question{'s' if len(turns) != 1 else ''}; \\new ends it):")
    for n, turn in enumerate(turns, 1):
        session.say(f"  {n}. {turn.question}\n     {' '.join(turn.sql.split())}")


def _ask(session: ShellSession, args: str, plus: bool) -> Outcome:
    if not args:
        raise UsageError("\\ask needs a question")
    return Outcome(question=args)


def _sql(session: ShellSession, args: str, plus: bool) -> Outcome:
    if not args:
        raise UsageError("\\sql needs a statement")
    return Outcome(sql=(args,))


# ---- the registry -----------------------------------------------------------------------------------

REGISTRY: tuple[Command, ...] = (
    Command(("\\?", "\\h", "help"), "", "show this help", _help),
    Command(("\\q", "quit", "exit", ".quit", ".exit"), "", "quit", _quit),
    Command(("\\ask",), "QUESTION", "ask in plain language (even if it looks like SQL)", _ask),
    Command(("\\sql",), "STATEMENT", "run as SQL (even if it reads like a question)", _sql),
    Command(("\\dt", ".tables"), "[PATTERN]", "list tables and views (+: columns, comments)", _list, plus=True),
    Command(("\\d",), "[NAME]", "describe a table or view; alone, list them (+: comments, examples)", _describe,
            plus=True),
    Command((".schema",), "[NAME]", "print CREATE statements", _ddl),
    Command(("\\conninfo",), "", "say what you are connected to", _conninfo),
    Command(("\\x",), "[on|off|auto]", "expanded display: one line per column", _expanded),
    Command(("\\timing",), "[on|off]", "show how long each statement took", _timing),
    Command(("\\T",), "FORMAT", f"result format: {', '.join(FORMATS)}", _format),
    Command(("\\chart",), "[COLUMN]", "draw the last result as a chart (COLUMN: the value to draw)", _chart),
    Command(("\\o",), "[FILE]", "send results to FILE (appending); alone, back to the screen", _out),
    Command(("\\i",), "FILE", "run the SQL statements in FILE", _include),
    Command(("\\e",), "", "edit the last SQL in $EDITOR, then confirm it", _edit),
    Command(("\\n",), "[NAME [SQL]]", "named queries: list, recall NAME, or save SQL as NAME", _named),
    Command(("\\nd",), "NAME", "delete a named query", _named_delete),
    Command(("\\pager",), "[on|off|auto|CMD]", "page long or wide output (alone: toggle)", _pager),
    Command(("\\model",), "[NAME]", "show the model, or load another (catalog name, folder, .gguf, URL)", _model),
    Command(("\\write",), "on|off", "allow writes (asks you to type the database name) or go back to read-only",
            _write),
    Command(("\\stages",), "[on|off|use STAGES]", "show each pipeline stage as it runs; choose the stages", _stages),
    Command(("\\why",), "", "the last question's full trace: prompts' results, raw replies, verdicts", _why),
    Command(("\\retry",), "", "ask the last question again", _retry),
    Command(("\\new",), "[QUESTION]", "end the conversation: the next question (or QUESTION) is asked alone", _new),
    Command(("\\context",), "", "the conversation a follow-up question is asked after", _context),
    Command(("\\memory",), "[on|off]", "list the remembered queries of this schema (shown to the model as examples)",
            _memory),
    Command(("\\forget",), "N", "drop remembered query N", _forget),
    Command(("\\remember",), "QUESTION", "remember the last SQL as the answer to QUESTION", _remember),
)


def find(line: str) -> tuple[Command, str, bool] | None:
    """The command a line starts with, the rest of the line, and whether + was appended."""
    stripped = line.strip()
    word, _, rest = stripped.partition(" ")
    if not word:
        return None
    plus = word.endswith("+") and len(word) > 1
    bare = word[:-1] if plus else word
    for command in REGISTRY:
        if bare in command.names or bare.lower() in command.names:
            if plus and not command.plus:
                return None
            if bare[0] not in "\\." and (rest.strip() or plus):
                return None  # help, quit, exit: a command only alone on the line (as psql); else a question
            return command, rest.strip(), plus
    return None


def names() -> list[str]:
    return [name for command in REGISTRY for name in command.names if name[0] in "\\."]


def help_text() -> str:
    usages = [f"{c.names[0]}{'[+]' if c.plus else ''} {c.usage}".strip() for c in REGISTRY]
    width = max(map(len, usages)) + 2
    rows = []
    for command, usage in zip(REGISTRY, usages):
        also = [n for n in command.names[1:] if n[0] in "\\."]
        rows.append(f"  {usage:<{width}}{command.help}" + (f" (also {', '.join(also)})" if also else ""))
    return ("Anything else you type is a question for the model, or SQL if it parses as SQL for this database.\n"
            "SQL ends with ';' (or a blank line). Generated SQL waits in the prompt: Enter runs it, Ctrl-C drops it.\n\n"
            + "\n".join(rows) + "\n")


# ---- helpers ----------------------------------------------------------------------------------------


def _schema(session: ShellSession):
    schema = session.schema()
    if schema is None:
        raise UsageError("the schema could not be read")
    return schema


def _switch(args: str, current: bool, name: str) -> bool:
    if args == "":
        return not current
    if args in ("on", "off"):
        return args == "on"
    raise UsageError(f"{name} takes on or off")


def edit_in_editor(text: str) -> str:
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False, encoding="utf-8") as handle:
        handle.write(text + ("\n" if text and not text.endswith("\n") else ""))
        name = handle.name
    try:
        completed = subprocess.run([*shlex.split(editor), name], check=False)
        if completed.returncode != 0:
            raise UsageError(f"the editor ({editor}) exited with status {completed.returncode}; nothing changed")
        return Path(name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"editor not found: {editor} (set $EDITOR)") from None
    finally:
        os.unlink(name)

