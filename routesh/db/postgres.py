"""PostgreSQL backend (psycopg 3).

The read-only envelope (DESIGN.md decision 4, layer b) holds whatever layer (a) let through, even when
the guard is skipped: every statement runs inside `BEGIN READ ONLY` with `SET LOCAL statement_timeout`,
is planned first with EXPLAIN over the extended protocol (one statement only; its plan is scanned for
deny-listed functions), then runs through a server-side cursor, which PostgreSQL only accepts for a plain
query (or, a csv/tsv export without a row limit, as `COPY (query) TO STDOUT`: pgcopy.py). The transaction is
always rolled back.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import unquote

import psycopg
from psycopg import sql as pgsql
from psycopg.pq import TransactionStatus
from psycopg.types.string import TextLoader

from routesh.db.base import NO_ROW_LIMIT, ConnectionInfo, ExecOptions, Result, RowSink, TextSink
from routesh.db.dsn import redact
from routesh.db.fetch import Fetched, fetch
from routesh.db.pgcopy import COPY_PREFIX, copy_out
from routesh.db.schema import Column, ForeignKey, Schema, Table, distinct_samples
from routesh.errors import (
    ConnectError,
    ConnectionLost,
    QueryCancelled,
    QueryError,
    QueryTimeout,
    Refused,
    RoutesError,
)
from routesh.sql import guard as sql_guard
from routesh.sql.parse import first_keyword

LAYER = "database"
LOST = "connection to the server was lost; it will be reopened on the next statement"
_CURSOR = "routesh_cursor"
_EXPLAIN = "EXPLAIN (VERBOSE, FORMAT JSON) "
_QUERY_STARTS = frozenset({"SELECT", "WITH", "VALUES", "TABLE", "("})
_SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema", "pg_toast"})
_KINDS = {"r": "table", "p": "table", "v": "view", "m": "materialized view", "f": "foreign table"}

# Introspection limits: samples come from the first rows of each relation; exact counts only for
# relations that were never analyzed and are small on disk (a count there is cheap).
_SAMPLE_ROWS = 20
_EXACT_COUNT_MAX_BYTES = 1000 * 8192
_BATCH = 100  # relations per UNION ALL round trip
_INTROSPECT_TIMEOUT_MS = 5000  # one catalog/sample/count statement
_INTROSPECT_LOCK_TIMEOUT_MS = 1000  # a table locked by someone else is skipped, not waited for
_RETRY_BUDGET_S = 10.0  # time for retrying failed batches one relation at a time

_Outcome = tuple[list[str], Fetched, str | None]  # columns, rows, status


# ---- connecting -----------------------------------------------------------------------------------


def _open(dsn: str, connect_timeout: float) -> psycopg.Connection[Any]:
    """Connect (libpq applies PG* environment variables), or raise ConnectError with one clean line."""
    try:
        return psycopg.connect(
            dsn, autocommit=True, connect_timeout=max(1, round(connect_timeout)),
            fallback_application_name="routesh",
        )
    except psycopg.Error as err:
        raise ConnectError(_connect_message(err, dsn, connect_timeout)) from None


_SERVER_AT = re.compile(
    r'connection to server (?:at "(?P<host>[^"]*)"(?: \([^)]*\))?, port (?P<port>\d+)|on socket "(?P<socket>[^"]*)")'
    r" failed: (?P<why>.*)"
)
_SERVER_OWN_WORDS = re.compile(r"password authentication failed|does not exist|no pg_hba\.conf entry|"
                               r"password|too many clients|is not permitted to log in|authentication")


def _connect_message(err: psycopg.Error, dsn: str, connect_timeout: float) -> str:
    parse_error = isinstance(err, psycopg.ProgrammingError)  # libpq could not parse the DSN
    text = _scrub(str(err), dsn if parse_error else "")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if parse_error:
        return f"invalid connection string: {lines[0] if lines else 'cannot parse it'}"
    if "timeout expired" in text:
        return f"could not connect to the server: no answer within {connect_timeout:g} s"
    for line in lines:
        match = _SERVER_AT.search(line)
        if not match:
            continue
        why = re.sub(r"^(FATAL|ERROR):\s*", "", match["why"].strip())
        if "no password supplied" in why:
            return "the server wants a password and none was given (put it in the DSN, PGPASSWORD or ~/.pgpass)"
        if _SERVER_OWN_WORDS.search(why):  # the server's own words are the clearest
            return why
        where = f"{match['host']}:{match['port']}" if match["host"] is not None else f"socket {match['socket']}"
        return f"could not connect to server at {where}: {why[:1].lower()}{why[1:]}"
    first = re.sub(r"^(connection failed|connection is bad):\s*", "", lines[0]) if lines else type(err).__name__
    resolve = re.match(r"failed to resolve host '([^']*)': (?:\[Errno -?\d+\] )?(.*)", first)
    if resolve:
        return f"could not resolve host name '{resolve[1]}': {resolve[2][:1].lower()}{resolve[2][1:]}"
    return first


def _scrub(text: str, dsn: str) -> str:
    """Remove passwords from a message: any URL's, and the ones `dsn` (or PGPASSWORD) holds. Only
    parse errors echo the DSN, so only they get the second, blunter treatment (a password such as
    "postgres" would otherwise blank out the user name in "password authentication failed for...")."""
    for secret in sorted(_passwords(dsn), key=len, reverse=True):
        text = text.replace(secret, "***")
    return re.sub(r"(://[^:/@\s\"]*):[^@\s\"]*@", r"\1:***@", text)


def _passwords(dsn: str) -> set[str]:
    found = set(re.findall(r"(?i)password\s*=\s*'((?:[^'\\]|\\.)*)'", dsn))
    found |= set(re.findall(r"(?i)password\s*=\s*([^\s&']+)", dsn))
    userinfo = re.match(r"^\s*[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)@", dsn)
    if userinfo and ":" in userinfo[1]:
        found.add(userinfo[1].split(":", 1)[1])
    found |= {unquote(s) for s in found}
    if dsn and os.environ.get("PGPASSWORD"):
        found.add(os.environ["PGPASSWORD"])
    return {s for s in found if s}


def _connection_info(conn: psycopg.Connection[Any], dsn: str) -> ConnectionInfo:
    info = conn.info
    details = {
        "server_version": info.parameter_status("server_version") or str(info.server_version),
        "user": info.user,
        "database": info.dbname,
        "host": info.host,
        "port": info.port,
        "superuser": info.parameter_status("is_superuser") == "on",
    }
    display = redact(dsn) if dsn.strip() else f"host={info.host} port={info.port} user={info.user} dbname={info.dbname}"
    return ConnectionInfo("postgres", display, details)


# ---- the database ---------------------------------------------------------------------------------


class PostgresDatabase:
    """One PostgreSQL connection (autocommit at the protocol level; every statement gets its own
    explicit transaction). Read-only unless set_writes(True)."""

    dialect = "postgres"

    def __init__(self, conn: psycopg.Connection[Any], dsn: str, *, connect_timeout: float = 10):
        self._conn = conn
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self.writes_allowed = False
        self.info = _connection_info(conn, dsn)
        self._state = threading.Lock()  # guards _running/_cancel_requested against cancel()
        self._running = False
        self._cancel_requested = False

    @classmethod
    def connect(cls, dsn: str, *, connect_timeout: float = 10) -> PostgresDatabase:
        return cls(_open(dsn, connect_timeout), dsn, connect_timeout=connect_timeout)

    def set_writes(self, allowed: bool) -> None:
        self.writes_allowed = bool(allowed)

    def close(self) -> None:
        self._conn.close()

    def cancel(self) -> None:
        """Ask the server to stop the running statement. The flag tells a cancel from a timeout
        (both arrive as SQLSTATE 57014); holding the lock keeps the request from landing on a later
        statement."""
        with self._state:
            if not self._running:
                return
            self._cancel_requested = True
            with suppress(psycopg.Error):  # if the request fails, the statement timeout still ends it
                self._conn.cancel_safe(timeout=5)

    # ---- executing --------------------------------------------------------------------------------

    def execute(self, sql: str, *, options: ExecOptions | None = None, guard: bool = True,
                sink: RowSink | None = None) -> Result:
        opts = options or ExecOptions()
        if guard:
            sql_guard.check(sql, self.dialect, writes_allowed=self.writes_allowed)
        conn = self._live_connection()
        with self._state:
            self._running, self._cancel_requested = True, False
        started = time.monotonic()
        try:
            if not self.writes_allowed:
                columns, fetched, status = self._run_query(conn, sql, opts, sink, read_only=True)
            elif sink is not None and sql_guard.classify(sql, self.dialect).read_only:
                # a query streamed in write mode: a server-side cursor too, or libpq would hold every row
                columns, fetched, status = self._run_query(conn, sql, opts, sink, read_only=False)
            else:
                columns, fetched, status = self._run_write(conn, sql, opts, sink)
            elapsed = time.monotonic() - started
        finally:
            self._end_transaction(conn)
            with self._state:
                self._running = False
        return Result(columns, fetched.rows, elapsed, fetched.truncated, status,
                      streamed=fetched.count if sink is not None else None)

    def _run_query(self, conn: psycopg.Connection[Any], sql: str, opts: ExecOptions, sink: RowSink | None,
                   *, read_only: bool) -> _Outcome:
        with self._step(sql, opts, "begin"):
            conn.execute("BEGIN READ ONLY" if read_only else "BEGIN")
            conn.execute(_timeout_statement(opts.timeout))
        if read_only:
            with self._step(sql, opts, "explain"):
                plan = _explain(conn, sql)
            _check_plan(plan)
            if isinstance(sink, TextSink) and opts.row_limit == NO_ROW_LIMIT and first_keyword(sql) in _QUERY_STARTS:
                return self._copy_query(conn, sql, opts, sink)
        with conn.cursor(name=_CURSOR) as cur:
            with self._step(sql, opts, "declare"):
                cur.execute(sql)  # DECLARE ... CURSOR FOR <sql>: only a query fits there
            columns = [c.name for c in cur.description or []]
            if isinstance(sink, TextSink):  # each value as the server spells it, as COPY and psql's csv have it
                for column in cur.description or []:
                    cur.adapters.register_loader(column.type_code, TextLoader)
            if sink is not None:
                sink.begin(columns)
            with self._step(sql, opts, "fetch"):  # each FETCH is a statement: the timeout bounds each batch
                fetched = fetch(cur.fetchmany, row_limit=opts.row_limit, sink=sink, before_batch=self._stop_if_cancelled)
        if not read_only:
            with self._step(sql, opts, "commit", check_cancel=False):
                conn.execute("COMMIT")
        return columns, fetched, None

    def _copy_query(self, conn: psycopg.Connection[Any], sql: str, opts: ExecOptions, sink: TextSink) -> _Outcome:
        """An export without a row limit, as csv or tsv: the server formats it (pgcopy.py)."""
        with self._step(sql, opts, "copy"):
            conn.execute("SET LOCAL statement_timeout = 0")  # the whole export is one statement: the timeout
            # bounds each wait for rows instead, as it bounds each FETCH of a streamed cursor
            columns, written = copy_out(conn, sql, sink, stall_timeout=opts.timeout,
                                        stop_requested=lambda: self._cancel_requested)
        return columns, Fetched([], written, False), None

    def _run_write(self, conn: psycopg.Connection[Any], sql: str, opts: ExecOptions, sink: RowSink | None) -> _Outcome:
        if first_keyword(sql) == "COPY":
            # COPY to the client would wedge the connection; to a file or program it leaves the database.
            raise Refused("COPY is not supported; use SELECT (or \\copy in psql)", layer=LAYER, node="COPY")
        with self._step(sql, opts, "begin"):
            conn.execute("BEGIN")
            conn.execute(_timeout_statement(opts.timeout))
        with conn.cursor() as cur, self._step(sql, opts, "write"):
            # prepare=True sends Parse/Bind/Execute: the server accepts exactly one statement.
            cur.execute(sql, prepare=True)  # type: ignore[arg-type]
            columns = [c.name for c in cur.description or []]
            if columns and sink is not None:
                sink.begin(columns)
            fetched = fetch(cur.fetchmany, row_limit=opts.row_limit, sink=sink) if columns else Fetched([], 0, False)
            status = cur.statusmessage
        # A cancel that arrived by now still wins: nothing is committed (the step above raised).
        with self._step(sql, opts, "commit", check_cancel=False):
            conn.execute("COMMIT")
        return columns, fetched, status

    def _stop_if_cancelled(self) -> None:
        if self._cancel_requested:  # it may have landed between two FETCHes, where the server saw nothing
            raise QueryCancelled("the statement was cancelled")

    @contextmanager
    def _step(self, sql: str, opts: ExecOptions, step: str, *, check_cancel: bool = True) -> Iterator[None]:
        """Translate what a step of execute raises; stop early when a cancel arrived in between
        (it may have reached the server while no statement was running there)."""
        try:
            yield
        except psycopg.Error as err:
            raise self._translate(err, sql, opts, step) from None
        if check_cancel and self._cancel_requested:
            raise QueryCancelled("the statement was cancelled")

    def _translate(self, err: psycopg.Error, sql: str, opts: ExecOptions, step: str) -> RoutesError:
        if self._conn.closed or self._conn.broken:
            return ConnectionLost(LOST)
        message = _server_message(err, sql, offset={"explain": len(_EXPLAIN), "copy": len(COPY_PREFIX)}.get(step))
        if err.sqlstate == "57014":  # query_canceled: by us, by the timeout, or by another session
            if self._cancel_requested:
                return QueryCancelled("the statement was cancelled")
            if opts.timeout > 0 and "timeout" in message:
                return QueryTimeout(f"statement timed out after {opts.timeout:g} s")
            return QueryCancelled(f"the statement was cancelled ({message})")
        refusal = _refusal(err, sql, step, message)
        return refusal or QueryError(message)

    def _end_transaction(self, conn: psycopg.Connection[Any]) -> None:
        """Roll back whatever is still open (always, on the read-only path); a connection that cannot
        even do that is closed, so the next statement reconnects."""
        if conn.closed or conn.info.transaction_status == TransactionStatus.IDLE:
            return
        try:
            conn.execute("ROLLBACK")
        except psycopg.Error:
            conn.close()

    def _live_connection(self) -> psycopg.Connection[Any]:
        """The open connection, reopened (same DSN) if the last statement found it dead."""
        if self._conn.closed or self._conn.broken:
            self._conn.close()
            self._conn = _open(self._dsn, self._connect_timeout)
            self.info = _connection_info(self._conn, self._dsn)
        return self._conn

    # ---- introspection ----------------------------------------------------------------------------

    def introspect(self, *, samples: int = 3) -> Schema:
        """Every table, view, materialized view, partitioned and foreign table in the non-system
        schemas on the search path (when those hold none, in every schema the user may use, shown
        schema-qualified), read in a few set-based catalog queries inside a read-only transaction that
        is rolled back."""
        conn = self._live_connection()
        try:
            conn.execute("BEGIN READ ONLY")
            conn.execute(f"SET LOCAL statement_timeout = {_INTROSPECT_TIMEOUT_MS}")
            conn.execute(f"SET LOCAL lock_timeout = {_INTROSPECT_LOCK_TIMEOUT_MS}")
            return _Introspection(conn, samples).run()
        except psycopg.Error as err:
            if conn.closed or conn.broken:
                raise ConnectionLost(LOST) from None
            raise QueryError(f"could not read the schema: {_server_message(err, '')}") from None
        finally:
            self._end_transaction(conn)


# ---- the envelope's checks ------------------------------------------------------------------------


def _timeout_statement(timeout_s: float) -> str:
    ms = 0 if timeout_s <= 0 else max(1, round(timeout_s * 1000))
    return f"SET LOCAL statement_timeout = {ms}"


def _explain(conn: psycopg.Connection[Any], sql: str) -> str:
    """The plan as JSON text. stream() always uses the extended protocol, so a second statement
    hidden after a `;` is rejected by the server instead of run."""
    with conn.cursor() as cur:
        rows = list(cur.stream(_EXPLAIN + sql))  # type: ignore[arg-type]
    return json.dumps([row[0] for row in rows], ensure_ascii=False)


def _check_plan(plan: str) -> None:
    """Fail closed: a deny-listed function named anywhere in the plan (as a word) refuses the statement."""
    if not plan or plan == "[]":
        raise Refused("the server returned no plan to check", layer=LAYER)
    names = sorted(sql_guard.DENIED_FUNCTIONS["postgres"], key=len, reverse=True)
    match = re.search(r"\b(" + "|".join(map(re.escape, names)) + r")\b", plan, re.IGNORECASE)
    if match:
        name = match[1].lower()
        raise Refused(f"function {name}() is not allowed (found in the query plan)", layer=LAYER,
                      node=f"FUNCTION {name}")


def _refusal(err: psycopg.Error, sql: str, step: str, message: str) -> Refused | None:
    """Is this server error the envelope refusing a non-query, rather than a mistake in a query?"""
    state = err.sqlstate or ""
    keyword = first_keyword(sql)
    if state == "25006":  # read_only_sql_transaction
        return Refused(message, layer=LAYER, node=keyword or None)
    if "multiple commands" in message:
        return Refused("only one statement may run at a time", layer=LAYER)
    if step in ("explain", "declare", "copy") and keyword not in _QUERY_STARTS:
        return Refused(f"{keyword or 'this statement'} is not a read-only query", layer=LAYER, node=keyword or None)
    if step in ("declare", "copy") and (state.startswith("0A") or state == "42601"):
        # EXPLAIN accepted it, DECLARE CURSOR (or COPY) did not: SELECT INTO, a data-modifying WITH, ...
        return Refused(f"not a plain query: {message}", layer=LAYER, node=keyword or None)
    return None


def _server_message(err: psycopg.Error, sql: str, *, offset: int | None = None) -> str:
    """One line: the server's primary message, where it points (for multi-line SQL) and its hint."""
    diag = err.diag
    text = str(err).strip()
    message = (diag.message_primary or (text.splitlines()[0] if text else "") or type(err).__name__).strip()
    position = diag.statement_position
    if offset is not None and position and "\n" in sql.strip():
        index = int(position) - 1 - offset
        if 0 <= index <= len(sql):
            message += f" (line {sql.count(chr(10), 0, index) + 1})"
    if diag.message_hint:
        message += f"; hint: {diag.message_hint}"
    return " ".join(message.split())


# ---- introspection ---------------------------------------------------------------------------------

# Relations in the given schemas; partitions are left out (their parent stands for them).
_RELATIONS = """
SELECT c.oid, n.nspname, c.relname, c.relkind, c.reltuples, c.relpages, c.relispopulated,
       obj_description(c.oid, 'pg_class') AS comment,
       has_table_privilege(c.oid, 'SELECT') AS readable,
       pg_relation_size(c.oid) AS bytes,
       part.tuples AS part_tuples, part.bytes AS part_bytes, part.unanalyzed AS part_unanalyzed
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN LATERAL (
    SELECT sum(greatest(l.reltuples, 0)) AS tuples, sum(pg_relation_size(l.oid)) AS bytes,
           bool_or(l.reltuples < 0) AS unanalyzed
    FROM pg_partition_tree(c.oid) t JOIN pg_class l ON l.oid = t.relid
    WHERE c.relkind = 'p' AND t.isleaf
) part ON true
WHERE n.nspname = ANY(%(schemas)s::name[]) AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND NOT c.relispartition
ORDER BY array_position(%(schemas)s::name[], n.nspname), c.relname COLLATE "C"
"""

_COLUMNS = """
SELECT a.attrelid, a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid), col_description(a.attrelid, a.attnum)
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE n.nspname = ANY(%(schemas)s::name[]) AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND NOT c.relispartition
  AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""

# Primary and foreign keys, columns in constraint order. conparentid = 0 skips the copies
# PostgreSQL makes of a partitioned table's foreign keys on its partitions.
_KEYS = """
SELECT con.conrelid, con.contype, con.conname::text,
       ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(num, ord)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num ORDER BY k.ord),
       rn.nspname::text, rc.relname::text,
       ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(num, ord)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.num ORDER BY k.ord)
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_class rc ON rc.oid = con.confrelid
LEFT JOIN pg_namespace rn ON rn.oid = rc.relnamespace
WHERE n.nspname = ANY(%(schemas)s::name[]) AND con.contype IN ('p', 'f') AND con.conparentid = 0
ORDER BY con.conrelid, con.contype DESC, con.conname
"""


@dataclass
class _Relation:
    oid: int
    schema: str
    name: str
    kind: str  # pg_class.relkind
    estimate: int | None  # planner's row estimate; None when the relation was never analyzed
    small: bool  # cheap to count exactly
    readable: bool
    populated: bool
    comment: str | None

    @property
    def ident(self) -> pgsql.Composable:
        return pgsql.Identifier(self.schema, self.name)

    @property
    def has_storage(self) -> bool:
        return self.kind in ("r", "p", "m")


class _Introspection:
    """One introspection run on a connection already inside BEGIN READ ONLY."""

    def __init__(self, conn: psycopg.Connection[Any], samples: int):
        self.conn = conn
        self.samples = samples

    def run(self) -> Schema:
        on_path = self._schemas()
        default = on_path[0] if on_path else ""
        params = {"schemas": on_path}
        relations = [_relation(row) for row in self.conn.execute(_RELATIONS, params).fetchall()] if on_path else []
        if not relations:  # nothing on the search path (all in `consumer_div`, say): every schema one may use
            params = {"schemas": on_path + [s for s in self._usable_schemas() if s not in on_path]}
            relations = [_relation(row) for row in self.conn.execute(_RELATIONS, params).fetchall()]
        if not relations:
            return Schema("postgres", ())
        columns: dict[int, list[Column]] = {}
        for oid, name, type_, notnull, default_expr, comment in self.conn.execute(_COLUMNS, params):
            columns.setdefault(oid, []).append(Column(name, type_, not notnull, False, default_expr, comment))
        primary: dict[int, tuple[str, ...]] = {}
        foreign: dict[int, list[ForeignKey]] = {}
        for oid, kind, _name, cols, ref_schema, ref_name, ref_cols in self.conn.execute(_KEYS, params):
            if kind == "p":
                primary[oid] = tuple(cols)
            else:
                ref = _display_name(ref_schema, ref_name, default)
                foreign.setdefault(oid, []).append(ForeignKey(tuple(cols), ref, tuple(ref_cols)))
        counts = self._exact_counts(relations)
        samples = self._sample_rows(relations) if self.samples > 0 else {}
        tables = []
        for rel in relations:
            cols = _with_keys_and_samples(columns.get(rel.oid, []), primary.get(rel.oid, ()),
                                          samples.get(rel.oid), self.samples)
            exact = rel.oid in counts
            tables.append(Table(
                name=rel.name, columns=tuple(cols), schema=rel.schema, kind=_KINDS[rel.kind],
                primary_key=primary.get(rel.oid, ()), foreign_keys=tuple(foreign.get(rel.oid, ())),
                row_count=counts[rel.oid] if exact else rel.estimate, row_count_exact=exact,
                comment=rel.comment, display_name=_display_name(rel.schema, rel.name, default),
            ))
        return Schema("postgres", tuple(tables))

    def _usable_schemas(self) -> list[str]:
        rows = self.conn.execute("SELECT nspname::text FROM pg_namespace WHERE has_schema_privilege(oid, 'USAGE') "
                                 "ORDER BY nspname COLLATE \"C\"").fetchall()
        return [r[0] for r in rows if r[0] not in _SYSTEM_SCHEMAS and not r[0].startswith("pg_")]

    def _schemas(self) -> list[str]:
        row = self.conn.execute("SELECT current_schemas(false)").fetchone()
        return [s for s in (row[0] if row else []) if s not in _SYSTEM_SCHEMAS and not s.startswith("pg_temp")]

    def _exact_counts(self, relations: list[_Relation]) -> dict[int, int]:
        targets = [r for r in relations if r.has_storage and r.estimate is None and r.small and r.readable
                   and r.populated]
        parts = {r.oid: pgsql.SQL("SELECT {}::bigint, count(*) FROM {}").format(r.oid, r.ident) for r in targets}
        return {oid: int(n) for oid, n in self._batched(parts).items()}

    def _sample_rows(self, relations: list[_Relation]) -> dict[int, list[dict[str, Any]]]:
        # Not foreign tables: reading them means calling another server, maybe slow or down.
        targets = [r for r in relations if r.readable and r.populated and r.kind != "f"]
        parts = {
            # x.* is the whole row even when a column happens to be called x
            r.oid: pgsql.SQL("SELECT {}::bigint, json_agg(x.*)::text FROM (SELECT * FROM {} LIMIT {}) x").format(
                r.oid, r.ident, _SAMPLE_ROWS)
            for r in targets
        }
        return {oid: json.loads(text, parse_float=Decimal) for oid, text in self._batched(parts).items() if text}

    def _batched(self, parts: Mapping[int, pgsql.Composed]) -> dict[int, Any]:
        """Run `SELECT key, value` snippets as UNION ALL batches, each under a savepoint; a batch that
        fails (a broken view, a lock, a timeout) is retried one relation at a time, and what still fails
        is left out."""
        out: dict[int, Any] = {}
        keys = list(parts)
        deadline = time.monotonic() + _RETRY_BUDGET_S
        for start in range(0, len(keys), _BATCH):
            chunk = keys[start : start + _BATCH]
            if self._try(_union(parts[k] for k in chunk), out):
                continue
            for key in chunk:
                if time.monotonic() > deadline:
                    break
                self._try(_union([parts[key]]), out)
        return out

    def _try(self, query: pgsql.Composed, out: dict[int, Any]) -> bool:
        self.conn.execute("SAVEPOINT routesh_introspect")
        try:
            rows = self.conn.execute(query).fetchall()
        except psycopg.Error:
            if self.conn.broken or self.conn.closed:
                raise
            self.conn.execute("ROLLBACK TO SAVEPOINT routesh_introspect")
            return False
        self.conn.execute("RELEASE SAVEPOINT routesh_introspect")
        out.update((int(key), value) for key, value in rows)
        return True


def _union(parts: Iterable[pgsql.Composed]) -> pgsql.Composed:
    return pgsql.SQL(" UNION ALL ").join(pgsql.SQL("({})").format(p) for p in parts)


def _relation(row: Sequence[Any]) -> _Relation:
    oid, schema, name, kind, reltuples, relpages, populated, comment, readable, size, \
        part_tuples, part_bytes, part_unanalyzed = row
    if kind == "p":
        unknown = part_unanalyzed is None or bool(part_unanalyzed)
        tuples, size = part_tuples or 0, part_bytes or 0
    else:
        # -1 means never analyzed (PostgreSQL 14+); 0 rows on 0 pages meant the same before.
        unknown = reltuples < 0 or (reltuples == 0 and relpages == 0)
        tuples = reltuples
    estimate = None if unknown or kind in ("v", "f") else round(tuples)
    return _Relation(
        oid=int(oid), schema=schema, name=name, kind=kind, estimate=estimate,
        small=(size or 0) <= _EXACT_COUNT_MAX_BYTES, readable=bool(readable),
        populated=bool(populated), comment=comment,
    )


def _with_keys_and_samples(columns: list[Column], pk: tuple[str, ...], rows: list[dict[str, Any]] | None,
                           limit: int) -> list[Column]:
    values: list[tuple[Any, ...]] = [()] * len(columns)
    if rows:
        names = [c.name for c in columns]
        table_rows = [tuple(row.get(n) for n in names) for row in rows if isinstance(row, dict)]
        values = distinct_samples(table_rows, len(columns), limit)
    return [
        Column(c.name, c.type, c.nullable, c.name in pk, c.default, c.comment, tuple(v))
        for c, v in zip(columns, values, strict=True)
    ]


def _display_name(schema: str | None, name: str | None, default: str) -> str:
    """Bare in the first schema of the search path, else schema-qualified."""
    if schema is None or name is None:
        return name or ""
    return name if schema == default else f"{schema}.{name}"
