"""``softswitch serve --workers N``: N worker processes on one machine, and their supervisor.

Each worker is an ordinary ``serve`` process (``--worker-index i``) with its own slice of the
machine (:func:`worker_config`): SIP on ``sip_port + i`` (and TLS on ``sip_tls_port + i``), the
``i``-th of N equal slices of the RTP range, advertised in its own Via/Contact/SDP as any
single server's are; all of them listen on the one HTTP port with ``SO_REUSEPORT``, so the
kernel hands each API connection to any worker. SIP needs a port per worker: ``SO_REUSEPORT``
spreads UDP by the sender's address, so one trunk would reach one worker only, and a
dialog's requests must reach the worker that holds it.

The supervisor (:func:`supervise`) starts the workers and:

* SIGTERM/SIGINT: passes SIGTERM on (each worker stops as ``serve`` does: drain or hang up
  per ``shutdown_mode``) and exits when all have;
* SIGUSR1: passes it on (each worker drains: OPTIONS 503, no new calls, live calls finish,
  then it exits 0) and exits when all have;
* a worker that dies by itself is logged with its status and started again (after 1 s; at
  most :data:`MAX_RESTARTS` times per minute, then left down, logged); one that exits 0 after
  its own SIGUSR1 drain is not restarted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("softswitch.workers")

__all__ = ["MAX_RESTARTS", "default_workers", "supervise", "worker_config", "worker_id"]

#: Restarts of one worker allowed within a minute before the supervisor leaves it down.
MAX_RESTARTS = 5
#: Exit status of a worker that was asked to drain (SIGUSR1) and did.
EXIT_DRAINED = 0


def shared_store(config: Any) -> bool:
    """Is the store one several processes share (PostgreSQL)? A ``sqlite:///`` URL is one
    process's file, like the default."""
    url = str(getattr(config, "store_url", None) or "")
    return url.startswith(("postgresql:", "postgres:"))


def default_workers(config: Any) -> int:
    """``workers = 0``: one per core when the workers share state (a ``redis_url`` and a
    shared store), else 1 (the embedded SQLite file belongs to one process)."""
    if config.workers > 0:
        return int(config.workers)
    shared = shared_store(config) and config.redis_url
    return max(1, os.cpu_count() or 1) if shared else 1


def worker_id(config: Any, index: int) -> str:
    """The worker's name in the cluster: ``<node>-<index>`` (``node_id``, else the host name)."""
    node = getattr(config, "node_id", None) or socket.gethostname()
    return f"{node}-{index}"


def worker_config(config: Any, index: int, count: int) -> Any:
    """The configuration of worker ``index`` of ``count``: its SIP ports, its RTP slice, and
    (without a shared store) its own SQLite file ``<db_path>.w<index>``."""
    if not 0 <= index < count:
        raise ValueError(f"worker index {index} out of 0..{count - 1}")
    if count == 1:
        return config
    span = (config.rtp_port_max - config.rtp_port_min + 1) // count
    span -= span % 2  # RTP even, RTCP odd: whole pairs per slice (RFC 3550 §11)
    if span < 2:
        raise ValueError(
            f"the RTP range {config.rtp_port_min}-{config.rtp_port_max} is too small for {count} workers"
        )
    low = config.rtp_port_min + index * span
    low += low % 2
    changes: dict[str, Any] = {
        "rtp_port_min": low,
        "rtp_port_max": low + span - 1,
        "sip_port": config.sip_port + index if config.sip_port else 0,
        "sip_tls_port": config.sip_tls_port + index if config.sip_tls_port else 0,
    }
    if not shared_store(config):
        changes["db_path"] = f"{config.db_path}.w{index}"
        if getattr(config, "store_url", None):  # sqlite:///path: each worker its own file
            changes["store_url"] = f"{config.store_url}.w{index}"
    return dataclasses.replace(config, **changes)


def _free_http_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class _Worker:
    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: asyncio.subprocess.Process | None = None
        self.starts: deque[float] = deque(maxlen=MAX_RESTARTS + 1)
        self.drained = False  #: asked to drain by itself (its own SIGUSR1), not by us


async def _supervise(argv: Sequence[str], count: int, http: str) -> int:
    loop = asyncio.get_running_loop()
    stopping: list[signal.Signals] = []
    changed = asyncio.Event()
    workers = [_Worker(i) for i in range(count)]

    def on_signal(sig: signal.Signals) -> None:
        stopping.append(sig)
        for w in workers:
            if w.proc is not None and w.proc.returncode is None:
                w.proc.send_signal(signal.SIGUSR1 if sig == signal.SIGUSR1 else signal.SIGTERM)
        changed.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        loop.add_signal_handler(sig, on_signal, sig)

    async def run(w: _Worker) -> None:
        while True:
            w.starts.append(time.monotonic())
            w.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "softswitch.cli",
                *argv,
                "--http",
                http,
                "--workers",
                str(count),
                "--worker-index",
                str(w.index),
            )
            log.warning("worker %d started (pid %d)", w.index, w.proc.pid)
            status = await w.proc.wait()
            changed.set()
            if stopping:
                log.warning("worker %d exited with status %d", w.index, status)
                return
            if status == EXIT_DRAINED:
                log.warning("worker %d drained and exited; not restarted", w.index)
                return
            log.error("worker %d (pid %d) died with status %d", w.index, w.proc.pid, status)
            if len(w.starts) > MAX_RESTARTS and w.starts[-1] - w.starts[0] < 60.0:
                log.error(
                    "worker %d died %d times within a minute; left down", w.index, MAX_RESTARTS
                )
                return
            await asyncio.sleep(1.0)
            if stopping:
                return

    tasks = [loop.create_task(run(w)) for w in workers]
    await asyncio.gather(*tasks)
    return 0


def supervise(argv: Sequence[str], config: Any, count: int) -> int:
    """Run ``count`` workers of ``softswitch <argv>`` (``argv`` holds ``serve`` and its
    options) until they have all exited."""
    port = config.http_port or _free_http_port(config.http_host)
    host = config.http_host
    http = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    print(
        f"softswitch: {count} workers, HTTP API on http://{http} (SO_REUSEPORT), SIP on "
        f"{config.sip_host}:{config.sip_port}..{config.sip_port + count - 1}",
        file=sys.stderr,
        flush=True,
    )
    if getattr(config, "generated", False) and config.accounts:
        # Generated (and saved next to the database) here, once: every worker loads that file.
        acc = config.accounts[0]
        saved = (
            f" (saved in {config.account_file})" if getattr(config, "account_file", None) else ""
        )
        print(
            f"softswitch: generated account auth_id={acc.auth_id} auth_token={acc.auth_token}{saved}",
            file=sys.stderr,
            flush=True,
        )
    if not config.redis_url:
        log.warning(
            "%d workers without redis_url: CPS and concurrency limits count per worker, and an "
            "API request reaches only the live calls of the worker that takes it",
            count,
        )
    return asyncio.run(_supervise(list(argv), count, http))
