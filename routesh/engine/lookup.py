"""Drafts for greedy prompt-lookup decoding.

Stages such as noise correction and continuation writing mostly copy SQL that is already in their
prompt. Each step proposes the tokens that followed the latest n-gram the last time it occurred in
the sequence; the engine checks all of them in one forward pass (batch.py) and keeps the longest run
the model agrees with, plus the model's own next token. The output is the greedy output; only the
number of forward passes changes.

transformers has this built in (`prompt_lookup_num_tokens`), but in 5.x it goes wrong when
generation starts from a supplied cache, which is exactly how routesh reuses the schema prefix, and
it works one sequence at a time, where routesh's engine checks the drafts of every row in one step.
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_NGRAM = 3
DRAFT_TOKENS = 10


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
