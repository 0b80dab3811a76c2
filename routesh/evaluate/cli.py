"""`routesh-eval`: measure the pipeline on a benchmark, or check a data set's gold SQL (--check-gold).

Execution accuracy, by Spider hardness or by the set's own categories, with JSONL receipts; --check-gold
runs every gold query through the read-only path instead (a check of the guard and of the data).

    routesh-eval --data spider-dev --limit 200 --sample-seed 7 --stages ts --out ts.jsonl
    routesh-eval --data spider-dev --limit 200 --sample-seed 7 --stages sl,nc,cw --out mcp.jsonl
    routesh-eval --data spider-dev --stages sl,nc,cw --jobs 4 --out dev.jsonl     # 4 questions at a time
    routesh-eval --data postgres-defog --start-pg --stages ts --out defog.jsonl
    routesh-eval --data postgres-defog --pg-dsn postgresql://postgres@localhost/postgres --check-gold
    routesh-eval --data my-questions.jsonl --stages ts
    routesh-eval --data ../shared/data/spider/dev.json --db-dir ../shared/data/spider/database --limit 20

--data is spider-dev, spider-train, postgres-defog, postgres-defog-instruct (104 other questions on 4 of
its databases, the set to tune PostgreSQL changes on) or a FILE: JSON (a list) or JSONL records with
question, query (gold SQL), db_id and db_path (a SQLite file, relative to FILE's folder) or dsn
(PostgreSQL), optional hint and category; without db_path/dsn, --db-dir DIR gives DIR/<db_id>/<db_id>.sqlite.
The postgres-defog sets need a PostgreSQL server: --pg-dsn ADMIN_DSN (a superuser, or a role that may create
databases: each needed database is loaded once as defog_<db> and reused afterwards) or --start-pg.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from tqdm import tqdm

from routesh.cancel import ignore_further_interrupts
from routesh.db.dsn import redact
from routesh.engine import ADAPTER_MODES, BACKENDS
from routesh.errors import RoutesError, UsageError
from routesh.logs import keep_libraries_quiet
from routesh.evaluate.datasets import CONTEXTS, DATA_SETS, DEFOG_SETS, Example, load_data
from routesh.evaluate.gold import check_gold
from routesh.evaluate.loo import leave_one_out
from routesh.pipeline.options import PipelineOptions
from routesh.pipeline.stages import DEFAULT_STAGES, StageConfig
from routesh.retrieval import METHODS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="routesh-eval", description=__doc__.splitlines()[0],
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="spider-dev", metavar="|".join((*DATA_SETS, "FILE")),
                        help="a data set or a JSON/JSONL file of examples (default spider-dev)")
    parser.add_argument("--db-dir", type=Path, help="with --data FILE: DIR/<db_id>/<db_id>.sqlite for records "
                                                   "without db_path or dsn (Spider's layout)")
    server = parser.add_mutually_exclusive_group()
    server.add_argument("--pg-dsn", metavar="ADMIN_DSN",
                        help="postgres-defog*: a superuser DSN; its databases are loaded there as defog_<db>")
    server.add_argument("--start-pg", action="store_true",
                        help="postgres-defog*: start a throwaway PostgreSQL server for this run (initdb; needs the "
                             "server binaries)")
    parser.add_argument("--check-gold", action="store_true", help="run the gold SQL through the read-only path")
    parser.add_argument("--model", help="as routesh --model (default: the embedded model)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto")
    parser.add_argument("--adapter", help="a LoRA adapter folder to apply to the model")
    parser.add_argument("--dtype", choices=("bfloat16", "float32", "int8"),
                        help="the weights in this process (default: bf16 where the CPU has bf16 instructions or on a "
                             "GPU, else float32); int8: every Linear quantized per output channel")
    parser.add_argument("--adapter-mode", choices=ADAPTER_MODES,
                        help="how the adapter is applied in this process: peft's layers, a side path, or merged "
                             "into the weights (float32 or bf16; docs/benchmarks.md compares them)")
    parser.add_argument("--stages", default=DEFAULT_STAGES,
                        help="collaboration stages besides text-to-SQL: 'ts' alone is plain prompting, 'sl,nc,cw' ROUTE's "
                             f"own (default {DEFAULT_STAGES}: every stage, as the shell)")
    parser.add_argument("--vote-k", type=int, default=PipelineOptions.vote_k, metavar="K",
                        help=f"with the vote stage: candidates per question (default {PipelineOptions.vote_k})")
    parser.add_argument("--vote-temperature", type=float, default=PipelineOptions.vote_temperature, metavar="T",
                        help=f"with the vote stage: sampling temperature (default {PipelineOptions.vote_temperature})")
    parser.add_argument("--memory", choices=("off", "loo", "loo-distinct"), default="off",
                        help="remembered queries: loo gives each question the other questions of its database in "
                             "the set, with their gold SQL, as what was asked before; loo-distinct leaves out those "
                             "whose SQL is the question's own gold (default off)")
    parser.add_argument("--memory-k", type=int, default=PipelineOptions.examples, metavar="K",
                        help=f"with --memory: examples shown per question (default {PipelineOptions.examples})")
    parser.add_argument("--memory-method", choices=METHODS, default="bm25",
                        help="with --memory: how the similar questions are found (default bm25)")
    parser.add_argument("--context", choices=CONTEXTS, default="own",
                        help="multi-turn data (sparc-dev, or FILE records with interaction_id and turn): each "
                             "follow-up is asked after the pipeline's own earlier SQL, as a user meets it (own); the "
                             "same only when its words lean on them, as the shell decides (cues); after the gold "
                             "earlier SQL (gold); or alone (none); default own")
    parser.add_argument("--limit", type=int, help="at most N answerable questions (multi-turn data: N interactions)")
    parser.add_argument("--sample-seed", type=int, help="with --limit: a random sample with this seed (else the first N)")
    parser.add_argument("--out", type=Path, help="JSONL receipts; an existing file is resumed")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="questions in flight at once, sharing the model (it batches their calls; default 1)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_libraries_quiet()  # library warnings and progress bars go to the log file; the progress bar is ours
    try:
        _check_arguments(args)
        with _postgres(args) as admin_dsn:
            return _check_gold(args, admin_dsn) if args.check_gold else _evaluate(args, admin_dsn)
    except RoutesError as err:
        print(f"routesh-eval: {err}", file=sys.stderr)
        return err.exit_code
    except ValueError as err:  # e.g. an unknown stage name
        print(f"routesh-eval: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        ignore_further_interrupts()
        where = f"; the receipts so far are in {args.out}, and the same command resumes" if args.out else ""
        print(f"\nroutesh-eval: interrupted{where}", file=sys.stderr)
        return 130


def _check_arguments(args: argparse.Namespace) -> None:
    is_file = args.data not in DATA_SETS
    if args.db_dir is not None and not is_file:
        raise UsageError("--db-dir applies to --data FILE only")
    if (args.pg_dsn or args.start_pg) and args.data not in DEFOG_SETS:
        raise UsageError(f"--pg-dsn and --start-pg apply to --data {' or '.join(DEFOG_SETS)} only "
                         "(a FILE record names its own dsn)")
    if args.data in DEFOG_SETS and not (args.pg_dsn or args.start_pg):
        raise UsageError(f"--data {args.data} needs a PostgreSQL server: pass --pg-dsn ADMIN_DSN or --start-pg")
    if args.limit is not None and args.limit < 0:
        raise UsageError("--limit must be 0 or more")
    if args.jobs < 1:
        raise UsageError("--jobs must be 1 or more")
    if args.vote_k < 1:
        raise UsageError("--vote-k must be 1 or more")
    if not 0 < args.vote_temperature <= 2:
        raise UsageError("--vote-temperature must be above 0 and at most 2")
    if args.memory_k < 1:
        raise UsageError("--memory-k must be 1 or more")


@contextlib.contextmanager
def _postgres(args: argparse.Namespace) -> Iterator[str | None]:
    """The admin DSN postgres-defog's databases go to: --pg-dsn, or a server --start-pg starts and stops."""
    if not args.start_pg:
        yield args.pg_dsn
        return
    from routesh.evaluate.pgserver import start_server

    print("starting a throwaway PostgreSQL server...", file=sys.stderr)
    try:
        server_cm = start_server()
        server = server_cm.__enter__()
    except (LookupError, RuntimeError, OSError) as err:
        raise UsageError(f"--start-pg: {' '.join(str(err).split())[:500]}") from None
    try:
        yield server.admin_dsn
    finally:
        server_cm.__exit__(None, None, None)


def _load(args: argparse.Namespace, admin_dsn: str | None, *, for_gold: bool) -> tuple[list[Example], list[Example]]:
    """(every example of the set, the ones to run) with the PostgreSQL databases they need loaded."""
    from routesh.evaluate.runner import sample

    everything = load_data(args.data, db_dir=args.db_dir)
    if for_gold:
        chosen = everything[: args.limit] if args.limit is not None else everything
    else:
        chosen = sample(everything, limit=args.limit, seed=args.sample_seed)
    if admin_dsn is not None:
        from routesh.evaluate.pgload import attach_databases

        chosen, loaded = attach_databases(chosen, admin_dsn)
        if loaded:
            print(f"PostgreSQL {redact(admin_dsn)}: "
                  + ", ".join(f"{v.database} ({v.action})" for v in loaded.values()), file=sys.stderr)
    return everything, chosen


def _evaluate(args: argparse.Namespace, admin_dsn: str | None) -> int:
    from routesh.engine import load_engine
    from routesh.evaluate.runner import evaluate

    options = PipelineOptions(stages=StageConfig.parse(args.stages), vote_k=args.vote_k,
                              vote_temperature=args.vote_temperature, examples=args.memory_k)
    everything, examples = _load(args, admin_dsn, for_gold=False)
    examples_for = (leave_one_out(everything, args.memory_method, distinct=args.memory == "loo-distinct")
                    if args.memory != "off" else None)
    skipped = sum(not ex.answerable for ex in everything)
    # stdout is the summary alone: whatever the model libraries print while loading or generating (e.g.
    # deepspeed's import-time warning, which accelerate triggers when deepspeed is installed) goes to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        # a server gets two requests in flight per question (linking and the pseudo-SQL go together)
        engine = load_engine(args.model, backend=args.backend, adapter=args.adapter,
                             concurrency=max(8, 2 * args.jobs), adapter_mode=args.adapter_mode, dtype=args.dtype)
        print(f"{args.data}: {len(examples)} questions"
              + (f" ({skipped} in the set have no database or question here and are never asked)" if skipped else "")
              + f"; model {engine.name}" + (f" + adapter {args.adapter}" if args.adapter else "")
              + f" ({engine.backend}); stages {options.stages.label()}"
              + (f"; {args.jobs} questions at a time" if args.jobs > 1 else "")
              + (f"; memory: {args.memory_k} examples by {args.memory_method}, {args.memory}"
                 if examples_for else "")
              + (f"; {interactions} interactions, follow-ups asked {_CONTEXT_SAID[args.context]}"
                 if (interactions := len({ex.interaction for ex in examples} - {None})) else ""))
        # closed on the way out, Ctrl-C included: the engine's decoding thread must stop before the
        # interpreter does, or the process aborts in the middle of a forward pass
        with contextlib.closing(engine), tqdm(total=len(examples), desc=_label(args.data), unit="q",
                                              file=sys.stderr) as bar:
            summary = evaluate(examples, engine, options=options, out=args.out, progress=bar, jobs=args.jobs,
                               examples_for=examples_for, context=args.context)
    print("\n".join(summary.lines()))
    return 0


def _check_gold(args: argparse.Namespace, admin_dsn: str | None) -> int:
    _, examples = _load(args, admin_dsn, for_gold=True)
    report = check_gold(tqdm(examples, desc=f"gold {_label(args.data)}", unit="q", file=sys.stderr),
                        timeout=args.timeout)
    counts = report.counts
    several = report.queries != report.questions
    print(f"{_label(args.data)}: {report.queries} gold queries"
          + (f" (the alternatives of {report.questions} questions)" if several else "")
          + f" — ran {counts['ran']}, "
          f"refused {counts['refused_guard'] + counts['refused_database']} "
          f"(guard {counts['refused_guard']}, database {counts['refused_database']}), "
          f"database errors {counts['error']}, timeouts {counts['timeout']}, missing database {counts['missing_db']}")
    if several:
        print(f"  questions whose every gold alternative ran: {report.questions_all_ran}/{report.questions}")
    for ex, why in report.refusals[:20]:
        print(f"  REFUSED #{ex.index} [{ex.db_id}] {why}: {ex.gold_sql}")
    for ex, why in report.errors[:20]:
        print(f"  ERROR   #{ex.index} [{ex.db_id}] {why}: {ex.gold_sql}")
    return 2 if report.refusals else 0


_CONTEXT_SAID = {"own": "after the pipeline's own earlier SQL", "cues": "after the pipeline's own earlier SQL when "
                 "their words lean on it", "gold": "after the gold earlier SQL", "none": "alone"}


def _label(data: str) -> str:
    return data if data in DATA_SETS else Path(data).name


if __name__ == "__main__":
    raise SystemExit(main())
