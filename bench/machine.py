"""What the benchmarks print about the machine they ran on."""

from __future__ import annotations

import contextlib
import platform
from pathlib import Path


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_line(*more: str) -> str:
    """`machine: <cpu>, N cores, python X, sqlite Y`, and `more` after a semicolon."""
    import os
    import sqlite3

    line = (f"machine: {cpu_model()}, {os.cpu_count()} cores, python {platform.python_version()}, "
            f"sqlite {sqlite3.sqlite_version}")
    return "; ".join((line, *more))
