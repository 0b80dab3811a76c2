"""The interactive shell in SQL-only mode, driven in a real pseudo-terminal."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pexpect
import pytest

from tests.helpers import make_shop_db, sha256

ROUTESH = str(Path(sys.executable).with_name("routesh"))


def ready(child, prompt: str = r"shop\.db>") -> None:
    """Wait for the prompt, then a moment more: prompt-toolkit draws it just before it puts the terminal
    in raw mode, and keys sent faster than a person types would meet the cooked terminal (where ^C
    flushes the line and ^D is a bare end-of-file)."""
    child.expect(prompt)
    time.sleep(0.3)


@pytest.fixture
def shell(tmp_path):
    db = make_shop_db(tmp_path / "shop.db")
    env = {"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data"), "TERM": "xterm", "PATH": "/usr/bin:/bin",
           "PROMPT_TOOLKIT_NO_CPR": "1", "ROUTESH_CONFIG": str(tmp_path / "config.toml"), "PAGER": "cat",
           "ROUTESH_CACHE_DIR": str(tmp_path / "models")}
    # SQL only: a model that fails to load at once (a folder that does not exist), so that the shell does not
    # start converting the default model in the background when the prompt shows
    child = pexpect.spawn(ROUTESH, [str(db), "--model", "./no-model"], env=env, cwd=str(tmp_path), encoding="utf-8",
                          timeout=20, dimensions=(40, 160))
    ready(child)
    yield child, db
    child.terminate(force=True)


def test_query_refusal_cancel_and_quit(shell):
    child, db = shell
    before = sha256(db)
    child.sendline("SELECT name, city FROM customer")
    child.expect(r"\.\.\.>")  # no ';' yet: a continuation prompt
    child.sendline("ORDER BY id LIMIT 2;")
    child.expect(r"customer 2")
    child.expect(r"\(2 rows\)")
    ready(child)

    child.sendline("DELETE FROM orders;")
    child.expect("refused by the guard: DELETE is not a query")
    ready(child)

    # Ctrl-C cancels a runaway query and the shell keeps working
    child.sendline("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r;")
    child.expect(pexpect.TIMEOUT, timeout=1)
    child.sendintr()
    child.expect("query cancelled")
    ready(child)
    child.sendline("SELECT count(*) AS n FROM orders;")
    child.expect(r"\b50\b")
    ready(child)

    child.sendline("\\dt")
    child.expect("big_orders")
    child.expect("view")
    ready(child)
    child.sendline("\\q")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert sha256(db) == before


def test_ctrl_c_at_the_prompt_clears_the_line_and_ctrl_d_quits(shell):
    child, _ = shell
    child.send("SELECT broken")
    child.sendintr()
    ready(child)
    child.sendline("SELECT 41 + 1 AS answer;")
    child.expect(r"\b42\b")
    ready(child)
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
