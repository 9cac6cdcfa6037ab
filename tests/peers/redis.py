"""A real Redis (Debian ``redis-server``) for tests: a throw-away server per test.

Started as ``redis-server --port 0 --unixsocket <tmp>/r.sock --save ''`` (no TCP port, no
persistence) in a private directory; :attr:`RedisServer.url` is the ``unix://`` URL the
softswitch's ``redis_url`` takes. Bounded: start-up waits at most 10 s for the socket,
:meth:`stop` sends SIGTERM and kills after 5 s.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["RedisServer", "needs_redis", "redis_server"]

REDIS_SERVER = shutil.which("redis-server") or (
    "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
)

needs_redis = pytest.mark.skipif(
    REDIS_SERVER is None, reason="redis-server (Debian redis-server) not installed"
)


class RedisServer:
    """One redis-server process listening on a unix socket only."""

    def __init__(self, directory: Path) -> None:
        assert REDIS_SERVER is not None
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.socket = directory / "r.sock"
        self.log = directory / "redis.log"
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                "0",
                "--unixsocket",
                str(self.socket),
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(directory),
                "--logfile",
                str(self.log),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10.0
        while not self.socket.exists():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"redis-server exited {self.proc.returncode}: {self._log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"redis-server did not create {self.socket} within 10 s")
            time.sleep(0.01)

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh redis-server for this test, stopped after it."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server (Debian redis-server) not installed")
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()
