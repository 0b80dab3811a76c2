"""Layer (a) of the read-only guard (routesh/sql/guard.py), on its own: sqlglot, no database.

Every adversarial attempt (tests/adversarial.py) is refused with a reason that names what was found;
legitimately read-only queries pass; unparseable text is refused; write mode lets plain writes through
but never what leaves the database.
"""

from __future__ import annotations

import pytest

from routesh.sql import guard
from routesh.errors import Refused
from tests.adversarial import (
    POSTGRES_ATTEMPTS,
    POSTGRES_READ_ONLY,
    SQLITE_ATTEMPTS,
    SQLITE_READ_ONLY,
    render,
)

GUARD_TMP = "/tmp/routesh-guard-test"  # never created: layer (a) only looks at text

# Reasons that are about the text as a whole rather than one node in it.
_WHOLE_TEXT_REASONS = ("statements in one string", "could not parse", "Unicode-escaped identifier", "empty statement")


def _cases(dialect: str, corpus: list[tuple[str, str]]) -> list:
    return [pytest.param(dialect, render(sql, tmp=GUARD_TMP), id=f"{dialect}-{label}") for label, sql in corpus]


ATTEMPTS = _cases("sqlite", SQLITE_ATTEMPTS) + _cases("postgres", POSTGRES_ATTEMPTS)
READ_ONLY = _cases("sqlite", SQLITE_READ_ONLY) + _cases("postgres", POSTGRES_READ_ONLY)


def test_corpora_are_big_enough_and_labels_unique():
    for corpus in (SQLITE_ATTEMPTS, POSTGRES_ATTEMPTS):
        assert len(corpus) >= 45
        labels = [label for label, _ in corpus]
        assert len(labels) == len(set(labels))
    for corpus in (SQLITE_READ_ONLY, POSTGRES_READ_ONLY):
        assert len(corpus) >= 40


@pytest.mark.parametrize(("dialect", "sql"), ATTEMPTS)
def test_attempt_is_refused_with_a_reason(dialect, sql):
    verdict = guard.classify(sql, dialect)
    assert not verdict.read_only, f"guard let through: {sql!r}"
    assert verdict.reason and verdict.reason != "read-only query"
    if verdict.node:
        # the reason names the node it found: "DELETE inside a WITH clause ...", "function set_config() ..."
        named = verdict.node.split()[-1].lower()
        assert named in verdict.reason.lower(), (verdict.node, verdict.reason)
    else:
        assert any(why in verdict.reason for why in _WHOLE_TEXT_REASONS), verdict.reason
    with pytest.raises(Refused) as refused:
        guard.check(sql, dialect)
    assert refused.value.layer == guard.LAYER
    assert refused.value.reason == verdict.reason


@pytest.mark.parametrize(("dialect", "sql"), READ_ONLY)
def test_read_only_query_passes(dialect, sql):
    verdict = guard.classify(sql, dialect)
    assert verdict.read_only, verdict.reason
    guard.check(sql, dialect)  # does not raise
    guard.check(sql, dialect, writes_allowed=True)


UNPARSEABLE = [
    "",
    "   \n\t ",
    "-- only a comment",
    "/* only a comment */",
    ";",
    "SELEC * FROM t",
    "SELECT * FROM",
    "SELECT (1",
    "SELECT 'unterminated",
    "))) garbage (((",
    "SELECT 1 /* unterminated comment",
    "please show me the biggest orders",
]


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
@pytest.mark.parametrize("sql", UNPARSEABLE)
def test_unparseable_text_is_refused(dialect, sql):
    verdict = guard.classify(sql, dialect)
    assert not verdict.read_only
    assert verdict.reason
    with pytest.raises(Refused):
        guard.check(sql, dialect)
    with pytest.raises(Refused):
        guard.check(sql, dialect, writes_allowed=True)


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
@pytest.mark.parametrize("spelling", ["lower", "upper", "quoted"])
def test_every_denied_function_is_refused_wherever_it_is_called(dialect, spelling):
    placements = ["SELECT {}(1, 2)", "SELECT * FROM {}(1, 2)", "SELECT id FROM t WHERE {}(1) IS NOT NULL",
                  "SELECT id FROM t ORDER BY {}()", "WITH c AS (SELECT {}('a') AS x) SELECT * FROM c"]
    for name in sorted(guard.DENIED_FUNCTIONS[dialect]):
        for placement in placements:
            written = {"lower": name, "upper": name.upper(), "quoted": f'"{name}"'}[spelling]
            sql = placement.format(written)
            verdict = guard.classify(sql, dialect)
            assert not verdict.read_only, sql
            assert name in verdict.reason, (sql, verdict.reason)
            with pytest.raises(Refused):
                guard.check(sql, dialect, writes_allowed=True)


# ---- write mode ------------------------------------------------------------------------------------

PLAIN_WRITES = {
    "sqlite": [
        "INSERT INTO victim (id, name) VALUES (999, 'x')",
        "INSERT OR REPLACE INTO victim (id, name) VALUES (1, 'x')",
        "UPDATE victim SET name = 'y' WHERE id = 1",
        "DELETE FROM victim WHERE id = 1",
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)",
        "CREATE INDEX idx_notes ON victim (name)",
        "DROP TABLE victim",
    ],
    "postgres": [
        "INSERT INTO victim (id, name) VALUES (999, 'x')",
        "INSERT INTO victim (id, name) VALUES (1, 'x') ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name",
        "UPDATE victim SET name = 'y' WHERE id = 1",
        "DELETE FROM victim WHERE id = 1",
        "WITH d AS (DELETE FROM victim RETURNING *) SELECT count(*) FROM d",
        "CREATE TABLE notes (id int PRIMARY KEY, body text)",
        "ALTER TABLE victim ADD COLUMN extra text",
    ],
}

STILL_REFUSED_IN_WRITE_MODE = {
    "sqlite": [
        ("attach", "ATTACH DATABASE '/tmp/routesh-guard-test/other.db' AS other"),
        ("attach_memory", "ATTACH ':memory:' AS m"),
        ("detach", "DETACH DATABASE temp"),
        ("vacuum_into", "VACUUM INTO '/tmp/routesh-guard-test/copy.db'"),
        ("load_extension", "SELECT load_extension('/tmp/routesh-guard-test/evil')"),
        ("load_extension_in_insert", "INSERT INTO victim (id, name) VALUES (1, load_extension('x'))"),
        ("writefile", "SELECT writefile('/tmp/routesh-guard-test/w.txt', 'x')"),
        ("multi_statement", "INSERT INTO victim VALUES (1, 'x'); DELETE FROM victim"),
        ("multi_statement_hidden", "UPDATE victim SET name = 'a;b' /* ; */; DROP TABLE t"),
    ],
    "postgres": [
        ("copy_to_program", "COPY t TO PROGRAM 'touch /tmp/routesh-guard-test/p'"),
        ("copy_from_program", "COPY victim FROM PROGRAM 'echo 1,x'"),
        ("copy_to_file", "COPY t TO '/tmp/routesh-guard-test/out.csv'"),
        ("set_config", "SELECT set_config('default_transaction_read_only', 'off', false)"),
        ("set_config_in_update", "UPDATE victim SET name = pg_catalog.set_config('a.b', 'c', false)"),
        ("unicode_escaped_set_config", "SELECT U&\"\\0073et_config\"('statement_timeout', '0', false)"),
        ("lo_export", "SELECT lo_export(424242, '/tmp/routesh-guard-test/lo')"),
        ("dblink_exec", "SELECT dblink_exec('dbname=postgres', 'DROP DATABASE x')"),
        ("pg_terminate_backend", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"),
        ("ts_stat", "SELECT * FROM ts_stat(concat('SELECT to_tsvector(pg_termi', 'nate_backend(1)::text)'))"),
        ("do_block", "DO $$ BEGIN PERFORM pg_terminate_backend(1); END $$"),
        ("multi_statement", "INSERT INTO victim VALUES (1, 'x'); DELETE FROM victim"),
        ("multi_statement_dollar", "SELECT $$;$$; DROP TABLE t"),
    ],
}


@pytest.mark.parametrize(
    ("dialect", "sql"),
    [pytest.param(d, s, id=f"{d}-{i}") for d, sqls in PLAIN_WRITES.items() for i, s in enumerate(sqls)],
)
def test_write_mode_allows_plain_writes(dialect, sql):
    with pytest.raises(Refused):
        guard.check(sql, dialect)  # not in read-only mode
    guard.check(sql, dialect, writes_allowed=True)  # does not raise


@pytest.mark.parametrize(
    ("dialect", "sql"),
    [pytest.param(d, s, id=f"{d}-{label}") for d, cases in STILL_REFUSED_IN_WRITE_MODE.items() for label, s in cases],
)
def test_write_mode_still_refuses_what_leaves_the_database(dialect, sql):
    with pytest.raises(Refused) as refused:
        guard.check(sql, dialect, writes_allowed=True)
    assert refused.value.layer == guard.LAYER
    assert refused.value.reason


def test_unicode_escaped_identifier_check_is_exact():
    """U&"..." written solid is refused on PostgreSQL; `u & "x"` (a real bitwise AND) and SQLite are not."""
    assert not guard.classify('SELECT U&"\\0064ata" FROM t', "postgres").read_only
    assert not guard.classify('SELECT u&"x" FROM t', "postgres").read_only
    assert guard.classify('SELECT u & "x" FROM t', "postgres").read_only
    assert guard.classify("SELECT U&'\\0041' AS s", "postgres").read_only  # a string, not a name
    assert guard.classify('SELECT U&"x" FROM t', "sqlite").read_only  # SQLite has no such syntax


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_deeply_nested_sql_is_refused_not_a_crash(dialect):
    # smollm2 wrote DATE(FLOOR(FLOOR(... deep enough to exhaust sqlglot's recursion
    deep = "SELECT " + "FLOOR(" * 400 + "1" + ")" * 400
    verdict = guard.classify(deep, dialect)
    assert not verdict.read_only and "nested too deeply" in verdict.reason
    with pytest.raises(Refused, match="nested too deeply"):
        guard.check(deep, dialect, writes_allowed=True)
