"""`routesh-eval`: measure the pipeline on a benchmark (execution accuracy, by Spider hardness, with
receipts), or check a data set's gold SQL against the read-only path (--check-gold).

    routesh-eval --data spider-dev --limit 200 --sample-seed 7 --stages ts --out ts.jsonl
    routesh-eval --data spider-dev --limit 200 --sample-seed 7 --stages sl,nc,cw --out mcp.jsonl
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from routesh.errors import RoutesError, UsageError
from routesh.evaluate.datasets import SPIDER_SPLITS, load_spider
from routesh.evaluate.gold import check_gold


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="routesh-eval", description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=SPIDER_SPLITS, default="spider-dev")
    parser.add_argument("--check-gold", action="store_true", help="run the gold SQL through the read-only path")
    parser.add_argument("--model", help="as routesh --model (default: the embedded model)")
    parser.add_argument("--backend", choices=("auto", "transformers", "vllm"), default="auto")
    parser.add_argument("--adapter", help="a LoRA adapter folder to apply to the model")
    parser.add_argument("--stages", default="sl,nc,cw",
                        help="collaboration stages besides text-to-SQL: 'ts' alone is plain prompting (default sl,nc,cw)")
    parser.add_argument("--limit", type=int, help="at most N answerable questions")
    parser.add_argument("--sample-seed", type=int, help="with --limit: a random sample with this seed (else the first N)")
    parser.add_argument("--out", type=Path, help="JSONL receipts; an existing file is resumed")
    parser.add_argument("--timeout", type=float, default=30.0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _check_gold(args) if args.check_gold else _evaluate(args)
    except RoutesError as err:
        print(f"routesh-eval: {err}", file=sys.stderr)
        return err.exit_code
    except ValueError as err:  # e.g. an unknown stage name
        print(f"routesh-eval: {err}", file=sys.stderr)
        return 1


def _evaluate(args: argparse.Namespace) -> int:
    from routesh.engine import load_engine
    from routesh.evaluate.runner import evaluate, sample
    from routesh.pipeline.pipeline import PipelineOptions
    from routesh.pipeline.stages import StageConfig

    options = PipelineOptions(stages=StageConfig.parse(args.stages))
    everything = load_spider(args.data)
    examples = sample(everything, limit=args.limit, seed=args.sample_seed)
    skipped = sum(ex.db_path is None for ex in everything)
    engine = load_engine(args.model, backend=args.backend, adapter=args.adapter)
    print(f"{args.data}: {len(examples)} questions"
          + (f" ({skipped} in the set have no database here and are never asked)" if skipped else "")
          + f"; model {engine.name} ({engine.backend}); stages {options.stages.label()}", file=sys.stderr)
    with tqdm(total=len(examples), desc=args.data, unit="q", file=sys.stderr) as bar:
        summary = evaluate(examples, engine, options=options, out=args.out, progress=bar)
    print("\n".join(summary.lines()))
    return 0


def _check_gold(args: argparse.Namespace) -> int:
    examples = load_spider(args.data)[: args.limit]
    report = check_gold(tqdm(examples, desc=f"gold {args.data}", unit="q", file=sys.stderr), timeout=args.timeout)
    counts = report.counts
    print(f"{args.data}: {len(examples)} gold queries — ran {counts['ran']}, "
          f"refused {counts['refused_guard'] + counts['refused_database']} "
          f"(guard {counts['refused_guard']}, database {counts['refused_database']}), "
          f"database errors {counts['error']}, timeouts {counts['timeout']}, missing database {counts['missing_db']}")
    for ex, why in report.refusals[:20]:
        print(f"  REFUSED #{ex.index} [{ex.db_id}] {why}: {ex.gold_sql}")
    for ex, why in report.errors[:20]:
        print(f"  ERROR   #{ex.index} [{ex.db_id}] {why}: {ex.gold_sql}")
    return 2 if report.refusals else 0


if __name__ == "__main__":
    raise SystemExit(main())
