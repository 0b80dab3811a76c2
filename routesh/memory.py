"""Remembered queries: the questions a user asked with the SQL they ran for them (as generated, or as they
edited it), kept in one local SQLite file (the user data directory; ROUTESH_MEMORY moves it) and offered as
examples to later questions on a database with the same schema. Nothing leaves the machine.

A database is known by its schema's fingerprint (its tables and columns), not by its path or DSN: a copy of
the database, or the same schema on another server, shares what was remembered."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from routesh.db.schema import Schema
from routesh.retrieval import Example, most_similar

MEMORY_ENV = "ROUTESH_MEMORY"
_TABLE = """CREATE TABLE IF NOT EXISTS remembered (
    id INTEGER PRIMARY KEY, fingerprint TEXT NOT NULL, question TEXT NOT NULL, sql TEXT NOT NULL,
    database TEXT NOT NULL, created TEXT NOT NULL, UNIQUE (fingerprint, question))"""


def default_path() -> Path:
    env = os.environ.get(MEMORY_ENV)
    return Path(env).expanduser() if env else Path(platformdirs.user_data_dir("routesh")) / "memory.sqlite"


def schema_fingerprint(schema: Schema) -> str:
    """Which schema a remembered query belongs to: its tables' and columns' names, in any order or case."""
    names = sorted(f"{t.display_name}.{c.name}".lower() for t in schema.tables for c in t.columns)
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Remembered:
    id: int
    question: str
    sql: str
    database: str  # where it was asked, for \memory
    created: str

    @property
    def example(self) -> Example:
        return Example(self.question, self.sql)


class QueryMemory:
    """The file of remembered queries. Opened on first use; one connection, used under a lock (the shell asks
    from its worker thread and remembers from its main one)."""

    def __init__(self, path: Path | str | None = None):
        self.path = Path(path) if path is not None else default_path()
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._connection = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._connection.execute(_TABLE)
        return self._connection

    def remember(self, fingerprint: str, question: str, sql: str, database: str) -> Remembered:
        """Keep (question, SQL); asked again, the question keeps its number and takes the newer SQL."""
        question, sql = " ".join(question.split()), sql.strip()
        created = dt.datetime.now().isoformat(timespec="seconds")
        with self._lock:
            db = self._db()
            db.execute("INSERT INTO remembered (fingerprint, question, sql, database, created) VALUES (?, ?, ?, ?, ?)"
                       " ON CONFLICT (fingerprint, question) DO UPDATE SET sql = excluded.sql,"
                       " database = excluded.database, created = excluded.created",
                       (fingerprint, question, sql, database, created))
            row = db.execute("SELECT id FROM remembered WHERE fingerprint = ? AND question = ?",
                             (fingerprint, question)).fetchone()
        return Remembered(row[0], question, sql, database, created)

    def entries(self, fingerprint: str) -> list[Remembered]:
        if self._connection is None and not self.path.exists():
            return []  # nothing remembered yet: reading creates no file
        with self._lock:
            rows = self._db().execute("SELECT id, question, sql, database, created FROM remembered"
                                      " WHERE fingerprint = ? ORDER BY id", (fingerprint,)).fetchall()
        return [Remembered(*row) for row in rows]

    def forget(self, fingerprint: str, number: int) -> Remembered | None:
        """Drop remembered query `number` of this schema; the one dropped, or None when there is none."""
        gone = next((r for r in self.entries(fingerprint) if r.id == number), None)
        if gone is not None:
            with self._lock:
                self._db().execute("DELETE FROM remembered WHERE id = ?", (number,))
        return gone

    def for_schema(self, fingerprint: str, method: str = "bm25") -> SchemaMemory:
        return SchemaMemory(self, fingerprint, method)

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None


@dataclass(frozen=True)
class SchemaMemory:
    """One schema's remembered queries: what the shell's commands list, keep and drop, and a pipeline's
    ExampleSource."""

    store: QueryMemory
    fingerprint: str
    method: str = "bm25"

    @property
    def path(self) -> Path:
        return self.store.path

    def entries(self) -> list[Remembered]:
        return self.store.entries(self.fingerprint)

    def remember(self, question: str, sql: str, database: str) -> Remembered:
        return self.store.remember(self.fingerprint, question, sql, database)

    def forget(self, number: int) -> Remembered | None:
        return self.store.forget(self.fingerprint, number)

    def similar(self, question: str, k: int) -> list[Example]:
        return most_similar(question, [r.example for r in self.entries()], k, self.method)
