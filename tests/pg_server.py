"""A real, throwaway PostgreSQL server for the tests.

The machinery lives in routesh/evaluate/pgserver.py (routesh-eval --start-pg uses it too); this module
keeps the names the tests and bench/ import from here.
"""

from __future__ import annotations

from routesh.evaluate.pgserver import (  # noqa: F401  (re-exported)
    PASSWORD,
    PASSWORD_USER,
    SUPERUSER,
    PgServer,
    find_bin_dir,
    free_port,
    serve_forever,
    start_server,
)

if __name__ == "__main__":  # a server to poke at by hand: python tests/pg_server.py
    serve_forever()
