"""The PostgreSQL read-only envelope, end to end on a real server (routesh/evaluate/pgserver.py).

For every adversarial attempt (tests/adversarial.py), connected as a superuser (the worst case: COPY
TO PROGRAM, lo_export and dblink are all within its rights): the guard (layer a) refuses it, and with
the guard skipped the database layer (layer b: BEGIN READ ONLY, the EXPLAIN-plan deny-list check, the
statement run as DECLARE CURSOR FOR <sql>, rollback) refuses or fails it, and afterwards

  * every table's contents, the sequence, the materialized view, the large objects, the catalog
    (relations and their storage, comments, privileges, roles, extensions, procedures, statistics,
    replication slots and origins) and postgresql.auto.conf are as they were;
  * no advisory lock is held, no notification was sent;
  * the routesh session's own settings (read-only default, statement timeout, role) are as they were,
    with no prepared statement, cursor or LISTEN left behind;
  * another session, idle on the same database, is still alive and answers;
  * no file appeared in the directory COPY ... TO, COPY ... TO PROGRAM and lo_export were pointed at.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql as pgsql

from routesh.sql import guard
from routesh.db.postgres import PostgresDatabase
from routesh.errors import QueryError, Refused
from tests.adversarial import LO_OID, POSTGRES_ATTEMPTS, POSTGRES_READ_ONLY, render
from routesh.evaluate.pgserver import PgServer

pytestmark = pytest.mark.postgres

DBNAME = "routesh_adversarial"
CHANNEL = "routesh_channel"
SLOT = "routesh_slot"
VICTIM_ROWS = 25

FIXTURE_SQL = f"""
CREATE TABLE t (
    id int PRIMARY KEY, name text NOT NULL, grp text, amount numeric,
    parent_id int REFERENCES t(id), tags text[], doc jsonb, created date
);
CREATE TABLE victim (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE "odd table; DROP TABLE victim" ("select" int, "from" text, "a""b" text);
CREATE INDEX idx_victim_name ON victim (name);
CREATE INDEX t_brin ON t USING brin (id);
CREATE INDEX t_tags_gin ON t USING gin (tags) WITH (fastupdate = on);
CREATE SEQUENCE s;
SELECT setval('s', 42);
INSERT INTO t
SELECT i, 'name ' || chr(96 + i), CASE WHEN i % 2 = 0 THEN 'a' ELSE 'b' END, i * 2.5,
       CASE WHEN i > 2 THEN i / 2 END, ARRAY['x', 'tag' || i], jsonb_build_object('a', i, 'b', 'v' || i, 'c', ARRAY[i]),
       DATE '2024-01-01' + i
FROM generate_series(1, 8) AS i;
-- built before the last rows of t arrive, so REFRESH MATERIALIZED VIEW would change it
CREATE MATERIALIZED VIEW mv AS SELECT grp, count(*) AS n, sum(amount) AS total FROM t GROUP BY grp;
INSERT INTO t VALUES (9, 'name i', 'a', 22.5, 4, ARRAY['y'], '{{"a": 9}}', '2024-02-01'),
                     (10, 'name j', NULL, 25, 5, NULL, NULL, NULL);
INSERT INTO victim SELECT i, 'victim ' || i FROM generate_series(1, {VICTIM_ROWS}) AS i;
INSERT INTO "odd table; DROP TABLE victim" VALUES (1, 'x', 'y');
CREATE PROCEDURE p() LANGUAGE sql AS $$ DELETE FROM victim $$;
SELECT lo_from_bytea({LO_OID}, 'the fixture''s large object'::bytea);
ANALYZE;
"""

# The catalog and server state an attempt could change, read by a separate superuser session.
STATE_QUERIES: dict[str, str] = {
    "relations": """
        SELECT n.nspname, c.relname, c.relkind, c.relpersistence, c.relfilenode, c.relacl::text,
               c.reltuples, c.relispopulated, obj_description(c.oid, 'pg_class')
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND n.nspname NOT LIKE 'pg_toast_temp%'
        ORDER BY 1, 2""",
    "schemas": "SELECT nspname, nspacl::text FROM pg_namespace ORDER BY 1",
    "columns": """
        SELECT c.relname, a.attname, a.atttypid FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        WHERE c.relnamespace = 'public'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped ORDER BY 1, 2""",
    "routines": """
        SELECT p.proname, p.prokind, p.prosrc FROM pg_proc p
        WHERE p.pronamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace) ORDER BY 1""",
    "triggers": "SELECT tgname, tgrelid::regclass::text FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1",
    "comments": "SELECT objoid, classoid, objsubid, description FROM pg_description WHERE objoid >= 16384 ORDER BY 1, 2, 3",
    "roles": "SELECT rolname, rolsuper, rolcanlogin FROM pg_roles ORDER BY 1",
    "databases": "SELECT datname, datacl::text FROM pg_database ORDER BY 1",
    "extensions": "SELECT extname, extversion FROM pg_extension ORDER BY 1",
    "statistics": """
        SELECT c.relname, count(*) FROM pg_statistic s JOIN pg_class c ON c.oid = s.starelid
        WHERE c.relnamespace = 'public'::regnamespace GROUP BY 1 ORDER BY 1""",
    "vacuum_analyze": """
        SELECT relname, last_vacuum, last_analyze, vacuum_count, analyze_count FROM pg_stat_user_tables ORDER BY 1""",
    "sequence": "SELECT last_value, is_called FROM s",
    "large_objects": "SELECT oid, md5(lo_get(oid)) FROM pg_largeobject_metadata ORDER BY 1",
    "advisory_locks": "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'",
    "replication_slots": "SELECT slot_name, slot_type FROM pg_replication_slots ORDER BY 1",
    "replication_origins": "SELECT roname FROM pg_replication_origin ORDER BY 1",
    "settings": """
        SELECT name, setting, source FROM pg_settings
        WHERE name IN ('default_transaction_read_only', 'statement_timeout', 'fsync', 'log_statement',
                       'session_preload_libraries', 'shared_preload_libraries') ORDER BY 1""",
    "auto_conf": "SELECT md5(pg_read_file('postgresql.auto.conf'))",
}

# The routesh session's own state, read through routesh itself (a read-only query, guard on).
SESSION_QUERY = (
    "SELECT current_setting('default_transaction_read_only'), current_setting('statement_timeout'), "
    "current_setting('search_path'), current_user, session_user, "
    "(SELECT count(*) FROM pg_prepared_statements WHERE name NOT LIKE '\\_pg3\\_%'), "
    "(SELECT count(*) FROM pg_cursors), (SELECT count(*) FROM pg_listening_channels()), "
    "(SELECT count(*) FROM pg_class WHERE relpersistence = 't')"
)


@dataclass
class AdversarialDb:
    server: PgServer
    dsn: str
    out_dir: Path  # COPY ... TO, TO PROGRAM and lo_export are pointed here
    pgconn: str  # a libpq connection string back to this database (dblink)
    dblink: bool
    dblink_missing_reason: str = ""

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn, autocommit=True)


def _postgres_writable_dir() -> Path:
    """A fresh directory the server's OS user may write into (so COPY TO / lo_export would succeed)."""
    path = Path(tempfile.mkdtemp(prefix="routesh-adversarial-"))
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")
    path.chmod(0o777)
    return path


@pytest.fixture(scope="module")
def adv(pg_server: PgServer) -> Iterator[AdversarialDb]:
    dsn = pg_server.create_database(DBNAME, sql_text=FIXTURE_SQL)
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS dblink")
            dblink, why = True, ""
        except psycopg.Error as err:
            dblink, why = False, f"dblink extension not available on the test server: {str(err).strip()}"
            warnings.warn(why, stacklevel=1)
        conn.execute("SELECT pg_create_physical_replication_slot(%s, true)", (SLOT,))
    out_dir = _postgres_writable_dir()
    pgconn = f"host={pg_server.host} port={pg_server.port} dbname={DBNAME} user={pg_server.superuser}"
    try:
        yield AdversarialDb(pg_server, dsn, out_dir, pgconn, dblink, why)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
        with pg_server.admin_connect() as conn:
            # ours, and any an attempt managed to create (their names start with "intruder")
            for slot in conn.execute(
                "SELECT slot_name FROM pg_replication_slots WHERE slot_name = %s OR slot_name LIKE 'intruder%%'",
                (SLOT,),
            ).fetchall():
                conn.execute("SELECT pg_drop_replication_slot(%s)", slot)
            conn.execute(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(DBNAME)))


def server_state(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    state: dict[str, Any] = {name: conn.execute(query).fetchall() for name, query in STATE_QUERIES.items()}
    tables = conn.execute(
        "SELECT c.oid::regclass::text FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace "
        "AND c.relkind IN ('r', 'm', 'p') AND c.relispopulated ORDER BY 1"
    ).fetchall()
    for (table,) in tables:
        query = pgsql.SQL("SELECT count(*), md5(coalesce(string_agg(x::text, ',' ORDER BY x::text), '')) FROM {} x")
        state[f"contents {table}"] = conn.execute(query.format(pgsql.SQL(table))).fetchone()
    return state


def files_in(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def _attempt_params() -> list:
    return [pytest.param(label, sql, id=label) for label, sql in POSTGRES_ATTEMPTS]


@pytest.mark.parametrize(("label", "sql"), _attempt_params())
def test_attempt_is_refused_and_changes_nothing(adv: AdversarialDb, label: str, sql: str) -> None:
    if "@PGCONN@" in sql and not adv.dblink:
        pytest.skip(f"SKIPPED {label}: {adv.dblink_missing_reason}")
    statement = render(sql, tmp=str(adv.out_dir), pgconn=adv.pgconn)

    witness = adv.admin()
    bystander = adv.admin()  # another session, idle on the same database, listening
    heard: list[psycopg.Notify] = []
    bystander.add_notify_handler(heard.append)
    bystander.execute(f"LISTEN {CHANNEL}")
    bystander_pid = bystander.info.backend_pid
    db = PostgresDatabase.connect(adv.dsn)
    try:
        before = server_state(witness)
        session_before = db.execute(SESSION_QUERY).rows
        assert files_in(adv.out_dir) == []

        # (i) layer (a)
        with pytest.raises(Refused) as refused:
            db.execute(statement)
        assert refused.value.layer == guard.LAYER

        # (ii) layer (b) alone: the database layer refuses or fails it; it never returns a result
        try:
            result = db.execute(statement, guard=False)
        except Refused as err:
            assert err.layer != guard.LAYER
        except QueryError:
            pass
        else:
            pytest.fail(f"the PostgreSQL envelope ran it: {statement!r} -> {result.rows[:5]!r}")

        # the session routesh keeps is as it was, and answers
        assert db.execute(SESSION_QUERY).rows == session_before
        assert db.execute("SELECT count(*) FROM victim").rows == [(VICTIM_ROWS,)]

        # the other session is alive, is the same backend, and heard nothing
        assert bystander.execute("SELECT pg_backend_pid()").fetchone() == (bystander_pid,)
        assert heard == []

        # nothing in the database or on the server changed; no file was written
        try:
            after = server_state(witness)
        except psycopg.Error as err:
            pytest.fail(f"the witness session was terminated or broken: {err}")
        changed = {key: (before[key], after.get(key)) for key in before if before[key] != after.get(key)}
        changed.update({key: (None, after[key]) for key in after if key not in before})
        assert not changed, f"state changed: {changed}"
        assert files_in(adv.out_dir) == [], "a file was written by the server"
    finally:
        db.close()
        bystander.close()
        witness.close()
        for leftover in adv.out_dir.glob("*"):
            leftover.unlink()


@pytest.mark.parametrize(("label", "sql"), [pytest.param(label, sql, id=label) for label, sql in POSTGRES_READ_ONLY])
def test_read_only_query_runs_through_both_layers(adv: AdversarialDb, label: str, sql: str) -> None:
    """The envelope is not so tight that real questions fail: every read-only query of the guard tests runs."""
    db = PostgresDatabase.connect(adv.dsn)
    try:
        result = db.execute(sql)
        assert result.columns
    finally:
        db.close()


def test_fixture_objects_exist(adv: AdversarialDb) -> None:
    """The attempts aim at real objects: if one were missing, its failure would prove nothing."""
    with adv.admin() as conn:
        assert conn.execute("SELECT count(*) FROM victim").fetchone() == (VICTIM_ROWS,)
        assert conn.execute("SELECT last_value FROM s").fetchone() == (42,)
        assert conn.execute("SELECT count(*) FROM mv").fetchone()[0] > 0
        assert conn.execute("SELECT count(*) FROM pg_proc WHERE proname = 'p' AND prokind = 'p'").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM pg_largeobject_metadata WHERE oid = %s", (LO_OID,)).fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (SLOT,)).fetchone() == (1,)
        # mv is stale: a REFRESH would change it
        assert conn.execute("SELECT sum(n) FROM mv").fetchone()[0] < conn.execute("SELECT count(*) FROM t").fetchone()[0]
    if not adv.dblink:
        warnings.warn(adv.dblink_missing_reason, stacklevel=1)
    # the directory really is writable by the server: a superuser COPY there does create the file
    probe = adv.out_dir / "probe.csv"
    with adv.admin() as conn:
        conn.execute(pgsql.SQL("COPY (SELECT 1) TO {}").format(pgsql.Literal(str(probe))))
    assert probe.exists()
    probe.unlink()
