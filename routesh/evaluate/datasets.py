"""Benchmark data sets: where they live and how to read them into Examples."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from routesh.errors import UsageError

DATA_ENV = "ROUTESH_DATA_DIR"
SPIDER_SPLITS = ("spider-dev", "spider-train")


@dataclass(frozen=True)
class Example:
    index: int
    db_id: str
    question: str | None  # None for train_others, whose questions are not in shared/data
    gold_sql: str
    db_path: Path | None  # None when the database file is missing (wta_1, baseball_1, soccer_1)


def data_dir() -> Path:
    """shared/data: $ROUTESH_DATA_DIR, else ../shared/data beside the repository or the working directory."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    repo = Path(__file__).resolve().parents[2]
    for candidate in (repo.parent / "shared" / "data", Path.cwd().parent / "shared" / "data", Path.cwd() / "shared" / "data"):
        if candidate.is_dir():
            return candidate
    raise UsageError(f"cannot find the benchmark data (shared/data); set {DATA_ENV}")


def load_spider(split: str) -> list[Example]:
    """Spider dev (1034) or train (7000 train_spider questions + 1659 train_others gold queries)."""
    root = data_dir() / "spider"
    if split == "spider-dev":
        items = [(e["db_id"], e["question"], e["query"]) for e in json.loads((root / "dev.json").read_text())]
    elif split == "spider-train":
        items = [(e["db_id"], e["question"], e["query"]) for e in json.loads((root / "train_spider.json").read_text())]
        gold_lines = [line for line in (root / "train_gold.sql").read_text().splitlines() if line.strip()]
        for line in gold_lines[len(items):]:  # train_others: SQL<TAB>db_id, no question here
            sql, db_id = line.rsplit("\t", 1)
            items.append((db_id.strip(), None, sql))
    else:
        raise UsageError(f"unknown Spider split {split!r}; choose {', '.join(SPIDER_SPLITS)}")
    return [Example(i, db_id, q, sql, _spider_db(root, db_id)) for i, (db_id, q, sql) in enumerate(items)]


def _spider_db(root: Path, db_id: str) -> Path | None:
    path = root / "database" / db_id / f"{db_id}.sqlite"
    return path if path.is_file() else None
