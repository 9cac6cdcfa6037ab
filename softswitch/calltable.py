"""The call and its table: one :class:`Call` per destination, and the manager's index of the
calls not over yet (by call uuid and by request uuid) with the queries the APIs make."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .admission import AccountLimits
from .dialect import Dialect
from .model import AppFailure, CallEnd, CallSpec
from .state import CallState, CallStateMachine
from .timers import CallTimers

__all__ = ["Call", "CallTable", "RemoteCall", "plain_record", "record_time"]


def record_time(t: float | None) -> str | None:
    """Record time format: 'YYYY-MM-DD HH:MM:SS+00:00' (UTC, whole seconds)."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S+00:00")


def plain_record(value: Any) -> Any:
    """A mapping proxy (frozen spec) as plain dicts, for JSON in the record."""
    if hasattr(value, "items"):
        return {k: plain_record(v) for k, v in value.items()}
    return value


@dataclass(frozen=True, slots=True)
class RemoteCall:
    """A call not over yet that another worker holds (or that waits on the shared request
    queue: ``owner`` None), as the shared store records it: what live-call lists show and
    what a bulk hangup forwards to its owner (``CallManager.cluster_live_calls``)."""

    call_uuid: str
    request_uuid: str
    account_id: str
    dialect: Dialect
    direction: str
    from_: str
    to: str
    record_status: str  #: the record's ``call_status``
    owner: str | None  #: the worker holding it; None: on the shared request queue

    @property
    def is_queued(self) -> bool:
        return self.record_status == "queued"

    @property
    def is_live(self) -> bool:
        return self.record_status != "queued"


@dataclass(eq=False)
class Call:
    """One outbound call leg and everything the manager tracks about it."""

    call_uuid: str
    request_uuid: str
    account: AccountLimits
    spec: CallSpec
    to: str
    dialect: Dialect
    parent_call_uuid: str | None = None
    #: The state, only ever moved by its transition table (:mod:`softswitch.state`).
    sm: CallStateMachine = field(default_factory=CallStateMachine)
    created_at: float = field(default_factory=time.time)
    dialed_at: float | None = None
    ring_at: float | None = None
    early_at: float | None = None
    answered_at: float | None = None
    ended_at: float | None = None
    #: Whole seconds answered and billed, both rounded up (a started second counts; the
    #: two are equal), set when the call ends.
    duration: int = 0
    bill_duration: int = 0
    leg: Any = None
    #: How this side decided to end the call (set before the BYE/CANCEL goes out).
    local_end: CallEnd | None = None
    answer_xml: str | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    app_task: asyncio.Task[None] | None = None
    timers: CallTimers | None = None
    ring_notified: bool = False
    digits_sent: bool = False
    #: Why the call application failed (goes to the record's ``error``).
    error: str | None = None
    #: Answering-machine detection on this call, and its decision.
    amd: Any = None
    machine: Any = None
    #: URL of the first document of the running application, and whether the fallback URL
    #: may still be tried when that document is invalid (only for the answer's own document).
    app_url: str | None = None
    app_may_fallback: bool = False
    #: Why the answer document failed, while the fallback URL is fetched (else None).
    app_failure: AppFailure | None = None
    #: The XML executor's view of the call (``softswitch.callcontrol.LiveCallControl``).
    control: Any = None
    #: B legs ``<Dial>`` placed for this call, newest last.
    b_legs: list[Any] = field(default_factory=list)
    #: Live Play/Speak started over the API, by kind ("play", "speak").
    playbacks: dict[str, list[Any]] = field(default_factory=dict)
    #: Recordings started over the API, by recording id.
    recordings: dict[str, Any] = field(default_factory=dict)
    #: The dialect's own per-call state (a callback sequence number...); the core never reads it.
    dialect_data: dict[str, Any] = field(default_factory=dict)
    #: The parallel fork this call is a member of (``softswitch.fork.Fork``), if any; its
    #: members share one request uuid.
    fork: Any = None
    #: "outbound" (placed over an API) or "inbound" (a caller's INVITE routed by
    #: ``[[inbound]]``); each dialect names it in its callbacks.
    direction: str = "outbound"

    @property
    def from_(self) -> str:
        return self.spec.from_

    @property
    def state(self) -> CallState:
        return self.sm.state

    @property
    def end(self) -> CallEnd | None:
        return self.sm.end_info

    @property
    def status(self) -> str:
        """The status users see, in the dialect's words."""
        return self.dialect.status_name(self.sm.state, self.sm.end_info)

    @property
    def is_queued(self) -> bool:
        """Admitted but not dialed yet (held by the calls-per-second gate or concurrency)."""
        return self.dialed_at is None and not self.finished.is_set()

    @property
    def is_live(self) -> bool:
        """Dialed and not yet ended (queued ones are listed apart)."""
        return self.dialed_at is not None and not self.finished.is_set()

    @property
    def session_start(self) -> float | None:
        return self.early_at or self.answered_at or self.ring_at

    def release(self) -> None:
        """Break the call's reference cycles once it is over: its XML control (whose hooks,
        B-leg hook and media cache point back at it) and its timers (whose expiry closure
        does). Reference counting then frees the call, its leg and its media stream at once;
        left to the cyclic collector they would be frozen with the live heap by
        :class:`softswitch.process.GcPolicy` while other calls are up, and never freed."""
        self.control = None
        self.timers = None


class CallTable:
    """The calls admitted and not over yet, by call uuid and by request uuid."""

    def __init__(self) -> None:
        self.calls: dict[str, Call] = {}
        self.by_request: dict[str, Call] = {}

    def add(self, call: Call) -> None:
        self.calls[call.call_uuid] = call
        # The members of a parallel fork share a request uuid: it finds a live one.
        self.by_request.setdefault(call.request_uuid, call)

    def forget(self, call: Call) -> None:
        self.calls.pop(call.call_uuid, None)
        if self.by_request.get(call.request_uuid) is call:
            del self.by_request[call.request_uuid]
            for other in call.fork.members if call.fork is not None else ():
                if other.call_uuid in self.calls:
                    self.by_request[call.request_uuid] = other
                    break

    def get(self, call_uuid: str) -> Call | None:
        return self.calls.get(call_uuid)

    def live_call(self, account_id: str, call_uuid: str) -> Call | None:
        call = self.calls.get(call_uuid)
        if call is None or call.account.auth_id != account_id or call.finished.is_set():
            return None
        return call

    def live_by_request(self, account_id: str, request_uuid: str) -> Call | None:
        call = self.by_request.get(request_uuid)
        if call is None or call.account.auth_id != account_id or call.finished.is_set():
            return None
        return call

    def live_calls(self, account_id: str, *, status: str = "live") -> list[Call]:
        """Calls of one account that are dialed and not ended (``live``) or still ``queued``."""
        out = []
        for call in self.calls.values():
            if call.account.auth_id != account_id or call.finished.is_set():
                continue
            if call.is_queued if status == "queued" else call.is_live:
                out.append(call)
        out.sort(key=lambda c: c.created_at)
        return out

    def unfinished(self) -> list[Call]:
        return [c for c in self.calls.values() if not c.finished.is_set()]
