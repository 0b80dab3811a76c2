"""The error hierarchy. Each error carries the process exit code DESIGN.md assigns to it,
so the CLI can turn any of them into one line on stderr and the right status."""

from __future__ import annotations


class RoutesError(Exception):
    """Base of every error routesh reports to a user (never shown as a traceback)."""

    exit_code = 1


class UsageError(RoutesError):
    """Bad arguments or a DSN routesh cannot interpret."""

    exit_code = 1


class ConnectError(RoutesError):
    """The database could not be opened: missing file, refused connection, bad password..."""

    exit_code = 1


class Refused(RoutesError):
    """A statement was refused by a read-only layer. `layer` says which one."""

    exit_code = 2

    def __init__(self, reason: str, *, layer: str, node: str | None = None):
        self.reason = reason
        self.layer = layer
        self.node = node
        super().__init__(f"refused by the {layer}: {reason}")


class QueryError(RoutesError):
    """The database rejected or failed to run a statement."""

    exit_code = 3


class QueryTimeout(QueryError):
    """The statement ran past the statement timeout and was stopped."""


class Cancelled(RoutesError):
    """The user stopped the work (Ctrl-C, a cancelled question); not a failure of the work itself."""

    exit_code = 130


class QueryCancelled(QueryError, Cancelled):
    """The statement was cancelled (Ctrl-C or Database.cancel from another thread); exit 3 as a database error."""


class ConnectionLost(QueryError):
    """The server connection dropped; the next statement reconnects."""


class ModelError(RoutesError):
    """The model could not be found, fetched, verified, converted, loaded or reached (exit 1)."""

    exit_code = 1


class GenerationCancelled(Cancelled):
    """generate() was cancelled from another thread (Ctrl-C in the shell)."""


class Abstained(RoutesError):
    """The pipeline produced no SQL it could stand behind, and says why (exit 4)."""

    exit_code = 4
