"""Re-count the vote of a routesh-eval run for smaller K, offline: which K to ship, measured without
running the model again. Every candidate the vote saw is in its receipt (the `vote` event's artifact,
greedy first, then the samples in seed order, then the pseudo-SQL), so the vote with the first K of them
is exactly what a run with --vote-k K would have counted (the samples are seeded one by one). Each
distinct candidate is judged against the gold as routesh-eval judges the final SQL.

    routesh-eval --data spider-train --limit 80 --sample-seed 1 --stages sl,vote --vote-k 8 --out vote8.jsonl
    python bench/vote_recount.py vote8.jsonl --data spider-train --k 1 2 4 6 8

Reports, per K: the voted candidate's accuracy (before correction and continuation), the greedy
candidate's alone, the greedy one with the pseudo-SQL as its fallback (what the pipeline without the vote
takes into correction), how often any candidate was right (the ceiling), and accuracy by agreement.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

from routesh.evaluate.datasets import load_data, open_database
from routesh.evaluate.runner import judge
from routesh.pipeline.stages import Agreement, Stage
from routesh.pipeline.vote import GREEDY, PSEUDO, rank


def ballot(receipt: dict) -> list[dict] | None:
    return next((e["artifact"] for e in receipt["events"]
                 if e["stage"] == Stage.VOTE and isinstance(e["artifact"], list)), None)


def winner(candidates: list[dict], *, rows_first: bool = True) -> dict | None:
    """The vote over these candidates, as vote.count decides it (groups as the run found them);
    rows_first=False counts an empty result like any other (the plain majority, for comparison)."""
    groups: dict[int, list[dict]] = defaultdict(list)
    for c in candidates:
        groups[c["group"]].append(c)
    ran = [members for members in groups.values() if members[0]["ran"]]
    if not ran:
        return None
    best = max(ran, key=lambda m: rank(rows=bool(m[0]["rows"]) or not rows_first, votes=len(m),
                                       has_greedy=any(c["source"] == GREEDY for c in m),
                                       likelihood=sum(math.exp(c["logprob"]) for c in m if c["logprob"] is not None)))
    return max(best, key=lambda c: (c["source"] == GREEDY, c["logprob"] if c["logprob"] is not None else -math.inf))


def first_k(candidates: list[dict], k: int) -> list[dict]:
    """The greedy candidate and samples 1..k−1 (those that gave SQL), and the pseudo-SQL."""
    def number(c: dict) -> int:
        return 0 if c["source"] == GREEDY else int(c["source"].split()[-1])
    return [c for c in candidates if c["source"] == PSEUDO or number(c) < k]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("receipts", type=Path)
    parser.add_argument("--data", default="spider-train")
    parser.add_argument("--k", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--plain-majority", action="store_true",
                        help="count an empty result like any other (the vote prefers results with rows)")
    args = parser.parse_args()
    examples = {ex.index: ex for ex in load_data(args.data)}
    receipts = [json.loads(line) for line in args.receipts.read_text(encoding="utf-8").splitlines() if line.strip()]
    judged: list[tuple[dict, list[dict], dict[str, bool]]] = []
    for r in receipts:
        candidates = ballot(r)
        if candidates is None:
            continue
        ex = examples[r["index"]]
        db = open_database(ex)
        try:
            right = {c["sql"]: judge(ex, db, c["sql"])[0] if c["ran"] else False for c in candidates}
        finally:
            db.close()
        judged.append((r, candidates, right))
    n = len(judged)
    print(f"{args.receipts}: {n} questions with a vote")

    def share(count: int) -> str:
        return f"{count / n:6.1%} ({count}/{n})"

    greedy = sum(any(c["source"] == GREEDY and right[c["sql"]] for c in cands) for _, cands, right in judged)
    fallback = 0
    for _, cands, right in judged:
        g = next((c for c in cands if c["source"] == GREEDY), None)
        p = next((c for c in cands if c["source"] == PSEUDO), None)
        pseudo_better = p and p["ran"] and (p["rows"] or not (g and g["ran"]))  # as fall_back_to_pseudo decides
        take = g if g and g["ran"] and g["rows"] else (p if pseudo_better else g)
        fallback += bool(take and right[take["sql"]])
    print(f"greedy alone:                 {share(greedy)}")
    print(f"greedy, pseudo-SQL fallback:  {share(fallback)}")
    for k in args.k:
        voted = ceiling = 0
        by_agreement: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for _, cands, right in judged:
            chosen = first_k(cands, k)
            w = winner(chosen, rows_first=not args.plain_majority)
            ok = bool(w and right[w["sql"]])
            voted += ok
            ceiling += any(right[c["sql"]] for c in chosen)
            if w:
                votes = sum(c["group"] == w["group"] for c in chosen)
                level = "low" if Agreement(votes, len(chosen)).low else "high"
                by_agreement[level][0] += ok
                by_agreement[level][1] += 1
        honesty = ", ".join(f"{level} {right_}/{total}" for level, (right_, total) in sorted(by_agreement.items()))
        print(f"K={k:<2} voted: {share(voted)}   any right: {share(ceiling)}   by agreement: {honesty}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
