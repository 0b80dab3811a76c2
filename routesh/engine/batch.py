"""The rows the transformers engine is decoding right now, as one batch that rows join and leave
between steps (continuous batching).

Every row is left-padded to the batch's length: its key/value cache, then its attention mask, hold
`pad` empty positions before its own tokens, so a row that joins (its prompt prefilled on its own)
only needs padding on one side, and no row ever has a hole in the middle. Position ids are each row's
own count of real tokens, so a row computes exactly what it would alone; the padding is masked out.
When rows leave, the padding every remaining row has is cut off.

Invariant: a row's cache holds its prompt and all its tokens but the last; that last token is what
the next step feeds. A step may also feed each row a draft (prompt-lookup decoding: tokens the row is
likely to write next, checked all at once); keep() then keeps, per row, the drafts the model agreed
with and drops the rest, moving each row's positions so that the padding stays on the left.
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
        self._stepped = (0, 1)  # the last step: the width before it, and how many positions it fed

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

    def step(self, drafts: Sequence[Sequence[int]] | None = None) -> Any:
        """One forward pass over every row's last token, followed by its draft (padded to the longest
        one); returns the logits, rows × (1 + longest draft) × vocabulary, where [i, j] follows row i's
        j-th fed token. Call keep() next, with how many of each row's drafts to keep."""
        from transformers import DynamicCache

        torch = self._torch
        drafts = drafts or [[] for _ in self.rows]
        step = 1 + max(map(len, drafts))
        fed = [[row.tokens[-1], *draft] for row, draft in zip(self.rows, drafts)]
        mask = torch.ones((len(self.rows), self.width + step), dtype=torch.long, device=self._device)
        for i, (pad, tokens) in enumerate(zip(self._pad, fed)):
            mask[i, :pad] = 0
            mask[i, self.width + len(tokens):] = 0  # a shorter draft's padding
        ids = torch.tensor([tokens + [tokens[-1]] * (step - len(tokens)) for tokens in fed], device=self._device)
        positions = torch.tensor([[row.length + j for j in range(step)] for row in self.rows], device=self._device)
        cache = DynamicCache(ddp_cache_data=list(zip(self._keys, self._values)))
        with torch.inference_mode():
            out = forward(self._model, ids, cache, attention_mask=mask, position_ids=positions)
        self._stepped = (self.width, step)
        self._keys = [layer.keys for layer in cache.layers]
        self._values = [layer.values for layer in cache.layers]
        for row in self.rows:
            row.forward_passes += 1
            row.peak_batch_rows = max(row.peak_batch_rows, len(self.rows))
        return out.logits

    def keep(self, accepted: Sequence[int]) -> None:
        """After step(): keep each row's fed last token and its first accepted[i] drafts; the rest of
        what the step fed goes, and the rows are realigned so that each ends at the batch's right edge."""
        before, step = self._stepped
        if all(1 + a == step for a in accepted):  # every row kept all it was fed: nothing moves
            return
        valid = [before - pad + 1 + a for pad, a in zip(self._pad, accepted)]  # each row's real positions
        width = max(valid)
        # A row's real positions are contiguous, from its padding on: shift them to end at the right
        # edge (what lands in the new padding on the left is masked out, whatever it holds).
        index = self._torch.tensor([[max(0, pad + j - (width - n)) for j in range(width)]
                                    for pad, n in zip(self._pad, valid)], device=self._device)
        self._pad = [width - n for n in valid]
        self._keys = [_gather_positions(t, index) for t in self._keys]
        self._values = [_gather_positions(t, index) for t in self._values]

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


def _gather_positions(tensor: Any, index: Any) -> Any:
    """rows × heads × length × dim → rows × heads × index-width × dim: row i's positions index[i]."""
    rows, heads, _, dim = tensor.shape
    return tensor.gather(2, index[:, None, :, None].expand(rows, heads, index.shape[1], dim))


def _left_pad(tensor: Any, count: int) -> Any:
    """`count` zero positions before the sequence axis (-2) of a rows × heads × length × dim tensor."""
    if count <= 0:
        return tensor
    import torch

    shape = list(tensor.shape)
    shape[-2] = count
    return torch.cat([tensor.new_zeros(shape), tensor], dim=-2)
