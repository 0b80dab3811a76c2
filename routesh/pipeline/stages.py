"""What the pipeline reports about itself: which stages run, what each one did, and the answer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from routesh.db.base import Result

STAGES = ("sl", "ts", "nc", "cw")  # schema linking, text-to-SQL, noise correction, continuation writing


@dataclass(frozen=True)
class StageConfig:
    """Which of ROUTE's collaboration stages run. Text-to-SQL always does; the others can be switched
    off for ablations (`--stages ts` is plain prompting, `sl,nc,cw` the full pipeline)."""

    linking: bool = True
    correction: bool = True
    continuation: bool = True

    @classmethod
    def parse(cls, text: str) -> StageConfig:
        names = {part.strip().lower() for part in text.split(",") if part.strip()}
        unknown = names - set(STAGES) - {"all", "mcp"}
        if unknown:
            raise ValueError(f"unknown stage(s) {', '.join(sorted(unknown))}; choose from {', '.join(STAGES)}")
        if names & {"all", "mcp"}:
            return cls()
        return cls(linking="sl" in names, correction="nc" in names, continuation="cw" in names)

    def label(self) -> str:
        on = ["ts"] + [name for name, flag in (("sl", self.linking), ("nc", self.correction),
                                               ("cw", self.continuation)) if flag]
        return ",".join(on)


@dataclass
class StageEvent:
    """One step of one question: what went in, what the model said, what was made of it, and whether it
    was taken. `\\stages`, `\\why` and the evaluation receipts show these."""

    stage: str  # "sl" | "pseudo" | "merge" | "ts" | "execute" | "fallback" | "nc" | "cw" | "final"
    summary: str  # one line for the compact view
    raw: str | None = None  # the model's reply, verbatim
    artifact: Any = None  # what was parsed from it (linked columns, SQL, verdict, feedback)
    accepted: bool | None = None  # None when the step makes no choice
    reason: str = ""
    prompt_tokens: int = 0
    output_tokens: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {k: (v if isinstance(v, (str, int, float, bool, type(None), list, dict)) else repr(v))
                for k, v in self.__dict__.items()}


EventSink = Callable[[StageEvent], None]


@dataclass
class Answer:
    question: str
    sql: str | None  # None when the pipeline abstained
    reason: str  # why this SQL (or why none)
    events: list[StageEvent] = field(default_factory=list)
    result: Result | None = None  # the final SQL's preview run (few rows), when it ran

    @property
    def abstained(self) -> bool:
        return self.sql is None

    @property
    def tokens(self) -> int:
        return sum(e.prompt_tokens + e.output_tokens for e in self.events)

    @property
    def seconds(self) -> float:
        return sum(e.seconds for e in self.events)
