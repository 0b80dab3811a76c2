"""The transformers engine: the CPU default (and a plain GPU without vLLM).

Speed comes from not redoing work. The pipeline's prompts share a long leading part (the schema, in
the leading messages); its key/value cache is computed once, kept in a small LRU across calls, and
every request of a batch continues from a copy of it. Stages that mostly copy SQL from their prompt
can draft tokens from the prompt itself (prompt-lookup decoding).
"""

from __future__ import annotations

import contextlib
import copy
import threading
import warnings
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from routesh.engine.base import ChatRequest, Completion, GenerationParams, batch_of, truncate_at_stop
from routesh.errors import GenerationCancelled, ModelError
from routesh.engine.lookup import greedy_lookup_decode

_MIN_PREFIX_TOKENS = 16  # shorter shared prefixes are not worth caching


@dataclass
class _Encoded:
    ids: list[int]
    prefix: tuple[int, ...]  # the tokens of all messages but the last, when they are a prefix of ids


def cpu_has_bf16() -> bool:
    """bf16 matmuls are fast on CPUs with AVX512-BF16 or AMX; elsewhere they are emulated and slow."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


class TransformersEngine:
    backend = "transformers"

    def __init__(self, folder: Path | str, *, name: str | None = None, device: str | None = None,
                 dtype: str | None = None, adapter: str | Path | None = None, prefix_cache_size: int = 4):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        self.folder = Path(folder)
        self.name = name or self.folder.name
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = _pick_dtype(torch, dtype, self.device)
        try:
            with _quiet_transformers():
                self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
                model = AutoModelForCausalLM.from_pretrained(self.folder, dtype=self.dtype)
        except Exception as err:
            raise ModelError(f"cannot load the model in {self.folder}: {type(err).__name__}: "
                             f"{str(err).strip().splitlines()[0] if str(err).strip() else ''}") from None
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.base_model = model.to(self.device).eval()
        self.model = self.base_model
        self.adapter: Path | None = None
        self._prefix_cache: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self._prefix_cache_size = prefix_cache_size
        self._busy = threading.Lock()
        self._cancel = threading.Event()
        if adapter:
            self.apply_adapter(adapter)

    # ---- adapters -----------------------------------------------------------------------------------

    def apply_adapter(self, path: str | Path) -> None:
        """Put a LoRA adapter (a peft folder) on top of the base model, replacing any earlier one."""
        from peft import PeftModel

        with self._busy:
            self._drop_adapter()
            try:
                with warnings.catch_warnings():  # peft asks transformers a deprecated question; not ours to fix
                    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
                    self.model = PeftModel.from_pretrained(self.base_model, str(path)).eval()
            except Exception as err:
                raise ModelError(f"cannot apply the adapter in {path}: {type(err).__name__}: {err}") from None
            self.adapter = Path(path)
            self._prefix_cache.clear()  # the adapter changes every key and value

    def _drop_adapter(self) -> None:
        if self.adapter is None:
            return
        self.base_model = self.model.unload()  # peft's LoRA layers out, base weights untouched
        self.model = self.base_model
        self.adapter = None
        self._prefix_cache.clear()

    # ---- generation ---------------------------------------------------------------------------------

    def cancel(self) -> None:
        self._cancel.set()

    def close(self) -> None:
        self._prefix_cache.clear()

    def generate(self, requests: Sequence[ChatRequest], params: GenerationParams | None = None) -> list[Completion]:
        requests, params = batch_of(requests, params)
        if not requests:
            return []
        with self._busy:
            self._cancel.clear()
            encoded = [self._encode(r) for r in requests]
            prefix = _shared_prefix(encoded)
            if params.prompt_lookup and params.temperature == 0:
                # drafting from the prompt works one sequence at a time
                return [self._run_lookup(e, prefix, params) for e in encoded]
            return self._run(encoded, prefix, params)

    def _encode(self, request: ChatRequest) -> _Encoded:
        messages = request.as_dicts()
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        prefix: tuple[int, ...] = ()
        if len(messages) > 1:
            lead = self.tokenizer.apply_chat_template(messages[:-1], tokenize=False)
            if text.startswith(lead):
                lead_ids = self.tokenizer(lead, add_special_tokens=False)["input_ids"]
                if ids[: len(lead_ids)] == lead_ids and len(lead_ids) < len(ids):
                    prefix = tuple(lead_ids)
        return _Encoded(ids, prefix)

    def _run(self, batch: list[_Encoded], prefix: tuple[int, ...], params: GenerationParams) -> list[Completion]:
        torch = self._torch
        pad = self.tokenizer.pad_token_id
        started = time.perf_counter()
        first_token: list[float] = []
        suffixes = [e.ids[len(prefix):] for e in batch]
        width = max(map(len, suffixes))
        # Rows are prefix + padding + suffix: padding sits after the shared prefix, so the prefix's
        # cache serves every row; position ids come from the attention mask and skip the holes.
        rows = [list(prefix) + [pad] * (width - len(s)) + s for s in suffixes]
        mask = [[1] * len(prefix) + [0] * (width - len(s)) + [1] * len(s) for s in suffixes]
        input_ids = torch.tensor(rows, device=self.device)
        attention = torch.tensor(mask, device=self.device)
        kwargs: dict[str, Any] = {}
        if prefix:
            kwargs["past_key_values"] = self._prefix_kv(prefix, len(batch))
        if params.temperature > 0:
            if params.seed is not None:
                torch.manual_seed(params.seed)
            kwargs.update(do_sample=True, temperature=params.temperature)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids, attention_mask=attention, max_new_tokens=params.max_new_tokens,
                pad_token_id=pad, stopping_criteria=[_Watch(self._cancel, first_token, started)], **kwargs,
            )
        if self._cancel.is_set():
            raise GenerationCancelled("generation cancelled")
        seconds = time.perf_counter() - started
        first = first_token[0] if first_token else None
        return [self._completion(row[len(rows[i]):].tolist(), batch[i], len(prefix), params, seconds, first)
                for i, row in enumerate(output)]

    def _run_lookup(self, encoded: _Encoded, prefix: tuple[int, ...], params: GenerationParams) -> Completion:
        from transformers import DynamicCache

        started = time.perf_counter()
        cache = self._prefix_kv(prefix, 1) if prefix else DynamicCache(config=self.model.config)

        def should_stop(tokens: list[int]) -> bool:
            if self._cancel.is_set():
                return True
            return bool(params.stop) and truncate_at_stop(self.tokenizer.decode(tokens), params.stop)[1]

        reference = self.tokenizer(params.draft_text, add_special_tokens=False)["input_ids"] if params.draft_text else []
        result = greedy_lookup_decode(self.model, encoded.ids, cache, max_new_tokens=params.max_new_tokens,
                                      eos=self._eos_ids(), should_stop=should_stop, clock=time.perf_counter,
                                      reference=reference)
        if self._cancel.is_set():
            raise GenerationCancelled("generation cancelled")
        completion = self._completion(result.tokens, encoded, len(prefix), params, time.perf_counter() - started,
                                      result.first_token_seconds)
        completion.extra.update(forward_passes=result.forward_passes, drafted=result.drafted,
                                accepted=result.accepted)
        return completion

    def _eos_ids(self) -> set[int]:
        return set(_as_list(self.model.generation_config.eos_token_id)) | {self.tokenizer.eos_token_id}

    def _completion(self, generated: list[int], encoded: _Encoded, cached: int, params: GenerationParams,
                    seconds: float, first: float | None) -> Completion:
        eos = self._eos_ids()
        ended = next((i for i, t in enumerate(generated) if t in eos), None)
        tokens = generated[:ended] if ended is not None else generated
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        text, stopped = truncate_at_stop(text, params.stop)
        finish = "stop" if ended is not None or stopped else ("length" if len(tokens) >= params.max_new_tokens else "stop")
        return Completion(text=text, prompt_tokens=len(encoded.ids), output_tokens=len(tokens), finish_reason=finish,
                          seconds=seconds, first_token_seconds=first, cached_prompt_tokens=cached)

    def _prefix_kv(self, prefix: tuple[int, ...], batch_size: int) -> Any:
        """A fresh copy of the prefix's KV cache for `batch_size` rows (computed once, then reused)."""
        cache = self._prefix_cache.get(prefix)
        if cache is None:
            from transformers import DynamicCache

            torch = self._torch
            with torch.inference_mode():
                out = self.model(input_ids=torch.tensor([list(prefix)], device=self.device),
                                 past_key_values=DynamicCache(config=self.model.config), use_cache=True)
            cache = out.past_key_values
            self._prefix_cache[prefix] = cache
            while len(self._prefix_cache) > self._prefix_cache_size:
                self._prefix_cache.popitem(last=False)
        self._prefix_cache.move_to_end(prefix)
        copied = copy.deepcopy(cache)  # generate() appends to the cache it is given
        if batch_size > 1:
            copied.batch_repeat_interleave(batch_size)
        return copied


class _Watch:
    """A stopping criterion that never stops on its own: it notes when the first token arrived and
    ends generation for every row once cancel() was called."""

    def __init__(self, cancel: threading.Event, first_token: list[float], started: float):
        self._cancel, self._first, self._started = cancel, first_token, started

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        if not self._first:
            self._first.append(time.perf_counter() - self._started)
        return torch.full((input_ids.shape[0],), self._cancel.is_set(), dtype=torch.bool, device=input_ids.device)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No progress bar or info chatter for a load that takes seconds (the shell owns the terminal)."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _shared_prefix(batch: list[_Encoded]) -> tuple[int, ...]:
    """The leading messages' tokens when every request has the same ones (and enough of them)."""
    first = batch[0].prefix
    if len(first) >= _MIN_PREFIX_TOKENS and all(e.prefix == first for e in batch):
        return first
    return ()


def _pick_dtype(torch: Any, dtype: str | None, device: str) -> Any:
    if dtype:
        return getattr(torch, dtype)
    if device.startswith("cuda"):
        return torch.bfloat16
    return torch.bfloat16 if cpu_has_bf16() else torch.float32


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]
