"""The bundled demo database: schema, data integrity, questions it can answer, and the
build-once / rebuild-on-change / concurrent-build behaviour of ensure_demo_db."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from contextlib import closing
from pathlib import Path

import pytest

from routesh import demo
from routesh.demo import DEMO_DB_NAME, ensure_demo_db

TABLES = {"cities", "stores", "employees", "customers", "categories", "products", "orders", "order_items", "payments"}
VIEWS = {"order_totals", "product_sales"}


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def rows(path: Path, sql: str, params: tuple = ()) -> list[tuple]:
    with closing(connect(path)) as conn:
        return conn.execute(sql, params).fetchall()


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_demo_db(tmp_path_factory.mktemp("demo"))


# --- schema and data -------------------------------------------------------------------------


def test_tables_views_and_indexes(db: Path) -> None:
    assert db.name == DEMO_DB_NAME and db.is_file()
    objects = rows(db, "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")
    assert {n for t, n in objects if t == "table"} == TABLES
    assert {n for t, n in objects if t == "view"} == VIEWS
    assert len([n for t, n in objects if t == "index"]) >= 2


def test_foreign_keys_declared(db: Path) -> None:
    def fks(table: str) -> set[tuple[str, str, str]]:
        return {(r[3], r[2], r[4]) for r in rows(db, f"PRAGMA foreign_key_list({table})")}  # (from, table, to)

    assert ("customer_id", "customers", "customer_id") in fks("orders")
    assert ("store_id", "stores", "store_id") in fks("orders")
    assert ("employee_id", "employees", "employee_id") in fks("orders")
    assert fks("order_items") == {("order_id", "orders", "order_id"), ("product_id", "products", "product_id")}
    assert ("manager_id", "employees", "employee_id") in fks("employees")  # self-reference
    assert ("category_id", "categories", "category_id") in fks("products")
    assert ("order_id", "orders", "order_id") in fks("payments")
    assert ("city_id", "cities", "city_id") in fks("customers") and ("city_id", "cities", "city_id") in fks("stores")
    # composite primary key
    pk = sorted((r[5], r[1]) for r in rows(db, "PRAGMA table_info(order_items)") if r[5])
    assert [name for _, name in pk] == ["order_id", "line_no"]


def test_integrity(db: Path) -> None:
    assert rows(db, "PRAGMA foreign_key_check") == []
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]


def test_row_counts_and_describe(db: Path) -> None:
    counts = {t: rows(db, f"SELECT COUNT(*) FROM {t}")[0][0] for t in TABLES}
    total = sum(counts.values())
    assert 2_000 <= total <= 10_000
    assert all(n > 0 for n in counts.values())
    # describe() states the real numbers
    assert demo.describe() == f"Rayon Cycles bicycle-shop demo: {len(TABLES)} tables, {len(VIEWS)} views, {total:,} rows"


def test_natural_nulls_and_consistency(db: Path) -> None:
    unshipped = dict(rows(db, "SELECT status, COUNT(*) FROM orders WHERE shipped_date IS NULL GROUP BY status"))
    assert set(unshipped) == {"pending", "processing", "cancelled"}
    assert rows(db, "SELECT COUNT(*) FROM employees WHERE manager_id IS NULL") == [(1,)]
    assert rows(db, "SELECT COUNT(*) FROM customers WHERE phone IS NULL")[0][0] > 0
    assert rows(db, "SELECT MIN(order_date), MAX(order_date) FROM orders") == [("2024-01-01", "2025-12-31")]
    # what was paid matches what was ordered, to the cent
    mismatched = rows(
        db,
        """SELECT COUNT(*) FROM order_totals AS t
           JOIN (SELECT order_id, SUM(amount) AS paid FROM payments GROUP BY order_id) AS p USING (order_id)
           WHERE ABS(t.total_amount - p.paid) > 0.005""",
    )
    assert mismatched == [(0,)]


# --- questions a user would ask ----------------------------------------------------------------


def test_orders_by_month(db: Path) -> None:
    months = rows(db, "SELECT strftime('%Y-%m', order_date) AS m, COUNT(*) FROM orders GROUP BY m ORDER BY m")
    assert len(months) == 24 and all(n > 0 for _, n in months)
    by_year = dict(rows(db, "SELECT strftime('%Y', order_date), COUNT(*) FROM orders GROUP BY 1"))
    assert by_year["2025"] > by_year["2024"]  # the business grows


def test_top_customers_2025(db: Path) -> None:
    top = rows(
        db,
        """SELECT c.first_name || ' ' || c.last_name, SUM(t.total_amount) AS spend
           FROM order_totals AS t JOIN customers AS c USING (customer_id)
           WHERE t.status <> 'cancelled' AND t.order_date BETWEEN '2025-01-01' AND '2025-12-31'
           GROUP BY c.customer_id ORDER BY spend DESC LIMIT 5""",
    )
    assert len(top) == 5
    assert top[0][1] > top[4][1] > 1_000


def test_best_category_in_lyon(db: Path) -> None:
    ranking = rows(
        db,
        """SELECT cat.name, SUM(i.quantity * i.unit_price * (1 - i.discount)) AS revenue
           FROM orders AS o
           JOIN stores AS s ON s.store_id = o.store_id
           JOIN cities AS ci ON ci.city_id = s.city_id
           JOIN order_items AS i ON i.order_id = o.order_id
           JOIN products AS p ON p.product_id = i.product_id
           JOIN categories AS cat ON cat.category_id = p.category_id
           WHERE ci.name = 'Lyon' AND o.status <> 'cancelled'
           GROUP BY cat.name ORDER BY revenue DESC""",
    )
    assert len(ranking) >= 5
    assert ranking[0][0] == "Electric Bikes"


def test_managers_of_more_than_three(db: Path) -> None:
    managers = rows(
        db,
        """SELECT m.job_title, COUNT(*) FROM employees AS e JOIN employees AS m ON m.employee_id = e.manager_id
           GROUP BY m.employee_id HAVING COUNT(*) > 3""",
    )
    assert 3 <= len(managers) < rows(db, "SELECT COUNT(DISTINCT manager_id) FROM employees")[0][0]
    assert "Chief Executive Officer" in {title for title, _ in managers}


def test_orders_not_yet_shipped(db: Path) -> None:
    open_orders = rows(
        db,
        """SELECT o.order_id, o.status, c.last_name FROM orders AS o JOIN customers AS c USING (customer_id)
           WHERE o.shipped_date IS NULL AND o.status <> 'cancelled'""",
    )
    assert 5 <= len(open_orders) <= 100


# --- building ----------------------------------------------------------------------------------


def test_generator_matches_script() -> None:
    """demo.sql is exactly what tools/demo_sql.py writes (regenerate after editing the generator)."""
    from tools import demo_sql

    assert demo_sql.generate() == demo.demo_script()


def test_second_call_does_not_rebuild(tmp_path: Path) -> None:
    first = ensure_demo_db(tmp_path)
    before = first.stat()
    second = ensure_demo_db(tmp_path)
    after = second.stat()
    assert second == first
    assert (after.st_mtime_ns, after.st_ino) == (before.st_mtime_ns, before.st_ino)


def test_env_var_sets_default_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTESH_DATA_DIR", str(tmp_path / "from-env"))
    assert ensure_demo_db() == tmp_path / "from-env" / DEMO_DB_NAME
    assert (tmp_path / "from-env" / DEMO_DB_NAME).is_file()


def test_changed_script_hash_rebuilds(tmp_path: Path) -> None:
    path = ensure_demo_db(tmp_path)
    inode = path.stat().st_ino
    # as if built from an older script
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("PRAGMA user_version = 1")
    assert ensure_demo_db(tmp_path) == path
    assert path.stat().st_ino != inode  # a new file was swapped in
    assert rows(path, "PRAGMA user_version") != [(1,)]

    # a different script: its content replaces the old one
    changed = demo.demo_script().replace("COMMIT;", "CREATE TABLE added_later (x INTEGER);\nCOMMIT;")
    assert demo._ensure(tmp_path, changed) == path
    assert rows(path, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'added_later'") == [(1,)]
    # and back again
    ensure_demo_db(tmp_path)
    assert rows(path, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'added_later'") == [(0,)]


def test_garbage_file_is_rebuilt(tmp_path: Path) -> None:
    """A file that is not a finished demo database (a foreign or truncated file) is replaced."""
    (tmp_path / DEMO_DB_NAME).write_bytes(b"SQLite format 3\x00 and then nothing")
    path = ensure_demo_db(tmp_path)
    assert rows(path, "SELECT COUNT(*) FROM orders")[0][0] > 0


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    broken = demo.demo_script().replace("COMMIT;", "INSERT INTO orders (order_id) VALUES (NULL, 1);\nCOMMIT;")
    with pytest.raises(Exception, match="could not build the demo database"):
        demo._ensure(tmp_path, broken)
    assert list(tmp_path.iterdir()) == []


def _check_single_valid_file(directory: Path, paths: list[Path]) -> None:
    assert set(paths) == {directory / DEMO_DB_NAME}
    assert [p.name for p in directory.iterdir()] == [DEMO_DB_NAME]  # no temp files left behind
    db = directory / DEMO_DB_NAME
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]
    assert rows(db, "PRAGMA foreign_key_check") == []
    assert rows(db, "SELECT COUNT(*) FROM order_items")[0][0] > 1000


def test_concurrent_builds_in_threads(tmp_path: Path) -> None:
    start = threading.Barrier(4)
    results: list[Path] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            start.wait()
            results.append(ensure_demo_db(tmp_path))
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    _check_single_valid_file(tmp_path, results)


def test_concurrent_builds_in_processes(tmp_path: Path) -> None:
    code = "import sys; from pathlib import Path; from routesh.demo import ensure_demo_db; print(ensure_demo_db(Path(sys.argv[1])))"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    _check_single_valid_file(tmp_path, [Path(o) for o in outputs])
