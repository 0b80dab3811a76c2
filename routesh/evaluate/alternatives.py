"""Gold alternatives in defog sql-eval's convention (postgres-defog's `query` column).

One gold cell may hold several acceptable queries:

- **`;` separates alternatives.** The split is string-aware: a `;` inside a '...' string (with '' and,
  in E'...' strings, backslash escapes), a "..." identifier, a $tag$...$tag$ dollar-quoted string, a
  -- or /* */ comment does not split. Empty pieces are dropped.
- **`{a, b}` is a column choice.** It stands for every non-empty combination of its options, in the
  order written, joined with ", " (sql-eval's `get_all_minimal_queries`: `{a,b}` gives `a`, `b` and
  `a, b`). Options are split at top-level commas (commas inside parentheses or strings stay).
- **`{}` repeats the choice** of the nearest column-choice group before it (sql-eval only rewrites the
  literal `GROUP BY {}`; this rewrites every empty pair). A statement with several groups expands to
  their product.
- Braces inside strings, quoted identifiers and comments are left alone. The result keeps the order
  of first appearance, without duplicates.
"""

from __future__ import annotations

import itertools

from routesh.sql.split import code_positions, split_statements


def _groups(statement: str) -> list[tuple[int, int]]:
    """(start, end) of each {...} pair in code, end exclusive."""
    out, opened = [], None
    for i in code_positions(statement):
        if statement[i] == "{" and opened is None:
            opened = i
        elif statement[i] == "}" and opened is not None:
            out.append((opened, i + 1))
            opened = None
    return out


def _options(inside: str) -> list[str]:
    """The choice's options: split at commas outside parentheses and strings."""
    parts, depth, start = [], 0, 0
    code = set(code_positions(inside))
    for i, c in enumerate(inside):
        if i not in code:
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(inside[start:i])
            start = i + 1
    parts.append(inside[start:])
    return [p.strip() for p in parts if p.strip()]


def expand_statement(statement: str) -> list[str]:
    """Every query one statement with {a, b} choices (and {} repeats) stands for."""
    groups = _groups(statement)
    choices: list[list[str]] = []
    for start, end in groups:
        options = _options(statement[start + 1 : end - 1])
        if options:
            choices.append([", ".join(combo) for r in range(1, len(options) + 1)
                            for combo in itertools.combinations(options, r)])
    if not choices:
        return [statement]
    out = []
    for picked in itertools.product(*choices):
        text, last, position, k = [], None, 0, 0
        for start, end in groups:
            text.append(statement[position:start])
            if end - start > 2 and _options(statement[start + 1 : end - 1]):
                last = picked[k]
                k += 1
                text.append(last)
            else:  # {} (or { }): the nearest choice before it; left as written when there is none
                text.append(last if last is not None else statement[start:end])
            position = end
        text.append(statement[position:])
        out.append("".join(text))
    return out


def expand_gold(cell: str) -> tuple[str, ...]:
    """All the alternatives a gold cell stands for, in order, without duplicates."""
    seen: dict[str, None] = {}
    for statement in split_statements(cell):
        for query in expand_statement(statement):
            seen.setdefault(query, None)
    return tuple(seen)
