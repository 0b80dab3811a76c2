"""The `routesh` command: argument parsing, then either one statement (--sql) or the interactive shell.

Exit codes (DESIGN.md): 0 ok, 1 usage/connection/model error, 2 refused by the guard, 3 database error,
4 the pipeline abstained. Every error is one line on stderr; set ROUTESH_DEBUG=1 to see tracebacks.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

from routesh import __version__, settings
from routesh.cancel import ignore_further_interrupts
from routesh.config import load_config
from routesh.conversation import read_turns
from routesh.db import connect
from routesh.errors import RoutesError, UsageError
from routesh.logs import keep_libraries_quiet
from routesh.oneshot import run_one, run_text

EXIT_OK, EXIT_USAGE, EXIT_CANCELLED = 0, 1, 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for sqlite3 or psql cut off by `| head`


class _Parser(argparse.ArgumentParser):
    """argparse, but its errors become our one-line UsageError (exit 1, not argparse's 2, which
    DESIGN.md reserves for guard refusals)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see routesh --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="routesh",
        description="Ask a SQLite or PostgreSQL database questions. Read-only unless writes are explicitly allowed.",
        epilog="DSN: a SQLite file path, sqlite:///relative.db, sqlite:////absolute.db, "
        "postgresql://user@host/db, or a libpq conninfo ('host=... dbname=...'); PG* variables are honoured.",
    )
    parser.add_argument("dsn", nargs="?", help="the database to open")
    parser.add_argument("--demo", action="store_true", help="open the bundled demo database (built on first use)")
    parser.add_argument("-e", "--execute", metavar="TEXT",
                        help="one question (or SQL statement): print the SQL, run it with --yes ('-' reads stdin)")
    parser.add_argument("--sql", metavar="SQL", help="one SQL statement to check and print ('-' reads it from stdin)")
    parser.add_argument("--yes", "-y", action="store_true", help="run the statement after printing it")
    parser.add_argument("--context", metavar="FILE",
                        help="with -e: the conversation the question follows, JSON Lines of earlier turns, oldest "
                        'first: {"question": ..., "sql": ..., "columns": [...]}')
    settings.add_flags(parser)  # --row-limit, --timeout, --format, --stages, --model, --backend
    parser.add_argument("--model-info", action="store_true",
                        help="load the model, run one short generation, and report how it runs")
    parser.add_argument("--version", action="version", version=f"routesh {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    keep_libraries_quiet()  # library warnings and progress bars go to the log file, never over the screen
    try:
        code = _main(argv)
    except RoutesError as err:
        _error(str(err))
        code = err.exit_code
    except KeyboardInterrupt:
        ignore_further_interrupts()
        _error("cancelled")
        code = EXIT_CANCELLED
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as sqlite3 and psql do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        code = EXIT_BROKEN_PIPE
    except Exception as err:  # the promise is one line, never a traceback
        if os.environ.get("ROUTESH_DEBUG"):
            traceback.print_exc()
        _error(f"internal error: {type(err).__name__}: {err} (set ROUTESH_DEBUG=1 for details)")
        code = EXIT_USAGE
    return code  # the console-script wrapper passes it to sys.exit


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.model_info:
        return model_info(args.model, backend=args.backend or "auto")
    if args.demo and args.dsn:
        raise UsageError("give either a DSN or --demo, not both")
    if args.sql is not None and args.execute is not None:
        raise UsageError("give either -e or --sql, not both")
    if args.yes and args.sql is None and args.execute is None:
        raise UsageError("--yes only applies with -e or --sql")
    if args.context is not None and args.execute is None:
        raise UsageError("--context only applies with -e")
    context = read_turns(args.context) if args.context is not None else ()  # a bad file: before connecting
    resolved = settings.resolve(load_config(), args)  # command-line options win over the file
    if resolved.warning:
        _error(resolved.warning)
    dsn = _demo_dsn() if args.demo else args.dsn
    db = connect(dsn)
    try:
        if args.sql is not None:
            return run_one(db, _read_sql(args.sql), run=args.yes, settings=resolved)
        if args.execute is not None:
            return run_text(db, _read_sql(args.execute), run=args.yes, settings=resolved, context=context)
        from routesh.shell.app import run_shell  # prompt-toolkit loads only for the shell

        return run_shell(db, resolved)
    finally:
        db.close()


def model_info(spec: str | None, *, backend: str) -> int:
    """Load the model as the pipeline would and show what it is and how fast it answers."""
    import time

    from routesh.engine import ChatRequest, GenerationParams, load_engine
    from routesh.engine.models import licence_line

    started = time.perf_counter()
    engine = load_engine(spec, backend=backend)
    loaded = time.perf_counter() - started
    try:
        reply = engine.generate([ChatRequest.of(("user", "Write a SQL query that returns the number 1."))],
                                GenerationParams(max_new_tokens=24))[0]
    finally:
        engine.close()
    details = ", ".join(str(v) for v in (getattr(engine, "device", None), getattr(engine, "dtype", None),
                                         getattr(engine, "quantization", None)) if v)
    print(f"model:   {engine.name}")
    adapter = getattr(engine, "adapter", None)
    if adapter:
        mode = getattr(engine, "adapter_mode", None)
        print(f"adapter: {adapter}" + (f" ({mode})" if mode else ""))
    print(f"backend: {engine.backend}" + (f" ({details})" if details else ""))
    if licence := licence_line(spec):
        print(f"licence: {licence}")
    print(f"loaded in {loaded:.1f} s; test reply: {reply.output_tokens} tokens in {reply.seconds:.2f} s")
    print(f"reply:   {' '.join(reply.text.split())[:200]}")
    return EXIT_OK


def _read_sql(value: str) -> str:
    text = sys.stdin.read() if value == "-" else value
    if not text.strip():
        raise UsageError("nothing given" + (" on stdin" if value == "-" else ""))
    return text


def _demo_dsn() -> str:
    from routesh.demo import ensure_demo_db

    return str(ensure_demo_db())


def _error(message: str) -> None:
    print(f"routesh: {message}", file=sys.stderr)

