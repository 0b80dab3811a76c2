"""The tables and columns a query reads: THE one alias resolver, through aliases, CTEs, derived tables,
correlated subqueries and set operations, on sqlglot's scopes (never on substrings: ROUTE's research
code matched table names as substrings)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlglot import exp
from sqlglot.optimizer.scope import Scope, traverse_scope

from routesh.db.schema import Schema, Table
from routesh.sql.parse import LooseToken, Sql, is_real_table, leftmost_select, query_of
from routesh.sql.quiet import quiet_sqlglot

@dataclass(frozen=True)
class Usage:
    """What a query reads. With a schema, names are the schema's spelling and every name here exists in
    it; without one, names are as first written (matched case-insensitively).

    A projection `*` (or `T1.*`) is recorded as the column "*" of its tables, not expanded: a reduced
    schema must then keep all of that table's columns. COUNT(*) reads no column.
    """

    tables: frozenset[str] = frozenset()
    columns: dict[str, frozenset[str]] = field(default_factory=dict)  # one entry per table, maybe empty
    unresolved: frozenset[str] = frozenset()  # columns not attributable: "name" (ambiguous/unknown), "T9.x"
    unknown_tables: frozenset[str] = frozenset()  # tables the schema lacks (schema given only)
    error: str | None = None  # set when the SQL does not parse; everything else is then empty

    def as_linking(self) -> dict[str, list[str]]:
        """The schema-linking target: {"table": ["col", ...]}, sorted for stable training data."""
        return {t: sorted(self.columns.get(t, frozenset()), key=str.lower) for t in sorted(self.tables, key=str.lower)}


def tables_and_columns(sql: str | Sql, dialect: str, schema: Schema | None = None) -> Usage:
    """The tables a query reads and, per table, the columns it uses, through aliases, CTEs, derived
    tables, correlated subqueries and set operations. Never raises: unparseable SQL gives an empty Usage
    with `error` set.

    Unqualified columns go to the one table in scope that has them (by the schema); without a schema,
    to the only table in scope, else they stay unresolved. CTE names and derived tables are not tables:
    their columns are traced to the tables they come from. In SQLite a double-quoted name that is no
    column in scope is a string literal (Spider writes `name = "Bob"`), as SQLite itself reads it.
    """
    tree = query_of(sql, dialect)
    if tree is None:
        return Usage(error=f"could not parse as one {dialect} query")
    collector = _Collector(schema, dialect)
    try:
        with quiet_sqlglot():
            collector.walk_scopes(tree)
    except Exception:  # noqa: BLE001 - sqlglot's scope builder rejects some odd trees; fall back
        collector = _Collector(schema, dialect)
        collector.walk_flat(tree)
    return collector.usage()


class _Collector:
    def __init__(self, schema: Schema | None, dialect: str):
        self.schema = schema
        self.dialect = dialect
        self.tables: dict[str, str] = {}  # lower-case key -> reported spelling
        self.columns: dict[str, dict[str, str]] = {}  # reported table -> lower column -> spelling
        self.unresolved: dict[str, str] = {}
        self.unknown: dict[str, str] = {}
        self.by_node: dict[int, Scope] = {}  # id(query expression) -> its scope

    def usage(self) -> Usage:
        return Usage(
            tables=frozenset(self.tables.values()),
            columns={t: frozenset(self.columns.get(t, {}).values()) for t in self.tables.values()},
            unresolved=frozenset(self.unresolved.values()),
            unknown_tables=frozenset(self.unknown.values()),
        )

    # -- recording --

    def _schema_table(self, table: exp.Table) -> Table | None:
        if self.schema is None:
            return None
        if table.db:
            found = self.schema.table(f"{table.db}.{table.name}")
            if found is not None:
                return found
        return self.schema.table(table.name)

    def add_table(self, table: exp.Table) -> str | None:
        """Record a real table; its reported name, or None when the schema lacks it."""
        known = self._schema_table(table)
        if known is not None:
            name = known.display_name
        else:
            name = f"{table.db}.{table.name}" if table.db else table.name
            if self.schema is not None:
                self.unknown.setdefault(name.lower(), name)
                return None
        self.tables.setdefault(name.lower(), name)
        name = self.tables[name.lower()]
        self.columns.setdefault(name, {})
        return name

    def add_column(self, table: exp.Table, column: str) -> None:
        name = self.add_table(table)
        if name is None:
            self._unresolved(f"{table.name}.{column}")
            return
        known = self._schema_table(table)
        if known is not None and column != "*":
            col = known.column(column)
            if col is None:
                self._unresolved(f"{name}.{column}")
                return
            column = col.name
        self.columns[name].setdefault(column.lower(), column)

    def _unresolved(self, text: str) -> None:
        self.unresolved.setdefault(text.lower(), text)

    def _has_column(self, table: exp.Table, column: str) -> bool | None:
        """Does the table have this column? None when there is no schema entry to ask."""
        known = self._schema_table(table)
        if known is None:
            return None
        return known.column(column) is not None

    # -- scoped resolution (the normal path) --

    def walk_scopes(self, tree: exp.Expression) -> None:
        scopes = traverse_scope(tree)
        self.by_node = by_node = {id(s.expression): s for s in scopes}
        for scope in scopes:
            for _, source in scope.selected_sources.values():
                if is_real_table(source):
                    self.add_table(source)
        for join in tree.find_all(exp.Join):
            self._using(join, by_node)
        for node in tree.find_all(exp.Column, exp.Star):
            if isinstance(node, exp.Star) and not isinstance(node.parent, exp.Select):
                continue  # COUNT(*), or the Star inside a Column `T1.*` (handled as the Column)
            scope = _enclosing_scope(node, by_node)
            if scope is None:
                continue
            if isinstance(node, exp.Star):
                for _, source in scope.selected_sources.values():
                    if is_real_table(source):
                        self.add_column(source, "*")
            elif node.table:
                self._qualified(scope, node.table, node.name, node)
            else:
                self._unqualified(scope, node.name, node)

    def _using(self, join: exp.Join, by_node: dict[int, Scope]) -> None:
        """`JOIN u USING (id)`: id is a column of the joined table and of the tables before it that have
        it (by the schema; without one, of the FROM table)."""
        names = [i.name for i in join.args.get("using") or []]
        scope = _enclosing_scope(join, by_node)
        if not names or scope is None or not is_real_table(join.this):
            return
        select = scope.expression
        first = (select.args.get("from_") or select.args.get("from")) if isinstance(select, exp.Select) else None
        earlier = [first.this] if first is not None else []
        for other in select.args.get("joins") or [] if isinstance(select, exp.Select) else []:
            if other is join:
                break
            earlier.append(other.this)
        for name in names:
            self.add_column(join.this, name)
            having = [t for t in earlier if is_real_table(t) and self._has_column(t, name)]
            if self.schema is None and earlier and is_real_table(earlier[0]):
                having = [earlier[0]]
            for table in having:
                self.add_column(table, name)

    def _qualified(self, scope: Scope, qualifier: str, name: str, node: exp.Expression | None, depth: int = 0) -> None:
        source = find_source(scope, qualifier)
        if isinstance(source, exp.Table):
            self.add_column(source, name)
        elif isinstance(source, Scope):
            self._trace(source, name, depth + 1)
        else:
            self._unresolved(f"{qualifier}.{name}")

    def _unqualified(self, scope: Scope, name: str, node: exp.Expression | None, depth: int = 0) -> None:
        """Inner scope first: a table here that has the column, a select alias, a string in disguise, the
        one table here that may have it (no schema); then, from a subquery only, the enclosing scopes."""
        if isinstance(scope.expression, exp.SetOperation):
            return  # ORDER BY of a UNION names its output columns
        looked: Scope | None = scope
        while looked is not None:
            sure = [src for _, src in looked.selected_sources.values() if self._source_has(src, name)]
            if len(sure) == 1:
                self._attribute(sure[0], name, depth)
                return
            if len(sure) > 1:
                self._unresolved(name)  # ambiguous: the database would refuse it too
                return
            if looked is scope:
                if is_projection_alias(scope, name):
                    return  # ORDER BY cnt where cnt is `count(*) AS cnt`
                if node is not None and self.schema is None and self._is_string_literal(node):
                    return
                unsure = [src for _, src in scope.selected_sources.values() if self._source_has(src, name) is None]
                if len(unsure) == 1:  # the only table here that may have it: no schema, or a `*` hides it
                    self._attribute(unsure[0], name, depth)
                    return
            # Only a subquery (or a branch of a set operation inside one) sees the enclosing query;
            # derived tables and CTEs do not.
            if not (looked.is_subquery or looked.is_set_operation):
                break
            looked = looked.parent
        if node is not None and self._is_string_literal(node):
            return
        self._unresolved(name)

    def _attribute(self, source: exp.Expression | Scope, name: str, depth: int) -> None:
        if isinstance(source, exp.Table):
            if is_real_table(source):
                self.add_column(source, name)
        elif isinstance(source, Scope):
            self._trace(source, name, depth + 1)

    def _source_has(self, source: exp.Expression | Scope, name: str) -> bool | None:
        if isinstance(source, exp.Table):
            return self._has_column(source, name) if is_real_table(source) else None
        if isinstance(source, Scope):
            outputs = _output_names(source)
            if outputs is None:
                return None
            return name.lower() in outputs
        return None

    def _trace(self, scope: Scope, name: str, depth: int) -> None:
        """A column of a CTE or derived table: follow it to the table it comes from. Computed outputs
        need nothing here: their own columns are recorded where they are written."""
        if depth > 8 or name == "*":
            return  # `T.*` of a derived table: its own columns are recorded inside it
        select = leftmost_select(scope.expression)
        if select is None:
            return
        inner = self.by_node.get(id(select), scope)  # a set operation's leftmost branch has its own scope
        listed = [c.lower() for c in _alias_columns(scope)]
        if name.lower() in listed:  # `WITH r(n) AS (SELECT x ...)`: n is the projection in that position
            position = listed.index(name.lower())
            if position >= len(select.expressions):
                return
            projection = select.expressions[position]
            name = projection.alias_or_name
        for projection in select.expressions:
            if isinstance(projection, exp.Star):
                self._unqualified(inner, name, None, depth)
                return
            if isinstance(projection, exp.Column) and isinstance(projection.this, exp.Star):
                self._qualified(inner, projection.table, name, None, depth)
                return
            if projection.alias_or_name.lower() == name.lower():
                target = projection.unalias()
                if isinstance(target, exp.Column) and not isinstance(target.this, exp.Star):
                    if target.table:
                        self._qualified(inner, target.table, target.name, None, depth)
                    else:
                        self._unqualified(inner, target.name, None, depth)
                return

    def _is_string_literal(self, node: exp.Expression) -> bool:
        """SQLite reads a double-quoted name that matches no column as a string ("Bob")."""
        if self.dialect != "sqlite" or not isinstance(node, exp.Column) or node.table:
            return False
        ident = node.this
        if not (isinstance(ident, exp.Identifier) and ident.quoted):
            return False
        if self.schema is not None:
            return True  # the caller found no table in any enclosing scope with this column
        parent = node.parent
        if isinstance(parent, (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Like, exp.ILike)):
            return parent.this is not node
        return isinstance(parent, (exp.In, exp.Between)) and parent.this is not node

    # -- flat resolution (when sqlglot cannot build scopes) --

    def walk_flat(self, tree: exp.Expression) -> None:
        """Without scopes: a column looks for its table among the tables of its own SELECT, then of the
        SELECTs around it, then anywhere in the query."""
        ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
        tables = [t for t in tree.find_all(exp.Table) if is_real_table(t) and t.name.lower() not in ctes]
        for table in tables:
            self.add_table(table)
        for column in tree.find_all(exp.Column):
            tiers, select = [], column.find_ancestor(exp.Select)
            while select is not None:
                tiers.append([t for t in tables if t.find_ancestor(exp.Select) is select])
                select = select.find_ancestor(exp.Select)
            tiers.append(tables)
            if column.table:
                wanted = column.table.lower()
                target = next((t for tier in tiers for t in tier if t.alias_or_name.lower() == wanted), None)
                target = target or next((t for t in tables if t.name.lower() == wanted), None)
                if target is not None:
                    self.add_column(target, "*" if isinstance(column.this, exp.Star) else column.name)
                elif wanted not in ctes:
                    self._unresolved(f"{column.table}.{column.name}")
                continue
            self._flat_unqualified(column, tiers)

    def _flat_unqualified(self, column: exp.Column, tiers: list[list[exp.Table]]) -> None:
        for tier in tiers:
            having = [t for t in tier if self._has_column(t, column.name)]
            if len({self._schema_table(t).display_name for t in having}) == 1:  # type: ignore[union-attr]
                self.add_column(having[0], column.name)
                return
            if having:
                break  # ambiguous at this level
        if self._is_string_literal(column):
            return
        if self.schema is None and len(tiers[0]) == 1:
            self.add_column(tiers[0][0], column.name)
            return
        self._unresolved(column.name)


def _enclosing_scope(node: exp.Expression, by_node: dict[int, Scope]) -> Scope | None:
    parent = node.parent
    while parent is not None:
        scope = by_node.get(id(parent))
        if scope is not None:
            return scope
        parent = parent.parent
    return None


def find_source(scope: Scope | None, qualifier: str) -> exp.Expression | Scope | None:
    """What `qualifier` names in this scope or an enclosing one: an alias first, then a table name."""
    wanted = qualifier.lower()
    looked = scope
    while looked is not None:
        for key, (_, source) in looked.selected_sources.items():
            if key.lower() == wanted:
                return source
        looked = looked.parent
    looked = scope
    while looked is not None:  # `singer.name` written beside `FROM singer AS T1`
        for _, source in looked.selected_sources.values():
            if isinstance(source, exp.Table) and source.name.lower() == wanted:
                return source
        looked = looked.parent
    return None


def is_projection_alias(scope: Scope, name: str) -> bool:
    expression = scope.expression
    if not isinstance(expression, exp.Select):
        return False
    return any(isinstance(p, exp.Alias) and p.alias.lower() == name.lower() for p in expression.expressions)


def _output_names(scope: Scope) -> set[str] | None:
    """The column names a derived table or CTE exposes; None when a `*` hides them."""
    listed = _alias_columns(scope)
    if listed:
        return {c.lower() for c in listed}
    select = leftmost_select(scope.expression)
    if select is None:
        return None
    names: set[str] = set()
    for projection in select.expressions:
        if _is_star(projection):
            return None
        names.add(projection.alias_or_name.lower())
    return names


def _alias_columns(scope: Scope) -> list[str]:
    """The column list written after a CTE's or derived table's name: `WITH r(n) AS (...)`."""
    holder = scope.expression.parent
    while isinstance(holder, exp.SetOperation):  # a recursive CTE's self-reference is scoped to its anchor
        holder = holder.parent
    alias = holder.args.get("alias") if isinstance(holder, (exp.CTE, exp.Subquery)) else None
    return [c.name for c in alias.columns] if isinstance(alias, exp.TableAlias) else []


def _is_star(projection: exp.Expression) -> bool:
    """`*` or `T.*` in a select list (not COUNT(*))."""
    return isinstance(projection, exp.Star) or (
        isinstance(projection, exp.Column) and isinstance(projection.this, exp.Star)
    )


# ---- aliases without scopes ---------------------------------------------------------------------------


def aliases(tree: exp.Expression, schema: Schema) -> dict[str, Table]:
    """Every name a table of `schema` goes by in `tree`, lower case: its alias and its own name, the
    first use of a name winning. Flat (no scopes): for editing a query's tokens, where a name's
    table matters more than its scope."""
    out: dict[str, Table] = {}
    for node, table in _schema_nodes(tree, schema):
        out.setdefault(node.alias_or_name.lower(), table)
        out.setdefault(node.name.lower(), table)
    return out


def schema_tables(tree: exp.Expression, schema: Schema) -> list[Table]:
    """The tables of `schema` that `tree` names, first use first."""
    out: list[Table] = []
    for _, table in _schema_nodes(tree, schema):
        if table not in out:
            out.append(table)
    return out


def _schema_nodes(tree: exp.Expression, schema: Schema) -> list[tuple[exp.Table, Table]]:
    found = ((node, schema.table(node.name)) for node in tree.find_all(exp.Table))
    return [(node, table) for node, table in found if table is not None]


# ---- tables named in unfinished text ------------------------------------------------------------------

# Words a table name follows.
TABLE_WORDS = frozenset({"from", "join", "into", "update", "table", "truncate"})


def typed_references(tokens: list[LooseToken], schema: Schema | None,
                     keywords: frozenset[str]) -> tuple[list[Table], dict[str, Table]]:
    """Tables a statement being typed names after FROM/JOIN/INTO/UPDATE (and FROM's comma list), and
    the aliases they get (`orders o`, `orders AS o`), aliases and table names both as keys. On loose
    tokens, because the text rarely parses yet; a word in `keywords` after a table is no alias."""
    refs: list[Table] = []
    found: dict[str, Table] = {}
    if schema is None:
        return refs, found
    toks = [t for t in tokens if t.kind != "comment"]
    i = 0
    while i < len(toks):
        keyword = toks[i].low
        i += 1
        if toks[i - 1].kind != "id" or keyword not in TABLE_WORDS:
            continue
        while i < len(toks):
            parts, j = [], i
            while j < len(toks) and toks[j].is_name:
                parts.append(toks[j].name)
                if j + 2 < len(toks) and toks[j + 1].text == "." and toks[j + 2].is_name:
                    j += 2
                else:
                    j += 1
                    break
            table = schema.table(".".join(parts)) if parts else None
            if table is None:
                break
            if table not in refs:
                refs.append(table)
            found.setdefault(table.name.lower(), table)
            found.setdefault(table.display_name.lower(), table)
            if j < len(toks) and toks[j].low == "as" and j + 1 < len(toks) and toks[j + 1].is_name:
                found[toks[j + 1].name.lower()] = table
                j += 2
            elif j < len(toks) and toks[j].is_name and toks[j].low not in keywords:
                found[toks[j].name.lower()] = table
                j += 1
            i = j
            if keyword == "from" and i < len(toks) and toks[i].text == ",":
                i += 1  # FROM a x, b y
                continue
            break
    return refs, found
