"""Benchmark data sets: where they live and how to read them into Examples.

`--data` names one of DATA_SETS or a FILE (JSON or JSONL examples, see load_file)."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from routesh.db import Database, connect
from routesh.db.dsn import parse_dsn
from routesh.db.sqlite import SqliteDatabase
from routesh.errors import UsageError
from routesh.evaluate.alternatives import expand_gold

DATA_ENV = "ROUTESH_DATA_DIR"
SPIDER_SPLITS = ("spider-dev", "spider-train")
DEFOG = "postgres-defog"
DEFOG_TUNE = "postgres-defog-instruct"  # other questions on the same databases: tune PostgreSQL changes here
DEFOG_SETS = (DEFOG, DEFOG_TUNE)
SPARC = "sparc-dev"  # SParC's follow-up questions: the tuning subset of its dev set, over Spider's databases
DATA_SETS = (*SPIDER_SPLITS, *DEFOG_SETS, SPARC)
# how multi-turn data is asked: each follow-up after the pipeline's own earlier SQL; the same only when its words
# lean on them, as the shell decides (a line of its own starts a new topic); after the gold SQL; or alone
CONTEXTS = ("own", "cues", "gold", "none")


@dataclass(frozen=True)
class Example:
    index: int
    db_id: str
    question: str | None  # None for train_others, whose questions are not in shared/data
    gold_sql: str  # as the data set writes it (postgres-defog: a cell with alternatives)
    db_path: Path | None  # a SQLite file; None when it is missing (wta_1, baseball_1, soccer_1) or not SQLite
    dsn: str | None = None  # a PostgreSQL database (FILE records; postgres-defog once loaded on a server)
    hint: str | None = None  # extra instructions for the pipeline (postgres-defog's `instructions`)
    category: str | None = None  # postgres-defog's query_category (Spider hardness is computed instead)
    dialect: str = "sqlite"
    setup_sql: Path | None = None  # postgres-defog: the DDL+INSERT file that creates the database on a server
    golds: tuple[str, ...] = field(default=())  # the gold alternatives; () means just gold_sql
    # multi-turn data (SParC): the interaction this question is a turn of, the turn (from 0), and the earlier
    # turns' questions with their gold SQL
    interaction: int | None = None
    turn: int = 0
    earlier: tuple[tuple[str, str], ...] = ()

    @property
    def alternatives(self) -> tuple[str, ...]:
        return self.golds or (self.gold_sql,)

    @property
    def answerable(self) -> bool:
        """It has a question, and a database here (or one routesh-eval can load on a server)."""
        return self.question is not None and (
            self.db_path is not None or self.dsn is not None or self.setup_sql is not None)


def open_database(ex: Example) -> Database:
    """The example's database, read-only: its SQLite file, or its PostgreSQL DSN."""
    if ex.db_path is not None:
        return SqliteDatabase.open(ex.db_path)
    if ex.dsn is not None:
        return connect(ex.dsn)
    raise UsageError(f"example {ex.index} ({ex.db_id}) has no database here")


def database_key(ex: Example) -> str:
    """Which database an example runs on (to open each one once)."""
    return str(ex.db_path) if ex.db_path is not None else str(ex.dsn)


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


# ---- postgres-defog ---------------------------------------------------------------------------------

def defog_dir() -> Path:
    return data_dir() / "postgres-defog"


def load_defog(name: str = DEFOG) -> list[Example]:
    """defog sql-eval's 210 PostgreSQL questions over 11 databases (databases/<db>.sql), or with
    DEFOG_TUNE its 104 instruct_basic + instruct_advanced questions over 4 of them (a separate set to
    choose PostgreSQL prompts and repairs on, as Spider train is for Spider dev). The examples have no
    DSN yet: pgload.attach_databases loads their databases on a server and fills it in."""
    root = defog_dir()
    files = ("questions_gen_postgres.csv",) if name == DEFOG else (
        "instruct_basic_postgres.csv", "instruct_advanced_postgres.csv")
    rows = []
    for file in files:
        path = root / file
        if not path.is_file():
            raise UsageError(f"cannot find {path}")
        with path.open(newline="", encoding="utf-8") as handle:
            rows += list(csv.DictReader(handle))
    out = []
    for i, row in enumerate(rows):
        setup = root / "databases" / f"{row['db_name']}.sql"
        out.append(Example(
            index=i, db_id=row["db_name"], question=row["question"], gold_sql=row["query"], db_path=None,
            hint=(row.get("instructions") or "").strip() or None, category=row.get("query_category") or None,
            dialect="postgres", setup_sql=setup if setup.is_file() else None, golds=expand_gold(row["query"]),
        ))
    return out


# ---- FILE ---------------------------------------------------------------------------------------------

FILE_FIELDS = frozenset({"question", "query", "db_id", "db_path", "dsn", "hint", "category",
                         "interaction_id", "turn", "previous_questions", "previous_queries"})
_SPIDER_EXTRAS = frozenset({"query_toks", "query_toks_no_value", "question_toks", "sql"})  # dev.json's, ignored


def load_file(path: Path, *, db_dir: Path | None = None) -> list[Example]:
    """Examples from a JSON list or a JSONL file of records {question, query, db_id, db_path | dsn, hint?,
    category?}. db_path is a SQLite file relative to the file's folder; dsn a PostgreSQL DSN. Without
    either, --db-dir DIR gives DIR/<db_id>/<db_id>.sqlite (Spider's layout; a missing file there is
    skipped, as Spider's missing databases are). Spider's dev.json is such a file. Anything else is a
    UsageError naming the file and the record (counted from 1)."""
    path = Path(path)
    if db_dir is not None and not Path(db_dir).is_dir():
        raise UsageError(f"--db-dir {db_dir}: no such directory")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"{path}: cannot read it ({err})") from None
    return [_record(path, n, record, db_dir) for n, record in enumerate(_records(path, text), start=1)]


def _records(path: Path, text: str) -> list[object]:
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise UsageError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(data, list):
            raise UsageError(f"{path}: expected a JSON list of records")
        return data
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise UsageError(f"{path}: record {len(records) + 1} (line {number}) "
                             f"is not valid JSON ({err.msg})") from None
    if not records:
        raise UsageError(f"{path}: no records (expected a JSON list or one JSON object per line)")
    return records


def _record(path: Path, n: int, record: object, db_dir: Path | None) -> Example:
    where = f"{path}: record {n}"
    if not isinstance(record, dict):
        raise UsageError(f"{where}: expected an object, got {type(record).__name__}")
    unknown = sorted(set(record) - FILE_FIELDS - _SPIDER_EXTRAS)
    if unknown:
        raise UsageError(f"{where}: unknown field(s) {', '.join(unknown)}; "
                         f"expected {', '.join(sorted(FILE_FIELDS))}")
    missing = [name for name in ("question", "query", "db_id") if not _text(record.get(name))]
    if missing:
        raise UsageError(f"{where}: missing or empty field(s) {', '.join(missing)}")
    for name in ("db_path", "dsn", "hint", "category"):
        if record.get(name) is not None and not isinstance(record[name], str):
            raise UsageError(f"{where}: field {name} must be a string")
    db_id = record["db_id"]
    db_path, dsn, dialect = None, None, "sqlite"
    if record.get("db_path") and record.get("dsn"):
        raise UsageError(f"{where}: give db_path or dsn, not both")
    if record.get("db_path"):
        db_path = (path.parent / record["db_path"]).expanduser()
        if not db_path.is_file():
            raise UsageError(f"{where}: db_path {record['db_path']} is not a file "
                             f"(paths are relative to {path.parent})")
        db_path = db_path.resolve()
    elif record.get("dsn"):
        dsn = record["dsn"]
        dialect = parse_dsn(dsn).dialect
        if dialect == "sqlite":
            raise UsageError(f"{where}: dsn must name a PostgreSQL database (use db_path for a SQLite file)")
    elif db_dir is not None:
        candidate = Path(db_dir) / db_id / f"{db_id}.sqlite"
        db_path = candidate.resolve() if candidate.is_file() else None
    else:
        raise UsageError(f"{where}: no database: give db_path or dsn (or pass --db-dir for Spider's layout)")
    return Example(index=n - 1, db_id=db_id, question=record["question"], gold_sql=record["query"], db_path=db_path,
                   dsn=dsn, hint=_text(record.get("hint")), category=_text(record.get("category")), dialect=dialect,
                   **_turn_fields(where, record))


def _turn_fields(where: str, record: dict) -> dict:
    """A multi-turn record's interaction_id, turn and previous_questions/previous_queries (SParC's names)."""
    if record.get("interaction_id") is None:
        return {}
    interaction, turn = record["interaction_id"], record.get("turn", 0)
    earlier = list(zip(record.get("previous_questions") or [], record.get("previous_queries") or []))
    if not (isinstance(interaction, int) and isinstance(turn, int) and turn >= 0
            and all(isinstance(q, str) and isinstance(s, str) for q, s in earlier)):
        raise UsageError(f"{where}: interaction_id and turn must be whole numbers, previous_questions and "
                         "previous_queries lists of text")
    return {"interaction": interaction, "turn": turn, "earlier": tuple(earlier)}


def _text(value: object) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def load_data(name: str, *, db_dir: Path | None = None) -> list[Example]:
    """`--data`: a data set's name or a FILE."""
    if name in SPIDER_SPLITS:
        return load_spider(name)
    if name in DEFOG_SETS:
        return load_defog(name)
    if name == SPARC:
        return load_file(data_dir() / "sparc" / "sparc_dev_tuning.json", db_dir=data_dir() / "spider" / "database")
    path = Path(name).expanduser()
    if not path.is_file():
        raise UsageError(f"--data {name}: neither a data set ({', '.join(DATA_SETS)}) nor a file")
    return load_file(path, db_dir=db_dir)
