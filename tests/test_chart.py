"""Charts: real results of the demo database drawn with Unicode blocks; `-e/--sql --format chart` and the shell's
`\\chart` through the real executable (the shell in a pseudo-terminal)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from routesh.chart import MAX_BARS, chart, number
from routesh.db.base import Result
from routesh.db.sqlite import SqliteDatabase
from routesh.demo import ensure_demo_db
from routesh.errors import UsageError
from tests.helpers import routesh
from tests.test_shell_e2e import concert  # noqa: F401 - the fixture: a copy of concert_singer

ORDERS_PER_STORE = ("SELECT s.name AS store, count(*) AS orders FROM orders o JOIN stores s USING (store_id) "
                    "GROUP BY s.name ORDER BY orders DESC")
REVENUE_PER_MONTH = ("SELECT substr(o.order_date, 1, 7) AS month, round(sum(p.amount), 2) AS revenue "
                     "FROM payments p JOIN orders o USING (order_id) GROUP BY month ORDER BY revenue")


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return ensure_demo_db(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def db(demo):
    database = SqliteDatabase.open(demo)
    yield database
    database.close()


def _blocks(line: str) -> float:
    """How many character cells of bar a line holds (eighths counted)."""
    return line.count("█") + sum((" ▏▎▍▌▋▊▉".index(c)) / 8 for c in line if c in "▏▎▍▌▋▊▉")


def test_a_bar_per_row_scaled_to_the_largest(db):
    result = db.execute(ORDERS_PER_STORE)
    drawn = chart(result, width=80).splitlines()
    assert drawn[-1] == "(orders by store)"
    bars = drawn[:-1]
    assert len(bars) == len(result.rows) and all(len(line) <= 80 for line in bars)
    for line, (store, orders) in zip(bars, result.rows):
        assert line.startswith(store) and line.endswith(f" {orders}")  # in the result's order, value at the end
    top = result.rows[0][1]
    for line, (_, orders) in zip(bars, result.rows):  # lengths proportional to the values, to an eighth
        assert abs(_blocks(line) / _blocks(bars[0]) - orders / top) < 0.02


def test_dates_make_columns_over_a_sorted_time_axis(db):
    result = db.execute(REVENUE_PER_MONTH)  # ordered by revenue, not by month: the chart sorts by time
    drawn = chart(result, width=100).splitlines()
    months = sorted(m for m, _ in result.rows)
    assert drawn[-1] == "(revenue by month)"
    assert drawn[-2].split() == [months[0], months[-1]]  # the axis runs from the first month to the last
    top = max(result.rows, key=lambda r: r[1])
    assert drawn[0].startswith(number(top[1]))  # the axis is labelled with the largest value
    plot = [line.split("┤", 1)[1] for line in drawn if "┤" in line]
    assert len(plot) == 12
    tallest = plot[0].index("█")  # only the largest month reaches the top line, at its place in time
    assert tallest // 3 == months.index(top[0])
    assert all(len(line) <= 100 for line in drawn)


def test_the_value_column_can_be_named_and_mistakes_are_one_line(db):
    result = db.execute("SELECT name, store_id, city_id FROM stores ORDER BY store_id")
    assert chart(result).splitlines()[-1] == "(city_id by name)"  # the last numeric column by default
    assert chart(result, value="STORE_ID").splitlines()[-1] == "(store_id by name)"
    with pytest.raises(UsageError, match=r"^no column 'nope' in the result \(its columns: name, store_id, city_id\)$"):
        chart(result, value="nope")
    with pytest.raises(UsageError, match=r"^column 'name' is not numeric"):
        chart(result, value="name")
    with pytest.raises(UsageError, match=r"^nothing to chart: no numeric column among name, channel$"):
        chart(db.execute("SELECT s.name, o.channel FROM orders o JOIN stores s USING (store_id) LIMIT 3"))
    with pytest.raises(UsageError, match=r"^nothing to chart: the result has no rows$"):
        chart(db.execute("SELECT name, store_id FROM stores WHERE 0"))


def test_nulls_are_left_out_and_long_results_are_cut_with_a_note():
    drawn = chart(Result(["k", "v"], [("a", 1), ("b", None), ("c", 3)], 0.0)).splitlines()
    assert [line.split()[0] for line in drawn[:-1]] == ["a", "c"]
    assert drawn[-1] == "(v by k; 1 row with no v left out)"
    many = Result(["k", "v"], [(f"k{i}", i) for i in range(100)], 0.0)
    drawn = chart(many).splitlines()
    assert len(drawn) == MAX_BARS + 2 and drawn[-2] == f"(the first {MAX_BARS} of 100 rows)"
    daily = Result(["day", "n"], [(f"2025-{1 + i // 28:02d}-{1 + i % 28:02d}", i % 7) for i in range(300)], 0.0)
    drawn = chart(daily, width=80).splitlines()
    assert drawn[-2] == "(each column is the mean of 4 periods)" and all(len(line) <= 80 for line in drawn)


def test_one_shot_format_chart(demo):
    run = routesh(str(demo), "--sql", ORDERS_PER_STORE, "--yes", "--format", "chart")
    assert run.code == 0, run.err
    assert run.out.splitlines()[-1] == "(orders by store)" and "█" in run.out
    run = routesh(str(demo), "--sql", "SELECT name FROM stores", "--yes", "--format", "chart")
    assert run.code == 1 and run.err.splitlines()[-1] == "routesh: nothing to chart: no numeric column among name"


def test_the_shell_charts_the_last_result(tmp_path, concert):  # noqa: F811 - the fixture
    from tests.test_shell_e2e import NO_MODEL, Shell, shell_env

    sh = Shell([str(concert), *NO_MODEL], env=shell_env(tmp_path), cwd=tmp_path)
    try:
        sh.do("\\chart", r"ERROR: no result to chart yet")
        sh.do("SELECT Country, count(*) AS singers FROM singer GROUP BY Country ORDER BY singers DESC;",
              r"\(3 rows\)")
        shown = sh.do("\\chart", r"\(singers by Country\)")
        assert re.search(r"France\s+│█+\s+4\n", shown) and re.search(r"Netherlands\s+│█+▌\s+1\n", shown), shown
        sh.do("\\chart Country", r"ERROR: column 'Country' is not numeric")
        sh.do("\\T chart", r"Output format is chart\.")
        shown = sh.do("SELECT Name, Age FROM singer ORDER BY Age DESC LIMIT 2;", r"\(2 rows\)")
        assert re.search(r"Joe Sharp\s+│█+\s+52", shown), shown
        shown = sh.do("SELECT Name FROM singer LIMIT 1;", r"\(1 row\)")
        assert "no numeric column among Name; shown as a table" in shown and "| Joe Sharp" in shown, shown
        sh.quit()
    finally:
        sh.close()
