"""Do two routesh-eval runs give the same final SQL? For refactorings that must not change behaviour
(greedy decoding makes the pipeline deterministic) and for runs that should differ only where expected.

    routesh-eval --data spider-dev --limit 20 --sample-seed 7 --stages sl,nc,cw --out before.jsonl   # old code
    routesh-eval --data spider-dev --limit 20 --sample-seed 7 --stages sl,nc,cw --out after.jsonl    # new code
    python bench/compare_receipts.py before.jsonl after.jsonl

Receipts are matched by question index; exit 0 when every question's final SQL (and verdict) is the same.
The last line counts the questions right in each and those gained and lost (the ablation tables' column).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path


def read(path: Path) -> dict[int, dict]:
    """Receipts by question index, from .jsonl or .jsonl.gz (as docs/results keeps them)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as lines:
        return {r["index"]: r for r in (json.loads(line) for line in lines if line.strip())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    before, after = read(args.before), read(args.after)
    common = sorted(set(before) & set(after))
    changed = [i for i in common if (before[i]["predicted_sql"], before[i]["correct"])
               != (after[i]["predicted_sql"], after[i]["correct"])]
    for i in changed:
        print(f"#{i} {before[i]['question']}\n  before: {before[i]['predicted_sql']}\n  after:  {after[i]['predicted_sql']}")
    only = sorted(set(before) ^ set(after))
    print(f"{len(common)} questions in both; {len(changed)} with different final SQL or verdict"
          + (f"; {len(only)} in only one file" if only else ""))
    gained = sum(after[i]["correct"] and not before[i]["correct"] for i in common)
    lost = sum(before[i]["correct"] and not after[i]["correct"] for i in common)
    right = (sum(before[i]["correct"] for i in common), sum(after[i]["correct"] for i in common))
    print(f"right: {right[0]} before, {right[1]} after; gained {gained}, lost {lost}")
    return 1 if changed or only else 0


if __name__ == "__main__":
    sys.exit(main())
