"""vLLM in-process, for a machine with a GPU: prefix caching (the stages of one question share the schema
prompt) and the ROUTE LoRA adapter applied per request.

vLLM is optional (`pip install routesh[vllm]`) and heavy to import, so it is imported inside the class;
importing this module works without it. Only the stable offline surface is used: `vllm.LLM`,
`LLM.chat(conversations, sampling_params, use_tqdm=, lora_request=)`, `vllm.SamplingParams` and
`vllm.lora.request.LoRARequest`.

Many callers, one LLM. `LLM` is not thread-safe and its offline API has no stable way to add requests to
a batch that is already running (that is what `vllm serve` and the OpenAI engine are for), so concurrent
generate() calls are gathered (routesh/engine/gather.py): one worker thread takes every call waiting and
submits all their conversations in ONE `LLM.chat`, with a list of SamplingParams (one per conversation,
so each caller keeps its own temperature, max tokens, stops and seed) and the engine's one LoRARequest
(`chat` takes a single one, applied to every conversation), then hands each caller its own outputs in
order. Calls arriving meanwhile make up the next batch, which starts when the running one has ended.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from routesh.engine.base import (ChatRequest, Completion, FinishReason, GenerationParams, Params, batch_of,
                                 truncate_at_stop)
from routesh.engine.gather import Gather, Pending
from routesh.errors import ModelError

if TYPE_CHECKING:
    from routesh.cancel import CancelToken

MAX_LORA_RANK = 64
LORA_NAME = "route"
LORA_ID = 1
CLOSE_WAIT_SECONDS = 10.0  # close() waits this long for a running batch to end, so the GPU is free after it


def vllm_available() -> bool:
    """Whether VLLMEngine can run here: vLLM installed and a CUDA GPU visible. Checked without importing
    vLLM itself (which takes seconds); used to pick the backend automatically."""
    try:
        installed = importlib.util.find_spec("vllm") is not None
    except (ImportError, ValueError):  # a half-imported or stubbed module
        installed = sys.modules.get("vllm") is not None
    if not installed:
        return False
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # a broken torch or CUDA install: not available
        return False


@dataclass(frozen=True)
class _Call:
    """One generate() call as the worker sees it."""

    requests: list[ChatRequest]
    params: list[GenerationParams]  # one per request
    sampling: list[Any]  # their vllm.SamplingParams


class VLLMEngine:
    """A model loaded into vLLM in this process, shared by every thread that calls generate().

    A cancelled call (its own token, or cancel() for all) raises GenerationCancelled at once. Its requests
    still waiting are never submitted. Those already in the running batch stay there: an in-process
    `LLM.chat` cannot be interrupted safely from outside (the LLM is not thread-safe, so nothing may reach
    into it while chat() runs, and chat() takes no cancellation), so they run to the end of that batch
    with the others and their outputs are discarded. On a GPU the batches routesh sends take a second or
    a few; calls that were not cancelled are not affected at all.
    """

    backend = "vllm"

    def __init__(
        self,
        model_path: str,
        *,
        name: str,
        adapter: str | None = None,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.85,
        max_model_len: int | None = None,
        dtype: str = "bfloat16",
    ):
        self.name = name
        self.model_path = str(model_path)
        self.adapter = str(adapter) if adapter is not None else None
        try:
            import vllm
        except ImportError as err:
            raise ModelError(f"the vLLM backend needs vLLM, which is not installed ({err}): "
                             "pip install 'routesh[vllm]'") from None
        self._vllm = vllm
        kwargs: dict[str, Any] = dict(
            model=self.model_path,
            enable_prefix_caching=True,
            enable_lora=self.adapter is not None,
            max_lora_rank=MAX_LORA_RANK,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            dtype=dtype,
        )
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        try:
            llm = vllm.LLM(**kwargs)
        except Exception as err:  # CUDA out of memory, unsupported architecture, bad folder...
            raise ModelError(f"vLLM could not load {self.model_path}: {_one_line(err)}") from None
        lora = self._lora_request() if self.adapter is not None else None
        self._gather: Gather[_Call, list[Completion]] = Gather()
        # The worker holds the LLM, not the engine: an engine dropped without close() is still collected,
        # and the finalizer then stops the worker, which lets go of the LLM (and the GPU).
        self._worker = threading.Thread(target=_serve, args=(self._gather, llm, lora),
                                        name="routesh-vllm", daemon=True)
        self._stop = weakref.finalize(self, self._gather.close, ModelError(f"the vLLM engine for {name} is closed"))
        self._worker.start()

    def _lora_request(self) -> Any:
        try:
            from vllm.lora.request import LoRARequest
        except ImportError:
            LoRARequest = self._vllm.LoRARequest  # noqa: N806 - older layouts export it at the top
        return LoRARequest(LORA_NAME, LORA_ID, self.adapter)

    def generate(self, requests: Sequence[ChatRequest], params: Params = None, *,
                 cancel: CancelToken | None = None) -> list[Completion]:
        requests, each = batch_of(requests, params)
        if not requests:
            return []
        return self._gather.submit(_Call(requests, each, [self._sampling_params(p) for p in each]), cancel)

    def _sampling_params(self, params: GenerationParams) -> Any:
        kwargs: dict[str, Any] = dict(
            temperature=max(0.0, params.temperature),
            max_tokens=params.max_new_tokens,
            logprobs=0,  # the chosen tokens' own log-probabilities: the completion's likelihood
        )
        stops = [s for s in params.stop if s]
        if stops:
            kwargs["stop"] = stops
        if params.seed is not None:
            kwargs["seed"] = params.seed
        try:  # built on the caller's thread, so bad parameters fail this call only
            return self._vllm.SamplingParams(**kwargs)
        except Exception as err:  # vLLM validates them (e.g. max_tokens must be at least 1)
            raise ModelError(f"vLLM refused the generation parameters: {_one_line(err)}") from None

    def cancel(self) -> None:
        """Make every generate() in flight raise GenerationCancelled now; later calls are not affected."""
        self._gather.cancel_all()

    def close(self) -> None:
        """Fail every call in flight and every later one with ModelError, stop the worker and let go of
        the LLM (vLLM frees the GPU when it goes away)."""
        self._stop()
        if self._worker is not threading.current_thread():
            self._worker.join(CLOSE_WAIT_SECONDS)  # a running batch ends first; a stuck one is left behind

    def __repr__(self) -> str:
        return f"VLLMEngine({self.model_path!r}, name={self.name!r}, adapter={self.adapter!r})"


def _serve(gather: Gather[_Call, list[Completion]], llm: Any, lora: Any) -> None:
    """The worker thread: one LLM.chat per gathered batch, until the gather is closed."""
    while batch := gather.take_all(block=True):
        try:
            _run_batch(llm, lora, batch)
        except Exception as err:  # an output of an unexpected shape: this batch fails, the next is served
            _fail(batch, f"vLLM gave an answer routesh cannot read: {_one_line(err)}")


def _run_batch(llm: Any, lora: Any, batch: list[Pending[_Call, list[Completion]]]) -> None:
    calls = [pending for pending in batch if not pending.cancelled]  # cancelled since taken: not submitted
    if not calls:
        return
    conversations = [request.as_dicts() for pending in calls for request in pending.item.requests]
    sampling = [sampling for pending in calls for sampling in pending.item.sampling]
    start = time.monotonic()
    try:
        outputs = llm.chat(conversations, sampling, use_tqdm=False, lora_request=lora)
    except Exception as err:
        _fail(calls, f"vLLM failed to generate: {_one_line(err)}")
        return
    seconds = time.monotonic() - start
    if len(outputs) != len(conversations):
        _fail(calls, f"vLLM returned {len(outputs)} outputs for {len(conversations)} requests")
        return
    at = 0
    for pending in calls:  # a caller cancelled meanwhile ignores its resolve()
        size = len(pending.item.requests)
        pending.resolve([_completion(output, params, seconds)
                         for output, params in zip(outputs[at:at + size], pending.item.params)])
        at += size


def _fail(batch: list[Pending[_Call, list[Completion]]], message: str) -> None:
    for pending in batch:
        pending.fail(ModelError(message))  # one error each: callers raise it on their own threads


def _completion(output: Any, params: GenerationParams, seconds: float) -> Completion:
    choice = output.outputs[0]
    text, found = truncate_at_stop(choice.text or "", params.stop)
    reason: FinishReason = "length" if choice.finish_reason == "length" and not found else "stop"
    first_token = None
    metrics = getattr(output, "metrics", None)
    arrival = getattr(metrics, "arrival_time", None)
    first = getattr(metrics, "first_token_time", None)
    if isinstance(arrival, (int, float)) and isinstance(first, (int, float)) and first >= arrival:
        first_token = float(first - arrival)
    cached = getattr(output, "num_cached_tokens", None)
    return Completion(
        text=text,
        prompt_tokens=len(output.prompt_token_ids or ()),
        output_tokens=len(choice.token_ids or ()),
        finish_reason=reason,
        seconds=seconds,
        first_token_seconds=first_token,
        cached_prompt_tokens=cached if isinstance(cached, int) else 0,
        logprob=logprob if isinstance(logprob := getattr(choice, "cumulative_logprob", None), (int, float)) else None,
    )


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text[:300]
