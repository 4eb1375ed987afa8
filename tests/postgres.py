"""A real PostgreSQL server for the tests, from Debian's ``postgresql`` package (``make postgres`` installs it).

``PostgresServer`` runs ``initdb`` into a new temporary folder, starts the server with ``pg_ctl`` on 127.0.0.1
and a free port (no other address, its socket in that folder), and stops it and removes the folder at the end.
The server refuses to run as root, so under root it runs as the ``postgres`` user the package creates. Logins
need the password (scram-sha-256), so that a wrong password is a real error.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

try:
    import psycopg
except ImportError:  # the optional driver: the tests skip, saying how to install it
    psycopg = None

USER, PASSWORD = "aelab", "s3cret-pw"
INSTALL = "run 'make postgres' (it installs Debian's postgresql package)"


def binaries() -> Path | None:
    """The folder holding initdb and pg_ctl: on PATH, or Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(versions[-1]).parent if versions else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def skip_reason() -> str | None:
    """Why the PostgreSQL tests cannot run here, or None."""
    if psycopg is None:
        return "the PostgreSQL driver is missing: pip install 'aelab[postgres]' (or make test)"
    if binaries() is None:
        return f"PostgreSQL's server is not installed: {INSTALL}"
    if os.geteuid() == 0 and (shutil.which("runuser") is None or _uid("postgres") is None):
        return "running as root and there is no 'postgres' user to run the server as; " + INSTALL
    return None


def _uid(name: str) -> int | None:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


class PostgresServer:
    """One server in a temporary folder; ``url(db)`` gives a SQLAlchemy URL for a database on it."""

    def __init__(self) -> None:
        self.bin = binaries()
        assert self.bin is not None
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="aelab-pg-"))
        self.data = self.folder / "data"
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            uid = _uid("postgres")
            assert uid is not None
            os.chown(self.folder, uid, -1)
        self.running = False

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=120)

    def start(self) -> PostgresServer:
        pwfile = self.folder / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self.as_postgres:
            shutil.chown(pwfile, "postgres")
        self._run("initdb", "-D", str(self.data), "-U", USER, f"--pwfile={pwfile}", "--auth=scram-sha-256",
                  "-E", "UTF8", "--no-sync")
        pwfile.unlink()
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.folder} -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"), "-w", "start")
        self.running = True
        return self

    def stop(self) -> None:
        if self.running:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)
            self.running = False

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, db: str = "postgres", password: str = PASSWORD) -> str:
        return f"postgresql+psycopg://{USER}:{password}@127.0.0.1:{self.port}/{db}"

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        assert psycopg is not None
        with psycopg.connect(host="127.0.0.1", port=self.port, user=USER, password=PASSWORD, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def server_or_skip() -> PostgresServer:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    server = PostgresServer()
    try:
        return server.start()
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
        log = (server.folder / "log").read_text()[-500:] if (server.folder / "log").is_file() else ""
        server.close()
        stderr = getattr(err, "stderr", "") or ""
        pytest.fail(f"the PostgreSQL server did not start: {stderr.strip()[-500:]} {log}")
