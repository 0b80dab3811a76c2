"""vLLM in-process, for a machine with a GPU: prefix caching (the stages of one question share the schema
prompt) and the ROUTE LoRA adapter applied per request.

vLLM is optional (`pip install routesh[vllm]`) and heavy to import, so it is imported inside the class;
importing this module works without it. Only the stable offline surface is used: `vllm.LLM`,
`LLM.chat(messages, sampling_params, use_tqdm=, lora_request=)`, `vllm.SamplingParams` and
`vllm.lora.request.LoRARequest`.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from routesh.engine.base import ChatRequest, Completion, FinishReason, GenerationParams, batch_of, truncate_at_stop
from routesh.errors import GenerationCancelled, ModelError

MAX_LORA_RANK = 64
LORA_NAME = "route"
LORA_ID = 1


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


class VLLMEngine:
    """A model loaded into vLLM in this process.

    cancel() sets a flag. An in-process vLLM batch (`LLM.chat`) cannot be interrupted safely from another
    thread (its engine is not thread-safe, and aborting from outside would leave requests behind that the
    next call would pick up), so a cancelled generate() raises GenerationCancelled when the running batch
    ends, discarding its results. On a GPU the batches routesh sends (a few short SQL generations) take
    about a second.
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
        self._cancelled = threading.Event()
        self._lock = threading.Lock()  # one batch at a time: LLM is not thread-safe
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
            self._llm = vllm.LLM(**kwargs)
        except Exception as err:  # CUDA out of memory, unsupported architecture, bad folder...
            raise ModelError(f"vLLM could not load {self.model_path}: {_one_line(err)}") from None
        self._lora = self._lora_request() if self.adapter is not None else None

    def _lora_request(self) -> Any:
        try:
            from vllm.lora.request import LoRARequest
        except ImportError:
            LoRARequest = self._vllm.LoRARequest  # noqa: N806 - older layouts export it at the top
        return LoRARequest(LORA_NAME, LORA_ID, self.adapter)

    def generate(self, requests: Sequence[ChatRequest], params: GenerationParams | None = None) -> list[Completion]:
        requests, params = batch_of(requests, params)
        if not requests:
            return []
        with self._lock:
            if self._llm is None:
                raise ModelError(f"the vLLM engine for {self.name} is closed")
            self._cancelled.clear()
            sampling = self._sampling_params(params)
            start = time.monotonic()
            try:
                outputs = self._llm.chat(
                    [request.as_dicts() for request in requests],
                    sampling,
                    use_tqdm=False,
                    lora_request=self._lora,
                )
            except Exception as err:
                if self._cancelled.is_set():
                    raise GenerationCancelled("generation cancelled") from None
                raise ModelError(f"vLLM failed to generate: {_one_line(err)}") from None
            seconds = time.monotonic() - start
            if self._cancelled.is_set():
                raise GenerationCancelled("generation cancelled")
        if len(outputs) != len(requests):
            raise ModelError(f"vLLM returned {len(outputs)} outputs for {len(requests)} requests")
        return [self._completion(output, params, seconds) for output in outputs]

    def _sampling_params(self, params: GenerationParams) -> Any:
        kwargs: dict[str, Any] = dict(
            temperature=max(0.0, params.temperature),
            max_tokens=params.max_new_tokens,
        )
        stops = [s for s in params.stop if s]
        if stops:
            kwargs["stop"] = stops
        if params.seed is not None:
            kwargs["seed"] = params.seed
        return self._vllm.SamplingParams(**kwargs)

    @staticmethod
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
        )

    def cancel(self) -> None:
        """Flag the running batch as cancelled: generate() raises GenerationCancelled when it ends."""
        self._cancelled.set()

    def close(self) -> None:
        self._cancelled.set()
        llm, self._llm = getattr(self, "_llm", None), None
        del llm  # vLLM frees the GPU when the LLM object goes away

    def __repr__(self) -> str:
        return f"VLLMEngine({self.model_path!r}, name={self.name!r}, adapter={self.adapter!r})"


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text[:300]
