"""Load postgres-defog's databases (databases/<db>.sql: DDL and INSERTs) on a PostgreSQL server.

Given a superuser (or CREATEDB) DSN, each needed database <db> becomes a database named
`defog_<db>` on that server, created and loaded once:

- It is reused, without loading anything, when it exists and holds every table its .sql file creates
  (each `CREATE TABLE [schema.]name` of the file, looked up with to_regclass in the new database).
- When it exists but holds no table at all in a user schema (an interrupted first load: the script runs
  as one transaction, so a failed load leaves the database empty), it is dropped and loaded again.
- When it exists and holds other tables but not the expected ones, nothing is touched: that is a
  UsageError naming the database, since it is not one routesh-eval made.

A database it loads gets a COMMENT naming the source file and its sha256, for whoever looks later.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from routesh.db.dsn import redact
from routesh.errors import ConnectError, UsageError
from routesh.evaluate.datasets import Example

PREFIX = "defog_"
_CREATE_TABLE = re.compile(
    r'^\s*CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?((?:"[^"]+"|[\w$]+)(?:\.(?:"[^"]+"|[\w$]+))?)',
    re.IGNORECASE | re.MULTILINE,
)
_USER_TABLES = """SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_%'"""


@dataclass(frozen=True)
class Loaded:
    db_id: str
    database: str  # the name on the server
    dsn: str
    action: str  # "loaded" | "reused" | "reloaded"


def created_tables(script: str) -> list[str]:
    """The relations a DDL script creates, as to_regclass() reads them ("public.author")."""
    return list(dict.fromkeys(m.group(1) for m in _CREATE_TABLE.finditer(script)))


def database_dsn(admin_dsn: str, database: str) -> str:
    """The admin DSN pointed at another database (a libpq conninfo string)."""
    try:
        return make_conninfo(admin_dsn, dbname=database)
    except psycopg.ProgrammingError as err:
        raise UsageError(f"--pg-dsn: cannot read {redact(admin_dsn)} as a PostgreSQL DSN ({err})") from None


def load_databases(admin_dsn: str, sources: dict[str, Path], *, prefix: str = PREFIX) -> dict[str, Loaded]:
    """Make sure each db_id → .sql file is loaded as `<prefix><db_id>`; returns how each one got there."""
    out: dict[str, Loaded] = {}
    try:
        admin = psycopg.connect(admin_dsn, autocommit=True, connect_timeout=10)
    except psycopg.Error as err:
        raise ConnectError(f"--pg-dsn: cannot connect to {redact(admin_dsn)}: "
                           f"{str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}") from None
    with admin:
        for db_id, sql_file in sources.items():
            try:
                out[db_id] = _load_one(admin, admin_dsn, prefix + db_id, db_id, sql_file)
            except psycopg.Error as err:  # e.g. a role that may not create databases
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise UsageError(f"--pg-dsn: preparing database {prefix + db_id} failed: {first}") from None
    return out


def _load_one(admin: psycopg.Connection, admin_dsn: str, name: str, db_id: str, sql_file: Path) -> Loaded:
    script = sql_file.read_text(encoding="utf-8")
    tables = created_tables(script)
    dsn = database_dsn(admin_dsn, name)
    action = "loaded"
    if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            missing = [t for t in tables if conn.execute("SELECT to_regclass(%s)", (t,)).fetchone()[0] is None]
            others = conn.execute(_USER_TABLES).fetchone()[0]
        if not missing:
            return Loaded(db_id, name, dsn, "reused")
        if others:
            raise UsageError(f"database {name} exists on the server but lacks {len(missing)} of the tables of "
                             f"{sql_file.name} (e.g. {missing[0]}); drop it, or point --pg-dsn elsewhere")
        admin.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))
        action = "reloaded"
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            conn.execute(script)  # type: ignore[arg-type]  # no parameters: the simple protocol, one transaction
    except psycopg.Error as err:
        raise UsageError(f"loading {sql_file} into {name} failed: {str(err).strip().splitlines()[0]}") from None
    digest = hashlib.sha256(script.encode()).hexdigest()
    admin.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
        sql.Identifier(name), sql.Literal(f"routesh-eval: postgres-defog {sql_file.name} sha256 {digest}")))
    return Loaded(db_id, name, dsn, action)


def attach_databases(examples: Iterable[Example], admin_dsn: str, *, prefix: str = PREFIX
                     ) -> tuple[list[Example], dict[str, Loaded]]:
    """The examples with their `dsn` filled in, after loading the databases they need (those with a
    setup_sql and no dsn yet), each once."""
    examples = list(examples)
    sources = {ex.db_id: ex.setup_sql for ex in examples if ex.dsn is None and ex.setup_sql is not None}
    loaded = load_databases(admin_dsn, sources, prefix=prefix) if sources else {}
    return [replace(ex, dsn=loaded[ex.db_id].dsn) if ex.db_id in loaded and ex.dsn is None else ex
            for ex in examples], loaded
