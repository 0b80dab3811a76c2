"""An index of a database's short text values, so that a question's words can be matched to the spelling
the database stores ("lyon" → 'Lyon'). Built lazily, a few columns at a time, within a time budget per
call; what is indexed stays for the next question. It holds no connection: each call is handed the
database to read from (the caller's thread's own connection), so one index serves concurrent questions.

Every read goes through `Database.execute` inside the database's read-only envelope and the statement
timeout, as UNION ALL batches of bounded per-column queries: a column contributes at most `per_column`
distinct values from its first `scan_rows` non-NULL rows, each at most `max_chars` long. The sqlglot
guard is skipped: these statements are composed here from quoted names, never from user text, and
parsing them cost 95% of the indexing time.
"""

from __future__ import annotations

import bisect
import threading
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from difflib import SequenceMatcher

from sqlglot import exp

from routesh.db.base import Database, ExecOptions
from routesh.db.schema import Column, Schema, Table
from routesh.errors import Cancelled, QueryError, Refused

PER_COLUMN = 200  # distinct values kept per column
SCAN_ROWS = 5000  # rows read per column to find them
MAX_CHARS = 40  # longer texts are prose, not values a question spells out
BATCH = 25  # columns per statement
STATEMENT_TIMEOUT_S = 2.0

_SQLITE_TEXT = ("CHAR", "CLOB", "TEXT")
_POSTGRES_TEXT = ("text", "character", "varchar", "char", "citext", "bpchar", "name")


@dataclass(frozen=True)
class StoredValue:
    table: str  # the table's display name
    column: str
    value: str  # as stored


def normalize(text: str) -> str:
    """Case, accents and punctuation folded away: 'São Paulo!' and 'sao paulo' are one key."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()
    return " ".join("".join(ch if ch.isalnum() else " " for ch in plain).split())


def is_text_column(column: Column, dialect: str) -> bool:
    declared = column.type.strip()
    if dialect == "sqlite":
        return not declared or any(word in declared.upper() for word in _SQLITE_TEXT)
    return declared.lower().startswith(_POSTGRES_TEXT)


@dataclass
class ValueIndex:
    schema: Schema
    per_column: int = PER_COLUMN
    scan_rows: int = SCAN_ROWS
    max_chars: int = MAX_CHARS
    _pending: list[tuple[Table, Column]] = field(default_factory=list)
    _alone: list[tuple[Table, Column]] = field(default_factory=list)  # of a failed batch: retried one by one
    _by_key: dict[str, list[StoredValue]] = field(default_factory=dict)
    _by_word: dict[str, set[str]] = field(default_factory=dict)  # a word → the multi-word keys holding it
    _by_length: dict[int, list[str]] = field(default_factory=dict)  # key length → keys (sorted)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    skipped: int = 0  # columns whose batch failed (timeout, permission): left out

    def __post_init__(self) -> None:
        self._pending = [(t, c) for t in self.schema.tables for c in t.columns
                         if is_text_column(c, self.schema.dialect)]

    @property
    def complete(self) -> bool:
        return not self._pending and not self._alone

    @property
    def size(self) -> int:
        return sum(len(v) for v in self._by_key.values())

    # ---- building -------------------------------------------------------------------------------

    def extend(self, db: Database, *, budget_s: float, first: Callable[[Table], bool] | None = None) -> None:
        """Index pending columns until `budget_s` is spent (a batch started is finished, each bounded by
        its statement timeout; one is not started when the last one's time would overrun the budget).
        `first`: tables to index before the others (those the question names)."""
        deadline = time.monotonic() + budget_s
        last = 0.0
        with self._lock:
            if first is not None:
                self._pending.sort(key=lambda tc: not first(tc[0]))  # stable: schema order otherwise
            while not self.complete and time.monotonic() + last < deadline:
                batch = self._next_batch()
                started = time.monotonic()
                timeout = max(0.1, min(STATEMENT_TIMEOUT_S, deadline - started))
                try:
                    result = db.execute(self._batch_sql(batch), guard=False,
                                        options=ExecOptions(row_limit=len(batch) * self.per_column, timeout=timeout))
                except Cancelled:
                    self._pending[:0] = batch
                    raise
                except (QueryError, Refused):  # a slow or unreadable table: left out, the rest goes on
                    if len(batch) > 1:
                        self._alone += batch
                    else:
                        self.skipped += 1
                    continue
                finally:
                    last = time.monotonic() - started
                for position, value in result.rows:
                    table, column = batch[int(position)]
                    if isinstance(value, str):
                        self._add(StoredValue(table.display_name, column.name, value))

    def _next_batch(self) -> list[tuple[Table, Column]]:
        if self._alone:
            return [self._alone.pop(0)]
        batch, self._pending = self._pending[:BATCH], self._pending[BATCH:]
        return batch

    def _batch_sql(self, batch: list[tuple[Table, Column]]) -> str:
        dialect = self.schema.dialect
        arms = []
        for position, (table, column) in enumerate(batch):
            col = exp.column(column.name, quoted=True).sql(dialect)
            source = exp.table_(table.name, db=table.schema, quoted=True).sql(dialect)
            only_text = f" AND typeof({col}) = 'text'" if dialect == "sqlite" else ""
            rows = f"SELECT CAST({col} AS TEXT) AS v FROM {source} WHERE {col} IS NOT NULL{only_text} LIMIT {self.scan_rows}"
            distinct = (f"SELECT DISTINCT v FROM ({rows}) AS r{position} "
                        f"WHERE length(v) BETWEEN 1 AND {self.max_chars} LIMIT {self.per_column}")
            arms.append(f"SELECT {position} AS k, v FROM ({distinct}) AS d{position}")
        return " UNION ALL ".join(arms)

    def _add(self, stored: StoredValue) -> None:
        key = normalize(stored.value)
        if not key:
            return
        holders = self._by_key.setdefault(key, [])
        if not holders:
            bisect.insort(self._by_length.setdefault(len(key), []), key)
            words = key.split()
            if len(words) > 1:
                for word in set(words):
                    self._by_word.setdefault(word, set()).add(key)
        holders.append(stored)

    # ---- looking up ------------------------------------------------------------------------------

    def exact(self, key: str) -> list[StoredValue]:
        return list(self._by_key.get(key, ()))

    def containing(self, key: str) -> list[StoredValue]:
        """Multi-word values holding `key`'s words in order, as whole words ('tesla' → 'Tesla Motors')."""
        words = key.split()
        if not words:
            return []
        keys = set.intersection(*(self._by_word.get(w, set()) for w in words))
        padded = f" {key} "
        return [v for k in sorted(keys) if padded in f" {k} " and k != key for v in self._by_key[k]]

    def near(self, key: str, cutoff: float) -> list[tuple[float, StoredValue]]:
        """Values spelled almost like `key` (a typo, a plural): similar length and first letter, then
        difflib's ratio at least `cutoff`."""
        slack = max(1, len(key) // 5)
        found = []
        for length in range(len(key) - slack, len(key) + slack + 1):
            for other in self._by_length.get(length, ()):
                if other == key or other[0] != key[0]:
                    continue
                matcher = SequenceMatcher(None, key, other, autojunk=False)
                if matcher.real_quick_ratio() >= cutoff and matcher.quick_ratio() >= cutoff:
                    ratio = matcher.ratio()
                    if ratio >= cutoff:
                        found += [(ratio, v) for v in self._by_key[other]]
        return found
