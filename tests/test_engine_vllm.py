"""VLLMEngine's control flow, with a fake `vllm` module standing in for the real one (no GPU here).

The fakes record what the engine asks of vLLM's stable offline surface: `vllm.LLM(...)`,
`LLM.chat(messages, sampling_params, use_tqdm=, lora_request=)`, `vllm.SamplingParams(...)` and
`vllm.lora.request.LoRARequest(name, id, path)`.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import types
from types import SimpleNamespace

import pytest

from routesh.engine.base import ChatRequest, GenerationParams
from routesh.errors import GenerationCancelled, ModelError
from routesh.engine.vllm import VLLMEngine, vllm_available


class FakeSamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


class FakeLoRARequest:
    def __init__(self, lora_name, lora_int_id, lora_path):
        self.args = (lora_name, lora_int_id, lora_path)


class FakeLLM:
    instances: list[FakeLLM] = []
    init_error: Exception | None = None

    def __init__(self, **kwargs):
        if FakeLLM.init_error is not None:
            raise FakeLLM.init_error
        self.kwargs = kwargs
        self.calls: list[dict] = []
        self.replies: list[tuple[str, str]] | None = None  # (text, finish_reason) per conversation
        self.gate: threading.Event | None = None  # chat() waits on it when set
        self.started = threading.Event()
        self.chat_error: Exception | None = None
        FakeLLM.instances.append(self)

    def chat(self, messages, sampling_params=None, use_tqdm=True, lora_request=None, chat_template=None):
        self.calls.append(dict(messages=messages, sampling_params=sampling_params, use_tqdm=use_tqdm,
                               lora_request=lora_request))
        self.started.set()
        if self.gate is not None:
            self.gate.wait(10)
        if self.chat_error is not None:
            raise self.chat_error
        outputs = []
        for i, conversation in enumerate(messages):
            prompt = " ".join(m["content"] for m in conversation)
            text, finish = self.replies[i] if self.replies else (f"answer to {conversation[-1]['content']}", "stop")
            outputs.append(SimpleNamespace(
                prompt_token_ids=list(range(len(prompt.split()))),
                outputs=[SimpleNamespace(text=text, token_ids=list(range(len(text.split()))), finish_reason=finish)],
                num_cached_tokens=2 * i,
                metrics=SimpleNamespace(arrival_time=100.0, first_token_time=100.25),
            ))
        return outputs


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = types.ModuleType("vllm")
    module.LLM = FakeLLM
    module.SamplingParams = FakeSamplingParams
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = FakeLoRARequest
    lora.request = request
    module.lora = lora
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.lora", lora)
    monkeypatch.setitem(sys.modules, "vllm.lora.request", request)
    FakeLLM.instances = []
    FakeLLM.init_error = None
    return module


def ask(text: str) -> ChatRequest:
    return ChatRequest.of(("system", "schema of the database"), ("user", text))


def test_load_options(fake_vllm) -> None:
    engine = VLLMEngine("/models/qwen", name="qwen2.5-coder-0.5b", tensor_parallel_size=2,
                        gpu_memory_utilization=0.5, max_model_len=4096)
    [llm] = FakeLLM.instances
    assert llm.kwargs == dict(model="/models/qwen", enable_prefix_caching=True, enable_lora=False,
                              max_lora_rank=64, tensor_parallel_size=2, gpu_memory_utilization=0.5,
                              dtype="bfloat16", max_model_len=4096)
    assert (engine.name, engine.backend) == ("qwen2.5-coder-0.5b", "vllm")
    engine.generate([ask("q")])
    assert llm.calls[0]["lora_request"] is None


def test_max_model_len_is_left_to_vllm_by_default(fake_vllm) -> None:
    VLLMEngine("/m", name="m")
    assert "max_model_len" not in FakeLLM.instances[0].kwargs
    assert FakeLLM.instances[0].kwargs["tensor_parallel_size"] == 1


def test_the_adapter_goes_with_every_batch(fake_vllm) -> None:
    engine = VLLMEngine("/models/qwen", name="route", adapter="/adapters/route")
    [llm] = FakeLLM.instances
    assert llm.kwargs["enable_lora"] is True and llm.kwargs["max_lora_rank"] == 64
    engine.generate([ask("a")])
    engine.generate([ask("b"), ask("c")])
    assert [call["lora_request"].args for call in llm.calls] == [("route", 1, "/adapters/route")] * 2


def test_outputs_map_to_completions_in_order(fake_vllm) -> None:
    engine = VLLMEngine("/m", name="m")
    [llm] = FakeLLM.instances
    llm.replies = [("SELECT 1", "stop"), ("SELECT a , b FROM", "length"), ("SELECT 3", "stop")]
    done = engine.generate([ask("one"), ask("two words"), ask("three more words")],
                           GenerationParams(max_new_tokens=32, seed=7))
    [call] = llm.calls
    assert call["messages"] == [ask(q).as_dicts() for q in ("one", "two words", "three more words")]
    assert call["use_tqdm"] is False
    assert call["sampling_params"].kwargs == dict(temperature=0.0, max_tokens=32, seed=7)
    assert [c.text for c in done] == ["SELECT 1", "SELECT a , b FROM", "SELECT 3"]
    assert [c.finish_reason for c in done] == ["stop", "length", "stop"]
    assert [c.prompt_tokens for c in done] == [5, 6, 7]  # the fake counts words of the prompt
    assert [c.output_tokens for c in done] == [2, 5, 2]
    assert [c.cached_prompt_tokens for c in done] == [0, 2, 4]
    assert all(c.first_token_seconds == 0.25 for c in done)
    assert len({c.seconds for c in done}) == 1


def test_stop_strings(fake_vllm) -> None:
    engine = VLLMEngine("/m", name="m")
    [llm] = FakeLLM.instances
    llm.replies = [("SELECT 1;\nand more", "length"), ("SELECT 2", "stop")]
    done = engine.generate([ask("a"), ask("b")], GenerationParams(stop=(";", "</sql>")))
    assert llm.calls[0]["sampling_params"].kwargs["stop"] == [";", "</sql>"]
    assert [(c.text, c.finish_reason) for c in done] == [("SELECT 1", "stop"), ("SELECT 2", "stop")]


def test_sampling_temperature(fake_vllm) -> None:
    engine = VLLMEngine("/m", name="m")
    engine.generate([ask("a")], GenerationParams(temperature=0.7))
    assert FakeLLM.instances[0].calls[0]["sampling_params"].kwargs["temperature"] == 0.7


def test_cancel_raises_when_the_batch_ends(fake_vllm) -> None:
    engine = VLLMEngine("/m", name="m")
    [llm] = FakeLLM.instances
    llm.gate = threading.Event()
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["result"] = engine.generate([ask("a")])
        except BaseException as err:  # noqa: BLE001 - inspected below
            box["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert llm.started.wait(5)
    engine.cancel()
    time.sleep(0.1)
    assert thread.is_alive()  # an in-process batch is not interrupted ...
    llm.gate.set()
    thread.join(5)
    assert isinstance(box.get("error"), GenerationCancelled)  # ... its results are discarded when it ends
    llm.gate = None
    assert engine.generate([ask("b")])[0].text == "answer to b"  # the next call is not cancelled


def test_errors_are_one_line(fake_vllm) -> None:
    FakeLLM.init_error = RuntimeError("CUDA out of memory.\nTried to allocate 2.00 GiB")
    with pytest.raises(ModelError) as caught:
        VLLMEngine("/m", name="m")
    assert str(caught.value) == "vLLM could not load /m: CUDA out of memory. Tried to allocate 2.00 GiB"
    FakeLLM.init_error = None
    engine = VLLMEngine("/m", name="m")
    FakeLLM.instances[-1].chat_error = ValueError("prompt too long\n(4096 > 2048)")
    with pytest.raises(ModelError, match=r"^vLLM failed to generate: prompt too long \(4096 > 2048\)$"):
        engine.generate([ask("a")])
    engine.close()
    with pytest.raises(ModelError, match="closed"):
        engine.generate([ask("a")])


def test_without_vllm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError
    with pytest.raises(ModelError, match=r"needs vLLM, which is not installed .*pip install 'routesh\[vllm\]'"):
        VLLMEngine("/m", name="m")


def test_vllm_available_needs_the_package_and_a_gpu(fake_vllm, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert vllm_available() is False  # vllm (a stub), no GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert vllm_available() is True  # vllm and a GPU
    monkeypatch.delitem(sys.modules, "vllm")
    if importlib.util.find_spec("vllm") is None:
        assert vllm_available() is False  # a GPU, no vllm


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_vllm_is_not_available_here() -> None:
    assert vllm_available() is False


def test_importing_the_module_does_not_import_vllm() -> None:
    code = "import sys, routesh.engine.vllm; assert 'vllm' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
