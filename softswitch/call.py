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
then fallback_url; seeds/002) and handed to :attr:`CallManager.app_runner` (the XML
interpreter, when it exists; until then the call is held); hangup_url fires exactly once,
when the call ends, however it ends. The dialect tables (statuses, hangup codes, callback
parameter names) live in :mod:`softswitch.api.plivo`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from sip import causes
from sip.events import Answered, EarlyMedia, Ringing, Terminated

from .api.plivo import ApiError, CallRequest, call_status_for, hangup_code

log = logging.getLogger("softswitch.call")

__all__ = ["Call", "CallManager", "AccountLimits", "AdmitResult", "Dialer", "record_time"]

#: Call statuses that mean the call is over (seeds/README: Plivo CallStatus values).
TERMINAL_STATUSES = frozenset({"completed", "busy", "failed", "timeout", "no-answer", "cancel"})


class Dialer(Protocol):
    """What the manager needs from the SIP user agent (``sip.aio.ua.UserAgent``)."""

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
        #: The call application hook: the XML interpreter plugs in here. Called with the
        #: answer_url (or fallback_url) body once the call is answered; None holds the call.
        self.app_runner: AppRunner | None = None
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
        call.app_task = asyncio.get_running_loop().create_task(self._run_app(call), name=f"app-{call.call_uuid}")

    async def _run_app(self, call: Call) -> None:
        """Fetch answer_url (retries, then fallback_url; seeds/002) and run or hold the call."""
        req = call.request
        params = self.common_params(call, "StartApp", "in-progress")
        token = call.account.auth_token
        result = await self.outbox.fetch(
            req.answer_url, req.answer_method, dict(params), auth_token=token,
            attempts=self.answer_url_attempts, deadline_s=self.answer_url_deadline_s,
            call_uuid=call.call_uuid, event="answer",
        )
        if not getattr(result, "ok", False) and req.fallback_url:
            log.warning("call %s: answer_url failed (%s); trying fallback_url", call.call_uuid,
                        getattr(result, "error", None) or getattr(result, "status", None))
            result = await self.outbox.fetch(
                req.fallback_url, req.fallback_method, dict(params), auth_token=token,
                attempts=self.answer_url_attempts, deadline_s=self.answer_url_deadline_s,
                call_uuid=call.call_uuid, event="fallback",
            )
        if not getattr(result, "ok", False):
            log.warning("call %s: no call application could be fetched; hanging up", call.call_uuid)
            await self.hangup(call, causes.NORMAL_TEMPORARY_FAILURE, "Error", "answer_url_error")
            return
        body = result.body
        xml = body.decode("utf-8", "replace") if isinstance(body, bytes | bytearray) else str(body or "")
        call.answer_xml = xml
        await self._update(call, extra={"answer_xml": xml[:65536], "answer_fetch_url": getattr(result, "url", None)})
        if self.app_runner is None:
            log.info("call %s: answer XML fetched (%d bytes); no interpreter, holding the call:\n%s",
                     call.call_uuid, len(xml), xml[:2000])
            return
        await self.app_runner(call, xml)

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
        await self._finish(call, cause, ev.sip_status, source, reason, answered=answered,
                           error=ev.reason or None, ua_extra=dict(ev.extra or {}))

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

    async def _update(self, call: Call, **fields: Any) -> None:
        # The store merges ``extra`` (a JSON merge patch), so no read is needed here.
        await _maybe_await(self.store.update_call(call.call_uuid, **fields))

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
        for key, value in call.request.sip_headers.items():
            params[key] = value
        return params

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
