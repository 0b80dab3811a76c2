"""The four ROUTE task datasets (MSFT), built from Spider train and rendered only through routesh.prompts.

For every (question, gold SQL) pair that survives the noisy-pair filter (filter.py):

TS  text-to-SQL, twice, because the pipeline asks it on two schema texts (and for some questions again: with
    remembered queries, as a follow-up, or on a reduced schema with extra tables, `distractors`):
      "full":    the pseudo-SQL call of step 1 — schema_texts.full_text, the same text schema linking sees;
      "reduced": the generation of step 3 — schema_texts.reduced_text(..., keep=K, ...) where K is what
                 step 2 makes of a perfect linking: the gold
                 query's tables and columns (`*` = every column), plus the tables on the foreign-key paths
                 joining them (the pipeline's bridge).
SL  schema linking on the full schema text; target prompts.sl_reply(the gold query's tables/columns as
    routesh.sql.usage.tables_and_columns reads them, through aliases). Pairs whose gold uses a column that cannot be
    attributed to a table give no SL example (counted).
NC  noise correction on the reduced schema text (K ∪ the candidate's own tables/columns, bridged, as
    step 2 merges the linking with the pseudo-SQL), with the candidate's real execution feedback
    (the pipeline's own trial run and Trial.feedback, cut to its preview: error text or result summary):
      positives ("correct"): the gold query; the model's own generations that return the gold result;
      negatives ("wrong, the correct SQL is: <gold>"): typed corruptions of the gold (corrupt.py) and
      the model's generations whose result differs from the gold's.
CW  continuation writing on the reduced schema text from a clause-boundary prefix of the gold
    (routesh.sql.truncate at the pipeline's cw_fraction, plus other truncation_points); target: the whole
    gold query in a ```sql block, which is what the pipeline extracts (routesh.sql.extract.extract_sql) and runs.

Gold SQL is used with Spider's stray spacing tidied (`avg(age) ,  min(age)` → `avg(age), min(age)`),
at token boundaries only, so it runs exactly as written. Everything is deterministic given the seed:
examples go in index order, every random choice comes from an RNG seeded by (seed, example, purpose).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlglot.tokens import TokenType

import routesh.prompts
from routesh import prompts
from routesh.db.schema import Schema
from routesh.db.sqlite import SqliteDatabase
from routesh.db.values import ValueIndex
from routesh.engine.base import ChatRequest, Engine, GenerationParams
from routesh.evaluate.datasets import Example, data_dir, load_spider
from routesh.evaluate.loo import leave_one_out
from routesh.pipeline import linking, schema_texts, values
from routesh.pipeline.linking import ReducedSchema, reduced_keep
from routesh.pipeline.options import SCHEMA_SAMPLES, SQL_STOP, PipelineOptions
from routesh.pipeline.stages import Stage
from routesh.pipeline.trial import Trial
from routesh.prompts import Turn
from routesh.retrieval import ExampleSource
from routesh.sql import extract as sql_extract
from routesh.sql import truncate as sql_truncate
from routesh.sql import usage as sql_usage
from routesh.sql.extract import extract_sql
from routesh.sql.parse import squash, tokenize, validate
from routesh.sql.truncate import truncate, truncation_points
from routesh.sql.usage import Usage, tables_and_columns

from finetune import corrupt
from finetune.filter import DROP_REASONS, execute, gold_drop_reason, same_result
from finetune.followups import earlier_turns

TASKS = (Stage.TS, Stage.SL, Stage.NC, Stage.CW)  # the four task files, in this order
DIALECT = "sqlite"
_MODEL_STAGES = frozenset({Stage.PSEUDO, Stage.TS, Stage.FALLBACK, Stage.NC, Stage.CW, Stage.FINAL})  # may carry SQL


@dataclass(frozen=True)
class SynthOptions:
    seed: int = 0
    limit: int | None = None  # a seeded sample of this many Spider train examples
    ts_schemas: tuple[str, ...] = ("full", "reduced")
    cw_per_question: int = 2  # the pipeline's own cut plus (n-1) other clause boundaries
    corruptions_per_question: int = 1  # NC negatives made from the gold, per question
    corruption_tries: int = 6  # corruptions executed at most per question to find them
    corruption_timeout: float = 2.0  # seconds; a corruption that runs longer is discarded, never used
    # every schema text shows the question's words matched to stored values, as the pipeline's `values`
    # stage (in the default stages) shows them: matched values first among their columns' examples
    values: bool = True
    # databases kept out of the data, seeded: their questions go to held_out.json, a tuning set from Spider
    # train that no training item has shown (Spider dev is for reporting, never for choosing)
    held_out_databases: int = 0
    # questions that also get a TS item (kind reduced_memory) showing remembered queries, as the pipeline shows
    # them: the other questions of the database, leave one out, the pipeline's K most similar by BM25
    memory_fraction: float = 1 / 3
    # questions that also get a TS item (kind reduced_follow_up) asked after another question of the database
    # whose SQL theirs extends, with its gold SQL and columns, as the pipeline asks a follow-up (followups.py)
    follow_up_fraction: float = 1 / 4
    # questions that also get a TS item (kind reduced_noisy) whose reduced schema keeps tables the gold does not
    # use, as step 2 does when linking or the pseudo-SQL names more than needed (a third of questions on the
    # tuning receipts; without such items the adapter learned to join every table it is shown)
    noisy_fraction: float = 1 / 3
    pipeline: PipelineOptions = field(default_factory=PipelineOptions)

    def card(self) -> dict[str, Any]:
        out = asdict(self)
        out["pipeline"] = {k: v for k, v in asdict(self.pipeline).items() if k != "stages"}
        return out


# ---- the reduced schema, as the pipeline's step 2 makes it ---------------------------------------


def usage_keep(schema: Schema, usage: Usage) -> ReducedSchema:
    """A usage as step 2 reads it: schema spellings, `*` = every column of its table."""
    return linking.known_columns(schema, usage.as_linking())


# Extra tables a reduced schema kept beyond the gold's, measured on the pipeline's merge step over 300 tuning
# questions (train200-all, heldout100-mix2-all): of those with extras, 3 in 5 had one, 1 in 5 two, 1 in 5 three
# or more; 76% of the extras were foreign-key neighbours of a gold table; 44% kept no column, 32% one.
_EXTRA_TABLES = (1, 1, 1, 2, 3)
_EXTRA_COLUMNS = (0, 0, 0, 0, 1, 1, 1, 2, 3)
_NEIGHBOUR_SHARE = 0.75


def distractors(schema: Schema, keep: ReducedSchema, rng: random.Random) -> ReducedSchema:
    """Tables the gold does not use, as step 2 keeps them by mistake: mostly foreign-key neighbours of the kept
    tables, with none or a few of their columns. Empty when the schema has no other table."""
    graph = linking.foreign_key_graph(schema)
    kept = {schema.table(name).display_name for name in keep if schema.table(name) is not None}
    others = [t for t in schema.tables if t.display_name not in kept]
    if not others:
        return {}
    near = set().union(*(graph[name] for name in kept))
    neighbours = [t for t in others if t.display_name in near]
    rest = [t for t in others if t.display_name not in near]
    out: ReducedSchema = {}
    for _ in range(min(len(others), rng.choice(_EXTRA_TABLES))):
        pool = neighbours if neighbours and (not rest or rng.random() < _NEIGHBOUR_SHARE) else rest
        table = pool.pop(rng.randrange(len(pool)))
        columns = [c.name for c in table.columns]
        out[table.display_name] = set(rng.sample(columns, min(len(columns), rng.choice(_EXTRA_COLUMNS))))
    return out


# ---- gold SQL -----------------------------------------------------------------------------------------


def tidy_sql(sql: str, dialect: str = DIALECT) -> str:
    """Spider's gold with its spacing tidied at token boundaries: one space between tokens, none
    before `,` or `)` or after `(`; no trailing `;`. Literals and quoted names are kept verbatim."""
    text = sql.strip().rstrip(";").strip()
    tokens = tokenize(text, dialect, partial=False)  # [] when it does not tokenize: keep it as written
    if not tokens:
        return text
    out = [text[tokens[0].start: tokens[0].end + 1]]
    for a, b in zip(tokens, tokens[1:]):
        gap = text[a.end + 1: b.start]
        if gap.strip():  # a comment: keep as written
            out.append(gap)
        elif gap:
            tight = b.token_type in (TokenType.COMMA, TokenType.R_PAREN) or a.token_type == TokenType.L_PAREN
            out.append("" if tight else " ")
        out.append(text[b.start: b.end + 1])
    return "".join(out) + text[tokens[-1].end + 1:].rstrip()


# ---- records ----------------------------------------------------------------------------------------


def record(task: Stage, request: ChatRequest, target: str, ex: Example, kind: str) -> dict[str, Any]:
    messages = request.as_dicts() + [{"role": "assistant", "content": target}]
    return {"task": str(task), "messages": messages, "db_id": ex.db_id, "source_index": ex.index, "kind": kind}


@dataclass
class _Db:
    db: SqliteDatabase
    schema: Schema
    values: ValueIndex | None  # the whole database's stored values (None: SynthOptions.values is off)


class Synthesizer:
    """Builds every task's records for one example at a time; keeps the counts for the card."""

    def __init__(self, options: SynthOptions, *, model_candidates: Mapping[int, Sequence[str]] | None = None,
                 generator: Engine | None = None, generate_for: set[int] | None = None,
                 judge: Engine | None = None, examples_for: Callable[[Example], ExampleSource] | None = None,
                 earlier_for: Callable[[Example], Example | None] | None = None):
        self.options = options
        self.examples_for = examples_for
        self.earlier_for = earlier_for
        self.model_candidates = model_candidates or {}
        self.generator = generator
        self.generate_for = generate_for or set()
        self.judge = judge
        self.counts: Counter[str] = Counter()  # "task" and "task:kind"
        self.dropped: Counter[str] = Counter()
        self.notes: Counter[str] = Counter()  # everything else worth saying on the card
        self.missing_dbs: Counter[str] = Counter()
        self.corruption_kinds: Counter[str] = Counter()  # accepted so far: the next question tries the rarest first
        self._dbs: dict[str, _Db] = {}

    def close(self) -> None:
        for entry in self._dbs.values():
            entry.db.close()
        self._dbs.clear()

    def database(self, ex: Example) -> _Db:
        entry = self._dbs.get(ex.db_id)
        if entry is None:
            assert ex.db_path is not None
            db = SqliteDatabase.open(ex.db_path)
            schema = db.introspect(samples=SCHEMA_SAMPLES)
            index = None
            if self.options.values:  # all of it: the pipeline's time budget is about slow servers, not Spider
                index = ValueIndex(schema)
                index.extend(db, budget_s=float("inf"))
            entry = self._dbs[ex.db_id] = _Db(db, schema, index)
        return entry

    def shown(self, entry: _Db, question: str) -> tuple[Schema, ReducedSchema]:
        """The schema as the pipeline shows it for `question` (its stored-value matches first among their
        columns' examples) and the matched columns, which the reduced schema keeps where it keeps their table."""
        if entry.values is None:
            return entry.schema, {}
        matches = values.find(entry.values, question)
        if matches:
            self.notes["questions_with_value_matches"] += 1
        return values.with_matches(entry.schema, matches), values.matched_columns(matches)

    def rng(self, ex: Example, purpose: str) -> random.Random:
        return random.Random(f"{self.options.seed}:{ex.index}:{purpose}")

    # -- one example --

    def build(self, ex: Example) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {task: [] for task in TASKS}
        reason = self._precheck(ex)
        if reason:
            self.dropped[reason] += 1
            return out
        opts, popts = self.options, self.options.pipeline
        entry = self.database(ex)
        question = ex.question or ""
        db, (schema, matched) = entry.db, self.shown(entry, question)
        gold = tidy_sql(ex.gold_sql)
        gold_run = execute(db, gold, timeout=popts.timeout)
        reason = gold_drop_reason(gold_run)
        usage = tables_and_columns(gold, DIALECT, schema)
        if reason is None and usage.error:
            reason = "gold_unparsed"
        if reason is None and self.judge is not None and not self._judge_accepts(ex, schema, gold, gold_run, usage,
                                                                                  matched):
            reason = "judged_wrong"
        if reason:
            self.dropped[reason] += 1
            return out
        self.notes["pairs_kept"] += 1

        gold_keep = usage_keep(schema, usage)
        full_text = schema_texts.full_text(schema, question, popts)
        reduced_text = self._reduced_text(schema, question, matched, gold_keep)

        # TS
        for variant in opts.ts_schemas:
            text = full_text if variant == "full" else reduced_text
            self._add(out, record(Stage.TS, prompts.ts_prompt(text, DIALECT, question, ex.hint),
                                  prompts.sql_reply(gold), ex, variant))
        if self.rng(ex, "noisy").random() < opts.noisy_fraction:
            extra = distractors(schema, reduced_keep(schema, gold_keep), self.rng(ex, "distractors"))
            if extra:
                text = self._reduced_text(schema, question, matched, gold_keep, extra)
                self._add(out, record(Stage.TS, prompts.ts_prompt(text, DIALECT, question, ex.hint),
                                      prompts.sql_reply(gold), ex, "reduced_noisy"))
        if self.examples_for is not None and self.rng(ex, "memory").random() < opts.memory_fraction:
            shown = self.examples_for(ex).similar(question, popts.examples)
            if shown:
                self._add(out, record(Stage.TS, prompts.ts_prompt(reduced_text, DIALECT, question, ex.hint, shown),
                                      prompts.sql_reply(gold), ex, "reduced_memory"))
        if self.earlier_for is not None and self.rng(ex, "follow-up").random() < opts.follow_up_fraction:
            before = self.earlier_for(ex)
            turn = self._turn(db, before) if before is not None else None
            if turn is not None:  # the reduced schema keeps what the earlier SQL used, as step 2 does
                before_keep = usage_keep(schema, tables_and_columns(turn.sql, DIALECT, schema))
                text = self._reduced_text(schema, question, matched, gold_keep, before_keep)
                self._add(out, record(Stage.TS, prompts.ts_prompt(text, DIALECT, question, ex.hint, context=(turn,)),
                                      prompts.sql_reply(gold), ex, "reduced_follow_up"))
        # SL
        if usage.unresolved or usage.unknown_tables:
            self.notes["sl_skipped_unresolved_columns"] += 1
        else:
            self._add(out, record(Stage.SL, prompts.sl_prompt(full_text, DIALECT, question, ex.hint),
                                  prompts.sl_reply(usage.as_linking()), ex, "gold"))
        # NC: the gold itself, corruptions of it, the model's own generations
        self._add(out, self._nc(ex, schema, question, gold, gold_keep, gold_run, matched=matched, correct=True,
                                gold=gold, kind="gold"))
        for kind, sql, run in self._corruptions(ex, db, schema, gold, gold_run):
            self._add(out, self._nc(ex, schema, question, sql, gold_keep, run, matched=matched, correct=False,
                                    gold=gold, kind=kind))
        for sql in self._model_sql(ex, schema, question, full_text, reduced_text):
            if squash(sql) == squash(gold) or squash(sql) == squash(ex.gold_sql):
                self.notes["model_sql_same_as_gold"] += 1
                continue
            run = execute(db, sql, timeout=popts.timeout)
            same = same_result(gold_run, run, gold)
            if same is None:
                self.notes["model_sql_undecidable"] += 1
                continue
            self._add(out, self._nc(ex, schema, question, sql, gold_keep, run, matched=matched, correct=same, gold=gold,
                                    kind="model_correct" if same else "model_wrong"))
        # CW
        for kind, prefix in self._prefixes(ex, gold):
            self._add(out, record(Stage.CW, prompts.cw_prompt(reduced_text, DIALECT, question, prefix, ex.hint),
                                  prompts.sql_reply(gold), ex, kind))
        return out

    def _turn(self, db: SqliteDatabase, before: Example) -> Turn | None:
        """The earlier question as a turn of the conversation: its gold SQL, and its result's columns."""
        sql = tidy_sql(before.gold_sql)
        run = execute(db, sql, timeout=self.options.pipeline.timeout)
        return Turn(before.question or "", sql, tuple(run.result.columns)) if run.ran and run.result else None

    def _precheck(self, ex: Example) -> str | None:
        if ex.question is None:
            return "no_question"
        if ex.db_path is None:
            self.missing_dbs[ex.db_id] += 1
            return "missing_database"
        return None

    def _add(self, out: dict[str, list[dict[str, Any]]], rec: dict[str, Any]) -> None:
        out[rec["task"]].append(rec)
        self.counts[rec["task"]] += 1
        self.counts[f"{rec['task']}:{rec['kind']}"] += 1

    def _reduced_text(self, schema: Schema, question: str, matched: ReducedSchema, *keeps: ReducedSchema) -> str:
        """Step 2's reduced schema: `keeps` bridged, with the matched columns of the tables kept."""
        keep = linking.with_matched(reduced_keep(schema, *keeps), matched)
        return schema_texts.reduced_text(schema, question, keep, self.options.pipeline)

    def _nc(self, ex: Example, schema: Schema, question: str, sql: str, gold_keep: ReducedSchema, run: Trial, *,
            matched: ReducedSchema, correct: bool, gold: str, kind: str) -> dict[str, Any]:
        own = usage_keep(schema, tables_and_columns(sql, DIALECT, schema))
        text = self._reduced_text(schema, question, matched, gold_keep, own)
        feedback = run.feedback(schema, self.options.pipeline.preview_rows)
        request = prompts.nc_prompt(text, DIALECT, question, sql, feedback, ex.hint)
        return record(Stage.NC, request, prompts.nc_reply(correct, None if correct else gold), ex, kind)

    def _corruptions(self, ex: Example, db: SqliteDatabase, schema: Schema, gold: str,
                     gold_run: Trial) -> Iterator[tuple[str, str, Trial]]:
        want = self.options.corruptions_per_question
        if want <= 0:
            return
        rng = self.rng(ex, "corrupt")
        corrupter = corrupt.Corrupter(gold, schema, DIALECT)
        # the kinds accepted least so far go first (ties in a seeded order): a balanced mix overall
        order = sorted(corrupt.KINDS, key=lambda k: (self.corruption_kinds[k], rng.random()))
        tries = found = 0
        seen = {squash(gold)}
        for kind in order:
            if found >= want or tries >= self.options.corruption_tries:
                break
            for sql in corrupter.candidates(kind, rng)[:2]:
                if squash(sql) in seen:
                    continue
                seen.add(squash(sql))
                tries += 1
                run = execute(db, sql, timeout=min(self.options.corruption_timeout, self.options.pipeline.timeout))
                same = same_result(gold_run, run, gold)
                if same is None:
                    self.notes["corruption_undecidable"] += 1
                    continue
                if same:
                    self.notes["corruption_same_result"] += 1
                    continue
                self.corruption_kinds[kind] += 1
                self.notes["corruption_fails" if not run.ran else "corruption_runs"] += 1
                found += 1
                yield kind, sql, run
                break
        if found < want:
            self.notes["questions_short_of_corruptions"] += 1

    def _model_sql(self, ex: Example, schema: Schema, question: str, full_text: str, reduced_text: str) -> list[str]:
        found = list(self.model_candidates.get(ex.index, ()))
        if self.generator is not None and ex.index in self.generate_for:
            params = GenerationParams(max_new_tokens=self.options.pipeline.sql_tokens, stop=SQL_STOP)
            requests = [prompts.ts_prompt(full_text, DIALECT, question, ex.hint),
                        prompts.ts_prompt(reduced_text, DIALECT, question, ex.hint)]
            for completion in self.generator.generate(requests, params):
                self.notes["generations"] += 1
                sql = extract_sql(completion.text, DIALECT)
                if sql is None:
                    self.notes["generations_without_sql"] += 1
                else:
                    found.append(sql)
        unique: dict[str, str] = {}
        for sql in found:
            unique.setdefault(squash(sql), sql.strip().rstrip(";").strip())
        return [unique[k] for k in sorted(unique)]

    def _prefixes(self, ex: Example, gold: str) -> list[tuple[str, str]]:
        want = self.options.cw_per_question
        if want <= 0:
            return []
        out: list[tuple[str, str]] = []
        half = truncate(gold, DIALECT, fraction=self.options.pipeline.cw_fraction)
        if half.strip():
            out.append(("pipeline_cut", half))
        points = truncation_points(gold, DIALECT)
        others = [gold[:p].rstrip() for p in points]
        others = [p for p in dict.fromkeys(others) if p.strip() and p != half]
        self.rng(ex, "cw").shuffle(others)
        out += [("clause_cut", p) for p in others[: max(0, want - len(out))]]
        return out

    def _judge_accepts(self, ex: Example, schema: Schema, gold: str, gold_run: Trial, usage: Usage,
                       matched: ReducedSchema) -> bool:
        """The optional model check of ROUTE's noisy-correspondence filtering: shown the gold query
        and its result with the NC prompt, does the model call it wrong?"""
        assert self.judge is not None
        popts = self.options.pipeline
        text = self._reduced_text(schema, ex.question or "", matched, usage_keep(schema, usage))
        request = prompts.nc_prompt(text, DIALECT, ex.question or "", gold, gold_run.feedback(schema, popts.preview_rows),
                                    ex.hint)
        reply = self.judge.generate([request], GenerationParams(max_new_tokens=popts.sql_tokens, stop=SQL_STOP))[0]
        verdict = prompts.parse_nc_verdict(reply.text)
        self.notes[{True: "judge_said_correct", False: "judge_said_wrong", None: "judge_said_neither"}[verdict]] += 1
        return verdict is not False


# ---- model generations from receipts ---------------------------------------------------------------


def receipt_candidates(path: Path, examples: Sequence[Example]) -> tuple[dict[int, list[str]], dict[str, int]]:
    """SQL the model wrote for Spider train questions, read from routesh-eval receipts: the final
    answer and every SQL a stage produced. A receipt is matched to a train example by database,
    question and gold SQL, so receipts of another split (dev!) never leak into the training data."""
    key_of = {(ex.db_id, (ex.question or "").strip(), squash(ex.gold_sql)): ex.index
              for ex in examples if ex.question is not None}
    found: dict[int, list[str]] = {}
    stats: Counter[str] = Counter()
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            stats["unreadable_lines"] += 1
            continue
        stats["receipts"] += 1
        index = key_of.get((data.get("db_id"), str(data.get("question", "")).strip(), squash(data.get("gold_sql", ""))))
        if index is None:
            stats["not_in_spider_train"] += 1
            continue
        stats["matched"] += 1
        sqls = [data.get("predicted_sql")]
        sqls += [e.get("artifact") for e in data.get("events", []) if e.get("stage") in _MODEL_STAGES
                 and not str(e.get("summary", "")).startswith("no SQL")]  # a cw event without SQL holds its prefix
        for sql in sqls:
            if isinstance(sql, str) and sql.strip() and validate(sql, DIALECT) is None:
                found.setdefault(index, []).append(sql)
                stats["sql_found"] += 1
    return found, dict(stats)


# ---- the command ---------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def choose(examples: Sequence[Example], limit: int | None, seed: int) -> list[Example]:
    if limit is None or limit >= len(examples):
        return list(examples)
    return sorted(random.Random(f"{seed}:limit").sample(list(examples), limit), key=lambda e: e.index)


def build_dataset(out_dir: Path, options: SynthOptions, *, examples: Sequence[Example] | None = None,
                  receipts: Path | None = None, generator_spec: str | None = None, negatives_limit: int = 200,
                  judge_spec: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Write out_dir/{ts,sl,nc,cw}.jsonl and out_dir/card.json; returns the card."""
    from tqdm import tqdm

    started = time.time()
    everything = list(examples) if examples is not None else load_spider("spider-train")
    held = held_out(everything, options.held_out_databases, options.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    held_questions = _write_held_out(out_dir / HELD_OUT_FILE, [ex for ex in everything if ex.db_id in held])
    everything = [ex for ex in everything if ex.db_id not in held]  # not even as another question's memory
    chosen = choose(everything, options.limit, options.seed)

    model_candidates: dict[int, list[str]] = {}
    receipt_stats: dict[str, int] = {}
    if receipts is not None:
        model_candidates, receipt_stats = receipt_candidates(receipts, everything)
    generator = judge = None
    generate_for: set[int] = set()
    if generator_spec:
        from routesh.engine import load_engine

        generator = load_engine(generator_spec, progress=progress)
        eligible = [ex for ex in chosen if ex.question is not None and ex.db_path is not None]
        generate_for = {ex.index for ex in choose(eligible, negatives_limit, options.seed + 1)}
    if judge_spec:
        from routesh.engine import load_engine

        judge = generator if judge_spec == generator_spec and generator else load_engine(judge_spec, progress=progress)

    synth = Synthesizer(options, model_candidates=model_candidates, generator=generator,
                        generate_for=generate_for, judge=judge, examples_for=leave_one_out(everything, "bm25"),
                        earlier_for=earlier_turns(everything))
    handles = {task: (out_dir / f"{task}.jsonl").open("w", encoding="utf-8") for task in TASKS}
    try:
        bar = tqdm(chosen, desc="spider-train", unit="q", disable=not progress, dynamic_ncols=True)
        for ex in bar:
            for task, records in synth.build(ex).items():
                for rec in records:
                    handles[task].write(json.dumps(rec, ensure_ascii=False) + "\n")
            bar.set_postfix_str(" ".join(f"{t}={synth.counts[t]}" for t in TASKS) + f" dropped={sum(synth.dropped.values())}",
                                refresh=False)
    finally:
        for handle in handles.values():
            handle.close()
        synth.close()
        for engine in {id(e): e for e in (generator, judge) if e is not None}.values():
            engine.close()

    card = _card(out_dir, options, everything, chosen, synth, receipts, receipt_stats, generator_spec,
                 negatives_limit if generator_spec else 0, judge_spec, time.time() - started)
    card["held_out"] = {"databases": sorted(held), "questions": held_questions, "file": HELD_OUT_FILE}
    (out_dir / "card.json").write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return card


HELD_OUT_FILE = "held_out.json"


def held_out(examples: Sequence[Example], n: int, seed: int) -> set[str]:
    """`n` databases, a seeded choice among those with questions and a file."""
    candidates = sorted({ex.db_id for ex in examples if ex.question is not None and ex.db_path is not None})
    if n <= 0:
        return set()
    if n >= len(candidates):
        raise ValueError(f"--held-out-databases {n}: only {len(candidates)} databases have questions")
    return set(random.Random(f"{seed}:held-out").sample(candidates, n))


def _write_held_out(path: Path, examples: Sequence[Example]) -> int:
    """Spider's own record shape: `routesh-eval --data FILE --db-dir ../shared/data/spider/database` asks them.
    Returns how many were written."""
    records = [{"db_id": ex.db_id, "question": ex.question, "query": ex.gold_sql}
               for ex in examples if ex.question is not None and ex.db_path is not None]
    path.write_text(json.dumps(records, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return len(records)


def _card(out_dir: Path, options: SynthOptions, everything: Sequence[Example], chosen: Sequence[Example],
          synth: Synthesizer, receipts: Path | None, receipt_stats: Mapping[str, int], generator_spec: str | None,
          negatives_limit: int, judge_spec: str | None, seconds: float) -> dict[str, Any]:
    spider = data_dir() / "spider"
    sources: dict[str, Any] = {name: {"path": str(spider / name), "sha256": sha256_file(spider / name)}
                               for name in ("train_spider.json", "train_gold.sql")}
    used = sorted({ex.db_id for ex in chosen if ex.db_path is not None})
    db_hashes = {db_id: sha256_file(spider / "database" / db_id / f"{db_id}.sqlite") for db_id in used}
    sources["databases"] = {"count": len(db_hashes),
                            "sha256": hashlib.sha256(json.dumps(db_hashes, sort_keys=True).encode()).hexdigest(),
                            "files": db_hashes}
    if receipts is not None:
        sources["receipts"] = {"path": str(receipts), "sha256": sha256_file(receipts), **receipt_stats}
    files = {task: {"examples": synth.counts[task], "sha256": sha256_file(out_dir / f"{task}.jsonl")} for task in TASKS}
    by_kind: dict[str, dict[str, int]] = {}
    for key, n in sorted(synth.counts.items()):
        if ":" in key:
            task, kind = key.split(":", 1)
            by_kind.setdefault(task, {})[kind] = n
    missing = sorted(synth.missing_dbs)
    return {
        "format": "routesh-finetune-data/1",
        "dataset": "spider-train",
        "seed": options.seed,
        "options": options.card(),
        "sources": sources,
        "prompts": {
            "routesh.prompts sha256": sha256_file(Path(routesh.prompts.__file__)),
            # the SQL modules that shape targets: what is extracted, linked and cut
            "routesh.sql.extract sha256": sha256_file(Path(sql_extract.__file__)),
            "routesh.sql.usage sha256": sha256_file(Path(sql_usage.__file__)),
            "routesh.sql.truncate sha256": sha256_file(Path(sql_truncate.__file__)),
            "finetune.corrupt sha256": sha256_file(Path(corrupt.__file__)),
        },
        "examples": {"in_dataset": len(everything), "considered": len(chosen),
                     "pairs_kept": synth.notes["pairs_kept"]},
        "counts": {task: synth.counts[task] for task in TASKS},
        "counts_by_kind": by_kind,
        "dropped": {reason: synth.dropped[reason] for reason in DROP_REASONS if synth.dropped[reason]},
        "missing_databases": {"questions_skipped": sum(synth.missing_dbs.values()), "databases": missing,
                              "by_database": dict(sorted(synth.missing_dbs.items()))},
        "notes": dict(sorted(synth.notes.items())),
        "corruption_kinds": dict(sorted(synth.corruption_kinds.items())),
        "model_negatives": {"generator": generator_spec, "negatives_limit": negatives_limit, "judge": judge_spec},
        "files": files,
        "seconds": round(seconds, 1),
    }


def read_records(path: Path) -> Iterable[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)
