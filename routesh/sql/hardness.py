"""Spider's hardness of a query (easy, medium, hard, extra), re-derived on sqlglot's tree, and the
structure counts the pipeline uses to decide whether continuation writing is worth a try."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sqlglot import exp

from routesh.sql.parse import Sql, is_real_table, leftmost_select, query_of

# Spider's five aggregates (AGG_OPS); other aggregate functions do not count towards hardness.
_SPIDER_AGGS: tuple[type[exp.Expression], ...] = (exp.Count, exp.Max, exp.Min, exp.Sum, exp.Avg)


@dataclass(frozen=True)
class Hardness:
    """Spider's hardness (evaluation.py `eval_hardness`) re-derived on sqlglot's tree, plus the counts
    the pipeline uses to decide whether a query is hard enough for continuation writing.

    Spider reads its counts off the *top* query only: for `A UNION B` that is A, and B is one nested
    query; a derived table in FROM is one more table unit, not nesting. Mapping to its parser's fields:
      component1 = [WHERE] + [GROUP BY] + [ORDER BY] + [LIMIT] + (FROM items - 1) + ORs + LIKEs
                   (ORs and LIKEs counted in ON, WHERE and HAVING conditions)
      component2 = subqueries that are operands of ON/WHERE/HAVING conditions + [set operation]
                   (+ CTEs, which Spider's grammar lacks; each counts as one nested query)
      others     = [aggregates > 1] + [select items > 1] + [WHERE conditions > 1] + [GROUP BY items > 1]
    Spider's aggregate count keeps its quirks, so that levels match the official ones: a select item,
    GROUP BY item or ORDER BY operand counts when its outermost function is one of COUNT/MAX/MIN/SUM/AVG;
    a WHERE condition counts when negated (NOT IN, NOT LIKE: Spider tests the not-flag); HAVING counts
    its AND/OR connectors and negated conditions, not its aggregates.
    """

    level: str  # "easy" | "medium" | "hard" | "extra"
    tables: int  # distinct tables read anywhere in the query
    joins: int  # top query: FROM items beyond the first
    nesting: int  # deepest query inside another (subquery, derived table, CTE); 0 when flat
    set_operations: int  # UNION/INTERSECT/EXCEPT anywhere
    subqueries: int  # top query: subqueries inside ON/WHERE/HAVING conditions
    where_conditions: int
    group_by: int
    having: bool
    order_by: bool
    limit: bool
    aggregates: int  # Spider's count (see above)
    component1: int
    component2: int
    others: int

    @property
    def is_hard(self) -> bool:
        """ROUTE's trigger for continuation writing: three or more tables, nesting, or a set operation."""
        return self.tables >= 3 or self.nesting > 0 or self.set_operations > 0


def hardness(sql: str | Sql, dialect: str) -> Hardness:
    """Spider hardness and structure counts of one query. Raises ValueError when it does not parse."""
    tree = query_of(sql, dialect)
    if tree is None:
        raise ValueError(f"could not parse as one {dialect} query")
    top = leftmost_select(tree)
    set_op = isinstance(_unwrap(tree), exp.SetOperation)
    if top is None:  # VALUES: nothing Spider grades
        top = exp.Select()

    where = top.args.get("where")
    having = top.args.get("having")
    group = top.args.get("group")
    joins = top.args.get("joins") or []
    from_ = top.args.get("from_") or top.args.get("from")
    on_conditions = [j.args["on"] for j in joins if j.args.get("on") is not None]

    where_leaves, where_ors = _condition_leaves(where.this if where is not None else None)
    having_leaves, having_ors = _condition_leaves(having.this if having is not None else None)
    on_leaves, on_ors = [], 0
    for cond in on_conditions:
        leaves, ors = _condition_leaves(cond)
        on_leaves += leaves
        on_ors += ors
    all_leaves = on_leaves + where_leaves + having_leaves

    table_units = (1 if from_ is not None else 0) + len(joins)
    likes = sum(1 for leaf in all_leaves if isinstance(_strip_not(leaf), (exp.Like, exp.ILike)))
    group_exprs = group.expressions if group is not None else []
    group_items = len(group_exprs)
    order = top.args.get("order")
    component1 = (
        (where is not None) + (group_items > 0) + (order is not None) + (top.args.get("limit") is not None)
        + max(table_units - 1, 0) + on_ors + where_ors + having_ors + likes
    )

    subqueries = sum(_operand_subqueries(leaf) for leaf in all_leaves)
    with_ = tree.args.get("with_") or tree.args.get("with")
    ctes = len(with_.expressions) if with_ is not None else 0
    component2 = subqueries + int(set_op) + ctes

    aggregates = (
        sum(_is_agg(p.unalias()) for p in top.expressions)
        + sum(isinstance(leaf, exp.Not) for leaf in where_leaves)
        + sum(_is_agg(g) for g in group_exprs)
        + sum(_order_aggs(o.this) for o in (order.expressions if order is not None else []))
        + max(len(having_leaves) - 1, 0) + sum(isinstance(leaf, exp.Not) for leaf in having_leaves)
    )
    others = (aggregates > 1) + (len(top.expressions) > 1) + (len(where_leaves) > 1) + (group_items > 1)

    return Hardness(
        level=_spider_level(component1, component2, others),
        tables=len({t.name.lower() for t in _real_tables(tree)}),
        joins=max(table_units - 1, 0),
        nesting=_nesting(tree),
        set_operations=sum(1 for _ in tree.find_all(exp.SetOperation)),
        subqueries=subqueries,
        where_conditions=len(where_leaves),
        group_by=group_items,
        having=having is not None,
        order_by=order is not None,
        limit=top.args.get("limit") is not None,
        aggregates=aggregates,
        component1=component1,
        component2=component2,
        others=others,
    )


def _spider_level(c1: int, c2: int, others: int) -> str:
    """eval_hardness, verbatim in its logic."""
    if c1 <= 1 and others == 0 and c2 == 0:
        return "easy"
    if (others <= 2 and c1 <= 1 and c2 == 0) or (c1 <= 2 and others < 2 and c2 == 0):
        return "medium"
    if (others > 2 and c1 <= 2 and c2 == 0) or (2 < c1 <= 3 and others <= 2 and c2 == 0) or (
        c1 <= 1 and others == 0 and c2 <= 1
    ):
        return "hard"
    return "extra"


def _unwrap(node: exp.Expression) -> exp.Expression:
    while isinstance(node, exp.Subquery):
        node = node.this
    return node


def _condition_leaves(cond: exp.Expression | None) -> tuple[list[exp.Expression], int]:
    """The predicates joined by AND/OR (through parentheses), and how many ORs join them."""
    if cond is None:
        return [], 0
    if isinstance(cond, exp.Paren):
        return _condition_leaves(cond.this)
    if isinstance(cond, exp.Connector):  # And, Or
        left, left_ors = _condition_leaves(cond.this)
        right, right_ors = _condition_leaves(cond.expression)
        return left + right, left_ors + right_ors + isinstance(cond, exp.Or)
    return [cond], 0


def _strip_not(node: exp.Expression) -> exp.Expression:
    while isinstance(node, (exp.Not, exp.Paren)):
        node = node.this
    return node


def _operand_subqueries(leaf: exp.Expression) -> int:
    """Queries used as operands of one condition (`x IN (SELECT ...)`, `x > (SELECT ...)`), not
    counting queries nested inside those."""
    count = 0
    for node in leaf.find_all(exp.Select, exp.SetOperation):
        parent = node.parent
        while parent is not None and parent is not leaf and not isinstance(parent, (exp.Select, exp.SetOperation)):
            parent = parent.parent
        if parent is leaf:
            count += 1
    return count


def _is_agg(node: exp.Expression) -> bool:
    while isinstance(node, exp.Paren):
        node = node.this
    return isinstance(node, _SPIDER_AGGS)


def _order_aggs(node: exp.Expression) -> int:
    """Spider's ORDER BY unit is `col_unit [op col_unit]`: aggregates on either side of one operator."""
    if isinstance(node, (exp.Add, exp.Sub, exp.Mul, exp.Div)):
        return _is_agg(node.this) + _is_agg(node.expression)
    return int(_is_agg(node))


def _real_tables(tree: exp.Expression) -> Iterator[exp.Table]:
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    for table in tree.find_all(exp.Table):
        if is_real_table(table) and table.name.lower() not in ctes:
            yield table


def _nesting(tree: exp.Expression) -> int:
    """How many SELECTs enclose the deepest SELECT (set operation branches are siblings, not nested)."""
    deepest = 0
    for select in tree.find_all(exp.Select):
        depth, parent = 0, select.parent
        while parent is not None:
            if isinstance(parent, exp.Select):
                depth += 1
            parent = parent.parent
        deepest = max(deepest, depth)
    return deepest
