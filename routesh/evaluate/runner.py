"""Run the pipeline over a data set and measure it: one JSONL receipt per question (written as it
goes, so a crashed run resumes where it stopped), then a summary.

A question is correct when the predicted SQL's result matches the result of ANY of the example's gold
alternatives (one for Spider; postgres-defog's cells expand to several, see alternatives.py) under the
Spider test-suite rule of compare.results_match. Receipts also record `correct_subset`: the same with
extra predicted columns allowed (sql-eval's lenient "subset" rule), reported beside it for sets with
categories."""

from __future__ import annotations

import json
import random
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from routesh.cancel import CancelToken, interrupts_noted
from routesh.db.base import Database, ExecOptions
from routesh.db.schema import Schema
from routesh.db.values import ValueIndex
from routesh.engine.base import Engine
from routesh.errors import RoutesError, UsageError
from routesh.evaluate.compare import any_match
from routesh.evaluate.datasets import Example, database_key, open_database
from routesh.pipeline.options import SCHEMA_SAMPLES, PipelineOptions
from routesh.pipeline.pipeline import Pipeline
from routesh.pipeline.stages import REVISING, Agreement, Stage, StageEvent
from routesh.conversation import Conversation
from routesh.prompts import Turn
from routesh.retrieval import ExampleSource
from routesh.sql.hardness import hardness

_COMPARE = ExecOptions(row_limit=100_000, timeout=60.0)

_DECIDING = REVISING | {Stage.SL, Stage.VOTE}  # the steps whose accepted/rejected rate the summary reports


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
    # Added with postgres-defog; receipts written before have none of these and load with the defaults.
    category: str | None = None  # the data set's own category (postgres-defog's query_category)
    correct_subset: bool | None = None  # correct when extra predicted columns are allowed (sql-eval "subset")
    matched_alternative: int | None = None  # which gold alternative matched (0-based), when correct
    alternatives: int = 1  # how many gold alternatives the example has
    agreement: list[int] | None = None  # with `vote`: [candidates returning the answer's result, candidates]
    # multi-turn data: the interaction and turn, the predicted SQL's result columns (the next turn's context),
    # and what the turn was asked after (datasets.CONTEXTS)
    interaction: int | None = None
    turn: int | None = None
    columns: list[str] | None = None
    context: str | None = None


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
    by_category: dict[str, tuple[int, int]] = field(default_factory=dict)  # category → (correct, total)
    correct_subset: int = 0  # correct with extra predicted columns allowed
    crashed: int = 0  # questions the pipeline crashed on (receipts whose error starts with "crashed:")
    by_agreement: dict[str, tuple[int, int]] = field(default_factory=dict)  # "high"/"low" → (correct, total)
    by_turn: dict[int, tuple[int, int]] = field(default_factory=dict)  # multi-turn: turn → (correct, total)
    interactions: tuple[int, int] = (0, 0)  # multi-turn: (interactions with every turn right, interactions)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    def lines(self) -> list[str]:
        out = [f"execution accuracy: {self.accuracy:.1%} ({self.correct}/{self.total}); "
               f"abstained {self.abstained}"]
        if self.by_category:  # a set with its own categories (postgres-defog): those, not Spider hardness
            out.append(f"  lenient, extra predicted columns allowed (sql-eval subset): "
                       f"{self.correct_subset / self.total:.1%} ({self.correct_subset}/{self.total})")
            out.append("  by category:")
            for category, (right, n) in sorted(self.by_category.items()):
                out.append(f"  {category:14}: {right / n:6.1%} ({right}/{n})")
        else:
            for level in ("easy", "medium", "hard", "extra"):
                right, n = self.by_hardness.get(level, (0, 0))
                if n:
                    out.append(f"  {level:6}: {right / n:6.1%} ({right}/{n})")
        for stage, (taken, ran) in sorted(self.stage_accepted.items()):
            out.append(f"  stage {stage:6}: accepted {taken}/{ran}")
        for level, (right, n) in sorted(self.by_agreement.items()):
            out.append(f"  {level} agreement: {right / n:6.1%} ({right}/{n})")
        if self.interactions[1]:
            right, n = self.interactions
            out.append(f"  interactions with every turn right: {right / n:6.1%} ({right}/{n})")
            for turn, (right, n) in sorted(self.by_turn.items()):
                out.append(f"  turn {turn + 1}: {right / n:6.1%} ({right}/{n})")
        if self.crashed:
            out.append(f"  crashed (counted wrong; see the receipts' error): {self.crashed}")
        out.append(f"seconds per question: median {self.median_seconds:.2f}, p90 {self.p90_seconds:.2f}; "
                   f"tokens per question: {self.mean_tokens:.0f}")
        return out


def sample(examples: Sequence[Example], *, limit: int | None, seed: int | None) -> list[Example]:
    """The answerable examples (a question and a database), then a seeded random sample or the first `limit`.
    Multi-turn data is sampled by interaction: `limit` interactions, each with all its turns."""
    usable = [ex for ex in examples if ex.answerable]
    units = list(_interactions(usable).values()) if any(ex.interaction is not None for ex in usable) else [
        [ex] for ex in usable]
    if limit is not None and limit < len(units):
        units = units[:limit] if seed is None else random.Random(seed).sample(units, limit)
    return sorted((ex for unit in units for ex in unit), key=lambda ex: ex.index)


def _interactions(examples: Iterable[Example]) -> dict[object, list[Example]]:
    """Examples grouped by interaction (a question without one is its own), each group in turn order."""
    groups: dict[object, list[Example]] = {}
    for ex in examples:
        groups.setdefault(ex.interaction if ex.interaction is not None else ("single", ex.index), []).append(ex)
    return {key: sorted(group, key=lambda ex: ex.turn) for key, group in groups.items()}


def evaluate(examples: Iterable[Example], engine: Engine, *, options: PipelineOptions, out: Path | None,
             progress: Any = None, jobs: int = 1,
             examples_for: Callable[[Example], ExampleSource] | None = None, context: str = "own") -> Summary:
    """Ask every question, `jobs` at a time (each on its own thread, all sharing the engine, which
    batches their model calls); skip those whose receipt `out` already holds. Receipts are written as
    questions finish, each with its index, so a run stopped at any point resumes. `examples_for` gives a
    question its remembered queries (--memory loo). The turns of an interaction (multi-turn data) run in
    order on one thread, each asked after the earlier turns as `context` says (datasets.CONTEXTS); its receipts are
    written when the interaction ends, so a stopped run resumes from the interactions that did not."""
    examples = list(examples)
    done = load_receipts(out) if out else {}
    _check_resumable(out, done, examples)
    receipts = list(done.values())
    units = [unit for unit in _interactions(examples).values() if any(ex.index not in done for ex in unit)]
    todo = [ex for unit in units for ex in unit]
    if progress is not None and (already := sum(ex.index in done for ex in examples)):
        progress.update(already)
    handle = _append(out) if out else None
    databases = _Databases()
    tokens = {ex.index: CancelToken() for ex in todo}
    pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="routesh-eval")
    # Ctrl-C is noted and polled for, not raised mid-wait (cancel.interrupts_noted says why): the questions
    # in flight are cancelled and waited for, and a second Ctrl-C cannot leave while they still run.
    with interrupts_noted() as interrupts:
        try:
            order = {pool.submit(_ask_interaction, unit, done, databases, engine, options, tokens, examples_for,
                                 context): n for n, unit in enumerate(units)}
            pending = set(order)
            while pending and not interrupts:
                finished, pending = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
                # A set's order is arbitrary: those that finished together are written in the order asked,
                # so one job at a time writes its receipts in the data set's order.
                for future in sorted(finished, key=order.__getitem__):
                    for receipt in future.result():
                        receipts.append(receipt)
                        if handle:
                            handle.write(json.dumps(asdict(receipt), ensure_ascii=False, default=str) + "\n")
                            handle.flush()
                        if progress is not None:
                            progress.update(1)
                            correct = sum(r.correct for r in receipts)
                            progress.set_postfix_str(f"EX {correct}/{len(receipts)}")
            if interrupts:
                raise KeyboardInterrupt
        except BaseException:  # Ctrl-C or a crash: stop the questions in flight, start no more
            for token in tokens.values():
                token.cancel()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            if handle:
                handle.close()
            databases.close()
    return summarize(receipts)


class _Databases:
    """Each database introspected once per run, and each thread with a connection of its own (a slow
    query holds up only the question that sent it). A thread keeps one connection open, to the database
    of its latest question: questions come grouped by database, and a server's connections stay at
    most one per job."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._schemas: dict[str, Schema] = {}
        self._values: dict[str, ValueIndex] = {}  # one per database, shared by the threads asking of it
        self._open: dict[int, tuple[str, Database]] = {}  # thread → (database key, its connection)

    def get(self, ex: Example) -> tuple[Database, Schema, ValueIndex]:
        where, thread = database_key(ex), threading.get_ident()
        with self._lock:
            held = self._open.get(thread)
            if held is None or held[0] != where:
                if held is not None:
                    held[1].close()
                self._open[thread] = held = (where, open_database(ex))
            if where not in self._schemas:
                self._schemas[where] = held[1].introspect(samples=SCHEMA_SAMPLES)
                self._values[where] = ValueIndex(self._schemas[where])
            return held[1], self._schemas[where], self._values[where]

    def close(self) -> None:
        with self._lock:
            for _, db in self._open.values():
                db.close()
            self._open.clear()


def _ask_interaction(unit: list[Example], done: dict[int, Receipt], databases: _Databases, engine: Engine,
                     options: PipelineOptions, tokens: dict[int, CancelToken],
                     examples_for: Callable[[Example], ExampleSource] | None, context: str) -> list[Receipt]:
    """The turns of one interaction (a single question: one turn), in order; the receipts of those not done."""
    new: list[Receipt] = []
    conversation = Conversation()  # the pipeline's own turns so far: what the next turn is asked after
    for ex in unit:
        receipt = done.get(ex.index)
        if receipt is None:
            tokens[ex.index].check()  # cancelled before its turn came
            db, schema, value_index = databases.get(ex)
            asked_after = _asked_after(context, conversation, ex, db)
            receipt = ask_one(ex, db, schema, engine, options, cancel=tokens[ex.index], value_index=value_index,
                              examples=examples_for(ex) if examples_for else None, context=asked_after,
                              context_kind=context if ex.interaction is not None else None)
            new.append(receipt)
        elif context == "cues":
            conversation.ask_with(ex.question or "")  # a resumed run: the topic as it was decided then
        if receipt.predicted_sql is not None:
            conversation.add(receipt.question, receipt.predicted_sql, receipt.columns or ())
    return new


def _asked_after(context: str, conversation: Conversation, ex: Example, db: Database) -> tuple[Turn, ...]:
    """The turns `ex` is asked after, as `context` (datasets.CONTEXTS) says."""
    if context == "own":
        return tuple(conversation.turns)
    if context == "cues":
        return conversation.ask_with(ex.question or "")
    return _gold_turns(ex, db) if context == "gold" else ()


def _gold_turns(ex: Example, db: Database) -> tuple[Turn, ...]:
    """The earlier turns as the data set has them, each with its gold SQL's result columns."""
    out = []
    for question, sql in ex.earlier:
        try:
            columns = tuple(db.execute(sql, options=ExecOptions(row_limit=1, timeout=_COMPARE.timeout)).columns)
        except RoutesError:
            columns = ()
        out.append(Turn(question, sql, columns))
    return tuple(out)


def ask_one(ex: Example, db: Database, schema: Schema, engine: Engine, options: PipelineOptions, *,
            cancel: CancelToken | None = None, value_index: ValueIndex | None = None,
            examples: ExampleSource | None = None, context: Sequence[Turn] = (),
            context_kind: str | None = None) -> Receipt:
    started = time.perf_counter()
    events: list[Any] = []  # what was done before a crash, for its receipt
    try:
        answer = Pipeline(engine, db, schema, options=options, value_index=value_index, examples=examples).ask(
            ex.question or "", ex.hint, cancel=cancel,
            on_event=lambda e: events.append(e) if isinstance(e, StageEvent) else None, context=context)
    except RecursionError:
        # sqlglot recurses past Python's limit on some degenerate model output (e.g. FLOOR( repeated a few
        # hundred times). That is a bug outside this module; record the question as wrong and go on.
        return _crashed(ex, options, events, time.perf_counter() - started, "RecursionError in the pipeline")
    seconds = time.perf_counter() - started
    correct, subset, matched, error = False, False, None, None
    if answer.sql is not None:
        correct, subset, matched, error = judge(ex, db, answer.sql)
    return Receipt(
        index=ex.index, db_id=ex.db_id, question=ex.question or "", gold_sql=ex.gold_sql,
        hardness=_level(ex.alternatives[0], ex.dialect), predicted_sql=answer.sql, correct=correct,
        abstained=answer.abstained, reason=answer.reason, seconds=round(seconds, 3), tokens=answer.tokens,
        stages=options.stages.label(), events=[e.as_dict() for e in answer.events], error=error,
        category=ex.category, correct_subset=subset, matched_alternative=matched, alternatives=len(ex.alternatives),
        agreement=[answer.agreement.votes, answer.agreement.candidates] if answer.agreement else None,
        interaction=ex.interaction, turn=ex.turn if ex.interaction is not None else None,
        columns=list(answer.result.columns) if answer.result is not None else None, context=context_kind,
    )


def _crashed(ex: Example, options: PipelineOptions, events: list[Any], seconds: float, why: str) -> Receipt:
    return Receipt(
        index=ex.index, db_id=ex.db_id, question=ex.question or "", gold_sql=ex.gold_sql,
        hardness=_level(ex.alternatives[0], ex.dialect), predicted_sql=None, correct=False, abstained=False,
        reason=f"crashed: {why}", seconds=round(seconds, 3), tokens=0, stages=options.stages.label(),
        events=[e.as_dict() for e in events], error=f"crashed: {why}", category=ex.category, correct_subset=False,
        alternatives=len(ex.alternatives), interaction=ex.interaction,
        turn=ex.turn if ex.interaction is not None else None,
    )


def judge(ex: Example, db: Database, predicted_sql: str) -> tuple[bool, bool, int | None, str | None]:
    """(correct, correct with extra columns allowed, the matching alternative, why the comparison failed).
    A gold alternative that fails to run is skipped; the error is reported only when none matched."""
    try:
        predicted = db.execute(predicted_sql, options=_COMPARE).rows
    except RoutesError as err:
        return False, False, None, f"predicted: {err}"
    golds, problems = [], []
    for k, sql in enumerate(ex.alternatives):
        try:
            golds.append((sql, db.execute(sql, options=_COMPARE).rows))
        except RoutesError as err:
            problems.append(f"gold alternative {k + 1}: {err}" if len(ex.alternatives) > 1 else str(err))
            golds.append((sql, None))
    ran = [(k, g) for k, g in enumerate(golds) if g[1] is not None]
    strict = any_match([g for _, g in ran], predicted)
    if strict is not None:
        return True, True, ran[strict][0], None
    lenient = any_match([g for _, g in ran], predicted, extra_columns=True) is not None
    return False, lenient, None, "; ".join(problems) or None


def summarize(receipts: Sequence[Receipt]) -> Summary:
    by_hardness: dict[str, list[int]] = {}
    stages: dict[str, list[int]] = {}
    for r in receipts:
        bucket = by_hardness.setdefault(r.hardness, [0, 0])
        bucket[0] += r.correct
        bucket[1] += 1
        for event in r.events:
            if event.get("stage") in _DECIDING and event.get("accepted") is not None:
                counts = stages.setdefault(event["stage"], [0, 0])
                counts[0] += bool(event["accepted"])
                counts[1] += 1
    seconds = sorted(r.seconds for r in receipts) or [0.0]
    by_category: dict[str, list[int]] = {}
    categorised = any(r.category for r in receipts)
    by_agreement: dict[str, list[int]] = {}
    for r in receipts:
        if r.agreement and not r.abstained:
            bucket = by_agreement.setdefault("low" if Agreement(*r.agreement).low else "high", [0, 0])
            bucket[0] += r.correct
            bucket[1] += 1
        if categorised:
            bucket = by_category.setdefault(r.category or "(none)", [0, 0])
            bucket[0] += r.correct
            bucket[1] += 1
    by_turn: dict[int, list[int]] = {}
    every_turn_right: dict[int, bool] = {}
    for r in receipts:
        if r.interaction is not None and r.turn is not None:
            bucket = by_turn.setdefault(r.turn, [0, 0])
            bucket[0] += r.correct
            bucket[1] += 1
            every_turn_right[r.interaction] = every_turn_right.get(r.interaction, True) and r.correct
    return Summary(
        by_turn={k: (v[0], v[1]) for k, v in by_turn.items()},
        interactions=(sum(every_turn_right.values()), len(every_turn_right)),
        total=len(receipts), correct=sum(r.correct for r in receipts), abstained=sum(r.abstained for r in receipts),
        by_hardness={k: (v[0], v[1]) for k, v in by_hardness.items()},
        by_category={k: (v[0], v[1]) for k, v in by_category.items()},
        by_agreement={k: (v[0], v[1]) for k, v in by_agreement.items()},
        crashed=sum(bool(r.error and r.error.startswith("crashed:")) for r in receipts),
        correct_subset=sum(bool(r.correct if r.correct_subset is None else r.correct_subset) for r in receipts),
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


_RECEIPT_FIELDS = {f.name for f in fields(Receipt)}


def load_receipts(path: Path) -> dict[int, Receipt]:
    """Receipts already written; a last line cut short by a crash is ignored. Older receipts (without
    the fields added since) load with their defaults; fields this version does not know are dropped."""
    if not path.exists():
        return {}
    out: dict[int, Receipt] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(data, dict):
            continue
        try:
            receipt = Receipt(**{k: v for k, v in data.items() if k in _RECEIPT_FIELDS})
        except TypeError:  # a line missing required fields: not a receipt
            continue
        out[receipt.index] = receipt
    return out


def _check_resumable(out: Path | None, done: dict[int, Receipt], examples: Sequence[Example]) -> None:
    """Resuming into receipts of another data set would silently mix them: refuse."""
    for ex in examples:
        receipt = done.get(ex.index)
        if receipt is not None and (receipt.db_id, receipt.question) != (ex.db_id, ex.question or ""):
            raise UsageError(f"{out} holds receipts of another data set (receipt {ex.index} is about "
                             f"{receipt.db_id!r}, not {ex.db_id!r}); use another --out")


def _level(sql: str, dialect: str = "sqlite") -> str:
    try:
        return hardness(sql, dialect).level
    except ValueError:
        return "unknown"
