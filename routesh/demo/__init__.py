"""The demo database that ships with routesh: Rayon Cycles, a fictional chain of eight bicycle
shops in France (cities, stores, employees, customers, categories, products, orders,
order_items, payments; two views).

The package carries only the SQL script (demo.sql, written by tools/demo_sql.py); the SQLite file is
built from it on first use into the user's data directory and reused afterwards.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import tempfile
import time
from contextlib import closing
from importlib import resources
from pathlib import Path

import platformdirs

from routesh.errors import ConnectError

DEMO_SCRIPT_NAME = "demo.sql"
DEMO_DB_NAME = "demo.sqlite"
DATA_DIR_ENV = "ROUTESH_DATA_DIR"


# What describe() reports; tests/test_demo.py checks these against a freshly built file.
_TABLES, _VIEWS, _ROWS = 9, 2, 6869

_TMP_PREFIX, _TMP_SUFFIX = ".demo-", ".sqlite.tmp"
_STALE_TMP_S = 3600.0  # a temp file this old is a crashed build's leftover, not one in progress


def describe() -> str:
    """One line for the README and the CLI."""
    return f"Rayon Cycles bicycle-shop demo: {_TABLES} tables, {_VIEWS} views, {_ROWS:,} rows"


def default_data_dir() -> Path:
    """$ROUTESH_DATA_DIR when set, else the platform's per-user data directory."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else Path(platformdirs.user_data_dir("routesh"))


def demo_script() -> str:
    """The bundled SQL script (read through importlib.resources, so zipped installs work too)."""
    return resources.files(__name__).joinpath(DEMO_SCRIPT_NAME).read_text(encoding="utf-8")


def ensure_demo_db(data_dir: Path | None = None) -> Path:
    """Path of the demo SQLite file in `data_dir` (default: default_data_dir()), building it
    first if it is missing or was built from a different script."""
    directory = Path(data_dir) if data_dir is not None else default_data_dir()
    return _ensure(directory, demo_script())


def _ensure(directory: Path, script: str) -> Path:
    target = directory / DEMO_DB_NAME
    digest = hashlib.sha256(script.encode("utf-8")).hexdigest()
    if _built_from(target) == script_stamp(digest):
        return target
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _remove_stale_temp_files(directory)
        _build(target, script, digest)
    except (OSError, sqlite3.Error) as exc:
        raise ConnectError(f"could not build the demo database in {directory}: {exc}") from exc
    return target


def script_stamp(digest: str) -> int:
    """The script's sha256 folded to the 28 bits kept in PRAGMA user_version. It lives inside the
    database (no extra table for users and the model to see, no sidecar file that could fall out of
    step), so one os.replace swaps in the file and its stamp together."""
    return int(digest[:7], 16)


def _built_from(path: Path) -> int | None:
    """The script stamp of an existing demo file; None when there is no usable file."""
    if not path.is_file():
        return None
    try:
        # read-only, so checking never touches the file (its mtime stays as built)
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            stamp = conn.execute("PRAGMA user_version").fetchone()[0]
            conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()  # raises for a foreign file
    except sqlite3.Error:  # not a database (half-written or foreign file)
        return None
    return stamp or None


def _build(target: Path, script: str, digest: str) -> None:
    """Build into a temp file beside `target`, then os.replace it into place. The rename is
    atomic, so a crash mid-build never leaves a half-written demo.sqlite, and two processes
    building at once each write their own temp file; the last rename wins, both whole."""
    fd, tmp_name = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=_TMP_SUFFIX, dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with closing(sqlite3.connect(tmp, isolation_level=None)) as conn:
            conn.executescript(script)  # the script holds its own BEGIN ... COMMIT
            conn.execute(f"PRAGMA user_version = {script_stamp(digest)}")
            conn.execute("PRAGMA foreign_keys = ON")
            if conn.execute("PRAGMA foreign_key_check").fetchone() is not None:
                raise sqlite3.IntegrityError(f"{DEMO_SCRIPT_NAME} breaks its own foreign keys")
        with open(tmp, "rb+") as f:  # on disk before the rename makes it visible
            os.fsync(f.fileno())
        try:
            os.replace(tmp, target)
        except PermissionError:
            # Windows refuses to replace a file another process has open; if that process
            # built the same script, its file is as good as ours.
            if _built_from(target) != script_stamp(digest):
                raise
    finally:
        tmp.unlink(missing_ok=True)


def _remove_stale_temp_files(directory: Path) -> None:
    """Delete temp files left by builds that crashed (old enough not to be in progress)."""
    cutoff = time.time() - _STALE_TMP_S
    for leftover in directory.glob(f"{_TMP_PREFIX}*{_TMP_SUFFIX}*"):  # * also catches -journal
        try:
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink()
        except OSError:
            pass  # another process got there first, or it is not ours to delete
