"""The rows the transformers engine is decoding right now, as one batch that rows join and leave
between steps (continuous batching).

The batch keeps one key/value cache (rows × positions) and one attention mask over it. A row that
joins (its prompt prefilled on its own) is padded on the left to the batch's width; position ids are
each row's own count of real tokens, so a row computes what it would alone — whatever the mask hides
is never attended to. A step may feed each row a draft (prompt-lookup decoding: tokens the row is
likely to write next, checked all at once); keep() then masks out the drafts the model disagreed
with. Those holes cost a little attention until compact() squeezes them out, which happens only when
they pile up: copying the whole cache at every step would cost more than the holes.

Invariant: a row's cache holds its prompt and all its tokens but the last (with holes, masked); that
last token is what the next step feeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from routesh.engine.base import GenerationParams
from routesh.engine.lookup import DRAFT_TOKENS

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
    draft_room: int = DRAFT_TOKENS  # how many tokens to draft next: grows while drafts are accepted, shrinks when not
    peak_batch_rows: int = 1  # the most rows it was decoded with at once
    drafted: int = 0
    accepted: int = 0
    logprobs: list[float] = field(default_factory=list)  # one per token of `tokens`

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


def next_tokens(row: Row, logits: Any, draft: Sequence[int] = ()) -> list[int]:
    """What one step gives `row`, from its logits at the positions it fed (its last token, then `draft`):
    the drafted tokens the model would have chosen itself, then one of its own. A greedy row takes the
    argmax at each position; a sampled row draws from its own generator at each position and keeps
    going while a draw equals the draft, so it draws once per token exactly as it would without drafts.
    Each token's log-probability (temperature 1) is added to row.logprobs."""
    import torch

    if row.greedy:
        predicted = logits[: len(draft) + 1].argmax(-1).tolist()
        agreed = next((k for k, (d, p) in enumerate(zip(draft, predicted)) if d != p), len(draft))
        new = list(draft[:agreed]) + [predicted[agreed]]
    else:
        new = []
        for position in range(len(draft) + 1):
            new.append(_draw(row, logits[position]))
            if position == len(draft) or new[-1] != draft[position]:
                break
    picked = torch.log_softmax(logits[: len(new)].float(), -1)
    row.logprobs.extend(picked[range(len(new)), new].tolist())
    return new


def _draw(row: Row, logits: Any) -> int:
    import torch

    top = torch.topk(logits.float() / row.params.temperature, min(TOP_K, logits.shape[-1]))
    pick = torch.multinomial(torch.softmax(top.values, -1), 1, generator=row.generator)
    return int(top.indices[pick])


class RunningBatch:
    """Rows decoding together: one key/value cache, one attention mask."""

    COMPACT_WHEN = 0.25  # the share of masked positions past which compact() pays for itself

    def __init__(self, model: Any, device: str):
        import torch

        self._torch = torch
        self.model = model  # the engine swaps it when an adapter comes or goes
        self._device = device
        self.rows: list[Row] = []
        self._cache: Any = None  # a DynamicCache, rows × heads × width × dim per layer
        self._mask: Any = None  # rows × width: 1 where a row has a real position
        self._stepped = (0, 1)  # the last step: the width before it, and how many positions it fed

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def width(self) -> int:
        """Positions in every row's cache, padding and holes included."""
        return int(self._mask.shape[1]) if self.rows else 0

    def padded_tokens(self, extra_length: int = 0) -> int:
        """Rows × width, with one more row of `extra_length`: what admitting it would cost."""
        width = max(self.width, extra_length)
        return (len(self.rows) + (1 if extra_length else 0)) * (width + 1)

    def add(self, row: Row, cache: Any) -> None:
        """Join `row`, whose cache (one row, no padding) holds `row.length` positions."""
        torch = self._torch
        length = cache.get_seq_length()
        if not self.rows:
            self._cache, self.rows = cache, [row]
            self._mask = torch.ones((1, length), dtype=torch.long, device=self._device)
            return
        grow = length - self.width
        if grow > 0:  # the newcomer is longer: everyone else gets more padding
            self._map(lambda t: _left_pad(t, grow))
            self._mask = torch.cat([self._mask.new_zeros((len(self.rows), grow)), self._mask], dim=1)
        shortfall = max(0, -grow)
        for mine, theirs in zip(self._cache.layers, cache.layers):
            mine.keys = torch.cat([mine.keys, _left_pad(theirs.keys, shortfall)])
            mine.values = torch.cat([mine.values, _left_pad(theirs.values, shortfall)])
        own = torch.ones((1, self.width), dtype=torch.long, device=self._device)
        own[0, :shortfall] = 0
        self._mask = torch.cat([self._mask, own])
        self.rows.append(row)

    def step(self, drafts: Sequence[Sequence[int]] | None = None) -> Any:
        """One forward pass over every row's last token, followed by its draft (padded to the longest
        one); returns the logits, rows × (1 + longest draft) × vocabulary, where [i, j] follows row i's
        j-th fed token. Call keep() next, with how many of each row's drafts to keep."""
        torch = self._torch
        drafts = drafts or [[] for _ in self.rows]
        step = 1 + max(map(len, drafts))
        fed = [[row.tokens[-1], *draft] for row, draft in zip(self.rows, drafts)]
        new = torch.ones((len(self.rows), step), dtype=torch.long, device=self._device)
        for i, tokens in enumerate(fed):
            new[i, len(tokens):] = 0  # a shorter draft's padding
        mask = torch.cat([self._mask, new], dim=1)
        ids = torch.tensor([tokens + [tokens[-1]] * (step - len(tokens)) for tokens in fed], device=self._device)
        positions = torch.tensor([[row.length + j for j in range(step)] for row in self.rows], device=self._device)
        with torch.inference_mode():
            out = forward(self.model, ids, self._cache, attention_mask=mask, position_ids=positions)
        self._stepped, self._mask = (self.width, step), mask
        for row in self.rows:
            row.forward_passes += 1
            row.peak_batch_rows = max(row.peak_batch_rows, len(self.rows))
        return out.logits

    def keep(self, accepted: Sequence[int]) -> None:
        """After step(): keep each row's fed last token and its first accepted[i] drafts; the rest of
        what the step fed is masked out, or cut off where no row kept it."""
        before, step = self._stepped
        for i, a in enumerate(accepted):
            self._mask[i, before + 1 + a:] = 0
        kept = before + 1 + max(accepted, default=0)
        if kept < before + step:
            self._cut(0, kept)
        if self.rows and 1 - float(self._mask.float().mean()) > self.COMPACT_WHEN:
            self.compact()

    def remove(self, leaving: Sequence[Row]) -> None:
        """Drop rows (finished or cancelled), then the positions no remaining row uses."""
        gone = {id(r) for r in leaving}
        keep = [i for i, row in enumerate(self.rows) if id(row) not in gone]
        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self._cache = self._mask = None
            return
        index = self._torch.tensor(keep, device=self._device)
        self._map(lambda t: t.index_select(0, index))
        self._mask = self._mask.index_select(0, index)
        used = self._mask.any(0).nonzero()
        self._cut(int(used[0]), int(used[-1]) + 1)

    def compact(self) -> None:
        """Squeeze the holes out: each row's real positions, in order, moved to the right edge."""
        torch = self._torch
        real = [row.nonzero()[:, 0] for row in self._mask]
        width = max(len(r) for r in real)
        index = torch.stack([torch.cat([r.new_zeros(width - len(r)), r]) for r in real])
        self._map(lambda t: _gather_positions(t, index))
        self._mask = torch.stack([torch.cat([r.new_zeros(width - len(r)), r.new_ones(len(r))]) for r in real])

    def _cut(self, start: int, end: int) -> None:
        """Keep positions start..end of every row (a view: nothing is copied)."""
        if (start, end) != (0, self.width):
            self._map(lambda t: t[:, :, start:end])
            self._mask = self._mask[:, start:end]

    def _map(self, change: Any) -> None:
        for layer in self._cache.layers:
            layer.keys, layer.values = change(layer.keys), change(layer.values)


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
