"""Exports of any size: routesh streaming CSV to a file, next to sqlite3 and psql, side by side.

    python bench/export.py                       # 2M and 20M rows, SQLite and PostgreSQL (a throwaway server)
    python bench/export.py --rows 2000000 --repeat 3 --no-pg

Each export writes CSV (with a header) of N generated rows, three columns (an integer, a text, a float), to a
file: on SQLite a recursive CTE run against concert_singer, on PostgreSQL generate_series. The tools run one
after another in turn, --repeat times each, as separate processes; for each the wall time (process start to
exit, so routesh's start-up is included) and the peak resident memory (the process's own maximum, from
wait4) are recorded, and the medians reported. Every output is checked to hold N data rows.

routesh runs `--sql ... --yes -f csv --row-limit 0` with its default statement timeout: streamed, the timeout
bounds each batch's fetch, not the export.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import cpu_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONCERT = REPO.parent / "shared" / "data" / "spider" / "database" / "concert_singer" / "concert_singer.sqlite"
ROUTESH = str(Path(sys.executable).with_name("routesh"))
GNU_TIME = "/usr/bin/time"


def sqlite_query(rows: int) -> str:
    return (f"WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < {rows}) "
            "SELECT n, 'row ' || n AS label, n * 0.5 AS half FROM r")


def postgres_query(rows: int) -> str:
    return f"SELECT n, 'row ' || n AS label, n * 0.5::float8 AS half FROM generate_series(1, {rows}) n"


@dataclass
class Run:
    seconds: float
    peak_mb: float


def run_to_file(argv: list[str], out: Path, env: dict[str, str]) -> Run:
    """One process with stdout to `out`; its wall time and its own peak RSS. GNU time reports the peak: a
    child forked straight from this Python process would count this process's memory as its own."""
    memory = out.with_suffix(".rss")
    started = time.perf_counter()
    with out.open("wb") as handle:
        done = subprocess.run([GNU_TIME, "-f", "%M", "-o", str(memory), *argv], stdout=handle, stderr=subprocess.PIPE,
                              env=env)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{argv[0]} failed: {done.stderr.decode(errors='replace').strip()[-500:]}")
    return Run(seconds, int(memory.read_text().split()[-1]) / 1024)  # %M is in KiB


def data_rows(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b"")) - 1  # minus the header


def tools_for_sqlite(rows: int) -> dict[str, list[str]]:
    query = sqlite_query(rows)
    return {
        "sqlite3 -csv": ["sqlite3", "-csv", "-header", str(CONCERT), query],
        "routesh": [ROUTESH, str(CONCERT), "--sql", query, "--yes", "-f", "csv", "--row-limit", "0"],
    }


def tools_for_postgres(rows: int, dsn: str) -> dict[str, list[str]]:
    query = postgres_query(rows)
    return {
        "psql \\copy": ["psql", "-X", "-q", dsn, "-c", f"\\copy ({query}) to stdout with (format csv, header)"],
        "psql --csv": ["psql", "-X", "-q", "--csv", dsn, "-c", query],
        "routesh": [ROUTESH, dsn, "--sql", query, "--yes", "-f", "csv", "--row-limit", "0"],
    }


def measure(tools: dict[str, list[str]], rows: int, workdir: Path, repeat: int, env: dict[str, str]) -> dict[str, list[Run]]:
    runs: dict[str, list[Run]] = {name: [] for name in tools}
    for attempt in range(repeat):
        for name, argv in tools.items():
            out = workdir / "export.csv"
            run = run_to_file(argv, out, env)
            got = data_rows(out)
            if got != rows:
                raise SystemExit(f"{name} wrote {got} rows, not {rows}")
            runs[name].append(run)
            print(f"  {name:<14} {rows:>10,} rows  try {attempt + 1}: {run.seconds:6.2f} s  {run.peak_mb:7.1f} MB",
                  file=sys.stderr, flush=True)
            out.unlink()
    return runs


def report(engine: str, rows: int, runs: dict[str, list[Run]], baseline: str) -> list[str]:
    base = statistics.median(r.seconds for r in runs[baseline])
    lines = []
    for name, tries in runs.items():
        seconds = statistics.median(r.seconds for r in tries)
        peak = statistics.median(r.peak_mb for r in tries)
        lines.append(f"| {engine} | {rows:,} | {name} | {seconds:.2f} s | {seconds / base:.2f}× | {peak:.0f} MB |")
    return lines


@contextlib.contextmanager
def postgres(enabled: bool) -> Iterator[str | None]:
    if not enabled:
        yield None
        return
    from routesh.evaluate.pgserver import start_server

    with start_server() as server:
        yield server.admin_dsn


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[2_000_000, 20_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-pg", action="store_true", help="SQLite only")
    args = parser.parse_args()
    for needed in (GNU_TIME, "sqlite3", *(() if args.no_pg else ("psql",))):
        if shutil.which(needed) is None:
            raise SystemExit(f"bench/export.py needs {needed} on PATH")
    env = {**os.environ, "ROUTESH_CONFIG": os.devnull}  # the defaults, whatever the user's config says
    table = ["| database | rows | tool | wall (median) | ratio | peak memory (median) |", "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="routesh-export-") as tmp, postgres(not args.no_pg) as dsn:
        workdir = Path(tmp)
        for rows in args.rows:
            runs = measure(tools_for_sqlite(rows), rows, workdir, args.repeat, env)
            table += report("SQLite", rows, runs, "sqlite3 -csv")
            if dsn:
                runs = measure(tools_for_postgres(rows, dsn), rows, workdir, args.repeat, env)
                table += report("PostgreSQL", rows, runs, "psql \\copy")
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; Python {platform.python_version()}; "
          f"repeat {args.repeat}; ratio against the first tool of each group")
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
