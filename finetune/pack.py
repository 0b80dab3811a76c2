"""Shared-schema packing: training examples that begin with the same tokens (the system message holding one
database's schema, often 90% of an example) go into one sequence that holds those tokens once.

A pack is the shared prefix, then each member's own tokens one after the other. Every member's own tokens take
the positions they have alone (counting on from the prefix) and see the prefix and themselves, never another
member: the attention mask (`attention_mask`) and the position ids make the model compute, for each member,
exactly what it computes for that example alone, so the loss is the same (a test checks it) while the schema
is computed once per pack instead of once per example.

The shared prefix always ends inside every member's prompt, so each member's own tokens begin with a prompt
token: its label is -100, and what the token before it (another member's last) predicts is never learned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class Encoded(Protocol):
    """A tokenized training example (finetune.train.Encoded): the prompt's labels are -100."""

    input_ids: list[int]
    labels: list[int]

    def __len__(self) -> int: ...

PREFIX = 0  # the segment id of a pack's shared tokens; members are 1, 2, ...
PAD = -1  # the segment id of padding added by the collator


@dataclass
class Pack:
    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]
    segments: list[int]  # per token: PREFIX, or the member (1, 2, ...) it belongs to
    shared: int  # tokens of the prefix

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def members(self) -> int:
        return self.segments[-1] if self.segments else 0


def prompt_length(example: Encoded) -> int:
    """The tokens before the first learned one (the prompt)."""
    return next((i for i, label in enumerate(example.labels) if label != -100), len(example.labels))


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def build_pack(members: Sequence[Encoded], shared: int) -> Pack:
    """One sequence: `members`' first `shared` tokens (the same in each) once, then each member's own tokens."""
    first = members[0]
    ids, labels = list(first.input_ids[:shared]), list(first.labels[:shared])
    positions, segments = list(range(shared)), [PREFIX] * shared
    for number, member in enumerate(members, 1):
        own = len(member) - shared
        ids += member.input_ids[shared:]
        labels += member.labels[shared:]
        positions += range(shared, shared + own)
        segments += [number] * own
    return Pack(ids, labels, positions, segments, shared)


def pack_examples(examples: Sequence[Encoded], *, max_tokens: int, min_saving: int = 32) -> list[Pack]:
    """Examples in packs of at most `max_tokens` tokens (an example longer than that is a pack of its own).
    Examples are sorted by their tokens, so that those sharing the longest beginnings stand together, and a pack
    takes the next example while that saves at least `min_saving` tokens against starting a new pack: adding a
    member whose shared beginning is shorter shortens the prefix of every member already in the pack."""
    order = sorted(range(len(examples)), key=lambda i: examples[i].input_ids)
    packs: list[Pack] = []
    members: list[Encoded] = []
    shared = length = 0
    for index in order:
        example = examples[index]
        if members:
            # the prefix ends inside every member's prompt (see the module's docstring)
            candidate = min(shared, common_prefix(members[-1].input_ids, example.input_ids), prompt_length(example) - 1)
            saving = candidate - len(members) * (shared - candidate)
            grown = length - len(members) * (shared - candidate) + len(example) - candidate
            if saving >= min_saving and grown <= max_tokens:
                members.append(example)
                shared, length = candidate, grown
                continue
            packs.append(build_pack(members, shared))
        members, shared, length = [example], max(0, prompt_length(example) - 1), len(example)
    if members:
        packs.append(build_pack(members, shared))
    return packs


def attention_mask(segments: Any, implementation: str) -> Any:
    """The 4D mask (batch, 1, query, key) for a batch of packs given as a (batch, width) tensor of segment ids:
    a token sees the earlier tokens of its own member and of the prefix; padding sees only itself (a row that
    sees nothing would give NaN). sdpa takes it as booleans (True: attend), eager as a float to add."""
    import torch

    width = segments.shape[1]
    query, key = segments[:, :, None], segments[:, None, :]
    causal = torch.ones((width, width), dtype=torch.bool, device=segments.device).tril()
    allowed = causal & ((key == PREFIX) | (key == query)) & (key != PAD) & (query != PAD)
    allowed |= torch.eye(width, dtype=torch.bool, device=segments.device)
    allowed = allowed[:, None]
    if implementation == "eager":
        return torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
    return allowed


def collate_packs(pad_id: int, implementation: str):
    """A batch of packs, padded on the right, with their position ids and the mask that keeps members apart."""
    import torch

    def fn(batch: list[Pack]) -> dict[str, Any]:
        width = max(len(p) for p in batch)

        def padded(values: list[int], fill: int, n: int) -> list[int]:
            return values + [fill] * (width - n)

        segments = torch.tensor([padded(p.segments, PAD, len(p)) for p in batch])
        return {
            "input_ids": torch.tensor([padded(p.input_ids, pad_id, len(p)) for p in batch]),
            "labels": torch.tensor([padded(p.labels, -100, len(p)) for p in batch]),
            "position_ids": torch.tensor([padded(p.position_ids, 0, len(p)) for p in batch]),
            "attention_mask": attention_mask(segments, implementation),
        }

    return fn


def packing_stats(examples: Sequence[Encoded], packs: Sequence[Pack]) -> dict[str, Any]:
    before, after = sum(len(e) for e in examples), sum(len(p) for p in packs)
    return {"packs": len(packs), "examples": len(examples), "tokens_unpacked": before, "tokens_packed": after,
            "ratio": round(before / after, 3) if after else None,
            "members_median": sorted(p.members for p in packs)[len(packs) // 2] if packs else 0}
