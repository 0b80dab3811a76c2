"""The user's settings file, ~/.config/routesh/config.toml (or $ROUTESH_CONFIG).

Why a file: a row limit, an output format, a pager, vi keys or the stages to run are chosen once,
not on every command line, and named queries (`\\n`) must outlive a session. The first run writes
every setting out with a comment saying what it does, so the file documents itself. After that
routesh only edits the file with tomlkit, so the user's comments and layout survive when `\\n`
saves or deletes a query. A bad file is one UsageError line that names the file and the key;
a file that cannot be written on first run is not an error at all (the defaults still apply).
Which settings there are, their defaults, checks and comments: routesh/settings.py.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any

import platformdirs
import tomlkit
from tomlkit.exceptions import TOMLKitError

from routesh import settings
from routesh.errors import UsageError
from routesh.settings import NAMED, Config, default_text

CONFIG_ENV = "ROUTESH_CONFIG"
_NAME = re.compile(r"[\w-]+")  # letters (any script), digits, _ and -: names `\n` can complete


def config_path() -> Path:
    """$ROUTESH_CONFIG if set, else the platform's config folder (~/.config/routesh/config.toml on Linux)."""
    override = os.environ.get(CONFIG_ENV)
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_config_dir("routesh")) / "config.toml"


def load_config(path: Path | None = None) -> Config:
    """The settings in `path` (default: config_path()). Writes a commented default file when there is
    none. Raises UsageError, one line naming the file and key, when the file is wrong."""
    path = path or config_path()
    where = _display(path)
    if not _exists(path, where):
        try:
            _write_atomic(path, default_text())
        except OSError as exc:  # a read-only home must not stop the shell
            return Config(warning=f"could not write the default settings to {where}: {exc.strerror or exc}")
        return Config()
    return _from_dict(_parse(path, where).unwrap(), where)


def save_named_query(name: str, sql: str, path: Path | None = None) -> None:
    """Add or replace the named query `name`, keeping the rest of the file as the user wrote it."""
    _check_name(name)
    if not sql.strip():
        raise UsageError(f"named query {name!r} needs some SQL")
    path = path or config_path()
    where = _display(path)
    doc = _parse(path, where) if _exists(path, where) else tomlkit.parse(default_text())
    if NAMED not in doc:
        doc.add(NAMED, tomlkit.table())
    queries = _queries_table(doc, where)
    sql = sql.strip()
    queries[name] = tomlkit.string(sql, multiline="\n" in sql)  # multi-line SQL stays readable
    _save(path, doc, where)


def delete_named_query(name: str, path: Path | None = None) -> bool:
    """Remove the named query `name`; False when there was none."""
    _check_name(name)
    path = path or config_path()
    where = _display(path)
    if not _exists(path, where):
        return False
    doc = _parse(path, where)
    if NAMED not in doc:
        return False
    queries = _queries_table(doc, where)
    if name not in queries:
        return False
    del queries[name]
    _save(path, doc, where)
    return True


# --- reading ---------------------------------------------------------------------------------------


def _exists(path: Path, where: str) -> bool:
    try:
        return path.exists()
    except OSError as exc:  # e.g. a folder on the way that we may not look into
        raise UsageError(f"{where}: cannot read it ({exc.strerror or exc})") from None


def _parse(path: Path, where: str) -> tomlkit.TOMLDocument:
    try:
        with open(path, encoding="utf-8", newline="") as f:  # newline="": CRLF files stay CRLF on save
            text = f.read()
    except UnicodeDecodeError:
        raise UsageError(f"{where}: not UTF-8 text") from None
    except OSError as exc:
        raise UsageError(f"{where}: cannot read it ({exc.strerror or exc})") from None
    try:
        return tomlkit.parse(text)
    except TOMLKitError as exc:
        line = getattr(exc, "line", None)
        # tomlkit ends its messages with " at line L col C"; say the line once, up front
        message = re.sub(r"\.? at line \d+ col \d+$", "", " ".join(str(exc).split()))
        at = f", line {line}" if line else ""
        raise UsageError(f"{where}{at}: invalid TOML: {message}") from None


def _from_dict(data: dict[str, Any], where: str) -> Config:
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key == NAMED:
            values[key] = _named_queries(value, where)
        elif key in settings.BY_NAME:
            try:
                values[key] = settings.check(key, value)
            except ValueError as exc:
                raise UsageError(f"{where}: {key} {exc} (got {_shown(value)})") from None
        else:
            raise UsageError(f"{where}: unknown setting {key!r}; the settings are {', '.join(settings.BY_NAME)}"
                             f" and the [{NAMED}] table")
    return Config(**values)


def _named_queries(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise UsageError(f'{where}: {NAMED} must be a table of name = "SQL" lines (got {_shown(value)})')
    for name, sql in value.items():
        problem = _name_problem(name)
        if problem:
            raise UsageError(f"{where}: {NAMED}: {problem}")
        if not isinstance(sql, str) or not sql.strip():
            raise UsageError(f"{where}: {NAMED}.{name} must be a string of SQL (got {_shown(sql)})")
    return dict(value)


def _name_problem(name: str) -> str | None:
    if not _NAME.fullmatch(name):
        return f"bad query name {name!r}: use only letters, digits, _ and -"
    if name in settings.BY_NAME:
        # the likely cause: a setting added at the end of the file, i.e. inside [named_queries]
        return f"{name!r} is a setting, not a query name; settings go above the [{NAMED}] line"
    return None


def _check_name(name: str) -> None:
    problem = _name_problem(name)
    if problem:
        raise UsageError(problem)


def _queries_table(doc: tomlkit.TOMLDocument, where: str) -> Any:
    queries = doc[NAMED]
    if not isinstance(queries, dict):  # tomlkit's tables (inline ones too) are dicts
        raise UsageError(f'{where}: {NAMED} must be a table of name = "SQL" lines')
    return queries


def _shown(value: Any) -> str:
    """A value as the error line quotes it: in TOML's spelling for booleans, never long or multi-line."""
    text = str(value).lower() if isinstance(value, bool) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _display(path: Path) -> str:
    """`path` with the home folder as ~, as users know it."""
    with contextlib.suppress(RuntimeError, ValueError):
        return "~/" + str(path.relative_to(Path.home()))
    return str(path)


# --- writing ---------------------------------------------------------------------------------------


def _save(path: Path, doc: tomlkit.TOMLDocument, where: str) -> None:
    try:
        _write_atomic(path, doc.as_string())
    except OSError as exc:
        raise UsageError(f"{where}: could not save it ({exc.strerror or exc})") from None


def _write_atomic(path: Path, text: str) -> None:
    """Replace `path` in one step, so a crash or a second shell never sees half a file."""
    target = Path(os.path.realpath(path))  # write through a symlink (dotfile managers) rather than over it
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if target.exists():  # keep the user's permissions; a new file stays private (mkstemp's 0600)
            os.chmod(tmp, stat.S_IMODE(target.stat().st_mode))
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise

