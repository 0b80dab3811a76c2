"""Greedy prompt-lookup decoding for one sequence, continuing from a KV cache.

Stages such as noise correction and continuation writing mostly copy SQL that is already in their
prompt. Each step proposes the tokens that followed the latest n-gram the last time it occurred in
the sequence, checks all of them in one forward pass, and keeps the longest run the model agrees
with, plus the model's own next token. The output is the greedy output; only the number of forward
passes changes.

transformers has this built in (`prompt_lookup_num_tokens`), but in 5.x it goes wrong when
generation starts from a supplied cache, which is exactly how routesh reuses the schema prefix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from routesh.engine.batch import forward

MAX_NGRAM = 3
DRAFT_TOKENS = 10


@dataclass
class LookupResult:
    tokens: list[int]
    forward_passes: int
    drafted: int
    accepted: int
    first_token_seconds: float | None = None


def propose(sequence: Sequence[int], *, reference: Sequence[int] = (), max_ngram: int = MAX_NGRAM,
            draft: int = DRAFT_TOKENS) -> list[int]:
    """The tokens that followed the sequence's last n-gram where it occurred before: in `reference`
    first (text the caller expects to be repeated), else earlier in the sequence itself, most recent
    occurrence first. Longer n-grams win. [] when nothing matches."""
    length = len(sequence)
    for n in range(min(max_ngram, length), 0, -1):
        tail = list(sequence[length - n:])
        follow = _follow(reference, tail, len(reference) - n, draft) or _follow(sequence, tail, length - n - 1, draft)
        if follow:
            return follow
    return []


def _follow(tokens: Sequence[int], ngram: list[int], last_start: int, draft: int) -> list[int]:
    n = len(ngram)
    for start in range(last_start, -1, -1):
        if list(tokens[start:start + n]) == ngram:
            follow = list(tokens[start + n:start + n + draft])
            if follow:
                return follow
    return []


def greedy_lookup_decode(
    model: Any,
    prompt: Sequence[int],
    cache: Any,
    *,
    max_new_tokens: int,
    eos: set[int],
    should_stop: Callable[[list[int]], bool],
    clock: Callable[[], float],
    reference: Sequence[int] = (),
) -> LookupResult:
    """Decode greedily from `prompt`, whose first `cache.get_seq_length()` tokens are in `cache`.
    `should_stop(tokens)` is asked after every step (stop strings, cancellation). Drafts come from
    `reference` as well as from the prompt and the output so far."""
    import torch

    device = next(model.parameters()).device
    started = clock()
    with torch.inference_mode():
        cached = cache.get_seq_length()
        rest = list(prompt[cached:]) or [prompt[-1]]
        if cached == len(prompt):  # the whole prompt is cached: recompute its last position
            _keep(cache, cached - 1)
        logits = forward(model, torch.tensor([rest], device=device), cache).logits
        tokens = [int(logits[0, -1].argmax())]
        result = LookupResult(tokens, 1, 0, 0, clock() - started)
        while len(tokens) < max_new_tokens and tokens[-1] not in eos and not should_stop(tokens):
            draft = propose(list(prompt) + tokens, reference=reference)[: max_new_tokens - len(tokens)]
            before = cache.get_seq_length()
            step = [tokens[-1]] + draft
            logits = forward(model, torch.tensor([step], device=device), cache).logits
            predicted = logits[0].argmax(-1).tolist()  # predicted[i] follows step[: i + 1]
            agreed = 0
            while agreed < len(draft) and predicted[agreed] == draft[agreed]:
                agreed += 1
            new = draft[:agreed] + [predicted[agreed]]
            # keep the cache for what is now the sequence: the last token and the accepted drafts
            _keep(cache, before + 1 + agreed)
            result.forward_passes += 1
            result.drafted += len(draft)
            result.accepted += agreed
            for token in new:
                tokens.append(token)
                if token in eos or len(tokens) >= max_new_tokens:
                    break
    return result


def _keep(cache: Any, length: int) -> None:
    """Shorten the cache to its first `length` positions (transformers' crop takes how many to drop,
    as a negative number)."""
    drop = cache.get_seq_length() - length
    if drop > 0:
        cache.crop(-drop)
