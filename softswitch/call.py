"""Call orchestration: one :class:`Call` per destination, one :class:`CallManager` per process.

The manager admits calls from an API dialect (a :class:`~softswitch.model.CallSpec` the
dialect built), holds them behind the per-account admission gates
(:mod:`softswitch.admission`), dials them through the SIP user agent, and turns the leg's
events (:mod:`sip.events`) into state transitions (:mod:`softswitch.state`), call records
(:mod:`softswitch.store`) and callbacks (:mod:`softswitch.webhooks`)::

    queued ──dial──▶ initiated ──18x──▶ ringing/early ──200──▶ answered ──▶ completed
       │                  │                   │                     │
       └── cancel ────────┴── ring_timeout / hangup_on_ring / API ──┴── time_limit / BYE

The ring callback fires once on the first 18x; on answer the application runner
(:mod:`softswitch.runner`) fetches the answer document and runs it. The hangup callback
fires exactly once, when the call ends, however it ends. Every status, cause and callback
parameter name users see comes from the registered :class:`~softswitch.dialect.Dialect`;
live call control (Play/Speak/DTMF/Record) is :mod:`softswitch.liveops`.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import math
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from media.engine import UnsupportedCodec
from sip import causes
from sip.auth import Credentials
from softswitch.events import Answered, EarlyMedia, Ringing, Terminated

from .admission import AccountLimits, Admission, AdmitResult, Gate
from .calltable import Call, CallTable, RemoteCall, plain_record, record_time
from .conference import Conferences
from .dialect import Dialect
from .fork import Fork
from .liveops import LiveOps
from .model import (
    CallbackEvent,
    CallEnd,
    CallNotFound,
    CallSpec,
    DialAttempt,
    EndReason,
    ForkGroup,
    HangupSource,
    QueueFull,
    ShuttingDown,
)
from .runner import ApplicationRunner
from .state import CallTransition
from .timers import CallTimers, LoopScheduler, Scheduler

log = logging.getLogger("softswitch.call")
#: One INFO line per call event (``softswitch serve`` logs INFO; ``--log-format json`` puts
#: the fields of ``extra["call"]`` at the top level of each line, ``softswitch.logs``).
events_log = logging.getLogger("softswitch.call.events")


def log_call_event(call: Call, event: str, **more: Any) -> None:
    """Log ``event`` of ``call``: its uuid, direction, from, to, status and ``more``."""
    if not events_log.isEnabledFor(logging.INFO):
        return
    fields: dict[str, Any] = {"event": event, "call_uuid": call.call_uuid, "direction": call.direction,
                              "from": call.from_, "to": call.to, "status": call.status}
    fields.update((k, v) for k, v in more.items() if v is not None)
    text = " ".join(f"{k}={v}" for k, v in fields.items() if k not in ("event", "call_uuid"))
    events_log.info("call %s %s: %s", call.call_uuid, event, text, extra={"call": fields})


__all__ = ["Call", "CallManager", "AccountLimits", "AdmitResult", "Dialer", "record_time"]


#: An account id usable as a directory name as it is (others are hashed).
_SAFE_DIR_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")

class Dialer(Protocol):
    """What the manager needs from the SIP user agent (``UserAgent``). ``codecs`` (an
    attempt's codec list, in preference order) is passed only when the attempt has one;
    a list the media engine cannot offer raises ``media.engine.UnsupportedCodec``."""

    async def dial(self, target: str, *, codecs: Sequence[str] | None = None, **kwargs: Any) -> Any: ...


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


#: How the leg reports who ended the call (``Terminated.hangup_source``).
_LEG_SOURCES: dict[str, HangupSource] = {
    "callee": HangupSource.CALLEE,
    "caller": HangupSource.CALLER,
    "api": HangupSource.API,
    "error": HangupSource.ERROR,
    "timeout": HangupSource.SYSTEM,
}



AppRunner = Callable[[Call, str], Awaitable[None]]


class CallManager:
    """Admits, dials, supervises and records outbound calls; see the module docstring."""

    def __init__(
        self,
        store: Any,
        outbox: Any,
        dialer: Dialer | None,
        *,
        dialect: Dialect | Sequence[Dialect],
        accounts: Iterable[AccountLimits] = (),
        max_concurrent: int = 1000,
        max_queue: int = 10000,
        answer_url_attempts: int = 3,
        answer_url_deadline_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        scheduler: Scheduler | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        public_url: str | None = None,
        cluster: Any = None,
        gateway_limits: Mapping[str, tuple[float, int]] | None = None,
    ) -> None:
        self.store = store
        self.outbox = outbox
        self.dialer = dialer
        #: Every dialect served, by name; the first is the default. Each call keeps the one
        #: that built its spec (``CallSpec.dialect``), so several APIs share one manager.
        chosen = [dialect] if not isinstance(dialect, Sequence) else list(dialect)
        if not chosen:
            raise ValueError("at least one dialect is required")
        self.dialects: dict[str, Dialect] = {d.name: d for d in chosen}
        self.dialect = chosen[0]
        self.accounts: dict[str, AccountLimits] = {a.auth_id: a for a in accounts}
        self.answer_url_attempts = answer_url_attempts
        self.answer_url_deadline_s = answer_url_deadline_s
        self.clock = clock
        #: Runs the per-call timers (time_limit, hangup_on_ring); a fake one in unit tests.
        self.scheduler: Scheduler = scheduler or LoopScheduler()
        #: Per gateway name: (calls per second, calls at once), 0 = no limit (``Gateway.cps``,
        #: ``Gateway.max_concurrent``); shared across workers through ``cluster``.
        self.gateway_limits: dict[str, tuple[float, int]] = dict(gateway_limits or {})
        self._gateway_gates: dict[str, Gate] = {}
        self._gateway_held: dict[str, str] = {}  #: call uuid -> gateway whose slot it holds
        #: The workers' shared state (``softswitch.cluster.Cluster``; None: one process):
        #: the account limits count across workers and every live call is owned there.
        self.cluster = cluster
        #: ``softswitch.cluster.RequestQueue`` (a cluster on a shared store): calls that would
        #: wait in this worker's queue wait there, for any worker with room to take them.
        self.request_queue: Any = None
        self._queue_task: asyncio.Task[Any] | None = None
        self.admission = Admission(self._start, max_concurrent=max_concurrent,
                                   max_queue=max_queue, clock=clock,
                                   shared=self._take_shared if cluster is not None else None)
        self.runner = ApplicationRunner(self)
        self.live_ops = LiveOps(self)
        #: Conference rooms of this process (``<Conference>`` and the conference APIs).
        self.conferences = Conferences(lambda: getattr(self.dialer, "media", None))
        self.conferences.on_room_opened = self._room_opened
        self.conferences.on_room_closed = self._room_closed
        #: The call application hook: the XML interpreter (:meth:`run_xml`) plugs in here.
        #: Called with the answer (or fallback, or transfer) document once the call is
        #: answered; None holds the call.
        self.app_runner: AppRunner | None = None
        #: Where recordings and the media cache live (``Config.data_dir``).
        self.data_dir = Path(data_dir if data_dir is not None else "data").resolve()
        #: Public URL of the HTTP API (``Config.http_base_url``), for recording URLs.
        self.public_url = (public_url or "http://127.0.0.1:8088").rstrip("/")
        #: ``(url, account_id) -> url``: how a recording URL handed out is signed (the HTTP
        #: layer's expiring signature); None hands out the bare URL.
        self.recording_url_signer: Callable[[str, str], str] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self.accepting = True
        self.table = CallTable()
        #: Calls whose SIP dialog is in the store (the next process BYEs them after a crash).
        self._stored_dialogs: set[str] = set()
        #: Told as calls move (``softswitch.ops.Operations``: traces, metrics, live pages):
        #: ``call_dialed``, ``leg_started``, ``call_progress``, ``call_answered``,
        #: ``document_fetched``, ``call_ended``; a failing observer never stops a call.
        self.observers: list[Any] = []
        #: The registrar's users that belong to one account (user name -> auth id): other
        #: accounts' calls to them fail USER_NOT_REGISTERED (``Config.users[].account``).
        self.user_accounts: dict[str, str] = {}

    def observe(self, event: str, *args: Any) -> None:
        """Tell each observer that has a method named ``event``."""
        for observer in self.observers:
            method = getattr(observer, event, None)
            if method is not None:
                try:
                    method(*args)
                except Exception:
                    log.exception("observer %s failed on %s", type(observer).__name__, event)

    def refuses_target(self, account_id: str, target: str) -> bool:
        """Is ``target`` a registrar user (as the dialer's ``local_user`` sees it) that
        belongs to another account than ``account_id``?"""
        local_user = getattr(self.dialer, "local_user", None)
        if not self.user_accounts or not callable(local_user):
            return False
        try:
            user = local_user(target)
        except ValueError:
            return False
        owner = self.user_accounts.get(user) if user else None
        return bool(owner) and owner != account_id

    # --- accounts -----------------------------------------------------------------------

    def add_account(self, account: AccountLimits) -> None:
        self.accounts[account.auth_id] = account

    def account(self, auth_id: str) -> AccountLimits | None:
        return self.accounts.get(auth_id)

    # --- admission ----------------------------------------------------------------------

    async def admit(self, account: AccountLimits, spec: CallSpec) -> AdmitResult:
        """Accept one request (one call per destination): store records, fire or queue them.

        Raises :class:`ShuttingDown` while shutting down, :class:`CallNotFound` when
        ``error_if_parent_not_found`` and the parent call is not live, :class:`QueueFull`
        when the queue is full.
        """
        if not self.accepting or self.admission.closed:
            raise ShuttingDown("server is shutting down; not accepting calls")
        parent: str | None = None
        if spec.parent_call_uuid and not spec.is_bulk:  # the make-a-call API honours it for single calls only
            found = self.calls.get(spec.parent_call_uuid)
            if found is not None and found.account.auth_id == account.auth_id and not found.finished.is_set():
                parent = spec.parent_call_uuid
            elif spec.error_if_parent_not_found:
                raise CallNotFound("parent_call_uuid not found")
        immediate = self.admission.check(account, len(spec.destinations))
        calls = [
            Call(
                call_uuid=str(uuid.uuid4()),
                request_uuid=str(uuid.uuid4()),
                account=account,
                spec=spec,
                to=dest,
                dialect=self.dialect_of(spec.dialect),
                parent_call_uuid=parent,
            )
            for dest in spec.destinations
        ]
        immediate = await self.admission.check_shared(account, calls, immediate)
        if not immediate and parent is None and self.request_queue is not None:
            return await self._queue_on_cluster(account, spec, calls)
        for call in calls:
            await _maybe_await(self.store.insert_call(self._initial_record(call)))
            await self._track(call)
        self.admission.admit(account, calls, immediate)
        return AdmitResult(
            request_uuids=tuple(c.request_uuid for c in calls),
            call_uuids=tuple(c.call_uuid for c in calls),
            queued=not immediate,
        )

    # --- the shared request queue (several workers) ---------------------------------------

    async def _queue_on_cluster(self, account: AccountLimits, spec: CallSpec, calls: Sequence[Call]) -> AdmitResult:
        """Calls that would wait here wait on the shared request queue instead: their records
        (status queued) owned by no node, their requests on the Redis stream."""
        from .spec_json import spec_to_json

        text = spec_to_json(spec)
        for call in calls:
            await _maybe_await(self.store.insert_call(self._initial_record(call)))
            self.store.hand_to_queue(call.call_uuid)
        flush = getattr(self.store, "flush", None)
        if callable(flush):
            flush()  # committed before any worker can read the requests
        for call in calls:
            await self.request_queue.put(
                {"account_id": account.auth_id, "call_uuid": call.call_uuid,
                 "request_uuid": call.request_uuid, "to": call.to, "spec": text},
                keys=(call.call_uuid, call.request_uuid),
            )
        return AdmitResult(request_uuids=tuple(c.request_uuid for c in calls),
                           call_uuids=tuple(c.call_uuid for c in calls), queued=True)

    def start_request_queue(self, queue: Any) -> None:
        """Take requests off the shared queue (``softswitch.cluster.RequestQueue``) whenever
        this worker has room, and queue there the calls it has no room for."""
        self.request_queue = queue
        self._queue_task = self.spawn(self._take_requests(), "request-queue")

    def _has_room(self) -> bool:
        a = self.admission
        return self.accepting and not a.closed and a.active_total + a.queued_total < a.max_concurrent

    async def _take_requests(self) -> None:
        queue = self.request_queue
        while self.accepting and not self.admission.closed:
            if not self._has_room():
                await asyncio.sleep(0.1)
                continue
            try:
                for entry_id, req in await queue.get(count=1, block_ms=500):
                    if not self._has_room():  # filled while the read waited
                        await queue.give_back(entry_id, req)
                        continue
                    await self._take_request(req)
                    await queue.ack(entry_id)  # after the take: a take never happens twice
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis or the store away for a moment
                log.warning("request queue: %s", exc)
                await asyncio.sleep(0.5)

    async def _take_request(self, req: Mapping[str, Any], *, hold: bool = False) -> Call | None:
        """Make a request from the shared queue a call of this worker (it owns the record
        from now on): started now when the limits allow (never with ``hold``), else queued
        here. None when another worker took it first, or it is over."""
        from .spec_json import spec_from_json

        call_uuid = str(req.get("call_uuid"))
        account = self.accounts.get(str(req.get("account_id")))
        taken = account is not None and await _maybe_await(self.store.take_queued(call_uuid))
        await self.request_queue.forget((call_uuid, str(req.get("request_uuid"))))
        if not taken or account is None:
            return None
        spec = spec_from_json(str(req["spec"]))
        call = Call(call_uuid=call_uuid, request_uuid=str(req["request_uuid"]), account=account, spec=spec,
                    to=str(req["to"]), dialect=self.dialect_of(spec.dialect))
        immediate = False
        if not hold:
            try:
                immediate = await self.admission.check_shared(account, [call], self.admission.check(account, 1))
            except QueueFull:
                immediate = False
        await self._track(call)
        self.admission.admit(account, [call], immediate)
        return call

    async def take_waiting(self, uid: str) -> Call | None:
        """The request on the shared queue named by ``uid`` (call or request uuid), taken
        here and queued (an API request about it then finds it here); None if none waits."""
        if self.request_queue is None:
            return None
        req = await self.request_queue.lookup(uid)
        return None if req is None else await self._take_request(req, hold=True)

    async def admit_fork(self, account: AccountLimits, specs: Sequence[CallSpec], group: ForkGroup) -> AdmitResult:
        """Admit a parallel fork (:mod:`softswitch.fork`): one call per spec (the first
        destination of each), all sharing one request uuid; the first to answer wins."""
        if not self.accepting or self.admission.closed:
            raise ShuttingDown("server is shutting down; not accepting calls")
        immediate = self.admission.check(account, len(specs))
        fork = Fork(self, group, str(uuid.uuid4()))
        for spec in specs:
            call = Call(call_uuid=str(uuid.uuid4()), request_uuid=fork.request_uuid, account=account, spec=spec,
                        to=spec.destinations[0], dialect=self.dialect_of(spec.dialect))
            call.fork = fork
            fork.members.append(call)
        immediate = await self.admission.check_shared(account, fork.members, immediate)
        for call in fork.members:
            await _maybe_await(self.store.insert_call(self._initial_record(call)))
            await self._track(call)
        self.admission.admit(account, fork.members, immediate)
        return AdmitResult(request_uuids=(fork.request_uuid,), call_uuids=tuple(c.call_uuid for c in fork.members),
                           queued=not immediate)

    async def _track(self, call: Call) -> None:
        """A new live call: in the table, and owned by this worker in the cluster (so that a
        control request reaching another worker is forwarded here)."""
        self.table.add(call)
        if self.cluster is not None:
            try:
                await self.cluster.own(call.call_uuid, call.request_uuid)
            except Exception as exc:  # Redis away: the call still runs here
                log.warning("call %s: could not record its ownership: %s", call.call_uuid, exc)

    def _untrack(self, call: Call) -> None:
        self.table.forget(call)
        if self.cluster is not None:
            uids = [call.call_uuid]
            if self.live_by_request(call.account.auth_id, call.request_uuid) is None:
                uids.append(call.request_uuid)  # a fork's other members still hold it
            self.spawn(self._disown(uids), f"disown-{call.call_uuid}")

    async def _disown(self, uids: Sequence[str]) -> None:
        try:
            await self.cluster.disown(*uids)
        except Exception as exc:  # the lease runs out by itself
            log.warning("could not release calls %s in the cluster: %s", ", ".join(uids), exc)

    # --- conference rooms among workers ---------------------------------------------------

    def _room_opened(self, room: Any) -> None:
        if self.cluster is not None:
            self.spawn(self._own_room(room.account, room.name), f"own-room-{room.uuid}")

    def _room_closed(self, room: Any) -> None:
        if self.cluster is not None:
            self.spawn(self._disown_room(room.account, room.name), f"disown-room-{room.uuid}")

    async def _own_room(self, account: str, name: str) -> None:
        try:
            owner = await self.cluster.own_room(account, name)
        except Exception as exc:  # Redis away: the room still runs here
            log.warning("conference %s: could not record its ownership: %s", name, exc)
            return
        if owner == self.cluster.worker_id and self.conferences.get(account, name) is None:
            await self._disown_room(account, name)  # the room ended before the claim was made
        elif owner != self.cluster.worker_id:
            # Media hand-off between workers is not built: this room mixes apart from the
            # owner's (the API reaches the owner's room).
            log.warning("conference %s of %s is held by worker %s; a room of the same name "
                        "runs apart on this worker", name, account, owner)

    async def _disown_room(self, account: str, name: str) -> None:
        if self.conferences.get(account, name) is not None:
            return  # made again meanwhile: still ours
        try:
            await self.cluster.disown_room(account, name)
        except Exception as exc:  # the lease runs out by itself
            log.warning("conference %s: could not release its ownership: %s", name, exc)

    async def room_names(self, account: str) -> list[str]:
        """The names of ``account``'s rooms: this process's, and with several workers every
        worker's."""
        names = {r.name for r in self.conferences.rooms(account)}
        if self.cluster is not None:
            try:
                names.update(await self.cluster.rooms(account))
            except Exception as exc:
                log.warning("listing the rooms of the other workers failed: %s", exc)
        return sorted(names)

    async def _take_shared(self, account: AccountLimits, calls: Sequence[Call]) -> float:
        """The account's limits across workers (:class:`softswitch.cluster.Slot`)."""
        from .cluster import Slot

        slot = Slot(f"account:{account.auth_id}", float(account.cps), int(account.max_concurrent))
        try:
            wait: float = await self.cluster.take([slot], [c.call_uuid for c in calls])
            # A queued call cancelled while its slot was being taken: give the slot back now
            # (its own end may have released before the take landed).
            over = [c.call_uuid for c in calls if c.finished.is_set()]
            if wait == 0.0 and over:
                await self.cluster.disown(*over)
        except Exception as exc:  # Redis away: this worker's own limits only
            log.warning("shared limits unavailable (%s); admitting on local limits", exc)
            return 0.0
        return wait

    def _initial_record(self, call: Call) -> dict[str, Any]:
        spec = call.spec
        return {
            "call_uuid": call.call_uuid,
            "request_uuid": call.request_uuid,
            "account_id": call.account.auth_id,
            "parent_call_uuid": call.parent_call_uuid,
            "direction": call.direction,
            "from_number": spec.from_,
            "to_number": call.to,
            "caller_name": spec.caller_name,
            "call_status": call.status,
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
            "answer_url": spec.answer.url,
            "dialect": self.dialect_of(spec.dialect).name,
            "params": plain_record(spec.record_params),
            "extra": {},
            "error": None,
        }

    def _start(self, gate: Gate, call: Call) -> None:
        call.task = asyncio.get_running_loop().create_task(self._run(gate, call), name=f"call-{call.call_uuid}")

    # --- one call -----------------------------------------------------------------------

    async def _run(self, gate: Gate, call: Call) -> None:
        try:
            await self._guarded(call, self._run_leg(call))
        finally:
            self.admission.release(gate)

    async def _guarded(self, call: Call, work: Awaitable[None]) -> None:
        """Run one call's ``work``; whatever happens, its record is closed."""
        try:
            await work
        except asyncio.CancelledError:
            if not call.finished.is_set():
                end = CallEnd(causes.SYSTEM_SHUTDOWN, HangupSource.SYSTEM, EndReason.SHUTDOWN,
                              answered=call.answered_at is not None)
                await asyncio.shield(self._finish(call, end))
            raise
        except Exception as exc:  # never lose a record to a bug in one call
            log.exception("call %s failed", call.call_uuid)
            if not call.finished.is_set():
                end = CallEnd(causes.NORMAL_TEMPORARY_FAILURE, HangupSource.ERROR,
                              answered=call.answered_at is not None)
                await self._finish(call, end, error=repr(exc))

    # --- inbound calls --------------------------------------------------------------------

    async def take_inbound(self, leg: Any, account: AccountLimits, spec: CallSpec) -> Call:
        """A caller's INVITE that an inbound route picked (``softswitch.inbound``): the call
        (direction inbound, uuid of the leg) is stored, rung, answered with the media engine's
        SDP, and once the caller's ACK confirms it runs the application at ``spec.answer``
        as an outbound call does; the hangup callback fires when it ends. Not held by the
        per-account CPS gate (the caller sets the pace). Raises :class:`ShuttingDown` (the
        INVITE then gets 503)."""
        if not self.accepting or self.admission.closed:
            leg.reject(503)
            raise ShuttingDown("server is shutting down; not accepting calls")
        call = Call(
            call_uuid=leg.uuid,
            request_uuid=str(uuid.uuid4()),
            account=account,
            spec=spec,
            to=spec.destinations[0],
            dialect=self.dialect_of(spec.dialect),
            direction="inbound",
        )
        try:
            await _maybe_await(self.store.insert_call(self._initial_record(call)))
        except Exception:
            leg.reject(500)
            raise
        await self._track(call)
        call.task = asyncio.get_running_loop().create_task(
            self._guarded(call, self._run_inbound(call, leg)), name=f"call-{call.call_uuid}"
        )
        return call

    async def _run_inbound(self, call: Call, leg: Any) -> None:
        call.dialed_at = time.time()
        call.sm.fire(CallTransition.DIAL)
        self.observe("call_dialed", call)
        call.leg = leg
        log_call_event(call, "incoming", sip_call_id=getattr(leg, "call_id", None))
        self.observe("leg_started", call, leg)
        self._notify(call, CallbackEvent.INITIATED)
        await self.update_record(call, extra={"sip_call_id": getattr(leg, "call_id", None)})
        leg.ring()
        try:
            if self.app_runner is not None and hasattr(leg, "prepare"):
                # The application runs while the call rings (a parked call, as FreeSWITCH
                # runs its dialplan): <PreAnswer> gets early media (183), and the first
                # other verb answers the call (LiveCallControl.answer).
                leg.prepare()
                call.app_task = asyncio.get_running_loop().create_task(
                    self.runner.run_app(call), name=f"app-{call.call_uuid}"
                )
            else:
                leg.answer()
        except ValueError as exc:  # no codec in common: the leg refused it with 488
            call.error = f"cannot answer the caller's offer: {exc}"
        async for ev in leg.events():
            if isinstance(ev, Answered):
                await self._on_answered(call)
            elif isinstance(ev, Terminated):
                await self._on_terminated(call, ev)
                return

    async def _run_leg(self, call: Call) -> None:
        spec = call.spec
        if self.dialer is None:
            await self._finish(call, CallEnd(causes.SERVICE_UNAVAILABLE, HangupSource.ERROR),
                               error="no SIP user agent")
            return
        if call.local_end is not None:  # cancelled between admission and dispatch
            await self._finish(call, call.local_end)
            return
        call.dialed_at = time.time()
        call.sm.fire(CallTransition.DIAL)
        self.observe("call_dialed", call)
        attempts = spec.attempts or (DialAttempt(spec.gateway, spec.timers.ring_timeout),)
        for i, attempt in enumerate(attempts):
            last = i == len(attempts) - 1
            if i and call.local_end is not None:  # hung up between two attempts
                await self._finish(call, call.local_end)
                return
            if await self._attempt(call, attempt, last=last):
                break
            self._release_gateway(call)
        if not call.finished.is_set():  # the stream ended without Terminated: close the record
            end = CallEnd(causes.NORMAL_UNSPECIFIED, HangupSource.UNKNOWN, answered=call.answered_at is not None)
            await self._finish(call, end)

    async def _attempt(self, call: Call, attempt: DialAttempt, *, last: bool) -> bool:
        """One INVITE. True when the call is over (or its events ended); False when it
        failed before any 18x and another attempt should follow (``last`` is False): a
        failed attempt sends no callback, as the legacy framework's gateway failover."""
        assert self.dialer is not None
        spec = call.spec
        if attempt.fail_cause is not None:
            if not last and not self._failover_stops(call, attempt.fail_cause):
                log.info("call %s: attempt failed at once (%s); next attempt", call.call_uuid, attempt.fail_cause)
                return False
            await self._finish(call, CallEnd(attempt.fail_cause, HangupSource.ERROR, EndReason.INVALID_DESTINATION),
                               error=f"attempt not placed: {attempt.fail_cause}")
            return True
        ring_timeout = attempt.ring_timeout if attempt.ring_timeout is not None else spec.timers.ring_timeout
        if attempt.gateway in self.gateway_limits and not await self._take_gateway(call, attempt.gateway, ring_timeout):
            cause = causes.SWITCH_CONGESTION
            if not last and not self._failover_stops(call, cause):
                log.info("call %s: gateway %s at its limit; next attempt", call.call_uuid, attempt.gateway)
                return False
            await self._finish(call, CallEnd(cause, HangupSource.ERROR),
                               error=f"gateway {attempt.gateway} at its limit")
            return True
        kwargs: dict[str, Any] = {
            "from_user": spec.from_,
            "caller_name": spec.caller_name,
            "headers": dict(spec.sip_headers) or None,
            "ring_timeout": attempt.ring_timeout if attempt.ring_timeout is not None else spec.timers.ring_timeout,
            "call_uuid": call.call_uuid,
        }
        if attempt.gateway is not None:
            kwargs["gateway"] = attempt.gateway
        if attempt.codecs:
            kwargs["codecs"] = attempt.codecs
        if attempt.username is not None:
            kwargs["credentials"] = Credentials(attempt.username, attempt.password or "")
        target = attempt.target or call.to
        try:
            if self.refuses_target(call.account.auth_id, target):
                raise LookupError(f"{target}: a user of another account")
            leg = await self.dialer.dial(target, **kwargs)
        except (ValueError, LookupError) as exc:
            if not last:
                log.info("call %s: attempt via %s refused (%s); next attempt", call.call_uuid, attempt.gateway, exc)
                return False
            named = getattr(exc, "cause", None)  # e.g. USER_NOT_REGISTERED
            if isinstance(named, str):
                cause = named
            elif self.refuses_target(call.account.auth_id, target):
                cause = causes.USER_NOT_REGISTERED
            elif isinstance(exc, UnsupportedCodec):
                cause = causes.INCOMPATIBLE_DESTINATION
            elif isinstance(exc, ValueError):
                cause = causes.INVALID_NUMBER_FORMAT
            else:
                cause = causes.NO_ROUTE_DESTINATION
            await self._finish(call, CallEnd(cause, HangupSource.ERROR, EndReason.INVALID_DESTINATION),
                               error=str(exc))
            return True
        first_leg = call.leg is None
        call.leg = leg
        log_call_event(call, "dialing", gateway=attempt.gateway, target=attempt.target,
                       sip_call_id=getattr(leg, "call_id", None))
        self.observe("leg_started", call, leg)
        if first_leg:
            self._notify(call, CallbackEvent.INITIATED)
        await self.update_record(call, extra={"sip_call_id": getattr(leg, "call_id", None)})
        if call.local_end is not None:  # hung up via the API while the INVITE was going out
            self._hangup_leg(call, call.local_end.cause)
        # The leg's events() replays every event from the start, so nothing emitted while
        # dial() was returning is lost.
        async for ev in leg.events():
            if isinstance(ev, Ringing | EarlyMedia):
                await self._on_progress(call, ev)
            elif isinstance(ev, Answered):
                await self._on_answered(call)
            elif isinstance(ev, Terminated):
                if (not last and call.ring_at is None and call.answered_at is None and call.local_end is None
                        and not self._failover_stops(call, ev.cause)):
                    log.info("call %s: attempt via %s failed (%s); next attempt",
                             call.call_uuid, attempt.gateway, ev.cause)
                    return False
                await self._on_terminated(call, ev)
                return True
        return True

    async def _take_gateway(self, call: Call, name: str, within: float) -> bool:
        """A slot of gateway ``name`` for ``call``: a token of its calls-per-second bucket,
        waited for at most ``within`` seconds, and one of its concurrent calls (none free:
        False at once). Across workers through the cluster, else in this process."""
        cps, most = self.gateway_limits[name]
        deadline = self.clock() + within
        while True:
            if self.cluster is not None:
                from .cluster import Slot

                try:
                    wait = await self.cluster.take([Slot(f"gateway:{name}", cps, most if most > 0 else -1)],
                                                   [call.call_uuid])
                except Exception as exc:  # Redis away: the trunk is not held back
                    log.warning("gateway %s: shared limits unavailable (%s)", name, exc)
                    wait = 0.0
            else:
                gate = self._gateway_gates.get(name)
                if gate is None:
                    gate = self._gateway_gates[name] = Gate(AccountLimits(name, "", cps, most), self.clock())
                if most > 0 and gate.active >= most:
                    wait = math.inf
                else:
                    wait = gate.take(self.clock())
                    if wait == 0.0:
                        gate.active += 1
            if wait == 0.0:
                self._gateway_held[call.call_uuid] = name
                return True
            if math.isinf(wait) or self.clock() + wait > deadline or call.local_end is not None:
                return False
            await asyncio.sleep(wait)  # until the bucket holds a token again

    def _release_gateway(self, call: Call) -> None:
        """The gateway slot ``call`` holds, if any, is free again (attempt over, call over)."""
        name = self._gateway_held.pop(call.call_uuid, None)
        if name is None:
            return
        if self.cluster is not None:
            self.spawn(self._release_shared(f"gateway:{name}", call.call_uuid), f"gateway-release-{call.call_uuid}")
        else:
            self._gateway_gates[name].active -= 1

    async def _release_shared(self, key: str, uid: str) -> None:
        try:
            await self.cluster.release(key, [uid])
        except Exception as exc:  # its lease runs out by itself
            log.warning("could not release %s of call %s: %s", key, uid, exc)

    @staticmethod
    def _failover_stops(call: Call, cause: str) -> bool:
        """A fork member's reject causes end its failover (``ForkGroup.reject_causes``)."""
        return call.fork is not None and call.fork.stops_failover(cause)

    def _timers(self, call: Call) -> CallTimers:
        if call.timers is None:
            def expire(cause: str, reason: EndReason) -> None:
                self.spawn(self.hangup(call, cause, HangupSource.SYSTEM, reason), f"timer-{call.call_uuid}")

            call.timers = CallTimers(call.spec.timers, self.scheduler, expire)
        return call.timers

    async def _on_progress(self, call: Call, ev: Ringing | EarlyMedia) -> None:
        if call.answered_at is not None:
            return
        now = time.time()
        first = call.ring_at is None
        if first:
            call.ring_at = now
        before = call.state
        if isinstance(ev, EarlyMedia):
            if call.early_at is None:
                call.early_at = now
            call.sm.fire(CallTransition.EARLY_MEDIA)
        else:
            call.sm.fire(CallTransition.RING)
        fields: dict[str, Any] = {}
        if call.state is not before:
            fields["call_status"] = call.status
            log_call_event(call, "early_media" if isinstance(ev, EarlyMedia) else "ringing",
                           sip_status=getattr(ev, "status", None))
        if first:
            fields["ring_time"] = record_time(now)
            self._timers(call).on_ring()
        if fields:
            await self.update_record(call, **fields)
        if first and not call.ring_notified:
            call.ring_notified = True
            self._notify(call, CallbackEvent.RING)
        self.observe("call_progress", call)
        digits = call.spec.digits
        if isinstance(ev, EarlyMedia) and digits is not None and digits.on_preanswer:
            self._send_digits(call)

    async def _on_answered(self, call: Call) -> None:
        if call.answered_at is not None:
            return
        now = time.time()
        call.answered_at = now
        call.sm.fire(CallTransition.ANSWER)
        log_call_event(call, "answered")
        self.observe("call_answered", call)
        await self.update_record(call, call_status=call.status, answer_time=record_time(now))
        self._keep_dialog(call)
        self._notify(call, CallbackEvent.ANSWERED)
        self._timers(call).on_answer()
        if call.local_end is not None:
            self._hangup_leg(call, call.local_end.cause)
            return
        if call.fork is not None and not call.fork.claim(call):  # another member won: BYE
            self.spawn(call.fork.run_answered(call), f"fork-{call.call_uuid}")
            return
        digits = call.spec.digits
        if digits is not None and (not digits.on_preanswer or not call.digits_sent):
            self._send_digits(call)
        if call.spec.amd is not None and call.leg is not None:
            self.runner.start_machine_detection(call)
        if call.app_task is not None:
            return  # an inbound call's application started while it rang
        app = self.runner.run_app(call) if call.fork is None else call.fork.run_answered(call)
        call.app_task = asyncio.get_running_loop().create_task(app, name=f"app-{call.call_uuid}")

    def _send_digits(self, call: Call) -> None:
        plan = call.spec.digits
        if plan is None or call.digits_sent or call.leg is None:
            return
        call.digits_sent = True

        async def send() -> None:
            try:
                await call.leg.send_digits(list(plan.steps))
            except Exception:
                log.exception("call %s: send_digits failed", call.call_uuid)

        asyncio.get_running_loop().create_task(send(), name=f"digits-{call.call_uuid}")

    async def _on_terminated(self, call: Call, ev: Terminated) -> None:
        answered = call.answered_at is not None
        if call.local_end is not None:
            local = call.local_end
            cause = local.cause
            if local.reason is EndReason.API and not answered:  # API hangup of a ringing call is a cancel
                cause = causes.ORIGINATOR_CANCEL
            end = CallEnd(cause, local.source, local.reason, ev.sip_status, answered)
        else:
            reason = EndReason.RING_TIMEOUT if ev.hangup_source == "timeout" and not answered else None
            source = _LEG_SOURCES.get(ev.hangup_source, HangupSource.UNKNOWN)
            end = CallEnd(ev.cause, source, reason, ev.sip_status, answered)
        # The UA's reason text ("BYE", "cancelled", a SIP reason phrase) is kept with the UA
        # details; the record's ``error`` only says what went wrong when something did.
        extra = dict(ev.extra or {})
        if ev.reason:
            extra.setdefault("reason", ev.reason)
        error = ev.reason or None if ev.hangup_source == "error" else None
        await self._finish(call, end, error=error, ua_extra=extra)

    async def _finish(self, call: Call, end: CallEnd, *, error: str | None = None,
                      ua_extra: dict[str, Any] | None = None) -> None:
        """Close the call exactly once: state, record, hangup callback, bookkeeping."""
        if call.finished.is_set():
            return
        call.finished.set()
        if call.timers is not None:
            call.timers.cancel()
        if call.app_task is not None and not call.app_task.done():
            call.app_task.cancel()
        self.live_ops.end(call)
        if call.error:
            error = call.error
        now = time.time()
        call.ended_at = now
        if end.answered and call.answered_at is not None:
            span = max(0.0, now - call.answered_at)
            # One rule for both: whole seconds from answer, a started second counting (the
            # hosted API's records show the two equal; README, hangup callback).
            call.duration = call.bill_duration = int(math.ceil(span - 1e-6)) if span > 0 else 0
        call.sm.end(end)
        log_call_event(call, "hangup", cause=end.cause, sip_status=end.sip_status, hangup_source=end.source.value,
                       reason=end.reason.value if end.reason is not None else None, duration=call.duration,
                       error=error[:200] if error else None)
        extra: dict[str, Any] = {"hangup_cause": end.cause}
        if ua_extra:
            extra["ua"] = {k: v for k, v in ua_extra.items() if isinstance(v, str | int | float | bool | None)}
        fields = {
            "call_status": call.status,
            "end_time": record_time(now),
            "call_duration": call.duration,
            "bill_duration": call.bill_duration,
            **call.dialect.end_fields(end),
            "sip_status": end.sip_status,
            "extra": extra,
        }
        if error:
            fields["error"] = error[:1000]
        try:
            await self.update_record(call, **fields)
        except Exception:
            log.exception("call %s: could not store the final record", call.call_uuid)
        self._drop_dialog(call)
        self._release_gateway(call)
        self._notify(call, CallbackEvent.HANGUP)
        self.table.forget(call)
        self.observe("call_ended", call, end)
        self._untrack(call)
        # The application may still be unwinding from its cancellation: release after it.
        app = call.app_task
        if app is None or app.done():
            call.release()
        else:
            app.add_done_callback(lambda _task: call.release())

    def _keep_dialog(self, call: Call) -> None:
        """Store the answered leg's SIP dialog, and each change of it, so that the next
        process can BYE the callee if this one dies with the call up (``Server.start``)."""
        leg = call.leg
        dialog_state = getattr(leg, "dialog_state", None)
        save = getattr(self.store, "save_dialog", None)
        if dialog_state is None or save is None:
            return  # a dialer without SIP dialogs (a test double), or a store without them
        state = dialog_state()
        if state is None:
            return
        call_uuid = call.call_uuid

        def changed(new_state: dict[str, Any]) -> None:
            if call_uuid in self._stored_dialogs:
                try:
                    save(call_uuid, new_state)
                except Exception:
                    log.exception("call %s: could not store its SIP dialog", call_uuid)

        try:
            save(call_uuid, state)
        except Exception:
            log.exception("call %s: could not store its SIP dialog", call_uuid)
            return
        self._stored_dialogs.add(call_uuid)
        leg.on_dialog_change = changed  # type: ignore[union-attr]

    def _drop_dialog(self, call: Call) -> None:
        if call.call_uuid not in self._stored_dialogs:
            return
        self._stored_dialogs.discard(call.call_uuid)
        if call.leg is not None:
            call.leg.on_dialog_change = None
        try:
            self.store.delete_dialog(call.call_uuid)
        except Exception:
            log.exception("call %s: could not forget its SIP dialog", call.call_uuid)

    def _notify(self, call: Call, event: CallbackEvent) -> None:
        """Post ``event`` to its webhook, if the request subscribed to it."""
        webhook = call.spec.notify.get(event)
        if webhook is not None:
            params = call.dialect.callback_params(call, event)
            self.post_callback(call, event.value, webhook.url, webhook.method, params)

    def post_interrupted_hangup(self, record: dict[str, Any]) -> None:
        """The hangup callback of a call that a crash of the previous process ended
        (:meth:`CallStore.mark_interrupted` closed its record), as the dialect builds it."""
        account = self.account(record.get("account_id") or "")
        if account is None:
            return
        dialect = self.dialect_of(record.get("dialect"))
        built = dialect.interrupted_hangup(record)
        if built is None:
            return
        fields, url, method, params = built
        self.store.update_call(record["call_uuid"], **fields)
        self.outbox.post(record["call_uuid"], "hangup", url, str(method), params,
                         auth_token=account.auth_token, signature=dialect.signature)

    async def update_record(self, call: Call, **fields: Any) -> None:
        # The store merges ``extra`` (a JSON merge patch), so no read is needed here.
        await _maybe_await(self.store.update_call(call.call_uuid, **fields))

    def post_callback(self, call: Call, event: str, url: str, method: str, params: dict[str, str]) -> None:
        """Queue a signed notification for ``call``; never raises (a dead outbox never
        blocks or loses the call)."""
        try:
            self.outbox.post(call.call_uuid, event, url, str(method), params,
                             auth_token=call.account.auth_token, signature=call.dialect.signature)
        except Exception:
            log.exception("call %s: could not queue the %s callback", call.call_uuid, event)

    def spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        """A background task kept referenced until done (the loop holds tasks weakly)."""
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # --- the application and live control (in .runner and .liveops) ------------------------

    async def run_xml(self, call: Call, xml: str) -> None:
        """The :attr:`app_runner` that executes the XML application (see :mod:`.runner`)."""
        await self.runner.run_xml(call, xml)

    def bridged_leg(self, call: Call) -> Any | None:
        return self.live_ops.bridged_leg(call)

    def schedule_hangup(self, call: Call, seconds: float, cause: str = causes.ALLOTTED_TIMEOUT) -> str:
        """Hang the call up ``seconds`` from now (cause ALLOTTED_TIMEOUT); returns an id."""
        if call.finished.is_set():
            raise CallNotFound(f"call {call.call_uuid} has ended")
        return self._timers(call).schedule(seconds, cause)

    def cancel_scheduled_hangup(self, sched_id: str) -> bool:
        """Cancel a hangup :meth:`schedule_hangup` armed; False if unknown or already done."""
        return any(c.timers is not None and c.timers.unschedule(sched_id) for c in list(self.calls.values()))

    def recording_url_base(self, call: Call) -> str:
        """Public URL prefix of the call's account's recordings (served by the API server,
        under the prefix of the dialect that placed the call)."""
        return call.dialect.recording_url_base(self.public_url, call.account.auth_id)

    def dialect_of(self, name: str | None) -> Dialect:
        """The served dialect called ``name`` (the default one for an unknown or empty name:
        records from before a dialect existed)."""
        return self.dialects.get(name or "", self.dialect)

    def recording_url(self, call: Call, name: str) -> str:
        """The URL handed out for the call's recording ``name`` (signed when configured)."""
        url = f"{self.recording_url_base(call)}/{name}"
        signer = self.recording_url_signer
        return signer(url, call.account.auth_id) if signer is not None else url

    def recording_dir(self, account_id: str) -> Path:
        """Where the recordings of one account live: each account has its own directory, so
        a file's owner is where it is (the HTTP layer serves it to that account only)."""
        safe = account_id if _SAFE_DIR_RE.fullmatch(account_id) else hashlib.sha256(account_id.encode()).hexdigest()[:32]
        return self.data_dir / "recordings" / safe

    def recording_path(self, name: str, account_id: str) -> Path:
        """Local file of account ``account_id``'s recording ``<recording_id>.<format>``."""
        return self.recording_dir(account_id) / name

    # --- hangups ------------------------------------------------------------------------

    def _hangup_leg(self, call: Call, cause: str) -> None:
        leg = call.leg

        async def bye() -> None:
            try:
                await leg.hangup(cause=cause)
            except Exception:
                log.exception("call %s: hangup failed", call.call_uuid)

        asyncio.get_running_loop().create_task(bye(), name=f"hangup-{call.call_uuid}")

    async def hangup(self, call: Call | RemoteCall, cause: str = causes.NORMAL_CLEARING,
                     source: HangupSource = HangupSource.API, reason: EndReason | None = EndReason.API) -> None:
        """End a call from this side: a queued call is dropped, a dialed one gets CANCEL or BYE;
        another worker's call (:class:`RemoteCall`) is ended by its owner."""
        if isinstance(call, RemoteCall):
            await self._hangup_remote(call)
            return
        if call.finished.is_set():
            return
        if call.local_end is None:
            call.local_end = CallEnd(cause, source, reason)
        if call.is_queued and self.admission.withdraw(call):
            c = causes.ORIGINATOR_CANCEL if reason is EndReason.API else cause
            await self._finish(call, CallEnd(c, source, reason))
            return
        if call.leg is not None:
            self._hangup_leg(call, cause)
        # else: the INVITE is being sent; _run_leg sees local_end once dial() returns

    # --- queries for the API --------------------------------------------------------------

    @property
    def calls(self) -> dict[str, Call]:
        """Calls not over yet, by call uuid."""
        return self.table.calls

    @property
    def by_request(self) -> dict[str, Call]:
        return self.table.by_request

    def live_call(self, account_id: str, call_uuid: str) -> Call | None:
        return self.table.live_call(account_id, call_uuid)

    def live_by_request(self, account_id: str, request_uuid: str) -> Call | None:
        return self.table.live_by_request(account_id, request_uuid)

    def live_calls(self, account_id: str, *, status: str = "live") -> list[Call]:
        """Calls of one account that are dialed and not ended (``live``) or still ``queued``."""
        return self.table.live_calls(account_id, status=status)

    async def cluster_live_calls(self, account_id: str, *, status: str = "live") -> list[Call | RemoteCall]:
        """:meth:`live_calls` of every worker: this worker's calls, then (with a shared store
        and a cluster) the other workers' from the shared records (live = not ended) whose
        owner still holds them in Redis, and the requests waiting on the shared queue."""
        out: list[Call | RemoteCall] = list(self.live_calls(account_id, status=status))
        cluster = self.cluster
        if cluster is None or not getattr(self.store, "SHARED", False):
            return out
        try:
            rows = [r for r in await _maybe_await(self.store.live_calls(account_id))
                    if r["call_uuid"] not in self.calls
                    and (r.get("call_status") == "queued") == (status == "queued")]
            owners = await cluster.owners([r["call_uuid"] for r in rows]) if rows else []
        except Exception as exc:  # store or Redis away: this worker's calls only
            log.warning("live calls of other workers unavailable: %s", exc)
            return out
        unowned = [r["call_uuid"] for r, o in zip(rows, owners, strict=True) if o is None]
        try:
            waits = await self.request_queue.waiting(unowned) if unowned and self.request_queue else []
        except Exception:
            waits = []
        waiting = {u for u, w in zip(unowned, waits, strict=False) if w}
        for rec, owner in zip(rows, owners, strict=True):
            if owner == cluster.worker_id:
                continue
            if owner is None and rec["call_uuid"] not in waiting:
                continue  # ended meanwhile, or its worker died (its takeover ends it)
            out.append(RemoteCall(
                call_uuid=rec["call_uuid"], request_uuid=rec.get("request_uuid") or "",
                account_id=account_id, dialect=self.dialect_of(rec.get("dialect")),
                direction=rec.get("direction") or "outbound", from_=rec.get("from_number") or "",
                to=rec.get("to_number") or "", record_status=rec.get("call_status") or "", owner=owner,
            ))
        return out

    async def _hangup_remote(self, call: RemoteCall) -> None:
        if self.cluster is None:
            return
        if call.owner is not None:
            try:
                await self.cluster.forward(call.owner, {"op": "hangup", "account_id": call.account_id,
                                                        "call_uuid": call.call_uuid})
            except Exception as exc:  # ControlTimeout or Redis away: its owner's lease decides
                log.warning("call %s: hangup on worker %s failed: %s", call.call_uuid, call.owner, exc)
        else:  # waiting on the shared request queue: taken here, then cancelled as queued
            try:
                taken = await self.take_waiting(call.call_uuid)
            except Exception as exc:
                log.warning("call %s: could not take it off the request queue: %s", call.call_uuid, exc)
                return
            if taken is not None:
                await self.hangup(taken)

    async def run_control(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """A control operation another worker sent about a call this worker holds."""
        if payload.get("op") == "hangup":
            found = self.live_call(str(payload.get("account_id")), str(payload.get("call_uuid")))
            if found is not None:
                await self.hangup(found)
            return {"done": found is not None}
        raise ValueError(f"unknown control operation {payload.get('op')!r}")

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
        if self._queue_task is not None:
            self._queue_task.cancel()
        shutdown = CallEnd(causes.SYSTEM_SHUTDOWN, HangupSource.SYSTEM, EndReason.SHUTDOWN)
        for call in self.admission.drain():
            call.local_end = shutdown
            await self._finish(call, shutdown)
        live = [c for c in self.calls.values() if not c.finished.is_set()]
        if mode == "hangup":
            for call in live:
                await self.hangup(call, causes.SYSTEM_SHUTDOWN, HangupSource.SYSTEM, EndReason.SHUTDOWN)
        tasks = [c.task for c in live if c.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=drain_timeout_s if mode == "drain" else 10.0)
            if pending and mode == "drain":
                for call in live:
                    await self.hangup(call, causes.SYSTEM_SHUTDOWN, HangupSource.SYSTEM, EndReason.SHUTDOWN)
                _, pending = await asyncio.wait(pending, timeout=10.0)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5.0)
        await self.admission.close()
        for call in list(self.calls.values()):
            if call.timers is not None:
                call.timers.cancel()
