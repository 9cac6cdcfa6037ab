"""Call orchestration: one :class:`Call` per destination, one :class:`CallManager` per process.

The manager admits calls from an API dialect (a validated :class:`CallRequest`), holds
them behind a per-account calls-per-second gate (a token bucket) and a concurrency
limit, dials them through the SIP user agent, and turns the user agent's events
(:mod:`sip.events`) into call records (:mod:`softswitch.store`) and callbacks
(:mod:`softswitch.webhooks`):

    queued ──dial──▶ (INVITE sent) ──18x──▶ ringing/early-media ──200──▶ in-progress ──▶ ended
       │                  │                        │                          │
       └── cancel ────────┴──── ring_timeout / hangup_on_ring / API ──────────┴── time_limit / BYE

ring_url fires once on the first 18x; answer_url is fetched on answer (three attempts,
then fallback_url; seeds/002) and handed to :attr:`CallManager.app_runner`:
:meth:`CallManager.run_xml` (the Plivo XML interpreter, :mod:`softswitch.callcontrol`) when
the server wires it, else the call is held. hangup_url fires exactly once, when the call
ends, however it ends. The dialect tables (statuses, hangup codes, callback parameter
names) live in :mod:`softswitch.api.plivo`.

Live call control (the API on an answered call) is here too, over the A leg's RTP stream
(:class:`media.engine.MediaStream`) and the B leg a ``<Dial>`` bridged it to:

* transfer: the running XML application is cancelled and the document at ``aleg_url`` runs
  instead (fetched like answer_url, signed, with retries; no fallback);
* Play/Speak: ``mix=true`` (Plivo's default) mixes the audio into what the leg hears (the
  XML prompt, a bridged B leg, or silence) without cutting or delaying it; ``mix=false``
  stops what the leg hears now (the XML verb playing is cut short and the application goes
  on with its next verb) and plays at once. ``length`` bounds the playback, ``loop``
  repeats it until stopped; DELETE stops only what the API started;
* DTMF: the ``send_digits`` grammar, RFC 4733 or in-band as negotiated;
* Record: both directions of the A leg (what the callee says and what it hears, including a
  bridged B leg), mixed to mono, to ``<data_dir>/recordings/<recording_id>.<format>``, until
  ``time_limit``, DELETE or hangup; then ``callback_url`` gets Plivo's recording parameters.
  The file is served at ``<public_url>/v1/Account/<auth_id>/Recording/files/<id>.<format>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import os
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from sip import causes
from softswitch.events import Answered, EarlyMedia, Ringing, Terminated

from .api.plivo import (
    ApiError,
    CallRequest,
    DigitsRequest,
    PlayRequest,
    RecordRequest,
    SpeakRequest,
    call_status_for,
    hangup_code,
    plivo_time,
)
from .api.plivo_amd import callback_params as amd_callback_params

log = logging.getLogger("softswitch.call")

__all__ = ["Call", "CallManager", "AccountLimits", "AdmitResult", "Dialer", "record_time"]

#: Call statuses that mean the call is over (seeds/README: Plivo CallStatus values).
TERMINAL_STATUSES = frozenset({"completed", "busy", "failed", "timeout", "no-answer", "cancel"})


class Dialer(Protocol):
    """What the manager needs from the SIP user agent (``softswitch.ua.UserAgent``)."""

    async def dial(self, target: str, **kwargs: Any) -> Any: ...


def record_time(t: float | None) -> str | None:
    """Record time format: 'YYYY-MM-DD HH:MM:SS+00:00' (UTC, whole seconds)."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S+00:00")


def callback_time(t: float | None) -> str:
    """Callback time format: 'YYYY-MM-DD HH:MM:SS' (seeds/002 StartTime, AnswerTime, EndTime)."""
    if t is None:
        return ""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


def session_time(t: float | None) -> str:
    """SessionStart format: 'YYYY-MM-DD HH:mm:ss.ffffff' UTC (seeds/002)."""
    if t is None:
        return ""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


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


@dataclass(eq=False)
class Call:
    """One outbound call leg and everything the manager tracks about it."""

    call_uuid: str
    request_uuid: str
    account: AccountLimits
    request: CallRequest
    to: str
    parent_call_uuid: str | None = None
    status: str = "queued"
    created_at: float = field(default_factory=time.time)
    dialed_at: float | None = None
    ring_at: float | None = None
    early_at: float | None = None
    answered_at: float | None = None
    ended_at: float | None = None
    leg: Any = None
    #: (cause, Plivo hangup source, reason key) when this side decided to end the call.
    local_end: tuple[str, str, str | None] | None = None
    answer_xml: str | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    app_task: asyncio.Task[None] | None = None
    timers: list[asyncio.TimerHandle] = field(default_factory=list)
    ring_notified: bool = False
    digits_sent: bool = False
    #: Why the call application failed (goes to the record's ``error``).
    error: str | None = None
    #: Answering-machine detection on this call (machine_detection), and its decision.
    amd: Any = None
    machine: Any = None
    #: URL of the first document of the running application, and whether fallback_url may
    #: still be tried when that document is invalid (only for answer_url's own document).
    app_url: str | None = None
    app_may_fallback: bool = False
    #: The XML executor's view of the call (``softswitch.callcontrol.LiveCallControl``).
    control: Any = None
    #: B legs ``<Dial>`` placed for this call (``softswitch.ua.OutboundCall``), newest last.
    b_legs: list[Any] = field(default_factory=list)
    #: Live Play/Speak started over the API, by kind ("play", "speak").
    playbacks: dict[str, list[Any]] = field(default_factory=dict)
    #: Recordings started over the API, by recording id.
    recordings: dict[str, Any] = field(default_factory=dict)

    @property
    def from_(self) -> str:
        return self.request.from_

    @property
    def is_queued(self) -> bool:
        """Admitted but not dialed yet (held by the calls-per-second gate or concurrency)."""
        return self.dialed_at is None and not self.finished.is_set()

    @property
    def is_live(self) -> bool:
        """Dialed and not yet ended (Plivo "live" calls; queued ones are listed apart)."""
        return self.dialed_at is not None and not self.finished.is_set()

    @property
    def session_start(self) -> float | None:
        return self.early_at or self.answered_at or self.ring_at

    def snapshot(self) -> dict[str, Any]:
        """The fields the live/queued call APIs show."""
        return {
            "direction": "outbound",
            "from": self.request.from_,
            "to": self.to,
            "caller_name": self.request.caller_name,
            "call_uuid": self.call_uuid,
            "request_uuid": self.request_uuid,
            "parent_call_uuid": self.parent_call_uuid,
            # Plivo's live view has no "initiated": an INVITE without 18x yet shows as ringing.
            "call_status": "ringing" if self.is_live and self.status == "queued" else self.status,
            "session_start": session_time(self.session_start),
        }


class _Gate:
    """Per-account admission: a token bucket (calls per second) and a concurrency count.

    The bucket holds at most ``max(1, cps)`` tokens (one second's burst) and refills
    continuously; time is passed in, so the arithmetic is testable without sleeping.
    """

    def __init__(self, account: AccountLimits, now: float) -> None:
        self.account = account
        #: cps <= 0 means unlimited (config: "0 = unlimited").
        self.unlimited = float(account.cps) <= 0
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


AppRunner = Callable[[Call, str], Awaitable[None]]


class CallManager:
    """Admits, dials, supervises and records outbound calls; see the module docstring."""

    def __init__(
        self,
        store: Any,
        outbox: Any,
        dialer: Dialer | None,
        *,
        accounts: Iterable[AccountLimits] = (),
        max_concurrent: int = 1000,
        max_queue: int = 10000,
        answer_url_attempts: int = 3,
        answer_url_deadline_s: float = 60.0,
        send_digits_tone_ms: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        data_dir: str | os.PathLike[str] | None = None,
        public_url: str | None = None,
    ) -> None:
        self.store = store
        self.outbox = outbox
        self.dialer = dialer
        self.accounts: dict[str, AccountLimits] = {a.auth_id: a for a in accounts}
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.answer_url_attempts = answer_url_attempts
        self.answer_url_deadline_s = answer_url_deadline_s
        self.send_digits_tone_ms = send_digits_tone_ms
        self.clock = clock
        #: The call application hook: the XML interpreter (:meth:`run_xml`) plugs in here.
        #: Called with the answer_url (or fallback_url, or transfer) body once the call is
        #: answered; None holds the call.
        self.app_runner: AppRunner | None = None
        #: Where recordings and the media cache live (``Config.data_dir``).
        self.data_dir = Path(data_dir if data_dir is not None else "data").resolve()
        #: Public URL of the HTTP API (``Config.http_base_url``), for recording URLs.
        self.public_url = (public_url or "http://127.0.0.1:8088").rstrip("/")
        self._tts_cache: Any = None
        self._background: set[asyncio.Task[Any]] = set()
        self.accepting = True
        self.calls: dict[str, Call] = {}
        self.by_request: dict[str, Call] = {}
        self._gates: dict[str, _Gate] = {}
        self._active_total = 0
        self._queued_total = 0
        self._closed = False

    # --- accounts -----------------------------------------------------------------------

    def add_account(self, account: AccountLimits) -> None:
        self.accounts[account.auth_id] = account

    def account(self, auth_id: str) -> AccountLimits | None:
        return self.accounts.get(auth_id)

    def _gate(self, account: AccountLimits) -> _Gate:
        gate = self._gates.get(account.auth_id)
        if gate is None:
            gate = _Gate(account, self.clock())
            self._gates[account.auth_id] = gate
            gate.task = asyncio.get_running_loop().create_task(
                self._dispatch_loop(gate), name=f"dispatch-{account.auth_id}"
            )
        return gate

    # --- admission ----------------------------------------------------------------------

    async def admit(self, account: AccountLimits, req: CallRequest) -> AdmitResult:
        """Accept one request (one call per destination): store records, fire or queue them.

        Raises :class:`ApiError` 503 while shutting down, 429 when the queue is full,
        404 when ``error_if_parent_not_found`` and the parent call is not live.
        """
        if not self.accepting or self._closed:
            raise ApiError(503, "server is shutting down; not accepting calls")
        n = len(req.to)
        gate = self._gate(account)
        parent: str | None = None
        if req.parent_call_uuid and not req.is_bulk:  # seeds/002: honoured for single calls only
            found = self.calls.get(req.parent_call_uuid)
            if found is not None and found.account.auth_id == account.auth_id and not found.finished.is_set():
                parent = req.parent_call_uuid
            elif req.error_if_parent_not_found:
                raise ApiError(404, "parent_call_uuid not found")
        now = self.clock()
        free = min(account.max_concurrent - gate.active, self.max_concurrent - self._active_total)
        immediate = not gate.pending and gate.available(now) >= n - 1e-9 and free >= n
        if not immediate and self._queued_total + n > self.max_queue:
            raise ApiError(429, "too many queued calls; retry later")

        calls: list[Call] = []
        for dest in req.to:
            call = Call(
                call_uuid=str(uuid.uuid4()),
                request_uuid=str(uuid.uuid4()),
                account=account,
                request=req,
                to=dest,
                parent_call_uuid=parent,
            )
            calls.append(call)
        for call in calls:
            await _maybe_await(self.store.insert_call(self._initial_record(call)))
            self.calls[call.call_uuid] = call
            self.by_request[call.request_uuid] = call
        if immediate:
            for call in calls:
                gate.take(now)
                self._start(gate, call)
        else:
            gate.pending.extend(calls)
            self._queued_total += n
            gate.wake.set()
        return AdmitResult(
            request_uuids=tuple(c.request_uuid for c in calls),
            call_uuids=tuple(c.call_uuid for c in calls),
            queued=not immediate,
        )

    def _initial_record(self, call: Call) -> dict[str, Any]:
        req = call.request
        return {
            "call_uuid": call.call_uuid,
            "request_uuid": call.request_uuid,
            "account_id": call.account.auth_id,
            "parent_call_uuid": call.parent_call_uuid,
            "direction": "outbound",
            "from_number": req.from_,
            "to_number": call.to,
            "caller_name": req.caller_name,
            "call_status": "queued",
            "initiation_time": record_time(call.created_at),
            "ring_time": None,
            "answer_time": None,
            "end_time": None,
            "call_duration": 0,
            "bill_duration": 0,
            "hangup_cause_name": None,
            "hangup_cause_code": None,
            "hangup_source": None,
            "sip_status": None,
            "answer_url": req.answer_url,
            "dialect": "plivo",
            "params": req.params(),
            "extra": {},
            "error": None,
        }

    async def _dispatch_loop(self, gate: _Gate) -> None:
        """Take queued calls off one account's queue at the CPS rate, within its concurrency."""
        while not self._closed:
            if not gate.pending:
                gate.wake.clear()
                await gate.wake.wait()
                continue
            if gate.active >= gate.account.max_concurrent or self._active_total >= self.max_concurrent:
                gate.wake.clear()
                await gate.wake.wait()
                continue
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
            self._queued_total -= 1
            self._start(gate, call)

    def _start(self, gate: _Gate, call: Call) -> None:
        gate.active += 1
        self._active_total += 1
        call.task = asyncio.get_running_loop().create_task(self._run(gate, call), name=f"call-{call.call_uuid}")

    # --- one call -----------------------------------------------------------------------

    async def _run(self, gate: _Gate, call: Call) -> None:
        try:
            await self._run_leg(call)
        except asyncio.CancelledError:
            if not call.finished.is_set():
                await asyncio.shield(
                    self._finish(call, causes.SYSTEM_SHUTDOWN, None, "Plivo", "shutdown", answered=call.answered_at is not None)
                )
            raise
        except Exception as exc:  # never lose a record to a bug in one call
            log.exception("call %s failed", call.call_uuid)
            if not call.finished.is_set():
                await self._finish(call, causes.NORMAL_TEMPORARY_FAILURE, None, "Error", None,
                                   answered=call.answered_at is not None, error=repr(exc))
        finally:
            gate.active -= 1
            self._active_total -= 1
            for g in self._gates.values():
                g.wake.set()

    async def _run_leg(self, call: Call) -> None:
        req = call.request
        if self.dialer is None:
            await self._finish(call, causes.SERVICE_UNAVAILABLE, None, "Error", None, answered=False,
                               error="no SIP user agent")
            return
        if call.local_end is not None:  # cancelled between admission and dispatch
            cause, source, reason = call.local_end
            await self._finish(call, cause, None, source, reason, answered=False)
            return
        call.dialed_at = time.time()
        kwargs: dict[str, Any] = {
            "from_user": req.from_,
            "caller_name": req.caller_name,
            "headers": dict(req.sip_headers) or None,
            "ring_timeout": float(req.ring_timeout),
            "call_uuid": call.call_uuid,
        }
        try:
            leg = await self.dialer.dial(call.to, **kwargs)
        except ValueError as exc:
            await self._finish(call, causes.INVALID_NUMBER_FORMAT, None, "Error", "invalid_destination",
                               answered=False, error=str(exc))
            return
        except LookupError as exc:
            await self._finish(call, causes.NO_ROUTE_DESTINATION, None, "Error", "invalid_destination",
                               answered=False, error=str(exc))
            return
        call.leg = leg
        await self._update(call, extra={"sip_call_id": getattr(leg, "call_id", None)})
        if call.local_end is not None:  # hung up via the API while the INVITE was going out
            self._hangup_leg(call, call.local_end[0])
        # OutboundCall.events() replays every event from the start, so nothing emitted
        # while dial() was returning is lost.
        async for ev in leg.events():
            if isinstance(ev, Ringing | EarlyMedia):
                await self._on_progress(call, ev)
            elif isinstance(ev, Answered):
                await self._on_answered(call)
            elif isinstance(ev, Terminated):
                await self._on_terminated(call, ev)
                return
        if not call.finished.is_set():  # the stream ended without Terminated: close the record
            await self._finish(call, causes.NORMAL_UNSPECIFIED, None, "Unknown", None,
                               answered=call.answered_at is not None)

    async def _on_progress(self, call: Call, ev: Ringing | EarlyMedia) -> None:
        if call.answered_at is not None:
            return
        now = time.time()
        first = call.ring_at is None
        if first:
            call.ring_at = now
        fields: dict[str, Any] = {}
        if isinstance(ev, EarlyMedia) and call.early_at is None:
            call.early_at = now
            call.status = "early-media"
            fields["call_status"] = "early-media"
        elif first:
            call.status = "ringing"
            fields["call_status"] = "ringing"
        if first:
            fields["ring_time"] = record_time(now)
            req = call.request
            if req.hangup_on_ring is not None:  # seeds/002: counted from the time the call starts ringing
                self._arm(call, req.hangup_on_ring, causes.ALLOTTED_TIMEOUT, "hangup_on_ring")
        if fields:
            await self._update(call, **fields)
        if first and not call.ring_notified:
            call.ring_notified = True
            req = call.request
            if req.ring_url:
                params = self.common_params(call, "Ring", "ringing")
                self._post(call, "ring", req.ring_url, req.ring_method, params)
        if isinstance(ev, EarlyMedia) and call.request.send_on_preanswer:
            self._send_digits(call)

    async def _on_answered(self, call: Call) -> None:
        if call.answered_at is not None:
            return
        now = time.time()
        call.answered_at = now
        call.status = "in-progress"
        await self._update(call, call_status="in-progress", answer_time=record_time(now))
        self._arm(call, call.request.time_limit, causes.ALLOTTED_TIMEOUT, "time_limit")
        if call.ring_at is None and call.request.hangup_on_ring is not None:
            # answered without a 18x: the call "starts ringing" and is answered at once
            self._arm(call, call.request.hangup_on_ring, causes.ALLOTTED_TIMEOUT, "hangup_on_ring")
        if call.local_end is not None:
            self._hangup_leg(call, call.local_end[0])
            return
        if not call.request.send_on_preanswer or not call.digits_sent:
            self._send_digits(call)
        if call.request.machine_detection and call.leg is not None:
            self._start_machine_detection(call)
        call.app_task = asyncio.get_running_loop().create_task(self._run_app(call), name=f"app-{call.call_uuid}")

    # --- answering-machine detection (seeds/002 machine_detection) ---------------------------

    def _start_machine_detection(self, call: Call) -> None:
        """Run the detector on the answered call's audio.

        Sync mode (no machine_detection_url): answer_url waits for the decision and gets
        ``Machine``. Async mode: answer_url runs at once and the decision is POSTed to
        machine_detection_url (Event=MachineDetection). Either way ``hangup`` ends a call
        answered by a machine (cause MACHINE_DETECTED), and every later callback carries
        ``Machine`` and the measured features."""
        from .amd import MachineDetection
        from .api.plivo_amd import amd_params_from_plivo

        req = call.request
        params = amd_params_from_plivo(
            {"machine_detection_time": str(req.machine_detection_time), **req.machine_detection_params}
        )
        call.amd = MachineDetection(
            call.leg, params,
            on_decision=lambda result: self._machine_decided(call, result),
            on_beep=lambda result: asyncio.get_running_loop().create_task(self._on_beep(call, result)),
        ).start()

    def _machine_decided(self, call: Call, result: Any) -> None:
        """The detector's decision, from the media clock's tick. What answer_url (sync mode)
        depends on is settled here, synchronously: the decision itself, and whether the call
        is ending (hangup mode), so ``_run_app`` never races the callbacks and the BYE."""
        call.machine = result
        if result.machine and call.request.machine_detection == "hangup" and call.local_end is None:
            call.local_end = (causes.MACHINE_DETECTED, "Plivo", "machine_detected")
        asyncio.get_running_loop().create_task(self._on_machine(call, result))

    async def _on_machine(self, call: Call, result: Any) -> None:
        req = call.request
        await self._update(call, extra={"machine_detection": {**amd_callback_params(result), "mode": req.machine_detection}})
        if req.machine_detection_url:
            params = self.common_params(call, "MachineDetection", call.status)
            self._post(call, "machine_detection", req.machine_detection_url, req.machine_detection_method, params)
        if result.machine and req.machine_detection == "hangup":
            if call.app_task is not None and not call.app_task.done() and req.machine_detection_url:
                call.app_task.cancel()
            await self.hangup(call, causes.MACHINE_DETECTED, "Plivo", "machine_detected")

    async def _on_beep(self, call: Call, result: Any) -> None:
        await self._update(call, extra={"machine_detection": {**amd_callback_params(result), "mode": call.request.machine_detection}})

    async def _machine_decision(self, call: Call) -> None:
        """Sync mode: wait (at most machine_detection_time) for the decision."""
        if call.amd is None or call.request.machine_detection_url:
            return
        try:
            await asyncio.wait_for(asyncio.shield(call.amd.decision), call.request.machine_detection_time / 1000 + 2)
        except TimeoutError:
            return

    async def _run_app(self, call: Call) -> None:
        """Fetch answer_url (retries, then fallback_url; seeds/002) and run or hold the call."""
        req = call.request
        await self._machine_decision(call)
        if call.local_end is not None or call.finished.is_set():
            return  # hung up while deciding (machine_detection=hangup, API, callee)
        params = self.common_params(call, "StartApp", "in-progress")
        token = call.account.auth_token
        result = await self.outbox.fetch(
            req.answer_url, req.answer_method, dict(params), auth_token=token,
            attempts=self.answer_url_attempts, deadline_s=self.answer_url_deadline_s,
            call_uuid=call.call_uuid, event="answer",
        )
        call.app_may_fallback = bool(req.fallback_url)
        if not getattr(result, "ok", False) and req.fallback_url:
            log.warning("call %s: answer_url failed (%s); trying fallback_url", call.call_uuid,
                        getattr(result, "error", None) or getattr(result, "status", None))
            call.app_may_fallback = False  # fallback_url is used up
            result = await self.outbox.fetch(
                req.fallback_url, req.fallback_method, dict(params), auth_token=token,
                attempts=self.answer_url_attempts, deadline_s=self.answer_url_deadline_s,
                call_uuid=call.call_uuid, event="fallback",
            )
        if not getattr(result, "ok", False):
            log.warning("call %s: no call application could be fetched; hanging up", call.call_uuid)
            call.error = f"answer_url could not be fetched: {getattr(result, 'error', None) or 'failed'}"
            await self.hangup(call, causes.NORMAL_TEMPORARY_FAILURE, "Error", "answer_url_error")
            return
        await self._start_document(call, result, req.answer_url)

    async def _start_document(self, call: Call, result: Any, default_url: str) -> None:
        """Record the fetched first document of an application and hand it to the runner."""
        body = result.body
        xml = body.decode("utf-8", "replace") if isinstance(body, bytes | bytearray) else str(body or "")
        call.answer_xml = xml
        call.app_url = getattr(result, "url", None) or default_url
        await self._update(call, extra={"answer_xml": xml[:65536], "answer_fetch_url": call.app_url})
        if self.app_runner is None:
            log.info("call %s: answer XML fetched (%d bytes); no interpreter, holding the call:\n%s",
                     call.call_uuid, len(xml), xml[:2000])
            return
        await self.app_runner(call, xml)

    # --- the XML application ------------------------------------------------------------

    async def run_xml(self, call: Call, xml: str) -> None:
        """The :attr:`app_runner` that executes Plivo XML on the call's media.

        The first document (``call.app_url``) is already fetched; the executor fetches the
        rest (actions, redirects, fallback_url for an invalid answer document) through the
        signed webhook outbox. An application error hangs the call up with the error's cause
        (:mod:`softswitch.xml.parser`), stores the message in the record's ``error``, and the
        hangup callback follows as for any other end. A leg without media (a test double)
        is held, as without an interpreter.
        """
        from .callcontrol import LiveCallControl, run_xml_app

        if call.finished.is_set():
            return
        leg = call.leg
        if leg is None or getattr(leg, "media", None) is None:
            log.info("call %s: no media stream; holding the call", call.call_uuid)
            return
        if call.control is None:
            call.control = LiveCallControl(
                leg,
                self.dialer,  # type: ignore[arg-type]
                base_params=lambda: self.xml_params(call),
                fetcher=lambda url, method, params: self._fetch_xml(call, url, method, params),
                notifier=lambda url, method, params: self._post(call, "action", url, method, dict(params)),
                data_dir=self.data_dir,
                dial_defaults=self._dial_defaults(call),
                hangup=lambda cause, reason: self._app_hangup(call, cause, reason),
            )
        req = call.request
        fallback = req.fallback_url if call.app_may_fallback else None
        app = await run_xml_app(
            call.control,
            answer_url=call.app_url or req.answer_url,
            xml=xml,
            fallback_url=fallback,
            fallback_method=req.fallback_method,
            data_dir=self.data_dir,
            recording_url_base=self.recording_url_base(call.account.auth_id),
        )
        if app.error is not None and not call.finished.is_set() and call.error is None:
            call.error = str(app.error)

    def _dial_defaults(self, call: Call) -> Any:
        from .callcontrol import DialDefaults

        def on_b_leg(b_leg: Any, to: str) -> None:
            call.b_legs.append(b_leg)
            del call.b_legs[:-8]  # bounded: only the newest B legs can be live

        return DialDefaults(on_b_leg=on_b_leg, sip_header_prefix="X-PH-")

    def xml_params(self, call: Call) -> dict[str, str]:
        """Parameters the XML executor posts with every request (action, redirect...)."""
        params = self.common_params(call, "", "in-progress")
        params.pop("Event", None)
        return params

    async def _fetch_xml(self, call: Call, url: str, method: str, params: Mapping[str, str]) -> str:
        """The executor's fetcher: the signed outbox, with answer_url's retry policy."""
        from .app.control import FetchError

        event = "fallback" if url == call.request.fallback_url else "action"
        result = await self.outbox.fetch(
            url, method, dict(params), auth_token=call.account.auth_token,
            attempts=self.answer_url_attempts, deadline_s=self.answer_url_deadline_s,
            call_uuid=call.call_uuid, event=event,
        )
        if not getattr(result, "ok", False):
            raise FetchError(str(getattr(result, "error", None) or f"HTTP {getattr(result, 'status', None)}"))
        body = result.body
        return body.decode("utf-8", "replace") if isinstance(body, bytes | bytearray) else str(body or "")

    async def _app_hangup(self, call: Call, cause: str, reason: str | None) -> None:
        """The executor ends the call: classify why, for the record and the hangup callback.

        ``reason`` is the executor's text: "End Of XML Instructions", "Hangup XML ...", or
        an :class:`~softswitch.xml.parser.XmlAppError` message.
        """
        from .app.document import CAUSE_FETCH_FAILED, CAUSE_INVALID_XML, CAUSE_NOT_IMPLEMENTED

        text = reason or ""
        if text == "End Of XML Instructions":
            source, key = "Plivo", "end_of_xml"
        elif text.startswith("Hangup XML"):
            source, key = "Answer XML", None
        else:
            source = "Error"
            if cause in (CAUSE_INVALID_XML, CAUSE_NOT_IMPLEMENTED):
                key = "invalid_answer_xml"
            elif cause == CAUSE_FETCH_FAILED and text.startswith("fetching XML from"):
                req = call.request
                first = {req.answer_url, req.fallback_url, call.app_url}
                key = "answer_url_error" if any(u and f" {u} " in text + " " for u in first) else "action_url_error"
            else:
                key = None
            if call.error is None:
                call.error = text or cause
        await self.hangup(call, cause, source, key)

    def recording_url_base(self, auth_id: str) -> str:
        """Public URL prefix of an account's recordings (served by the API server)."""
        return f"{self.public_url}/v1/Account/{auth_id}/Recording/files"

    def recording_path(self, name: str) -> Path:
        """Local file of a recording named ``<recording_id>.<format>``."""
        return self.data_dir / "recordings" / name

    def _send_digits(self, call: Call) -> None:
        digits = call.request.send_digits
        if not digits or call.digits_sent or call.leg is None:
            return
        call.digits_sent = True

        async def send() -> None:
            try:
                await call.leg.send_digits(digits, tone_ms=self.send_digits_tone_ms)
            except Exception:
                log.exception("call %s: send_digits failed", call.call_uuid)

        asyncio.get_running_loop().create_task(send(), name=f"digits-{call.call_uuid}")

    async def _on_terminated(self, call: Call, ev: Terminated) -> None:
        answered = call.answered_at is not None
        if call.local_end is not None:
            cause, source, reason = call.local_end
            if reason == "api" and not answered:  # API hangup of a ringing call is a cancel
                cause = causes.ORIGINATOR_CANCEL
        else:
            cause, reason = ev.cause, None
            source = {
                "callee": "Callee",
                "caller": "Caller",
                "api": "API Request",
                "error": "Error",
                "timeout": "Plivo",
            }.get(ev.hangup_source, "Unknown")
            if ev.hangup_source == "timeout" and not answered:
                reason = "ring_timeout"
        # The UA's reason text ("BYE", "cancelled", a SIP reason phrase) is kept with the UA
        # details; the record's ``error`` only says what went wrong when something did.
        extra = dict(ev.extra or {})
        if ev.reason:
            extra.setdefault("reason", ev.reason)
        error = ev.reason or None if ev.hangup_source == "error" else None
        await self._finish(call, cause, ev.sip_status, source, reason, answered=answered,
                           error=error, ua_extra=extra)

    async def _finish(
        self,
        call: Call,
        cause: str,
        sip_status: int | None,
        source: str,
        reason: str | None,
        *,
        answered: bool,
        error: str | None = None,
        ua_extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Close the call exactly once: record, hangup callback, bookkeeping."""
        if call.finished.is_set():
            return
        call.finished.set()
        for handle in call.timers:
            handle.cancel()
        call.timers.clear()
        if call.app_task is not None and not call.app_task.done():
            call.app_task.cancel()
        self._end_live_ops(call)
        if call.error:
            error = call.error
        now = time.time()
        call.ended_at = now
        status = call_status_for(cause, answered, reason)
        call.status = status
        code, name = hangup_code(cause, answered, reason)
        duration = 0
        bill = 0
        if answered and call.answered_at is not None:
            span = max(0.0, now - call.answered_at)
            duration = int(span + 0.5)
            bill = int(math.ceil(span - 1e-6)) if span > 0 else 0
        extra: dict[str, Any] = {"hangup_cause": cause}
        if ua_extra:
            extra["ua"] = {k: v for k, v in ua_extra.items() if isinstance(v, str | int | float | bool | None)}
        fields = {
            "call_status": status,
            "end_time": record_time(now),
            "call_duration": duration,
            "bill_duration": bill,
            "hangup_cause_name": name,
            "hangup_cause_code": code,
            "hangup_source": source,
            "sip_status": sip_status,
            "extra": extra,
        }
        if error:
            fields["error"] = error[:1000]
        try:
            await self._update(call, **fields)
        except Exception:
            log.exception("call %s: could not store the final record", call.call_uuid)
        req = call.request
        if req.hangup_url:
            params = self.common_params(call, "Hangup", status)
            params.update(
                {
                    "HangupCause": cause,
                    "HangupCauseCode": str(code),
                    "HangupCauseName": name,
                    "HangupSource": source,
                    "Duration": str(duration),
                    "BillDuration": str(bill),
                    "StartTime": callback_time(call.created_at),
                    "AnswerTime": callback_time(call.answered_at),
                    "EndTime": callback_time(now),
                }
            )
            self._post(call, "hangup", req.hangup_url, req.hangup_method, params)
        self._forget(call)

    def post_interrupted_hangup(self, record: Mapping[str, Any]) -> None:
        """The hangup callback of a call that a crash of the previous process ended
        (:meth:`CallStore.mark_interrupted` closed its record): built from the stored request."""
        params_in = record.get("params") or {}
        url = params_in.get("hangup_url")
        account = self.account(record.get("account_id") or "")
        if not url or account is None:
            return
        status = record.get("call_status") or "failed"
        answered = record.get("answer_time") is not None
        code, name = hangup_code(causes.SYSTEM_SHUTDOWN, answered, "shutdown")
        self.store.update_call(record["call_uuid"], hangup_cause_code=code)
        params = {
            "From": str(params_in.get("from") or record.get("from_number") or ""),
            "To": str(record.get("to_number") or ""),
            "RequestUUID": record["request_uuid"],
            "ALegRequestUUID": record["request_uuid"],
            "CallUUID": record["call_uuid"],
            "ALegUUID": record["call_uuid"],
            "Direction": "outbound",
            "Event": "Hangup",
            "CallStatus": status,
            "SessionStart": "",
            "STIRAttestation": "Not Applicable",
            "HangupCause": causes.SYSTEM_SHUTDOWN,
            "HangupCauseCode": str(code),
            "HangupCauseName": name,
            "HangupSource": "Error",
            "Duration": str(record.get("call_duration") or 0),
            "BillDuration": str(record.get("bill_duration") or 0),
            "StartTime": plivo_time(record.get("initiation_time")),
            "AnswerTime": plivo_time(record.get("answer_time")),
            "EndTime": plivo_time(record.get("end_time")),
        }
        for key, value in (params_in.get("sip_headers") or {}).items():
            params[str(key)] = str(value)
        self.outbox.post(record["call_uuid"], "hangup", url, params_in.get("hangup_method") or "POST",
                         params, auth_token=account.auth_token)

    async def _update(self, call: Call, **fields: Any) -> None:
        # The store merges ``extra`` (a JSON merge patch), so no read is needed here.
        await _maybe_await(self.store.update_call(call.call_uuid, **fields))

    def post_callback(self, call: Call, event: str, url: str, method: str,
                      params: dict[str, str]) -> None:
        """Queue a signed notification for ``call`` (never raises: see :meth:`_post`)."""
        self._post(call, event, url, method, params)

    def _post(self, call: Call, event: str, url: str, method: str, params: dict[str, str]) -> None:
        try:
            self.outbox.post(call.call_uuid, event, url, method, params, auth_token=call.account.auth_token)
        except Exception:  # a dead outbox never blocks or loses the call
            log.exception("call %s: could not queue the %s callback", call.call_uuid, event)

    def common_params(self, call: Call, event: str, status: str) -> dict[str, str]:
        """Parameters every callback carries (seeds/002), plus the X-PH-* SIP headers."""
        params = {
            "From": call.request.from_,
            "To": call.to,
            "RequestUUID": call.request_uuid,
            "ALegRequestUUID": call.request_uuid,
            "CallUUID": call.call_uuid,
            "ALegUUID": call.call_uuid,
            "Direction": "outbound",
            "Event": event,
            "CallStatus": status,
            "SessionStart": session_time(call.session_start),
            "STIRAttestation": "Not Applicable",
        }
        if call.parent_call_uuid:
            params["ParentCallUUID"] = call.parent_call_uuid
        if call.request.caller_name:
            params["CallerName"] = call.request.caller_name
        if call.request.machine_detection:
            params["MachineDetection"] = call.request.machine_detection
        if call.machine is not None:
            params.update(amd_callback_params(call.machine))  # Machine=true|false and the features
        for key, value in call.request.sip_headers.items():
            params[key] = value
        return params

    # --- live call control (the API on an answered call) -----------------------------------

    def _media_legs(self, call: Call, legs: str) -> list[Any]:
        """The RTP streams a live-control request acts on: the A leg, the bridged B leg, or both.

        Raises :class:`ApiError` 400 when the call is not answered, has no media, or has no
        B leg in progress for ``bleg``."""
        if call.answered_at is None:
            raise ApiError(400, f"call {call.call_uuid} is not answered yet")
        out: list[Any] = []
        if legs in ("aleg", "both"):
            media = getattr(call.leg, "media", None)
            if media is None or getattr(media, "closed", False):
                raise ApiError(400, f"call {call.call_uuid} has no media stream")
            out.append(media)
        if legs in ("bleg", "both"):
            b = self.bridged_leg(call)
            if b is None:
                raise ApiError(400, f"call {call.call_uuid} has no bridged B leg")
            out.append(b.media)
        return out

    def bridged_leg(self, call: Call) -> Any | None:
        """The newest B leg of a ``<Dial>`` that is answered and still up, if any."""
        for b in reversed(call.b_legs):
            media = getattr(b, "media", None)
            if (getattr(b, "answered_at", None) is not None and getattr(b, "terminated", None) is None
                    and media is not None and not media.closed):
                return b
        return None

    async def transfer(self, call: Call, url: str, method: str = "POST") -> None:
        """Run the XML at ``url`` on the A leg instead of its current application.

        The running application is cancelled first (what it plays stops; a ``<Dial>`` in
        progress hangs up its B leg), then ``url`` is fetched (signed, with retries) and
        run; if it cannot be fetched the call is hung up (Plivo 8021 "Error Reaching Action
        URL"). Returns once the new application task is started."""
        if call.answered_at is None:
            raise ApiError(400, f"call {call.call_uuid} is not answered yet")
        old = call.app_task
        if old is not None and not old.done():
            old.cancel()
            await asyncio.wait({old}, timeout=5.0)
        if call.finished.is_set() or call.local_end is not None:
            raise ApiError(404, f"call {call.call_uuid} has ended")
        call.app_task = asyncio.get_running_loop().create_task(
            self._run_transfer(call, url, method), name=f"app-{call.call_uuid}"
        )

    async def _run_transfer(self, call: Call, url: str, method: str) -> None:
        params = self.xml_params(call)
        result = await self.outbox.fetch(
            url, method, params, auth_token=call.account.auth_token,
            attempts=self.answer_url_attempts, deadline_s=self.answer_url_deadline_s,
            call_uuid=call.call_uuid, event="transfer",
        )
        if not getattr(result, "ok", False):
            call.error = f"transfer: fetching XML from {method} {url} failed: {getattr(result, 'error', None)}"
            await self.hangup(call, causes.NORMAL_TEMPORARY_FAILURE, "Error", "action_url_error")
            return
        call.app_may_fallback = False
        await self._start_document(call, result, url)

    def _tts(self) -> Any:
        if self._tts_cache is None:
            from .app.sources import TtsCache

            self._tts_cache = TtsCache()
        return self._tts_cache

    def _media_cache(self, call: Call) -> Any:
        cache = getattr(call.control, "media_cache", None)
        if cache is None:
            from .app.sources import MediaCache

            cache = MediaCache(self.data_dir / "cache" / "media", allowed_dirs=(self.data_dir,))
        return cache

    async def play(self, call: Call, req: PlayRequest) -> None:
        """Start ``req.urls`` on the leg(s); the files are fetched and played in the background."""
        streams = self._media_legs(call, req.legs)
        playback = _Playback("play", req.length, req.loop)
        cache = self._media_cache(call)

        async def sources() -> list[Any]:
            from media.play import FileSource

            paths = [await cache.path_for(u) for u in req.urls]
            # Each factory decodes a file (FileSource decodes up to 16 MB up front):
            # _start_playback runs them in a worker thread, off the media clock's loop.
            return [lambda p=p: FileSource(p, loop=1) for p in paths]

        self._start_playback(call, playback, streams, sources, req.mix)

    async def speak(self, call: Call, req: SpeakRequest) -> None:
        """Start text to speech (espeak-ng, cached per text and voice) on the leg(s)."""
        from .app.sources import espeak_voice

        streams = self._media_legs(call, req.legs)
        playback = _Playback("speak", None, req.loop)
        voice = espeak_voice(req.voice, req.language)
        cache = self._tts()

        async def sources() -> list[Any]:
            from media.play import ArraySource, tts_to_pcm

            pcm = await cache.get(req.text, voice, lambda t, v: asyncio.to_thread(tts_to_pcm, t, voice=v))
            return [lambda: ArraySource(pcm, loop=1)]

        self._start_playback(call, playback, streams, sources, req.mix)

    def _start_playback(self, call: Call, playback: _Playback, streams: list[Any],
                        make: Callable[[], Awaitable[list[Callable[[], Any]]]], mix: bool) -> None:
        call.playbacks.setdefault(playback.kind, []).append(playback)

        async def run() -> None:
            try:
                factories = await make()
                first = True
                while not playback.stopped:
                    for factory in factories:
                        if playback.stopped:
                            break
                        futures = []
                        # Sources decode files when made: keep that off the event loop, and
                        # make them all before starting any, so both legs start together.
                        made = [(stream, await asyncio.to_thread(factory))
                                for stream in streams if not stream.closed]
                        for stream, source in made:
                            if playback.stopped or stream.closed:
                                with contextlib.suppress(Exception):
                                    source.close()
                                continue
                            if first and not mix:
                                stream.stop_play()  # mix=false: the leg hears only this
                            # mix=true: summed into what the leg hears (prompt, bridged
                            # audio, silence) without cutting or delaying it.
                            futures.append(
                                stream.play(_PlaybackSource(source, playback), mix=mix)
                            )
                        if not futures:  # every leg is gone
                            break
                        first = False
                        if futures:
                            await asyncio.gather(*futures, return_exceptions=True)
                    if not playback.loop:
                        break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("call %s: %s failed: %s", call.call_uuid, playback.kind, exc)
            finally:
                playback.stop()
                with contextlib.suppress(ValueError):
                    call.playbacks.get(playback.kind, []).remove(playback)

        playback.task = self._spawn(run(), f"{playback.kind}-{call.call_uuid}")

    def stop_playback(self, call: Call, kind: str) -> int:
        """Stop the Play (``kind='play'``) or Speak playbacks the API started; how many."""
        items = list(call.playbacks.get(kind, []))
        for playback in items:
            playback.stop()
        return len(items)

    def send_dtmf(self, call: Call, req: DigitsRequest) -> None:
        """Send ``req.digits`` on the A or B leg (RFC 4733 events or in-band tones)."""
        (stream,) = self._media_legs(call, req.leg)

        async def send() -> None:
            try:
                fut = stream.send_digits(req.digits, tone_ms=self.send_digits_tone_ms)
                await fut
            except Exception as exc:
                log.warning("call %s: DTMF failed: %s", call.call_uuid, exc)

        self._spawn(send(), f"dtmf-{call.call_uuid}")

    def _spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        """A background task kept referenced until done (the loop holds tasks weakly)."""
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def start_recording(self, call: Call, req: RecordRequest, api_id: str) -> tuple[str, str]:
        """Start recording the call; return ``(recording_id, url)``."""
        from media.record import Recorder, RecorderError

        (stream,) = self._media_legs(call, "aleg")
        if req.transcription_requested:
            log.info("call %s: transcription requested; not available, recording only", call.call_uuid)
        recording_id = str(uuid.uuid4())
        name = f"{recording_id}.{req.file_format}"
        path = self.recording_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            recorder = Recorder(path, req.file_format)
        except (RecorderError, ValueError, OSError) as exc:
            raise ApiError(500, f"cannot record: {exc}") from None
        url = f"{self.recording_url_base(call.account.auth_id)}/{name}"
        rec = _CallRecording(recording_id, url, name, recorder, stream, req, api_id)
        call.recordings[recording_id] = rec
        rec.start()
        loop = asyncio.get_running_loop()
        rec.timer = loop.call_later(req.time_limit, lambda: self._finish_recording(call, rec))
        return recording_id, url

    def stop_recording(self, call: Call, url: str | None = None) -> int:
        """Stop the call's API recordings (only the one at ``url`` if given); how many."""
        recs = [r for r in call.recordings.values() if url is None or r.url == url or r.name == url]
        for rec in recs:
            self._finish_recording(call, rec)
        return len(recs)

    def recording_in_progress(self, name: str) -> bool:
        """True while an API recording is still being written to ``name``."""
        return any(name in {r.name for r in c.recordings.values()} for c in self.calls.values())

    def _finish_recording(self, call: Call, rec: _CallRecording) -> None:
        if call.recordings.pop(rec.recording_id, None) is None:
            return
        result = rec.stop()
        if rec.req.callback_url:
            params = {
                "api_id": rec.api_id,
                "record_url": rec.url,
                "call_uuid": call.call_uuid,
                "recording_id": rec.recording_id,
                "recording_duration": str(round(result["duration_ms"] / 1000)),
                "recording_duration_ms": str(result["duration_ms"]),
                "recording_start_ms": str(result["start_ms"]),
                "recording_end_ms": str(result["end_ms"]),
            }
            self._post(call, "record", rec.req.callback_url, rec.req.callback_method, params)

    def _end_live_ops(self, call: Call) -> None:
        """The call ended: stop the API's playbacks and finish its recordings (callbacks sent)."""
        for kind in list(call.playbacks):
            self.stop_playback(call, kind)
        for rec in list(call.recordings.values()):
            try:
                self._finish_recording(call, rec)
            except Exception:
                log.exception("call %s: could not finish recording %s", call.call_uuid, rec.recording_id)

    # --- timers and hangups -------------------------------------------------------------

    def _arm(self, call: Call, seconds: float, cause: str, reason: str) -> None:
        loop = asyncio.get_running_loop()
        handle = loop.call_later(
            seconds, lambda: loop.create_task(self.hangup(call, cause, "Plivo", reason))
        )
        call.timers.append(handle)

    def _hangup_leg(self, call: Call, cause: str) -> None:
        leg = call.leg

        async def bye() -> None:
            try:
                await leg.hangup(cause=cause)
            except Exception:
                log.exception("call %s: hangup failed", call.call_uuid)

        asyncio.get_running_loop().create_task(bye(), name=f"hangup-{call.call_uuid}")

    async def hangup(self, call: Call, cause: str = causes.NORMAL_CLEARING, source: str = "API Request",
                     reason: str | None = "api") -> None:
        """End a call from this side: a queued call is dropped, a dialed one gets CANCEL or BYE."""
        if call.finished.is_set():
            return
        if call.local_end is None:
            call.local_end = (cause, source, reason)
        gate = self._gates.get(call.account.auth_id)
        if call.is_queued and gate is not None and call in gate.pending:
            gate.pending.remove(call)
            self._queued_total -= 1
            c = causes.ORIGINATOR_CANCEL if reason == "api" else cause
            await self._finish(call, c, None, source, reason, answered=False)
            return
        if call.leg is not None:
            self._hangup_leg(call, cause)
        # else: the INVITE is being sent; _run_leg sees local_end once dial() returns

    # --- queries for the API --------------------------------------------------------------

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

    def _forget(self, call: Call) -> None:
        self.calls.pop(call.call_uuid, None)
        self.by_request.pop(call.request_uuid, None)

    async def wait_finished(self, call: Call, timeout: float = 10.0) -> bool:
        try:
            await asyncio.wait_for(call.finished.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # --- shutdown -------------------------------------------------------------------------

    async def shutdown(self, mode: str = "drain", drain_timeout_s: float = 30.0) -> None:
        """Stop taking calls; drop queued ones; hang up (``hangup``) or drain (``drain``) live ones.

        After ``drain_timeout_s`` the calls still up are hung up anyway; after a further
        bounded wait, the tasks left are cancelled (their records are closed as shutdown).
        """
        self.accepting = False
        for gate in self._gates.values():
            while gate.pending:
                call = gate.pending.popleft()
                self._queued_total -= 1
                call.local_end = (causes.SYSTEM_SHUTDOWN, "Plivo", "shutdown")
                await self._finish(call, causes.SYSTEM_SHUTDOWN, None, "Plivo", "shutdown", answered=False)
        live = [c for c in self.calls.values() if not c.finished.is_set()]
        if mode == "hangup":
            for call in live:
                await self.hangup(call, causes.SYSTEM_SHUTDOWN, "Plivo", "shutdown")
        tasks = [c.task for c in live if c.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=drain_timeout_s if mode == "drain" else 10.0)
            if pending and mode == "drain":
                for call in live:
                    await self.hangup(call, causes.SYSTEM_SHUTDOWN, "Plivo", "shutdown")
                _, pending = await asyncio.wait(pending, timeout=10.0)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5.0)
        self._closed = True
        for gate in self._gates.values():
            gate.wake.set()
            if gate.task is not None:
                gate.task.cancel()
        for gate in self._gates.values():
            if gate.task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await gate.task
        for call in list(self.calls.values()):
            for handle in call.timers:
                handle.cancel()


class _Playback:
    """One API Play/Speak: a stop flag and a sample budget shared by the items it queues."""

    def __init__(self, kind: str, length_s: int | None, loop: bool) -> None:
        self.kind = kind
        self.loop = loop
        self.budget = None if length_s is None else int(length_s) * 8000
        self.stopped = False
        self.task: asyncio.Task[None] | None = None

    def stop(self) -> None:
        self.stopped = True


class _PlaybackSource:
    """A ``media.play`` source that ends early when its :class:`_Playback` is stopped or its
    ``length`` is used up, so stopping the API's audio never touches what the XML plays."""

    def __init__(self, inner: Any, playback: _Playback) -> None:
        self._inner = inner
        self._playback = playback

    def read(self, n: int = 160) -> np.ndarray | None:
        pb = self._playback
        if pb.stopped:
            return None
        if pb.budget is not None:
            if pb.budget <= 0:
                pb.stop()
                return None
            n = min(n, pb.budget)
        frame = self._inner.read(n)
        if frame is not None and pb.budget is not None:
            pb.budget -= len(frame)
        return frame

    def close(self) -> None:
        closer = getattr(self._inner, "close", None)
        if callable(closer):
            with contextlib.suppress(Exception):
                closer()


class _CallRecording:
    """An API recording: both directions of the A leg mixed into one mono file.

    The media clock hands us each received frame (receive tap) and each sent frame (send
    tap) of a 20 ms tick; frames are paired in order and summed with saturation. A side
    that stays silent (no media yet, or no send tick) is filled with silence after
    :data:`_LAG_FRAMES` frames so the other side is never held back.
    """

    _LAG_FRAMES = 10

    def __init__(self, recording_id: str, url: str, name: str, recorder: Any, stream: Any,
                 req: RecordRequest, api_id: str) -> None:
        self.recording_id = recording_id
        self.url = url
        self.name = name
        self.recorder = recorder
        self.stream = stream
        self.req = req
        self.api_id = api_id
        self.timer: asyncio.TimerHandle | None = None
        self._rx: deque[np.ndarray] = deque()
        self._tx: deque[np.ndarray] = deque()
        self._failed = False
        self.start_ms = 0
        self.end_ms = 0

    def start(self) -> None:
        self.start_ms = int(time.time() * 1000)
        self.stream.add_tap(self._on_rx)
        self.stream.add_send_tap(self._on_tx)

    def _on_rx(self, frame: np.ndarray) -> None:
        self._rx.append(np.array(frame, dtype=np.int16, copy=True))
        self._drain()

    def _on_tx(self, frame: np.ndarray) -> None:
        self._tx.append(np.array(frame, dtype=np.int16, copy=True))
        self._drain()

    def _write(self, a: np.ndarray | None, b: np.ndarray | None) -> None:
        if self._failed or self.recorder.closed:
            return
        if a is None or b is None:
            frame = a if b is None else b
        else:
            n = min(len(a), len(b))
            frame = np.clip(a[:n].astype(np.int32) + b[:n].astype(np.int32), -32768, 32767).astype(np.int16)
        try:
            self.recorder.write(frame)
        except Exception as exc:  # disk full: stop writing, keep the call
            self._failed = True
            log.warning("recording %s failed: %s", self.recording_id, exc)

    def _drain(self, flush: bool = False) -> None:
        rx, tx = self._rx, self._tx
        while rx and tx:
            self._write(rx.popleft(), tx.popleft())
        while rx and (flush or len(rx) > self._LAG_FRAMES):
            self._write(rx.popleft(), None)
        while tx and (flush or len(tx) > self._LAG_FRAMES):
            self._write(None, tx.popleft())

    def stop(self) -> dict[str, int]:
        if self.timer is not None:
            self.timer.cancel()
        self.stream.remove_tap(self._on_rx)
        self.stream.remove_send_tap(self._on_tx)
        self._drain(flush=True)
        self.end_ms = int(time.time() * 1000)
        try:
            self.recorder.close()
        except Exception as exc:
            log.warning("recording %s: closing failed: %s", self.recording_id, exc)
        rate = getattr(self.recorder, "rate", 8000) or 8000
        duration_ms = round(self.recorder.samples * 1000 / rate)
        return {"duration_ms": duration_ms, "start_ms": self.start_ms, "end_ms": self.end_ms}
