"""`python -m finetune package`: turn a trained adapter into the one routesh ships.

The training output holds float32 LoRA weights, checkpoints, and a card full of this machine's paths.
What ships is small and says where it came from: the adapter's config (its base named by catalog
name), the LoRA weights in bf16 (half the bytes; peft computes the adapter in float32 anyway), and a
card with the training card's hyper-parameters, loss curve and hashes, minus local paths.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune.synth import sha256_file

SHIPPED_FILES = ("adapter_config.json", "adapter_model.safetensors", "card.json")


@dataclass(frozen=True)
class Packaged:
    folder: Path
    tensors: int
    parameters: int
    bytes: int


def package_adapter(adapter: Path, into: Path, *, base: str | None = None, dtype: str = "bfloat16") -> Packaged:
    """Write the shippable form of the trained `adapter` folder into `into` (replacing what is there).
    With `base`, the adapter must have been trained on that catalog model."""
    import torch
    from safetensors.torch import load_file, save_file

    config_path, weights_path = adapter / "adapter_config.json", adapter / "adapter_model.safetensors"
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"--adapter {adapter}: no {path.name} there (train one with `python -m finetune train`)")
    training = _read_json(adapter / "training_card.json")
    trained_on = (training.get("base_model") or {}).get("spec")
    if base is not None and trained_on != base:
        raise ValueError(f"--adapter {adapter} was trained on {trained_on or 'an unknown model'}, not {base}")

    config = _read_json(config_path)
    config["base_model_name_or_path"] = trained_on or config.get("base_model_name_or_path")
    config["inference_mode"] = True
    target = getattr(torch, dtype)
    tensors = {name: t.to(target).contiguous() for name, t in load_file(str(weights_path)).items()}

    staging = into.with_name(into.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    (staging / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    save_file(tensors, str(staging / "adapter_model.safetensors"), metadata={"format": "pt"})
    card = {
        "format": "routesh-adapter/1",
        "base_model": trained_on,
        "weights": {"dtype": dtype, "sha256": sha256_file(staging / "adapter_model.safetensors"),
                    "trained_sha256": sha256_file(weights_path)},
        **_portable(training),
    }
    (staging / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    for name in SHIPPED_FILES:  # package data: readable by everyone who can import routesh
        (staging / name).chmod(0o644)
    shutil.rmtree(into, ignore_errors=True)
    staging.rename(into)
    size = sum((into / name).stat().st_size for name in SHIPPED_FILES)
    return Packaged(into, len(tensors), sum(t.numel() for t in tensors.values()), size)


def _portable(training: dict[str, Any]) -> dict[str, Any]:
    """The training card without what only made sense on the training machine (folders, output paths)."""
    base = {k: v for k, v in (training.get("base_model") or {}).items() if k != "folder"}
    data = {k: v for k, v in (training.get("data") or {}).items() if k != "dir"}
    hyper = {k: v for k, v in (training.get("hyperparameters") or {}).items() if k not in ("data", "out")}
    keep = ("plan", "loss_curve", "wall_seconds", "device", "versions")
    return {"trained_base": base, "data": data, "hyperparameters": hyper, **{k: training[k] for k in keep if k in training}}


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err})") from None

