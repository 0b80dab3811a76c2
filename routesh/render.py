"""Turn rows into text: an aligned table for people, CSV/TSV/JSON/JSON Lines for programs; a whole Result at
once (render) or batch by batch as a statement streams (the writers, which render is built on)."""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
import itertools
import json
import textwrap
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

from routesh.chart import chart, is_numeric_column
from routesh.db.base import Result
from routesh.errors import QueryError

STREAMED_FORMATS = ("table", "csv", "tsv", "json", "jsonl")  # written batch by batch as rows are fetched
FORMATS = (*STREAMED_FORMATS, "chart")  # a chart needs every row first: fetched up to the screen's limit


def render(result: Result, fmt: str = "table", *, expanded: bool = False, width: int = 80) -> str:
    """The rows of `result` in `fmt`. Notices (row counts, truncation) are separate: see footer().
    `expanded` is psql's \\x: one block per row, a line per column (table format only); `width` is the
    chart's. A result a chart cannot draw raises UsageError."""
    if fmt == "chart":
        return chart(result, width=width)
    out = io.StringIO()
    writer = row_writer(fmt, out, expanded=expanded)
    if result.columns:
        writer.begin(result.columns)
        writer.write(result.rows)
    writer.finish()
    return out.getvalue()


def footer(result: Result, *, row_limit: int, timing: bool = False, widths_from: int | None = None,
           screen_limit: bool = False) -> str:
    """psql-style "(N rows)" plus what a reader must know: the rows were capped (by the screen's limit when
    `screen_limit`), the table's column widths came from its first `widths_from` rows, how long it took."""
    if not result.columns:
        line = result.status or "OK"
    else:
        n = result.row_count
        line = f"({n} row{'s' if n != 1 else ''}"
        line += f"; column widths from the first {widths_from})" if widths_from else ")"
        if result.truncated and screen_limit:
            line += (f" — stopped at the screen's limit of {row_limit} rows; a row limit of 0 lifts it only for "
                     "output to a file or a pipe")
        elif result.truncated:
            line += (f" — stopped at the row limit of {row_limit}; more rows exist (raise it with --row-limit, "
                     "or 0 for no limit)")
    if timing:
        line += f"\nTime: {result.elapsed * 1000:.3f} ms"
    return line


# ---- writers: rows to text as they are fetched -----------------------------------------------------


class RowWriter:
    """Rows written as they arrive (a RowSink): `begin(columns)`, `write(batch)` per batch, `finish()` at the
    end, also after an interrupted run, so that what was written stays well-formed up to its last whole row."""

    def __init__(self, out: TextIO):
        self.out = out
        self.columns: list[str] = []
        self.rows_written = 0
        self.widths_from: int | None = None  # a table's column widths came from its first N rows (see footer)

    def begin(self, columns: list[str]) -> None:
        self.columns = list(columns)

    def write(self, rows: Sequence[tuple[Any, ...]]) -> None:
        self._write(rows)
        self.rows_written += len(rows)

    def finish(self) -> None:
        self.out.flush()

    def _write(self, rows: Sequence[tuple[Any, ...]]) -> None:
        raise NotImplementedError


@contextmanager
def stopped_part_way(writer: RowWriter, where: str) -> Iterator[RowWriter]:
    """Around a run streaming into `writer`: a QueryError part way (cancelled, failed) finishes the writer, so that
    what was written stays well-formed, and says how many rows were written `where`."""
    try:
        yield writer
    except QueryError as err:
        writer.finish()
        if writer.rows_written:
            raise type(err)(f"{err}; {writer.rows_written} rows were written {where}") from None
        raise


class DelimitedWriter(RowWriter):
    """CSV or TSV: a header line, then a line per row; NULL is an empty field."""

    def __init__(self, out: TextIO, delimiter: str):
        super().__init__(out)
        self.delimiter = delimiter
        # rows are formatted into a batch of text and written at once: an unbuffered stdout
        # (PYTHONUNBUFFERED) would otherwise cost a system call per row
        self._batch = io.StringIO()
        self._csv = csv.writer(self._batch, delimiter=delimiter, lineterminator="\n")

    def begin(self, columns: list[str]) -> None:
        super().begin(columns)
        self._csv.writerow(columns)
        self._flush_batch()

    def _write(self, rows: Sequence[tuple[Any, ...]]) -> None:
        # csv's own str() of a value is _display's, except for bytes: convert only a batch that has some
        if _BINARY.isdisjoint(map(type, itertools.chain.from_iterable(rows))):
            self._csv.writerows(rows)
        else:
            self._csv.writerows([_display(v) if type(v) in _BINARY else v for v in row] for row in rows)
        self._flush_batch()

    def write_lines(self, text: str, rows: int) -> None:
        self.out.write(text)
        self.rows_written += rows

    def _flush_batch(self) -> None:
        self.out.write(self._batch.getvalue())
        self._batch.seek(0)
        self._batch.truncate()


def _row_object(columns: Sequence[str], row: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(columns, map(_jsonable, row)))


class JsonLinesWriter(RowWriter):
    """JSON Lines: one object per row, keyed by column name."""

    def _write(self, rows: Sequence[tuple[Any, ...]]) -> None:
        columns = self.columns
        self.out.write("".join(json.dumps(_row_object(columns, row), ensure_ascii=False) + "\n" for row in rows))


class JsonArrayWriter(RowWriter):
    """One JSON array of row objects, written element by element and closed by finish()."""

    def _write(self, rows: Sequence[tuple[Any, ...]]) -> None:
        columns, opened = self.columns, self.rows_written > 0
        parts = []
        for row in rows:
            element = json.dumps(_row_object(columns, row), ensure_ascii=False, indent=2)
            parts.append((",\n" if opened else "[\n") + textwrap.indent(element, "  "))
            opened = True
        self.out.write("".join(parts))

    def finish(self) -> None:
        self.out.write("\n]\n" if self.rows_written else "[]\n")
        super().finish()


class TableWriter(RowWriter):
    """psql's aligned table. The first batch is drawn whole (by tabulate); later batches keep its column widths
    and alignment, as psql's FETCH_COUNT mode does, so a wider value further down pushes its row out of line."""

    def __init__(self, out: TextIO):
        super().__init__(out)
        self._border: str | None = None  # the closing line, once the first batch is drawn
        self._widths: list[int] = []
        self._right: list[bool] = []
        self._first = 0

    def _write(self, rows: Sequence[tuple[Any, ...]]) -> None:
        if self._border is None:
            lines = _table(self.columns, rows).rstrip("\n").split("\n")
            self._border = lines[-1]
            self.out.write("\n".join(lines[:-1]) + "\n")
            self._widths = [len(segment) - 2 for segment in self._border.strip("+").split("+")]
            self._right = [is_numeric_column(rows, i) for i in range(len(self.columns))]
            self._first = len(rows)
            return
        self.widths_from = self._first
        self.out.write("".join("| " + " | ".join(cell.rjust(w) if right else cell.ljust(w) for cell, w, right in
                                                 zip(map(_display, row), self._widths, self._right)) + " |\n"
                               for row in rows))

    def finish(self) -> None:
        if self._border is None and self.columns:  # no rows at all: the header alone
            self.out.write(_table(self.columns, []))
        elif self._border is not None:
            self.out.write(self._border + "\n")
        super().finish()


class ExpandedWriter(RowWriter):
    """psql's expanded display (\\x): a -[ RECORD n ]- block per row; the rule's width comes from the first batch."""

    def __init__(self, out: TextIO):
        super().__init__(out)
        self._value_width: int | None = None

    def _write(self, rows: Sequence[tuple[Any, ...]]) -> None:
        shown = [[_display(v) for v in row] for row in rows]
        if self._value_width is None:
            self._value_width = max([len(v) for values in shown for v in values] + [1])
        self.out.write(_expanded(self.columns, shown, start=self.rows_written + 1, value_width=self._value_width))


def row_writer(fmt: str, out: TextIO, *, expanded: bool = False) -> RowWriter:
    """The writer for `fmt` (one of FORMATS) onto `out`; `expanded` applies to the table format."""
    if fmt == "table":
        return ExpandedWriter(out) if expanded else TableWriter(out)
    if fmt in ("csv", "tsv"):
        return DelimitedWriter(out, "," if fmt == "csv" else "\t")
    if fmt == "json":
        return JsonArrayWriter(out)
    if fmt == "jsonl":
        return JsonLinesWriter(out)
    raise ValueError(f"{fmt!r} is not a streamed format; choose one of {', '.join(STREAMED_FORMATS)}")


def _table(columns: list[str], rows: Sequence[tuple[Any, ...]]) -> str:
    from tabulate import tabulate  # only tables need it (and its wcwidth): csv exports start without it

    shown = [[_display(v) for v in row] for row in rows]
    # Like psql: numbers right-aligned, everything else left.
    align = ["right" if is_numeric_column(rows, i) else "left" for i in range(len(columns))]
    return tabulate(shown, headers=columns, tablefmt="psql", disable_numparse=True, colalign=align) + "\n"


def _expanded(columns: list[str], shown: list[list[str]], *, start: int, value_width: int) -> str:
    """psql's expanded display: -[ RECORD n ]-+------ blocks, numbered from `start`."""
    name_width = max(len(c) for c in columns)
    lines = []
    for number, values in enumerate(shown, start):
        header = f"-[ RECORD {number} ]"
        lines.append(header + "-" * max(0, name_width + 1 - len(header)) + "+" + "-" * (value_width + 1))
        lines += [f"{c.ljust(name_width)} | {v}" for c, v in zip(columns, values)]
    return "\n".join(lines) + "\n" if lines else ""


def widest_line(text: str) -> int:
    return max((len(line) for line in text.splitlines()), default=0)


_BINARY = frozenset({bytes, bytearray, memoryview})


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
