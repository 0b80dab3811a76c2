"""The SQLite read-only envelope, end to end on real files.

For every adversarial attempt (tests/adversarial.py): the guard (layer a) refuses it, and with the guard
skipped the database itself (layer b: mode=ro, query_only, SQLITE_LIMIT_ATTACHED=0, the authorizer)
refuses or fails it, leaving the file's bytes as they were and creating no file. Also: write mode,
the statement timeout and cancelling from another thread.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from routesh.sql import guard
from routesh.db.base import ExecOptions
from routesh.db.sqlite import SqliteDatabase
from routesh.errors import QueryCancelled, QueryError, QueryTimeout, Refused
from tests.adversarial import SQLITE_ATTEMPTS, SQLITE_READ_ONLY, render

VICTIM_ROWS = [(i, f"victim {i}") for i in range(1, 21)]
RUNAWAY = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r"


def build_db(path: Path) -> Path:
    """The fixture database the corpora assume: t, victim (rows), an odd table, an index, a view, a trigger."""
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE t (
            id INTEGER PRIMARY KEY, name TEXT NOT NULL, grp TEXT, amount REAL,
            parent_id INTEGER REFERENCES t(id), created TEXT
        );
        CREATE TABLE victim (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
        CREATE TABLE "odd table; DROP TABLE victim" ("select" INTEGER, "from" TEXT, "a""b" TEXT);
        CREATE INDEX idx_victim_name ON victim (name);
        CREATE VIEW v_t AS SELECT id, name FROM t;
        CREATE TRIGGER trg_t AFTER INSERT ON t BEGIN SELECT 1; END;
        """
    )
    conn.executemany(
        "INSERT INTO t VALUES (?, ?, ?, ?, ?, ?)",
        [(i, f"name {chr(96 + i)}", "ab"[i % 2], i * 2.5, None if i <= 2 else i // 2, f"2024-01-{i:02d}")
         for i in range(1, 11)],
    )
    conn.executemany("INSERT INTO victim VALUES (?, ?)", VICTIM_ROWS)
    conn.execute("""INSERT INTO "odd table; DROP TABLE victim" VALUES (1, 'x', 'y')""")
    conn.commit()
    conn.close()
    return path


def snapshot(directory: Path) -> dict[str, str]:
    """Every file under `directory` (the database, any -journal/-wal/-shm, anything new) with its sha256."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def victim_rows(path: Path) -> list[tuple]:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT id, name FROM victim ORDER BY id").fetchall()
    finally:
        conn.close()


@pytest.fixture
def db_file(tmp_path: Path) -> Path:
    return build_db(tmp_path / "fixture.db")


@pytest.fixture
def db(db_file: Path):
    database = SqliteDatabase.open(db_file)
    yield database
    database.close()


# ---- every attempt, both layers --------------------------------------------------------------------


@pytest.mark.parametrize("sql", [pytest.param(sql, id=label) for label, sql in SQLITE_ATTEMPTS])
def test_attempt_is_refused_and_changes_nothing(tmp_path: Path, sql: str):
    db_file = build_db(tmp_path / "fixture.db")
    statement = render(sql, tmp=str(tmp_path))
    before = snapshot(tmp_path)
    assert set(before) == {"fixture.db"}

    db = SqliteDatabase.open(db_file)
    try:
        # (i) layer (a)
        with pytest.raises(Refused) as refused:
            db.execute(statement)
        assert refused.value.layer == guard.LAYER
        assert snapshot(tmp_path) == before

        # (ii) layer (b) alone: the database refuses or fails it; it never returns a result
        try:
            result = db.execute(statement, guard=False)
        except Refused as err:
            assert err.layer != guard.LAYER  # the envelope, not the skipped guard
        except QueryError:
            pass
        else:
            pytest.fail(f"the SQLite envelope ran it: {statement!r} -> {result!r}")

        # the envelope is still shut: still query_only, still no writes, and the connection answers
        assert db.execute("SELECT * FROM pragma_query_only", guard=False).rows == [(1,)]
        with pytest.raises((Refused, QueryError)):
            db.execute("DELETE FROM victim", guard=False)
        assert db.execute("SELECT count(*) FROM victim").rows == [(len(VICTIM_ROWS),)]
    finally:
        db.close()

    after = snapshot(tmp_path)
    assert sorted(after) == sorted(before), f"files appeared or vanished: {sorted(set(after) ^ set(before))}"
    assert after == before, "the database file's bytes changed"
    assert victim_rows(db_file) == VICTIM_ROWS


@pytest.mark.parametrize("sql", [pytest.param(sql, id=label) for label, sql in SQLITE_READ_ONLY])
def test_read_only_query_runs_through_both_layers(db: SqliteDatabase, db_file: Path, sql: str):
    """The envelope is not so tight that real questions fail: every read-only query of the guard tests runs."""
    before = snapshot(db_file.parent)
    result = db.execute(sql)
    assert result.columns
    assert snapshot(db_file.parent) == before


# ---- write mode -------------------------------------------------------------------------------------


def test_write_mode_writes_this_file_but_nothing_else(db: SqliteDatabase, db_file: Path, tmp_path: Path):
    db.set_writes(True)
    assert db.writes_allowed
    db.execute("INSERT INTO victim (id, name) VALUES (100, 'added')")
    assert (100, "added") in victim_rows(db_file)  # committed: another connection sees it

    files_before = set(snapshot(tmp_path))
    escapes = [
        f"ATTACH DATABASE '{tmp_path}/attached.db' AS other",
        "ATTACH ':memory:' AS mem",
        f"VACUUM INTO '{tmp_path}/copy.db'",
        f"SELECT load_extension('{tmp_path}/evil')",
        f"INSERT INTO victim (id, name) VALUES (101, load_extension('{tmp_path}/evil'))",
    ]
    for sql in escapes:
        with pytest.raises(Refused) as refused:
            db.execute(sql)
        assert refused.value.layer == guard.LAYER
        with pytest.raises((Refused, QueryError)):
            db.execute(sql, guard=False)
    assert set(snapshot(tmp_path)) == files_before
    assert 101 not in {row[0] for row in victim_rows(db_file)}

    # back to read-only: the write path is shut again, in both layers
    db.set_writes(False)
    with pytest.raises(Refused):
        db.execute("DELETE FROM victim")
    with pytest.raises((Refused, QueryError)):
        db.execute("DELETE FROM victim", guard=False)
    assert len(victim_rows(db_file)) == len(VICTIM_ROWS) + 1


# ---- stopping a runaway query ----------------------------------------------------------------------


def test_runaway_query_stops_at_the_timeout(db: SqliteDatabase):
    started = time.monotonic()
    with pytest.raises(QueryTimeout):
        db.execute(RUNAWAY, options=ExecOptions(timeout=0.3))
    elapsed = time.monotonic() - started
    assert 0.25 <= elapsed < 5, elapsed
    assert db.execute("SELECT count(*) FROM victim").rows == [(len(VICTIM_ROWS),)]


def test_cancel_from_another_thread(db: SqliteDatabase):
    timer = threading.Timer(0.3, db.cancel)
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(QueryCancelled):
            db.execute(RUNAWAY, options=ExecOptions(timeout=0))  # no timeout: only the cancel stops it
    finally:
        timer.cancel()
    assert time.monotonic() - started < 5
    assert db.execute("SELECT count(*) FROM victim").rows == [(len(VICTIM_ROWS),)]
    # a cancel while nothing runs does not hit the next statement
    db.cancel()
    assert db.execute("SELECT max(id) FROM victim").rows == [(len(VICTIM_ROWS),)]
