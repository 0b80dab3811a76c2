"""PostgresDatabase against a real throwaway PostgreSQL server (routesh/evaluate/pgserver.py)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from routesh.db.base import ExecOptions
from routesh.db.postgres import PostgresDatabase
from routesh.errors import ConnectError, ConnectionLost, QueryCancelled, QueryError, QueryTimeout, Refused
from routesh.evaluate.pgserver import PgServer, free_port

pytestmark = pytest.mark.postgres

MIXED_SQL = """
CREATE SCHEMA sales;
CREATE SCHEMA hidden;
CREATE TABLE hidden.regions (code text PRIMARY KEY, label text);
INSERT INTO hidden.regions VALUES ('N', 'North'), ('S', 'South');

CREATE TABLE "Customers" (
    "CustomerId" integer PRIMARY KEY,
    "Full Name" text NOT NULL,
    region text REFERENCES hidden.regions (code),
    created date DEFAULT '2024-01-01'
);
COMMENT ON TABLE "Customers" IS 'people who buy';
COMMENT ON COLUMN "Customers"."Full Name" IS 'display name';
INSERT INTO "Customers" VALUES (1, 'Ada', 'N', '2024-02-01'), (2, 'Bo', 'S', DEFAULT), (3, 'Cy', NULL, DEFAULT);

CREATE TABLE sales.orders (
    order_id integer,
    line_no integer,
    "CustomerId" integer REFERENCES "Customers",
    total numeric(10, 2),
    PRIMARY KEY (order_id, line_no)
);
INSERT INTO sales.orders VALUES (1, 1, 1, 10.50), (1, 2, 1, 200.00), (2, 1, 2, 99.99), (3, 1, 3, NULL);

CREATE TABLE "OrderItems" (
    item_id serial PRIMARY KEY,
    order_id integer NOT NULL,
    line_no integer NOT NULL,
    sku varchar(12),
    FOREIGN KEY (line_no, order_id) REFERENCES sales.orders (line_no, order_id)
);
INSERT INTO "OrderItems" (order_id, line_no, sku) VALUES (1, 1, 'A-1'), (1, 2, 'B-2');

CREATE TABLE notes (id integer PRIMARY KEY, body text);
CREATE TABLE sales.notes (id integer PRIMARY KEY, body text);
INSERT INTO sales.notes VALUES (1, 'x');
CREATE TABLE "we""ird" (x integer);
INSERT INTO "we""ird" VALUES (7);

CREATE VIEW "BigOrders" AS SELECT * FROM sales.orders WHERE total > 100;
CREATE MATERIALIZED VIEW sales.order_totals AS SELECT "CustomerId", sum(total) AS total FROM sales.orders GROUP BY 1;
CREATE TABLE events (id integer, at date) PARTITION BY RANGE (at);
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO events VALUES (1, '2024-03-01'), (2, '2024-04-01'), (3, '2025-05-01');
"""


# ---- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def car_dsn(defog_db: Callable[[str], str]) -> str:
    return defog_db("car_dealership")


@pytest.fixture
def car_db(car_dsn: str) -> Iterator[PostgresDatabase]:
    db = PostgresDatabase.connect(car_dsn)
    yield db
    db.close()


@pytest.fixture(scope="module")
def mixed_dsn(pg_server: PgServer) -> str:
    dsn = pg_server.create_database("mixed", sql_text=MIXED_SQL)
    with pg_server.admin_connect("mixed") as conn:
        conn.execute("ALTER DATABASE mixed SET search_path = public, sales")
    return dsn


@pytest.fixture(scope="module")
def envelope_dsn(pg_server: PgServer) -> str:
    return pg_server.create_database(
        "envelope",
        sql_text="""
        CREATE TABLE t (id integer PRIMARY KEY, v text);
        INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 50) g;
        CREATE SEQUENCE s;
        """,
    )


def _one_line_without(message: str, secret: str) -> None:
    assert "\n" not in message and message.strip() == message and message
    assert secret not in message


# ---- connecting -----------------------------------------------------------------------------------


def test_connect_refused_port(pg_server: PgServer) -> None:
    port = free_port()
    with pytest.raises(ConnectError) as err:
        PostgresDatabase.connect(f"postgresql://someone:Sekr1t-pw@127.0.0.1:{port}/db", connect_timeout=3)
    assert str(err.value) == f"could not connect to server at 127.0.0.1:{port}: connection refused"


def test_connect_wrong_password(pg_server: PgServer) -> None:
    dsn = pg_server.dsn("postgres", user=pg_server.password_user, password="wr0ng-Secret")
    with pytest.raises(ConnectError) as err:
        PostgresDatabase.connect(dsn)
    assert str(err.value) == f'password authentication failed for user "{pg_server.password_user}"'
    _one_line_without(str(err.value), "wr0ng-Secret")


def test_connect_right_password_is_never_displayed(pg_server: PgServer) -> None:
    dsn = pg_server.dsn("postgres", user=pg_server.password_user, password=pg_server.password)
    db = PostgresDatabase.connect(dsn)
    try:
        assert pg_server.password not in db.info.display
        assert db.info.display.startswith(f"postgresql://{pg_server.password_user}@127.0.0.1:")
        details = db.info.details
        assert details["user"] == pg_server.password_user and details["database"] == "postgres"
        assert details["host"] == "127.0.0.1" and details["port"] == pg_server.port
        assert details["superuser"] is False and details["server_version"][:2].isdigit()
    finally:
        db.close()


def test_connect_unknown_database(pg_server: PgServer) -> None:
    with pytest.raises(ConnectError) as err:
        PostgresDatabase.connect(pg_server.dsn("no_such_db"))
    assert str(err.value) == 'database "no_such_db" does not exist'


@pytest.mark.parametrize(
    "dsn",
    ["host=127.0.0.1 password=hunter2x garbage", "postgresql://me:hunter2x@[bad/db", "postgresql://me:hunter2x@h:notaport/db"],
)
def test_connect_garbage_dsn(dsn: str) -> None:
    with pytest.raises(ConnectError) as err:
        PostgresDatabase.connect(dsn, connect_timeout=3)
    _one_line_without(str(err.value), "hunter2x")


def test_connect_honours_libpq_environment(pg_server: PgServer, car_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHOST", pg_server.host)
    monkeypatch.setenv("PGPORT", str(pg_server.port))
    monkeypatch.setenv("PGUSER", pg_server.password_user)
    monkeypatch.setenv("PGPASSWORD", pg_server.password)
    monkeypatch.setenv("PGDATABASE", "car_dealership")
    db = PostgresDatabase.connect("")
    try:
        assert db.info.details["database"] == "car_dealership"
        assert db.info.details["user"] == pg_server.password_user
        assert pg_server.password not in db.info.display
    finally:
        db.close()
    monkeypatch.setenv("PGPASSWORD", "not-the-Pw9")
    with pytest.raises(ConnectError) as err:
        PostgresDatabase.connect("")
    _one_line_without(str(err.value), "not-the-Pw9")


# ---- introspection --------------------------------------------------------------------------------


def _actual_counts(pg_server: PgServer, dbname: str, tables: list[str]) -> dict[str, int]:
    with pg_server.admin_connect(dbname) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}  # type: ignore[index]


def test_introspect_car_dealership(car_db: PostgresDatabase, pg_server: PgServer) -> None:
    schema = car_db.introspect()
    assert schema.dialect == "postgres"
    names = ["cars", "customers", "inventory_snapshots", "payments_made", "payments_received", "sales", "salespersons"]
    assert sorted(t.display_name for t in schema.tables) == names
    cars = schema.table("cars")
    assert cars is not None and cars.schema == "public" and cars.kind == "table"
    types = {c.name: c.type for c in cars.columns}
    assert types["id"] == "integer" and types["vin_number"] == "character varying(17)"
    assert types["cost"] == "numeric(10,2)" and types["crtd_ts"] == "timestamp without time zone"
    assert cars.primary_key == ("id",) and cars.column("id").primary_key  # type: ignore[union-attr]
    assert cars.column("make").nullable is False  # type: ignore[union-attr]
    assert cars.column("crtd_ts").default == "now()"  # type: ignore[union-attr]
    sales = schema.table("sales")
    assert sales is not None
    assert {(fk.columns, fk.ref_table, fk.ref_columns) for fk in sales.foreign_keys} == {
        (("car_id",), "cars", ("id",)), (("salesperson_id",), "salespersons", ("id",)),
        (("customer_id",), "customers", ("id",)),
    }
    assert [fk.ref_table for fk in schema.table("payments_received").foreign_keys] == ["sales"]  # type: ignore[union-attr]
    actual = _actual_counts(pg_server, "car_dealership", names)
    for table in schema.tables:  # autovacuum is off on the test server: never analyzed, counted exactly
        assert (table.row_count, table.row_count_exact) == (actual[table.name], True), table.name
    make = cars.column("make")
    assert make is not None and 1 <= len(make.samples) <= 3 and all(isinstance(s, str) for s in make.samples)
    assert len(set(make.samples)) == len(make.samples)


def test_introspect_broker_and_academic(defog_db: Callable[[str], str], pg_server: PgServer) -> None:
    broker = PostgresDatabase.connect(defog_db("broker"))
    try:
        schema = broker.introspect(samples=2)
    finally:
        broker.close()
    # Unquoted identifiers in the DDL (sbCustomer) are folded to lower case by PostgreSQL.
    assert sorted(t.display_name for t in schema.tables) == ["sbcustomer", "sbdailyprice", "sbticker", "sbtransaction"]
    ticker = schema.table("sbticker")
    assert ticker is not None and ticker.primary_key == ("sbtickerid",)
    assert ticker.column("sbtickerisactive").type == "boolean"  # type: ignore[union-attr]
    assert ticker.column("sbtickerdb2x").nullable is True  # type: ignore[union-attr]
    assert schema.table("sbdailyprice").primary_key == ()  # type: ignore[union-attr]
    assert all(len(c.samples) <= 2 for t in schema.tables for c in t.columns)
    assert schema.table("sbcustomer").column("sbcuststatus").samples  # type: ignore[union-attr]

    academic = PostgresDatabase.connect(defog_db("academic"))
    try:
        schema = academic.introspect(samples=0)
    finally:
        academic.close()
    assert len(schema.tables) == 15 and "publication_keyword" in {t.display_name for t in schema.tables}
    assert all(t.primary_key == () and t.foreign_keys == () for t in schema.tables)  # the DDL declares none
    assert all(c.samples == () for t in schema.tables for c in t.columns)
    actual = _actual_counts(pg_server, "academic", ["author", "cite", "publication"])
    assert {n: schema.table(n).row_count for n in actual} == actual  # type: ignore[union-attr]


def test_introspect_schemas_quoting_and_kinds(mixed_dsn: str) -> None:
    db = PostgresDatabase.connect(mixed_dsn)
    try:
        schema = db.introspect()
    finally:
        db.close()
    by_display = {t.display_name: t for t in schema.tables}
    # public first (bare names), then sales (qualified); hidden is not on the search path; partitions are
    # represented by their parent.
    assert list(by_display) == [
        "BigOrders", "Customers", "OrderItems", "events", "notes", 'we"ird',
        "sales.notes", "sales.order_totals", "sales.orders",
    ]
    assert {t.name: t.kind for t in schema.tables if t.kind != "table"} == {
        "BigOrders": "view", "order_totals": "materialized view"}
    customers = by_display["Customers"]
    assert customers.primary_key == ("CustomerId",) and customers.comment == "people who buy"
    assert [c.name for c in customers.columns] == ["CustomerId", "Full Name", "region", "created"]
    assert customers.column("Full Name").comment == "display name"  # type: ignore[union-attr]
    assert customers.column("Full Name").samples == ("Ada", "Bo", "Cy")  # type: ignore[union-attr]
    assert customers.column("created").default == "'2024-01-01'::date"  # type: ignore[union-attr]
    assert [(fk.columns, fk.ref_table, fk.ref_columns) for fk in customers.foreign_keys] == [
        (("region",), "hidden.regions", ("code",))]
    orders = by_display["sales.orders"]
    assert orders.schema == "sales" and orders.name == "orders"
    assert orders.primary_key == ("order_id", "line_no")
    assert orders.foreign_keys[0].ref_table == "Customers"
    items = by_display["OrderItems"]
    assert [(fk.columns, fk.ref_table, fk.ref_columns) for fk in items.foreign_keys] == [
        (("line_no", "order_id"), "sales.orders", ("line_no", "order_id"))]  # constraint order, not table order
    assert by_display["events"].row_count == 3 and by_display["events"].row_count_exact
    assert by_display['we"ird'].column("x").samples == (7,)  # type: ignore[union-attr]
    assert by_display["BigOrders"].row_count is None  # a view is not counted
    assert by_display["BigOrders"].column("total").samples  # type: ignore[union-attr]
    assert by_display["sales.notes"].row_count == 1 and by_display["notes"].row_count == 0
    assert schema.table("sales.orders") is orders


def test_introspect_off_the_search_path_when_it_holds_no_table(defog_db: Callable[[str], str]) -> None:
    # ewallet keeps every table in consumer_div, which is not on the search path: shown qualified
    db = PostgresDatabase.connect(defog_db("ewallet"))
    try:
        schema = db.introspect(samples=1)
        names = [t.display_name for t in schema.tables]
        assert "consumer_div.users" in names and all(n.startswith("consumer_div.") for n in names)
        users = schema.table("consumer_div.users")
        assert users is not None and users.column("username") is not None and users.row_count
        fks = {fk.ref_table for t in schema.tables for fk in t.foreign_keys}
        assert "consumer_div.users" in fks
        assert db.execute(f"SELECT COUNT(*) FROM {names[0]}").rows[0][0] >= 0
    finally:
        db.close()


def test_introspect_estimates_and_awkward_relations(pg_server: PgServer) -> None:
    dsn = pg_server.create_database("analyzed", sql_text="""
        CREATE TABLE big (id integer);
        INSERT INTO big SELECT generate_series(1, 2000);
        CREATE TABLE fresh (id integer);
        INSERT INTO fresh VALUES (1), (2), (7);
        ANALYZE big;
        CREATE VIEW broken AS SELECT 1 / (id - 7) AS y FROM fresh;  -- fails when read
        CREATE MATERIALIZED VIEW unfilled AS SELECT id FROM fresh WITH NO DATA;  -- cannot be read yet
    """)
    db = PostgresDatabase.connect(dsn)
    try:
        tables = {t.name: t for t in db.introspect(samples=1).tables}
        assert db.execute("SELECT count(*) FROM fresh").rows == [(3,)]  # introspection left no transaction open
    finally:
        db.close()
    assert sorted(tables) == ["big", "broken", "fresh", "unfilled"]
    assert (tables["big"].row_count, tables["big"].row_count_exact) == (2000, False)
    assert (tables["fresh"].row_count, tables["fresh"].row_count_exact) == (3, True)
    assert tables["big"].column("id").samples == (1,)  # type: ignore[union-attr]
    assert tables["fresh"].column("id").samples == (1,)  # type: ignore[union-attr]
    assert tables["broken"].column("y").samples == () and tables["broken"].column("y").type == "integer"  # type: ignore[union-attr]
    assert tables["unfilled"].kind == "materialized view" and tables["unfilled"].row_count is None


def test_introspect_skips_what_the_user_cannot_read(pg_server: PgServer, mixed_dsn: str) -> None:
    with pg_server.admin_connect("mixed") as conn:
        conn.execute(f'GRANT SELECT ON "Customers" TO {pg_server.password_user}')
    db = PostgresDatabase.connect(pg_server.dsn("mixed", user=pg_server.password_user, password=pg_server.password))
    try:
        tables = {t.display_name: t for t in db.introspect().tables}
    finally:
        db.close()
    assert tables["Customers"].row_count == 3 and tables["Customers"].column("Full Name").samples  # type: ignore[union-attr]
    assert tables["OrderItems"].row_count is None and not tables["OrderItems"].column("sku").samples  # type: ignore[union-attr]


# ---- executing ------------------------------------------------------------------------------------


def test_execute_columns_and_rows(car_db: PostgresDatabase) -> None:
    result = car_db.execute("SELECT make, model FROM cars ORDER BY id LIMIT 2")
    assert result.columns == ["make", "model"]
    assert result.rows == [("Toyota", "Camry"), ("Honda", "Civic")]
    assert result.truncated is False and result.elapsed >= 0
    percent = car_db.execute("SELECT count(*) AS n FROM cars WHERE make LIKE 'T%'")
    assert percent.columns == ["n"] and percent.rows[0][0] >= 1


def test_execute_quoted_identifiers(mixed_dsn: str) -> None:
    db = PostgresDatabase.connect(mixed_dsn)
    try:
        result = db.execute(
            'SELECT "Full Name" FROM "Customers" JOIN orders USING ("CustomerId") '
            "ORDER BY total DESC NULLS LAST LIMIT 1"
        )
    finally:
        db.close()
    assert result.rows == [("Ada",)]


def test_execute_row_limit(car_db: PostgresDatabase) -> None:
    capped = car_db.execute("SELECT id FROM cars ORDER BY id", options=ExecOptions(row_limit=5))
    assert capped.truncated is True and capped.rows == [(1,), (2,), (3,), (4,), (5,)]
    total = car_db.execute("SELECT count(*) FROM cars").rows[0][0]
    exact = car_db.execute("SELECT id FROM cars", options=ExecOptions(row_limit=total))
    assert exact.truncated is False and len(exact.rows) == total


def test_execute_sql_error_is_one_line_and_connection_survives(car_db: PostgresDatabase) -> None:
    with pytest.raises(QueryError) as err:
        car_db.execute("SELECT\n  no_such_column\nFROM cars", guard=False)
    assert type(err.value) is QueryError
    assert str(err.value) == 'column "no_such_column" does not exist (line 2)'
    assert car_db.execute("SELECT 1").rows == [(1,)]


def test_execute_timeout(car_db: PostgresDatabase) -> None:
    started = time.monotonic()
    with pytest.raises(QueryTimeout) as err:
        car_db.execute("SELECT pg_sleep(10)", options=ExecOptions(timeout=1))
    assert time.monotonic() - started < 2.5
    assert str(err.value) == "statement timed out after 1 s"
    assert car_db.execute("SELECT 2").rows == [(2,)]


def test_execute_timeout_stops_unbounded_recursion(car_db: PostgresDatabase) -> None:
    sql = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r"
    started = time.monotonic()
    with pytest.raises(QueryTimeout):
        car_db.execute(sql, options=ExecOptions(timeout=0.5))
    assert time.monotonic() - started < 2.5
    assert car_db.execute("SELECT 3").rows == [(3,)]


def test_cancel_from_another_thread(car_db: PostgresDatabase) -> None:
    car_db.cancel()  # idle: nothing happens
    timer = threading.Timer(0.3, car_db.cancel)
    timer.start()
    started = time.monotonic()
    with pytest.raises(QueryCancelled):
        car_db.execute("SELECT pg_sleep(10)", options=ExecOptions(timeout=30))
    timer.join()
    assert time.monotonic() - started < 3
    assert car_db.execute("SELECT 4").rows == [(4,)]


def test_reconnects_after_the_backend_is_terminated(car_db: PostgresDatabase, pg_server: PgServer) -> None:
    pid = car_db.execute("SELECT pg_backend_pid()").rows[0][0]
    with pg_server.admin_connect() as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    time.sleep(0.1)
    with pytest.raises(ConnectionLost) as err:
        car_db.execute("SELECT 5")
    assert str(err.value) == "connection to the server was lost; it will be reopened on the next statement"
    result = car_db.execute("SELECT 5, pg_backend_pid()")
    assert result.rows[0][0] == 5 and result.rows[0][1] != pid
    assert car_db.introspect(samples=0).table("cars") is not None


def test_reconnect_failure_is_a_connect_error(pg_server: PgServer) -> None:
    dsn = pg_server.create_database("doomed", sql_text="CREATE TABLE x (a integer);")
    db = PostgresDatabase.connect(dsn)
    try:
        with pg_server.admin_connect() as admin:
            admin.execute("DROP DATABASE doomed WITH (FORCE)")
        with pytest.raises(ConnectionLost):
            db.execute("SELECT 1")
        with pytest.raises(ConnectError) as err:
            db.execute("SELECT 1")
        assert str(err.value) == 'database "doomed" does not exist'
    finally:
        db.close()


# ---- the database envelope, with the guard skipped ------------------------------------------------


def _fingerprint(pg_server: PgServer) -> tuple[object, ...]:
    with pg_server.admin_connect("envelope") as conn:
        rows = conn.execute("SELECT count(*), md5(string_agg(t::text, ',' ORDER BY id)) FROM t").fetchone()
        relations = conn.execute(
            "SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class "
            "WHERE relnamespace = 'public'::regnamespace").fetchone()
        large_objects = conn.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()
        sequence = conn.execute("SELECT last_value, is_called FROM s").fetchone()
    return rows, relations, large_objects, sequence


@pytest.fixture
def envelope(envelope_dsn: str, pg_server: PgServer, tmp_path: Path) -> Iterator[dict[str, object]]:
    marker = Path(f"/tmp/routesh-envelope-{uuid.uuid4().hex}")
    with pg_server.admin_connect("envelope") as admin, pg_server.admin_connect() as bystander:
        lo = admin.execute("SELECT lo_from_bytea(0, 'secret bytes')").fetchone()[0]  # type: ignore[index]
        db = PostgresDatabase.connect(envelope_dsn)
        try:
            yield {"db": db, "marker": marker, "lo": lo, "other_pid": bystander.info.backend_pid,
                   "bystander": bystander}
        finally:
            db.close()
            admin.execute("SELECT lo_unlink(%s)", [lo])
            marker.unlink(missing_ok=True)


ENVELOPE_CASES = [
    "DELETE FROM t",
    "DROP TABLE t",
    "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
    "SELECT 1; DELETE FROM t",
    "COPY t TO PROGRAM 'touch {marker}'",
    "SELECT set_config('default_transaction_read_only', 'off', false)",
    "SELECT pg_terminate_backend({other_pid})",
    "SET TRANSACTION READ WRITE",
    "DO $$ BEGIN DELETE FROM t; END $$",
    "SELECT lo_export({lo}, '{marker}')",
    "CREATE TABLE t2 AS SELECT * FROM t",
    "SELECT * INTO t3 FROM t",
    "SELECT nextval('s')",
    "SELECT * FROM t FOR UPDATE",
    "/* a comment first */ UPDATE t SET v = 'x'",
]


@pytest.mark.parametrize("template", ENVELOPE_CASES)
def test_envelope_refuses_without_the_guard(template: str, envelope: dict[str, object], pg_server: PgServer) -> None:
    db = envelope["db"]
    assert isinstance(db, PostgresDatabase)
    sql = template.format(**envelope)
    before = _fingerprint(pg_server)
    with pytest.raises(Refused) as err:
        db.execute(sql, guard=False)
    assert err.value.layer == "database"
    assert "\n" not in str(err.value)
    assert _fingerprint(pg_server) == before
    assert not Path(str(envelope["marker"])).exists()
    bystander = envelope["bystander"]
    assert bystander.execute("SELECT 1").fetchone() == (1,)  # type: ignore[attr-defined]
    assert db.execute("SELECT current_setting('default_transaction_read_only')", guard=False).rows == [("off",)]
    assert db.execute("SELECT count(*) FROM t").rows == [(50,)]  # and the connection still works


def test_the_guard_refuses_first(envelope: dict[str, object]) -> None:
    db = envelope["db"]
    assert isinstance(db, PostgresDatabase)
    with pytest.raises(Refused) as err:
        db.execute("DELETE FROM t")
    assert err.value.layer == "guard"


def test_writes_when_allowed(envelope_dsn: str, pg_server: PgServer) -> None:
    db = PostgresDatabase.connect(envelope_dsn)
    try:
        with pg_server.admin_connect("envelope") as admin:
            admin.execute("CREATE TABLE w (id integer PRIMARY KEY, v text)")
        with pytest.raises(Refused):
            db.execute("INSERT INTO w VALUES (1, 'one')")
        db.set_writes(True)
        assert db.writes_allowed is True
        inserted = db.execute("INSERT INTO w VALUES (1, 'one'), (2, 'two')")
        assert inserted.status == "INSERT 0 2" and inserted.rows == []
        returned = db.execute("UPDATE w SET v = upper(v) WHERE id = 2 RETURNING id, v")
        assert returned.columns == ["id", "v"] and returned.rows == [(2, "TWO")] and returned.status == "UPDATE 1"
        with pytest.raises(QueryError):  # a failed write is rolled back, the connection stays usable
            db.execute("INSERT INTO w VALUES (1, 'duplicate')")
        with pytest.raises(Refused):  # still one statement at a time, guard or not
            db.execute("INSERT INTO w VALUES (3, 'a'); DELETE FROM w", guard=False)
        with pg_server.admin_connect("envelope") as admin:  # committed: another session sees it
            assert admin.execute("SELECT id, v FROM w ORDER BY id").fetchall() == [(1, "one"), (2, "TWO")]
        db.set_writes(False)
        with pytest.raises(Refused):
            db.execute("DELETE FROM w", guard=False)
    finally:
        db.close()
        with pg_server.admin_connect("envelope") as admin:
            admin.execute("DROP TABLE IF EXISTS w")
