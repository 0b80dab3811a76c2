"""The describe commands' text (routesh/shell/describe.py) against real SQLite and PostgreSQL databases."""

from __future__ import annotations

import dataclasses
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from routesh.db import Schema, connect
from routesh.errors import UsageError
from routesh.shell.describe import conninfo, describe_all, describe_table, find_table, list_tables, schema_ddl
from tests.helpers import SHARED_DATA, make_shop_db
from routesh.evaluate.pgserver import PgServer

CONCERT = SHARED_DATA / "spider" / "database" / "concert_singer" / "concert_singer.sqlite"

ODD_SQLITE = """
CREATE TABLE "Mixed Case" (
    "Key" TEXT,
    part INTEGER,
    "order" TEXT DEFAULT 'new',
    amount REAL DEFAULT (1 + 2),
    created TEXT DEFAULT CURRENT_TIMESTAMP,
    flag DEFAULT -1,
    PRIMARY KEY ("Key", part)
);
CREATE TABLE child (
    id INTEGER PRIMARY KEY,
    k TEXT NOT NULL,
    p INTEGER,
    note,
    FOREIGN KEY (k, p) REFERENCES "Mixed Case" ("Key", part)
);
CREATE VIEW "Odd View" AS SELECT id, k FROM child;
INSERT INTO "Mixed Case" ("Key", part) VALUES ('a', 1), ('b', 2);
INSERT INTO child VALUES (1, 'a', 1, 'a rather long note that goes well past the clipping width'), (2, 'b', 2, 'x');
"""

PG_SQL = """
CREATE SCHEMA sales;
CREATE SCHEMA hidden;
CREATE TABLE hidden.regions (code text PRIMARY KEY);
INSERT INTO hidden.regions VALUES ('N'), ('S');
CREATE TABLE "Customers" (
    "CustomerId" integer PRIMARY KEY,
    "Full Name" text NOT NULL,
    region text REFERENCES hidden.regions (code),
    created date DEFAULT '2024-01-01'
);
COMMENT ON TABLE "Customers" IS 'people who buy';
COMMENT ON COLUMN "Customers"."Full Name" IS 'display name';
INSERT INTO "Customers" VALUES (1, 'Ada', 'N'), (2, 'Bo', 'S'), (3, 'Cy', NULL);
CREATE TABLE sales.orders (
    order_id integer,
    line_no integer,
    "CustomerId" integer NOT NULL REFERENCES "Customers",
    total numeric(10, 2),
    PRIMARY KEY (order_id, line_no)
);
INSERT INTO sales.orders VALUES (1, 1, 1, 10.50), (1, 2, 1, 200.00), (2, 1, 2, 99.99);
CREATE TABLE items (
    item_id serial PRIMARY KEY,
    order_id integer NOT NULL,
    line_no integer NOT NULL,
    FOREIGN KEY (order_id, line_no) REFERENCES sales.orders (order_id, line_no)
);
CREATE VIEW "BigOrders" AS SELECT * FROM sales.orders WHERE total > 100;
"""


# ---- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[tuple[Schema, object]]:
    db = connect(str(make_shop_db(tmp_path / "shop.db")))
    yield db.introspect(samples=3), db
    db.close()


@pytest.fixture
def shop_schema(shop) -> Schema:
    return shop[0]


@pytest.fixture(scope="module")
def concert() -> Schema:
    db = connect(str(CONCERT))
    try:
        return db.introspect(samples=3)
    finally:
        db.close()


@pytest.fixture
def odd_file(tmp_path: Path) -> Path:
    path = tmp_path / "odd.db"
    conn = sqlite3.connect(path)
    conn.executescript(ODD_SQLITE)
    conn.close()
    return path


def _schema_of(path: Path) -> Schema:
    db = connect(str(path))
    try:
        return db.introspect(samples=3)
    finally:
        db.close()


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines()]


def _row(text: str, first_cell: str) -> list[str]:
    """The cells of the table row whose first cell is `first_cell`."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in:\n{text}")


def _header(text: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith("|"))
    return [c.strip() for c in line.strip().strip("|").split("|")]


# ---- \dt -------------------------------------------------------------------------------------------


def test_list_tables_sqlite(shop_schema: Schema) -> None:
    text = list_tables(shop_schema)
    lines = _lines(text)
    assert lines[0].strip() == "List of relations"
    assert _header(text) == ["Name", "Type", "Rows"]  # no Schema column on SQLite
    assert _row(text, "customer") == ["customer", "table", "10"]
    assert _row(text, "orders") == ["orders", "table", "50"]
    assert _row(text, "big_orders") == ["big_orders", "view", ""]
    assert lines[-1] == "(3 rows)"
    assert describe_all(shop_schema) == text


def test_list_tables_plus(shop_schema: Schema) -> None:
    text = list_tables(shop_schema, plus=True)
    assert _header(text) == ["Name", "Type", "Rows", "Columns", "Description"]
    assert _row(text, "orders")[:4] == ["orders", "table", "50", "4"]
    assert _row(text, "customer")[3] == "3"
    assert describe_all(shop_schema, plus=True) == text


def test_list_tables_pattern(shop_schema: Schema, concert: Schema) -> None:
    text = list_tables(shop_schema, pattern="*ORD*")
    assert "orders" in text and "big_orders" in text and "customer" not in text
    assert _lines(text)[-1] == "(2 rows)"
    one = list_tables(shop_schema, pattern="cust?mer")
    assert "customer" in one and "orders" not in one and _lines(one)[-1] == "(1 row)"
    assert "singer_in_concert" in list_tables(concert, pattern="singer*")
    assert "stadium" not in list_tables(concert, pattern="singer*")
    assert list_tables(shop_schema, pattern="nothing*") == 'No relations match "nothing*".\n'
    assert list_tables(shop_schema, pattern="") == list_tables(shop_schema)  # an empty pattern filters nothing


def test_list_tables_empty() -> None:
    assert list_tables(Schema("sqlite", ())) == "No relations found.\n"


def test_estimated_row_counts_are_marked(shop_schema: Schema) -> None:
    customer = shop_schema.table("customer")
    estimated = dataclasses.replace(customer, row_count=1200, row_count_exact=False)
    schema = Schema("sqlite", (estimated,))
    assert _row(list_tables(schema), "customer")[2] == "~1200"
    assert "Rows: ~1200 (estimate)" in describe_table(schema, "customer", plus=True)


# ---- \d NAME ---------------------------------------------------------------------------------------


def test_describe_table_columns_and_keys(shop_schema: Schema) -> None:
    text = describe_table(shop_schema, "orders")
    lines = _lines(text)
    assert lines[0].strip() == 'Table "orders"'
    assert _header(text) == ["Column", "Type", "Nullable", "Default"]
    assert _row(text, "id") == ["id", "INTEGER", "not null", ""]
    assert _row(text, "customer_id") == ["customer_id", "INTEGER", "not null", ""]
    assert _row(text, "total") == ["total", "REAL", "", ""]
    assert _row(text, "placed") == ["placed", "DATE", "", ""]
    assert "Primary key: (id)" in lines
    assert lines[lines.index("Foreign keys:") + 1] == "  (customer_id) REFERENCES customer(id)"
    assert "Referenced by:" not in lines
    assert not any(line.startswith("Rows:") for line in lines)  # only with plus


def test_describe_table_referenced_by(shop_schema: Schema) -> None:
    lines = _lines(describe_table(shop_schema, "customer"))
    assert _row("\n".join(lines), "name") == ["name", "TEXT", "not null", ""]
    assert _row("\n".join(lines), "city") == ["city", "TEXT", "", ""]
    assert "Foreign keys:" not in lines
    assert lines[lines.index("Referenced by:") + 1] == "  TABLE orders (customer_id) REFERENCES customer(id)"


def test_describe_table_plus(shop_schema: Schema) -> None:
    text = describe_table(shop_schema, "orders", plus=True)
    assert _header(text) == ["Column", "Type", "Nullable", "Default", "Comment", "Examples"]
    assert _row(text, "id")[5] == "1, 2, 3"
    assert _row(text, "total")[5] == "7.0, 14.0, 21.0"
    assert "Rows: 50" in _lines(text)


def test_describe_view(shop_schema: Schema) -> None:
    text = describe_table(shop_schema, "big_orders")
    lines = _lines(text)
    assert lines[0].strip() == 'View "big_orders"'
    columns = ["id", "customer_id", "total", "placed"]
    assert [_row(text, c)[0] for c in columns] == columns
    assert "Primary key:" not in text and "Foreign keys:" not in text


def test_describe_lookup_is_forgiving_about_case_and_quotes(shop_schema: Schema) -> None:
    plain = describe_table(shop_schema, "orders")
    assert describe_table(shop_schema, "ORDERS") == plain
    assert describe_table(shop_schema, '"orders"') == plain
    assert describe_table(shop_schema, "  orders ") == plain


def test_unknown_name_suggests(shop_schema: Schema) -> None:
    with pytest.raises(UsageError) as err:
        describe_table(shop_schema, "ordrs")
    assert str(err.value) == 'no table or view named "ordrs", did you mean orders?'
    with pytest.raises(UsageError) as err:
        describe_table(shop_schema, "zebra")
    assert str(err.value) == 'no table or view named "zebra"'
    with pytest.raises(UsageError):
        find_table(shop_schema, "")


def test_describe_spider_composite_key(concert: Schema) -> None:
    text = describe_table(concert, "singer_in_concert", plus=True)
    lines = _lines(text)
    assert _row(text, "concert_ID")[:3] == ["concert_ID", "INT", "not null"]
    assert _row(text, "Singer_ID")[:3] == ["Singer_ID", "TEXT", "not null"]
    assert "Primary key: (concert_ID, Singer_ID)" in lines
    fks = lines[lines.index("Foreign keys:") + 1 :][:2]
    assert sorted(fks) == ["  (Singer_ID) REFERENCES singer(Singer_ID)",
                           "  (concert_ID) REFERENCES concert(concert_ID)"]
    assert "Rows: 10" in lines
    stadium = _lines(describe_table(concert, "Stadium"))
    assert stadium[0].strip() == 'Table "stadium"'
    assert "  TABLE concert (Stadium_ID) REFERENCES stadium(Stadium_ID)" in stadium
    with pytest.raises(UsageError, match=r'did you mean singer\?$'):
        describe_table(concert, "singers")


def test_describe_quoted_odd_names(odd_file: Path) -> None:
    schema = _schema_of(odd_file)
    text = describe_table(schema, '"Mixed Case"', plus=True)
    lines = _lines(text)
    assert lines[0].strip() == 'Table "Mixed Case"'
    assert 'Primary key: ("Key", part)' in lines
    assert _row(text, "order")[:4] == ["order", "TEXT", "", "'new'"]
    assert _row(text, "amount")[3] == "1 + 2"
    assert lines[lines.index("Referenced by:") + 1] == '  TABLE child (k, p) REFERENCES "Mixed Case"(\"Key\", part)'
    child = describe_table(schema, "child", plus=True)
    note = _row(child, "note")
    assert note[1] == "" and len(note[5]) == 40 and note[5].endswith("...")
    assert '  (k, p) REFERENCES "Mixed Case"(\"Key\", part)' in _lines(child)
    assert _lines(describe_table(schema, "odd view"))[0].strip() == 'View "Odd View"'


# ---- .schema ---------------------------------------------------------------------------------------


def _comparable(schema: Schema) -> list[tuple]:
    # Foreign keys as a set: SQLite's pragma lists them in reverse declaration order.
    return [(t.name, t.kind, t.primary_key, frozenset(t.foreign_keys),
             [(c.name, c.type, c.nullable, c.primary_key, c.default) for c in t.columns])
            for t in schema.tables if t.kind == "table"]


@pytest.mark.parametrize("source", ["shop", "concert", "odd"])
def test_schema_ddl_round_trips_through_sqlite(source: str, tmp_path: Path, odd_file: Path) -> None:
    path = {"shop": lambda: make_shop_db(tmp_path / "shop.db"), "concert": lambda: CONCERT,
            "odd": lambda: odd_file}[source]()
    schema = _schema_of(path)
    ddl = schema_ddl(schema)
    assert ddl == schema_ddl(schema)  # deterministic

    memory = sqlite3.connect(":memory:")
    memory.executescript(ddl)
    names = {r[0] for r in memory.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
    assert names == {t.name for t in schema.tables if t.kind == "table"}
    memory.close()

    copy = tmp_path / "copy.db"
    conn = sqlite3.connect(copy)
    conn.executescript(ddl)
    conn.close()
    assert _comparable(_schema_of(copy)) == _comparable(schema)


def test_schema_ddl_text(shop_schema: Schema) -> None:
    ddl = schema_ddl(shop_schema, "orders")
    assert ddl == (
        "CREATE TABLE orders (\n"
        "  id INTEGER PRIMARY KEY,\n"
        "  customer_id INTEGER NOT NULL,\n"
        "  total REAL,\n"
        "  placed DATE,\n"
        "  FOREIGN KEY (customer_id) REFERENCES customer (id)\n"
        ");\n"
    )
    assert schema_ddl(shop_schema, "big_orders") == "-- view big_orders (id, customer_id, total, placed)\n"
    everything = schema_ddl(shop_schema)
    assert everything.index("CREATE TABLE customer") < everything.index("CREATE TABLE orders")
    assert "-- view big_orders" in everything
    assert schema_ddl(shop_schema, "ord*") == ddl  # a wildcard: orders, and the view's comment does not match
    assert "-- view big_orders" in schema_ddl(shop_schema, "*ord*")
    with pytest.raises(UsageError, match="did you mean customer"):
        schema_ddl(shop_schema, "custmer")
    with pytest.raises(UsageError):
        schema_ddl(shop_schema, "zz*")


def test_schema_ddl_quotes_odd_names(odd_file: Path) -> None:
    ddl = schema_ddl(_schema_of(odd_file), '"Mixed Case"')
    assert ddl.startswith('CREATE TABLE "Mixed Case" (\n')
    assert '  "order" TEXT DEFAULT \'new\',\n' in ddl
    assert "  amount REAL DEFAULT (1 + 2),\n" in ddl
    assert "  created TEXT DEFAULT CURRENT_TIMESTAMP,\n" in ddl
    assert "  flag DEFAULT -1,\n" in ddl
    assert '  PRIMARY KEY ("Key", part)\n' in ddl


# ---- \conninfo -------------------------------------------------------------------------------------


def test_conninfo_sqlite(shop) -> None:
    schema, db = shop
    line = conninfo(db.info, writes_allowed=False)
    assert re.fullmatch(r'You are connected to SQLite database "[^"]*shop\.db" \(SQLite [\d.]+, read-only\)\.', line)
    assert db.info.details["file"] in line
    assert conninfo(db.info, writes_allowed=True).endswith(", read-write).")


# ---- PostgreSQL ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_dsn(pg_server: PgServer) -> str:
    dsn = pg_server.create_database("describe_test", sql_text=PG_SQL)
    with pg_server.admin_connect("describe_test") as conn:
        conn.execute("ALTER DATABASE describe_test SET search_path = public, sales")
    return dsn


@pytest.fixture(scope="module")
def pg_schema(pg_dsn: str) -> Schema:
    db = connect(pg_dsn)
    try:
        return db.introspect(samples=3)
    finally:
        db.close()


@pytest.mark.postgres
def test_pg_list_tables(pg_schema: Schema) -> None:
    text = list_tables(pg_schema, plus=True)
    assert _header(text) == ["Schema", "Name", "Type", "Rows", "Columns", "Description"]
    assert _row(text, "public")  # rows start with the schema
    rows = {tuple(c.strip() for c in line.strip().strip("|").split("|"))[:3]
            for line in text.splitlines() if line.startswith("| ") and "Schema" not in line}
    assert {("public", "Customers", "table"), ("public", "BigOrders", "view"), ("public", "items", "table"),
            ("sales", "orders", "table")} <= rows
    customers = next(line for line in text.splitlines() if "| Customers" in line)
    assert re.search(r"\| Customers \| table +\| 3 +\| +4 \| people who buy", customers), customers
    assert "regions" not in text  # not on the search path
    filtered = list_tables(pg_schema, pattern="sales.*")
    assert "orders" in filtered and "Customers" not in filtered
    assert "Customers" in list_tables(pg_schema, pattern="cust*")


@pytest.mark.postgres
def test_pg_describe_mixed_case_table(pg_schema: Schema) -> None:
    text = describe_table(pg_schema, '"Customers"', plus=True)
    lines = _lines(text)
    assert lines[0].strip() == 'Table "public.Customers"'
    assert _row(text, "CustomerId")[:3] == ["CustomerId", "integer", "not null"]
    full = _row(text, "Full Name")
    assert full[:5] == ["Full Name", "text", "not null", "", "display name"]
    assert full[5] == "Ada, Bo, Cy"
    assert _row(text, "created")[3] == "'2024-01-01'::date"
    assert 'Primary key: ("CustomerId")' in lines
    assert "  (region) REFERENCES hidden.regions(code)" in lines
    assert '  TABLE sales.orders ("CustomerId") REFERENCES "Customers"("CustomerId")' in lines
    assert "Comment: people who buy" in lines
    assert any(line.startswith("Rows: 3") for line in lines)
    assert describe_table(pg_schema, "public.customers") == describe_table(pg_schema, "Customers")


@pytest.mark.postgres
def test_pg_describe_qualified_and_view(pg_schema: Schema) -> None:
    text = describe_table(pg_schema, "sales.orders")
    lines = _lines(text)
    assert lines[0].strip() == 'Table "sales.orders"'
    assert _row(text, "total")[1] == "numeric(10,2)"
    assert "Primary key: (order_id, line_no)" in lines
    assert '  ("CustomerId") REFERENCES "Customers"("CustomerId")' in lines
    assert "  TABLE items (order_id, line_no) REFERENCES sales.orders(order_id, line_no)" in lines
    assert describe_table(pg_schema, 'sales."orders"') == text == describe_table(pg_schema, "orders")
    view = describe_table(pg_schema, "BigOrders")
    assert _lines(view)[0].strip() == 'View "public.BigOrders"'
    with pytest.raises(UsageError, match='no table or view named ""bigorders""'):
        describe_table(pg_schema, '"bigorders"')  # quoted: exact case only
    with pytest.raises(UsageError, match="did you mean Customers"):
        describe_table(pg_schema, "Customer")


@pytest.mark.postgres
def test_pg_schema_ddl_is_accepted_by_postgres(pg_schema: Schema, pg_server: PgServer) -> None:
    ddl = schema_ddl(pg_schema)
    assert 'CREATE TABLE "Customers" (' in ddl and "CREATE TABLE sales.orders (" in ddl
    assert "-- people who buy" in ddl and '-- view "BigOrders"' in ddl
    dsn = pg_server.create_database("describe_copy", sql_text="""
        CREATE SCHEMA sales; CREATE SCHEMA hidden; CREATE TABLE hidden.regions (code text PRIMARY KEY);
    """)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET search_path = public, sales")
        conn.execute(ddl)  # type: ignore[arg-type]
        names = {r[0] for r in conn.execute(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables "
            "WHERE table_schema IN ('public', 'sales')")}
    assert names == {"public.Customers", "public.items", "sales.orders"}


@pytest.mark.postgres
def test_pg_conninfo_never_shows_the_password(pg_server: PgServer, pg_dsn: str) -> None:
    dsn = pg_server.dsn("describe_test", user=pg_server.password_user, password=pg_server.password)
    db = connect(dsn)
    try:
        line = conninfo(db.info, writes_allowed=False)
    finally:
        db.close()
    assert pg_server.password not in line
    assert re.fullmatch(
        rf'You are connected to database "describe_test" as user "{re.escape(pg_server.password_user)}" '
        rf'on host "{re.escape(pg_server.host)}" at port "{pg_server.port}" \(PostgreSQL \d+\.?\d*\w*, read-only\)\.',
        line,
    ), line
    admin = connect(pg_dsn)
    try:
        assert "superuser, read-write)." in conninfo(admin.info, writes_allowed=True)
    finally:
        admin.close()
