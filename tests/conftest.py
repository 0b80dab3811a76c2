"""Shared pytest fixtures.

PostgreSQL: one real throwaway server per test session (tests/pg_server.py). Without server binaries
the PostgreSQL tests are skipped with the reason, unless CI is set, where that is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.pg_server import PgServer, find_bin_dir, start_server

DEFOG_DATABASES = Path(__file__).resolve().parents[2] / "shared" / "data" / "postgres-defog" / "databases"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A running PostgreSQL server: .host, .port, .superuser, .admin_dsn, .dsn(db, user=, password=),
    .create_database(name, sql_file=, sql_text=) -> DSN, .admin_connect(db)."""
    if find_bin_dir() is None:
        reason = "no PostgreSQL server binaries (initdb, pg_ctl, postgres) on PATH or in /usr/lib/postgresql"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI is set, so the PostgreSQL tests must run", pytrace=False)
        pytest.skip(f"PostgreSQL tests skipped: {reason}")
    with start_server() as server:
        yield server


@pytest.fixture(scope="session")
def pg_dsn_for(pg_server: PgServer) -> Callable[[str], str]:
    """pg_dsn_for(dbname) -> the superuser's DSN for that database on the test server."""
    return pg_server.dsn


@pytest.fixture(scope="session")
def defog_db(pg_server: PgServer) -> Callable[[str], str]:
    """defog_db(name) -> DSN of shared/data/postgres-defog/databases/<name>.sql, loaded once per session."""
    loaded: dict[str, str] = {}

    def load(name: str) -> str:
        if name not in loaded:
            sql_file = DEFOG_DATABASES / f"{name}.sql"
            if not sql_file.exists():
                pytest.fail(f"missing test data: {sql_file}", pytrace=False)
            loaded[name] = pg_server.create_database(name, sql_file)
        return loaded[name]

    return load
