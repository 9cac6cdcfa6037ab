"""Shared fixtures: free ports, real peers (sipp) on loopback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SIPP_DIR = Path(__file__).parent / "sipp"
REPO = Path(__file__).resolve().parent.parent

# Python programs the tests start (``softswitch serve``, ``softswitch call``, benchmarks) import
# this checkout's packages, whatever their working directory and wherever ``pip install -e``
# points (a git worktree shares the installed package of the main checkout).
_inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(REPO)]
os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), *_inherited])

# The ``baresip`` callee fixture, for every test module.
pytest_plugins = ("tests.peers.baresip",)


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
        time.sleep(0.15)  # let it bind

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
