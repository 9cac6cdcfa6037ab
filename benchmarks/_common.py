"""Shared plumbing: ports, process CPU and memory, the sipp UAS, running a worker process."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SIPP_DIR = HERE / "sipp"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def raise_nofile() -> int:
    """Thousands of calls need thousands of RTP sockets: lift the soft fd limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port(*, pair: bool = False) -> int:
    """A UDP port free on 127.0.0.1 (and port + 1 too when ``pair``, port even)."""
    for _ in range(500):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if pair and (port % 2 or port >= 65534):
            continue
        ok = True
        for p in (port, port + 1) if pair else (port,):
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                with socket.socket(socket.AF_INET, kind) as t:
                    try:
                        t.bind(("127.0.0.1", p))
                    except OSError:
                        ok = False
        if ok:
            return port
    raise RuntimeError("no free port")


def free_range(size: int, start: int = 10000, stop: int = 32768) -> tuple[int, int]:
    """A block of ``size`` consecutive UDP ports on 127.0.0.1 that are all bindable now
    (the RTP range a worker is given: 2 ports per call). The default search stays below
    Linux's ephemeral range (32768+), where sipp and the kernel pick their own ports."""
    base = start
    while base + size <= stop:
        socks: list[socket.socket] = []
        try:
            for p in range(base, base + size):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    base = p + 1  # restart just past the port in use
                    break
            else:
                return base, base + size - 1
        finally:
            for s in socks:
                s.close()
    if stop < 60000:
        return free_range(size, 40000, 61000)
    raise RuntimeError(f"no free block of {size} UDP ports")


def self_cpu() -> float:
    """CPU seconds (user + system) of this process."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` from /proc/PID/stat (all threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size from /proc/PID/status (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100.0 * (len(ordered) - 1))))
    return ordered[k]


def emit(kind: str, **data: Any) -> None:
    """One JSON line on stdout: how a worker reports progress and results to the orchestrator."""
    sys.stdout.write(json.dumps({"kind": kind, **data}) + "\n")
    sys.stdout.flush()


def have_sipp() -> bool:
    return shutil.which("sipp") is not None


def have_pyvoip() -> bool:
    try:
        import importlib.util

        return importlib.util.find_spec("pyVoIP") is not None
    except (ImportError, ValueError):
        return False


# ------------------------------------------------------------------------------- sipp


def _read_stat(path: Path) -> dict[str, str]:
    """The last row of a sipp ``-trace_stat`` CSV (';' separated), as a dict."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f, delimiter=";"))
    except OSError:
        return {}
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0], rows[-1], strict=False))


@dataclass
class SippCounters:
    created: int = 0
    successful: int = 0
    failed: int = 0
    current: int = 0
    retransmissions: int = 0
    raw: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_stat(cls, row: dict[str, str]) -> SippCounters:
        def num(key: str) -> int:
            try:
                return int(float(row.get(key, "0") or 0))
            except ValueError:
                return 0

        return cls(
            created=num("TotalCallCreated"),
            successful=num("SuccessfulCall(C)"),
            failed=num("FailedCall(C)"),
            current=num("CurrentCall"),
            retransmissions=num("Retransmissions(C)"),
            raw=row,
        )


class SippUas:
    """The sipp UAS every caller dials: ``benchmarks/sipp/uas.xml`` with RTP echo on one
    port. Its cumulative counters (from ``-trace_stat`` every second) tell whether each
    call completed INVITE/ACK/BYE on the far side too."""

    def __init__(self, workdir: Path, *, port: int | None = None, rtp_echo: bool = True) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.media_port = free_port(pair=True)
        self.stat_file = workdir / f"uas_{self.port}_stat.csv"
        args = [
            "sipp", "-sf", str(SIPP_DIR / "uas.xml"),
            "-i", "127.0.0.1", "-p", str(self.port), "-t", "u1",
            "-mi", "127.0.0.1", "-mp", str(self.media_port),
            "-nostdin", "-trace_stat", "-stf", str(self.stat_file), "-fd", "1",
            "-trace_err", "-error_file", str(workdir / f"uas_{self.port}_errors.log"),
            "-max_socket", "60000", "-buff_size", "4194304",
        ]
        if rtp_echo:
            args.append("-rtp_echo")
        self.args = args
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     cwd=workdir)
        time.sleep(0.3)
        if self.proc.poll() is not None:
            err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
            raise RuntimeError(f"sipp UAS exited at start: {err[-2000:]}")

    @property
    def uri(self) -> str:
        return f"sip:bench@127.0.0.1:{self.port}"

    def counters(self) -> SippCounters:
        return SippCounters.from_stat(_read_stat(self.stat_file))

    def cpu(self) -> float:
        try:
            return proc_cpu(self.proc.pid)
        except OSError:
            return 0.0

    def settle(self, base: SippCounters, expected: int, timeout: float) -> SippCounters:
        """Wait until ``expected`` more calls ended (successfully or not) than at ``base``, the
        UAS has no call open, or ``timeout``; return the counters then."""
        deadline = time.monotonic() + timeout
        now = self.counters()
        while time.monotonic() < deadline:
            now = self.counters()
            ended = (now.successful - base.successful) + (now.failed - base.failed)
            if ended >= expected and now.current == 0:
                break
            time.sleep(0.25)
        return now

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ------------------------------------------------------------------------------- workers


class Reaped:
    """Reap a child with ``wait4`` (not ``Popen.poll``, which would lose its rusage)."""

    def __init__(self, proc: subprocess.Popen[Any]) -> None:
        self.proc = proc
        self.returncode: int | None = None
        self.cpu = 0.0
        self.max_rss = 0

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                self._done(status, usage)
        return self.returncode

    def wait(self) -> int:
        if self.returncode is None:
            _, status, usage = os.wait4(self.proc.pid, 0)
            self._done(status, usage)
        assert self.returncode is not None
        return self.returncode

    def _done(self, status: int, usage: Any) -> None:
        self.returncode = os.waitstatus_to_exitcode(status)
        self.proc.returncode = self.returncode
        self.cpu = usage.ru_utime + usage.ru_stime
        self.max_rss = usage.ru_maxrss * 1024


#: Extra environment for worker processes (``--tuned`` sets OPENBLAS_NUM_THREADS=1).
EXTRA_ENV: dict[str, str] = {}


def worker_env() -> dict[str, str]:
    """Environment for worker processes: the repository on the import path."""
    env = dict(os.environ)
    env.update(EXTRA_ENV)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


@dataclass
class WorkerRun:
    """What one worker process reported, plus what the OS says about it."""

    result: dict[str, Any]
    returncode: int
    cpu_total: float  # user + system CPU of the whole process (wait4), start-up included
    max_rss: int  # bytes
    wall: float
    stderr: str


def run_worker(
    args: list[str],
    *,
    timeout: float,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> WorkerRun:
    """Run a worker (``python -m benchmarks._ua_worker ...``, sipp, ...), feed its JSON
    progress lines to ``on_progress`` and return its last ``result`` line. Killed after
    ``timeout`` seconds. CPU comes from ``wait4``'s rusage, so it covers every thread."""
    t0 = time.monotonic()
    errfile = open(os.devnull if cwd is None else cwd / "worker_stderr.log", "w+b")  # noqa: SIM115
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=errfile, cwd=cwd or REPO,
                            env=env or worker_env(), text=True, bufsize=1)
    reaper = Reaped(proc)
    result: dict[str, Any] = {}
    deadline = t0 + timeout
    assert proc.stdout is not None
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    killed = False
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                proc.kill()
                killed = True
                break
            if not sel.select(min(remaining, 0.5)):
                if reaper.poll() is not None:
                    break
                continue
            line = proc.stdout.readline()
            if not line:
                break
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("kind") == "result":
                result = msg
            elif on_progress is not None:
                on_progress(msg)
    finally:
        sel.close()
    reaper.wait()
    proc.stdout.close()
    stderr = ""
    if cwd is not None:
        errfile.seek(0)
        stderr = errfile.read().decode(errors="replace")[-4000:]
    errfile.close()
    if killed:
        result.setdefault("error", f"killed after {timeout:.0f} s")
    return WorkerRun(result, reaper.wait(), reaper.cpu, reaper.max_rss, time.monotonic() - t0,
                     stderr)


@contextlib.contextmanager
def uas(workdir: Path, **kw: Any) -> Iterator[SippUas]:
    server = SippUas(workdir, **kw)
    try:
        yield server
    finally:
        server.stop()


class Budget:
    """The overall time bound of a benchmark run."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def expired(self) -> bool:
        return self.remaining() <= 0


class Progress:
    """A tqdm bar (or nothing with ``--no-progress``), closed on exit."""

    def __init__(self, enabled: bool, total: float, desc: str, unit: str = "call") -> None:
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False, mininterval=0.25,
                            file=sys.stderr, dynamic_ncols=True)

    def update_to(self, n: float, **postfix: Any) -> None:
        if self.bar is None:
            return
        self.bar.n = n
        if postfix:
            self.bar.set_postfix(postfix, refresh=False)
        self.bar.refresh()

    def set_description(self, desc: str) -> None:
        if self.bar is not None:
            self.bar.set_description(desc, refresh=False)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
