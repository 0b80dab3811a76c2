"""Execution-accuracy comparison on hand-made results."""

from decimal import Decimal

from routesh.evaluate.compare import order_matters, results_match


def test_row_order_counts_only_when_gold_orders():
    gold = [(1, "a"), (2, "b")]
    assert results_match(gold, [(2, "b"), (1, "a")], ordered=False)
    assert not results_match(gold, [(2, "b"), (1, "a")], ordered=True)
    assert results_match(gold, [(1, "a"), (2, "b")], ordered=True)
    assert order_matters("SELECT x FROM t ORDER  BY x") and not order_matters("SELECT x FROM t")


def test_duplicates_are_a_multiset_not_a_set():
    assert not results_match([(1,), (1,), (2,)], [(1,), (2,), (2,)], ordered=False)
    assert not results_match([(1,), (1,)], [(1,)], ordered=False)
    assert results_match([(1,), (1,), (2,)], [(2,), (1,), (1,)], ordered=False)


def test_column_order_may_differ():
    gold = [("ann", 3), ("bob", 5)]
    assert results_match(gold, [(3, "ann"), (5, "bob")], ordered=False)
    assert results_match(gold, [(3, "ann"), (5, "bob")], ordered=True)
    # same column multisets but rows paired differently: not a match
    assert not results_match(gold, [(5, "ann"), (3, "bob")], ordered=False)
    # identical columns that could swap
    assert results_match([(1, 1), (2, 2)], [(2, 2), (1, 1)], ordered=False)


def test_numbers_and_floats():
    assert results_match([(2,)], [(2.0,)], ordered=False)
    assert results_match([(Decimal("2.50"),)], [(2.5,)], ordered=False)
    assert results_match([(1 / 3,)], [(0.3333333333,)], ordered=False)
    assert not results_match([(0.33,)], [(0.34,)], ordered=False)
    assert results_match([(float("nan"),)], [(float("nan"),)], ordered=False)


def test_nulls_and_shapes():
    assert results_match([(None, 1)], [(1, None)], ordered=False)
    assert not results_match([(None,)], [(0,)], ordered=False)
    assert results_match([], [], ordered=True)
    assert not results_match([], [(1,)], ordered=False)
    assert not results_match([(1, 2)], [(1,)], ordered=False)  # a missing column
    assert not results_match([(1,)], [(1, 2)], ordered=False)  # an extra column
