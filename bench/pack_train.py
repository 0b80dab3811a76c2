"""Shared-schema packing, measured: the same training examples trained once as they are and once packed,
side by side, and how much the whole data mix shrinks.

    python -m finetune data --out data/msft --seed 0
    python bench/pack_train.py --data data/msft --databases 2 --per-database 60 --pack-tokens 2048

A seeded choice of `--databases` databases and `--per-database` of their examples (all four tasks, in the mix's
proportions) is written to a folder of its own; `finetune train` runs one epoch over it unpacked (--batch-size
4), packed (--batch-size 1: a pack holds several examples) and packed with LoRA on the upper layers only
(--lora-layers), in separate processes, one after the other, with the same model, precision and LoRA rank.
Reported: the training loop's wall time (the card's), the examples and their unpacked tokens per second, and
the first and last loss. Then the packing ratio of the whole mix at the same bound, from tokenizing it (no
model): a small subset packs less well than the whole mix, whose databases have hundreds of examples each.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from finetune.synth import TASKS  # noqa: E402
from machine import machine_line  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def subset(data: Path, out: Path, databases: int, per_database: int, seed: int) -> dict[str, int]:
    """`per_database` seeded examples of each of `databases` seeded databases (of those with enough examples)."""
    by_db: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for task in TASKS:
        for line in (data / f"{task}.jsonl").read_text(encoding="utf-8").splitlines():
            if line.strip():
                by_db[json.loads(line)["db_id"]].append((task, line))
    rng = random.Random(seed)
    eligible = sorted(db for db, rows in by_db.items() if len(rows) >= per_database)
    chosen = rng.sample(eligible, databases)
    out.mkdir(parents=True, exist_ok=True)
    picked: dict[str, list[str]] = {t: [] for t in TASKS}
    for db in chosen:
        for task, line in rng.sample(by_db[db], per_database):
            picked[task].append(line)
    for task in TASKS:
        (out / f"{task}.jsonl").write_text("".join(line + "\n" for line in picked[task]), encoding="utf-8")
    (out / "card.json").write_text((data / "card.json").read_text())
    return {"databases": chosen, **{t: len(v) for t, v in picked.items()}}  # type: ignore[dict-item]


def train(data: Path, out: Path, model: str, extra: list[str]) -> dict:
    command = [sys.executable, "-m", "finetune", "train", "--data", str(data), "--model", model, "--out", str(out),
               "--epochs", "1", "--grad-accum", "1", "--save-every", "0", "--quiet", *extra]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"finetune train failed: {done.stderr[-2000:]}")
    return json.loads((out / "training_card.json").read_text())


def whole_mix_ratio(data: Path, model: str, pack_tokens: int) -> dict:
    from transformers import AutoTokenizer

    from finetune.pack import pack_examples, packing_stats
    from finetune.train import describe_model_source, load_examples

    _, folder, _ = describe_model_source(model)
    examples, _ = load_examples(data, TASKS, AutoTokenizer.from_pretrained(folder), 4096, progress=False)
    return packing_stats(examples, pack_examples(examples, max_tokens=pack_tokens))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a folder written by `python -m finetune data`")
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--databases", type=int, default=2)
    parser.add_argument("--per-database", type=int, default=60)
    parser.add_argument("--pack-tokens", type=int, default=2048)
    parser.add_argument("--lora-layers", type=int, default=12, help="a third run, packed, LoRA on the top N layers (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-whole-mix", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="pack-bench-") as tmp:
        folder = Path(tmp) / "data"
        chosen = subset(args.data, folder, args.databases, args.per_database, args.seed)
        print(f"examples: {chosen}", file=sys.stderr)
        runs = {
            "unpacked (batch 4)": train(folder, Path(tmp) / "plain", args.model, ["--batch-size", "4"]),
            f"packed ≤{args.pack_tokens} (batch 1)": train(folder, Path(tmp) / "packed", args.model,
                                                           ["--batch-size", "1", "--pack-tokens", str(args.pack_tokens)]),
        }
        if args.lora_layers:
            runs[f"packed, LoRA on the top {args.lora_layers} layers"] = train(
                folder, Path(tmp) / "upper", args.model,
                ["--batch-size", "1", "--pack-tokens", str(args.pack_tokens), "--lora-layers", str(args.lora_layers)])
    print(machine_line(f"model {args.model}", f"seed {args.seed}"))
    print("| run | steps | sequences' tokens | wall s | examples/s | unpacked tokens/s | loss first → last |")
    print("|---|---:|---:|---:|---:|---:|---|")
    base = None
    for name, card in runs.items():
        data = card["data"]
        tokens = data.get("packing", {}).get("tokens_packed", data["tokens"])
        seconds = card["wall_seconds"]
        losses = [p["loss"] for p in card["loss_curve"]]
        rate = data["tokens"] / seconds
        base = base or rate
        print(f"| {name} | {len(losses)} | {tokens:,} | {seconds:.1f} | {data['used'] / seconds:.2f} | "
              f"{rate:,.0f} ({rate / base:.2f}×) | {losses[0]:.3f} → {losses[-1]:.3f} |")
    if not args.skip_whole_mix:
        stats = whole_mix_ratio(args.data, args.model, args.pack_tokens)
        print(f"whole mix at ≤{args.pack_tokens}: {stats['examples']:,} examples, {stats['tokens_unpacked']:,} tokens "
              f"→ {stats['packs']:,} packs, {stats['tokens_packed']:,} tokens ({stats['ratio']}× fewer)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
