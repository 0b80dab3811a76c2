"""engine/lora.py on a tiny model: what each way of applying an adapter computes, and all-or-nothing."""

from __future__ import annotations

import pytest
import torch

from routesh.engine.lora import MODES, LoraWeights, fold, unfold


def tiny() -> tuple[torch.nn.Sequential, LoraWeights, torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    weights = LoraWeights(0.5, {"0": (torch.randn(2, 6), torch.randn(5, 2)), "2": (torch.randn(2, 5), torch.randn(3, 2))})
    return model, weights, torch.randn(4, 6)


def test_each_mode_computes_the_weights_plus_the_scaled_update():
    model, weights, x = tiny()
    with torch.no_grad():
        base = model(x)
        expected = x
        for name, layer in (("0", model[0]), ("relu", model[1]), ("2", model[2])):
            if name == "relu":
                expected = torch.relu(expected)
                continue
            a, b = weights.pairs[name]
            expected = expected @ (layer.weight + weights.scale * b @ a).T + layer.bias
        for mode in MODES[1:]:
            originals = fold(model, weights, mode)
            torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
            unfold(model, originals)
            torch.testing.assert_close(model(x), base, rtol=0, atol=0)


def test_a_fold_that_fails_leaves_the_model_as_it_was():
    model, weights, _ = tiny()
    first = model[0]
    broken = LoraWeights(weights.scale, {"0": weights.pairs["0"], "1": weights.pairs["0"]})  # "1" is the ReLU
    with pytest.raises(ValueError, match="1 is a ReLU, not a Linear"):
        fold(model, broken, "side")
    assert model[0] is first
    with pytest.raises(ValueError, match="unknown adapter mode 'peft'"):
        fold(model, weights, "peft")  # peft's mode is applied by peft, not here
