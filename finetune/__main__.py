"""`python -m finetune`: ROUTE's multitask fine-tuning (MSFT) for routesh.

    python -m finetune data  --out DIR [--seed N] [--limit N] [--negatives-from receipts.jsonl]
                             [--generate-negatives MODEL --negatives-limit N]
    python -m finetune train --data DIR --model MODEL --out ADAPTER_DIR [--steps N | --epochs E] ...
    python -m finetune eval  --adapter ADAPTER_DIR [routesh-eval arguments]
    python -m finetune package --adapter ADAPTER_DIR [--name CATALOG_NAME | --into DIR]

Multi-GPU (DeepSpeed ZeRO-3 through accelerate):
    accelerate launch --config_file finetune/accelerate_zero3.yaml -m finetune train --data DIR ...
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from routesh.errors import RoutesError


def _data_parser(sub: argparse._SubParsersAction) -> None:
    from finetune.synth import SynthOptions

    p = sub.add_parser("data", help="build the four task datasets from Spider train",
                       description="Build DIR/{ts,sl,nc,cw}.jsonl and DIR/card.json from Spider train.")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, help="a seeded sample of N Spider train examples (default: all)")
    p.add_argument("--negatives-from", type=Path, metavar="RECEIPTS",
                   help="routesh-eval receipts (JSONL) on spider-train: the model's SQL becomes NC examples")
    p.add_argument("--generate-negatives", metavar="MODEL",
                   help="generate the model's own SQL (TS on the full and the reduced schema) for NC examples")
    p.add_argument("--negatives-limit", type=int, default=200,
                   help="with --generate-negatives: how many questions to generate for (default 200)")
    p.add_argument("--judge", metavar="MODEL",
                   help="also drop pairs this model, shown the gold with the NC prompt, calls wrong (slow)")
    p.add_argument("--ts-schemas", default="full,reduced",
                   help="TS examples on the full schema (the pseudo-SQL call), the reduced one (generation), or both")
    p.add_argument("--cw-per-question", type=int, default=2)
    p.add_argument("--memory-fraction", type=float, default=SynthOptions.memory_fraction,
                   help="the share of questions that also get a TS item with remembered queries (default 1/3)")
    p.add_argument("--follow-up-fraction", type=float, default=SynthOptions.follow_up_fraction,
                   help="the share of questions that also get a TS item asked as a follow-up (default 1/4)")
    p.add_argument("--noisy-fraction", type=float, default=SynthOptions.noisy_fraction,
                   help="the share of questions that also get a TS item on a reduced schema with extra tables, "
                        "as linking leaves them (kind reduced_noisy; default 1/3)")
    p.add_argument("--corruptions-per-question", type=int, default=1)
    p.add_argument("--held-out-databases", type=int, default=0, metavar="N",
                   help="keep N seeded databases out of the data; their questions go to OUT/held_out.json, "
                        "a Spider-train tuning set for choosing a mix (routesh-eval --data OUT/held_out.json "
                        "--db-dir ../shared/data/spider/database)")
    p.add_argument("--no-values", dest="values", action="store_false",
                   help="schema texts without the question's stored-value matches (the pipeline without `values`)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _train_parser(sub: argparse._SubParsersAction) -> None:
    from finetune.train import add_arguments

    p = sub.add_parser("train", help="fine-tune a LoRA adapter (or the full model) on the task datasets",
                       description="Fine-tune on DIR/{ts,sl,nc,cw}.jsonl; accelerate/DeepSpeed compatible.")
    add_arguments(p)


def _eval_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="routesh-eval with a trained adapter applied", add_help=False,
                       description="Run routesh-eval with --adapter; every other argument goes to routesh-eval.")
    p.add_argument("--adapter", type=Path, required=True)
    p.add_argument("-h", "--help", action="store_true")


def _package_parser(sub: argparse._SubParsersAction) -> None:
    from routesh.engine.models import ADAPTED, ROUTE_MODEL

    p = sub.add_parser("package", help="make a trained adapter the one routesh ships",
                       description="Write the shippable form of a trained adapter (config, bf16 weights, card) "
                                   "into routesh/adapters/, where a catalog name such as "
                                   f"{ROUTE_MODEL} finds it, or into --into DIR.")
    p.add_argument("--adapter", type=Path, required=True, help="a folder written by `python -m finetune train`")
    p.add_argument("--name", choices=sorted(ADAPTED), default=ROUTE_MODEL,
                   help=f"the catalog name it ships as (default {ROUTE_MODEL}); its base model must match")
    p.add_argument("--into", type=Path, help="write here instead (no base-model check)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m finetune", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    sub = parser.add_subparsers(dest="command", required=True)
    _data_parser(sub)
    _train_parser(sub)
    _eval_parser(sub)
    _package_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv and argv[0] == "eval":
        args, rest = parser.parse_known_args(argv)
    else:
        args, rest = parser.parse_args(argv), []
    try:
        if args.command == "data":
            return _data(args)
        if args.command == "train":
            from finetune.train import run

            return run(args)
        if args.command == "package":
            return _package(args)
        return _eval(args, rest)
    except RoutesError as err:
        print(f"finetune: {err}", file=sys.stderr)
        return err.exit_code
    except (ValueError, FileNotFoundError) as err:
        print(f"finetune: {err}", file=sys.stderr)
        return 1


def _data(args: argparse.Namespace) -> int:
    from finetune.synth import SynthOptions, build_dataset

    schemas = tuple(s.strip() for s in args.ts_schemas.split(",") if s.strip())
    if not schemas or set(schemas) - {"full", "reduced"}:
        raise ValueError("--ts-schemas takes full, reduced or full,reduced")
    for name in ("memory_fraction", "follow_up_fraction", "noisy_fraction"):
        if not 0 <= getattr(args, name) <= 1:
            raise ValueError(f"--{name.replace('_', '-')} must be between 0 and 1")
    if args.negatives_from is not None and not args.negatives_from.is_file():
        raise FileNotFoundError(f"--negatives-from {args.negatives_from}: no such file")
    options = SynthOptions(seed=args.seed, limit=args.limit, ts_schemas=schemas,
                           cw_per_question=args.cw_per_question,
                           corruptions_per_question=args.corruptions_per_question,
                           memory_fraction=args.memory_fraction, follow_up_fraction=args.follow_up_fraction,
                           noisy_fraction=args.noisy_fraction, values=args.values,
                           held_out_databases=args.held_out_databases)
    card = build_dataset(args.out, options, receipts=args.negatives_from, generator_spec=args.generate_negatives,
                         negatives_limit=args.negatives_limit, judge_spec=args.judge, progress=not args.quiet)
    summary = {k: card[k] for k in ("examples", "counts", "dropped", "missing_databases")}
    summary["missing_databases"] = {k: v for k, v in card["missing_databases"].items() if k != "by_database"}
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.out}/{{ts,sl,nc,cw}}.jsonl and {args.out}/card.json", file=sys.stderr)
    return 0


def _package(args: argparse.Namespace) -> int:
    from finetune.package import package_adapter
    from routesh.engine.models import ADAPTED

    entry = ADAPTED[args.name]
    into, base = (args.into, None) if args.into is not None else (entry.path, entry.base)
    done = package_adapter(args.adapter, into, base=base)
    print(f"wrote {done.folder}: {done.tensors} tensors, {done.parameters:,} parameters, "
          f"{done.bytes / 1e6:.1f} MB", file=sys.stderr)
    return 0


def _eval(args: argparse.Namespace, rest: list[str]) -> int:
    from routesh.evaluate.cli import main as eval_main

    if args.help:
        print("python -m finetune eval --adapter DIR [routesh-eval arguments]\n"
              "Without --model, the base model named in DIR/training_card.json is used.\n")
        return eval_main(["--help"])
    adapter = args.adapter
    if not (adapter / "adapter_config.json").is_file():
        raise FileNotFoundError(f"--adapter {adapter}: no adapter_config.json there (not a peft adapter folder)")
    forwarded = ["--adapter", str(adapter), *rest]
    if not any(a == "--model" or a.startswith("--model=") for a in rest):
        card = adapter / "training_card.json"
        if card.is_file():
            model = json.loads(card.read_text()).get("base_model", {}).get("spec")
            if model:
                forwarded = ["--model", model, *forwarded]
    return eval_main(forwarded)


if __name__ == "__main__":
    raise SystemExit(main())
