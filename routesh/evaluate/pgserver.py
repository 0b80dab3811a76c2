"""A real, throwaway PostgreSQL server: for the tests, bench/ and `routesh-eval --start-pg`.

initdb into a temporary directory, start `postgres` on 127.0.0.1 (free port, unix socket in the
same directory), hand out DSNs, stop it with `pg_ctl stop -m immediate`. PostgreSQL refuses to run
as root, so under euid 0 every server binary runs as the `postgres` OS user via runuser.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

SUPERUSER = "routesh_admin"
PASSWORD_USER = "routesh_pw"
PASSWORD = "s3cret-Pw!"  # for the password user; the tests check it never shows up in messages
_BINARIES = ("initdb", "pg_ctl", "postgres")
_OS_USER = "postgres"  # who runs the server when we are root


def find_bin_dir() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres: PATH first, else the newest
    /usr/lib/postgresql/*/bin (Debian's layout keeps them off PATH)."""
    initdb = shutil.which("initdb")
    candidates = [Path(os.path.realpath(initdb)).parent] if initdb else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    return next((d for d in candidates if all((d / b).exists() for b in _BINARIES)), None)


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", path.parent.name)) or (0,)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgServer:
    bin_dir: Path
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="routesh-pg-")))
    host: str = "127.0.0.1"
    port: int = 0
    superuser: str = SUPERUSER
    password_user: str = PASSWORD_USER
    password: str = PASSWORD
    _options: str = ""  # the server's command-line options, kept for restart()

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> PgServer:
        self._prepare_root()
        self._run(
            "initdb", "-D", str(self.data_dir), "-U", self.superuser, "--auth=trust",
            "-E", "UTF8", "--no-locale", "--no-sync",
        )
        self._write_hba()
        last_error = ""
        for _ in range(3):  # a free port can be taken between probing and binding
            self.port = free_port()
            options = (
                f"-p {self.port} -k {self.root} -c listen_addresses={self.host} -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c autovacuum=off "
                "-c max_connections=50 -c password_encryption=scram-sha-256"
            )
            proc = self._run(
                "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-o", options,
                "-w", "-t", "60", "start", check=False,
            )
            if proc.returncode == 0:
                self._options = options
                break
            last_error = proc.stdout + proc.stderr + self._log_tail()
        else:
            raise RuntimeError(f"PostgreSQL did not start:\n{last_error}")
        self._create_password_user()
        return self

    def kill(self) -> None:
        """Stop the server abruptly (`pg_ctl stop -m immediate`: clients see their connections drop)
        but keep its data directory, so that restart() brings the same server back."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")

    def restart(self) -> None:
        """Start a server stopped with kill() again, on the same port with the same options."""
        if not self._options:
            raise RuntimeError("restart() needs a server that start() started")
        proc = self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-o", self._options,
                         "-w", "-t", "60", "start", check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"PostgreSQL did not restart:\n{proc.stdout}{proc.stderr}{self._log_tail()}")

    def stop(self) -> None:
        if self.data_dir.exists():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    # --- what tests use ----------------------------------------------------------------------

    def dsn(self, dbname: str = "postgres", *, user: str | None = None, password: str | None = None) -> str:
        user = user or self.superuser
        auth = f"{user}:{password}" if password is not None else user
        return f"postgresql://{auth}@{self.host}:{self.port}/{dbname}"

    @property
    def admin_dsn(self) -> str:
        return self.dsn("postgres")

    def admin_connect(self, dbname: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(self.dsn(dbname), autocommit=True)

    def create_database(self, name: str, sql_file: Path | None = None, sql_text: str | None = None) -> str:
        """A fresh database (dropped first if it exists), loaded from an SQL file and/or text.
        Returns its DSN (superuser)."""
        with self.admin_connect() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        script = (sql_file.read_text() if sql_file else "") + "\n" + (sql_text or "")
        if script.strip():
            # The simple protocol runs the whole script, in one implicit transaction.
            with psycopg.connect(self.dsn(name), autocommit=True) as conn:
                conn.execute(script)  # type: ignore[arg-type]
        return self.dsn(name)

    # --- helpers -----------------------------------------------------------------------------

    def _prepare_root(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.root, _OS_USER, _OS_USER)
        self.root.chmod(0o700)

    def _write_hba(self) -> None:
        """Trust for the superuser; a real password check for the password user."""
        hba = (
            "local all all trust\n"
            f"host all {self.password_user} 127.0.0.1/32 scram-sha-256\n"
            "host all all 127.0.0.1/32 trust\n"
        )
        (self.data_dir / "pg_hba.conf").write_text(hba)

    def _create_password_user(self) -> None:
        with self.admin_connect() as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(self.password_user), sql.Literal(self.password)
                )
            )

    def _run(self, binary: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin_dir / binary), *args]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", _OS_USER, "--", *cmd]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=self.root, timeout=120)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        return proc

    def _log_tail(self) -> str:
        try:
            return self.log_file.read_text()[-2000:]
        except OSError:
            return ""


@contextlib.contextmanager
def start_server() -> Iterator[PgServer]:
    """A running server for the duration of the block; stopped and deleted after it.
    Raises LookupError when no PostgreSQL server binaries are installed."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise LookupError("no PostgreSQL server binaries (initdb, pg_ctl, postgres) on PATH or in /usr/lib/postgresql")
    server = PgServer(bin_dir)
    try:
        yield server.start()
    finally:
        server.stop()


def serve_forever() -> None:
    """A server to poke at by hand (python -m routesh.evaluate.pgserver):
    prints its admin DSN and runs until Ctrl-C or SIGTERM."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop the server on SIGTERM too
    with start_server() as srv:
        print(srv.admin_dsn, "root:", srv.root, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)


if __name__ == "__main__":
    serve_forever()
