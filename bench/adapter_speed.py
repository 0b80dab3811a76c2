"""How fast the model answers with a LoRA adapter applied each way (routesh/engine/lora.py), side by side with the
base model, and whether the answers stay those of peft's unmerged adapter.

    python bench/adapter_speed.py --questions 30                      # the shipped ROUTE adapter
    python bench/adapter_speed.py --adapter /work/train/mix1 --questions 30
    python bench/adapter_speed.py --questions 60 --modes base,merged-bf16   # only the ways compared

Plain prompting (the text-to-SQL prompt on the full schema, greedy, one question at a time) on the first N
answerable Spider dev questions. One engine; each mode is applied in turn and asked every question, in two
rounds (the second in the reverse order of modes, so that a drift of the machine's speed falls on all of them).
Prints a Markdown table: the median seconds per question, its ratio to the base model's (and the median of each
question's own ratio), how many replies are word for word peft's, and for merged-bf16 the share of the update
that rounding to bf16 loses.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", type=Path, help="a peft folder (default: the shipped ROUTE adapter)")
    parser.add_argument("--questions", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--modes", default="base,peft,side,merged-fp32,merged-bf16",
                        help="comma-separated: base and the adapter modes to time (default: all)")
    args = parser.parse_args()

    from routesh import prompts
    from routesh.db.sqlite import SqliteDatabase
    from routesh.engine import load_engine
    from routesh.engine.base import GenerationParams
    from routesh.engine.lora import MODES, read_plain, rounding_error
    from routesh.engine.models import ADAPTED, BASE_MODEL, ROUTE_MODEL
    from routesh.evaluate.datasets import load_spider
    from routesh.pipeline import schema_texts
    from routesh.pipeline.options import SCHEMA_SAMPLES, SQL_STOP, PipelineOptions

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if "base" not in modes or any(m not in ("base", *MODES) for m in modes):
        parser.error(f"--modes: base and any of {', '.join(MODES)}")
    reference = "peft" if "peft" in modes else next((m for m in modes if m != "base"), "base")
    adapter = args.adapter or ADAPTED[ROUTE_MODEL].path
    options = PipelineOptions()
    requests = []
    for ex in [ex for ex in load_spider("spider-dev") if ex.answerable][: args.questions]:
        db = SqliteDatabase.open(ex.db_path)
        schema = db.introspect(samples=SCHEMA_SAMPLES)
        db.close()
        text = schema_texts.full_text(schema, ex.question, options)
        requests.append(prompts.ts_prompt(text, "sqlite", ex.question))
    params = GenerationParams(max_new_tokens=options.sql_tokens, stop=SQL_STOP)
    engine = load_engine(BASE_MODEL, backend="transformers", progress=False)
    seconds: dict[str, list[float]] = {m: [] for m in modes}
    replies: dict[str, list[str]] = {}
    tokens: dict[str, int] = {m: 0 for m in modes}
    for round_ in range(args.rounds):
        for mode in modes if round_ % 2 == 0 else modes[::-1]:
            engine.remove_adapter()
            if mode != "base":
                engine.apply_adapter(adapter, mode)
            engine.generate(requests[:1], params)  # warm: the first call after a change pays for it
            answers = []
            for request in requests:
                engine._prefix_cache.clear()  # each question as the first of its database
                started = time.perf_counter()
                out = engine.generate([request], params)[0]
                seconds[mode].append(time.perf_counter() - started)
                tokens[mode] += out.output_tokens
                answers.append(out.text)
            replies.setdefault(mode, answers)
            print(f"round {round_ + 1}, {mode}: median {statistics.median(seconds[mode]):.2f} s", file=sys.stderr,
                  flush=True)
    weights = read_plain(adapter)
    engine.remove_adapter()
    lost = rounding_error(weights, engine.base_model) if weights else float("nan")
    engine.close()

    base = statistics.median(seconds["base"])
    print(f"| mode | median s a question | × base | median of the questions' × base | output tokens "
          f"| replies as {reference}'s ({len(requests)}) |")
    print("|---|---:|---:|---:|---:|---:|")
    for mode in modes:
        median = statistics.median(seconds[mode])
        paired = statistics.median(t / b for t, b in zip(seconds[mode], seconds["base"]))  # same question, same round
        same = sum(a == b for a, b in zip(replies[mode], replies[reference]))
        print(f"| {mode} | {median:.2f} | {median / base:.2f} | {paired:.2f} | {tokens[mode] // args.rounds} "
              f"| {same} |")
    print(f"\nmerged-bf16: rounding to bf16 loses {lost:.1%} of the update (|round(W+ΔW) − (W+ΔW)| / |ΔW|)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
