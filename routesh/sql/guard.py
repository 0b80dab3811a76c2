"""Layer (a) of the read-only guard: classify a statement on sqlglot's tree, in the connection's dialect.

Fail closed: a statement is read-only only if it parses, is exactly one statement, its root is a
query (SELECT, set operation, VALUES), and no node anywhere in its tree changes data, the schema, the
session or the host. What this layer misses, the database envelope (db/sqlite.py, db/postgres.py) still stops.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.tokens import TokenType

from routesh.errors import Refused
from routesh.sql.parse import QUERY_ROOTS, TOO_DEEP, first_token, parse_one

LAYER = "guard"

# Nodes that are never part of a read-only query, wherever they appear (a DELETE inside a CTE, a
# SELECT ... INTO that creates a table, FOR UPDATE row locks).
_WRITE_NODES: dict[str, str] = {
    "Insert": "writes rows",
    "Update": "writes rows",
    "Delete": "deletes rows",
    "Merge": "writes rows",
    "Create": "changes the schema",
    "Drop": "changes the schema",
    "Alter": "changes the schema",
    "TruncateTable": "deletes rows",
    "Into": "creates a table (SELECT ... INTO)",
    "Lock": "takes row locks (FOR UPDATE/SHARE)",
    "Copy": "copies data to or from outside the database",
    "Set": "changes session settings",
    "Pragma": "changes or reads connection settings",
    "Attach": "attaches another database file",
    "Detach": "detaches a database",
    "Transaction": "controls the transaction",
    "Commit": "controls the transaction",
    "Rollback": "controls the transaction",
    "Use": "changes the current database",
    "Grant": "changes privileges",
    "Revoke": "changes privileges",
    "LoadData": "loads data",
    "Analyze": "writes statistics",
    "Kill": "stops another session",
    "Cache": "creates a cached table",
    "Uncache": "drops a cached table",
    "Refresh": "refreshes stored data",
    "Declare": "declares a variable or cursor",
    "Command": "is a statement routesh does not model (refused to be safe)",
}
_WRITE_NODE_TYPES: tuple[tuple[type[exp.Expression], str], ...] = tuple(
    (getattr(exp, name), why) for name, why in _WRITE_NODES.items() if hasattr(exp, name)
)

# Functions refused anywhere in a statement, whatever mode: they write files, run programs, load code,
# reach other servers, change settings or sequences, or signal other sessions. Names are lower case and
# matched on the last part of a qualified name (pg_catalog.set_config is set_config).
DENIED_FUNCTIONS: dict[str, frozenset[str]] = {
    "postgres": frozenset(
        {
            # settings and the transaction
            "set_config", "txid_current", "pg_current_xact_id",
            # other sessions and the server
            "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf", "pg_rotate_logfile",
            "pg_log_backend_memory_contexts", "pg_promote", "pg_switch_wal", "pg_create_restore_point",
            "pg_backup_start", "pg_backup_stop", "pg_start_backup", "pg_stop_backup",
            "pg_wal_replay_pause", "pg_wal_replay_resume", "pg_import_system_collations",
            "pg_stat_reset", "pg_stat_reset_shared", "pg_stat_reset_single_table_counters",
            "pg_stat_reset_single_function_counters", "pg_stat_reset_slru", "pg_stat_reset_replication_slot",
            "pg_create_physical_replication_slot", "pg_create_logical_replication_slot",
            "pg_drop_replication_slot", "pg_replication_origin_create", "pg_replication_origin_drop",
            "pg_notify", "pg_advisory_lock", "pg_advisory_lock_shared", "pg_advisory_xact_lock",
            "pg_advisory_xact_lock_shared", "pg_try_advisory_lock", "pg_try_advisory_lock_shared",
            "pg_try_advisory_xact_lock", "pg_try_advisory_xact_lock_shared",
            # sequences
            "nextval", "setval",
            # the server's file system and programs
            "pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_stat_file", "pg_ls_logdir",
            "pg_ls_waldir", "pg_ls_tmpdir", "pg_ls_archive_statusdir", "pg_file_write", "pg_file_rename",
            "pg_file_unlink", "pg_file_sync", "pg_logdir_ls",
            # large objects
            "lo_import", "lo_export", "lo_unlink", "lo_create", "lo_creat", "lo_from_bytea", "lo_put",
            "lo_truncate", "lo_truncate64", "lo_open", "lowrite", "lo_write",
            # other servers (dblink, postgres_fdw helpers)
            "dblink", "dblink_exec", "dblink_connect", "dblink_connect_u", "dblink_open", "dblink_fetch",
            "dblink_send_query", "dblink_get_result", "postgres_fdw_disconnect", "postgres_fdw_disconnect_all",
            # replication slots and origins: they outlive the transaction (a slot holds WAL forever)
            "pg_copy_physical_replication_slot", "pg_copy_logical_replication_slot",
            "pg_replication_slot_advance", "pg_logical_slot_get_changes", "pg_logical_slot_get_binary_changes",
            "pg_logical_emit_message", "pg_replication_origin_advance", "pg_replication_origin_session_setup",
            "pg_replication_origin_session_reset", "pg_replication_origin_xact_setup",
            "pg_replication_origin_xact_reset", "pg_stat_reset_subscription_stats",
            # index maintenance that writes pages even inside a read-only transaction; OID consumption
            "brin_summarize_new_values", "brin_summarize_range", "brin_desummarize_range",
            "gin_clean_pending_list", "pg_nextoid",
            # functions that run a query given as text (its functions are hidden from this list and
            # from the plan: ts_stat(concat('SELECT ... pg_termi', 'nate_backend(...)')) would run them)
            "query_to_xml", "query_to_xml_and_xmlschema", "query_to_xmlschema", "cursor_to_xml",
            "cursor_to_xmlschema", "ts_stat", "ts_rewrite",
        }
    ),
    "sqlite": frozenset(
        {
            "load_extension", "readfile", "writefile", "edit", "fts3_tokenizer", "zipfile", "sqlar_compress",
            "sqlar_uncompress", "lsdir", "fsdir",
        }
    ),
}

# In write mode the user may change this database, never the host or other databases.
_HOST_ESCAPE_NODES: tuple[type[exp.Expression], ...] = tuple(
    getattr(exp, n) for n in ("Attach", "Detach", "Copy", "Command") if hasattr(exp, n)
)


@dataclass(frozen=True)
class Verdict:
    read_only: bool
    reason: str  # why not (or "read-only query")
    node: str | None = None  # the offending node's kind, e.g. "DELETE", "FUNCTION set_config"


def classify(sql: str, dialect: str) -> Verdict:
    """Is `sql` one read-only query in `dialect`? Unparseable or ambiguous input is not."""
    try:
        return _classify(sql, dialect)
    except RecursionError:  # FLOOR(FLOOR(FLOOR(... from a small model: fail closed, don't crash
        return Verdict(False, TOO_DEEP, None)


def _classify(sql: str, dialect: str) -> Verdict:
    statement, problem = _parse_checkable(sql, dialect)
    if statement is None:
        return Verdict(False, problem, None)
    # Any other root (sqlglot's Command fallback for syntax it does not model, oddities like
    # `LISTEN x` parsing as an alias) is refused.
    if not isinstance(statement, QUERY_ROOTS):
        kind = first_token(sql, dialect)
        return Verdict(False, f"{kind} is not a query", kind)
    for node in statement.walk():
        for node_type, why in _WRITE_NODE_TYPES:
            if isinstance(node, node_type):
                where = " inside a WITH clause" if node.find_ancestor(exp.CTE) else ""
                return Verdict(False, f"{_kind(node)}{where} {why}", _kind(node))
        denied = _denied_function(node, dialect)
        if denied:
            return Verdict(False, f"function {denied}() is not allowed", f"FUNCTION {denied}")
    return Verdict(True, "read-only query")


def check(sql: str, dialect: str, *, writes_allowed: bool = False) -> None:
    """Raise Refused unless `sql` may run: read-only, or (in write mode) one statement that stays
    inside this database."""
    if not writes_allowed:
        verdict = classify(sql, dialect)
        if not verdict.read_only:
            raise Refused(verdict.reason, layer=LAYER, node=verdict.node)
        return
    try:
        _check_write(sql, dialect)
    except RecursionError:
        raise Refused(TOO_DEEP, layer=LAYER) from None


def _check_write(sql: str, dialect: str) -> None:
    statement, problem = _parse_checkable(sql, dialect)
    if statement is None:
        raise Refused(problem, layer=LAYER)
    for node in statement.walk():
        if isinstance(node, _HOST_ESCAPE_NODES):
            raise Refused(f"{_kind(node)} is not allowed, even in write mode", layer=LAYER, node=_kind(node))
        denied = _denied_function(node, dialect)
        if denied:
            raise Refused(f"function {denied}() is not allowed, even in write mode", layer=LAYER,
                          node=f"FUNCTION {denied}")


def function_name(node: exp.Expression) -> str | None:
    """The lower-case name of a function call node, or None when `node` is not one."""
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    if isinstance(node, exp.Func):
        return node.sql_name().lower()
    return None


def _denied_function(node: exp.Expression, dialect: str) -> str | None:
    name = function_name(node)
    if name and name in DENIED_FUNCTIONS.get(dialect, frozenset()):
        return name
    return None


def _parse_checkable(sql: str, dialect: str) -> tuple[exp.Expression | None, str]:
    """Exactly one statement whose names the check can see, or say why not."""
    statement, problem = parse_one(sql, dialect)
    if statement is None:
        return None, problem
    if dialect in _UNICODE_IDENTIFIER_DIALECTS and _has_unicode_escaped_identifier(sql, dialect):
        return None, 'a Unicode-escaped identifier (U&"...") hides its name from the check; write the name plainly'
    return statement, ""


# PostgreSQL reads U&"\0073et_config" as the identifier set_config; sqlglot reads `U & "\0073et_config"`,
# a bitwise AND with a call to a function of that odd name, so the deny-list would never see it.
_UNICODE_IDENTIFIER_DIALECTS = frozenset({"postgres"})


def _has_unicode_escaped_identifier(sql: str, dialect: str) -> bool:
    """U, &, and a quoted identifier written with nothing between them (PostgreSQL's U&"...")."""
    try:
        tokens = sqlglot.Dialect.get_or_raise(dialect).tokenize(sql)
    except SqlglotError:
        return True  # it parsed a moment ago; fail closed if it now does not tokenize
    for u, amp, ident in zip(tokens, tokens[1:], tokens[2:]):
        if (
            u.text.upper() == "U"
            and amp.token_type == TokenType.AMP
            and ident.token_type == TokenType.IDENTIFIER
            and amp.start == u.end + 1
            and ident.start == amp.end + 1
        ):
            return True
    return False


def _kind(node: exp.Expression) -> str:
    if isinstance(node, exp.Command):
        return str(node.this).upper() or "COMMAND"
    if isinstance(node, exp.Into):
        return "SELECT INTO"
    if isinstance(node, exp.Lock):
        return "FOR UPDATE/SHARE"
    if isinstance(node, exp.TruncateTable):
        return "TRUNCATE"
    return type(node).__name__.upper()
