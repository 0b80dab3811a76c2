"""Does a line continue the conversation? routesh.conversation.is_follow_up, measured without a model.

    python bench/followups.py                  # SParC's follow-ups against Spider train's questions (tuning)
    python bench/followups.py --standalone spider-dev   # the report: against Spider dev's questions

Follow-ups: every turn after the first of SParC's tuning subset (../shared/data/sparc/), each of which leans on
the turns before it (SParC's annotators wrote them as a conversation). Standalone: SParC's first turns and the
questions of a Spider split (written one by one). A follow-up taken for standalone is asked without its
context; a standalone question taken for a follow-up is asked with context it does not need (the prompt
still says it is a follow-up), which a model can mostly ignore: recall matters more than precision here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from routesh.conversation import is_follow_up  # noqa: E402
from routesh.evaluate.datasets import data_dir, load_spider  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--standalone", choices=("spider-train", "spider-dev"), default="spider-train")
    parser.add_argument("--show", type=int, default=0, metavar="N", help="print N misses of each kind")
    args = parser.parse_args()
    turns = json.loads((data_dir() / "sparc" / "sparc_dev_tuning.json").read_text())
    follow_ups = [t["question"] for t in turns if t["turn"] > 0]
    firsts = [t["question"] for t in turns if t["turn"] == 0]
    standalone = [ex.question for ex in load_spider(args.standalone) if ex.question]
    kept = [q for q in follow_ups if is_follow_up(q)]
    print(f"SParC follow-ups taken as follow-ups: {len(kept)} of {len(follow_ups)} ({len(kept) / len(follow_ups):.1%})")
    for name, lines in (("SParC first turns", firsts), (f"{args.standalone} questions", standalone)):
        bent = [q for q in lines if is_follow_up(q)]
        print(f"{name} taken as follow-ups: {len(bent)} of {len(lines)} ({len(bent) / len(lines):.1%})")
        for q in bent[: args.show]:
            print(f"    bent: {q}")
    for q in [q for q in follow_ups if not is_follow_up(q)][: args.show]:
        print(f"    missed: {q}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
