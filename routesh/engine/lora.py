"""A LoRA adapter (a peft folder) put into a model for inference, in one of four ways, so that the adapter does
not cost what peft's training-time wrappers cost at every decoding step (docs/benchmarks.md measures them):

    peft          peft's own LoRA layers, unmerged (each adapted layer: dropout, casts, a loop over adapters)
    side          each adapted Linear computes  W x + B (A x) · scale  in the model's dtype, nothing else
    merged-fp32   W + B A · scale, computed and kept in float32 for the adapted layers (their inputs cast to
                  float32 and their outputs back): exact, but those weights take twice the bytes
    merged-bf16   W + B A · scale, rounded to the model's dtype: no cost at all, and the update is rounded

Only plain LoRA is read here (no DoRA, no per-module rank or alpha, no extra trained modules); an adapter using
more goes through peft whatever the mode. Imported only when an adapter is applied (torch loads slowly).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from routesh.engine.base import ADAPTER_MODES as MODES

_PREFIX = "base_model.model."  # peft's names for the wrapped model's modules
_UNSUPPORTED = ("use_dora", "modules_to_save", "layer_replication", "rank_pattern", "alpha_pattern", "lora_bias",
                "trainable_token_indices", "target_parameters")


@dataclass(frozen=True)
class LoraWeights:
    scale: float
    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]]  # the adapted Linear's name in the model → (A: r × in, B: out × r)


def read_plain(path: Path) -> LoraWeights | None:
    """The adapter's LoRA pairs, or None when it uses anything more than plain LoRA (then peft applies it)."""
    from safetensors.torch import load_file

    config = json.loads((path / "adapter_config.json").read_text())
    if config.get("peft_type") != "LORA" or any(config.get(key) for key in _UNSUPPORTED):
        return None
    weights_file = path / "adapter_model.safetensors"
    if not weights_file.is_file():  # an older peft's .bin: peft reads it
        return None
    tensors = load_file(str(weights_file))
    r, alpha = config["r"], config["lora_alpha"]
    scale = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for key in tensors:
        if key.endswith(".lora_A.weight"):
            name = key[: -len(".lora_A.weight")]
            b = tensors.get(f"{name}.lora_B.weight")
            if b is None:
                return None
            pairs[name.removeprefix(_PREFIX)] = (tensors[key], b)
    if len(pairs) * 2 != len(tensors):  # something else was trained too
        return None
    return LoraWeights(scale, pairs)


def fold(model: Any, weights: LoraWeights, mode: str) -> dict[str, Any]:
    """Put the adapter into `model` in place; returns what `unfold` needs to take it out again."""
    if mode not in MODES[1:]:
        raise ValueError(f"unknown adapter mode {mode!r}; choose {', '.join(MODES)}")
    originals: dict[str, Any] = {}
    try:
        for name, (a, b) in weights.pairs.items():
            originals[name] = _fold_one(model, name, a, b, weights.scale, mode)
    except BaseException:
        unfold(model, originals)  # all or nothing: never a half-adapted model
        raise
    return originals


def _fold_one(model: Any, name: str, a: torch.Tensor, b: torch.Tensor, scale: float, mode: str) -> Any:
    """Replace the Linear `name` with its adapted form; returns the Linear replaced."""
    linear = model.get_submodule(name)
    if not isinstance(linear, torch.nn.Linear):
        raise ValueError(f"{name} is a {type(linear).__name__}, not a Linear")
    weight = linear.weight
    if mode == "side":
        replacement: Any = _SideLoRA(linear, a.to(weight.dtype), (b.float() * scale).to(weight.dtype))
    else:
        merged = weight.float() + scale * (b.float() @ a.float())
        if mode == "merged-fp32":
            replacement = _Float32Linear(merged, None if linear.bias is None else linear.bias.float())
        else:
            replacement = torch.nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None,
                                          device="meta")
            replacement.weight = torch.nn.Parameter(merged.to(weight.dtype), requires_grad=False)
            if linear.bias is not None:
                replacement.bias = linear.bias
    model.set_submodule(name, replacement)
    return linear


def unfold(model: Any, originals: dict[str, Any]) -> None:
    for name, linear in originals.items():
        model.set_submodule(name, linear)


def rounding_error(weights: LoraWeights, model: Any) -> float:
    """For merged-bf16: |round(W + ΔW) − (W + ΔW)| / |ΔW| over every adapted weight, in float32 (the share of the
    update that rounding to the model's dtype loses)."""
    lost = total = 0.0
    for name, (a, b) in weights.pairs.items():
        weight = model.get_submodule(name).weight
        delta = weights.scale * (b.float() @ a.float())
        exact = weight.float() + delta
        lost += float((exact.to(weight.dtype).float() - exact).norm() ** 2)
        total += float(delta.norm() ** 2)
    return math.sqrt(lost / total) if total else 0.0


class _SideLoRA(torch.nn.Module):
    """The base Linear, plus the adapter's low-rank path in the same dtype (B already holds the scale)."""

    def __init__(self, linear: torch.nn.Linear, a: torch.Tensor, b_scaled: torch.Tensor) -> None:
        super().__init__()
        self.linear = linear
        self.register_buffer("a", a, persistent=False)
        self.register_buffer("b", b_scaled, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + F.linear(F.linear(x, self.a), self.b)


class _Float32Linear(torch.nn.Module):
    """A merged weight kept in float32: the input is cast up, the output back to the model's dtype."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("weight", weight, persistent=False)
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.float(), self.weight, self.bias).to(x.dtype)
