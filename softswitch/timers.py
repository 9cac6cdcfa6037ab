"""Per-call timers with an injected clock: ``time_limit``, ``hangup_on_ring`` and hangups
scheduled over an API.

Time is an input (the aioquic habit): the :class:`Scheduler` is the event loop in the
server and a :class:`FakeScheduler` in unit tests, which advance time by hand and never
sleep. ``ring_timeout`` is enforced by the leg itself (it is handed to ``dial``), so a
ringing call is CANCELled by the SIP layer with NO_ANSWER.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import uuid
from collections.abc import Callable
from typing import Protocol

from sip import causes

from .model import EndReason, Timers

__all__ = ["Cancellable", "CallTimers", "FakeScheduler", "LoopScheduler", "Scheduler"]


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    def call_later(self, delay: float, callback: Callable[[], object]) -> Cancellable: ...


class LoopScheduler:
    """The running event loop's ``call_later``."""

    def call_later(self, delay: float, callback: Callable[[], object]) -> Cancellable:
        return asyncio.get_running_loop().call_later(delay, callback)


class _FakeHandle:
    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeScheduler:
    """A clock for tests: :meth:`advance` runs what falls due, in deadline order."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now
        self._heap: list[tuple[float, int, _FakeHandle, Callable[[], object]]] = []
        self._seq = itertools.count()

    def call_later(self, delay: float, callback: Callable[[], object]) -> Cancellable:
        handle = _FakeHandle()
        heapq.heappush(self._heap, (self.now + max(0.0, delay), next(self._seq), handle, callback))
        return handle

    def advance(self, seconds: float) -> None:
        until = self.now + seconds
        while self._heap and self._heap[0][0] <= until:
            when, _, handle, callback = heapq.heappop(self._heap)
            self.now = when
            if not handle.cancelled:
                callback()
        self.now = until

    @property
    def pending(self) -> int:
        return sum(1 for _, _, h, _ in self._heap if not h.cancelled)


#: ``(cause, reason)``: what a timer does when it fires (the manager hangs the call up).
Expiry = Callable[[str, EndReason], object]


class CallTimers:
    """The timers of one call, armed from its :class:`~softswitch.model.Timers` as the call
    rings and is answered, all cancelled when it ends."""

    def __init__(self, timers: Timers, scheduler: Scheduler, expire: Expiry) -> None:
        self.timers = timers
        self._scheduler = scheduler
        self._expire = expire
        self._handles: list[Cancellable] = []
        self._scheduled: dict[str, Cancellable] = {}
        self._ring_armed = False

    def _arm(self, seconds: float, cause: str, reason: EndReason) -> None:
        self._handles.append(self._scheduler.call_later(seconds, lambda: self._expire(cause, reason)))

    def on_ring(self) -> None:
        """First 18x. hangup_on_ring is counted from the time the call starts ringing."""
        if self.timers.hangup_on_ring is not None and not self._ring_armed:
            self._ring_armed = True
            self._arm(self.timers.hangup_on_ring, self.timers.hangup_on_ring_cause, EndReason.HANGUP_ON_RING)

    def on_answer(self) -> None:
        """Answer: time_limit starts; answered without a 18x, the call "starts ringing" and is
        answered at once, so hangup_on_ring starts too (it is not cancelled by the answer)."""
        if self.timers.time_limit is not None:
            self._arm(self.timers.time_limit, causes.ALLOTTED_TIMEOUT, EndReason.TIME_LIMIT)
        self.on_ring()

    def schedule(self, seconds: float, cause: str = causes.ALLOTTED_TIMEOUT) -> str:
        """A hangup ``seconds`` from now, asked for over an API; returns its id."""
        sched_id = str(uuid.uuid4())

        def fire() -> None:
            self._scheduled.pop(sched_id, None)
            self._expire(cause, EndReason.SCHEDULED_HANGUP)

        self._scheduled[sched_id] = self._scheduler.call_later(seconds, fire)
        return sched_id

    def unschedule(self, sched_id: str) -> bool:
        """Cancel a scheduled hangup; False if it is unknown (or already fired)."""
        handle = self._scheduled.pop(sched_id, None)
        if handle is None:
            return False
        handle.cancel()
        return True

    @property
    def scheduled(self) -> tuple[str, ...]:
        return tuple(self._scheduled)

    def cancel(self) -> None:
        for handle in [*self._handles, *self._scheduled.values()]:
            handle.cancel()
        self._handles.clear()
        self._scheduled.clear()
