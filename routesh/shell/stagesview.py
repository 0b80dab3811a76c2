"""How the pipeline's StageEvents look on screen: one compact coloured line per step (`\\stages`), or
the whole trace with the model's raw replies (`\\why`)."""

from __future__ import annotations

import json
import shutil

from prompt_toolkit.formatted_text import FormattedText

from routesh.pipeline.stages import Answer, Stage, StageEvent

LABELS = {
    Stage.CONTEXT: "context", Stage.MEMORY: "memory",
    Stage.VALUES: "values", Stage.SL: "linking", Stage.PSEUDO: "pseudo-SQL", Stage.MERGE: "merge", Stage.TS: "generation",
    Stage.VOTE: "vote", Stage.REPAIR: "repair", Stage.EXECUTE: "execute", Stage.FALLBACK: "fallback",
    Stage.NC: "correction", Stage.CW: "continuation",
    Stage.FINAL: "final",
}
_WIDTH = max(len(v) for v in LABELS.values())


def _mark(event: StageEvent) -> tuple[str, str]:
    if event.accepted is None:
        return "class:stage.info", "·"
    return ("class:stage.ok", "✓") if event.accepted else ("class:stage.no", "✗")


def _cost(event: StageEvent) -> str:
    parts = []
    if event.prompt_tokens or event.output_tokens:
        parts.append(f"{event.prompt_tokens}→{event.output_tokens} tok")
    if event.seconds >= 0.005:
        parts.append(f"{event.seconds:.2f} s")
    return "  ".join(parts)


def event_line(event: StageEvent, width: int | None = None) -> FormattedText:
    """  ✓ linking       singer(Age, Country)                         508→28 tok  1.96 s"""
    width = width or shutil.get_terminal_size((100, 24)).columns
    style, mark = _mark(event)
    cost = _cost(event)
    text = event.summary
    if event.accepted is False and event.reason and event.reason not in text:
        text += f" — {event.reason}"
    room = max(20, width - _WIDTH - len(cost) - 8)
    if len(text) > room:
        text = text[: room - 1] + "…"
    return FormattedText([
        ("", "  "), (style, mark), ("", " "), ("class:stage.name", LABELS.get(event.stage, event.stage).ljust(_WIDTH)),
        ("", "  "), ("class:stage.text", text.ljust(room)), ("", "  "), ("class:stage.cost", cost), ("", "\n"),
    ])


def trace(answer: Answer) -> FormattedText:
    """Everything about the last question: each step's input summary, raw reply, artifact, verdict."""
    out: list[tuple[str, str]] = [("class:stage.title", f"Question: {answer.question}\n")]
    for event in answer.events:
        style, mark = _mark(event)
        out += [(style, f"{mark} "), ("class:stage.name", LABELS.get(event.stage, event.stage)),
                ("class:stage.cost", f"   {_cost(event)}\n" if _cost(event) else "\n"),
                ("class:stage.text", f"    {event.summary}\n")]
        if event.reason:
            out.append((style, f"    {'taken' if event.accepted else 'why'}: {event.reason}\n"))
        if event.raw:
            out.append(("class:stage.raw", _indent("model said:\n" + event.raw.strip())))
        if event.artifact is not None and event.stage != Stage.FINAL and not _echoes(event):
            label = {Stage.VOTE: "candidates:\n", Stage.VALUES: "matches:\n"}.get(event.stage, "parsed:\n")
            out.append(("class:stage.artifact", _indent(label + _show(event.artifact, event.stage))))
    verdict = f"SQL: {answer.sql}" if answer.sql else f"abstained: {answer.reason}"
    if answer.agreement:
        verdict += f"\n{answer.agreement}" + (" — check this SQL" if answer.agreement.low else "")
    out.append(("class:stage.title", f"{verdict}\n{answer.tokens} tokens, {answer.seconds:.2f} s\n"))
    return FormattedText(out)


def _echoes(event: StageEvent) -> bool:
    """Skip the artifact when it only repeats the summary or the raw reply."""
    shown = _show(event.artifact).strip()
    return shown in (event.summary.strip(), (event.raw or "").strip())


def _show(artifact: object, stage: Stage | None = None) -> str:
    if isinstance(artifact, str):
        return artifact
    if stage == Stage.VOTE and isinstance(artifact, list):
        return "\n".join(_ballot_line(c) for c in artifact if isinstance(c, dict))
    if stage == Stage.VALUES and isinstance(artifact, list):
        return "\n".join(f"{m.get('phrase')!r} → {m.get('table')}.{m.get('column')} = {m.get('value')!r} ({m.get('how')})"
                         for m in artifact if isinstance(m, dict))
    try:
        return json.dumps(artifact, ensure_ascii=False)
    except TypeError:
        return repr(artifact)


def _ballot_line(candidate: dict) -> str:
    """`* #0 greedy     3 rows   SELECT ...`: its result group (* the winner's), source, outcome, SQL."""
    outcome = f"{candidate.get('rows')} rows" if candidate.get("ran") else f"fails: {candidate.get('error')}"
    sql = " ".join(str(candidate.get("sql", "")).split())
    return f"{'*' if candidate.get('won') else ' '} #{candidate.get('group')} {candidate.get('source', ''):<9} {outcome:<9} {sql}"


def _indent(text: str) -> str:
    return "".join(f"      {line}\n" for line in text.splitlines())
