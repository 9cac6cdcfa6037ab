"""Admission: per-account calls-per-second gates, the queue behind them, and the dispatch
of queued calls within the account's and the server's concurrency limits.

Knows nothing of what a call does once started: :class:`Admission` hands each admitted
call to its ``start`` callback (the manager dials it) and is told by :meth:`release` when
it is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .model import QueueFull

if TYPE_CHECKING:
    from .call import Call

__all__ = ["AccountLimits", "Admission", "AdmitResult", "Gate"]


@dataclass(slots=True)
class AccountLimits:
    """One account as the manager sees it: credentials for signing, and its limits."""

    auth_id: str
    auth_token: str
    cps: float
    max_concurrent: int


@dataclass(frozen=True, slots=True)
class AdmitResult:
    """What the API answers: request uuids in order, and whether any call waits in the queue."""

    request_uuids: tuple[str, ...]
    call_uuids: tuple[str, ...]
    queued: bool


class Gate:
    """Per-account admission: a token bucket (calls per second) and a concurrency count.

    The bucket holds at most ``max(1, cps)`` tokens (one second's burst) and refills
    continuously; time is passed in, so the arithmetic is testable without sleeping.
    """

    def __init__(self, account: AccountLimits, now: float, *, shared: bool = False) -> None:
        self.account = account
        #: cps <= 0 means unlimited (config: "0 = unlimited"); with a shared limiter the
        #: bucket that counts is the shared one (:class:`Admission` ``shared``).
        self.unlimited = float(account.cps) <= 0 or shared
        self.rate = max(float(account.cps), 0.001)
        self.capacity = max(1.0, float(account.cps))
        self.tokens = self.capacity
        self.last = now
        self.pending: deque[Call] = deque()
        self.active = 0
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def refill(self, now: float) -> None:
        if now > self.last:
            self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
        self.last = now

    def available(self, now: float) -> float:
        if self.unlimited:
            return math.inf
        self.refill(now)
        return self.tokens

    def take(self, now: float) -> float:
        """Take one token; return 0.0, or the seconds to wait until one is there."""
        if self.unlimited:
            return 0.0
        self.refill(now)
        if self.tokens >= 1.0 - 1e-9:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


#: ``(gate, call)``: start an admitted call (the gate's ``active`` is already counted).
Starter = Callable[[Gate, "Call"], None]

#: ``(account, calls) -> seconds``: take a token and a concurrency slot per call from limits
#: shared with other workers (``softswitch.cluster``); 0.0 taken, else how long to wait
#: (``inf``: no slot free until a call ends somewhere).
SharedTake = Callable[[AccountLimits, Sequence["Call"]], Awaitable[float]]

#: How often a queue waiting for a shared concurrency slot looks again (a call ending on
#: another worker wakes nothing here).
SHARED_SLOT_POLL_S = 0.2


class Admission:
    """The gates of all accounts, the queue totals, and one dispatch task per account."""

    def __init__(self, start: Starter, *, max_concurrent: int, max_queue: int,
                 clock: Callable[[], float], shared: SharedTake | None = None) -> None:
        self._start = start
        #: Limits shared with other workers; the local gates then count concurrency only.
        self.shared = shared
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.clock = clock
        self.gates: dict[str, Gate] = {}
        self.active_total = 0
        self.queued_total = 0
        self.closed = False

    def gate(self, account: AccountLimits) -> Gate:
        gate = self.gates.get(account.auth_id)
        if gate is None:
            gate = Gate(account, self.clock(), shared=self.shared is not None)
            self.gates[account.auth_id] = gate
            gate.task = asyncio.get_running_loop().create_task(
                self._dispatch_loop(gate), name=f"dispatch-{account.auth_id}"
            )
        return gate

    def check(self, account: AccountLimits, n: int) -> bool:
        """Whether ``n`` calls can start now; raise :class:`QueueFull` if they could not
        even wait."""
        gate = self.gate(account)
        now = self.clock()
        free = min(account.max_concurrent - gate.active, self.max_concurrent - self.active_total)
        immediate = not gate.pending and gate.available(now) >= n - 1e-9 and free >= n
        if not immediate and self.queued_total + n > self.max_queue:
            raise QueueFull("too many queued calls; retry later")
        return immediate

    async def check_shared(self, account: AccountLimits, calls: Sequence[Call], immediate: bool) -> bool:
        """With shared limits: whether the calls :meth:`check` let start now also get their
        shared tokens and slots (taken when they do); False queues them, within the queue's
        bound (:class:`QueueFull` beyond it)."""
        if not immediate or self.shared is None:
            return immediate
        if await self.shared(account, calls) == 0.0:
            return True
        if self.queued_total + len(calls) > self.max_queue:
            raise QueueFull("too many queued calls; retry later")
        return False

    def admit(self, account: AccountLimits, calls: Sequence[Call], immediate: bool) -> None:
        """Start ``calls`` now (``immediate``, as :meth:`check` said) or queue them."""
        gate = self.gate(account)
        if immediate:
            now = self.clock()
            for call in calls:
                gate.take(now)
                self._begin(gate, call)
        else:
            gate.pending.extend(calls)
            self.queued_total += len(calls)
            gate.wake.set()

    def _begin(self, gate: Gate, call: Call) -> None:
        gate.active += 1
        self.active_total += 1
        self._start(gate, call)

    def release(self, gate: Gate) -> None:
        """A started call is over: its slot frees, every dispatcher looks again."""
        gate.active -= 1
        self.active_total -= 1
        for g in self.gates.values():
            g.wake.set()

    def withdraw(self, call: Call) -> bool:
        """Take a call still waiting off its queue; False if it is not queued."""
        gate = self.gates.get(call.account.auth_id)
        if gate is None or call not in gate.pending:
            return False
        gate.pending.remove(call)
        self.queued_total -= 1
        return True

    def drain(self) -> list[Call]:
        """Every call still waiting, taken off the queues (shutdown)."""
        out: list[Call] = []
        for gate in self.gates.values():
            while gate.pending:
                out.append(gate.pending.popleft())
                self.queued_total -= 1
        return out

    async def _dispatch_loop(self, gate: Gate) -> None:
        """Take queued calls off one account's queue at the CPS rate, within its concurrency."""
        while not self.closed:
            if not gate.pending:
                gate.wake.clear()
                await gate.wake.wait()
                continue
            if gate.active >= gate.account.max_concurrent or self.active_total >= self.max_concurrent:
                gate.wake.clear()
                await gate.wake.wait()
                continue
            if self.shared is not None:
                head = gate.pending[0]
                wait = await self.shared(gate.account, [head])
                if wait == 0.0 and (not gate.pending or gate.pending[0] is not head):
                    continue  # withdrawn while we asked: its slot goes with its end
                wait = min(wait, SHARED_SLOT_POLL_S)
            else:
                wait = gate.take(self.clock())
            if wait > 0:
                gate.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(gate.wake.wait(), timeout=wait)
                continue
            if not gate.pending:  # cancelled while we waited: give the token back
                gate.tokens = min(gate.capacity, gate.tokens + 1.0)
                continue
            call = gate.pending.popleft()
            self.queued_total -= 1
            self._begin(gate, call)

    async def close(self) -> None:
        self.closed = True
        for gate in self.gates.values():
            gate.wake.set()
            if gate.task is not None:
                gate.task.cancel()
        for gate in self.gates.values():
            if gate.task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await gate.task
