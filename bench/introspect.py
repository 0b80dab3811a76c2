"""How long introspection takes on a database with many tables.

    python bench/introspect.py                      # SQLite, 1,000 tables
    python bench/introspect.py --pg-dsn postgresql://user@host/postgres   # also PostgreSQL (creates a database)
    python bench/introspect.py --start-pg           # also PostgreSQL, on a throwaway server (routesh/evaluate/pgserver.py)

Each table has 8 columns, a primary key, a foreign key to the previous table and 5 rows. Reports the
median of --repeat runs of Database.introspect() (with samples) and of introspect(samples=0).
"""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import machine_line  # noqa: E402
from routesh.db import connect  # noqa: E402

COLUMNS = "id INTEGER PRIMARY KEY, parent_id INTEGER, name TEXT NOT NULL, price NUMERIC(10,2), qty INTEGER, " \
          "created DATE, note TEXT, active BOOLEAN"


def ddl(n_tables: int) -> list[str]:
    statements = []
    for i in range(n_tables):
        fk = f", FOREIGN KEY (parent_id) REFERENCES t{i - 1:04d}(id)" if i else ""
        statements.append(f"CREATE TABLE t{i:04d} ({COLUMNS}{fk})")
        values = ", ".join(
            f"({r}, {r if i else 'NULL'}, 'item {i}-{r}', {r * 1.5}, {r * 3}, '2025-01-0{r}', NULL, {'TRUE' if r % 2 else 'FALSE'})"
            for r in range(1, 6)
        )
        statements.append(f"INSERT INTO t{i:04d} VALUES {values}")
    return statements


def time_introspection(dsn: str, repeat: int) -> dict[str, float]:
    db = connect(dsn)
    try:
        out = {}
        for label, samples in (("with samples", 3), ("no samples", 0)):
            runs = []
            for _ in range(repeat):
                started = time.perf_counter()
                schema = db.introspect(samples=samples)
                runs.append(time.perf_counter() - started)
            assert len(schema.tables) >= 1000, len(schema.tables)
            out[label] = statistics.median(runs)
        return out
    finally:
        db.close()


def build_sqlite(path: Path, n_tables: int) -> None:
    conn = sqlite3.connect(path)
    with conn:
        for statement in ddl(n_tables):
            conn.execute(statement)
    conn.close()


def build_postgres(admin_dsn: str, n_tables: int) -> str:
    import psycopg

    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS routesh_bench_introspect")
        conn.execute("CREATE DATABASE routesh_bench_introspect")
    dsn = psycopg.conninfo.make_conninfo(admin_dsn, dbname="routesh_bench_introspect")
    with psycopg.connect(dsn) as conn:
        for statement in ddl(n_tables):
            conn.execute(statement)
    return dsn


def analyze(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ANALYZE")


def arguments(description: str) -> argparse.Namespace:
    """The options of the benchmarks on this many-table database (this one and bench/values.py)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--tables", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--pg-dsn", help="an admin DSN of a PostgreSQL server to benchmark too")
    parser.add_argument("--start-pg", action="store_true", help="start a throwaway PostgreSQL server for it")
    return parser.parse_args()


def postgres_admin(args: argparse.Namespace, stack: contextlib.ExitStack) -> str | None:
    """--pg-dsn, or the admin DSN of a throwaway server kept running until `stack` closes (--start-pg)."""
    if args.start_pg:
        from routesh.evaluate.pgserver import start_server  # noqa: PLC0415

        return stack.enter_context(start_server()).admin_dsn
    return args.pg_dsn


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    print(machine_line())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "many.sqlite"
        build_sqlite(path, args.tables)
        for label, seconds in time_introspection(str(path), args.repeat).items():
            print(f"sqlite     {args.tables} tables, {label:12}: median {seconds * 1000:8.1f} ms over {args.repeat} runs")
    with contextlib.ExitStack() as stack:
        admin = postgres_admin(args, stack)
        if admin:
            dsn = build_postgres(admin, args.tables)
            # Never analyzed, routesh counts small tables exactly; once analyzed, it reads the estimates.
            for state in ("never analyzed", "analyzed"):
                if state == "analyzed":
                    analyze(dsn)
                for label, seconds in time_introspection(dsn, args.repeat).items():
                    print(f"postgresql {args.tables} tables, {state:14}, {label:12}: "
                          f"median {seconds * 1000:8.1f} ms over {args.repeat} runs")


if __name__ == "__main__":
    main()
