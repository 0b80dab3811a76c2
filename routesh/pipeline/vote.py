"""Step 3 with `vote`: many candidates, voted by what they return.

One batched call writes K candidates on the reduced schema: the greedy one and K−1 sampled (seeded, so
a question answers the same way every time), all from one reading of the prompt. The pseudo-SQL joins
them. Each distinct candidate runs read-only through the guard, fetching up to `vote_rows` rows (well
above the preview, so that candidates agreeing only on their first rows are not taken for one answer).
They are grouped by result with the comparison routesh-eval scores with (routesh/db/compare.py). The
largest group of candidates that execute wins; ties go to the group holding the greedy candidate, then to
the larger summed likelihood. Failures never win. Noise correction and continuation writing then work on
the winner, and the answer carries the agreement ("6 of 9")."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

from routesh import prompts
from routesh.db.compare import results_match
from routesh.engine.base import Completion
from routesh.pipeline import steps
from routesh.pipeline.run import QuestionRun, one_line
from routesh.pipeline.stages import Agreement, Stage
from routesh.pipeline.trial import Trial, run_trial
from routesh.sql.parse import Sql, squash
from routesh.sql.repair import Rename

GREEDY, PSEUDO = "greedy", "pseudo"


@dataclass(frozen=True)
class Candidate:
    query: Sql
    source: str  # GREEDY, PSEUDO or "sample N"
    logprob: float | None  # the model's log-likelihood of it, where known
    repairs: tuple[Rename, ...] = ()  # what the repair stage renamed in it (query is then the repaired SQL)


@dataclass
class Group:
    """Candidates that return the same result, and that result (the first member's run)."""

    trial: Trial
    members: list[Candidate] = field(default_factory=list)

    @property
    def has_greedy(self) -> bool:
        return any(c.source == GREEDY for c in self.members)

    @property
    def likelihood(self) -> float:
        return sum(math.exp(c.logprob) for c in self.members if c.logprob is not None)

    @property
    def representative(self) -> Candidate:
        """The greedy member if there is one, else the most likely (the text the later steps work on)."""
        return max(self.members, key=lambda c: (c.source == GREEDY, c.logprob if c.logprob is not None else -math.inf))


@dataclass(frozen=True)
class Ballot:
    """What the vote did: every candidate (a repaired one with its repaired SQL) and its group, and the
    winner (None when none executed)."""

    candidates: list[Candidate]
    groups: list[Group]
    winner: Group | None

    @property
    def agreement(self) -> Agreement | None:
        return Agreement(len(self.winner.members), len(self.candidates)) if self.winner else None

    def as_artifact(self) -> list[dict[str, object]]:
        """One entry per candidate (receipts keep it: the vote can be re-counted offline for other K)."""
        where = {id(c): i for i, g in enumerate(self.groups) for c in g.members}
        out = []
        for c in self.candidates:
            group = self.groups[where[id(c)]]
            trial = group.trial
            out.append({"source": c.source, "sql": c.query.text, "logprob": c.logprob, "group": where[id(c)],
                        "ran": trial.ran, "rows": len(trial.result.rows) if trial.result else None,
                        "error": trial.error, "won": group is self.winner,
                        "repaired": ", ".join(map(str, c.repairs)) or None})
        return out


def sample(run: QuestionRun, schema_text: str, *, draft: Sql | None) -> list[Completion]:
    """The greedy completion and K−1 sampled ones of the text-to-SQL prompt, in one call."""
    options = run.options
    request = prompts.ts_prompt(schema_text, run.dialect, run.question, run.hint, run.examples, run.context)
    greedy = run.sql_params(draft.text if draft else None)
    sampled = [replace(greedy, temperature=options.vote_temperature, seed=options.vote_seed + i)
               for i in range(1, options.vote_k)]
    return run.engine.generate([request] * options.vote_k, [greedy, *sampled], cancel=run.cancel)


def count(run: QuestionRun, candidates: list[Candidate]) -> Ballot:
    """Run each distinct candidate once and group them by result."""
    groups: list[Group] = []
    runs: dict[str, tuple[Group, Trial]] = {}  # squashed text → its group and run: a repeat is not run again
    counted: list[Candidate] = []  # the candidates in order, a repaired one with its repaired SQL
    for candidate in candidates:
        run.cancel.check()
        key = squash(candidate.query.text)
        if key not in runs:
            trial = run_trial(run.database, candidate.query, row_limit=run.options.vote_rows,
                              timeout=run.options.timeout)
            trial = steps.repair(run, trial, row_limit=run.options.vote_rows, quiet=True)
            group = next((g for g in groups if _same_result(g.trial, trial)), None)
            if group is None:
                group = Group(trial)
                groups.append(group)
            runs[key] = (group, trial)
        group, trial = runs[key]
        if trial.repairs:
            candidate = replace(candidate, query=trial.query, repairs=trial.repairs)
        group.members.append(candidate)
        counted.append(candidate)
    executed = [g for g in groups if g.trial.ran]
    winner = max(executed, key=_rank, default=None)
    return Ballot(counted, groups, winner)


def vote(run: QuestionRun, schema_text: str, *, pseudo: Sql | None) -> tuple[Trial | None, str]:
    """Step 3: the winning candidate's trial, cut to the preview the later steps are shown (None when no
    candidate came out of the replies), and the greedy reply."""
    run.starting(Stage.TS, f"generation ({run.options.vote_k} candidates)")
    completions = sample(run, schema_text, draft=pseudo)
    greedy_reply = completions[0]
    candidates = []
    for i, out in enumerate(completions):
        sql = run.extract(out.text)
        if i == 0:
            run.emit(Stage.TS, one_line(sql.text) if sql else "no SQL in the reply", raw=out.text,
                     artifact=sql.text if sql else None, accepted=sql is not None, completion=out)
        if sql is not None:
            candidates.append(Candidate(sql, GREEDY if i == 0 else f"sample {i}", out.logprob))
    if pseudo is not None:
        candidates.append(Candidate(pseudo, PSEUDO, None))
    if not candidates:
        return None, greedy_reply.text
    started = time.perf_counter()
    ballot = count(run, candidates)
    repaired = [c for c in ballot.candidates if c.repairs]
    if repaired:
        renames = sorted({str(r) for c in repaired for r in c.repairs})
        # taken only when the SQL that won is a repaired one: otherwise the answer owes the repair nothing
        # (and the shell must not say "revised by repair")
        won = ballot.winner is not None and bool(ballot.winner.representative.repairs)
        run.emit(Stage.REPAIR, f"{len(repaired)} of {len(candidates)} candidates repaired: {', '.join(renames)}",
                 artifact=[c.query.text for c in repaired], accepted=True if won else None,
                 reason="each repaired candidate executes" + ("; the winner is one" if won else "; none of them won"))
    agreement = ballot.agreement
    run.answer.agreement = agreement
    extra_tokens = sum(c.output_tokens for c in completions[1:])
    if ballot.winner is None:
        run.emit(Stage.VOTE, f"none of {len(candidates)} candidates executed", artifact=ballot.as_artifact(),
                 accepted=False, reason="every candidate fails", seconds=time.perf_counter() - started,
                 output_tokens=extra_tokens)
        first = ballot.groups[0]  # the greedy one's (or the first candidate's) failure goes on to correction
        return Trial(first.members[0].query, None, first.trial.error, first.trial.timed_out), greedy_reply.text
    winner = ballot.winner.representative
    run.emit(Stage.VOTE, f"{agreement}: {one_line(winner.query.text)}", artifact=ballot.as_artifact(),
             accepted=True, reason=f"{agreement.votes} of {agreement.candidates} candidates return this result"
             f" ({len(ballot.groups)} different results; the winner: {winner.source})",
             seconds=time.perf_counter() - started, output_tokens=extra_tokens)
    trial = ballot.winner.trial
    return Trial(winner.query, trial.preview(run.options.preview_rows), None), greedy_reply.text


def _same_result(a: Trial, b: Trial) -> bool:
    if not (a.ran and b.ran and a.result is not None and b.result is not None):
        return False
    return results_match(a.result.rows, b.result.rows, ordered=False)


def _rank(group: Group) -> tuple[bool, int, bool, float]:
    return rank(rows=not group.trial.empty_or_failed, votes=len(group.members), has_greedy=group.has_greedy, likelihood=group.likelihood)


def rank(*, rows: bool, votes: int, has_greedy: bool, likelihood: float) -> tuple[bool, int, bool, float]:
    """The vote's order among groups that execute: a result with rows before an empty one (an empty
    result is the usual sign of a wrong value or join), then the most votes, the greedy candidate's
    group, the larger summed likelihood. bench/vote_recount.py re-counts receipts with it."""
    return (rows, votes, has_greedy, likelihood)
