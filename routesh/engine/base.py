"""The engine protocol: a batch of chat requests in, one completion per request out.

Every backend (transformers on this machine, vLLM on a GPU, any OpenAI-compatible server) speaks it,
so the pipeline never knows which one it has.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal, Protocol

ADAPTER_MODES = ("peft", "side", "merged-fp32", "merged-bf16")  # how a LoRA adapter is applied (engine/lora.py)

if TYPE_CHECKING:
    from routesh.cancel import CancelToken

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "cancelled"]


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True)
class ChatRequest:
    """One conversation to complete. Put what several requests share (the schema) in the leading
    messages: engines reuse the computation of an identical leading part."""

    messages: tuple[Message, ...]

    @classmethod
    def of(cls, *pairs: tuple[Role, str]) -> ChatRequest:
        return cls(tuple(Message(role, content) for role, content in pairs))

    def as_dicts(self) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.content} for m in self.messages]


@dataclass(frozen=True)
class GenerationParams:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy, which the ROUTE method uses
    stop: tuple[str, ...] = ()  # generation ends at the first of these; it is not part of the text
    prompt_lookup: bool = False  # draft tokens from the prompt (fast when the output copies it)
    draft_text: str = ""  # more text to draft from (e.g. the SQL a later stage is likely to repeat);
    # it only proposes tokens, which the model checks: the output is exactly what it would be without
    seed: int | None = None  # for temperature > 0; given for several requests at once, request i uses seed + i


Params = GenerationParams | Sequence[GenerationParams] | None  # one for every request, or one each


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    output_tokens: int
    finish_reason: FinishReason
    seconds: float  # wall time of the whole batch this completion came from
    first_token_seconds: float | None = None  # batch start to the first generated token (prefill)
    cached_prompt_tokens: int = 0  # prompt tokens whose computation was reused, not redone
    logprob: float | None = None  # the sum of its tokens' log-probabilities, where the engine reports them
    extra: dict[str, object] = field(default_factory=dict)


class Engine(Protocol):
    """A loaded model. `name` is what the user chose; `backend` says how it runs.

    Safe to call from several threads at once: concurrent generate() calls are served together (one
    batch on the transformers engine, requests in flight on a server), and each call gets exactly the
    completions it asked for."""

    name: str
    backend: str  # "transformers" | "vllm" | "openai"

    def generate(self, requests: Sequence[ChatRequest], params: Params = None, *,
                 cancel: CancelToken | None = None) -> list[Completion]:
        """Complete every request (batched where the backend can), in order. `params` is one for all the
        requests or a sequence of one per request (a greedy request beside sampled copies of it).
        When `cancel` is cancelled meanwhile, this call raises GenerationCancelled as soon as possible
        and only its own requests are dropped; calls from other threads go on. Raises ModelError when the
        model or server fails."""
        ...

    def cancel(self) -> None:
        """Stop every generate() in flight (on any thread) as soon as possible."""
        ...

    def close(self) -> None: ...


def batch_of(requests: Sequence[ChatRequest], params: Params) -> tuple[list[ChatRequest], list[GenerationParams]]:
    """generate()'s arguments as every engine works on them: the requests and one GenerationParams per
    request. One seeded params for several requests gives request i the seed + i, so that identical
    requests sampled together draw differently, and each draw is the same whatever it is batched with."""
    requests = list(requests)
    if params is None or isinstance(params, GenerationParams):
        one = params or GenerationParams()
        if one.seed is None or len(requests) < 2:
            return requests, [one] * len(requests)
        return requests, [replace(one, seed=one.seed + i) for i in range(len(requests))]
    each = list(params)
    if len(each) != len(requests):
        raise ValueError(f"{len(each)} generation parameters for {len(requests)} requests")
    return requests, each


def truncate_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut `text` at the earliest stop string; say whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
