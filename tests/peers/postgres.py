"""A throw-away PostgreSQL cluster for the tests: Debian's ``initdb``/``pg_ctl`` under a temp dir.

The cluster listens on a unix socket in its directory and on a free TCP port of 127.0.0.1,
trusts local connections, and is removed when the session ends. ``initdb`` refuses to run as
root, so as root the server runs as the ``postgres`` system user (``runuser``); as a normal
user it runs as that user. Each test gets its own database (``postgres_url``).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["PostgresCluster", "pg_bin", "postgres_cluster", "postgres_url"]

_VERSIONS = ("17", "16", "15")


def pg_bin() -> Path | None:
    """The directory of Debian's PostgreSQL server programs, or None when not installed."""
    for version in _VERSIONS:
        path = Path(f"/usr/lib/postgresql/{version}/bin")
        if (path / "initdb").exists() and (path / "pg_ctl").exists():
            return path
    return None


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresCluster:
    """One ``initdb`` cluster: start, create databases, stop and remove."""

    def __init__(self, *, fsync: bool = False, port: int | None = None) -> None:
        bin_dir = pg_bin()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL server programs not found (apt-get install postgresql)")
        self.bin = bin_dir
        self.port = port or _free_tcp_port()
        self.fsync = fsync
        self.root = Path(tempfile.mkdtemp(prefix="softswitch-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root
        self.log = self.root / "server.log"
        # initdb refuses root: run the server as the postgres system user then.
        self._as: list[str] = []
        self.user = pwd.getpwuid(os.getuid()).pw_name
        if os.getuid() == 0:
            self.user = "postgres"
            self._as = ["runuser", "-u", "postgres", "--"]
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)

    def _run(self, *args: str, timeout: float = 60) -> None:
        subprocess.run([*self._as, *args], check=True, timeout=timeout, capture_output=True)

    def start(self) -> None:
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", self.user,
            "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync",
        )  # fmt: skip
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.socket_dir} -c max_connections=200 "
            f"-c fsync={'on' if self.fsync else 'off'} -c shared_buffers=32MB"
        )
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
            "-o", options, "-w", "-t", "60", "start",
        )  # fmt: skip

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its URL."""
        import psycopg

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" STRATEGY FILE_COPY')
        return self.url(name)

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self._run(
                str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"
            )
        deadline = time.monotonic() + 10
        while (self.data / "postmaster.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        try:
            self.start()
        except BaseException:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            self.stop()
            if log:
                raise RuntimeError(f"PostgreSQL did not start:\n{log[-2000:]}") from None
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One cluster per test session (per xdist worker); skipped when PostgreSQL is absent."""
    if pg_bin() is None:
        pytest.skip("PostgreSQL is not installed (scripts/install-peers)")
    pytest.importorskip("psycopg")
    with PostgresCluster() as cluster:
        yield cluster


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """The URL of a new database of the session's cluster, for this test alone."""
    return postgres_cluster.create_database()
