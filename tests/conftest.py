"""Shared fixtures: free ports, real peers (sipp) on loopback, the webhook receiver."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from tests.peers.webhooks import WebhookReceiver

SIPP_DIR = Path(__file__).parent / "sipp"
REPO = Path(__file__).resolve().parent.parent

# Python programs the tests start (``softswitch serve``, ``softswitch call``, benchmarks) import
# this checkout's packages, whatever their working directory and wherever ``pip install -e``
# points (a git worktree shares the installed package of the main checkout).
_inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(REPO)]
os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), *_inherited])

# The ``baresip`` and ``linphone`` callees, the ``kamailio`` proxy, and the ``redis_server`` and
# ``postgres_cluster`` fixtures, for every test module.
pytest_plugins = (
    "tests.peers.baresip",
    "tests.peers.kamailio",
    "tests.peers.linphone",
    "tests.peers.redis",
    "tests.peers.postgres",
)


def free_port(kind: int = socket.SOCK_DGRAM, *, pair: bool = False) -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (and port+1 too, when ``pair``)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if pair and port % 2:
            continue
        ok = True
        for p in (port, port + 1) if pair else (port,):
            for k in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                with socket.socket(socket.AF_INET, k) as t:
                    try:
                        t.bind(("127.0.0.1", p))
                    except OSError:
                        ok = False
        if ok:
            return port
    raise RuntimeError("no free port")


def worker_index() -> int:
    """This pytest-xdist worker's number (0 without xdist): for resources tests pin."""
    return int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)


def media_ports() -> dict[str, int]:
    """``MediaConfig`` port bounds for tests that build their own media engine: a block per
    xdist worker, away from the engine's default pool (16384-32767), so that two workers (or
    another program on this machine) never hand the same port to two tests."""
    low = 36000 + 2000 * (worker_index() % 2)
    return {"port_min": low, "port_max": low + 1999}


def _bound_ports(kind: str) -> set[int]:
    """Local ports in /proc/net/<kind>[6]: bound UDP sockets, or listening TCP ones."""
    ports: set[int] = set()
    for table in (kind, kind + "6"):
        try:
            lines = Path("/proc/net", table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if kind == "tcp" and fields[3] != "0A":  # 0A = LISTEN
                continue
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def wait_bound(port: int, *, tcp: bool = False, proc: subprocess.Popen | None = None,
               timeout: float = 10.0) -> None:
    """Block until a peer program has bound ``port`` (read from /proc/net, so the check
    itself never takes the port), it exited, or ``timeout`` passed."""
    deadline = time.monotonic() + timeout
    while port not in _bound_ports("tcp" if tcp else "udp"):
        if proc is not None and proc.poll() is not None:
            return  # it died: its exit status tells why (Sipp.assert_ok)
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing bound {'TCP' if tcp else 'UDP'} port {port} within {timeout}s")
        time.sleep(0.005)


class Sipp:
    """One sipp process running a scenario from tests/sipp/ (or a built-in one)."""

    def __init__(self, scenario: str, *, transport: str = "u1", calls: int = 1, extra: list[str] | None = None,
                 rtp_echo: bool = True, timeout: int = 30, tmp: Path | None = None, port: int | None = None):
        self.port = port or free_port()
        self.media_port = free_port(pair=True)
        self.tmp = tmp
        args = ["sipp"]
        if scenario.endswith(".xml"):
            args += ["-sf", str(SIPP_DIR / scenario)]
        else:
            args += ["-sn", scenario]
        args += ["-i", "127.0.0.1", "-p", str(self.port), "-t", transport, "-m", str(calls),
                 "-mi", "127.0.0.1", "-mp", str(self.media_port), "-nostdin",
                 "-timeout", f"{timeout}s", "-timeout_error", "-trace_err", "-trace_msg"]
        if rtp_echo:
            args.append("-rtp_echo")
        args += extra or []
        self.args = args
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp)
        wait_bound(self.port, tcp=transport.startswith("t"), proc=self.proc)

    @property
    def uri(self) -> str:
        return f"sip:service@127.0.0.1:{self.port}"

    def wait(self, timeout: float = 40) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return -1

    def logs(self) -> str:
        if self.tmp is None:
            return ""
        out = []
        for f in sorted(self.tmp.glob("*.log")):
            out.append(f"--- {f.name}\n{f.read_text(errors='replace')[-6000:]}")
        return "\n".join(out)

    def assert_ok(self, timeout: float = 40) -> None:
        code = self.wait(timeout)
        stderr = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
        assert code == 0, f"sipp exited {code}\n{' '.join(self.args)}\n{stderr[-3000:]}\n{self.logs()}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


needs_sipp = pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp (Debian sip-tester) not installed")


@pytest.fixture
def sipp(tmp_path: Path) -> Iterator:
    started: list[Sipp] = []

    def start(scenario: str, **kw: object) -> Sipp:
        s = Sipp(scenario, tmp=tmp_path, **kw)  # type: ignore[arg-type]
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


@pytest.fixture
async def webhook_receiver() -> AsyncIterator[Callable[..., Awaitable[WebhookReceiver]]]:
    """Start real HTTP receivers (``tests/peers/webhooks.py``); all stop after the test.

    ``await webhook_receiver(auth_token=..., routes=..., respond=...)``, or pass a
    :class:`WebhookReceiver` built beforehand.
    """
    started: list[WebhookReceiver] = []

    async def start(receiver: WebhookReceiver | None = None, **kw: object) -> WebhookReceiver:
        r = receiver if receiver is not None else WebhookReceiver(**kw)  # type: ignore[arg-type]
        started.append(r)
        return await r.start()

    yield start
    for r in reversed(started):
        await r.stop()


async def wait_until(
    predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> None:
    """Poll ``predicate`` every ``interval`` s until it is true; fail after ``timeout`` s.

    For conditions nothing signals (a peer's counter, a file appearing); where the code under
    test sets an event or a future, wait on that instead.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() >= deadline:
            raise AssertionError(f"not within {timeout}s: {what or predicate}")
        await asyncio.sleep(interval)
