"""The transformers engine with the real catalog test model (SmolLM2-135M, from its PyPI data wheel)."""

from __future__ import annotations

import threading

import pytest

from routesh.engine import ChatRequest, GenerationParams, load_engine
from routesh.errors import GenerationCancelled, ModelError
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
    assert len(engine._prefix_cache) == 1  # the three share one prefix, kept once
    again = engine.generate(requests(), params)  # served from the LRU, across calls
    monkeypatch.setattr(hf, "_MIN_PREFIX_TOKENS", 10**9)  # no prefix reuse at all
    without = engine.generate(requests(), params)
    assert all(c.cached_prompt_tokens == 0 for c in without)
    assert [c.text for c in with_cache] == [c.text for c in without] == [c.text for c in again]


def test_prompt_lookup_is_greedy_with_fewer_passes(engine):
    greedy = engine.generate(requests(), GenerationParams(max_new_tokens=40))
    lookup = engine.generate(requests(), GenerationParams(max_new_tokens=40, prompt_lookup=True))  # drafts in a batch
    assert [c.text for c in lookup] == [c.text for c in greedy]
    copy_task = lookup[2]
    assert copy_task.extra["forward_passes"] < copy_task.output_tokens / 2  # the copied SQL came in drafts
    alone = engine.generate(requests()[2:], GenerationParams(max_new_tokens=40, prompt_lookup=True))[0]
    assert alone.text == copy_task.text and alone.extra["forward_passes"] < alone.output_tokens / 2


def test_stop_strings_and_length(engine):
    out = engine.generate(requests([QUESTIONS[2]]), GenerationParams(max_new_tokens=40, stop=("FROM",)))[0]
    assert "FROM" not in out.text and "SELECT" in out.text and out.finish_reason == "stop"
    out = engine.generate(requests([QUESTIONS[0]]), GenerationParams(max_new_tokens=3))[0]
    assert out.output_tokens == 3 and out.finish_reason == "length"


def test_lora_adapter_applies(folder, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    engine = TransformersEngine(folder, name=TEST_MODEL, dtype="float32")  # its own: the adapter stays on

    base = engine.generate(requests([QUESTIONS[1]]), GenerationParams(max_new_tokens=20))[0].text
    # A real adapter with random (non-zero) weights, saved the way finetune/ saves one.
    model = AutoModelForCausalLM.from_pretrained(engine.folder)
    config = LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(tmp_path / "adapter")

    engine.apply_adapter(tmp_path / "adapter")
    adapted = engine.generate(requests([QUESTIONS[1]]), GenerationParams(max_new_tokens=20))[0].text
    assert engine.adapter == tmp_path / "adapter"
    assert adapted != base


def test_every_adapter_mode_computes_what_peft_computes_and_unfolds_to_the_base(folder, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from routesh.engine.lora import MODES

    engine = TransformersEngine(folder, name=TEST_MODEL, dtype="float32")
    model = AutoModelForCausalLM.from_pretrained(engine.folder)
    config = LoraConfig(r=8, lora_alpha=32, target_modules="all-linear", init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(tmp_path / "plain")
    config = LoraConfig(r=8, lora_alpha=32, target_modules=["q_proj"], init_lora_weights=False, use_dora=True)
    get_peft_model(AutoModelForCausalLM.from_pretrained(engine.folder), config).save_pretrained(tmp_path / "dora")
    ids = torch.tensor([engine.tokenizer("SELECT name FROM singer WHERE age > 30")["input_ids"]])

    def logits():
        with torch.no_grad():
            return engine.model(input_ids=ids).logits

    base = logits()
    out = {}
    for mode in MODES:
        engine.apply_adapter(tmp_path / "plain", mode)
        assert engine.adapter_mode == mode
        out[mode] = logits()
        engine.apply_adapter(tmp_path / "dora", mode)  # more than plain LoRA: peft, whatever the mode
        assert engine.adapter_mode == "peft"
        engine.remove_adapter()
        torch.testing.assert_close(logits(), base, rtol=0, atol=0)  # the base model, exactly as it was
    assert not torch.allclose(out["peft"], base, atol=1e-2)
    for mode in MODES[1:]:  # in float32 even the merged-into-the-weights mode keeps the whole update
        torch.testing.assert_close(out[mode], out["peft"], rtol=1e-3, atol=1e-3)
    engine.close()


def test_int8_weights_answer_and_refuse_an_adapter_in_one_line(folder, tmp_path):
    import torch

    engine = TransformersEngine(folder, name=TEST_MODEL, dtype="int8")
    assert engine.quantization == "int8" and engine.dtype == torch.float32
    linear = engine.base_model.model.layers[0].mlp.down_proj
    assert type(linear).__module__.startswith("torch.ao.nn.quantized.dynamic") and linear.weight().dtype == torch.qint8
    assert linear.weight().qscheme() == torch.per_channel_affine
    out = engine.generate(requests([QUESTIONS[1]]), GenerationParams(max_new_tokens=20))[0]
    assert out.output_tokens > 0 and out.text.strip()
    with pytest.raises(ModelError, match="an adapter cannot be applied to the int8 model"):
        engine.apply_adapter(tmp_path)
    engine.close()


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


OTHER_SCHEMA = "You write SQLite queries.\n" + "\n".join(
    f"CREATE TABLE shop{i} (shop_id INTEGER PRIMARY KEY, owner TEXT, opened DATE);" for i in range(12))

# Mixed on purpose: two schemas (two cached prefixes of different lengths), a request with no leading
# messages at all, different lengths, stop strings and prompt lookup.
MIXED = [
    (ChatRequest.of(("system", SCHEMA), ("user", QUESTIONS[0])), GenerationParams(max_new_tokens=30)),
    (ChatRequest.of(("system", OTHER_SCHEMA), ("user", "Which shops opened in 2020?")),
     GenerationParams(max_new_tokens=12)),
    (ChatRequest.of(("user", "Write SQL that counts the rows of t1.")), GenerationParams(max_new_tokens=20)),
    (ChatRequest.of(("system", SCHEMA), ("user", QUESTIONS[2])),
     GenerationParams(max_new_tokens=40, stop=("ORDER",), prompt_lookup=True)),
    (ChatRequest.of(("system", OTHER_SCHEMA), ("user", "Name the owner of shop 3.")),
     GenerationParams(max_new_tokens=25)),
]


def _concurrently(engine, jobs, kwargs=None):
    """Every (request, params) as its own generate() call on its own thread, all at once; kwargs[i]
    are more keyword arguments for call i."""
    kwargs = kwargs or {}
    results: dict[int, object] = {}
    start = threading.Barrier(len(jobs))

    def ask(i, request, params):
        start.wait()
        try:
            results[i] = engine.generate([request], params, **kwargs.get(i, {}))[0]
        except Exception as err:  # noqa: BLE001 - the test looks at what each caller got
            results[i] = err

    threads = [threading.Thread(target=ask, args=(i, r, p)) for i, (r, p) in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return [results[i] for i in range(len(jobs))]


def test_concurrent_callers_share_a_batch_and_get_what_they_get_alone(engine):
    alone = [engine.generate([r], p)[0] for r, p in MIXED]
    together = _concurrently(engine, MIXED)
    assert [c.text for c in together] == [c.text for c in alone]
    assert [c.output_tokens for c in together] == [c.output_tokens for c in alone]
    assert [c.finish_reason for c in together] == [c.finish_reason for c in alone]
    assert "ORDER" not in together[3].text and "SELECT" in together[3].text
    assert max(c.extra["peak_batch_rows"] for c in together) >= 3  # they really were decoded together
    assert together[2].cached_prompt_tokens == 0 and together[1].cached_prompt_tokens > 100


def test_cancelling_one_caller_leaves_the_others_alone(engine):
    from routesh.cancel import CancelToken

    alone = [engine.generate([r], p)[0].text for r, p in MIXED[:2]]
    token = CancelToken()
    long_one = (ChatRequest.of(("system", SCHEMA), ("user", QUESTIONS[1])), GenerationParams(max_new_tokens=2000))
    threading.Timer(1.0, token.cancel).start()
    out = _concurrently(engine, [*MIXED[:2], long_one], {2: {"cancel": token}})
    assert isinstance(out[2], GenerationCancelled)
    assert [c.text for c in out[:2]] == alone


def test_sampling_is_seeded_per_row_whatever_the_batch(engine):
    params = GenerationParams(max_new_tokens=20, temperature=0.9, seed=11)
    first = [c.text for c in engine.generate(requests(), params)]
    alone = engine.generate(requests()[1:2], params)[0].text  # slot 0 of its own call draws like slot 0
    again = [c.text for c in engine.generate(requests(), params)]
    assert first == again
    assert alone == engine.generate(requests()[1:2], params)[0].text
    assert len(set(first)) > 1


def test_prefix_cache_is_bounded_by_bytes(folder):
    engine = TransformersEngine(folder, name=TEST_MODEL, dtype="float32")
    params = GenerationParams(max_new_tokens=2)
    engine.generate(requests([QUESTIONS[0]]), params)
    cache = engine._prefix_cache
    one = cache.bytes
    assert len(cache) == 1 and one > 2**20
    cache.max_bytes = one + 2**20  # room for this prefix, not for a second one too
    engine.generate([ChatRequest.of(("system", OTHER_SCHEMA), ("user", "hi"))], params)
    assert len(cache) == 1 and 0 < cache.bytes < one  # the other schema is shorter; the first one went
    out = engine.generate(requests([QUESTIONS[0]]), params)[0]  # computed again, and still right
    assert out.cached_prompt_tokens > 300
    engine.close()


def test_copies_of_one_prompt_read_it_once_and_sampled_drafts_draw_as_without(engine):
    """Vote's call: one greedy request beside sampled copies of it. The prompt is read once for all of
    them; a sampled row that drafts (prompt lookup on a draft text) draws exactly what it draws without."""
    request = requests([QUESTIONS[2]])[0]
    greedy = GenerationParams(max_new_tokens=30)
    sampled = [GenerationParams(max_new_tokens=30, temperature=0.8, seed=s) for s in (5, 6, 7)]
    alone = engine.generate([request], greedy)[0]
    before = engine.stats.prefills
    out = engine.generate([request] * 4, [greedy, *sampled])
    assert engine.stats.prefills - before == 1
    assert out[0].text == alone.text
    assert out[0].logprob == pytest.approx(alone.logprob, abs=1e-3) and out[0].logprob < 0
    draft = "SELECT name, city, amount FROM t7 WHERE amount > 10 ORDER BY amount DESC LIMIT 5"
    drafting = [GenerationParams(max_new_tokens=30, temperature=0.8, seed=s, prompt_lookup=True, draft_text=draft)
                for s in (5, 6, 7)]
    looked_up = engine.generate([request] * 3, drafting)
    assert [c.text for c in looked_up] == [c.text for c in out[1:]]
    assert sum(c.extra["accepted"] for c in looked_up) > 0  # drafts were taken, not only proposed
    assert all(c.logprob is not None and c.logprob <= 0 for c in out)


def test_closing_stops_the_worker_before_it_reads_the_waiting_prompts(folder):
    """Ctrl-C in `routesh-eval --jobs N` closes the engine while prompts wait to be read: close() must
    find the worker done (a thread still inside torch at exit aborts the process). Closing fails every
    call, and the scheduler skips the rows of a call that is gone, so it reads no further prompt."""
    from routesh.errors import ModelError

    # room in the batch for every waiting prompt: one pass of the scheduler would read them all
    engine = TransformersEngine(folder, name=TEST_MODEL, dtype="float32", max_batch_rows=8, max_batch_tokens=10**6)
    waiting = [ChatRequest.of(("system", f"-- copy {i}\n{SCHEMA}"), ("user", QUESTIONS[0]))
               for i in range(8)]  # distinct prompts: each one read on its own
    outcome: list[object] = []

    def ask() -> None:
        try:
            outcome.append(engine.generate(waiting, GenerationParams(max_new_tokens=4)))
        except ModelError as err:
            outcome.append(err)

    caller = threading.Thread(target=ask)
    caller.start()
    while engine.stats.prefills < 1:
        threading.Event().wait(0.002)
    engine.close()
    caller.join(timeout=30)
    assert engine._worker is not None and not engine._worker.is_alive()
    assert engine.stats.prefills < len(waiting)  # it stopped reading when closed
    assert isinstance(outcome[0], ModelError) and "closed" in str(outcome[0])
