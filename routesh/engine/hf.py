"""The transformers engine: the CPU default (and a plain GPU without vLLM).

Speed comes from not redoing work and from decoding many rows at once. The pipeline's prompts share a
long leading part (the schema, in the leading messages); its key/value cache is computed once and kept
(prefix_cache.py), and every request continues from it. generate() calls from any number of threads
are served by one scheduler thread: their requests join one running batch between decoding steps and
leave it when done (batch.py), so N questions in flight cost little more than one — decoding reads
the weights once per step whatever the number of rows. Rows that mostly copy their prompt feed drafts
of what comes next (prompt-lookup decoding, lookup.py) and gain several tokens in one step. Greedy
output is what the request gives alone: padding is masked out, positions are each row's own.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from routesh.engine.base import ChatRequest, Completion, GenerationParams, Params, batch_of, truncate_at_stop
from routesh.engine.batch import Row, RunningBatch, forward, next_tokens
from routesh.engine.gather import Gather, Pending
from routesh.engine.lookup import DRAFT_TOKENS, propose
from routesh.engine.prefix_cache import DEFAULT_BYTES, CachedPrefix, PrefixCache, cache_bytes
from routesh.errors import ModelError
from routesh.logs import quiet_transformers

if TYPE_CHECKING:
    from routesh.cancel import CancelToken

_MIN_PREFIX_TOKENS = 16  # shorter shared prefixes are not worth caching
MAX_BATCH_ROWS = 16  # rows decoding at once; past this on a CPU a step costs more than it saves
MAX_BATCH_TOKENS = 64 * 1024  # rows × padded length: bounds the memory of the batch's cache
STEP_TOKENS = 96  # rows × tokens fed in one step, drafts included: past this a step costs more than one
# how a LoRA adapter is applied (engine/lora.py): merged into the bf16 weights, it costs nothing at each step; on
# the held-out questions it wrote 97 of 100 answers as the unrounded adapter did, with the same accuracy
# (docs/benchmarks.md compares the modes)
ADAPTER_MODE = "merged-bf16"


@dataclass
class _Encoded:
    ids: list[int]
    lead: str = ""  # the text of all messages but the last, when its tokens are a prefix of ids
    lead_ids: tuple[int, ...] = ()


@dataclass
class EngineStats:
    """Where the scheduler's time went, since the engine was loaded (for benchmarks)."""

    prefixes: int = 0  # leading parts computed (not found in the prefix cache)
    prefix_tokens: int = 0
    prefix_seconds: float = 0.0
    prefills: int = 0  # prompts read, from their cached prefix on
    prefill_tokens: int = 0  # prompt tokens computed (cached prefixes excluded)
    prefill_seconds: float = 0.0  # prefix computations included
    steps: int = 0
    step_rows: int = 0  # rows over all steps: step_rows / steps is the mean batch
    step_tokens: int = 0  # tokens fed over all steps, drafts included
    tokens_kept: int = 0  # tokens the steps produced
    step_seconds: float = 0.0


@dataclass(eq=False)
class _Call:
    """One generate() call: its rows go through the batch one by one; its caller (waiting in the
    gather) gets the completions once all of them are done."""

    size: int
    started: float = field(default_factory=time.perf_counter)
    results: dict[int, Completion] = field(default_factory=dict)
    pending: Pending[list[Row], list[Completion]] | None = None  # set when the scheduler takes the call

    @property
    def gone(self) -> bool:
        """Cancelled, failed or answered: its rows have nothing left to do."""
        return self.pending is None or self.pending.done

    def finish(self, slot: int, completion: Completion) -> None:
        self.results[slot] = completion
        if len(self.results) == self.size and self.pending is not None:
            seconds = time.perf_counter() - self.started
            for c in self.results.values():
                c.seconds = seconds
            self.pending.resolve([self.results[i] for i in range(self.size)])

    def fail(self, error: BaseException) -> None:
        if self.pending is not None:
            self.pending.fail(error)


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
                 dtype: str | None = None, adapter: str | Path | None = None, adapter_mode: str = ADAPTER_MODE,
                 prefix_cache_bytes: int = DEFAULT_BYTES, max_batch_rows: int = MAX_BATCH_ROWS,
                 max_batch_tokens: int = MAX_BATCH_TOKENS):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        self.folder = Path(folder)
        self.name = name or self.folder.name
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        # "int8": float32 weights, then every Linear quantized per output channel (dynamic: activations in float)
        self.quantization = "int8" if dtype == "int8" else None
        self.dtype = torch.float32 if self.quantization else _pick_dtype(torch, dtype, self.device)
        quiet_transformers()  # no progress bar or chatter on the shell's screen
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
            model = AutoModelForCausalLM.from_pretrained(self.folder, dtype=self.dtype)
        except Exception as err:
            raise ModelError(f"cannot load the model in {self.folder}: {type(err).__name__}: "
                             f"{str(err).strip().splitlines()[0] if str(err).strip() else ''}") from None
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.base_model = model.to(self.device).eval()
        if self.quantization:
            self.base_model = _int8(self.base_model)
        self.model = self.base_model
        self.adapter: Path | None = None
        self.adapter_mode: str | None = None  # how the adapter is applied (engine/lora.py)
        self._folded: dict[str, Any] | None = None  # the Linears a folded adapter replaced
        self._eos = set(_as_list(model.generation_config.eos_token_id)) | {self.tokenizer.eos_token_id}
        self._prefix_cache = PrefixCache(prefix_cache_bytes)
        self.max_batch_rows, self.max_batch_tokens = max_batch_rows, max_batch_tokens
        # The scheduler: callers submit their rows to the gather and wait; one thread takes them into
        # _waiting, then into the batch. It holds _model_lock for each step, so an adapter never
        # changes in the middle of one.
        self._gather: Gather[list[Row], list[Completion]] = Gather()
        self._waiting: deque[Row] = deque()  # taken from the gather, not yet in the batch
        self._batch = RunningBatch(self.model, self.device)
        self._model_lock = threading.Lock()
        self._worker_lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self.stats = EngineStats()
        if adapter:
            self.apply_adapter(adapter, adapter_mode)

    # ---- adapters -----------------------------------------------------------------------------------

    def apply_adapter(self, path: str | Path, mode: str = ADAPTER_MODE) -> None:
        """Put a LoRA adapter (a peft folder) on top of the base model, replacing any earlier one; `mode` says
        how (engine/lora.py). An adapter that is more than plain LoRA goes through peft whatever the mode."""
        from peft import PeftModel

        from routesh.engine import lora

        if self.quantization:
            raise ModelError(f"an adapter cannot be applied to the {self.quantization} model; "
                             "load the model in bf16 or float32")
        with self._model_lock:
            self._drop_adapter()
            try:
                weights = lora.read_plain(Path(path)) if mode != "peft" else None
                if weights is not None:
                    self._folded = lora.fold(self.base_model, weights, mode)
                    self._use(self.base_model)
                    self.adapter_mode = mode
                else:
                    with warnings.catch_warnings():  # peft asks transformers a deprecated question; not ours
                        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*",
                                                category=FutureWarning)
                        self._use(PeftModel.from_pretrained(self.base_model, str(path)).eval())
                    self.adapter_mode = "peft"
            except Exception as err:
                raise ModelError(f"cannot apply the adapter in {path}: {type(err).__name__}: {err}") from None
            self.adapter = Path(path)

    def remove_adapter(self) -> None:
        """Back to the bare base model, exactly as it was loaded (a no-op without an adapter)."""
        with self._model_lock:
            self._drop_adapter()

    def _drop_adapter(self) -> None:
        if self.adapter is None:
            return
        if self._folded is not None:
            from routesh.engine import lora

            lora.unfold(self.base_model, self._folded)
            self._folded = None
        else:
            self.base_model = self.model.unload()  # peft's LoRA layers out, base weights untouched
        self._use(self.base_model)
        self.adapter = self.adapter_mode = None

    def _use(self, model: Any) -> None:
        self.model = model
        self._batch.model = model
        self._prefix_cache.clear()  # the adapter changes every key and value

    # ---- the callers' side --------------------------------------------------------------------------

    def generate(self, requests: Sequence[ChatRequest], params: Params = None, *,
                 cancel: CancelToken | None = None) -> list[Completion]:
        requests, each = batch_of(requests, params)
        if not requests:
            return []
        encoded = [self._encode(r) for r in requests]  # on the caller's thread: callers tokenize in parallel
        references: dict[str, list[int]] = {}
        for p in each:
            if p.draft_text and p.prompt_lookup and p.draft_text not in references:
                references[p.draft_text] = self.tokenizer(p.draft_text, add_special_tokens=False)["input_ids"]
        call = _Call(len(encoded))
        rows = [Row(call, slot, e.ids, len(e.lead_ids), p, lead=e.lead,
                    reference=references.get(p.draft_text, []) if p.prompt_lookup else [],
                    generator=self._generator(p)) for slot, (e, p) in enumerate(zip(encoded, each))]
        self._ensure_worker()
        return self._gather.submit(rows, cancel)

    def cancel(self) -> None:
        """Cancel every call in flight; the scheduler drops their rows at its next step."""
        self._gather.cancel_all()

    def close(self) -> None:
        self._gather.close(ModelError(f"the engine for {self.name} is closed"))
        worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout=10)
        self._prefix_cache.clear()

    def _generator(self, params: GenerationParams) -> Any:
        if params.temperature <= 0:
            return None
        generator = self._torch.Generator(device=self.device)
        if params.seed is None:
            generator.seed()
        else:
            generator.manual_seed(params.seed)  # each row its own draw, whatever it is batched with
        return generator

    def _encode(self, request: ChatRequest) -> _Encoded:
        messages = request.as_dicts()
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(messages) > 1:
            lead = self.tokenizer.apply_chat_template(messages[:-1], tokenize=False)
            if text.startswith(lead):
                lead_ids = self.tokenizer(lead, add_special_tokens=False)["input_ids"]
                if (ids[: len(lead_ids)] == lead_ids and _MIN_PREFIX_TOKENS <= len(lead_ids) < len(ids)):
                    return _Encoded(ids, lead, tuple(lead_ids))
        return _Encoded(ids)

    # ---- the scheduler ------------------------------------------------------------------------------

    def _ensure_worker(self) -> None:
        with self._worker_lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._serve, name=f"routesh-{self.name}", daemon=True)
                self._worker.start()

    def _serve(self) -> None:
        while True:
            for pending in self._gather.take_all(block=not (self._waiting or self._batch.rows)):
                pending.item[0].call.pending = pending
                self._waiting.extend(pending.item)
            if self._gather.closed:
                self._waiting.clear()
                self._batch.remove(list(self._batch.rows))
                return
            with self._model_lock:
                try:
                    self._admit()
                    self._batch.remove([r for r in self._batch.rows if r.call.gone])
                    if self._batch.rows:
                        self._decode_step()
                except Exception as err:  # the model failed: every call in the batch hears it, once
                    failed = ModelError(f"the model failed to generate: {type(err).__name__}: {err}")
                    for row in self._batch.rows:
                        row.call.fail(failed)
                    self._batch.remove(list(self._batch.rows))

    def _admit(self) -> None:
        """Move waiting rows into the batch while it has room (an empty batch always takes one). Rows
        with the same prompt (a greedy request and sampled copies of it) read it once."""
        read: dict[tuple[int, ...], tuple[Any, Any]] = {}  # prompt → its cache's layers and logits, this pass
        while self._waiting:
            row = self._waiting[0]
            if row.call.gone:
                self._waiting.popleft()
                continue
            if self._batch.rows and (len(self._batch) >= self.max_batch_rows or
                                     self._batch.padded_tokens(len(row.ids)) > self.max_batch_tokens):
                return
            self._waiting.popleft()
            started = time.perf_counter()
            prompt = tuple(row.ids)
            try:
                if prompt in read:
                    cache, logits = _cache_of(read[prompt][0]), read[prompt][1]
                else:
                    cache, logits = self._prefill(row)
                    read[prompt] = (_layers(cache), logits)
                    self.stats.prefills += 1
                    self.stats.prefill_tokens += len(row.ids) - row.cached
            except Exception as err:
                row.call.fail(ModelError(f"the model failed to read the prompt: {type(err).__name__}: {err}"))
                continue
            row.tokens.extend(next_tokens(row, logits))
            row.first_token_seconds = time.perf_counter() - row.call.started
            self.stats.prefill_seconds += time.perf_counter() - started
            if self._finished(row):
                self._deliver(row)
            else:
                self._batch.add(row, cache)

    def _prefill(self, row: Row) -> tuple[Any, Any]:
        """Compute the row's prompt (from its cached prefix): its cache, and the logits of its first token."""
        from transformers import DynamicCache

        torch = self._torch
        if row.cached:
            prefix = self._prefix(row.lead, tuple(row.ids[:row.cached]))
            cache = _cache_of(_layers(prefix.cache))
        else:
            cache = DynamicCache(config=self.model.config)
        rest = row.ids[row.cached:]
        with torch.inference_mode():
            logits = forward(self.model, torch.tensor([rest], device=self.device), cache,
                             logits_to_keep=1).logits[:, -1, :]
        row.forward_passes += 1
        return cache, logits

    def _prefix(self, lead: str, ids: tuple[int, ...]) -> CachedPrefix:
        """The leading messages' cache, computed once and then found by their text."""
        entry = self._prefix_cache.get(lead)
        if entry is None or entry.ids != ids:
            from transformers import DynamicCache

            torch = self._torch
            started = time.perf_counter()
            with torch.inference_mode():
                cache = DynamicCache(config=self.model.config)
                forward(self.model, torch.tensor([list(ids)], device=self.device), cache, logits_to_keep=1)
            self.stats.prefixes += 1
            self.stats.prefix_tokens += len(ids)
            self.stats.prefix_seconds += time.perf_counter() - started
            entry = CachedPrefix(ids, cache, cache_bytes(cache))
            self._prefix_cache.put(lead, entry)
        return entry

    def _decode_step(self) -> None:
        """One step for every row; a greedy row that drafts from its prompt may gain several tokens."""
        started = time.perf_counter()
        rows = list(self._batch.rows)
        drafts = [self._draft(row, len(rows)) for row in rows]
        logits = self._batch.step(drafts)
        accepted = []
        for i, (row, draft) in enumerate(zip(rows, drafts)):
            new = next_tokens(row, logits[i], draft)
            if draft:
                row.drafted += len(draft)
                row.accepted += len(new) - 1
                # a wrong draft costs compute for nothing: draft less after one, more after a full hit
                row.draft_room = (min(DRAFT_TOKENS, row.draft_room + 2) if len(new) > len(draft)
                                  else max(1, row.draft_room - 1))
            accepted.append(len(new) - 1)
            row.tokens.extend(new)
        self._batch.keep(accepted)
        stats = self.stats
        stats.steps += 1
        stats.step_rows += len(rows)
        stats.step_tokens += len(rows) + sum(map(len, drafts))
        stats.tokens_kept += len(rows) + sum(accepted)
        stats.step_seconds += time.perf_counter() - started
        done = [row for row in rows if self._finished(row)]
        self._batch.remove(done)
        for row in done:
            self._deliver(row)

    def _draft(self, row: Row, rows: int) -> list[int]:
        """Prompt-lookup drafts for a row that asked for them (greedy or sampled: next_tokens keeps only
        what the row would have chosen anyway); fewer per row when many rows share the step, which stays
        about as cheap as a plain one while rows × fed tokens is small."""
        if not row.params.prompt_lookup:
            return []
        room = min(row.draft_room, STEP_TOKENS // rows - 1, row.params.max_new_tokens - len(row.tokens))
        if room <= 0:
            return []
        return propose(row.ids + row.tokens, reference=row.reference)[:room]

    def _finished(self, row: Row) -> bool:
        """Ended by an end-of-sequence token, its length or a stop string (what a step wrote past the
        end of sequence or the length is dropped)."""
        ended = next((i for i, t in enumerate(row.tokens) if t in self._eos), None)
        if ended is not None or len(row.tokens) >= row.params.max_new_tokens:
            cut = min(ended + 1 if ended is not None else len(row.tokens), row.params.max_new_tokens)
            del row.tokens[cut:]
            return True
        return self._stop_found(row.params, row.tokens)

    def _stop_found(self, params: GenerationParams, tokens: list[int]) -> bool:
        return bool(params.stop) and truncate_at_stop(self.tokenizer.decode(tokens), params.stop)[1]

    def _deliver(self, row: Row) -> None:
        completion = self._completion(row)
        completion.extra.update(forward_passes=row.forward_passes, peak_batch_rows=row.peak_batch_rows)
        if row.params.prompt_lookup:
            completion.extra.update(drafted=row.drafted, accepted=row.accepted)
        row.call.finish(row.slot, completion)

    def _completion(self, row: Row) -> Completion:
        generated, params = row.tokens, row.params
        ended = next((i for i, t in enumerate(generated) if t in self._eos), None)
        tokens = generated[:ended] if ended is not None else generated
        while len(tokens) > 1 and self._stop_found(params, tokens[:-1]):
            tokens = tokens[:-1]  # drafted past the stop string: count only up to it, as one-by-one would
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        text, stopped = truncate_at_stop(text, params.stop)
        finish = "stop" if ended is not None or stopped else ("length" if len(tokens) >= params.max_new_tokens else "stop")
        return Completion(text=text, prompt_tokens=len(row.ids), output_tokens=len(tokens), finish_reason=finish,
                          seconds=time.perf_counter() - row.call.started, first_token_seconds=row.first_token_seconds,
                          cached_prompt_tokens=row.cached, logprob=sum(row.logprobs[:len(tokens)]))


def _layers(cache: Any) -> list[tuple[Any, Any]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


def _cache_of(layers: list[tuple[Any, Any]]) -> Any:
    """A cache of its own over the given tensors. Sharing them is safe: a cache grows by concatenating
    new tensors, never by writing into the ones it started from."""
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=layers)


def _int8(model: Any) -> Any:
    """Every Linear's weights in int8, one scale per output channel; activations quantized on the fly."""
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():  # torch says these APIs move to torchao; they work in the pinned torch
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


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
