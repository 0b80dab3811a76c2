"""VLLMEngine's control flow, with a fake `vllm` module standing in for the real one (no GPU here).

The fakes record what the engine asks of vLLM's stable offline surface: `vllm.LLM(...)`,
`LLM.chat(messages, sampling_params, use_tqdm=, lora_request=)`, `vllm.SamplingParams(...)` and
`vllm.lora.request.LoRARequest(name, id, path)`.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import threading
import types
from types import SimpleNamespace

import pytest

from routesh.cancel import CancelToken
from routesh.engine.base import ChatRequest, GenerationParams
from routesh.errors import GenerationCancelled, ModelError
from routesh.engine.vllm import VLLMEngine, vllm_available
from tests.helpers import InThread, wait_until


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
        self.entered = threading.Semaphore(0)  # released once per chat() call, before the gate
        self.chat_error: Exception | None = None  # read as a call enters, raised after the gate
        self.unreadable = False  # outputs without their .outputs list
        self.thread_names: set[str] = set()
        FakeLLM.instances.append(self)

    def chat(self, messages, sampling_params=None, use_tqdm=True, lora_request=None, chat_template=None):
        error, gate = self.chat_error, self.gate
        self.calls.append(dict(messages=messages, sampling_params=sampling_params, use_tqdm=use_tqdm,
                               lora_request=lora_request))
        self.thread_names.add(threading.current_thread().name)
        self.started.set()
        self.entered.release()
        if gate is not None:
            gate.wait(10)
        if error is not None:
            raise error
        outputs = []
        for i, conversation in enumerate(messages):
            prompt = " ".join(m["content"] for m in conversation)
            text, finish = self.replies[i] if self.replies else (f"answer to {conversation[-1]['content']}", "stop")
            outputs.append(SimpleNamespace(
                prompt_token_ids=list(range(len(prompt.split()))),
                outputs=[] if self.unreadable else [
                    SimpleNamespace(text=text, token_ids=list(range(len(text.split()))), finish_reason=finish,
                                    cumulative_logprob=-0.5 * len(text.split()))],
                num_cached_tokens=2 * i,
                metrics=SimpleNamespace(arrival_time=100.0, first_token_time=100.25),
            ))
        return outputs

    def asked(self, call: int) -> list[str]:
        """The last message of every conversation in that chat() call."""
        return [conversation[-1]["content"] for conversation in self.calls[call]["messages"]]


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


def test_each_request_can_have_its_own_parameters(fake_vllm) -> None:
    engine = VLLMEngine("/m", name="m")
    [llm] = FakeLLM.instances
    greedy, sampled = GenerationParams(max_new_tokens=8), GenerationParams(max_new_tokens=8, temperature=0.7, seed=3)
    engine.generate([ask("q"), ask("q")], [greedy, sampled])
    assert [sp.kwargs["temperature"] for sp in llm.calls[0]["sampling_params"]] == [0.0, 0.7]
    assert [sp.kwargs.get("seed") for sp in llm.calls[0]["sampling_params"]] == [None, 3]
    with pytest.raises(ValueError, match="2 generation parameters for 1 requests"):
        engine.generate([ask("q")], [greedy, sampled])


def test_outputs_map_to_completions_in_order(fake_vllm) -> None:
    engine = VLLMEngine("/m", name="m")
    [llm] = FakeLLM.instances
    llm.replies = [("SELECT 1", "stop"), ("SELECT a , b FROM", "length"), ("SELECT 3", "stop")]
    done = engine.generate([ask("one"), ask("two words"), ask("three more words")],
                           GenerationParams(max_new_tokens=32, seed=7))
    [call] = llm.calls
    assert call["messages"] == [ask(q).as_dicts() for q in ("one", "two words", "three more words")]
    assert call["use_tqdm"] is False
    # one seed for three requests: each its own (seed + i), so identical requests would draw differently
    assert [sp.kwargs for sp in call["sampling_params"]] == [
        dict(temperature=0.0, max_tokens=32, logprobs=0, seed=seed) for seed in (7, 8, 9)]
    assert [c.text for c in done] == ["SELECT 1", "SELECT a , b FROM", "SELECT 3"]
    assert [c.logprob for c in done] == [-1.0, -2.5, -1.0]
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
    assert [sp.kwargs["stop"] for sp in llm.calls[0]["sampling_params"]] == [[";", "</sql>"]] * 2
    assert [(c.text, c.finish_reason) for c in done] == [("SELECT 1", "stop"), ("SELECT 2", "stop")]


def test_sampling_temperature(fake_vllm) -> None:
    engine = VLLMEngine("/m", name="m")
    engine.generate([ask("a")], GenerationParams(temperature=0.7))
    assert FakeLLM.instances[0].calls[0]["sampling_params"][0].kwargs["temperature"] == 0.7


def answer(engine: VLLMEngine, text: str, **kwargs) -> str:
    """One call's text, failing (not hanging) when the worker no longer serves."""
    return InThread(engine.generate, [ask(text)], **kwargs).result()[0].text


def busy(engine: VLLMEngine, llm: FakeLLM) -> tuple[InThread, threading.Event]:
    """A first call that holds the worker inside chat() until the returned gate opens: calls made
    meanwhile gather for the next batch."""
    gate = llm.gate = threading.Event()
    first = InThread(engine.generate, [ask("first")])
    assert llm.entered.acquire(timeout=5)
    return first, gate


def test_concurrent_callers_share_one_chat_call(fake_vllm) -> None:
    engine = VLLMEngine("/m", name="route", adapter="/adapters/route")
    [llm] = FakeLLM.instances
    first, gate = busy(engine, llm)
    params = {n: GenerationParams(temperature=0.1 * n, max_new_tokens=10 + n, stop=(";",)) for n in range(4)}
    callers = {n: InThread(engine.generate, [ask(f"{n}a"), ask(f"{n}b"), ask(f"{n}c")], params[n]) for n in range(4)}
    wait_until(lambda: len(engine._gather) == 4)
    llm.gate = None
    gate.set()
    assert [c.text for c in first.result()] == ["answer to first"]
    for n, caller in callers.items():
        assert [c.text for c in caller.result()] == [f"answer to {n}{x}" for x in "abc"]
    assert len(llm.calls) == 2  # the four callers: one batch
    asked, sampling = llm.asked(1), llm.calls[1]["sampling_params"]
    assert sorted(asked) == sorted(f"{n}{x}" for n in range(4) for x in "abc")
    for n in range(4):
        at = asked.index(f"{n}a")
        assert asked[at:at + 3] == [f"{n}a", f"{n}b", f"{n}c"]  # a caller's requests stay together, in order
        assert [sp.kwargs for sp in sampling[at:at + 3]] == [
            dict(temperature=0.1 * n, max_tokens=10 + n, logprobs=0, stop=[";"])] * 3  # and keep its own parameters
    assert [call["lora_request"].args for call in llm.calls] == [("route", 1, "/adapters/route")] * 2
    assert llm.thread_names == {"routesh-vllm"}  # one worker thread talks to the LLM
    [seconds] = {c.seconds for caller in callers.values() for c in caller.result()}  # one batch, one time


def test_a_cancelled_caller_waiting_for_the_next_batch_returns_at_once(fake_vllm) -> None:
    engine = VLLMEngine("/m", name="m")
    [llm] = FakeLLM.instances
    first, gate = busy(engine, llm)
    token = CancelToken()
    before, cancelled, after = (InThread(engine.generate, [ask("before")]),
                                InThread(engine.generate, [ask("cancelled")], cancel=token),
                                InThread(engine.generate, [ask("after")]))
    wait_until(lambda: len(engine._gather) == 3)
    token.cancel()
    with pytest.raises(GenerationCancelled):
        cancelled.result(2)  # while the running batch is still blocked
    llm.gate = None
    gate.set()
    assert first.result()[0].text == "answer to first"
    assert before.result()[0].text == "answer to before" and after.result()[0].text == "answer to after"
    assert sorted(llm.asked(1)) == ["after", "before"]  # its request was never submitted


def test_a_cancelled_caller_inside_the_running_batch_returns_at_once(fake_vllm) -> None:
    engine = VLLMEngine("/m", name="m")
    [llm] = FakeLLM.instances
    first, gate = busy(engine, llm)
    token = CancelToken()
    mine, theirs = InThread(engine.generate, [ask("mine")], cancel=token), InThread(engine.generate, [ask("theirs")])
    wait_until(lambda: len(engine._gather) == 2)
    llm.gate = second_gate = threading.Event()
    gate.set()
    assert llm.entered.acquire(timeout=5)  # the second batch, with both, is running
    assert sorted(llm.asked(1)) == ["mine", "theirs"]
    token.cancel()
    with pytest.raises(GenerationCancelled):
        mine.result(2)  # the batch is not interrupted, but its caller does not wait for it
    assert not theirs.finished(0.05)
    llm.gate = None
    second_gate.set()
    assert theirs.result()[0].text == "answer to theirs"
    assert first.result()[0].text == "answer to first"
    assert answer(engine, "next", cancel=CancelToken()) == "answer to next"


def test_cancel_stops_every_call_in_flight_and_not_the_next(fake_vllm) -> None:
    engine = VLLMEngine("/m", name="m")
    [llm] = FakeLLM.instances
    first, gate = busy(engine, llm)
    queued = InThread(engine.generate, [ask("queued")])
    wait_until(lambda: len(engine._gather) == 1)
    engine.cancel()
    for caller in (first, queued):
        with pytest.raises(GenerationCancelled):
            caller.result(2)
    assert len(llm.calls) == 1  # the running batch is still inside chat()
    llm.gate = None
    gate.set()
    assert answer(engine, "next") == "answer to next"  # the next call is not cancelled
    assert [llm.asked(n) for n in range(len(llm.calls))] == [["first"], ["next"]]


def test_a_failing_batch_fails_its_callers_and_the_engine_serves_the_next(fake_vllm) -> None:
    engine = VLLMEngine("/m", name="m")
    [llm] = FakeLLM.instances
    first, gate = busy(engine, llm)
    callers = [InThread(engine.generate, [ask(q)]) for q in ("x", "y")]
    wait_until(lambda: len(engine._gather) == 2)
    llm.chat_error = RuntimeError("CUDA error: an illegal memory access\nwas encountered")
    llm.gate = None
    gate.set()
    assert first.result()[0].text == "answer to first"  # its batch started before the error
    for caller in callers:
        with pytest.raises(ModelError) as caught:
            caller.result()
        assert str(caught.value) == "vLLM failed to generate: CUDA error: an illegal memory access was encountered"
    llm.chat_error = None
    assert answer(engine, "z") == "answer to z"


def test_an_unreadable_answer_fails_its_batch_only(fake_vllm) -> None:
    engine = VLLMEngine("/m", name="m")
    [llm] = FakeLLM.instances
    llm.unreadable = True
    with pytest.raises(ModelError, match=r"^vLLM gave an answer routesh cannot read: "):
        answer(engine, "a")
    llm.unreadable = False
    assert answer(engine, "b") == "answer to b"


def test_bad_parameters_fail_their_call_only(fake_vllm, monkeypatch: pytest.MonkeyPatch) -> None:
    def strict(**kwargs):
        if kwargs["max_tokens"] < 1:
            raise ValueError("max_tokens must be at least 1, got 0.")
        return FakeSamplingParams(**kwargs)

    monkeypatch.setattr(fake_vllm, "SamplingParams", strict)
    engine = VLLMEngine("/m", name="m")
    with pytest.raises(ModelError, match=r"^vLLM refused the generation parameters: max_tokens must be at least 1"):
        engine.generate([ask("a")], GenerationParams(max_new_tokens=0))
    assert FakeLLM.instances[0].calls == []
    assert answer(engine, "b") == "answer to b"


def test_close_fails_waiting_callers_and_stops_the_worker(fake_vllm) -> None:
    engine = VLLMEngine("/m", name="m")
    [llm] = FakeLLM.instances
    assert engine._worker.daemon
    first, gate = busy(engine, llm)
    queued = InThread(engine.generate, [ask("queued")])
    wait_until(lambda: len(engine._gather) == 1)
    closing = InThread(engine.close)
    for caller in (first, queued):
        with pytest.raises(ModelError, match=r"^the vLLM engine for m is closed$"):
            caller.result(2)  # at once, though the running batch has not ended
    assert not closing.finished(0.05)  # close() waits for the running batch to end ...
    gate.set()
    closing.result()
    assert not engine._worker.is_alive()  # ... and then the worker has stopped
    assert llm.asked(0) == ["first"] and len(llm.calls) == 1  # the queued call was never submitted
    with pytest.raises(ModelError, match="closed"):
        engine.generate([ask("later")])
    engine.close()  # twice is fine


def test_an_engine_dropped_without_close_stops_its_worker(fake_vllm) -> None:
    engine = VLLMEngine("/m", name="m")
    worker = engine._worker
    engine.generate([ask("a")])
    del engine
    gc.collect()
    worker.join(2)
    assert not worker.is_alive()


def test_the_worker_never_keeps_the_process_from_exiting(tmp_path) -> None:
    """A process that leaves a call blocked inside vLLM still exits."""
    script = tmp_path / "exits.py"
    script.write_text(textwrap.dedent("""
        import sys, threading, types
        vllm = types.ModuleType("vllm")
        class LLM:
            def __init__(self, **kwargs): pass
            def chat(self, *args, **kwargs): threading.Event().wait()  # a batch that never ends
        vllm.LLM, vllm.SamplingParams = LLM, lambda **kwargs: kwargs
        sys.modules["vllm"] = vllm
        from routesh.engine.base import ChatRequest
        from routesh.engine.vllm import VLLMEngine
        engine = VLLMEngine("/m", name="m")
        threading.Thread(target=engine.generate, args=([ChatRequest.of(("user", "q"))],), daemon=True).start()
        print("left running")
    """))
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert (run.returncode, run.stdout.strip()) == (0, "left running"), run.stderr


def test_errors_are_one_line(fake_vllm) -> None:
    FakeLLM.init_error = RuntimeError("CUDA out of memory.\nTried to allocate 2.00 GiB")
    with pytest.raises(ModelError) as caught:
        VLLMEngine("/m", name="m")
    assert str(caught.value) == "vLLM could not load /m: CUDA out of memory. Tried to allocate 2.00 GiB"
    FakeLLM.init_error = None
    engine = VLLMEngine("/m", name="m")
    FakeLLM.instances[-1].chat_error = ValueError("prompt too long\n(4096 > 2048)")
    with pytest.raises(ModelError, match=r"^vLLM failed to generate: prompt too long \(4096 > 2048\)$"):
        answer(engine, "a")
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
