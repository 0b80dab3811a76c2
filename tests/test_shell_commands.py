"""The command registry and its handlers, on a real SQLite database, without a terminal: what each
command prints and what it asks the shell to do next. The terminal itself is in test_shell_e2e.py."""

from __future__ import annotations

import sqlite3

import pytest
from prompt_toolkit.styles import Style

from routesh.config import load_config
from routesh.db import connect
from routesh.errors import UsageError
from routesh.shell import commands
from routesh.sql.classify import classify, ready_to_submit, starts_like_sql
from routesh.shell.modelload import ModelLoader
from routesh.shell.session import ShellSession
from tests.helpers import make_shop_db


class NoEngine:
    name, backend = "none", "test"

    def close(self) -> None: ...


@pytest.fixture()
def session(tmp_path, monkeypatch):
    monkeypatch.setenv("ROUTESH_CONFIG", str(tmp_path / "config.toml"))
    db = connect(str(make_shop_db(tmp_path / "shop.db")))
    shell = ShellSession(db=db, named_queries=dict(load_config().named_queries),
                         model=ModelLoader(None, factory=lambda s, b, notify: NoEngine()), style=Style([]))
    shell.refresh_schema().join()
    yield shell
    db.close()


def run(session, line):
    command, args, plus = commands.find(line)
    return command.handler(session, args, plus)


def test_every_command_is_in_the_help_and_found_by_each_of_its_names():
    text = commands.help_text()
    for command in commands.REGISTRY:
        assert command.names[0] in text and command.help in text
        for name in command.names:
            assert commands.find(name)[0] is command
    assert commands.find("\\dt+")[2] is True
    assert commands.find("\\x+") is None  # + only where it means something
    assert commands.find("\\nope") is None


def test_listing_and_describing(session, capsys):
    run(session, "\\dt")
    out = capsys.readouterr().out
    assert "customer" in out and "orders" in out and "big_orders" in out
    run(session, "\\d orders")
    out = capsys.readouterr().out
    assert "customer_id" in out and "REFERENCES customer" in out
    with pytest.raises(UsageError, match="did you mean"):
        run(session, "\\d order")
    run(session, ".schema customer")
    assert "CREATE TABLE customer" in capsys.readouterr().out


def test_settings_commands(session, capsys):
    run(session, "\\x")
    assert session.expanded == "on"
    run(session, "\\x auto")
    assert session.expanded == "auto"
    run(session, "\\timing on")
    assert session.timing
    run(session, "\\T csv")
    assert session.fmt == "csv"
    with pytest.raises(UsageError, match="unknown format"):
        run(session, "\\T xml")
    run(session, "\\pager off")
    assert session.output.pager == "off"
    run(session, "\\stages")
    assert session.show_stages
    run(session, "\\stages use ts")
    assert session.stages.label() == "ts"
    with pytest.raises(UsageError):
        run(session, "\\stages use sl,zz")


def test_output_to_a_file(session, tmp_path):
    target = tmp_path / "out.txt"
    run(session, f"\\o {target}")
    run(session, "\\dt")
    run(session, "\\o")
    assert "customer" in target.read_text()
    with pytest.raises(UsageError, match="cannot write"):
        run(session, f"\\o {tmp_path}/missing/dir/out.txt")


def test_include_splits_a_script_without_breaking_strings(session, tmp_path):
    script = tmp_path / "q.sql"
    script.write_text("-- two statements\nSELECT 'a;b' AS x;\nSELECT count(*) FROM customer; -- done\n")
    outcome = run(session, f"\\i {script}")
    assert outcome.sql == ("-- two statements\nSELECT 'a;b' AS x", "SELECT count(*) FROM customer")
    with pytest.raises(UsageError, match="cannot read"):
        run(session, f"\\i {tmp_path}/none.sql")


def test_named_queries_are_saved_to_the_config_file(session, tmp_path, capsys):
    run(session, "\\n big SELECT * FROM orders WHERE total > 100")
    assert "big = " in (tmp_path / "config.toml").read_text()
    assert run(session, "\\n big").prefill == "SELECT * FROM orders WHERE total > 100"
    run(session, "\\n")
    assert "big: SELECT" in capsys.readouterr().out
    run(session, "\\nd big")
    with pytest.raises(UsageError, match="no named query"):
        run(session, "\\n big")


def test_write_needs_the_database_name_typed(session, tmp_path):
    session.read_line = lambda message: "wrong.db"
    run(session, "\\write on")
    assert not session.db.writes_allowed
    session.read_line = lambda message: "shop.db"
    run(session, "\\write on")
    assert session.db.writes_allowed
    session.db.execute("INSERT INTO customer (id, name) VALUES (99, 'new')")
    run(session, "\\write off")
    assert not session.db.writes_allowed
    assert sqlite3.connect(tmp_path / "shop.db").execute("SELECT name FROM customer WHERE id = 99").fetchone() == ("new",)


def test_why_and_retry_before_any_question(session, capsys):
    assert run(session, "\\retry") is None
    run(session, "\\why")
    assert "No question asked yet." in capsys.readouterr().out
    assert run(session, "\\ask how many customers?").question == "how many customers?"
    assert run(session, "\\sql SELECT 1").sql == ("SELECT 1",)
    assert run(session, "\\q").quit


@pytest.mark.parametrize(("text", "kind"), [
    ("SELECT * FROM customer;", "sql"),
    ("select name from customer where city = 'Oslo'", "sql"),
    ("with c as (select 1 as x) select x from c", "sql"),
    ("explain query plan select * from orders", "sql"),
    ("SELECT * FROM sqlite_master", "sql"),
    ("INSERT INTO customer (id, name) VALUES (5, 'x')", "sql"),
    ("how many customers live in Oslo?", "question"),
    ("Select the five biggest orders", "question"),  # grammatical to sqlglot, but no such table
    ("select customers from paris", "question"),
    ("show me the orders", "question"),
    ("\\dt", "command"),
    (".tables", "command"),
])
def test_a_line_is_a_question_unless_it_is_sql_for_this_database(session, text, kind):
    assert classify(text, session.schema(), "sqlite").kind == kind


def test_enter_continues_sql_until_the_semicolon():
    assert not ready_to_submit("SELECT *")
    assert ready_to_submit("SELECT *\nFROM customer;")
    assert ready_to_submit("SELECT *\nFROM customer\n")  # a blank line ends it too
    assert ready_to_submit("how many customers?")
    assert ready_to_submit("\\d customer")
    assert starts_like_sql("(select 1) union (select 2)") and not starts_like_sql("explain the dip in sales")


def test_edit_opens_the_last_sql_in_the_editor_and_prefills_the_result(session, tmp_path, monkeypatch):
    editor = tmp_path / "editor.sh"
    editor.write_text('#!/bin/sh\nsed -i "s/customer/orders/" "$1"\n')
    editor.chmod(0o755)
    monkeypatch.setenv("VISUAL", str(editor))
    session.last_sql = "SELECT count(*) FROM customer"
    assert run(session, "\\e").prefill == "SELECT count(*) FROM orders"
    monkeypatch.setenv("VISUAL", str(tmp_path / "no-such-editor"))
    with pytest.raises(UsageError, match="editor not found"):
        run(session, "\\e")


def test_the_value_index_is_kept_across_questions_and_rebuilt_with_the_schema(session):
    schema = session.schema()
    index = session.value_index(schema)
    assert session.value_index(schema) is index  # the next question reuses what was read
    session.refresh_schema().join()  # as after DDL or writes
    fresh = session.schema()
    assert fresh is not schema and session.value_index(fresh) is not index
