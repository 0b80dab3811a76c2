"""The shell end to end: the real `routesh` executable in a pseudo-terminal (pexpect), on a copy of a real
Spider SQLite database and on a real PostgreSQL server, with the real catalog test model (smollm2-135m)
where a question is asked. Every shell gets its own HOME, config file and model cache, and PAGER=cat,
so nothing touches the user's files and nothing waits in a pager.

The model tests (marked `model`) check the flow — SQL pre-filled at `run> `, Enter runs it, Ctrl-C cancels,
the stages view — not that the 135M model writes the right SQL.
"""

from __future__ import annotations

import io
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest
import tomlkit

from routesh.shell.commands import REGISTRY
from tests.helpers import SHARED_DATA, routesh, sha256
from routesh.evaluate.pgserver import find_bin_dir, start_server

ROUTESH = str(Path(sys.executable).with_name("routesh"))
CONCERT = SHARED_DATA / "spider" / "database" / "concert_singer" / "concert_singer.sqlite"
PROMPT = r"concert_singer\.sqlite(?: \(\d+\))?> "  # (N): a conversation of N turns goes on
RUN = r"run> "
QUESTION = "How many singers are there?"
MODEL_WAIT = 300  # seconds for one question: generous, the 135M model on a busy CPU is slow
# prompt-toolkit colours words one by one: colour codes and spaces may sit between two words
_GAP = r"(?:\x1b\[[0-9;?]*[A-Za-z]|[ \t])*"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]")


def plain(text: str) -> str:
    """What a person would read: colour and cursor codes and carriage returns removed."""
    return _ANSI.sub("", text).replace("\r", "")


def stage_line(label: str) -> str:
    """A \\stages line: a verdict mark (✓ ✗ ·) then the stage's label."""
    return rf"[✓✗·]{_GAP}{re.escape(label)}\b"


class _Terminal(io.StringIO):
    """Keeps everything the shell printed and, like a real terminal, answers its cursor-position requests:
    prompt-toolkit draws the bottom toolbar only once it knows how many rows are left below the cursor."""

    CPR_REQUEST, CPR_REPLY = "\x1b[6n", "\x1b[37;1R"  # "row 37 of 40": room for the prompt and the toolbar

    def __init__(self) -> None:
        super().__init__()
        self.child: pexpect.spawn | None = None
        self._tail = ""  # the end of the last chunk read: a request may straddle two reads

    def write(self, text: str) -> int:
        data = self._tail + text
        if self.child is not None:
            start = 0
            while (found := data.find(self.CPR_REQUEST, start)) >= 0:
                if found + len(self.CPR_REQUEST) > len(self._tail):  # not answered with the last chunk
                    self.child.send(self.CPR_REPLY)
                start = found + 1
        self._tail = data[-(len(self.CPR_REQUEST) - 1):]
        return super().write(text)


class Shell:
    """One interactive routesh in a pseudo-terminal, with everything it printed kept in `transcript`."""

    def __init__(self, args: list[str], *, env: dict[str, str], cwd: Path, prompt: str = PROMPT, timeout: float = 30):
        self.prompt = prompt
        self.transcript = _Terminal()
        self.child = pexpect.spawn(ROUTESH, args, env=env, cwd=str(cwd), encoding="utf-8", timeout=timeout,
                                   dimensions=(40, 160))
        self.transcript.child = self.child
        self.child.logfile_read = self.transcript
        self.ready()

    def ready(self, prompt: str | None = None, timeout: float = -1) -> None:
        """Wait for a prompt, then a moment more: prompt-toolkit draws it just before it puts the terminal
        in raw mode, and keys sent faster than a person types would meet the cooked terminal."""
        self.child.expect(prompt or self.prompt, timeout=timeout)
        time.sleep(0.3)

    def do(self, line: str, *patterns: str, prompt: str | None = None, timeout: float = -1) -> str:
        """Type `line` and Enter, expect each pattern in turn, then the next prompt. Patterns must not
        match the typed line itself (the terminal echoes it). Returns what was shown, as plain text."""
        self.child.sendline(line)
        return self.expect(*patterns, prompt=prompt, timeout=timeout)

    def expect(self, *patterns: str, prompt: str | None = None, timeout: float = -1) -> str:
        seen = []
        for pattern in patterns:
            self.child.expect(pattern, timeout=timeout)
            seen.append(self.child.before + self.child.after)
        self.ready(prompt, timeout=timeout)
        seen.append(self.child.before)
        return plain("".join(seen))

    def quit(self) -> None:
        self.child.sendline("\\q")
        self.child.expect(pexpect.EOF)
        self.child.close()
        assert self.child.exitstatus == 0, plain(self.transcript.getvalue())[-2000:]

    def close(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)
        text = plain(self.transcript.getvalue())
        assert "Traceback" not in text, text[-3000:]


def shell_env(tmp_path: Path, *, model_cache: Path | None = None) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {
        "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_CACHE_HOME": str(home / ".cache"), "ROUTESH_CONFIG": str(tmp_path / "config.toml"),
        "ROUTESH_CACHE_DIR": str(model_cache or tmp_path / "no-model-cache"), "PAGER": "cat",
        "TERM": "xterm", "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
    }
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # how many threads torch may take, as the caller chose
        if name in os.environ:
            env[name] = os.environ[name]
    return env


# For shells that ask no question: a model (a folder, relative to the shell's working directory, that does
# not exist) that fails to load at once. Without it the shell would start converting the default 0.5B model
# in the background as soon as the prompt shows.
NO_MODEL = ["--model", "./no-model"]


def errors(shown: str) -> list[str]:
    return [line.strip() for line in shown.splitlines() if "ERROR" in line]


def count(db: Path, table: str = "singer") -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


@pytest.fixture
def concert(tmp_path) -> Path:
    if not CONCERT.exists():
        pytest.fail(f"missing test data: {CONCERT}", pytrace=False)
    return Path(shutil.copy(CONCERT, tmp_path / "concert_singer.sqlite"))


@pytest.fixture
def shell(tmp_path, concert) -> Iterator[Shell]:
    """A shell on the copy of concert_singer, no model."""
    sh = Shell([str(concert), *NO_MODEL], env=shell_env(tmp_path), cwd=tmp_path)
    yield sh
    sh.close()


@pytest.fixture(scope="module")
def smollm(model_cache) -> Path:
    """The catalog test model, converted once into this test session's model cache."""
    from routesh.engine.models import TEST_MODEL, materialize

    materialize(TEST_MODEL, progress=False)
    return model_cache


@pytest.fixture
def model_shell(tmp_path, concert, smollm) -> Iterator[Shell]:
    sh = Shell([str(concert), "--model", "smollm2-135m"], env=shell_env(tmp_path, model_cache=smollm), cwd=tmp_path)
    yield sh
    sh.close()


def answered(sh: Shell) -> bool:
    """After a question: True when SQL waits at `run> `, False when the pipeline abstained (one line)."""
    which = sh.child.expect([RUN, r"No SQL: [^\r\n]+"], timeout=MODEL_WAIT)
    if which == 1:
        sh.ready()
        return False
    time.sleep(0.3)
    return True


# ---- questions, with the real model ------------------------------------------------------------------


@pytest.mark.model
def test_question_prefills_sql_enter_runs_it_and_stages_view(model_shell):
    sh = model_shell
    sh.do("\\stages on", r"Stages view is on")
    asked = len(sh.transcript.getvalue())
    sh.child.sendline(QUESTION)
    # each step of the default (every stage), one line, with its verdict
    for label in ("values", "linking", "merge", "generation", "vote", "final"):
        sh.child.expect(stage_line(label), timeout=MODEL_WAIT)
    assert answered(sh), "the pipeline abstained (the final stage line says why): no SQL to pre-fill"
    ready = r"SQL ready in \d+\.\d s( \(revised by [a-z, ]+\))?(; \d+ of \d+ candidates agree)?\."
    assert re.search(ready, plain(sh.transcript.getvalue()[asked:]))
    # the SQL waits, highlighted, in the prompt's buffer: right after `run> `, only colour codes
    sh.child.expect(r"(SELECT|WITH)\b")
    assert plain(sh.child.before).strip() == "", repr(sh.child.before)
    time.sleep(0.3)
    # Enter runs it: a table and psql's row footer (or one ERROR line if the small model's SQL fails)
    sh.child.send("\r")
    shown = sh.expect(r"\(\d+ rows?\)|ERROR: [^\r\n]+")
    if "ERROR:" not in shown:
        assert re.search(r"^\+-+", shown, re.M) and re.search(r"^\|-+", shown, re.M), shown  # a psql-style table
    sh.do("\\stages off", r"Stages view is off")
    # SQL typed by the user still runs at once
    shown = sh.do("SELECT count(*) AS n FROM singer;", r"\(1 row\)")
    assert re.search(r"\|\s+6 \|", shown), shown
    sh.quit()


@pytest.mark.model
def test_ctrl_c_cancels_generation_and_the_shell_keeps_working(model_shell):
    sh = model_shell
    sh.child.sendline(QUESTION)
    sh.child.expect(r"schema linking…", timeout=MODEL_WAIT)  # the spinner names the running stage
    asked = len(sh.transcript.getvalue())
    sh.child.send("\x03")
    sh.expect(r"Cancelled\.", timeout=60)
    assert "run>" not in plain(sh.transcript.getvalue()[asked:])  # nothing was pre-filled
    # the next statement works...
    shown = sh.do("SELECT count(*) AS n FROM singer;", r"\(1 row\)")
    assert re.search(r"\|\s+6 \|", shown), shown
    # ...and so does the model: \retry asks again; Ctrl-C at run> drops the SQL
    sh.child.sendline("\\retry")
    if answered(sh):
        sh.child.send("\x03")
        sh.expect(r"Dropped\.")
    sh.quit()


@pytest.mark.model
def test_text_typed_during_a_question_waits_at_run_and_its_enter_runs_nothing(model_shell):
    sh = model_shell
    sh.child.sendline(QUESTION)
    sh.child.expect(r"schema linking…|waiting for the model", timeout=MODEL_WAIT)
    sh.child.send(" -- typed ahead\r")
    if not answered(sh):
        sh.quit()
        return
    sh.child.expect(r"-- typed ahead")  # the text sits in the run> buffer, after the SQL...
    time.sleep(1)
    assert not re.search(r"\(\d+ rows?\)", plain(sh.child.before or "")), "the typed Enter ran the SQL"
    sh.child.send("\x03")  # ...and nothing ran: Ctrl-C drops it
    sh.expect(r"Dropped\.")
    sh.quit()


@pytest.mark.model
def test_one_shot_question(tmp_path, concert, smollm):
    env = shell_env(tmp_path, model_cache=smollm)
    run = routesh(str(concert), "-e", QUESTION, "--model", "smollm2-135m", env=env, timeout=600)
    assert "Traceback" not in run.err
    assert run.code in (0, 4), run.err
    if run.code == 0:  # the SQL on stdout, not run without --yes
        assert re.match(r"(?is)\s*(SELECT|WITH)\b", run.out), run.out
        assert "not run: add --yes to run it" in run.err
    else:  # abstained: nothing on stdout, the reason in one line
        assert run.out == ""
        assert re.search(r"^routesh: no SQL: .+$", run.err, re.M), run.err


_FOREIGN = re.compile(r"Warning|Traceback|\d+%\||it/s\]|s/it\]|Writing model shards|Loading (weights|checkpoint)")


@pytest.mark.model
def test_the_default_model_on_a_fresh_cache_leaves_nothing_but_routesh_on_the_screen(tmp_path, concert, model_cache):
    """First use of the default model: conversion, load and a question. Library warnings, log lines and
    progress bars go to the log file; the screen holds the shell alone."""
    from routesh.engine.models import cached_folder, resolve

    fresh = tmp_path / "fresh-cache"
    env = {**shell_env(tmp_path, model_cache=fresh), "ROUTESH_LOG": str(tmp_path / "routesh.log")}
    sh = Shell([str(concert)], env=env, cwd=tmp_path)
    try:
        sh.child.sendline(QUESTION)
        which = sh.child.expect([RUN, r"No SQL: [^\r\n]+"], timeout=1200)  # converts, loads, then answers
        if which == 0:
            time.sleep(0.3)
            sh.child.send("\x03")
            sh.expect(r"Dropped\.")
        else:
            sh.ready()
        sh.quit()
    finally:
        sh.close()
    screen = plain(sh.transcript.getvalue())
    assert not _FOREIGN.search(screen), _FOREIGN.search(screen).group(0) + "\n" + screen[-3000:]
    # routesh's own line instead: what it is doing, and that it takes a while (the view keeps its first line)
    assert f"converting {resolve(None).location} into a bf16 folder" in screen, screen[-3000:]
    # the converted folder joins the session's cache, so that later tests do not convert it again
    name = cached_folder(resolve(None).location).name
    if not (model_cache / "models" / name).exists():
        (model_cache / "models").mkdir(parents=True, exist_ok=True)
        shutil.move(str(fresh / "models" / name), str(model_cache / "models" / name))


# ---- commands and SQL, no model ----------------------------------------------------------------------


def test_describe_and_list_tables(shell):
    shown = shell.do("\\d singer", r'Table "singer"', r"Referenced by:[^\n]*\n[^\n]*singer_in_concert")
    for column in ("Singer_ID", "Name", "Country", "Song_Name", "Age", "Is_male"):
        assert re.search(rf"^\| {column}\b", shown, re.M), shown
    assert "Primary key: (Singer_ID)" in shown
    shown = shell.do("\\dt", r"List of relations", r"\(4 rows\)")
    for table in ("concert", "singer", "singer_in_concert", "stadium"):
        assert re.search(rf"^\| {table}\s+\| table\s+\|", shown, re.M), shown
    shell.quit()


def test_a_write_typed_as_sql_is_refused_and_nothing_changes(shell, concert):
    before, rows = sha256(concert), count(concert)
    shown = shell.do("DELETE FROM singer;", r"ERROR: refused by the guard: DELETE is not a query")
    assert errors(shown) == ["ERROR: refused by the guard: DELETE is not a query"], shown  # one line
    assert count(concert) == rows == 6
    shell.quit()
    assert sha256(concert) == before


def test_missing_database_file_is_one_line_and_never_created(tmp_path):
    missing = tmp_path / "nope.db"
    child = pexpect.spawn(ROUTESH, [str(missing)], env=shell_env(tmp_path), encoding="utf-8", timeout=30)
    child.expect(pexpect.EOF)
    child.close()
    lines = [line for line in plain(child.before).splitlines() if line.strip()]
    assert child.exitstatus == 1
    assert lines == [f"routesh: no such database file: {missing} (routesh never creates one)"], lines
    assert not missing.exists()


def test_write_on_needs_the_typed_database_name(shell, concert):
    confirm = r"Type the database name to confirm: "
    shell.child.sendline("\\write on")
    shell.ready(confirm)  # the confirmation is a prompt of its own
    shell.child.sendline("concert_singer")  # not the name the shell asked for
    shell.expect(r"Not confirmed; still read-only\.")
    shell.do("INSERT INTO singer (Singer_ID, Name) VALUES (99, 'Test');", r"ERROR: refused by the guard: INSERT")
    assert count(concert) == 6

    shell.child.sendline("\\write on")
    shell.ready(confirm)
    shell.child.sendline("concert_singer.sqlite")
    shell.expect(r"Writes allowed on concert_singer\.sqlite until \\write off")
    shell.child.expect(rf"│{_GAP}RW{_GAP}│")  # the bottom toolbar, drawn after the prompt, says RW
    shell.do("INSERT INTO singer (Singer_ID, Name, Country, Age) VALUES (99, 'Test Singer', 'Nowhere', 40);",
             r"INSERT 1")
    assert count(concert) == 7
    shell.do("SELECT Name FROM singer WHERE Singer_ID = 99;", r"Test Singer", r"\(1 row\)")

    shell.do("\\write off", r"Read-only again\.")
    shell.child.expect(rf"│{_GAP}RO{_GAP}│")
    shell.do("DELETE FROM singer;", r"ERROR: refused by the guard: DELETE is not a query")
    shell.quit()
    assert count(concert) == 7


def test_help_and_display_commands(shell, tmp_path):
    # \? lists every command of the registry
    shown = shell.do("\\?", r"Anything else you type is a question", r"ask the last question again")
    for command in REGISTRY:
        assert command.names[0] in shown, command.names[0]
    # help, quit and exit are commands only alone on a line; otherwise they start a question (which fails
    # here in one line, this shell's model being a folder that does not exist)
    shell.do("exit polls by country", r"ERROR: unknown model '\./no-model'[^\r\n]*")
    shell.do("help", r"Anything else you type is a question")
    # \x: expanded display
    shell.do("\\x", r"Expanded display is on\.")
    shown = shell.do("SELECT Name, Country FROM singer WHERE Singer_ID = 1;", r"\(1 row\)")
    assert re.search(r"-\[ RECORD 1 \][-+]*\s*\nName\s+\| Joe Sharp\s*\nCountry\s+\| Netherlands\s*\n", shown), shown
    shell.do("\\x off", r"Expanded display is off\.")
    # \T csv
    shell.do("\\T csv", r"Output format is csv\.")
    shown = shell.do("SELECT Name FROM singer ORDER BY Singer_ID LIMIT 2;", r"\(2 rows\)")
    assert re.search(r"^Name\nJoe Sharp\nTimbaland\n", shown, re.M), shown
    shell.do("\\T table", r"Output format is table\.")
    # \timing
    shell.do("\\timing", r"Timing is on\.")
    shell.do("SELECT 1 AS one;", r"\(1 row\)\s+Time: \d+\.\d{3} ms")
    shell.do("\\timing off", r"Timing is off\.")
    # \o FILE: results go to the file, not the screen; \o alone comes back
    out = tmp_path / "results.txt"
    shell.do("\\o results.txt", r"Results go to results\.txt")  # relative to the shell's working directory
    shell.child.expect(rf"│{_GAP}\\o results\.txt")  # the toolbar names the file
    mark = len(shell.transcript.getvalue())
    shell.child.sendline("SELECT Name FROM singer ORDER BY Singer_ID LIMIT 2;")
    deadline = time.monotonic() + 30
    while "(2 rows)" not in (out.read_text() if out.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.1)
    shell.ready()
    shell.do("\\o", r"Results go to the screen\.")
    assert "Joe Sharp" not in plain(shell.transcript.getvalue()[mark:])  # not on the screen...
    text = out.read_text()
    assert "| Joe Sharp " in text and "| Timbaland " in text and "(2 rows)" in text, text  # ...in the file
    # \n NAME SQL saves to the config file; \n NAME pre-fills it; Enter runs it
    sql = "SELECT Name FROM singer WHERE Age > 40 ORDER BY Name"
    shell.do(f"\\n older {sql}", r"Saved older\.")
    saved = tomlkit.parse((tmp_path / "config.toml").read_text()).unwrap()
    assert saved["named_queries"] == {"older": sql}
    shell.do("\\n older", prompt=RUN)
    shell.child.send("\r")
    shown = shell.expect(r"\(\d+ rows?\)")
    assert "Joe Sharp" in shown and "Justin Brown" not in shown, shown
    shell.quit()


# ---- PostgreSQL: the server goes away and comes back --------------------------------------------------


@pytest.mark.postgres
def test_postgres_server_killed_then_back(tmp_path):
    if find_bin_dir() is None:  # as the pg_server fixture: skipped, except under CI
        reason = "no PostgreSQL server binaries (initdb, pg_ctl, postgres)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI is set, so the PostgreSQL tests must run", pytrace=False)
        pytest.skip(reason)
    # a server of this test's own: stopping it must not disturb the session's shared one
    with start_server() as server:
        dsn = server.create_database("e2e", sql_text="CREATE TABLE item (id int PRIMARY KEY, name text); "
                                     "INSERT INTO item SELECT g, 'item ' || g FROM generate_series(1, 5) g;")
        sh = Shell([dsn, *NO_MODEL], env=shell_env(tmp_path), cwd=tmp_path, prompt=r"e2e> ")
        try:
            shown = sh.do("SELECT count(*) AS n FROM item;", r"\(1 row\)")
            assert re.search(r"\|\s+5 \|", shown), shown
            server.kill()
            shown = sh.do("SELECT count(*) AS n FROM item;", r"ERROR: [^\r\n]+")
            assert errors(shown) == ["ERROR: connection to the server was lost; it will be reopened on the next "
                                     "statement"], shown
            # while it is down: one line, and the shell stays
            shown = sh.do("SELECT name FROM item WHERE id = 1;", r"ERROR: [^\r\n]+")
            assert len(errors(shown)) == 1 and "could not connect" in shown, shown
            server.restart()
            shown = sh.do("SELECT name FROM item WHERE id = 2;", r"\(1 row\)")
            assert "item 2" in shown
            sh.quit()
        finally:
            sh.close()


# ---- one-shot, no model --------------------------------------------------------------------------------


def test_one_shot_sql(tmp_path, concert):
    env = shell_env(tmp_path)
    run = routesh(str(concert), "-e", "SELECT count(*) FROM singer", "--yes", env=env)
    assert run.code == 0, run.err
    assert re.search(r"^\|\s+6 \|$", run.out, re.M) and "(1 row)" in run.out, run.out
    run = routesh(str(concert), "-e", "-", "--yes", stdin="SELECT Name FROM singer WHERE Singer_ID = 1\n", env=env)
    assert run.code == 0, run.err
    assert "Joe Sharp" in run.out and "(1 row)" in run.out, run.out
    run = routesh(str(concert), "-e", "SELECT count(*) FROM singer", env=env)  # no --yes: printed, not run
    assert run.code == 0 and run.out.strip() == "SELECT count(*) FROM singer", run
    run = routesh(str(concert), "-e", "DELETE FROM singer", "--yes", env=env)
    assert run.code == 2 and run.out == "", run
    assert run.err.strip() == "routesh: refused by the guard: DELETE is not a query"
    assert count(concert) == 6


def test_keys_typed_while_a_statement_runs_reach_the_next_prompt(shell):
    slow = ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3000000) "
            "SELECT count(*) AS slow FROM r;")
    shell.child.sendline(slow)
    shell.child.expect(r"running the statement")  # the spinner: the statement runs now
    shell.child.send("SELECT 6 * 7 AS answer;\r")  # typed ahead, Enter included, as in psql
    shell.child.expect(r"\(1 row\)", timeout=60)  # the slow one's result...
    shown = shell.expect(r"\|\s+42 \|", r"\(1 row\)")  # ...then the typed statement ran at the next prompt
    assert "answer" in shown
    shell.quit()


# ---- remembered queries -----------------------------------------------------------------------------


def test_remember_lists_and_forgets_queries_of_this_schema(shell, tmp_path):
    sh = shell
    sh.do("\\memory", r"Nothing remembered for this schema yet")
    sh.do("SELECT count(*) AS n FROM singer;", r"\(1 row\)")
    sh.do("\\remember How many singers are there?", r"Remembered as #1: How many singers are there\?")
    shown = sh.do("\\memory", r"1 remembered for this schema \([^)]*memory\.sqlite\)", r"SELECT count")
    assert re.search(r"^\s+1\s+How many singers are there\?$", shown, re.M), shown
    assert re.search(r"^\s+SELECT count\(\*\) AS n FROM singer;$", shown, re.M), shown
    assert errors(sh.do("\\forget 7", r"ERROR: [^\r\n]+")) == [
        "ERROR: nothing remembered as #7 for this schema (\\memory lists them)"]
    sh.do("\\forget 1", r"Forgot #1: How many singers are there\?")
    sh.do("\\memory", r"Nothing remembered for this schema yet")
    sh.do("\\memory off", r"Memory is off for this session")
    assert errors(sh.do("\\remember Anything?", r"ERROR: [^\r\n]+")) == [
        "ERROR: memory is off (\\memory on, or memory = true in config.toml)"]
    sh.quit()
    assert (tmp_path / "home" / ".local" / "share" / "routesh" / "memory.sqlite").is_file()  # the user data dir


def run_the_answer(sh: Shell, question: str) -> str:
    """Ask `question`, run the SQL it gets as it is (Enter at run>); what was shown, up to the next prompt."""
    sh.child.sendline(question)
    assert answered(sh), "the pipeline abstained: no SQL to run"
    sh.child.send("\r")
    return sh.expect(r"\(\d+ rows?\)|ERROR: [^\r\n]+")


@pytest.mark.model
def test_sql_that_ran_for_a_question_is_remembered_and_shown_to_the_next_similar_one(model_shell):
    sh = model_shell
    shown = run_the_answer(sh, QUESTION)
    if "ERROR:" in shown:  # the small model's SQL failed: nothing that did not run is remembered
        assert "Remembered" not in shown
        sh.do("\\memory", r"Nothing remembered for this schema yet")
        sh.quit()
        return
    assert re.search(r"Remembered as #1 \(\\memory lists them, \\forget 1 drops it\)\.", shown), shown
    sh.do("\\memory", rf"1\s+{re.escape(QUESTION)}")
    sh.do("\\stages on", r"Stages view is on")
    asked = len(sh.transcript.getvalue())
    sh.child.sendline("How many singers do we have?")
    sh.child.expect(stage_line("memory"), timeout=MODEL_WAIT)
    sh.child.expect(stage_line("linking"), timeout=MODEL_WAIT)  # the memory stage comes first
    assert f"1 remembered query as examples: {QUESTION}" in plain(sh.transcript.getvalue()[asked:])
    if answered(sh):
        sh.child.send("\x03")
        sh.expect(r"Dropped\.")
    sh.quit()


@pytest.mark.model
def test_a_follow_up_is_asked_after_the_sql_that_ran_and_new_ends_the_conversation(model_shell):
    sh = model_shell
    shown = run_the_answer(sh, QUESTION)
    after = sh.child.after or ""  # the prompt that came next
    if "ERROR:" in shown:  # the small model's SQL failed: what did not run is no turn
        assert "(1)" not in after
        sh.do("\\context", r"No conversation going on")
        sh.quit()
        return
    assert "concert_singer.sqlite (1)> " in plain(after), after
    sh.do("\\context", r"The conversation so far \(1 question", rf"1\. {re.escape(QUESTION)}")
    sh.do("\\stages on", r"Stages view is on")
    asked = len(sh.transcript.getvalue())
    sh.child.sendline("and how many of them are from France?")
    sh.child.expect(stage_line("context"), timeout=MODEL_WAIT)
    sh.child.expect(stage_line("linking"), timeout=MODEL_WAIT)  # the context comes first
    assert f"a follow-up to 1 earlier question: {QUESTION}" in plain(sh.transcript.getvalue()[asked:])
    turns = 1
    if answered(sh):
        sh.child.send("\r")
        shown = sh.expect(r"\(\d+ rows?\)|ERROR: [^\r\n]+")
        if "ERROR:" not in shown:  # it ran: a second turn, and not remembered (it means nothing alone)
            turns = 2
            assert "Remembered" not in shown and "concert_singer.sqlite (2)> " in plain(sh.child.after or "")
    sh.do("\\new", rf"New topic: the conversation of {turns} questions? is set aside")
    assert "concert_singer.sqlite> " in plain(sh.child.after or "")
    sh.quit()


# ---- the screen while the model loads (a real terminal: tmux, whose pane is the screen a user sees) -------


class Tmux:
    """One pane of a private tmux server (its own socket): the screen as a user sees it, captured as text. The
    pane stays after its program exits (remain-on-exit), so that a shell that ended early shows why."""

    def __init__(self, name: str, columns: int, rows: int) -> None:
        self.socket = f"routesh-test-{os.getpid()}-{name}"
        self("-f", "/dev/null", "new-session", "-d", "-s", "main", "-x", str(columns), "-y", str(rows), "sleep 600")
        self("set-option", "-t", "main", "remain-on-exit", "on")

    def __call__(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True, capture_output=True,
                              text=True).stdout

    def start(self, argv: list[str], env: dict[str, str]) -> None:
        self("respawn-pane", "-k", "-t", "main", shlex.join(["env", "-i", *[f"{k}={v}" for k, v in env.items()], *argv]))

    def type(self, line: str) -> None:
        """The keys of `line`, then Enter. As bytes (-H): tmux would read a trailing ';' as its own separator."""
        self("send-keys", "-t", "main", "-H", *(f"{b:02x}" for b in line.encode()))
        self("send-keys", "-t", "main", "Enter")

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "main")

    def ended(self) -> bool:
        return self("display-message", "-p", "-t", "main", "#{pane_dead}").strip() == "1"

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


@pytest.mark.model
@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_the_toolbar_stays_whole_and_nothing_is_drawn_outside_it_while_the_model_loads(tmp_path, concert):
    tmux = Tmux("toolbar", columns=160, rows=30)
    try:
        # a fresh model cache: the model converts first, a load of some seconds
        tmux.start([ROUTESH, str(concert), "--model", "smollm2-135m"], shell_env(tmp_path))
        loading: list[str] = []
        typed = False
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not tmux.ended():
            screen = tmux.screen()
            if "loading the model" not in screen:
                if loading:
                    break  # loaded
            else:
                loading.append(screen)
                if len(loading) == 5 and not typed:  # SQL needs no model: it runs while the model loads
                    tmux.type("SELECT count(*) AS n FROM singer;")
                    typed = True
            time.sleep(0.1)
        assert not tmux.ended(), tmux.screen()
        assert typed, loading[-1] if loading else tmux.screen()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "(1 row)" not in (after := tmux.screen()):
            time.sleep(0.2)
        tmux.type("\\q")
    finally:
        tmux.close()
    toolbar = re.compile(rf"^ concert_singer\.sqlite \(SQLite\) │ smollm2-135m \(loading\) │ RO │ stages \S+ view off "
                         rf"│ [{SPINNER}] loading the model\s*$")
    for screen in loading:
        lines = screen.rstrip("\n").split("\n")
        assert toolbar.match(lines[-1]), lines[-1]  # the last line is the whole toolbar
        assert not any(re.fullmatch(rf"\s*[{SPINNER}]\s*", line) for line in lines[:-1]), screen  # no stray spinner
        assert sum(" │ stages " in line for line in lines) == 1, screen  # drawn once, not twice
    assert "(1 row)" in after and re.search(r"\b6\b", after), after  # SQL ran while the model loaded
