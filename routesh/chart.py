"""Charts in the terminal: a result drawn with Unicode blocks, fitted to a width.

One label column and one numeric column make a horizontal bar per row; when every label is a date or a time
(a date value, or text such as 2025-03, 2025-03-14, 2025-03-14 09:30), the periods are sorted and drawn as
columns over a time axis instead. The value is the named column, else the last numeric one (a measure comes
after the ids); the label is the first other column that is not numeric, else the first other column.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from routesh.db.base import Result
from routesh.errors import UsageError

HORIZONTAL = " ▏▎▍▌▋▊▉█"  # eighths of a character cell, left to right
VERTICAL = " ▁▂▃▄▅▆▇█"  # eighths, bottom to top
MAX_BARS = 60  # more rows than that is a table, not a bar chart: the first ones are drawn and the rest said
HEIGHT = 12  # lines of a time chart
_PERIOD = re.compile(r"\d{4}-\d{2}(-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?)?")


@dataclass(frozen=True)
class Series:
    label: str  # column names, for the chart's title line
    value: str
    points: list[tuple[str, float]]  # (label as shown, value), NULL values left out
    skipped: int  # rows whose value was NULL
    periods: bool  # every label is a date or a time: sorted, drawn over a time axis


def chart(result: Result, *, width: int = 80, value: str | None = None) -> str:
    """`result` as a chart `width` characters wide; UsageError (one line) when there is nothing to draw."""
    series = pick_series(result, value)
    body = _columns(series, width) if series.periods else _bars(series, width)
    notes = [f"{series.value} by {series.label}"]
    if series.skipped:
        notes.append(f"{series.skipped} row{'s' if series.skipped != 1 else ''} with no {series.value} left out")
    return body + "(" + "; ".join(notes) + ")\n"


def pick_series(result: Result, value: str | None = None) -> Series:
    columns, rows = result.columns, result.rows
    if not columns or not rows:
        raise UsageError("nothing to chart: the result has no rows")
    numeric = [i for i in range(len(columns)) if is_numeric_column(rows, i)]
    if value is not None:
        matches = [i for i, name in enumerate(columns) if name.lower() == value.lower()]
        if not matches:
            raise UsageError(f"no column {value!r} in the result (its columns: {', '.join(columns)})")
        if matches[0] not in numeric:
            raise UsageError(f"column {columns[matches[0]]!r} is not numeric; a chart needs numbers to draw")
        value_index = matches[0]
    elif numeric:
        value_index = numeric[-1]
    else:
        raise UsageError(f"nothing to chart: no numeric column among {', '.join(columns)}")
    others = [i for i in range(len(columns)) if i != value_index]
    label_index = next((i for i in others if i not in numeric), others[0] if others else None)
    points, skipped = [], 0
    for number, row in enumerate(rows, 1):
        if row[value_index] is None:
            skipped += 1
            continue
        label = row[label_index] if label_index is not None else number
        points.append((_label(label), float(row[value_index])))
    if not points:
        raise UsageError(f"nothing to chart: every {columns[value_index]} is NULL")
    label_name = columns[label_index] if label_index is not None else "row"
    periods = label_index is not None and len(points) > 1 and all(_is_period(row[label_index]) for row in rows
                                                                   if row[value_index] is not None)
    if periods:
        points.sort(key=lambda p: p[0])  # ISO text sorts as time does
    return Series(label_name, columns[value_index], points, skipped, periods)


def is_numeric_column(rows: Sequence[tuple[Any, ...]], index: int) -> bool:
    """Every non-NULL value of the column is a number (and there is one)."""
    values = [row[index] for row in rows if row[index] is not None]
    return bool(values) and all(isinstance(v, (int, float, decimal.Decimal)) and not isinstance(v, bool) for v in values)


# ---- one bar per row ------------------------------------------------------------------------------


def _bars(series: Series, width: int) -> str:
    points = series.points[:MAX_BARS]
    labels = [_fit(label, max(4, width // 3)) for label, _ in points]
    values = [number(v) for _, v in points]
    label_width, value_width = max(map(len, labels)), max(map(len, values))
    room = max(4, width - label_width - value_width - 4)  # "label │bar value"
    top = max(abs(v) for _, v in points) or 1.0
    lines = [f"{label.ljust(label_width)} │{_bar(abs(v) / top * room)} {shown.rjust(value_width)}".rstrip()
             for label, (_, v), shown in zip(labels, points, values)]
    if len(series.points) > MAX_BARS:
        lines.append(f"(the first {MAX_BARS} of {len(series.points)} rows)")
    return "\n".join(lines) + "\n"


def _bar(cells: float) -> str:
    """`cells` character cells of bar (a fraction drawn in eighths), padded to its whole width."""
    eighths = round(cells * 8)
    whole, part = divmod(eighths, 8)
    text = "█" * whole + (HORIZONTAL[part] if part else "")
    return text.ljust(math.ceil(cells))


# ---- columns over a time axis -----------------------------------------------------------------------


def _columns(series: Series, width: int) -> str:
    values = [v for _, v in series.points]
    low, high = min(0.0, *values), max(0.0, *values)
    axis = [number(high), number(low)]
    axis_width = max(map(len, axis))
    room = max(8, width - axis_width - 2)
    per_bucket = math.ceil(len(values) / room)  # more periods than columns: each column is a mean
    buckets = [values[i:i + per_bucket] for i in range(0, len(values), per_bucket)]
    heights = [round((sum(b) / len(b) - low) / ((high - low) or 1.0) * HEIGHT * 8) for b in buckets]
    cell = max(1, min(6, room // len(buckets)))  # characters per period, a gap between wide ones
    draw = cell - 1 if cell >= 3 else cell
    lines = []
    for level in range(HEIGHT, 0, -1):
        mark = axis[0] if level == HEIGHT else axis[1] if level == 1 else ""
        row = "".join(_cell(h - (level - 1) * 8) * draw + " " * (cell - draw) for h in heights)
        lines.append(f"{mark.rjust(axis_width)} ┤{row}".rstrip())
    lines.append(" " * axis_width + " └" + "─" * (cell * len(buckets)))
    first, last = series.points[0][0], series.points[-1][0]
    span = cell * len(buckets)
    lines.append(" " * (axis_width + 2) + (first + last.rjust(max(1, span - len(first)))
                                              if span > len(first) + len(last) else first))
    if per_bucket > 1:
        lines.append(f"(each column is the mean of {per_bucket} periods)")
    return "\n".join(lines) + "\n"


def _cell(eighths: int) -> str:
    return "█" if eighths >= 8 else VERTICAL[eighths] if eighths > 0 else " "


# ---- text ---------------------------------------------------------------------------------------------


def number(value: float) -> str:
    """A value as a chart shows it: whole numbers whole, others with at most two decimals."""
    if value.is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def _label(value: Any) -> str:
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat()
    return "NULL" if value is None else str(value)


def _is_period(value: Any) -> bool:
    if isinstance(value, (dt.date, dt.datetime)):
        return True
    return isinstance(value, str) and _PERIOD.fullmatch(value) is not None


def _fit(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
