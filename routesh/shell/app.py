"""The interactive shell, SQL-only for now: the language-model path arrives with the pipeline.

Statements end with `;` (or a blank line ends them), run read-only through the guard, and print as
tables. Ctrl-C while typing clears the line; Ctrl-C while a query runs cancels the query; Ctrl-D or
`\\q` leaves. A query runs on a worker thread so that the main thread stays free to catch Ctrl-C.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs
from prompt_toolkit import PromptSession
from prompt_toolkit.history import FileHistory
from prompt_toolkit.lexers import PygmentsLexer
from pygments.lexers.sql import PostgresLexer, SqlLexer

from routesh.db import Database, ExecOptions, Result
from routesh.db.cancellable import execute_cancellable
from routesh.errors import RoutesError
from routesh.shell.render import footer, render

_BANNER = (
    "routesh — SQL-only mode (questions in plain language arrive with the model pipeline).\n"
    "Read-only. End statements with ';'. \\dt lists tables, \\q quits."
)


@dataclass
class ShellSession:
    """Everything one interactive session knows; no module-level state."""

    db: Database
    options: ExecOptions
    fmt: str = "table"
    buffer: list[str] = field(default_factory=list)


def run_shell(db: Database, *, options: ExecOptions, fmt: str = "table") -> int:
    if not sys.stdin.isatty():
        print("routesh: stdin is not a terminal; use --sql SQL (or --sql - to read it from stdin)", file=sys.stderr)
        return 1
    session = ShellSession(db, options, fmt)
    prompt = PromptSession(history=FileHistory(str(_history_file())),
                           lexer=PygmentsLexer(PostgresLexer if db.dialect == "postgres" else SqlLexer))
    print(_BANNER)
    while True:
        try:
            line = prompt.prompt(_prompt_text(session))
            if not _handle_line(session, line):
                return 0
        except KeyboardInterrupt:  # at the prompt, or while printing: drop what was pending, keep going
            session.buffer.clear()
        except EOFError:
            return 0


def _handle_line(session: ShellSession, line: str) -> bool:
    """Process one typed line; False means quit."""
    stripped = line.strip()
    if not session.buffer and stripped in ("\\q", "quit", "exit", ".quit"):
        return False
    if not session.buffer and stripped in ("\\dt", ".tables"):
        _list_tables(session)
        return True
    if not stripped and not session.buffer:
        return True
    session.buffer.append(line)
    if stripped.endswith(";") or not stripped:
        sql = "\n".join(session.buffer).strip()
        session.buffer.clear()
        _run(session, sql)
    return True


def _run(session: ShellSession, sql: str) -> None:
    try:
        result = execute_cancellable(session.db, sql, options=session.options)
    except RoutesError as err:
        print(f"ERROR: {err}")
        return
    output = render(result, session.fmt)
    if output:
        print(output, end="")
    print(footer(result, row_limit=session.options.row_limit))


def _list_tables(session: ShellSession) -> None:
    schema = session.db.introspect(samples=0)
    rows = [(t.schema or "", t.display_name, t.kind, "" if t.row_count is None else t.row_count) for t in schema.tables]
    result = Result(["schema", "name", "type", "rows"], rows, 0.0)
    print(render(result, "table"), end="")
    print(footer(result, row_limit=len(rows) + 1))


def _prompt_text(session: ShellSession) -> str:
    info = session.db.info
    name = Path(info.display).name if session.db.dialect == "sqlite" else str(info.details.get("database") or info.display)
    return ("...> " if session.buffer else f"{name}> ")


def _history_file() -> Path:
    directory = Path(platformdirs.user_data_dir("routesh"))
    directory.mkdir(parents=True, exist_ok=True)
    return directory / "history"
