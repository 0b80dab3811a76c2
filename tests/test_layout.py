"""The import graph keeps the layout DESIGN.md draws: every arrow points down, none closes a cycle, and
nothing but the CLI imports the shell. Read from the source (every `import`, at module level or inside a
function), so it fails the moment someone adds an upward import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# What each part of the code may import (besides itself, the standard library and third-party packages).
# The floors, bottom up: errors and logs; cancel; sql and db (sql sees only the schema types); engine; prompts and
# render and chart; pipeline; evaluate, settings and config; finetune, oneshot; shell; cli. bench may use it all.
_BELOW_PIPELINE = {"errors", "logs", "cancel", "sql", "db", "engine", "prompts", "retrieval"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "logs": set(),
    "cancel": {"errors"},
    "sql": {"errors", "db.schema"},
    "db": {"errors", "cancel", "sql"},  # cancellable: a Ctrl-C noted while a statement runs
    "engine": {"errors", "logs", "cancel"},
    "prompts": {"errors", "db", "sql", "engine"},
    "chart": {"errors", "db"},
    "retrieval": {"prompts"},  # ranks with the prompts' question words
    "memory": {"db", "retrieval"},
    "conversation": {"errors", "prompts"},  # the turns of a topic, as the prompts render them
    "render": {"errors", "db", "chart"},
    "pipeline": _BELOW_PIPELINE,
    "evaluate": _BELOW_PIPELINE | {"pipeline", "conversation"},
    "settings": _BELOW_PIPELINE | {"pipeline", "render", "chart"},
    "config": _BELOW_PIPELINE | {"pipeline", "render", "chart", "settings"},
    "demo": {"errors"},
    "finetune": _BELOW_PIPELINE | {"pipeline", "evaluate"},
    "oneshot": _BELOW_PIPELINE | {"pipeline", "render", "chart", "settings", "config", "memory", "conversation"},
    "shell": _BELOW_PIPELINE | {"pipeline", "evaluate", "render", "chart", "settings", "config", "demo", "memory",
                                "conversation"},
    "cli": _BELOW_PIPELINE | {"pipeline", "evaluate", "render", "chart", "settings", "config", "demo", "oneshot", "shell",
                              "conversation"},
    "bench": _BELOW_PIPELINE | {"pipeline", "evaluate", "render", "chart", "settings", "config", "demo", "oneshot",
                                "finetune", "conversation"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    out = {}
    for top in ("routesh", "finetune", "bench"):
        for path in sorted((ROOT / top).rglob("*.py")):
            out[_module_name(path)] = path
    return out


SOURCES = _sources()


def _imports(name: str, path: Path) -> set[str]:
    """Every first-party module `name` imports; `from pkg import mod` counts as pkg.mod when mod is a module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in SOURCES else base for a in node.names]
        else:
            continue
        found.update(t for t in targets if t.split(".")[0] in ("routesh", "finetune", "bench", "tests"))
    found.discard(name)
    return found


GRAPH = {name: _imports(name, path) for name, path in SOURCES.items()}


def part_of(module: str) -> str:
    """routesh.pipeline.steps → pipeline; routesh.cli → cli; finetune.synth → finetune; routesh → routesh."""
    parts = module.split(".")
    if parts[0] in ("finetune", "bench", "tests"):
        return parts[0]
    if len(parts) == 1:
        return "routesh"
    return parts[1]


def _allowed(source: str, target: str) -> bool:
    mine, theirs = part_of(source), part_of(target)
    if theirs == "routesh" or mine == theirs:  # the package itself (its version); a part's own modules
        return True
    allowed = ALLOWED[mine]
    return theirs in allowed or target.removeprefix("routesh.") in allowed


def test_every_part_of_the_code_has_a_floor():
    unplaced = sorted({part_of(m) for m in SOURCES} - set(ALLOWED) - {"routesh"})
    assert not unplaced, f"add these to ALLOWED in {Path(__file__).name}: {unplaced}"


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_imports_point_down(source):
    wrong = sorted(t for t in GRAPH[source] if not _allowed(source, t))
    assert not wrong, f"{source} ({part_of(source)}) may not import {wrong}"


def test_nothing_but_the_cli_imports_the_shell():
    importers = sorted(s for s, targets in GRAPH.items() if part_of(s) not in ("shell", "cli")
                       and any(part_of(t) == "shell" for t in targets))
    assert not importers


def test_the_import_graph_has_no_cycle():
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(GRAPH.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(GRAPH):
        if start not in state and (cycle := visit(start)):
            pytest.fail("import cycle: " + " → ".join(cycle))


def test_the_checker_sees_an_upward_import(tmp_path):
    """The rules are not vacuous: a db module importing the pipeline is flagged."""
    assert not _allowed("routesh.db.sqlite", "routesh.pipeline.pipeline")
    assert not _allowed("routesh.sql.usage", "routesh.db.sqlite")
    assert _allowed("routesh.sql.usage", "routesh.db.schema")
    assert _allowed("routesh.shell.app", "routesh.pipeline.pipeline")
    assert "routesh.pipeline.steps" in GRAPH["routesh.pipeline.pipeline"]
