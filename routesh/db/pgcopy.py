"""Exports without a row limit from PostgreSQL: `COPY (query) TO STDOUT`, so that the server formats the csv or
tsv itself, as psql's \\copy has it do (fetching typed rows and formatting them in Python took 4.3× psql's time).

It runs inside the read-only envelope that `PostgresDatabase.execute` opened, after its EXPLAIN check, which also
proves `query` to be one statement, so that the parentheses around it hold. The rows are read straight from libpq
(one message a row) without psycopg's per-row machinery, and written to the sink about a megabyte at a time.
The server's statement timeout would bound the whole export; instead, as for a streamed FETCH, the timeout bounds
the wait for the next rows (`stall_timeout`), and a cancel stops the writing at once, after a whole row.
"""

from __future__ import annotations

import csv
import io
import select
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import psycopg
from psycopg import pq
from psycopg.errors import error_from_result

from routesh.db.base import TextSink
from routesh.errors import QueryTimeout

CHUNK_BYTES = 1 << 20  # rows are handed to the sink in pieces about this big
_POLL_S = 0.2  # how often a wait for the server looks at the cancel flag and the stall clock
COPY_PREFIX = "COPY ("  # what stands before the query in the statement (error positions are shifted by it)


def copy_statement(query: str, delimiter: str) -> str:
    options = "FORMAT csv, HEADER true" + (", DELIMITER E'\\t'" if delimiter == "\t" else "")
    if delimiter not in (",", "\t"):
        raise ValueError(f"COPY exports csv or tsv, not the delimiter {delimiter!r}")
    body = query.strip().rstrip(";").rstrip()
    return f"{COPY_PREFIX}{body}\n) TO STDOUT WITH ({options})"  # the newline ends a trailing -- comment


def copy_out(conn: psycopg.Connection[Any], query: str, sink: TextSink, *, stall_timeout: float,
             stop_requested: Callable[[], bool]) -> tuple[list[str], int]:
    """Run `query` as a COPY into `sink`: its columns (from the server's header line) and the rows written.
    Raises psycopg's error for what the server refused, QueryTimeout when rows stopped coming. After
    `stop_requested()` turns true (the caller has asked the server to cancel) nothing more is written."""
    encoding = conn.info.encoding
    pg = conn.pgconn
    pg.send_query(copy_statement(query, sink.delimiter).encode(encoding))
    reader = _Reader(conn, stall_timeout, stop_requested)
    columns: list[str] = []
    written = 0
    try:
        result = reader.result()
        if result.status == pq.ExecStatus.COPY_OUT:
            columns, written = reader.rows_into(sink, encoding)
            result = reader.result()
        reader.drain()
    except BaseException:
        reader.abandon()
        raise
    if result.status != pq.ExecStatus.COMMAND_OK:
        raise error_from_result(result, encoding=encoding)
    return columns, written


class _Reader:
    """libpq's non-blocking calls on `conn`, waiting on its socket a little at a time."""

    def __init__(self, conn: psycopg.Connection[Any], stall_timeout: float, stop_requested: Callable[[], bool]):
        self.conn = conn
        self.pg = conn.pgconn
        self.stall_timeout = stall_timeout
        self.stop_requested = stop_requested
        self.last_data = time.monotonic()
        self.stalled = False

    def wait(self) -> None:
        """Until the socket has something (or a poll interval passed); cancels on the server a COPY whose
        rows stopped coming, so that what is waited for next is its error."""
        if not select.select([self.pg.socket], [], [], _POLL_S)[0]:
            if self.stall_timeout > 0 and not self.stalled and time.monotonic() - self.last_data > self.stall_timeout:
                self.stalled = True
                self.conn.cancel_safe(timeout=5)
        self.pg.consume_input()

    def result(self) -> pq.abc.PGresult:
        while self.pg.is_busy():
            self.wait()
        result = self.pg.get_result()
        if result is None:
            raise psycopg.OperationalError("the server sent no result for COPY")
        if self.stalled and result.status == pq.ExecStatus.FATAL_ERROR:  # our cancel: the wait was too long
            raise QueryTimeout(f"statement timed out after {self.stall_timeout:g} s")
        return result

    def rows_into(self, sink: TextSink, encoding: str) -> tuple[list[str], int]:
        get = self.pg.get_copy_data
        while (first := get(1))[0] == 0:
            self.wait()
        if first[0] < 0:  # no header: the COPY ended at once (its result says why)
            return [], 0
        header = next(csv.reader(io.StringIO(bytes(first[1]).decode(encoding)), delimiter=sink.delimiter))
        sink.begin(header)
        pending: list[bytes] = []  # whole rows, one libpq message each
        size = written = seen = 0

        def flush() -> None:
            nonlocal size, written
            if pending and not self.stop_requested():
                sink.write_lines(b"".join(pending).decode(encoding), len(pending))
                written += len(pending)
            pending.clear()
            size = 0

        keep = pending.append
        while True:  # the hot loop: one pass a row, nothing in it that a megabyte's flush can do
            n, data = get(1)
            if n > 0:
                keep(data)
                size += n
                if size >= CHUNK_BYTES:
                    flush()
            elif n == 0:  # nothing buffered: write what came (a slow export still shows progress), then wait
                flush()
                if written != seen:
                    self.last_data, seen = time.monotonic(), written
                self.wait()
            else:  # -1: the COPY ended (its result follows)
                flush()
                return header, written

    def drain(self) -> None:
        while True:
            while self.pg.is_busy():
                self.wait()
            if self.pg.get_result() is None:
                return

    def abandon(self) -> None:
        """After an error while the COPY runs (the sink failed, the server refused, rows stopped coming): stop it
        on the server and read what is left, so that the connection can roll back; if that fails or takes too
        long, the caller's rollback finds the connection mid-COPY and closes it."""
        give_up = time.monotonic() + 10
        if not self.stalled:  # a stalled COPY was cancelled already
            with suppress(psycopg.Error):
                self.conn.cancel_safe(timeout=5)
        with suppress(psycopg.Error):  # the rows still coming, if the COPY still runs (else: an error at once)
            while time.monotonic() < give_up and (n := self.pg.get_copy_data(1)[0]) >= 0:
                if n == 0:
                    self.wait()
        with suppress(psycopg.Error):  # its results, to the end
            while time.monotonic() < give_up:
                if self.pg.is_busy():
                    self.wait()
                elif self.pg.get_result() is None:
                    return
