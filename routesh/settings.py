"""Every setting, declared once: its type, default, what it allows, the comment the first-run
config.toml carries for it, and the command-line flag that overrides it, if any.

From the one table come the Config dataclass (the file's values), the commented default file,
the validation of a value read from it, and the argparse flags. `resolve` merges the file with the
command line once, into the typed Settings that the shell and the one-shot path receive.
Reading and writing the file itself is routesh/config.py's job.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, make_dataclass
from typing import Any

import tomlkit
from pygments.styles import get_all_styles

from routesh.db import DEFAULT_ROW_LIMIT, DEFAULT_TIMEOUT_S, ExecOptions
from routesh.engine import BACKENDS, DEFAULT_MODEL, catalog_names
from routesh.errors import UsageError
from routesh.pipeline.stages import DEFAULT_STAGES, STAGES, StageConfig
from routesh.render import FORMATS

NAMED = "named_queries"  # the file's table of saved queries; not a setting


@dataclass(frozen=True)
class Flag:
    """A command-line flag for a setting; its value, when given, wins over the file's."""

    names: tuple[str, ...]  # the first is the long name; its dest is the setting's name
    help: str
    type: Callable[[str], Any] | None = None  # argparse's converter; choices come from the setting
    metavar: str | None = None


@dataclass(frozen=True)
class Setting:
    name: str
    type: type
    default: Any
    comment: str  # above the key in the first-run file; {choices} and {default} are filled in
    check: Callable[[Any], Any] | None = None  # the value as taken, or ValueError("must be ..."); None: choices
    choices: tuple[str, ...] = ()
    flag: Flag | None = None


# ---- checks of a value read from the file ------------------------------------------------------
# type() rather than isinstance(): TOML's true is not a row limit


def _row_limit(value: Any) -> int:
    if type(value) is int and value >= 0:
        return value
    raise ValueError("must be a whole number, 0 for no limit")


def _seconds(value: Any) -> float:
    if type(value) in (int, float) and 0 <= value < math.inf:
        return float(value)
    raise ValueError("must be a number of seconds, 0 for none")


def _true_or_false(value: Any) -> bool:
    if type(value) is bool:
        return value
    raise ValueError("must be true or false")


def _pager(value: Any) -> str:
    if isinstance(value, str) and value.strip() and _splits(value):
        return value.strip()
    raise ValueError('must be "auto", "off" or a pager command such as "less -SRXF"')


def _stages(value: Any) -> str:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            StageConfig.parse(value)
            return value
    raise ValueError(f"must be a comma-separated list of {', '.join(STAGES)}")


def _model(value: Any) -> str:
    if isinstance(value, str):
        return value.strip()
    raise ValueError('must be a string ("" for the default model)')


def _style(value: Any) -> str:
    if isinstance(value, str) and value in set(get_all_styles()):
        return value
    raise ValueError("must be a Pygments style listed by `pygmentize -L styles`, such as default or monokai")


def _splits(command: str) -> bool:
    try:
        shlex.split(command)
    except ValueError:  # an unclosed quote
        return False
    return True


# ---- converters of a command-line value (argparse's type=) -------------------------------------


def _parsed(convert: Callable[[str], float], least: float, kind: str, below: str) -> Callable[[str], Any]:
    """A converter for argparse: `convert(text)`, refused with a short reason when not at least `least`."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {kind}: {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(below)
        return value

    return parse


_non_negative_int = _parsed(int, 0, "a whole number", "must be 0 (no limit) or more")
_non_negative_float = _parsed(float, 0, "a number", "must be 0 or more")


# ---- the table ---------------------------------------------------------------------------------

SETTINGS: tuple[Setting, ...] = (
    Setting("row_limit", int, DEFAULT_ROW_LIMIT,
            "Most rows to fetch and show for one statement: a whole number. 0 means no limit for output to a\n"
            "file or a pipe (\\o, -e ... > out.csv); the screen still stops at {default}. Default: {default}.",
            _row_limit,
            flag=Flag(("--row-limit",), f"most rows to fetch and show; 0: no limit to a file or a pipe (default "
                      f"{DEFAULT_ROW_LIMIT}, or the config file's)", _non_negative_int)),
    Setting("timeout", float, DEFAULT_TIMEOUT_S,
            "Statement timeout in seconds; 0 means none. Default: {default}.", _seconds,
            flag=Flag(("--timeout",), f"statement timeout in seconds, 0 for none (default {DEFAULT_TIMEOUT_S:g})",
                      _non_negative_float)),
    Setting("format", str, "table",
            "Output format: {choices}. \\T changes it in the shell. Default: {default}.", choices=FORMATS,
            flag=Flag(("--format", "-f"), "result format (default: table, or the config file's)")),
    Setting("expanded", str, "off",
            'Expanded display, one "column | value" line per field as with psql\'s \\x: {choices}\n'
            "(auto expands only rows too wide for the terminal). Default: {default}.", choices=("off", "on", "auto")),
    Setting("timing", bool, False,
            "Print how long each statement took (\\timing toggles it): true or false. Default: {default}.",
            _true_or_false),
    Setting("pager", str, "auto",
            'Pager for results: "auto" pages output taller or wider than the terminal, "off" never pages,\n'
            'anything else is the command to page with, e.g. "less -SRXF". Default: {default}.', _pager),
    Setting("stages", str, DEFAULT_STAGES,
            "Which of ROUTE's stages run, comma-separated: values (the question's words matched to stored\n"
            "values), sl (schema linking), vote (many candidates voted by their results), repair (unknown\n"
            "names renamed to the schema's), nc (noise correction), cw (continuation writing). Text-to-SQL always runs;\n"
            '"ts" alone is plain prompting, "all" is every stage. Default: {default}.',
            _stages,
            flag=Flag(("--stages",), "pipeline stages for questions: all (the default: values,sl,vote,repair,nc,cw), "
                      "sl,nc,cw (ROUTE's own), ts (plain prompting), ...", metavar="STAGES")),
    Setting("show_stages", bool, False,
            "Start with the \\stages view on, showing what each stage did: true or false. Default: {default}.",
            _true_or_false),
    Setting("memory", bool, True,
            "Remember each question whose SQL you ran (as generated or as you edited it) in a local file, and\n"
            "show the most similar ones to the model as examples for later questions on the same schema\n"
            "(\\memory lists them, \\forget N drops one; nothing leaves the machine): true or false.\n"
            "Default: {default}.",
            _true_or_false),
    Setting("model", str, "",
            "The model: a catalog name, a model folder, a .gguf file, a hub id (org/name) or the http(s)://\n"
            f'URL of an OpenAI-compatible server. "" means the default, {DEFAULT_MODEL}. Default: {{default}}.',
            _model,
            flag=Flag(("--model",), f"catalog name ({', '.join(catalog_names())}; default {DEFAULT_MODEL}), a model "
                      "folder, a .gguf file, a hub id, or the http(s):// URL of an OpenAI-compatible server",
                      metavar="MODEL")),
    Setting("backend", str, "auto",
            "How a local model runs: {choices} (auto: vLLM on a GPU when installed, else transformers).\n"
            "Default: {default}.", choices=BACKENDS,
            flag=Flag(("--backend",), "how a local model runs (auto: vLLM on a GPU when installed, else transformers)")),
    Setting("key_bindings", str, "emacs", "Line-editing keys: {choices}. Default: {default}.",
            choices=("emacs", "vi")),
    Setting("style", str, "default",
            "Colours for highlighted SQL: a Pygments style (`pygmentize -L styles` lists them). Default: {default}.",
            _style),
)
BY_NAME: Mapping[str, Setting] = {s.name: s for s in SETTINGS}

Config = make_dataclass(
    "Config",
    [(s.name, s.type, field(default=s.default)) for s in SETTINGS] + [
        (NAMED, dict[str, str], field(default_factory=dict, hash=False)),
        # Not a setting: why the default file could not be written on first run, for the shell to show.
        ("warning", str, field(default="", compare=False)),
    ],
    frozen=True,
)
Config.__module__ = __name__  # make_dataclass's module= only exists from Python 3.12
Config.__doc__ = "The validated settings of config.toml, one field per entry of SETTINGS, plus the named queries."


def check(name: str, value: Any) -> Any:
    """`value` as setting `name` takes it, or ValueError saying what it allows ("must be ...")."""
    setting = BY_NAME[name]
    if setting.check is not None:
        return setting.check(value)
    if value in setting.choices:
        return value
    raise ValueError(f"must be one of {', '.join(setting.choices)}")


# ---- the first-run file ------------------------------------------------------------------------

_HEADER = """\
# routesh settings. Every setting is optional: one left out takes the default shown here.
# Delete this file to get a fresh copy. Settings go above the [named_queries] line at the end.
"""
_FOOTER = f"""\
# Named queries, saved and run with \\n: name = "SQL". Names use letters, digits, _ and -.
[{NAMED}]
# top_customers = "SELECT customer, SUM(total) AS spent FROM orders GROUP BY customer ORDER BY spent DESC LIMIT 10"
"""


def default_text() -> str:
    """The file the first run writes: every setting at its default, each with its comment above it."""
    blocks = [_HEADER]
    for s in SETTINGS:
        value = tomlkit.item(s.default).as_string()
        comment = s.comment.format(choices=_or(s.choices) if s.choices else "", default=value)
        blocks.append("".join(f"# {line}\n" for line in comment.split("\n")) + f"{s.name} = {value}\n")
    return "\n".join([*blocks, _FOOTER])


def _or(choices: tuple[str, ...]) -> str:
    return ", ".join(choices[:-1]) + " or " + choices[-1]


# ---- the command line --------------------------------------------------------------------------


def add_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of the settings that have one; each defaults to None, meaning "the file's value"."""
    for s in SETTINGS:
        if s.flag is not None:
            extra: dict[str, Any] = {"choices": s.choices} if s.choices else {}
            parser.add_argument(*s.flag.names, dest=s.name, type=s.flag.type, metavar=s.flag.metavar,
                                help=s.flag.help, **extra)


@dataclass(frozen=True)
class Settings:
    """The file's settings with the command line's on top, resolved once into the types their users take."""

    format: str
    options: ExecOptions
    stages: StageConfig
    model: str | None  # None: the default catalog model
    backend: str
    expanded: str
    timing: bool
    show_stages: bool
    memory: bool
    pager: str
    key_bindings: str
    style: str
    named_queries: Mapping[str, str]
    warning: str


def resolve(config: Any, args: argparse.Namespace | None = None) -> Settings:
    """`config` (a Config) with each flag given in `args` replacing the file's value. Raises UsageError,
    one line, when a flag's value is wrong in a way argparse cannot see (an unknown stage)."""
    values = {s.name: getattr(config, s.name) for s in SETTINGS}
    for s in SETTINGS:
        given = getattr(args, s.name, None) if s.flag is not None else None
        if given is not None:
            values[s.name] = given
    try:
        stages = StageConfig.parse(values["stages"])
    except ValueError as err:
        raise UsageError(str(err)) from None
    return Settings(
        format=values["format"], options=ExecOptions(row_limit=values["row_limit"], timeout=values["timeout"]),
        stages=stages, model=values["model"] or None, backend=values["backend"], expanded=values["expanded"],
        timing=values["timing"], show_stages=values["show_stages"], memory=values["memory"], pager=values["pager"],
        key_bindings=values["key_bindings"], style=values["style"], named_queries=dict(config.named_queries),
        warning=config.warning,
    )
