"""Step 2 of the pipeline, the reduced schema: what the linking reply and the pseudo-SQL name, read as
this schema spells it, united, and bridged along foreign keys. finetune/ renders its training prompts on
the same reduced schema, so both import this module."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import TypeAlias

from routesh.db.schema import Schema

# A reduced schema: each kept table, as the schema spells it, with the columns kept from it.
ReducedSchema: TypeAlias = dict[str, set[str]]


def reduced_keep(schema: Schema, *parts: ReducedSchema) -> ReducedSchema:
    """The union of `parts`, bridged; the whole schema when nothing is kept (an empty schema helps no one)."""
    keep = union(*parts)
    bridge(schema, keep)
    if not keep:
        keep = {t.display_name: {c.name for c in t.columns} for t in schema.tables}
    return keep


def with_matched(keep: ReducedSchema, matched: ReducedSchema) -> ReducedSchema:
    """`keep` and, of the tables it keeps, the columns holding a value the question names (the values stage)."""
    return {table: set(columns) | matched.get(table, set()) for table, columns in keep.items()}


def known_columns(schema: Schema, linked: Mapping[str, list[str]]) -> ReducedSchema:
    """Only names that exist in this schema, spelled as the schema spells them. A reply shaped like
    the format's template, {"table": [tables], "column": [columns]} (a base model's habit), is read
    as what it says: those tables, and those columns wherever the named tables have them."""
    linked = _untemplate(linked, schema)
    out: ReducedSchema = {}
    for table_name, columns in linked.items():
        table = schema.table(str(table_name).strip().strip('"'))
        if table is None:
            continue
        kept = out.setdefault(table.display_name, set())
        for name in columns:
            if str(name).strip() == "*":  # `SELECT *` / `T1.*`: the query uses every column
                kept.update(c.name for c in table.columns)
                continue
            column = table.column(str(name).strip().strip('"'))
            if column is not None:
                kept.add(column.name)
    return out


_TABLE_KEYS, _COLUMN_KEYS = ("table", "tables"), ("column", "columns")


def _untemplate(linked: Mapping[str, list[str]], schema: Schema) -> Mapping[str, list[str]]:
    keys = {k.lower(): k for k in linked}
    table_key = next((keys[k] for k in _TABLE_KEYS if k in keys and schema.table(keys[k]) is None), None)
    column_key = next((keys[k] for k in _COLUMN_KEYS if k in keys and schema.table(keys[k]) is None), None)
    if table_key is None and column_key is None:
        return linked
    out: dict[str, list[str]] = {k: list(v) for k, v in linked.items() if k not in (table_key, column_key)}
    named = [t for t in (schema.table(str(n)) for n in linked.get(table_key, []) if table_key) if t is not None]
    for table in named:
        out.setdefault(table.display_name, [])
    for column in linked.get(column_key, []) if column_key else []:
        homes = [t for t in (named or schema.tables) if t.column(str(column)) is not None]
        if len(homes) == 1 or named:  # a column of several named tables goes to each of them
            for table in homes:
                out.setdefault(table.display_name, []).append(str(column))
    return out


def union(*parts: ReducedSchema) -> ReducedSchema:
    out: ReducedSchema = {}
    for part in parts:
        for table, columns in part.items():
            out.setdefault(table, set()).update(columns)
    return out


def bridge(schema: Schema, keep: ReducedSchema) -> set[str]:
    """Add the tables on the shortest foreign-key paths that connect the kept tables (a linking step
    that names two tables often forgets the table that joins them). Returns what was added."""
    graph = foreign_key_graph(schema)
    kept = [t for t in keep if t in graph]
    if len(kept) < 2:
        return set()
    added: set[str] = set()
    connected = {kept[0]}
    for target in kept[1:]:
        path = _shortest_path(graph, connected | added, target)
        if path:
            for table in path:
                if table not in keep:
                    keep[table] = set()
                    added.add(table)
            connected.update(path)
        connected.add(target)
    return added


def foreign_key_graph(schema: Schema) -> dict[str, set[str]]:
    """Each table's display name → the tables one foreign key away from it, either way."""
    graph: dict[str, set[str]] = {t.display_name: set() for t in schema.tables}
    for table in schema.tables:
        for fk in table.foreign_keys:
            target = schema.table(fk.ref_table)
            if target is not None:
                graph[table.display_name].add(target.display_name)
                graph[target.display_name].add(table.display_name)
    return graph


def _shortest_path(graph: dict[str, set[str]], sources: set[str], target: str) -> list[str]:
    if target in sources:
        return []
    previous: dict[str, str | None] = {s: None for s in sorted(sources)}  # sorted: the same path every run
    queue = deque(sorted(sources))
    while queue:
        node = queue.popleft()
        for neighbour in sorted(graph.get(node, ())):
            if neighbour not in previous:
                previous[neighbour] = node
                if neighbour == target:
                    path, step = [], neighbour
                    while step is not None:
                        path.append(step)
                        step = previous[step]
                    return path[::-1]
                queue.append(neighbour)
    return []
