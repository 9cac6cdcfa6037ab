"""What every call object offers its observers: the event log, synchronous listeners, an
async iterator over the events, and awaitables for "answered" and "terminated".

Shared by the SIP-only call (:class:`sip.aio.ua.OutboundCall`) and the leg with media above it
(:class:`softswitch.ua.OutboundCall`); each keeps its own bookkeeping and then publishes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Generic, TypeVar

from sip.events import Answered, Terminated

log = logging.getLogger("sip.ua")

__all__ = ["ObservableCall"]

#: The events a call publishes (the SIP events; the leg above adds its own, e.g. digits).
E = TypeVar("E")


class ObservableCall(Generic[E]):
    """The event side of a call. Exactly one :class:`Terminated` is published, last."""

    def __init__(self) -> None:
        self.terminated: Terminated | None = None
        self._events: list[E] = []
        self._queue_waiters: list[asyncio.Event] = []
        self._listeners: list[Callable[[E], None]] = []
        loop = asyncio.get_running_loop()
        self._answered: asyncio.Future[bool] = loop.create_future()
        self._ended: asyncio.Future[Terminated] = loop.create_future()

    @property
    def history(self) -> list[E]:
        """Every event so far, oldest first."""
        return list(self._events)

    def add_listener(self, fn: Callable[[E], None]) -> None:
        """``fn(event)`` is called synchronously for every event from now on."""
        self._listeners.append(fn)

    async def events(self) -> AsyncIterator[E]:
        """Every event of the call from the start, ending after :class:`Terminated`."""
        index = 0
        while True:
            while index < len(self._events):
                event = self._events[index]
                index += 1
                yield event
                if isinstance(event, Terminated):
                    return
            waiter = asyncio.Event()
            self._queue_waiters.append(waiter)
            await waiter.wait()

    async def wait_answered(self) -> bool:
        """True once answered; False if the call ended without answer."""
        return await asyncio.shield(self._answered)

    async def wait_terminated(self) -> Terminated:
        return await asyncio.shield(self._ended)

    def _publish(self, event: E) -> None:
        """Log ``event``, tell the listeners and the iterators, settle the awaitables. The
        caller has checked that the call is not over yet."""
        if isinstance(event, Terminated):
            self.terminated = event
        elif isinstance(event, Answered) and not self._answered.done():
            self._answered.set_result(True)
        self._events.append(event)
        for fn in list(self._listeners):
            try:
                fn(event)
            except Exception:
                log.exception("call listener failed")
        for waiter in self._queue_waiters:
            waiter.set()
        self._queue_waiters.clear()
        if isinstance(event, Terminated):
            if not self._answered.done():
                self._answered.set_result(False)
            if not self._ended.done():
                self._ended.set_result(event)

    def _release_observers(self) -> None:
        """Drop listeners and waiters (they often point back at the call): reference
        counting then frees the call without the cyclic collector."""
        self._listeners.clear()
        self._queue_waiters.clear()
