"""The settings file: written with comments on first run, strict about mistakes, edited without losing
what the user wrote."""

from __future__ import annotations

import argparse
import os
import re
import stat
from pathlib import Path

import pytest

from routesh.config import config_path, delete_named_query, load_config, save_named_query
from routesh.db import ExecOptions
from routesh.errors import UsageError
from routesh.pipeline.stages import StageConfig
from routesh.settings import Config, add_flags, default_text, resolve

SETTINGS = [name for name in Config.__dataclass_fields__ if name not in ("named_queries", "warning")]


@pytest.fixture
def cfg(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "conf" / "routesh" / "config.toml"
    monkeypatch.setenv("ROUTESH_CONFIG", str(path))
    return path


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def usage_error(path: Path) -> str:
    with pytest.raises(UsageError) as info:
        load_config()
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message or "config.toml" in message
    return message


def test_path_comes_from_the_environment_or_the_platform(tmp_path, monkeypatch):
    monkeypatch.setenv("ROUTESH_CONFIG", str(tmp_path / "x.toml"))
    assert config_path() == tmp_path / "x.toml"
    monkeypatch.delenv("ROUTESH_CONFIG")
    assert config_path().name == "config.toml"
    assert config_path().parent.name == "routesh"


def test_first_run_writes_a_commented_file_that_loads_back_to_the_defaults(cfg):
    assert not cfg.exists()
    assert load_config() == Config()
    text = cfg.read_text()
    assert text == default_text()
    lines = text.splitlines()
    for key in SETTINGS:
        at = next(i for i, line in enumerate(lines) if line.startswith(f"{key} = "))
        assert lines[at - 1].startswith("#"), f"{key} has no comment above it"
        assert "Default:" in " ".join(lines[at - 2:at]), f"{key}'s comment does not give the default"
    assert "[named_queries]" in text and re.search(r"^# \w+ = \"SELECT ", text, re.M)
    # the second run reads the file it wrote, and leaves it alone
    assert load_config() == Config()
    assert cfg.read_text() == text


def test_a_partial_file_keeps_the_defaults_for_the_rest(cfg):
    write(cfg, 'format = "csv"\ntiming = true\ntimeout = 5\n\n[named_queries]\nn1 = "SELECT 1"\n')
    config = load_config()
    assert (config.format, config.timing, config.timeout) == ("csv", True, 5.0)
    assert isinstance(config.timeout, float)
    assert config.named_queries == {"n1": "SELECT 1"}
    assert config.row_limit == Config().row_limit and config.pager == "auto" and config.style == "default"


def test_every_setting_accepts_good_values(cfg):
    write(cfg, 'row_limit = 5\ntimeout = 0\nformat = "json"\nexpanded = "auto"\ntiming = true\n'
               'pager = "less -SRXF"\nstages = "ts"\nshow_stages = true\nmodel = "smollm2-135m"\n'
               'backend = "vllm"\nkey_bindings = "vi"\nstyle = "monokai"\n')
    config = load_config()
    assert config == Config(row_limit=5, timeout=0.0, format="json", expanded="auto", timing=True,
                            pager="less -SRXF", stages="ts", show_stages=True, model="smollm2-135m",
                            backend="vllm", key_bindings="vi", style="monokai")
    assert not StageConfig.parse(config.stages).linking


@pytest.mark.parametrize("line, key", [
    ('format = "xml"', "format"),
    ("format = 3", "format"),
    ("row_limit = -1", "row_limit"),
    ("row_limit = true", "row_limit"),
    ('row_limit = "100"', "row_limit"),
    ("timeout = -1", "timeout"),
    ("timeout = nan", "timeout"),
    ('expanded = "sometimes"', "expanded"),
    ('timing = "yes"', "timing"),
    ("show_stages = 1", "show_stages"),
    ('pager = ""', "pager"),
    ("pager = 'less \"unclosed'", "pager"),
    ('stages = "sl,xx"', "stages"),
    ("model = 7", "model"),
    ('backend = "onnx"', "backend"),
    ('key_bindings = "nano"', "key_bindings"),
    ('style = "no-such-style"', "style"),
    ('colour = "red"', "colour"),
    ("named_queries = 3", "named_queries"),
    ('[named_queries]\n"two words" = "SELECT 1"', "two words"),
    ("[named_queries]\nq = 5", "q"),
    ('[named_queries]\nq = "  "', "q"),
    # a setting appended below [named_queries] is the classic TOML slip: say so instead of ignoring it
    ('[named_queries]\npager = "less"', "pager"),
])
def test_a_bad_value_is_one_line_naming_the_file_and_the_key(cfg, line, key):
    write(cfg, line + "\n")
    message = usage_error(cfg)
    assert key in message


def test_a_bad_choice_says_what_is_allowed(cfg):
    write(cfg, 'format = "xml"\n')
    assert usage_error(cfg).endswith("format must be one of table, csv, tsv, json, jsonl, chart (got 'xml')")


def test_a_syntax_error_is_one_line_naming_the_file_and_the_line(cfg):
    write(cfg, 'format = "csv"\ntiming = \n')
    message = usage_error(cfg)
    assert "line 2" in message and "invalid TOML" in message
    write(cfg, 'format = "csv"\nformat = "json"\n')
    assert "line 2" in usage_error(cfg)


def test_an_unreadable_file_is_a_usage_error(cfg):
    cfg.mkdir(parents=True)  # a directory where the file should be
    usage_error(cfg)


def test_a_file_that_cannot_be_written_on_first_run_still_gives_the_defaults(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")  # mkdir under a regular file fails, even for root
    path = blocker / "routesh" / "config.toml"
    monkeypatch.setenv("ROUTESH_CONFIG", str(path))
    config = load_config()
    assert config == Config()
    assert "could not write" in config.warning and "\n" not in config.warning


def test_named_queries_round_trip_and_keep_the_users_comments(cfg):
    write(cfg, '# my own notes\nformat = "csv"  # for pasting into sheets\n\n'
               '[named_queries]\n# the weekly report\nweekly = "SELECT 1"\n')
    tricky = 'SELECT "a""b", \'c\\d\'\nFROM t\nWHERE x = """"'
    save_named_query("top-10", "SELECT * FROM t LIMIT 10")
    save_named_query("tricky", tricky + "\n")
    save_named_query("weekly", "SELECT 2")  # replaces in place
    text = cfg.read_text()
    for kept in ("# my own notes", "# for pasting into sheets", "# the weekly report"):
        assert kept in text
    assert load_config().named_queries == {"weekly": "SELECT 2", "top-10": "SELECT * FROM t LIMIT 10",
                                           "tricky": tricky}
    assert load_config().format == "csv"

    assert delete_named_query("top-10") is True
    assert delete_named_query("top-10") is False
    assert delete_named_query("never-saved") is False
    assert load_config().named_queries == {"weekly": "SELECT 2", "tricky": tricky}
    assert "# the weekly report" in cfg.read_text() and "# my own notes" in cfg.read_text()
    assert not [p for p in cfg.parent.iterdir() if p.name != "config.toml"], "a temp file was left behind"


def test_saving_creates_the_table_or_the_file_when_absent(cfg):
    write(cfg, "timing = true  # keep me\n")
    save_named_query("q", "SELECT 1")
    assert "# keep me" in cfg.read_text()
    assert load_config() == Config(timing=True, named_queries={"q": "SELECT 1"})

    cfg.unlink()
    assert delete_named_query("q") is False
    save_named_query("q", "SELECT 1")  # no file yet: the commented default, plus the query
    assert "# Named queries" in cfg.read_text()
    assert load_config() == Config(named_queries={"q": "SELECT 1"})


def test_saving_keeps_the_files_permissions(cfg):
    write(cfg, "")
    os.chmod(cfg, 0o640)
    save_named_query("q", "SELECT 1")
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o640


def test_saving_writes_through_a_symlink(cfg, tmp_path):
    real = tmp_path / "dotfiles" / "routesh.toml"
    write(real, "# from my dotfiles\n")
    cfg.parent.mkdir(parents=True)
    cfg.symlink_to(real)
    save_named_query("q", "SELECT 1")
    assert cfg.is_symlink()
    assert "# from my dotfiles" in real.read_text() and "SELECT 1" in real.read_text()


@pytest.mark.parametrize("name", ["", "two words", "semi;colon", "a.b", "format", "q\n"])
def test_bad_query_names_are_refused(cfg, name):
    with pytest.raises(UsageError) as info:
        save_named_query(name, "SELECT 1")
    assert "\n" not in str(info.value)
    with pytest.raises(UsageError):
        delete_named_query(name)
    assert not cfg.exists()


def test_a_query_needs_sql(cfg):
    with pytest.raises(UsageError):
        save_named_query("q", "   ")


def test_flags_given_on_the_command_line_win_over_the_file_once_resolved():
    parser = argparse.ArgumentParser()
    add_flags(parser)
    config = Config(row_limit=5, timeout=9.0, format="csv", model="from-file", stages="ts")
    resolved = resolve(config, parser.parse_args(["--row-limit", "7", "--model", "from-flag"]))
    assert resolved.options == ExecOptions(row_limit=7, timeout=9.0)
    assert (resolved.format, resolved.model, resolved.backend) == ("csv", "from-flag", "auto")
    assert resolved.stages == StageConfig.parse("ts")
    assert resolve(config, parser.parse_args([])).model == "from-file"
    assert resolve(Config()).model is None  # "" in the file: the default model
    with pytest.raises(UsageError, match="unknown stage"):
        resolve(config, parser.parse_args(["--stages", "sl,xx"]))


def test_questions_run_every_stage_unless_told_otherwise():
    """The default was chosen on spider-train: every stage (values, linking, the vote, the repair,
    correction, continuation) against ROUTE's own sl,nc,cw (docs/benchmarks.md)."""
    stages = resolve(Config()).stages
    assert (stages.values, stages.linking, stages.vote, stages.repair, stages.correction, stages.continuation) \
        == (True,) * 6
    parser = argparse.ArgumentParser()
    add_flags(parser)
    assert resolve(Config(), parser.parse_args(["--stages", "sl,nc,cw"])).stages == StageConfig()
