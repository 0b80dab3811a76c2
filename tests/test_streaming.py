"""Results of any size: rows fetched in batches and written as they come (csv, tsv, JSON Lines, a JSON array,
the table), `--row-limit 0` for a file or a pipe, Ctrl-C leaving a well-formed file. Real SQLite files, a real
PostgreSQL server, the real `routesh` executable (a pseudo-terminal where the screen or Ctrl-C matters)."""

from __future__ import annotations

import csv
import io
import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from routesh.db.base import ExecOptions, Result
from routesh.db.fetch import FETCH_SIZE, fetch
from routesh.db.sqlite import SqliteDatabase
from routesh.errors import QueryCancelled
from routesh.render import render, row_writer
from tests.helpers import routesh
from tests.test_shell_e2e import concert  # noqa: F401 - the fixture: a copy of concert_singer

ROWS = 2 * FETCH_SIZE + 123  # three batches, the last one short
NUMBERS = f"WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < {ROWS}) SELECT n, 'row ' || n AS label FROM r"
ENDLESS = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT n, 'row ' || n AS label FROM r"


class Batches:
    """A RowSink that keeps what it was given, batch by batch; `then` runs after each batch."""

    def __init__(self, then=None):  # noqa: ANN001
        self.columns: list[str] | None = None
        self.batches: list[list[tuple]] = []
        self.then = then

    def begin(self, columns: list[str]) -> None:
        self.columns = columns

    def write(self, rows) -> None:  # noqa: ANN001
        self.batches.append(list(rows))
        if self.then:
            self.then(self)

    @property
    def rows(self) -> list[tuple]:
        return [row for batch in self.batches for row in batch]


@pytest.fixture
def db(tmp_path) -> SqliteDatabase:
    path = tmp_path / "empty.db"
    sqlite3.connect(path).close()
    database = SqliteDatabase.open(path)
    yield database
    database.close()


# ---- the fetch loop ---------------------------------------------------------------------------------


def _source(n: int):  # noqa: ANN202
    rows = iter([(i,) for i in range(n)])
    asked: list[int] = []

    def fetchmany(size: int) -> list[tuple]:
        asked.append(size)
        return [row for _, row in zip(range(size), rows)]

    return fetchmany, asked


@pytest.mark.parametrize("n, limit, kept, truncated", [
    (10, 0, 10, False), (10, 10, 10, False), (11, 10, 10, True), (25, 7, 7, True), (0, 0, 0, False),
])
def test_fetch_stops_at_the_limit_and_knows_whether_more_exist(n, limit, kept, truncated):
    fetchmany, _ = _source(n)
    sink = Batches()
    fetched = fetch(fetchmany, row_limit=limit, sink=sink, batch=4)
    assert (fetched.count, fetched.truncated, fetched.rows) == (kept, truncated, [])
    assert sink.rows == [(i,) for i in range(kept)]
    assert all(len(b) <= 4 for b in sink.batches)
    fetchmany, _ = _source(n)  # without a sink the same rows are kept
    kept_rows = fetch(fetchmany, row_limit=limit, batch=4)
    assert (kept_rows.rows, kept_rows.truncated) == ([(i,) for i in range(kept)], truncated)


def test_fetch_asks_for_one_row_past_the_limit_and_no_more():
    fetchmany, asked = _source(100)
    fetch(fetchmany, row_limit=9, sink=Batches(), batch=4)
    assert asked == [4, 4, 2]  # 8 rows, then 1 more for the limit and 1 to see whether a tenth exists


def test_before_batch_runs_before_every_fetch_and_can_stop_it():
    fetchmany, asked = _source(100)
    calls = []

    def before() -> None:
        calls.append(len(asked))
        if len(calls) == 3:
            raise QueryCancelled("stop")

    sink = Batches()
    with pytest.raises(QueryCancelled):
        fetch(fetchmany, row_limit=0, sink=sink, before_batch=before, batch=10)
    assert calls == [0, 1, 2] and len(sink.batches) == 2


# ---- writers ---------------------------------------------------------------------------------------

_VALUES = [(1, "ab", None, 2.5, b"\x00\xff"), (22, "c,d", True, 3.0, None), (3, 'quo"te', False, -1.25, b"")]
_COLUMNS = ["id", "name", "flag", "score", "blob"]


@pytest.mark.parametrize("fmt", ["csv", "tsv", "json", "jsonl"])
def test_streamed_in_batches_reads_exactly_as_rendered_whole(fmt):
    out = io.StringIO()
    writer = row_writer(fmt, out)
    writer.begin(_COLUMNS)
    for row in _VALUES:
        writer.write([row])
    writer.finish()
    assert out.getvalue() == render(Result(_COLUMNS, _VALUES, 0.0), fmt)
    assert writer.rows_written == 3


def test_formats_for_programs_parse_back():
    result = Result(_COLUMNS, _VALUES, 0.0)
    assert list(csv.reader(io.StringIO(render(result, "csv"))))[1] == ["1", "ab", "", "2.5", "\\x00ff"]
    assert [json.loads(line)["name"] for line in render(result, "jsonl").splitlines()] == ["ab", "c,d", 'quo"te']
    assert json.loads(render(result, "json"))[1] == {"id": 22, "name": "c,d", "flag": True, "score": 3.0, "blob": None}
    assert json.loads(render(Result(["a"], [], 0.0), "json")) == []


def test_a_streamed_table_keeps_the_first_batch_widths_and_says_so():
    out = io.StringIO()
    writer = row_writer("table", out)
    writer.begin(["n", "label"])
    writer.write([(1, "a"), (2, "bb")])
    assert writer.widths_from is None  # one batch: nothing to say
    writer.write([(3, "c"), (40000, "a much longer label")])
    writer.finish()
    assert writer.widths_from == 2
    lines = out.getvalue().splitlines()
    assert lines[:5] == render(Result(["n", "label"], [(1, "a"), (2, "bb")], 0.0), "table").splitlines()[:5]
    assert lines[5] == "|   3 | c       |"  # same widths, numbers still on the right
    assert lines[6] == "| 40000 | a much longer label |"  # wider values push their row out of line, as psql's
    assert lines[7] == lines[0]  # closed by the same border


def test_expanded_records_keep_counting_across_batches():
    out = io.StringIO()
    writer = row_writer("table", out, expanded=True)
    writer.begin(["n"])
    writer.write([(1,), (2,)])
    writer.write([(3,)])
    writer.finish()
    assert [line for line in out.getvalue().splitlines() if "RECORD" in line] == [
        "-[ RECORD 1 ]+--", "-[ RECORD 2 ]+--", "-[ RECORD 3 ]+--"]


# ---- SQLite ----------------------------------------------------------------------------------------


def test_sqlite_streams_every_row_in_batches(db):
    sink = Batches()
    result = db.execute(NUMBERS, options=ExecOptions(row_limit=0), sink=sink)
    assert sink.columns == ["n", "label"]
    assert [len(b) for b in sink.batches] == [FETCH_SIZE, FETCH_SIZE, 123]
    assert sink.rows[-1] == (ROWS, f"row {ROWS}")
    assert (result.rows, result.row_count, result.truncated) == ([], ROWS, False)


def test_sqlite_stream_stops_at_the_row_limit(db):
    sink = Batches()
    result = db.execute(ENDLESS, options=ExecOptions(row_limit=FETCH_SIZE + 5, timeout=10), sink=sink)
    assert (result.row_count, result.truncated, len(sink.rows)) == (FETCH_SIZE + 5, True, FETCH_SIZE + 5)


def test_sqlite_cancel_between_batches_stops_the_stream(db):
    sink = Batches(then=lambda s: db.cancel() if len(s.batches) == 2 else None)
    with pytest.raises(QueryCancelled):
        db.execute(ENDLESS, options=ExecOptions(row_limit=0, timeout=0), sink=sink)
    assert len(sink.batches) == 2
    assert db.execute("SELECT 1").rows == [(1,)]  # the connection is fine afterwards


def test_sqlite_streamed_timeout_bounds_each_batch_not_the_whole_export(db):
    slow = Batches(then=lambda s: time.sleep(0.4))  # a slow reader: three batches take 1.2 s in all
    result = db.execute(NUMBERS, options=ExecOptions(row_limit=0, timeout=1.0), sink=slow)
    assert result.row_count == ROWS
    with pytest.raises(Exception, match="timeout"):  # a statement slow in the database still stops
        db.execute(ENDLESS.replace("SELECT n, 'row ' || n AS label FROM r", "SELECT count(*) FROM r"),
                   options=ExecOptions(row_limit=0, timeout=0.3), sink=Batches())


# ---- PostgreSQL ------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_postgres_streams_through_the_server_side_cursor(pg_server):
    from routesh.db.postgres import PostgresDatabase

    database = PostgresDatabase.connect(pg_server.admin_dsn)
    try:
        sink = Batches()
        result = database.execute(f"SELECT n, 'row ' || n AS label FROM generate_series(1, {ROWS}) n",
                                  options=ExecOptions(row_limit=0), sink=sink)
        assert [len(b) for b in sink.batches] == [FETCH_SIZE, FETCH_SIZE, 123]
        assert (result.row_count, sink.rows[-1]) == (ROWS, (ROWS, f"row {ROWS}"))
        limited = database.execute("SELECT n FROM generate_series(1, 100000) n", options=ExecOptions(row_limit=7),
                                   sink=Batches())
        assert (limited.row_count, limited.truncated) == (7, True)
        cancelling = Batches(then=lambda s: database.cancel() if len(s.batches) == 1 else None)
        with pytest.raises(QueryCancelled):
            database.execute("SELECT n FROM generate_series(1, 10000000) n", options=ExecOptions(row_limit=0),
                             sink=cancelling)
        assert len(cancelling.batches) == 1
        # in write mode a query streams through a server-side cursor too; a write's RETURNING rows stream as well
        database.set_writes(True)
        database.execute("CREATE TABLE IF NOT EXISTS streamed (n int)")
        returned = Batches()
        written = database.execute(f"INSERT INTO streamed SELECT generate_series(1, {ROWS}) RETURNING n",
                                   options=ExecOptions(row_limit=0), sink=returned)
        assert (written.status, len(returned.rows)) == (f"INSERT 0 {ROWS}", ROWS)
        queried = Batches()
        assert database.execute("SELECT n FROM streamed", options=ExecOptions(row_limit=0),
                                sink=queried).row_count == ROWS
        assert [len(b) for b in queried.batches] == [FETCH_SIZE, FETCH_SIZE, 123]
        database.execute("DROP TABLE streamed")
    finally:
        database.close()


# A row of the types whose text differs between Python and PostgreSQL, names and values that need quoting, a
# newline inside a value (one row, two lines), NULL and non-ASCII text.
PG_ODD = ("SELECT n, n % 2 = 0 AS \"even?\", n * 0.5::float8 AS half, ('2026-01-0' || (n % 9 + 1))::date AS day, "
          "jsonb_build_object('n', n) AS doc, ARRAY[n, n + 1] AS pair, '\\x0102'::bytea AS raw, "
          "CASE WHEN n % 3 = 0 THEN NULL ELSE 'é, \"q\"' || chr(10) || n END AS \"odd, name\" "
          "FROM generate_series(1, {rows}) n")


def _exported(database, sql: str, fmt: str, row_limit: int) -> tuple[str, Result]:  # noqa: ANN001
    out = io.StringIO()
    result = database.execute(sql, options=ExecOptions(row_limit=row_limit), sink=row_writer(fmt, out))
    return out.getvalue(), result


@pytest.mark.postgres
def test_postgres_exports_without_a_limit_through_copy_as_psql_and_the_cursor_write_them(pg_server, tmp_path):
    from routesh.db.postgres import PostgresDatabase
    from routesh.evaluate.pgserver import find_bin_dir

    database = PostgresDatabase.connect(pg_server.admin_dsn)
    sql = PG_ODD.format(rows=ROWS)
    try:
        for fmt in ("csv", "tsv"):
            copied, result = _exported(database, sql, fmt, row_limit=0)  # COPY: the server formats
            fetched, limited = _exported(database, sql, fmt, row_limit=ROWS + 1)  # the cursor: routesh formats
            assert copied == fetched  # one text whichever path: each value as the server spells it
            assert (result.columns, result.row_count, result.truncated) == (limited.columns, ROWS, False)
            rows = list(csv.reader(io.StringIO(copied), delimiter="," if fmt == "csv" else "\t"))
            assert rows[0] == ["n", "even?", "half", "day", "doc", "pair", "raw", "odd, name"]
            assert rows[2] == ["2", "t", "1", "2026-01-03", '{"n": 2}', "{2,3}", "\\x0102", 'é, "q"\n2']
            assert rows[3][7] == "" and len(rows) == ROWS + 1
        psql = find_bin_dir() / "psql"
        if psql.exists():  # byte for byte what psql's \copy writes
            target = tmp_path / "psql.csv"
            subprocess.run([str(psql), pg_server.admin_dsn, "-c", f"\\copy ({sql}) to '{target}' with (format csv, "
                            "header)"], check=True, capture_output=True)
            assert target.read_text() == _exported(database, sql, "csv", row_limit=0)[0]
    finally:
        database.close()


class _Lines:
    """A TextSink that keeps the text; `then` runs after each piece."""

    delimiter = ","

    def __init__(self, then=None):  # noqa: ANN001
        self.columns: list[str] = []
        self.text, self.rows, self.then = io.StringIO(), 0, then

    def begin(self, columns: list[str]) -> None:
        self.columns = columns

    def write(self, rows) -> None:  # noqa: ANN001
        raise AssertionError("a COPY export hands over formatted lines, not rows")

    def write_lines(self, text: str, rows: int) -> None:
        self.text.write(text)
        self.rows += rows
        if self.then:
            self.then(self)


@pytest.mark.postgres
def test_a_copy_export_stops_at_a_cancel_after_a_whole_row_and_its_timeout_bounds_each_wait(pg_server):
    from routesh.db.postgres import PostgresDatabase
    from routesh.errors import QueryError, QueryTimeout

    database = PostgresDatabase.connect(pg_server.admin_dsn)
    endless = ENDLESS  # generate_series would compute every row before the first is sent
    try:
        backend = database.execute("SELECT pg_backend_pid()").rows
        cancelling = _Lines(then=lambda sink: database.cancel())
        with pytest.raises(QueryCancelled):
            database.execute(endless, options=ExecOptions(row_limit=0, timeout=0), sink=cancelling)
        lines = cancelling.text.getvalue().splitlines()
        assert len(lines) == cancelling.rows > 0 and lines[-1] == f"{cancelling.rows},row {cancelling.rows}"
        # the timeout bounds each wait for rows, not the export: 30 rows 50 ms apart take longer than it
        slow = "SELECT n FROM generate_series(1, 30) n, LATERAL (SELECT pg_sleep(0.05)) s"
        steady = _Lines()
        assert database.execute(slow, options=ExecOptions(row_limit=0, timeout=0.5), sink=steady).row_count == 30
        started = time.monotonic()
        with pytest.raises(QueryTimeout, match="timed out after 0.5 s"):
            database.execute("SELECT pg_sleep(5) AS z", options=ExecOptions(row_limit=0, timeout=0.5), sink=_Lines())
        assert time.monotonic() - started < 3
        # a sink that fails part way (a full disk) stops the COPY; the connection goes on
        def fail(sink: _Lines) -> None:
            raise OSError("No space left on device")
        with pytest.raises(OSError):
            database.execute(endless, options=ExecOptions(row_limit=0, timeout=0), sink=_Lines(then=fail))
        with pytest.raises(QueryError, match="division by zero"):
            database.execute("SELECT 1 / (n - 3) FROM generate_series(1, 5) n", options=ExecOptions(row_limit=0),
                             sink=_Lines())
        assert database.execute("SELECT 42 AS answer").rows == [(42,)]
        assert database.execute("SELECT pg_backend_pid()").rows == backend  # the same connection all along
    finally:
        database.close()


# ---- the executable --------------------------------------------------------------------------------


def test_row_limit_0_exports_every_row_to_a_pipe(db):
    path = db.path
    run = routesh(str(path), "--sql", NUMBERS, "--yes", "--format", "csv", "--row-limit", "0")
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0] == "n,label" and len(lines) == ROWS + 1 and lines[-1] == f"{ROWS},row {ROWS}"
    run = routesh(str(path), "--sql", NUMBERS, "--yes", "--format", "json", "--row-limit", "0")
    assert len(json.loads(run.out)) == ROWS
    run = routesh(str(path), "--sql", NUMBERS, "--yes", "--format", "table", "--row-limit", "0")
    assert run.out.rstrip().endswith(f"({ROWS} rows; column widths from the first {FETCH_SIZE})")
    run = routesh(str(path), "--sql", NUMBERS, "--yes", "--format", "jsonl", "--row-limit", "10")
    assert len(run.out.splitlines()) == 10 and "stopped at the row limit of 10" in run.err


def test_a_reader_that_goes_away_ends_it_quietly(db):
    exe = str(Path(sys.executable).with_name("routesh"))
    pipeline = subprocess.run(["bash", "-c", f'"{exe}" "{db.path}" --sql "{ENDLESS}" --yes -f csv --row-limit 0 '
                               '--timeout 0 | head -3; echo "status ${PIPESTATUS[0]}" >&2'],
                              capture_output=True, text=True, timeout=60)
    assert pipeline.stdout.splitlines() == ["n,label", "1,row 1", "2,row 2"]
    assert pipeline.stderr.splitlines()[-1] == "status 141" and "Traceback" not in pipeline.stderr, pipeline.stderr


def _spawn(command: str):  # noqa: ANN202
    import pexpect

    return pexpect.spawn("bash", ["-c", command], encoding="utf-8", timeout=30,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_ctrl_c_during_an_export_leaves_a_well_formed_file_and_says_how_many_rows(db, tmp_path):
    import pexpect

    exe = str(Path(sys.executable).with_name("routesh"))
    for fmt in ("csv", "json"):
        out = tmp_path / f"out.{fmt}"
        child = _spawn(f'"{exe}" "{db.path}" --sql "{ENDLESS}" --yes -f {fmt} --row-limit 0 --timeout 0 > "{out}"')
        child.expect("WITH RECURSIVE")  # echoed on stderr: running now
        deadline = time.monotonic() + 20
        while (not out.exists() or out.stat().st_size < 200_000) and time.monotonic() < deadline:
            time.sleep(0.05)
        child.sendintr()
        child.expect(r"routesh: query cancelled; (\d+) rows were written before it stopped")
        written = int(child.match.group(1))
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 3
        if fmt == "csv":
            rows = list(csv.reader(out.open()))
            assert rows[0] == ["n", "label"] and len(rows) == written + 1
            assert rows[-1] == [str(written), f"row {written}"]  # the last row is whole
        else:
            assert [r["n"] for r in json.loads(out.read_text())] == list(range(1, written + 1))


def test_the_screen_keeps_its_row_limit(db):
    import pexpect

    exe = str(Path(sys.executable).with_name("routesh"))
    child = _spawn(f'"{exe}" "{db.path}" --sql "{ENDLESS}" --yes --row-limit 0 --timeout 10')
    child.expect(r"\(1000 rows\) — stopped at the screen's limit of 1000 rows")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_the_shell_streams_every_row_into_an_o_file_and_keeps_the_screen_limit(tmp_path, concert):
    from tests.test_shell_e2e import NO_MODEL, Shell, shell_env

    sh = Shell([str(concert), *NO_MODEL, "--row-limit", "0"], env=shell_env(tmp_path), cwd=tmp_path)
    try:
        shown = sh.do(NUMBERS + ";", r"\(1000 rows\) — stopped at the screen's limit of 1000 rows")
        assert f"row {ROWS}" not in shown
        sh.do("\\T csv", r"Output format is csv\.")
        sh.do("\\o numbers.csv", r"Results go to numbers\.csv")
        shown = sh.do(NUMBERS + ";", rf"{ROWS} rows written to numbers\.csv\.")
        assert "row 17" not in shown  # the rows went to the file, not the screen
        lines = (tmp_path / "numbers.csv").read_text().splitlines()
        assert lines[0] == "n,label" and len(lines) == ROWS + 1 and lines[-1] == f"{ROWS},row {ROWS}"
        sh.do("\\o", r"Results go to the screen\.")
        sh.quit()
    finally:
        sh.close()
