"""What the repair stage would do to the candidates of an earlier routesh-eval run, offline: no model, so a
repair rule is measured in seconds on receipts already made (tune on spider-train or postgres-defog-instruct,
never on the set that is reported). Each candidate the vote saw (or, without a vote, the final SQL) is run,
passed through the repair stage exactly as the pipeline passes it (routesh/pipeline/steps.repair), and
both are judged against the gold as routesh-eval judges the final SQL.

    routesh-eval --data spider-train --limit 80 --sample-seed 1 --stages sl,vote --vote-k 8 --out vote8.jsonl
    python bench/replay_repairs.py vote8.jsonl --data spider-train
    python bench/replay_repairs.py tune.jsonl --data postgres-defog-instruct --start-pg

Reports how many distinct candidates the stage changed, how many of those went from wrong to right and
from right to wrong, and how many failing ones it made run; --show prints each change.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections import Counter
from pathlib import Path

from routesh.cancel import CancelToken
from routesh.evaluate.datasets import Example, load_data, open_database
from routesh.evaluate.runner import judge
from routesh.pipeline import steps
from routesh.pipeline.options import PipelineOptions
from routesh.pipeline.run import QuestionRun
from routesh.pipeline.stages import Answer, StageConfig
from routesh.pipeline.trial import run_trial
from routesh.sql.parse import Sql
from vote_recount import ballot  # bench/, the script's own folder, is on sys.path


def candidates(receipt: dict) -> list[str]:
    """The distinct SQL texts the run tried as answers: the vote's ballot, else the final SQL."""
    voted = ballot(receipt)
    texts = [c["sql"] for c in voted] if voted else [receipt["predicted_sql"]] if receipt["predicted_sql"] else []
    return list(dict.fromkeys(texts))


def replay(ex: Example, texts: list[str], show: bool, counts: Counter) -> None:
    db = open_database(ex)
    try:
        schema = db.introspect(samples=0)
        options = PipelineOptions(stages=StageConfig.parse("repair"))
        run = QuestionRun(None, db, schema, options, ex.question or "", ex.hint,  # type: ignore[arg-type]
                          CancelToken(), None, Answer(question=ex.question or "", sql=None, reason=""))
        for text in texts:
            before = run_trial(db, Sql(text, schema.dialect), row_limit=options.preview_rows, timeout=options.timeout)
            after = steps.repair(run, before, quiet=True)
            counts["candidates"] += 1
            if after.sql == before.sql:
                continue
            was = before.ran and judge(ex, db, before.sql)[0]
            now = judge(ex, db, after.sql)[0]
            counts["changed"] += 1
            counts["made to run"] += not before.ran
            counts["wrong → right"] += now and not was
            counts["right → wrong"] += was and not now
            if show:
                print(f"#{ex.index} {'+' if now > was else '-' if was > now else '='} "
                      f"{', '.join(map(str, after.repairs))}\n  before: {before.sql}\n  after:  {after.sql}")
    finally:
        db.close()


@contextlib.contextmanager
def _databases(examples: list[Example], start_pg: bool):
    """The examples, with their PostgreSQL databases loaded on a throwaway server when asked."""
    if not start_pg:
        yield examples
        return
    from routesh.evaluate.pgload import attach_databases
    from routesh.evaluate.pgserver import start_server

    with start_server() as server:
        yield attach_databases(examples, server.admin_dsn)[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("receipts", type=Path)
    parser.add_argument("--data", default="spider-train")
    parser.add_argument("--start-pg", action="store_true", help="postgres-defog*: start a throwaway server")
    parser.add_argument("--show", action="store_true", help="print each changed candidate")
    args = parser.parse_args()
    receipts = [json.loads(line) for line in args.receipts.read_text(encoding="utf-8").splitlines() if line.strip()]
    wanted = {r["index"]: r for r in receipts}
    examples = [ex for ex in load_data(args.data) if ex.index in wanted]
    counts: Counter = Counter()
    with _databases(examples, args.start_pg) as ready:
        for ex in ready:
            replay(ex, candidates(wanted[ex.index]), args.show, counts)
    print(f"{args.receipts}: {len(wanted)} questions, {counts['candidates']} distinct candidates; the repair stage "
          f"changes {counts['changed']} ({counts['made to run']} made to run): "
          f"{counts['wrong → right']} wrong → right, {counts['right → wrong']} right → wrong")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
