"""A conversation with the database: the turns of the current topic (each question with the SQL the user ran
for it and its result's columns), and whether a new line continues that topic or starts a new one.

A line continues when it leans on what came before: it opens like a refinement ("and", "only", "sort
them", "what about"), points back ("those", "them", "their", "the same"), or is too short to stand alone
("in Lyon", "by date"). A line that asks a whole question of its own starts a new topic. The cues were
chosen on SParC's follow-ups against Spider train's standalone questions (bench/followups.py), where
they keep most follow-ups and leave nearly every standalone question alone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from routesh.errors import UsageError
from routesh.prompts import Turn

__all__ = ["Conversation", "Turn", "is_follow_up", "read_turns"]

# how a follow-up opens: a conjunction, a narrowing, an ordering, a "what about"
_OPENINGS = re.compile(
    r"^(and|or|but|also|plus|only|just|now|then|instead|except|excluding|including|without|among"
    r"|of (those|these|them)|what about|how about|and what|same|sort|order|rank|group|filter|limit|restrict"
    r"|keep|remove|exclude|include|show (only|just|me (only|just))|list (only|just)|tell me (only|just)"
    r"|which (of|ones|one)|how many of|for (each|every) of|in (ascending|descending)|by\b|ascending|descending"
    r"|top\b|first\b|last\b|more\b|less\b|fewer\b)\b",
    re.IGNORECASE)
# words that point back at the earlier result, wherever they stand
_REFERENCES = re.compile(
    r"\b(those|these|them|ones|each one|of them|the same|above|previous|previously|the results?|that list|this|"
    r"also|other|others|okay|ok|such|the one|(is|of) that|how many there are|how many (is|in)|for each,)\b",
    re.IGNORECASE)
# endings that leave the noun to the earlier question ("how many are there?", "for each?", "which did not?")
_ENDINGS = re.compile(r"\b(that|how many (are )?there( are)?|for each|each|both|not)\W*$", re.IGNORECASE)
# pronouns that often have their noun in the same sentence ("actors and the musicals they are in"): a cue
# only in a short line
_PRONOUNS = re.compile(r"\b(they|their|theirs|its|it|he|she|his|her)\b", re.IGNORECASE)
_PRONOUN_LINE = 8  # words
_SHORT = 4  # words: a line this short ("in Lyon", "how many are there?") leans on the one before


def is_follow_up(line: str) -> bool:
    """Does `line` lean on the conversation before it (see the module's docstring)?"""
    text = line.strip()
    words = len(text.split())
    if _OPENINGS.match(text) or _REFERENCES.search(text) or _ENDINGS.search(text):
        return True
    if words <= _PRONOUN_LINE and _PRONOUNS.search(text):
        return True
    return words <= _SHORT


@dataclass
class Conversation:
    """The turns of the current topic, oldest first. `ask_with(line)` says which of them a new line is asked
    after (none when it starts a new topic, which also ends the old one); `add` records a turn that ran."""

    turns: list[Turn] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.turns)

    def ask_with(self, line: str) -> tuple[Turn, ...]:
        if self.turns and not is_follow_up(line):
            self.turns.clear()  # a question of its own: a new topic
        return tuple(self.turns)

    def add(self, question: str, sql: str, columns: Sequence[str] = ()) -> None:
        self.turns.append(Turn(question.strip(), sql.strip(), tuple(columns)))

    def clear(self) -> None:
        self.turns.clear()


def read_turns(path: str | Path) -> tuple[Turn, ...]:
    """Earlier turns from a JSON Lines file, oldest first: one object a line with "question" and "sql" (the SQL
    that ran for it) and, if known, "columns" (its result's). Raises UsageError, one line, for a bad file."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read the context file {path}: {getattr(err, 'strerror', None) or err}") from None
    turns = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise UsageError(f"{path} line {n}: not JSON ({err.msg})") from None
        question, sql = (record.get(k) if isinstance(record, dict) else None for k in ("question", "sql"))
        columns = record.get("columns", []) if isinstance(record, dict) else None
        if not (isinstance(question, str) and question.strip() and isinstance(sql, str) and sql.strip()
                and isinstance(columns, list) and all(isinstance(c, str) for c in columns)):
            raise UsageError(f'{path} line {n}: each line needs "question" and "sql" (text) and may have "columns" '
                             "(a list of names)")
        turns.append(Turn(question.strip(), sql.strip(), tuple(columns)))
    return tuple(turns)
