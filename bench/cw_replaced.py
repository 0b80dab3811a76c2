"""Where continuation writing replaced the SQL in an earlier routesh-eval run, was the SQL it replaced right,
and is its completion? Offline, no model: the SQL before and after are judged against the gold as
routesh-eval judges the final SQL, counted apart for first turns and follow-ups and by what set CW off
("the SQL is hard": it ran; "the SQL fails"). Tune on spider-train or SParC's tuning turns, never on
the set that is reported.

    routesh-eval --data sparc-dev --stages sl,nc,cw --jobs 4 --out own.jsonl
    python bench/cw_replaced.py own.jsonl --data sparc-dev

A row "follow-up, the SQL is hard: 21 right before, 13 after; 0 of 29 wrong made right" reads: where CW's
completion was taken, 21 replaced answers were right and 13 of them still are.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from routesh.evaluate.datasets import load_data, open_database
from routesh.evaluate.runner import judge
from compare_receipts import read  # bench/, the script's own folder, is on sys.path
from vote_recount import winner

_WRITERS = ("ts", "fallback", "repair", "vote", "nc")  # stages whose accepted artifact is the SQL in hand


def replaced(receipt: dict) -> tuple[str, str | None] | None:
    """(what set CW off, the SQL it replaced) where CW's completion was taken; None elsewhere."""
    events = receipt["events"]
    taken = next((k for k, e in enumerate(events) if e["stage"] == "cw" and e["accepted"]), None)
    if taken is None:
        return None
    before = None
    for event in events[:taken]:
        if event["stage"] == "vote" and isinstance(event["artifact"], list):
            won = winner(event["artifact"])
            before = won["sql"] if won else before
        elif event["stage"] in _WRITERS and event["accepted"] and isinstance(event["artifact"], str):
            before = event["artifact"]
    return events[taken]["reason"].split(";")[0], before


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("receipts", type=Path, help="routesh-eval receipts (.jsonl or .jsonl.gz)")
    parser.add_argument("--data", default="spider-dev", help="the data set the run asked")
    args = parser.parse_args()
    examples = {ex.index: ex for ex in load_data(args.data)}
    counts: Counter[tuple[str, str, str]] = Counter()
    databases = {}
    for receipt in read(args.receipts).values():
        found = replaced(receipt)
        if found is None:
            continue
        trigger, before = found
        ex = examples[receipt["index"]]
        db = databases.get(ex.db_id) or databases.setdefault(ex.db_id, open_database(ex))
        was = before is not None and judge(ex, db, before)[0]
        kind = "follow-up" if receipt.get("turn") else "first turn" if receipt.get("turn") == 0 else "question"
        counts[(kind, trigger, "right before" if was else "wrong before")] += 1
        counts[(kind, trigger, "right after, right before" if was else "right after, wrong before")] += receipt["correct"]
    for db in databases.values():
        db.close()
    for kind, trigger in sorted({(k, t) for k, t, _ in counts}):
        c = {what: n for (k, t, what), n in counts.items() if (k, t) == (kind, trigger)}
        print(f"{kind}, {trigger}: {c.get('right before', 0)} right before, {c.get('right after, right before', 0)} "
              f"after; {c.get('right after, wrong before', 0)} of {c.get('wrong before', 0)} wrong made right")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
