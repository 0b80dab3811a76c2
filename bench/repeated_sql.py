"""Follow-ups answered with the SQL of an earlier turn: how many, and how many of those were right with the
conversation against the same turns asked alone. Offline, from two routesh-eval runs of multi-turn data;
tune on SParC's tuning turns.

    routesh-eval --data sparc-dev --stages sl,nc,cw --jobs 4 --context own --out own.jsonl
    routesh-eval --data sparc-dev --stages sl,nc,cw --jobs 4 --context none --out none.jsonl
    python bench/repeated_sql.py own.jsonl none.jsonl

Since the pipeline asks such a follow-up again on its own, a run of today's code shows the copies that stayed
(those whose second asking wrote no SQL).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from compare_receipts import read  # bench/, the script's own folder, is on sys.path
from routesh.sql.parse import same_sql


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("with_context", type=Path, help="receipts of the run with the conversation")
    parser.add_argument("alone", type=Path, help="receipts of the same turns asked alone (--context none)")
    args = parser.parse_args()
    own, alone = read(args.with_context), read(args.alone)
    turns = {(r["interaction"], r["turn"]): r for r in own.values()}
    copies = right = right_alone = 0
    for index, receipt in own.items():
        sql = receipt["predicted_sql"]
        if not receipt["turn"] or not sql:
            continue
        earlier = [turns[(receipt["interaction"], t)]["predicted_sql"] for t in range(receipt["turn"])]
        if any(e and same_sql(sql, e) for e in earlier):
            copies += 1
            right += receipt["correct"]
            right_alone += alone[index]["correct"]
    follow_ups = sum(1 for r in own.values() if r["turn"])
    print(f"{copies} of {follow_ups} follow-ups repeat an earlier turn's SQL: {right} right with the conversation, "
          f"{right_alone} of the same turns right alone")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
