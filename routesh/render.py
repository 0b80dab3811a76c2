"""Turn a Result into text: an aligned table for people, CSV/TSV/JSON for programs."""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
import json
import uuid
from typing import Any

from tabulate import tabulate

from routesh.db.base import Result

FORMATS = ("table", "csv", "tsv", "json")


def render(result: Result, fmt: str = "table", *, expanded: bool = False) -> str:
    """The rows of `result` in `fmt`. Notices (row counts, truncation) are separate: see footer().
    `expanded` is psql's \\x: one block per row, a line per column (table format only)."""
    if fmt == "table":
        return _expanded(result) if expanded else _table(result)
    if fmt in ("csv", "tsv"):
        return _delimited(result, "," if fmt == "csv" else "\t")
    if fmt == "json":
        return json.dumps([dict(zip(result.columns, map(_jsonable, row))) for row in result.rows],
                          ensure_ascii=False, indent=2) + "\n"
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def footer(result: Result, *, row_limit: int, timing: bool = False) -> str:
    """psql-style "(N rows)" plus what a reader must know: the rows were capped, how long it took."""
    if not result.columns:
        line = result.status or "OK"
    else:
        n = result.row_count
        line = f"({n} row{'s' if n != 1 else ''})"
        if result.truncated:
            line += f" — stopped at the row limit of {row_limit}; more rows exist (raise it with --row-limit)"
    if timing:
        line += f"\nTime: {result.elapsed * 1000:.3f} ms"
    return line


def _table(result: Result) -> str:
    if not result.columns:
        return ""
    rows = [[_display(v) for v in row] for row in result.rows]
    # Like psql: numbers right-aligned, everything else left.
    align = ["right" if _numeric_column(result.rows, i) else "left" for i in range(len(result.columns))]
    return tabulate(rows, headers=result.columns, tablefmt="psql", disable_numparse=True, colalign=align) + "\n"


def _expanded(result: Result) -> str:
    """psql's expanded display: -[ RECORD 1 ]-+------ blocks."""
    if not result.columns:
        return ""
    name_width = max(len(c) for c in result.columns)
    shown = [[_display(v) for v in row] for row in result.rows]
    value_width = max([len(v) for values in shown for v in values] + [1])
    lines = []
    for number, values in enumerate(shown, 1):
        header = f"-[ RECORD {number} ]"
        lines.append(header + "-" * max(0, name_width + 1 - len(header)) + "+" + "-" * (value_width + 1))
        lines += [f"{c.ljust(name_width)} | {v}" for c, v in zip(result.columns, values)]
    return "\n".join(lines) + "\n" if lines else ""


def widest_line(text: str) -> int:
    return max((len(line) for line in text.splitlines()), default=0)


def _numeric_column(rows: list[tuple[Any, ...]], index: int) -> bool:
    values = [row[index] for row in rows if row[index] is not None]
    return bool(values) and all(isinstance(v, (int, float, decimal.Decimal)) and not isinstance(v, bool) for v in values)


def _delimited(result: Result, delimiter: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\n")
    if result.columns:
        writer.writerow(result.columns)
    writer.writerows([["" if v is None else _display(v) for v in row] for row in result.rows])
    return out.getvalue()


def _display(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex()
    if isinstance(value, float):
        return f"{value:.1f}" if value.is_integer() and abs(value) < 1e16 else repr(value)
    return str(value)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() and "." not in str(value) else float(value)
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)
