"""What the pipeline reports about itself: which stages run, what each one did, and the answer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from routesh.db.base import Result


class Stage(StrEnum):
    """Every step a question's events can name. The values are what receipts, `--stages` and the
    training data spell; a StrEnum, so a receipt's "nc" and Stage.NC compare equal."""

    CONTEXT = "context"  # the conversation a follow-up question is asked after
    MEMORY = "memory"  # remembered queries shown as examples
    VALUES = "values"  # the question's words matched to stored values
    SL = "sl"  # schema linking
    PSEUDO = "pseudo"  # text-to-SQL on the full schema, asked beside the linking
    MERGE = "merge"  # the reduced schema
    TS = "ts"  # text-to-SQL on the reduced schema
    VOTE = "vote"  # many candidates, voted by their results
    REPAIR = "repair"  # unknown names renamed to the schema's closest
    EXECUTE = "execute"  # a candidate's trial run
    FALLBACK = "fallback"  # the pseudo-SQL in place of a failing candidate
    NC = "nc"  # noise correction
    CW = "cw"  # continuation writing
    FINAL = "final"  # the answer, or the abstention


# what `--stages` names: ROUTE's four tasks, and the value linking, the vote and the repair
STAGES = (Stage.VALUES, Stage.SL, Stage.TS, Stage.VOTE, Stage.REPAIR, Stage.NC, Stage.CW)
REVISING = frozenset({Stage.FALLBACK, Stage.REPAIR, Stage.NC, Stage.CW})  # steps that can replace the candidate
# what the shell, -e and routesh-eval run unless told otherwise: every stage, chosen on spider-train (200 seeded
# questions: 66.5% against 58.0% for ROUTE's sl,nc,cw; docs/benchmarks.md)
DEFAULT_STAGES = "all"


@dataclass(frozen=True)
class StageConfig:
    """Which of ROUTE's collaboration stages run. Text-to-SQL always does; the others can be switched
    off for ablations (`--stages ts` is plain prompting, `sl,nc,cw` the full pipeline)."""

    linking: bool = True
    correction: bool = True
    continuation: bool = True
    vote: bool = False
    repair: bool = False
    values: bool = False

    @classmethod
    def parse(cls, text: str) -> StageConfig:
        names = {part.strip().lower() for part in text.split(",") if part.strip()}
        unknown = names - set(STAGES) - {"all", "mcp"}
        if unknown:
            raise ValueError(f"unknown stage(s) {', '.join(sorted(unknown))}; choose from {', '.join(STAGES)}")
        if "all" in names:
            return cls(vote=True, repair=True, values=True)
        if "mcp" in names:  # the paper's pipeline, exactly
            return cls()
        return cls(linking=Stage.SL in names, correction=Stage.NC in names, continuation=Stage.CW in names,
                   vote=Stage.VOTE in names, repair=Stage.REPAIR in names, values=Stage.VALUES in names)

    def label(self) -> str:
        flags = ((Stage.VALUES, self.values), (Stage.SL, self.linking), (Stage.VOTE, self.vote),
                 (Stage.REPAIR, self.repair), (Stage.NC, self.correction), (Stage.CW, self.continuation))
        on = [Stage.TS] + [name for name, flag in flags if flag]
        return ",".join(on)


@dataclass
class StageEvent:
    """One step of one question: what went in, what the model said, what was made of it, and whether it
    was taken. `\\stages`, `\\why` and the evaluation receipts show these."""

    stage: Stage
    summary: str  # one line for the compact view
    raw: str | None = None  # the model's reply, verbatim
    artifact: Any = None  # what was parsed from it (linked columns, SQL, verdict, feedback)
    accepted: bool | None = None  # None when the step makes no choice
    reason: str = ""
    prompt_tokens: int = 0
    output_tokens: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        out = {k: (v if isinstance(v, (str, int, float, bool, type(None), list, dict)) else repr(v))
               for k, v in self.__dict__.items()}
        out["stage"] = str(self.stage)  # the plain string, whatever JSON encoder reads it
        return out


@dataclass(frozen=True)
class Starting:
    """A model call is about to start (the shell's spinner label; -e's progress line). Not part of the
    answer's record: only StageEvents are."""

    stage: Stage
    label: str  # "schema linking", "generation", ...


EventSink = Callable[[StageEvent | Starting], None]  # one sink sees everything a question reports


@dataclass(frozen=True)
class Agreement:
    """How many of the voted candidates return the answer's result: the pipeline's own measure of how
    sure it is."""

    votes: int
    candidates: int

    LOW = 0.5  # at or below this share the user is told to check the SQL

    @property
    def low(self) -> bool:
        return self.votes <= self.LOW * self.candidates

    def __str__(self) -> str:
        return f"{self.votes} of {self.candidates} candidates agree"


@dataclass
class Answer:
    question: str
    sql: str | None  # None when the pipeline abstained
    reason: str  # why this SQL (or why none)
    events: list[StageEvent] = field(default_factory=list)
    result: Result | None = None  # the final SQL's preview run (few rows), when it ran
    agreement: Agreement | None = None  # with `vote`: how many candidates returned the voted result

    @property
    def abstained(self) -> bool:
        return self.sql is None

    @property
    def tokens(self) -> int:
        return sum(e.prompt_tokens + e.output_tokens for e in self.events)

    @property
    def seconds(self) -> float:
        return sum(e.seconds for e in self.events)
