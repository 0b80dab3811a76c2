"""`routesh-eval`: measurements over benchmark data sets.

Today it checks gold SQL (--check-gold): every gold query of a split is classified by the guard and
run through the read-only path on its database. Execution accuracy of the model pipeline joins it
with the pipeline itself.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tqdm import tqdm

from routesh.errors import RoutesError, UsageError
from routesh.evaluate.datasets import SPIDER_SPLITS, load_spider
from routesh.evaluate.gold import check_gold


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="routesh-eval", description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=SPIDER_SPLITS, default="spider-dev")
    parser.add_argument("--check-gold", action="store_true", help="run the gold SQL through the read-only path")
    parser.add_argument("--limit", type=int, default=None, help="only the first N examples")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    try:
        if not args.check_gold:
            raise UsageError("nothing to do: pass --check-gold (pipeline evaluation is not available yet)")
        examples = load_spider(args.data)[: args.limit]
        report = check_gold(tqdm(examples, desc=f"gold {args.data}", unit="q", file=sys.stderr), timeout=args.timeout)
    except RoutesError as err:
        print(f"routesh-eval: {err}", file=sys.stderr)
        return err.exit_code
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
