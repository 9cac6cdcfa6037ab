"""Process-wide decisions for a softswitch process: BLAS threads and the garbage collector.

These belong to the program that embeds the SIP and media libraries (the server, the CLI,
:class:`softswitch.ua.UserAgent`), never to the libraries themselves.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
from collections.abc import Callable

__all__ = ["GcPolicy", "limit_blas_threads"]

_BLAS_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def limit_blas_threads() -> None:
    """Keep BLAS single-threaded unless the user set it.

    The media engine does small per-tick numpy products (the DTMF detector bank); a
    multi-threaded BLAS turns each into a burst of thread wake-ups across cores, which
    stalls the event loop and the 20 ms media clock. One process is meant to use one core.
    This only takes effect when numpy is imported afterwards."""
    for var in _BLAS_VARIABLES:
        os.environ.setdefault(var, "1")


class GcPolicy:
    """CPython's cyclic collector tuned for a process holding thousands of calls.

    A full collection walks every live object; at 400 call setups/s the calls kept for
    retransmission windows (64*T1) are over a million objects and a pass stalled the event
    loop, and the 20 ms media clock, for 350-950 ms (see benchmarks/RESULTS.md, "Garbage
    collection"). Calls free themselves by reference counting (their
    cycles are broken when they are forgotten), so the collector has little to find among
    them. The policy: every second, :func:`gc.freeze` what is alive, so collections only walk
    what was allocated since; when no call is live (``busy()`` is false), unfreeze and
    collect everything once, so stray cyclic garbage is still reclaimed. Measured at 400
    setups/s for 30 s: worst stall 26 ms instead of 954 ms, CPU per call 1.63 ms instead of
    2.05 ms. Process-wide; opt out with ``UserAgentConfig(tune_gc=False)``.

    A server that always has a call live is never idle, and cyclic garbage frozen with the
    live heap would stay for good (the soak's RSS grew ~37 KiB per call while every ended
    call was such garbage, issue #13). So a full collection also runs, busy or not, once the
    frozen heap has grown to :attr:`FULL_COLLECT_GROWTH` times its size after the last full
    collection: what garbage can pile up is bounded by the live heap, and a steady load
    (the same number of calls up) pays one stall per that much garbage. The heap is measured
    by the allocator's block count (:func:`sys.getallocatedblocks`, ~1 ms at 6 M blocks), not
    :func:`gc.get_freeze_count`, which walks every frozen object (~90 ms at 2 M objects: in a
    profile of ``softswitch serve`` at 25 calls/s it was 1.6 ms of CPU per call).
    """

    THRESHOLDS = (10_000, 10, 10)
    FREEZE_EVERY = 1.0
    FULL_COLLECT_IDLE_EVERY = 60.0
    FULL_COLLECT_GROWTH = 2.0

    def __init__(self, busy: Callable[[], bool]):
        self.busy = busy
        self._handle: asyncio.TimerHandle | None = None
        self._last_full = 0.0
        self._heap_after_full = 0  #: sys.getallocatedblocks() after the last full collection

    def start(self) -> None:
        gc.set_threshold(*self.THRESHOLDS)
        gc.freeze()
        self._heap_after_full = sys.getallocatedblocks()
        loop = asyncio.get_running_loop()
        self._last_full = loop.time()
        self._handle = loop.call_later(self.FREEZE_EVERY, self._tick)

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        idle_due = now - self._last_full >= self.FULL_COLLECT_IDLE_EVERY and not self.busy()
        grown = sys.getallocatedblocks() >= self.FULL_COLLECT_GROWTH * max(self._heap_after_full, 1)
        if idle_due or grown:
            self._last_full = now
            gc.unfreeze()
            gc.collect()
            gc.freeze()
            self._heap_after_full = sys.getallocatedblocks()
        else:
            gc.freeze()
        self._handle = loop.call_later(self.FREEZE_EVERY, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
            gc.unfreeze()
