"""Turn what the user typed (a path, sqlite:///..., postgresql://..., a libpq conninfo) into a Target."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from routesh.errors import UsageError

_PG_SCHEMES = ("postgresql", "postgres")
_CONNINFO = re.compile(r"^\s*[A-Za-z_]+\s*=")
_LIBPQ_ENV = ("PGHOST", "PGDATABASE", "PGSERVICE", "PGHOSTADDR")


@dataclass(frozen=True)
class Target:
    dialect: str  # "sqlite" | "postgres"
    location: str  # an absolute file path for SQLite; the DSN or conninfo for PostgreSQL


def parse_dsn(dsn: str | None) -> Target:
    """Decide which backend a DSN names. Never touches the file system beyond expanding `~`."""
    text = (dsn or "").strip()
    if not text:
        # psql's habit: with PG* variables set, no argument means "the database they describe".
        if any(os.environ.get(name) for name in _LIBPQ_ENV):
            return Target("postgres", "")
        raise UsageError("no database given: pass a SQLite file path, sqlite:///path or postgresql://...")
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in _PG_SCHEMES:
        return Target("postgres", text)
    if scheme == "sqlite":
        return Target("sqlite", _sqlite_url_path(text))
    if scheme:
        raise UsageError(
            f"unsupported database URL scheme '{scheme}://': routesh speaks SQLite (a file path or sqlite:///path) "
            "and PostgreSQL (postgresql://...)"
        )
    if _CONNINFO.match(text) and not Path(text).expanduser().exists():
        return Target("postgres", text)
    return Target("sqlite", str(Path(text).expanduser().resolve()))


def _sqlite_url_path(url: str) -> str:
    """SQLAlchemy's convention: sqlite:///relative.db and sqlite:////absolute/path.db."""
    parts = urlsplit(url)
    if parts.netloc:
        raise UsageError(f"a sqlite URL has no host: write sqlite:///{parts.netloc}{parts.path} (three slashes)")
    path = unquote(parts.path)
    if not path or path == "/":
        raise UsageError("the sqlite URL names no file: write sqlite:///path/to/file.db")
    path = path[1:]  # the slash that follows the empty host
    return str(Path(path).expanduser().resolve())


def redact(dsn: str) -> str:
    """The DSN with any password removed, for display and error messages."""
    if "://" in dsn:
        parts = urlsplit(dsn)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}@{host}"
        query = re.sub(r"(?i)(password=)[^&]*", r"\1***", parts.query)
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    return re.sub(r"(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", dsn)
