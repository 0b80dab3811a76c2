"""What one training step costs on this machine, part by part: one sequence of N tokens (a tenth of them
learned, as in the packs of `finetune data`), the 0.5B model in bf16, LoRA r 16 on the top 12 layers.

    python bench/train_step.py --tokens 1024

Rows: the forward alone (all logits; the body without the vocabulary projection), then forward and backward
with the loss as `model(**batch).loss` makes it (logits at every position) and as `finetune.train.learned_loss`
makes it (logits only where a token is learned), each with and without gradient checkpointing. Each row is the
mean of `--reps` runs after one warm-up run, all in one process, side by side.
"""

from __future__ import annotations

import argparse
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--lora-layers", type=int, default=12)
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from finetune.train import describe_model_source, learned_loss

    _, folder, _ = describe_model_source(args.model)
    torch.manual_seed(0)
    n = args.tokens
    ids = torch.randint(100, 20000, (1, n))
    labels = ids.clone()
    labels[:, : int(n * 0.9)] = -100
    batch = {"input_ids": ids, "labels": labels}
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)

    def timed(label: str, fn) -> None:
        fn()
        started = time.perf_counter()
        for _ in range(args.reps):
            fn()
        seconds = (time.perf_counter() - started) / args.reps
        print(f"| {label} | {seconds:.2f} s | {n / seconds:.0f} |", flush=True)

    print(f"| {n} tokens | seconds | tokens/s |\n|---|---:|---:|")
    with torch.no_grad():
        timed("forward, no gradient, every position's logits", lambda: model(input_ids=ids))
        timed("forward, no gradient, no logits (the body)", lambda: model.model(input_ids=ids))
    layers = model.config.num_hidden_layers
    names = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    lora = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=names,
                                            layers_to_transform=list(range(layers - args.lora_layers, layers))))

    def step(loss_of):
        def run() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = loss_of()
            loss.backward()
            lora.zero_grad(set_to_none=True)
        return run

    every = step(lambda: lora(**batch).loss)
    learned = step(lambda: learned_loss(lora, batch))
    timed("forward + backward, logits at every position", every)
    timed("forward + backward, logits where learned", learned)
    lora.base_model.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lora.base_model.model.config.use_cache = False
    timed("the same, gradient checkpointing, logits at every position", every)
    timed("the same, gradient checkpointing, logits where learned", learned)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
