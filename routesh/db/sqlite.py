"""SQLite backend. The read-only envelope (layer b) is SQLite's own: the file opened `mode=ro`,
`PRAGMA query_only=ON`, no attachable databases, and an authorizer that permits only reading."""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from routesh.db.base import ConnectionInfo, ExecOptions, Result, RowSink
from routesh.db.fetch import Fetched, fetch
from routesh.db.schema import Column, ForeignKey, Schema, Table, distinct_samples
from routesh.errors import ConnectError, QueryCancelled, QueryError, QueryTimeout, Refused
from routesh.sql import guard

LAYER = "database"  # how refusals from this envelope are labelled (the same on PostgreSQL)
_HEADER = b"SQLite format 3\x00"
_PROGRESS_EVERY = 2000  # VM instructions between deadline/cancel checks: cheap, yet stops within ~1 ms
_SAMPLE_ROWS = 20
_INTROSPECT_QUERY_BUDGET_S = 0.5  # one sample/count query may not stall introspection longer than this
_COUNT_BUDGET_S = 2.0  # exact row counts stop (left unknown) once they have taken this long in all

# PRAGMAs that only read, and may therefore run in read-only mode (also what pragma_* table functions
# report). Any other PRAGMA, or one of these given a value to set, is denied.
_READ_PRAGMAS = frozenset(
    {
        "table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
        "foreign_key_list", "database_list", "collation_list", "function_list", "module_list",
        "pragma_list", "compile_options", "data_version", "encoding", "foreign_keys", "page_count",
        "page_size", "freelist_count", "query_only", "schema_version", "user_version", "application_id",
        "journal_mode", "integrity_check", "quick_check", "foreign_key_check",
    }
)
# PRAGMAs whose argument names an object to read rather than a value to set.
_PRAGMAS_WITH_OBJECT_ARG = frozenset(
    {"table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
     "foreign_key_list", "integrity_check", "quick_check", "foreign_key_check"}
)
_READ_ACTIONS = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_RECURSIVE})
_SCHEMA_TABLES = frozenset({"sqlite_master", "sqlite_temp_master"})
_ESCAPE_ACTIONS = frozenset({sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH})


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class SqliteDatabase:
    dialect = "sqlite"

    def __init__(self, path: Path, conn: sqlite3.Connection):
        self.path = path
        self.writes_allowed = False
        self.info = ConnectionInfo("sqlite", str(path), {"file": str(path), "sqlite_version": sqlite3.sqlite_version})
        self._conn = conn
        self._lock = threading.Lock()  # one statement at a time on this connection
        self._deadline: float | None = None
        self._cancelled = threading.Event()
        self._configure(conn)

    # ---- opening -----------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path) -> SqliteDatabase:
        """Open an existing SQLite file read-only. A missing file is an error, never a new database."""
        file = Path(path)
        _check_file(file)
        try:
            conn = _connect(file, writable=False)
            conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()
        except sqlite3.DatabaseError as err:
            raise ConnectError(f"cannot open {file} as a SQLite database: {err}") from None
        return cls(file, conn)

    def set_writes(self, allowed: bool) -> None:
        """Reopen the file writable (or read-only again). Writes still never reach other files."""
        if allowed == self.writes_allowed:
            return
        with self._lock:
            try:
                conn = _connect(self.path, writable=allowed)
            except sqlite3.DatabaseError as err:
                raise ConnectError(f"cannot reopen {self.path} {'for writing' if allowed else 'read-only'}: {err}") from None
            self._conn.close()
            self._conn = conn
            self.writes_allowed = allowed
            self._configure(conn)

    def close(self) -> None:
        self._conn.close()

    def _configure(self, conn: sqlite3.Connection) -> None:
        if not self.writes_allowed:
            conn.execute("PRAGMA query_only = ON")
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)  # no ATTACH, and so no VACUUM INTO either
        conn.set_authorizer(self._authorize)
        conn.set_progress_handler(self._should_stop, _PROGRESS_EVERY)

    # ---- the authorizer and the stop check ------------------------------------------------------

    def _authorize(self, action: int, arg1: str | None, arg2: str | None, _db: str | None, _trigger: str | None) -> int:
        if action in _ESCAPE_ACTIONS:
            return sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_FUNCTION:
            name = (arg2 or "").lower()
            return sqlite3.SQLITE_DENY if name in guard.DENIED_FUNCTIONS["sqlite"] else sqlite3.SQLITE_OK
        if self.writes_allowed:
            return sqlite3.SQLITE_OK
        if action in _READ_ACTIONS:
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_UPDATE and arg1 in _SCHEMA_TABLES:
            # SQLite reports its own schema reads this way while preparing pragma_* table functions;
            # a real write there would also need writable_schema, which is denied, on a mode=ro file.
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_PRAGMA:
            name = (arg1 or "").lower()
            if name in _READ_PRAGMAS and (arg2 is None or name in _PRAGMAS_WITH_OBJECT_ARG):
                return sqlite3.SQLITE_OK
        return sqlite3.SQLITE_DENY

    def _should_stop(self) -> int:
        if self._cancelled.is_set():
            return 1
        if self._deadline is not None and time.monotonic() > self._deadline:
            return 1
        return 0

    # ---- running statements ---------------------------------------------------------------------

    def execute(self, sql: str, *, options: ExecOptions | None = None, guard: bool = True,
                sink: RowSink | None = None) -> Result:
        opts = options or ExecOptions()
        if guard:
            _guard.check(sql, "sqlite", writes_allowed=self.writes_allowed)
        with self._lock:
            return self._run(sql, opts, sink)

    def _run(self, sql: str, opts: ExecOptions, sink: RowSink | None) -> Result:
        self._cancelled.clear()
        started = time.monotonic()
        self._deadline = _deadline(opts)
        cursor = self._conn.cursor()

        def before_batch() -> None:
            if self._cancelled.is_set():  # a cancel that arrived while the sink was writing
                raise QueryCancelled("query cancelled")
            if sink is not None:  # streaming: the timeout bounds each batch, not the whole export
                self._deadline = _deadline(opts)

        try:
            cursor.execute(sql)
            columns = [d[0] for d in cursor.description] if cursor.description else []
            if columns and sink is not None:
                sink.begin(columns)
            fetched = fetch(cursor.fetchmany, row_limit=opts.row_limit, sink=sink,
                            before_batch=before_batch) if columns else Fetched([], 0, False)
            status = None if columns else _status(sql, cursor.rowcount)
        except (sqlite3.Error, sqlite3.Warning) as err:
            raise self._translate(err, opts) from None
        finally:
            self._deadline = None
            cursor.close()
        return Result(columns, fetched.rows, time.monotonic() - started, fetched.truncated, status,
                      streamed=fetched.count if sink is not None else None)

    def _translate(self, err: Exception, opts: ExecOptions) -> Exception:
        text = str(err)
        if "interrupted" in text:
            if self._cancelled.is_set():
                return QueryCancelled("query cancelled")
            return QueryTimeout(f"query stopped after the {opts.timeout:g} s statement timeout")
        if any(sign in text for sign in ("not authorized", "authorization denied", "readonly database", "query_only")):
            return Refused(f"SQLite refused it ({text})", layer=LAYER)
        if "one statement at a time" in text:
            return Refused("several statements in one string", layer=LAYER)
        return QueryError(text)

    def cancel(self) -> None:
        self._cancelled.set()
        self._conn.interrupt()

    # ---- introspection --------------------------------------------------------------------------

    def introspect(self, *, samples: int = 3) -> Schema:
        with self._lock:
            objects = self._conn.execute(
                "SELECT name, type FROM sqlite_schema WHERE type IN ('table', 'view') "
                "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY rowid"
            ).fetchall()
            names = [name for name, _ in objects]
            columns = self._columns(names)
            fkeys = self._foreign_keys([n for n, kind in objects if kind == "table"])
            counts = self._row_counts([n for n, kind in objects if kind == "table"])
            tables = []
            for name, kind in objects:
                described = columns.get(name, [])
                cols = [col for col, _ in described]
                if samples > 0 and cols:
                    values = self._samples(name, len(cols), samples)
                    cols = [replace(c, samples=values[i]) for i, c in enumerate(cols)]
                pk = tuple(col.name for col, position in sorted(described, key=lambda d: d[1]) if position > 0)
                exact, count = counts.get(name, (False, None))
                tables.append(
                    Table(name=name, columns=tuple(cols), kind=kind, primary_key=pk,
                          foreign_keys=tuple(fkeys.get(name, ())), row_count=count, row_count_exact=exact)
                )
        return Schema("sqlite", _resolve_fk_targets(tuple(tables)))

    def _columns(self, names: list[str]) -> dict[str, list[tuple[Column, int]]]:
        """Columns per table, each with its 1-based position in the primary key (0: not in it)."""
        sql = ("SELECT m.name, p.name, p.type, p.\"notnull\", p.dflt_value, p.pk FROM sqlite_schema m "
               "JOIN pragma_table_info(m.name) p WHERE m.type IN ('table', 'view') ORDER BY m.rowid, p.cid")
        try:
            rows = self._conn.execute(sql).fetchall()
        except sqlite3.Error:
            # One broken view (or a virtual table whose module is missing) fails the joined query;
            # fall back to asking table by table and skipping what cannot be described.
            rows = []
            for name in names:
                try:
                    rows += [(name, *r) for r in self._conn.execute(
                        'SELECT name, type, "notnull", dflt_value, pk FROM pragma_table_info(?)', (name,))]
                except sqlite3.Error:
                    continue
        out: dict[str, list[tuple[Column, int]]] = {}
        for table, col, ctype, notnull, default, pk in rows:
            column = Column(name=col, type=ctype or "", nullable=not notnull and not pk, primary_key=pk > 0,
                            default=default)
            out.setdefault(table, []).append((column, pk))
        return out

    def _foreign_keys(self, tables: list[str]) -> dict[str, list[ForeignKey]]:
        grouped: dict[tuple[str, int], list[tuple[str, str, str | None]]] = {}
        for table in tables:
            try:
                rows = self._conn.execute(
                    'SELECT id, seq, "table", "from", "to" FROM pragma_foreign_key_list(?) ORDER BY id, seq', (table,)
                ).fetchall()
            except sqlite3.Error:
                continue
            for fk_id, _seq, ref, src, dst in rows:
                grouped.setdefault((table, fk_id), []).append((ref, src, dst))
        out: dict[str, list[ForeignKey]] = {}
        for (table, _), parts in grouped.items():
            ref = parts[0][0]
            # A NULL target column means "the referenced table's primary key"; resolved later.
            out.setdefault(table, []).append(
                ForeignKey(tuple(p[1] for p in parts), ref, tuple(p[2] or "" for p in parts))
            )
        return out

    def _row_counts(self, tables: list[str]) -> dict[str, tuple[bool, int | None]]:
        out: dict[str, tuple[bool, int | None]] = {}
        try:  # ANALYZE's estimates, where present, cost nothing
            for table, stat in self._conn.execute("SELECT tbl, stat FROM sqlite_stat1 WHERE idx IS NULL OR idx = tbl"):
                out[table] = (False, int(str(stat).split()[0]))
        except sqlite3.Error:
            pass
        spent_until = time.monotonic() + _COUNT_BUDGET_S
        for table in tables:
            if table in out or time.monotonic() > spent_until:
                continue
            row = self._bounded(f"SELECT count(*) FROM {quote_ident(table)}", 1)
            if row:
                out[table] = (True, row[0][0])
        return out

    def _samples(self, table: str, n_columns: int, per_column: int) -> list[tuple[Any, ...]]:
        rows = self._bounded(f"SELECT * FROM {quote_ident(table)} LIMIT {_SAMPLE_ROWS}", _SAMPLE_ROWS)
        return distinct_samples(rows or [], n_columns, per_column)

    def _bounded(self, sql: str, limit: int) -> list[tuple] | None:
        """Run an introspection query with a short deadline; None when it failed or ran too long."""
        self._deadline = time.monotonic() + _INTROSPECT_QUERY_BUDGET_S
        try:
            return self._conn.execute(sql).fetchmany(limit)
        except sqlite3.Error:
            return None
        finally:
            self._deadline = None


_guard = guard  # `execute` has a parameter named guard


def _resolve_fk_targets(tables: tuple[Table, ...]) -> tuple[Table, ...]:
    """Point foreign keys at real table names (SQLite matches them case-insensitively) and fill
    in implicit primary-key targets."""
    by_lower = {t.name.lower(): t for t in tables}
    resolved = []
    for table in tables:
        fks = []
        for fk in table.foreign_keys:
            target = by_lower.get(fk.ref_table.lower())
            ref_name = target.name if target else fk.ref_table
            ref_cols = fk.ref_columns
            if target and not all(ref_cols):
                ref_cols = target.primary_key or ref_cols
            fks.append(ForeignKey(fk.columns, ref_name, tuple(ref_cols)))
        resolved.append(replace(table, foreign_keys=tuple(fks)))
    return tuple(resolved)


def _deadline(opts: ExecOptions) -> float | None:
    return time.monotonic() + opts.timeout if opts.timeout and opts.timeout > 0 else None


def _status(sql: str, rowcount: int) -> str:
    verb = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else "OK"
    return f"{verb} {rowcount}" if rowcount >= 0 else verb


def _check_file(file: Path) -> None:
    if not file.exists():
        raise ConnectError(f"no such database file: {file} (routesh never creates one)")
    if file.is_dir():
        raise ConnectError(f"{file} is a directory, not a SQLite database file")
    try:
        with file.open("rb") as handle:
            header = handle.read(len(_HEADER))
    except OSError as err:
        raise ConnectError(f"cannot read {file}: {err.strerror}") from None
    if header and header != _HEADER:
        raise ConnectError(f"{file} is not a SQLite database (its header says otherwise)")


def _connect(file: Path, *, writable: bool) -> sqlite3.Connection:
    mode = "rw" if writable else "ro"
    # isolation_level=None: no implicit BEGIN from the sqlite3 module; check_same_thread=False so
    # cancel() (interrupt) and the shell's worker thread can use the connection.
    return sqlite3.connect(f"{file.resolve().as_uri()}?mode={mode}", uri=True, isolation_level=None,
                           check_same_thread=False, timeout=5.0)
