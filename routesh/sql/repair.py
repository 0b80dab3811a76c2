"""Unknown names fixed by the schema, not by the model: every table a query reads and every column it
names is looked up in the schema, scope by scope (aliases, CTEs and derived tables through sqlglot's
scopes, as usage.py resolves them). A table the schema lacks becomes its closest table; one outside the
search path, written without its schema, gets it (`users` → `consumer_div.users`). A qualified column
its table lacks (or whose qualifier names no table of the scope) but one other table of the scope has
gets that table's qualifier (`T2.PetID` → `T3.PetID`); one that several have is left alone. A column
that none of the tables in its scope has becomes the best-matching column of those tables; a query of
one table whose missing columns all belong to one other table reads that table instead. Names are
compared by their words (split on case and underscores: `listPrice`, `list_price` → list, price) and by string
similarity; a rename needs a score above the threshold and a clear winner, else the name is left as it
is (a guess the database then refuses is worse than the error it had). The pipeline takes a repaired
query only if it executes."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from sqlglot import exp
from sqlglot.optimizer.scope import Scope, traverse_scope

from routesh.db.schema import Schema, Table
from routesh.sql.parse import Sql, is_real_table, query_of
from routesh.sql.quiet import quiet_sqlglot
from routesh.sql.usage import find_source, is_projection_alias

THRESHOLD = 0.6  # the lowest score a rename takes
MARGIN = 0.05  # how far the best match must lead the next one


@dataclass(frozen=True)
class Rename:
    old: str  # as written: "p.price", "price", "prods"
    new: str  # as repaired: "p.list_price", "products"

    def __str__(self) -> str:
        return f"{self.old} → {self.new}"


@dataclass(frozen=True)
class Repaired:
    sql: str
    renames: tuple[Rename, ...]

    def summary(self) -> str:
        return ", ".join(dict.fromkeys(map(str, self.renames)))  # a name renamed twice is said once


def repair_names(sql: str | Sql, dialect: str, schema: Schema, *, threshold: float = THRESHOLD) -> Repaired | None:
    """The query with its unknown tables and columns renamed to the schema's closest ones; None when it
    does not parse, names nothing unknown, or no unknown name has a clear match."""
    tree = query_of(sql, dialect)
    if tree is None:
        return None
    tree = tree.copy()  # an Sql's tree is shared: repair a copy
    renames: list[Rename] = []
    try:
        with quiet_sqlglot():
            _repair_tables(tree, schema, threshold, renames)
            for scope in traverse_scope(tree):
                _swap_lone_table(scope, schema, renames)
                _repair_columns(scope, schema, dialect, threshold, renames)
    except Exception:  # noqa: BLE001 - sqlglot's scope builder rejects some odd trees: nothing to repair
        return None
    if not renames:
        return None
    return Repaired(tree.sql(dialect=dialect), tuple(renames))


# PostgreSQL's own suggestion: 'column t1.doc_id does not exist; hint: Perhaps you meant to reference the
# column "t2.doc_id".' (two suggestions, "... or the column ...", are a guess left alone)
_UNKNOWN = re.compile(r'column "?(?:(\w+)\.)?(\w+)"? does not exist', re.IGNORECASE)
_SUGGESTED = re.compile(r'Perhaps you meant to reference the column "(\w+)\.(\w+)"\.?\s*$', re.IGNORECASE)


def follow_database_hint(sql: str | Sql, dialect: str, error: str | None) -> Repaired | None:
    """The query with the column the database refused replaced by the one its error suggests, when it
    suggests exactly one; None otherwise."""
    unknown, suggested = _UNKNOWN.search(error or ""), _SUGGESTED.search(error or "")
    if not unknown or not suggested or " or the column " in (error or ""):
        return None
    tree = query_of(sql, dialect)
    if tree is None:
        return None
    tree = tree.copy()
    bad_table, bad_name = (unknown.group(1) or "").lower(), unknown.group(2).lower()
    qualifier, name = suggested.groups()
    renames: list[Rename] = []
    for column in tree.find_all(exp.Column):
        if column.name.lower() != bad_name or column.table.lower() != bad_table:
            continue
        old = f"{column.table}.{column.name}" if column.table else column.name
        column.set("table", exp.to_identifier(_as_written(tree, qualifier)))
        column.set("this", exp.to_identifier(name, quoted=_needs_quotes(name) or name != name.lower()))
        renames.append(Rename(old, f"{column.table}.{column.name}"))
    return Repaired(tree.sql(dialect=dialect), tuple(renames)) if renames else None


def _as_written(tree: exp.Expression, qualifier: str) -> str:
    """An alias or table name as the query spells it (the database's messages fold it to lower case)."""
    for node in tree.find_all(exp.Table):
        for spelling in (node.alias, node.name):
            if spelling and spelling.lower() == qualifier.lower():
                return spelling
    return qualifier


def words(name: str) -> list[str]:
    """`listPrice`, `list_price`, `LIST PRICE` → ["list", "price"]."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    return [w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w]


def similarity(written: str, existing: str, *, drop: Iterable[str] = ()) -> float:
    """0..1: half how well each written word is matched by a word of the existing name, half string
    similarity. Words in `drop` (a column's own table name: `stadium_name` in table stadium) are also
    tried left out of both, and the better score counts."""
    a, b = words(written), words(existing)
    scores = [_score(a, b)]
    dropped = set(drop)
    if dropped:
        a2, b2 = [w for w in a if w not in dropped], [w for w in b if w not in dropped]
        if a2 and b2:
            scores.append(_score(a2, b2))
    return max(scores)


def _score(a: list[str], b: list[str]) -> float:
    if not a or not b:
        return 0.0
    have = sum(max(_word_match(w, v) for v in b) for w in a) / len(a)
    ratio = difflib.SequenceMatcher(None, "".join(a), "".join(b)).ratio()
    return 0.5 * have + 0.5 * ratio


def _word_match(w: str, v: str) -> float:
    if w == v or _stem(w) == _stem(v):
        return 1.0
    return difflib.SequenceMatcher(None, w, v).ratio()


def best_match(written: str, names: Iterable[tuple[str, Iterable[str]]], threshold: float = THRESHOLD) -> str | None:
    """The one name clearly closest to `written`, or None. `names` are (name, words to try without)."""
    best: dict[str, float] = {}
    for name, drop in names:
        best[name] = max(best.get(name, 0.0), similarity(written, name, drop=drop))
    scored = sorted(((score, name) for name, score in best.items()), reverse=True)
    if not scored or scored[0][0] < threshold:
        return None
    if len(scored) > 1 and scored[0][0] - scored[1][0] < MARGIN:
        return None  # two about as close: do not guess
    return scored[0][1]


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") else word


def _repair_tables(tree: exp.Expression, schema: Schema, threshold: float, renames: list[Rename]) -> None:
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    for node in tree.find_all(exp.Table):
        if not is_real_table(node) or node.name.lower() in ctes:
            continue
        known = schema.table(written_table(node))
        if known is not None:
            if known.display_name != known.name and not node.db:  # `users` for consumer_div.users
                renames.append(Rename(written_table(node), known.display_name))
                node.set("db", exp.to_identifier(known.schema))
            continue
        match = best_match(node.name, ((t.name, ()) for t in schema.tables), threshold)
        if match is None:
            continue
        table = schema.table(match)
        assert table is not None
        renames.append(Rename(written_table(node), table.display_name))
        node.set("this", exp.to_identifier(table.name, quoted=_needs_quotes(table.name)))
        if table.schema and table.display_name != table.name:
            node.set("db", exp.to_identifier(table.schema))


def _repair_columns(scope: Scope, schema: Schema, dialect: str, threshold: float, renames: list[Rename]) -> None:
    for column in scope.columns:
        if not isinstance(column.this, exp.Identifier) or isinstance(column.this, exp.Star):
            continue
        if dialect == "sqlite" and column.this.args.get("quoted"):
            continue  # SQLite reads an unknown "double-quoted" name as a string: leave it to the database
        tables = scope_tables(scope, column.table, schema)
        if tables is None or any(t.column(column.name) for t in tables) or not (tables or column.table):
            continue
        if not column.table and (isinstance(scope.expression, exp.SetOperation)
                                 or is_projection_alias(scope, column.name) or _outer_has(scope, column.name, schema)):
            continue  # ORDER BY cnt (`COUNT(*) AS cnt`), a UNION's output column, or an outer query's column
        # T2.PetID where only T3 has PetID, or T9.PetID where no T9 is read: the qualifier was wrong, not the name
        owners = owners_of(scope, column.name, schema) if column.table else []
        if len(owners) == 1:
            renames.append(Rename(f"{column.table}.{column.name}", f"{owners[0]}.{column.name}"))
            column.set("table", exp.to_identifier(owners[0], quoted=_needs_quotes(owners[0])))
            continue
        if owners or not tables:
            continue  # several tables have it: which one was meant is a guess, and renaming it is wrong
        match = best_match(column.name, ((c.name, words(t.name)) for t in tables for c in t.columns), threshold)
        if match is None:
            continue
        old = f"{column.table}.{column.name}" if column.table else column.name
        column.set("this", exp.to_identifier(match, quoted=_needs_quotes(match)))
        renames.append(Rename(old, f"{column.table}.{match}" if column.table else match))


def _swap_lone_table(scope: Scope, schema: Schema, renames: list[Rename]) -> None:
    """A query of one table that names columns it lacks, all of which one other table has
    (`SELECT AVG(gpa) FROM student_record` where only student has gpa): that table instead."""
    sources = list(scope.selected_sources.values())
    if len(sources) != 1 or not (isinstance(sources[0][1], exp.Table) and is_real_table(sources[0][1])):
        return
    node = sources[0][1]
    table = schema.table(written_table(node))
    if table is None or isinstance(scope.expression, exp.SetOperation):
        return
    names = {c.name.lower() for c in scope.columns if isinstance(c.this, exp.Identifier)}
    names -= {e.alias.lower() for e in scope.expression.expressions if isinstance(e, exp.Alias)}
    if not names or all(table.column(n) for n in names) or any(_outer_has(scope, n, schema) for n in names):
        return
    others = [t for t in schema.tables if t is not table and all(t.column(n) for n in names)]
    if len(others) != 1:
        return
    other = others[0]
    renames.append(Rename(written_table(node), other.display_name))
    node.set("this", exp.to_identifier(other.name, quoted=_needs_quotes(other.name)))
    node.set("db", exp.to_identifier(other.schema) if other.display_name != other.name else None)


def scope_tables(scope: Scope, qualifier: str, schema: Schema) -> list[Table] | None:
    """The schema tables a column of this scope may come from: the qualifier's table, or every real
    table of the scope. None when a derived table or CTE is among them (its columns are its own)."""
    if qualifier:
        source = find_source(scope, qualifier)
        sources = [source] if source is not None else []
    else:
        sources = [source for _, source in scope.selected_sources.values()]
    out = []
    for source in sources:
        if not (isinstance(source, exp.Table) and is_real_table(source)):
            return None
        table = schema.table(written_table(source))
        if table is None:
            return None
        out.append(table)
    return out


def owners_of(scope: Scope, name: str, schema: Schema) -> list[str]:
    """The tables of this scope (as the scope names them: alias or table) that have the column `name`."""
    owners = []
    for alias, (_, source) in scope.selected_sources.items():
        if isinstance(source, exp.Table) and is_real_table(source):
            table = schema.table(written_table(source))
            if table is not None and table.column(name):
                owners.append(alias)
    return owners


def _outer_has(scope: Scope, name: str, schema: Schema) -> bool:
    """Does a table of an enclosing query have this column (a correlated subquery's reference)?"""
    outer = scope.parent
    while outer is not None:
        tables = scope_tables(outer, "", schema)
        if tables is None or any(t.column(name) for t in tables):
            return True  # a derived table out there may have it: do not guess
        outer = outer.parent
    return False


def written_table(node: exp.Table) -> str:
    """A table reference as the schema names it: `schema.table`, or `table`."""
    return f"{node.db}.{node.name}" if node.db else node.name


def _needs_quotes(name: str) -> bool:
    return not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name)
