"""Run the pipeline over a data set and measure it: one JSONL receipt per question (written as it
goes, so a crashed run resumes where it stopped), then a summary."""

from __future__ import annotations

import json
import random
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from routesh.db.base import ExecOptions
from routesh.db.schema import Schema
from routesh.db.sqlite import SqliteDatabase
from routesh.engine.base import Engine
from routesh.errors import RoutesError
from routesh.evaluate.compare import order_matters, results_match
from routesh.evaluate.datasets import Example
from routesh.pipeline import sqlutil
from routesh.pipeline.pipeline import Pipeline, PipelineOptions

_COMPARE = ExecOptions(row_limit=100_000, timeout=60.0)


@dataclass
class Receipt:
    index: int
    db_id: str
    question: str
    gold_sql: str
    hardness: str
    predicted_sql: str | None
    correct: bool
    abstained: bool
    reason: str
    seconds: float
    tokens: int
    stages: str
    events: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None  # why the comparison itself failed (e.g. the gold query errored)


@dataclass
class Summary:
    total: int
    correct: int
    abstained: int
    by_hardness: dict[str, tuple[int, int]]  # level → (correct, total)
    stage_accepted: dict[str, tuple[int, int]]  # stage → (accepted, ran)
    median_seconds: float
    p90_seconds: float
    mean_tokens: float

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    def lines(self) -> list[str]:
        out = [f"execution accuracy: {self.accuracy:.1%} ({self.correct}/{self.total}); "
               f"abstained {self.abstained}"]
        for level in ("easy", "medium", "hard", "extra"):
            right, n = self.by_hardness.get(level, (0, 0))
            if n:
                out.append(f"  {level:6}: {right / n:6.1%} ({right}/{n})")
        for stage, (taken, ran) in sorted(self.stage_accepted.items()):
            out.append(f"  stage {stage:6}: accepted {taken}/{ran}")
        out.append(f"seconds per question: median {self.median_seconds:.2f}, p90 {self.p90_seconds:.2f}; "
                   f"tokens per question: {self.mean_tokens:.0f}")
        return out


def sample(examples: Sequence[Example], *, limit: int | None, seed: int | None) -> list[Example]:
    """The answerable examples (database present), then a seeded random sample or the first `limit`."""
    usable = [ex for ex in examples if ex.db_path is not None]
    if limit is None or limit >= len(usable):
        return usable
    if seed is None:
        return usable[:limit]
    chosen = random.Random(seed).sample(usable, limit)
    return sorted(chosen, key=lambda ex: ex.index)


def evaluate(examples: Iterable[Example], engine: Engine, *, options: PipelineOptions, out: Path | None,
             progress: Any = None) -> Summary:
    """Ask every question; skip those whose receipt `out` already holds."""
    done = load_receipts(out) if out else {}
    receipts = list(done.values())
    handle = _append(out) if out else None
    databases: dict[str, tuple[SqliteDatabase, Schema]] = {}  # opened and introspected once per run
    try:
        for ex in examples:
            if ex.index in done:
                if progress is not None:
                    progress.update(1)
                continue
            if ex.db_id not in databases:
                db = SqliteDatabase.open(ex.db_path)
                databases[ex.db_id] = (db, db.introspect(samples=5))
            receipt = ask_one(ex, *databases[ex.db_id], engine, options)
            receipts.append(receipt)
            if handle:
                handle.write(json.dumps(asdict(receipt), ensure_ascii=False, default=str) + "\n")
                handle.flush()
            if progress is not None:
                progress.update(1)
                correct = sum(r.correct for r in receipts)
                progress.set_postfix_str(f"EX {correct}/{len(receipts)}")
    finally:
        if handle:
            handle.close()
        for db, _ in databases.values():
            db.close()
    return summarize(receipts)


def ask_one(ex: Example, db: SqliteDatabase, schema: Schema, engine: Engine, options: PipelineOptions) -> Receipt:
    started = time.perf_counter()
    answer = Pipeline(engine, db, schema, options=options).ask(ex.question or "")
    seconds = time.perf_counter() - started
    correct, error = False, None
    if answer.sql is not None:
        try:
            gold = db.execute(ex.gold_sql, options=_COMPARE)
            predicted = db.execute(answer.sql, options=_COMPARE)
            correct = results_match(gold.rows, predicted.rows, ordered=order_matters(ex.gold_sql))
        except RoutesError as err:
            error = str(err)
    return Receipt(
        index=ex.index, db_id=ex.db_id, question=ex.question or "", gold_sql=ex.gold_sql,
        hardness=_level(ex.gold_sql), predicted_sql=answer.sql, correct=correct, abstained=answer.abstained,
        reason=answer.reason, seconds=round(seconds, 3), tokens=answer.tokens, stages=options.stages.label(),
        events=[e.as_dict() for e in answer.events], error=error,
    )


def summarize(receipts: Sequence[Receipt]) -> Summary:
    by_hardness: dict[str, list[int]] = {}
    stages: dict[str, list[int]] = {}
    for r in receipts:
        bucket = by_hardness.setdefault(r.hardness, [0, 0])
        bucket[0] += r.correct
        bucket[1] += 1
        for event in r.events:
            if event.get("stage") in ("sl", "fallback", "nc", "cw") and event.get("accepted") is not None:
                counts = stages.setdefault(event["stage"], [0, 0])
                counts[0] += bool(event["accepted"])
                counts[1] += 1
    seconds = sorted(r.seconds for r in receipts) or [0.0]
    return Summary(
        total=len(receipts), correct=sum(r.correct for r in receipts), abstained=sum(r.abstained for r in receipts),
        by_hardness={k: (v[0], v[1]) for k, v in by_hardness.items()},
        stage_accepted={k: (v[0], v[1]) for k, v in stages.items()},
        median_seconds=statistics.median(seconds), p90_seconds=seconds[min(len(seconds) - 1, int(0.9 * len(seconds)))],
        mean_tokens=statistics.mean(r.tokens for r in receipts) if receipts else 0.0,
    )


def _append(path: Path) -> Any:
    """Open for appending on a fresh line (a crash may have left half a line at the end)."""
    handle = path.open("a", encoding="utf-8")
    if path.stat().st_size and not path.read_bytes().endswith(b"\n"):
        handle.write("\n")
    return handle


def load_receipts(path: Path) -> dict[int, Receipt]:
    """Receipts already written; a last line cut short by a crash is ignored."""
    if not path.exists():
        return {}
    out: dict[int, Receipt] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        receipt = Receipt(**data)
        out[receipt.index] = receipt
    return out


def _level(sql: str) -> str:
    try:
        return sqlutil.hardness(sql, "sqlite").level
    except ValueError:
        return "unknown"
