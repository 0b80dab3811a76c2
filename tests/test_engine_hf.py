"""The transformers engine with the real catalog test model (SmolLM2-135M, from its PyPI data wheel)."""

from __future__ import annotations

import threading

import pytest

from routesh.engine import ChatRequest, GenerationParams, load_engine
from routesh.errors import GenerationCancelled
from routesh.engine.hf import TransformersEngine
from routesh.engine.models import TEST_MODEL, materialize

SCHEMA = "You write SQLite queries for this database.\n" + "\n".join(
    f"CREATE TABLE t{i} (id INTEGER PRIMARY KEY, name TEXT, city TEXT, amount REAL);" for i in range(25)
)
QUESTIONS = [
    "List the names in t2 whose city is Lyon. Answer with SQL only.",
    "What is the total amount in t3?",
    "Repeat exactly: SELECT name, city, amount FROM t7 WHERE amount > 10 ORDER BY amount DESC LIMIT 5",
]


def requests(questions=QUESTIONS):
    return [ChatRequest.of(("system", SCHEMA), ("user", q)) for q in questions]


@pytest.fixture(scope="module")
def folder(model_cache):
    return materialize(TEST_MODEL, progress=False)


@pytest.fixture(scope="module")
def engine(folder):
    # float32 makes greedy outputs exactly reproducible across batch shapes, which the equality
    # checks below rely on; bf16 is the CPU default elsewhere.
    return TransformersEngine(folder, name=TEST_MODEL, dtype="float32")


def test_catalog_path_loads_and_generates_a_batch(model_cache):
    engine = load_engine(TEST_MODEL, progress=False)
    assert engine.backend == "transformers" and engine.name == TEST_MODEL
    out = engine.generate(requests(), GenerationParams(max_new_tokens=24))
    assert len(out) == 3
    for completion in out:
        assert completion.text.strip()
        assert completion.prompt_tokens > 300  # the schema is in every prompt
        assert 0 < completion.output_tokens <= 24
        assert completion.finish_reason in ("stop", "length")
        assert completion.seconds > 0 and completion.first_token_seconds is not None


def test_batch_equals_one_by_one(engine):
    params = GenerationParams(max_new_tokens=30)
    batched = [c.text for c in engine.generate(requests(), params)]
    single = [engine.generate([r], params)[0].text for r in requests()]
    assert batched == single


def test_prefix_cache_gives_identical_output(engine, monkeypatch):
    import routesh.engine.hf as hf

    params = GenerationParams(max_new_tokens=30)
    engine._prefix_cache.clear()
    with_cache = engine.generate(requests(), params)
    assert all(c.cached_prompt_tokens > 300 for c in with_cache)
    again = engine.generate(requests(), params)  # served from the LRU, across calls
    monkeypatch.setattr(hf, "_MIN_PREFIX_TOKENS", 10**9)  # no prefix reuse at all
    without = engine.generate(requests(), params)
    assert all(c.cached_prompt_tokens == 0 for c in without)
    assert [c.text for c in with_cache] == [c.text for c in without] == [c.text for c in again]


def test_prompt_lookup_is_greedy_with_fewer_passes(engine):
    greedy = engine.generate(requests(), GenerationParams(max_new_tokens=40))
    lookup = engine.generate(requests(), GenerationParams(max_new_tokens=40, prompt_lookup=True))
    assert [c.text for c in lookup] == [c.text for c in greedy]
    copy_task = lookup[2]
    assert copy_task.extra["forward_passes"] < copy_task.output_tokens / 2  # the copied SQL came in drafts


def test_stop_strings_and_length(engine):
    out = engine.generate(requests([QUESTIONS[2]]), GenerationParams(max_new_tokens=40, stop=("FROM",)))[0]
    assert "FROM" not in out.text and "SELECT" in out.text and out.finish_reason == "stop"
    out = engine.generate(requests([QUESTIONS[0]]), GenerationParams(max_new_tokens=3))[0]
    assert out.output_tokens == 3 and out.finish_reason == "length"


def test_lora_adapter_applies(engine, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = engine.generate(requests([QUESTIONS[1]]), GenerationParams(max_new_tokens=20))[0].text
    # A real adapter with random (non-zero) weights, saved the way finetune/ saves one.
    model = AutoModelForCausalLM.from_pretrained(engine.folder)
    config = LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(tmp_path / "adapter")

    engine.apply_adapter(tmp_path / "adapter")
    adapted = engine.generate(requests([QUESTIONS[1]]), GenerationParams(max_new_tokens=20))[0].text
    assert engine.adapter == tmp_path / "adapter"
    assert adapted != base


def test_cancel_from_another_thread(engine):
    threading.Timer(0.5, engine.cancel).start()
    with pytest.raises(GenerationCancelled):
        engine.generate(requests([QUESTIONS[0]]), GenerationParams(max_new_tokens=2000))
    # and the engine still works
    assert engine.generate(requests([QUESTIONS[1]]), GenerationParams(max_new_tokens=5))[0].output_tokens > 0


def test_cancel_during_prompt_lookup(engine):
    threading.Timer(0.5, engine.cancel).start()
    with pytest.raises(GenerationCancelled):
        engine.generate(requests([QUESTIONS[0]]), GenerationParams(max_new_tokens=2000, prompt_lookup=True))
