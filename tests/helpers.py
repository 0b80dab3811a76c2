"""Small shared test helpers: build real SQLite files, run the real routesh executable, call from threads."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def make_shop_db(path: Path, *, rows: int = 50) -> Path:
    """A small real SQLite database with a foreign key, used across tests."""
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE customer (id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT);
        CREATE TABLE orders (
            id INTEGER PRIMARY KEY,
            customer_id INTEGER NOT NULL REFERENCES customer(id),
            total REAL,
            placed DATE
        );
        CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 100;
        """
    )
    conn.executemany("INSERT INTO customer VALUES (?, ?, ?)",
                     [(i, f"customer {i}", ["Lyon", "Oslo", None][i % 3]) for i in range(1, 11)])
    conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?)",
                     [(i, i % 10 + 1, float(i * 7 % 250), f"2025-01-{i % 28 + 1:02d}") for i in range(1, rows + 1)])
    conn.commit()
    conn.close()
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Run:
    code: int
    out: str
    err: str


def routesh(*args: str, stdin: str | None = None, env: dict[str, str] | None = None, timeout: float = 60) -> Run:
    """Run the installed `routesh` console script as a user would."""
    exe = Path(sys.executable).with_name("routesh")
    proc = subprocess.run([str(exe), *args], input=stdin, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    return Run(proc.returncode, proc.stdout, proc.stderr)



class InThread:
    """fn(*args, **kwargs) started on its own daemon thread, as one of several concurrent callers."""

    def __init__(self, fn: Callable[..., object], *args: object, **kwargs: object) -> None:
        self.value: object = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(fn, args, kwargs), daemon=True)
        self.thread.start()

    def _run(self, fn: Callable[..., object], args: tuple[object, ...], kwargs: dict[str, object]) -> None:
        try:
            self.value = fn(*args, **kwargs)
        except BaseException as err:  # noqa: BLE001 - the test inspects it
            self.error = err

    def finished(self, timeout: float = 5.0) -> bool:
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def result(self, timeout: float = 5.0) -> object:
        """What the call returned; re-raises what it raised; fails the test if it is still running."""
        assert self.finished(timeout), "the call is still running"
        if self.error is not None:
            raise self.error
        return self.value


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll `condition` until it holds; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.005)
