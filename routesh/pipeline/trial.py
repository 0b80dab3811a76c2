"""A trial run: one candidate executed read-only (guard included), and the execution feedback noise
correction is shown about it. The pipeline runs its candidates through here; finetune/ labels its
training candidates through here too, so their feedback is byte-identical to what inference shows."""

from __future__ import annotations

from dataclasses import dataclass

from routesh import prompts
from routesh.db.base import Database, ExecOptions, Result
from routesh.db.schema import Schema
from routesh.errors import Cancelled, QueryTimeout, RoutesError
from routesh.sql.parse import Sql
from routesh.sql.repair import Rename


@dataclass
class Trial:
    """One run of one query: its result (up to the row limit it ran with) or the error the database gave."""

    query: Sql  # the text that ran, its tree parsed (once) when a later step reads it
    result: Result | None
    error: str | None
    timed_out: bool = False
    repairs: tuple[Rename, ...] = ()  # names the repair stage changed to make `query` (none: as written)

    @property
    def sql(self) -> str:
        return self.query.text

    @property
    def ran(self) -> bool:
        return self.error is None

    @property
    def complete(self) -> bool:
        """It ran and every row came back (a comparison on a cut result would be a guess)."""
        return self.result is not None and not self.result.truncated

    @property
    def empty_or_failed(self) -> bool:
        return not self.ran or self.result is None or not self.result.rows

    def preview(self, rows: int) -> Result | None:
        """The result as a trial run with row_limit=rows would have returned it."""
        if self.result is None:
            return None
        r = self.result
        return Result(list(r.columns), list(r.rows[:rows]), r.elapsed, r.truncated or len(r.rows) > rows, r.status)

    def feedback(self, schema: Schema | None, rows: int | None = None) -> str:
        """The error text, or a summary of the result (of its first `rows` rows when given). The schema
        lets an unknown-column error say where such a column does exist."""
        result = self.result if rows is None else self.preview(rows)
        return prompts.render_feedback(result, self.error, schema)


def run_trial(db: Database, sql: str | Sql, *, row_limit: int, timeout: float) -> Trial:
    """Run `sql` through the guard and the read-only envelope (which parses it again on purpose: the
    guard checks exactly the text that runs). A cancellation (the user's Ctrl-C) is not the candidate's
    fault: it propagates and stops the whole question. The trial carries the Sql on (given one, or made
    from the text), so later steps read its tree instead of parsing the text again."""
    query = sql if isinstance(sql, Sql) else Sql(sql, db.dialect)
    try:
        result = db.execute(query.text, options=ExecOptions(row_limit=row_limit, timeout=timeout))
    except Cancelled:
        raise
    except QueryTimeout as err:
        return Trial(query, None, str(err), timed_out=True)
    except RoutesError as err:
        return Trial(query, None, str(err))
    return Trial(query, result, None)
