"""What a converted model folder held when it was built, and whether it still does.

The completion record, written last into the folder, lists each file's size, modification time and sha256.
At load a file that is missing or changed size is damage at once; one whose modification time changed is
hashed again: a different hash is damage, the same one is recorded (so the next load is cheap again). A folder
from before these records gets one on its first load, from the files as they are.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

MARKER = ".routesh-complete"  # its presence means "whole"; it holds the record
_CHUNK = 8 << 20


def write_record(folder: Path, *, source: str) -> None:
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MARKER):
        stat = path.stat()
        files[path.relative_to(folder).as_posix()] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                                                      "sha256": sha256_of(path)}
    _write(folder, {"source": source, "files": files})


def damage(folder: Path) -> str | None:
    """What is wrong with `folder` (one short phrase), or None when it is whole."""
    try:
        text = (folder / MARKER).read_text(encoding="utf-8")
    except OSError as err:
        return f"its completion record cannot be read ({err.strerror or err})"
    try:
        record = json.loads(text)
        files = record["files"]
    except (ValueError, KeyError, TypeError):  # a record from before sizes and hashes were kept
        write_record(folder, source=text.strip().removeprefix("converted from "))
        return None
    refreshed = False
    for name, expected in files.items():
        try:
            stat = (folder / name).stat()
        except OSError:
            return f"{name} is missing"
        if stat.st_size != expected["size"]:
            return f"{name} is {stat.st_size:,} bytes, not {expected['size']:,}"
        if stat.st_mtime_ns != expected["mtime_ns"]:
            if sha256_of(folder / name) != expected["sha256"]:
                return f"{name} was altered (its sha256 differs)"
            expected["mtime_ns"], refreshed = stat.st_mtime_ns, True
    if refreshed:
        _write(folder, record)
    return None


def sha256_of(*paths: Path, on_chunk: Callable[[bytes], None] | None = None) -> str:
    """The sha256 of the files' bytes, one after the other; `on_chunk` sees each chunk (a copy, a progress bar)."""
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
                if on_chunk is not None:
                    on_chunk(chunk)
    return digest.hexdigest()


def _write(folder: Path, record: dict) -> None:
    """Replace the record in one rename: a reader never sees half of it."""
    fd, tmp = tempfile.mkstemp(prefix=".record-", dir=folder)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(record, out, indent=1)
    os.replace(tmp, folder / MARKER)
