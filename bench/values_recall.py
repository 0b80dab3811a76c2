"""How well the `values` stage finds what the gold SQL compares with, no model needed: for each question
of a seeded sample, the gold query's string literals (LIKE's % stripped) that the database stores, and
whether the stage's matches hold them with the stored spelling. This is what its phrases and NEAR_CUTOFF
are tuned by, on spider-train (never dev).

    python bench/values_recall.py --data spider-train --limit 1000 --sample-seed 1
    python bench/values_recall.py --data spider-train --limit 1000 --near-cutoff 0.8 0.85 0.9

Reports, per cutoff: recall (gold literals matched / gold literals stored), the questions where a stored
literal is spelled differently in the question (the cases the stage exists for) and how many of those
it finds, matches per question, and the share of matches that are gold literals.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from sqlglot import exp

from routesh.db.values import ValueIndex, normalize
from routesh.evaluate.datasets import database_key, load_data, open_database
from routesh.pipeline import values
from routesh.pipeline.options import SCHEMA_SAMPLES
from routesh.sql.parse import tree


def gold_literals(sql: str, dialect: str) -> set[str]:
    parsed = tree(sql, dialect)
    if parsed is None:
        return set()
    found = {lit.this.strip("%") for lit in parsed.find_all(exp.Literal) if lit.is_string}
    return {f for f in found if f}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="spider-train")
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--sample-seed", type=int, default=1)
    parser.add_argument("--near-cutoff", type=float, nargs="+", default=[values.NEAR_CUTOFF])
    args = parser.parse_args()
    examples = [ex for ex in load_data(args.data) if ex.answerable]
    random.Random(args.sample_seed).shuffle(examples)
    examples = sorted(examples[: args.limit], key=database_key)
    indexes: dict[str, ValueIndex] = {}
    started = time.perf_counter()
    for ex in examples:
        if database_key(ex) not in indexes:
            db = open_database(ex)
            try:
                index = ValueIndex(db.introspect(samples=SCHEMA_SAMPLES))
                index.extend(db, budget_s=60)
            finally:
                db.close()
            indexes[database_key(ex)] = index
    print(f"{len(examples)} questions of {args.data} (seed {args.sample_seed}), {len(indexes)} databases indexed "
          f"in {time.perf_counter() - started:.1f} s")
    for cutoff in args.near_cutoff:
        values.NEAR_CUTOFF = cutoff
        stored = found = respelt = respelt_found = matched = gold_matched = 0
        per_question = []
        for ex in examples:
            index = indexes[database_key(ex)]
            literals = {lit for lit in gold_literals(ex.gold_sql, ex.dialect) if index.exact(normalize(lit))}
            matches = values.find(index, ex.question or "")
            shown = {m.stored.value for m in matches}
            per_question.append(len(matches))
            stored += len(literals)
            found += len(literals & shown)
            matched += len(shown)
            gold_matched += len(shown & literals)
            for lit in literals:
                if lit not in (ex.question or ""):
                    respelt += 1
                    respelt_found += lit in shown
        print(f"near cutoff {cutoff}: recall {found}/{stored} = {found / max(stored, 1):.1%}; "
              f"spelt otherwise in the question: {respelt_found}/{respelt} found; "
              f"matches per question: mean {statistics.mean(per_question):.2f}, "
              f"{gold_matched}/{matched} = {gold_matched / max(matched, 1):.1%} of the matched values are gold literals")


if __name__ == "__main__":
    main()
