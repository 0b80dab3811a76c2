"""The rows the transformers engine is decoding right now, as one batch that rows join and leave
between steps (continuous batching).

Every row is left-padded to the batch's length: its key/value cache, then its attention mask, hold
`pad` empty positions before its own tokens, so a row that joins (its prompt prefilled on its own)
only needs padding on one side, and no row ever has a hole in the middle. Position ids are each row's
own count of real tokens, so a row computes exactly what it would alone; the padding is masked out.
When rows leave, the padding every remaining row has is cut off.

Invariant: a row's cache holds its prompt and all its tokens but the last; that last token (`next`)
is what the next step feeds. A row decoding alone (prompt-lookup) keeps the same invariant, so it can
leave the batch and come back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from routesh.engine.base import GenerationParams

TOP_K = 50  # what transformers' generate() samples from by default; kept so sampling behaves as before


@dataclass(eq=False)  # rows are compared by identity: two rows may hold the same tokens
class Row:
    """One request being decoded: its prompt, its tokens so far, and what ends it."""

    call: Any  # the generate() call it belongs to (the scheduler's; opaque here)
    slot: int  # its index among the call's requests
    ids: list[int]  # the prompt's tokens
    cached: int  # how many of them came from a cached prefix
    params: GenerationParams
    lead: str = ""  # the text of the cached prefix (its first `cached` tokens), which finds its cache
    reference: list[int] = field(default_factory=list)  # draft_text's tokens, for prompt lookup
    tokens: list[int] = field(default_factory=list)
    generator: Any = None  # a torch.Generator of its own when sampling, so batching never changes a draw
    first_token_seconds: float | None = None
    forward_passes: int = 0
    peak_batch_rows: int = 1  # the most rows it was decoded with at once
    drafted: int = 0
    accepted: int = 0

    @property
    def greedy(self) -> bool:
        return self.params.temperature <= 0

    @property
    def length(self) -> int:
        """Real positions in its cache: the prompt and every token but the last."""
        return len(self.ids) + max(0, len(self.tokens) - 1)


def forward(model: Any, input_ids: Any, cache: Any, **kwargs: Any) -> Any:
    """One forward pass that continues (and grows) `cache`. transformers 5.24 renamed the cache argument
    from past_key_values to cache; each model's signature says which name it takes."""
    return model(input_ids=input_ids, use_cache=True, **{_cache_argument(model): cache}, **kwargs)


def _cache_argument(model: Any) -> str:
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft model wraps it
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def choose(rows: Sequence[Row], logits: Any) -> list[int]:
    """The next token of every row from its logits (rows × vocabulary): argmax for greedy rows, a draw
    from the row's own generator for the others."""
    import torch

    chosen = logits.argmax(-1).tolist()
    for i, row in enumerate(rows):
        if not row.greedy:
            top = torch.topk(logits[i].float() / row.params.temperature, min(TOP_K, logits.shape[-1]))
            probs = torch.softmax(top.values, -1)
            pick = torch.multinomial(probs, 1, generator=row.generator)
            chosen[i] = int(top.indices[pick])
    return chosen


class RunningBatch:
    """Rows decoding together: one stacked key/value cache, one attention mask."""

    def __init__(self, model: Any, device: str):
        import torch

        self._torch = torch
        self._model = model
        self._device = device
        self.rows: list[Row] = []
        self._keys: list[Any] = []  # per layer: rows × heads × length × dim
        self._values: list[Any] = []
        self._pad: list[int] = []  # per row: empty positions at the left of its cache

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def width(self) -> int:
        """Positions in every row's cache, padding included."""
        return int(self._keys[0].shape[-2]) if self._keys else 0

    def padded_tokens(self, extra_length: int = 0) -> int:
        """Rows × width, with one more row of `extra_length`: what admitting it would cost."""
        width = max(self.width, extra_length)
        return (len(self.rows) + (1 if extra_length else 0)) * (width + 1)

    def add(self, row: Row, cache: Any) -> None:
        """Join `row`, whose cache (one row, no padding) holds `row.length` positions."""
        torch = self._torch
        keys = [layer.keys for layer in cache.layers]
        values = [layer.values for layer in cache.layers]
        length = int(keys[0].shape[-2])
        if not self.rows:
            self._keys, self._values, self._pad = keys, values, [0]
            self.rows = [row]
            return
        grow = length - self.width
        if grow > 0:  # the newcomer is longer: everyone else gets more padding
            self._keys = [_left_pad(t, grow) for t in self._keys]
            self._values = [_left_pad(t, grow) for t in self._values]
            self._pad = [p + grow for p in self._pad]
        shortfall = max(0, -grow)
        self._keys = [torch.cat([k, _left_pad(n, shortfall)]) for k, n in zip(self._keys, keys)]
        self._values = [torch.cat([v, _left_pad(n, shortfall)]) for v, n in zip(self._values, values)]
        self._pad.append(shortfall)
        self.rows.append(row)

    def step(self) -> Any:
        """One forward pass over every row's last token; returns the logits (rows × vocabulary) and
        grows every row's cache by that token."""
        from transformers import DynamicCache

        torch = self._torch
        width = self.width
        mask = torch.ones((len(self.rows), width + 1), dtype=torch.long, device=self._device)
        for i, pad in enumerate(self._pad):
            mask[i, :pad] = 0
        ids = torch.tensor([[row.tokens[-1]] for row in self.rows], device=self._device)
        positions = torch.tensor([[row.length] for row in self.rows], device=self._device)
        cache = DynamicCache(ddp_cache_data=list(zip(self._keys, self._values)))
        with torch.inference_mode():
            out = forward(self._model, ids, cache, attention_mask=mask, position_ids=positions)
        self._keys = [layer.keys for layer in cache.layers]
        self._values = [layer.values for layer in cache.layers]
        for row in self.rows:
            row.forward_passes += 1
            row.peak_batch_rows = max(row.peak_batch_rows, len(self.rows))
        return out.logits[:, -1, :]

    def remove(self, leaving: Sequence[Row]) -> None:
        """Drop rows (finished or cancelled), then the padding every remaining row has."""
        gone = {id(r) for r in leaving}
        keep = [i for i, row in enumerate(self.rows) if id(row) not in gone]
        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in keep]
        self._pad = [self._pad[i] for i in keep]
        if not keep:
            self._keys, self._values = [], []
            return
        index = self._torch.tensor(keep, device=self._device)
        cut = min(self._pad)
        self._keys = [t.index_select(0, index)[:, :, cut:] for t in self._keys]
        self._values = [t.index_select(0, index)[:, :, cut:] for t in self._values]
        self._pad = [p - cut for p in self._pad]

    def take_only(self) -> tuple[Row, Any]:
        """Take the one row out with its own cache (no padding), for decoding on its own."""
        from transformers import DynamicCache

        (row,), pad = self.rows, self._pad[0]
        cache = DynamicCache(ddp_cache_data=[(k[:, :, pad:], v[:, :, pad:]) for k, v in zip(self._keys, self._values)])
        self.rows, self._keys, self._values, self._pad = [], [], [], []
        return row, cache


def _left_pad(tensor: Any, count: int) -> Any:
    """`count` zero positions before the sequence axis (-2) of a rows × heads × length × dim tensor."""
    if count <= 0:
        return tensor
    import torch

    shape = list(tensor.shape)
    shape[-2] = count
    return torch.cat([tensor.new_zeros(shape), tensor], dim=-2)
