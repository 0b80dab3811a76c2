"""Shared pytest fixtures.

PostgreSQL: one real throwaway server per test session (routesh/evaluate/pgserver.py). Without server binaries
the PostgreSQL tests are skipped with the reason, unless CI is set, where that is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from routesh.evaluate.pgserver import PgServer, find_bin_dir, start_server

DEFOG_DATABASES = Path(__file__).resolve().parents[2] / "shared" / "data" / "postgres-defog" / "databases"


@pytest.fixture(scope="session", autouse=True)
def library_log(tmp_path_factory) -> Path:
    """Library messages of every routesh the tests start go to a file of this session, not the user's."""
    path = tmp_path_factory.mktemp("log") / "routesh.log"
    os.environ["ROUTESH_LOG"] = str(path)
    return path


@pytest.fixture(autouse=True)
def query_memory(tmp_path, monkeypatch) -> Path:
    """Remembered queries go to a file of each test (the shells a test starts inherit it), never the user's."""
    path = tmp_path / "memory.sqlite"
    monkeypatch.setenv("ROUTESH_MEMORY", str(path))
    return path


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


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Iterator[Path]:
    """A model cache of this test session's own (ROUTESH_CACHE_DIR), so the conversion path runs for real
    and nothing leaks into the user's cache. The catalog test model's wheel must be installed."""
    from routesh.engine.models import CATALOG, TEST_MODEL, locate_parts
    from routesh.errors import ModelError

    try:
        locate_parts(CATALOG[TEST_MODEL])
    except ModelError as err:
        pytest.fail(str(err), pytrace=False)
    cache = tmp_path_factory.mktemp("model-cache")
    previous = os.environ.get("ROUTESH_CACHE_DIR")
    os.environ["ROUTESH_CACHE_DIR"] = str(cache)
    yield cache
    if previous is None:
        os.environ.pop("ROUTESH_CACHE_DIR", None)
    else:
        os.environ["ROUTESH_CACHE_DIR"] = previous
