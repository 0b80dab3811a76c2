"""The user's settings file, ~/.config/routesh/config.toml (or $ROUTESH_CONFIG).

Why a file: a row limit, an output format, a pager, vi keys or the stages to run are chosen once,
not on every command line, and named queries (`\\n`) must outlive a session. The first run writes
every setting out with a comment saying what it does, so the file documents itself. After that
routesh only edits the file with tomlkit, so the user's comments and layout survive when `\\n`
saves or deletes a query. A bad file is one UsageError line that names the file and the key;
a file that cannot be written on first run is not an error at all (the defaults still apply).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shlex
import stat
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import platformdirs
import tomlkit
from pygments.styles import get_all_styles
from tomlkit.exceptions import TOMLKitError

from routesh.db import DEFAULT_ROW_LIMIT, DEFAULT_TIMEOUT_S
from routesh.engine import BACKENDS, DEFAULT_MODEL
from routesh.errors import UsageError
from routesh.pipeline.stages import STAGES, StageConfig
from routesh.render import FORMATS

CONFIG_ENV = "ROUTESH_CONFIG"
EXPANDED = ("off", "on", "auto")
KEY_BINDINGS = ("emacs", "vi")
NAMED = "named_queries"
_NAME = re.compile(r"[\w-]+")  # letters (any script), digits, _ and -: names `\n` can complete


@dataclass(frozen=True)
class Config:
    """The validated settings. Each field but `warning` is a key of config.toml."""

    row_limit: int = DEFAULT_ROW_LIMIT
    timeout: float = DEFAULT_TIMEOUT_S  # seconds; 0 = no timeout
    format: str = "table"  # one of FORMATS
    expanded: str = "off"  # off | on | auto, like psql's \x
    timing: bool = False
    pager: str = "auto"  # auto | off | a command such as "less -SRXF"
    stages: str = "sl,nc,cw"  # for StageConfig.parse
    show_stages: bool = False  # whether the \stages view starts on
    model: str = ""  # "" = the default catalog model
    backend: str = "auto"  # one of BACKENDS
    key_bindings: str = "emacs"  # emacs | vi
    style: str = "default"  # a Pygments style
    named_queries: dict[str, str] = field(default_factory=dict, hash=False)
    # Not a setting: why the default file could not be written on first run, for the shell to show.
    warning: str = field(default="", compare=False)

    @property
    def stage_config(self) -> StageConfig:
        return StageConfig.parse(self.stages)


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


def default_text() -> str:
    """The file the first run writes: every setting at its default, each with a comment."""
    d = Config()
    v = {f.name: tomlkit.item(getattr(d, f.name)).as_string() for f in fields(Config) if f.name in _settings()}
    return f"""\
# routesh settings. Every setting is optional: one left out takes the default shown here.
# Delete this file to get a fresh copy. Settings go above the [named_queries] line at the end.

# Most rows to fetch and show for one statement: a whole number, at least 1. Default: {v['row_limit']}.
row_limit = {v['row_limit']}

# Statement timeout in seconds; 0 means none. Default: {v['timeout']}.
timeout = {v['timeout']}

# Output format: {_or(FORMATS)}. \\T changes it in the shell. Default: {v['format']}.
format = {v['format']}

# Expanded display, one "column | value" line per field as with psql's \\x: {_or(EXPANDED)}
# (auto expands only rows too wide for the terminal). Default: {v['expanded']}.
expanded = {v['expanded']}

# Print how long each statement took (\\timing toggles it): true or false. Default: {v['timing']}.
timing = {v['timing']}

# Pager for results: "auto" pages output taller or wider than the terminal, "off" never pages,
# anything else is the command to page with, e.g. "less -SRXF". Default: {v['pager']}.
pager = {v['pager']}

# Which of ROUTE's stages run, comma-separated: sl (schema linking), nc (noise correction),
# cw (continuation writing). Text-to-SQL always runs; "ts" alone is plain prompting. Default: {v['stages']}.
stages = {v['stages']}

# Start with the \\stages view on, showing what each stage did: true or false. Default: {v['show_stages']}.
show_stages = {v['show_stages']}

# The model: a catalog name, a model folder, a .gguf file, a hub id (org/name) or the http(s)://
# URL of an OpenAI-compatible server. "" means the default, {DEFAULT_MODEL}. Default: {v['model']}.
model = {v['model']}

# How a local model runs: {_or(BACKENDS)} (auto: vLLM on a GPU when installed, else transformers).
# Default: {v['backend']}.
backend = {v['backend']}

# Line-editing keys: {_or(KEY_BINDINGS)}. Default: {v['key_bindings']}.
key_bindings = {v['key_bindings']}

# Colours for highlighted SQL: a Pygments style (`pygmentize -L styles` lists them). Default: {v['style']}.
style = {v['style']}

# Named queries, saved and run with \\n: name = "SQL". Names use letters, digits, _ and -.
[{NAMED}]
# top_customers = "SELECT customer, SUM(total) AS spent FROM orders GROUP BY customer ORDER BY spent DESC LIMIT 10"
"""


# --- reading ---------------------------------------------------------------------------------------


def _settings() -> tuple[str, ...]:
    return tuple(f.name for f in fields(Config) if f.name not in (NAMED, "warning"))


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
        elif key in _settings():
            try:
                values[key] = _check(key, value)
            except ValueError as exc:
                raise UsageError(f"{where}: {key} {exc} (got {_shown(value)})") from None
        else:
            raise UsageError(f"{where}: unknown setting {key!r}; the settings are {', '.join(_settings())}"
                             f" and the [{NAMED}] table")
    return Config(**values)


def _check(key: str, value: Any) -> Any:
    """`value` as `key` takes it, or ValueError saying what `key` allows ("must be ...")."""
    # type() rather than isinstance(): TOML's true is not a row limit
    if key == "row_limit":
        if type(value) is int and value >= 1:
            return value
        raise ValueError("must be a whole number, at least 1")
    if key == "timeout":
        if type(value) in (int, float) and 0 <= value < math.inf:
            return float(value)
        raise ValueError("must be a number of seconds, 0 for none")
    if key in ("timing", "show_stages"):
        if type(value) is bool:
            return value
        raise ValueError("must be true or false")
    choices = {"format": FORMATS, "expanded": EXPANDED, "backend": BACKENDS, "key_bindings": KEY_BINDINGS}
    if key in choices:
        if value in choices[key]:
            return value
        raise ValueError(f"must be one of {', '.join(choices[key])}")
    if key == "pager":
        if isinstance(value, str) and value.strip() and _splits(value):
            return value.strip()
        raise ValueError('must be "auto", "off" or a pager command such as "less -SRXF"')
    if key == "stages":
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                StageConfig.parse(value)
                return value
        raise ValueError(f"must be a comma-separated list of {', '.join(STAGES)}")
    if key == "model":
        if isinstance(value, str):
            return value.strip()
        raise ValueError('must be a string ("" for the default model)')
    if key == "style":
        if isinstance(value, str) and value in set(get_all_styles()):
            return value
        raise ValueError("must be a Pygments style listed by `pygmentize -L styles`, such as default or monokai")
    raise AssertionError(f"no check for setting {key}")


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
    if name in _settings():
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


def _splits(command: str) -> bool:
    try:
        shlex.split(command)
    except ValueError:  # an unclosed quote
        return False
    return True


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


def _or(choices: tuple[str, ...]) -> str:
    return ", ".join(choices[:-1]) + " or " + choices[-1]
