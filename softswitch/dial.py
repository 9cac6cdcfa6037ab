"""``<Dial>``: ring B legs, bridge the first that answers, tear down; the DialStatus of a B
leg that did not answer.

One :class:`DialRun` per ``<Dial>`` verb, run by
:meth:`softswitch.callcontrol.LiveCallControl.dial` on the A leg's control: every target
rings at once (``callerId``, ``sipHeaders``, ``timeout``, ``confirmSound``/``confirmKey``),
the A leg hears ringback or ``dialMusic`` (or the B leg's early media), the winner's media
is bridged to the A leg with DTMF relayed both ways (``digitsMatch``, ``hangupOnStar``)
until either side hangs up or ``timeLimit`` runs out; the losers are cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sip import causes
from sip.auth import Credentials
from sip.registrar import Binding
from softswitch.app.control import DialResult
from softswitch.app.verbs import Dial, Number, User
from softswitch.events import (
    Answered,
    CallEvent,
    DigitReceived,
    EarlyMedia,
    Ringing,
    Terminated,
)

if TYPE_CHECKING:
    from media.engine import MediaStream
    from softswitch.ua import OutboundCall

    from .callcontrol import LiveCallControl

log = logging.getLogger("softswitch.callcontrol")

__all__ = [
    "DIAL_STATUS_BUSY",
    "DIAL_STATUS_COMPLETED",
    "DIAL_STATUS_FAILED",
    "DIAL_STATUS_NO_ANSWER",
    "DIAL_STATUS_TIMEOUT",
    "DialDefaults",
    "DialRun",
    "dial_status",
]

#: US ringback (ITU-T E.180 / ANSI T1.401: 440 + 480 Hz, 2 s on, 4 s off) for the A leg
#: while the B legs ring and ``dialMusic`` is not given.
RINGBACK_FREQS_HZ = (440.0, 480.0)
RINGBACK_CADENCE_MS = (2000, 4000)
RINGBACK_LEVEL_DBM0 = -19.0

#: ``DialStatus`` values.
DIAL_STATUS_COMPLETED = "completed"
DIAL_STATUS_BUSY = "busy"
DIAL_STATUS_FAILED = "failed"
DIAL_STATUS_TIMEOUT = "timeout"
DIAL_STATUS_NO_ANSWER = "no-answer"


#: How long to wait for a BYE/CANCEL we sent to end a leg before giving up on its cause.
_LEG_END_GRACE_S = 5.0


def dial_status(cause: str, *, dial_timed_out: bool) -> str:
    """``DialStatus`` for a B leg that ended without being answered.

    ``busy`` for a busy callee (486/600: USER_BUSY); ``no-answer`` when our ``<Dial
    timeout>`` ran out while it rang (NO_ANSWER, ORIGINATOR_CANCEL at that deadline);
    ``timeout`` when the far end or the network timed out (408/480/504: NO_USER_RESPONSE,
    RECOVERY_ON_TIMER_EXPIRE); ``failed`` for everything else (rejected, unroutable...).
    """
    if dial_timed_out or cause == causes.NO_ANSWER:
        return DIAL_STATUS_NO_ANSWER
    if cause == causes.USER_BUSY:
        return DIAL_STATUS_BUSY
    if cause in (causes.NO_USER_RESPONSE, causes.RECOVERY_ON_TIMER_EXPIRE):
        return DIAL_STATUS_TIMEOUT
    return DIAL_STATUS_FAILED


@dataclass
class DialDefaults:
    """How :meth:`LiveCallControl.dial` places B legs when the ``<Dial>`` does not say."""

    #: From user for the B legs without ``callerId`` (default: the A leg's ``From`` param).
    caller_id: str | None = None
    #: Display name without ``callerName``.
    caller_name: str | None = None
    #: Trunk for ``<Number>`` targets without ``gateways`` (None: the UA's prefix routing).
    gateway: str | None = None
    #: SIP transport for B legs (None: from the URI, else UDP).
    transport: str | None = None
    #: Most B legs one ``<Dial>`` rings at once (the XML vocabulary: 10 numbers per Dial).
    max_targets: int = 10
    #: Ringback to the A leg while B legs ring and no ``dialMusic`` is given.
    ringback: bool = True
    #: Prefix of custom SIP headers from ``sipHeaders`` (the XML vocabulary sends ``X-PH-<name>``).
    sip_header_prefix: str = "X-PH-"
    #: Called with each B leg as soon as it is dialled (records, CDRs, live-call lists).
    on_b_leg: Callable[[OutboundCall, str], None] | None = None
    #: Makes the B legs' call UUIDs.
    new_uuid: Callable[[], str] = field(default=lambda: str(uuid.uuid4()))
    #: ``refuses(target)``: a target this call may not reach (a registrar user of another
    #: account); it fails USER_NOT_REGISTERED without an INVITE.
    refuses: Callable[[str], bool] | None = None


class _Leg:
    """One B leg of a ``<Dial>`` while it rings."""

    def __init__(self, target: Number | User, binding: Binding | None = None) -> None:
        self.target = target
        #: One registered phone of a registrar user who has several (each rings as a leg).
        self.binding = binding
        self.call: OutboundCall | None = None
        self.uuid = ""
        self.to = target.number if isinstance(target, Number) else target.uri
        self.rang = False
        self.answered = False
        self.confirming = False  # answered, waiting for the confirmKey
        self.early = False
        self.cause: str | None = None
        self.timed_out = False
        self.task: asyncio.Task[None] | None = None
        self.digits: deque[str] = deque(maxlen=64)
        self.digit_event = asyncio.Event()
        self.answered_at: float | None = None

    def _on_event(self, event: CallEvent) -> None:
        if isinstance(event, DigitReceived):
            self.digits.append(event.digit)
            self.digit_event.set()


def _close(source: Any) -> None:
    closer = getattr(source, "close", None)
    if callable(closer):
        with contextlib.suppress(Exception):
            closer()


class DialRun:
    """One ``<Dial>`` on a :class:`LiveCallControl`: ring, pick, bridge, tear down."""

    def __init__(self, control: LiveCallControl, dial: Dial) -> None:
        self.c = control
        self.dial = dial
        self.loop = control._loop
        self.legs: list[_Leg] = []
        self.winner: asyncio.Future[_Leg] = self.loop.create_future()
        self.ring_deadline = self.loop.time() + max(1, dial.timeout)
        self.a_digits = ""
        self.b_digits = ""
        self.star = asyncio.Event()
        self.music_on = False
        self.early_bridged: _Leg | None = None
        #: (A stream, B stream) while bridged.
        self.bridged: tuple[MediaStream, MediaStream] | None = None
        defaults = control.dial_defaults
        params = control.base_params()
        self.caller_id = dial.caller_id or defaults.caller_id or params.get("From") or "softswitch"
        self.caller_name = dial.caller_name or defaults.caller_name

    # -- callbacks (Dial callbackUrl) --

    def _callback(self, action: str, leg: _Leg, **extra: str) -> None:
        """Notify the Dial's ``callbackUrl``: ``DialAction`` is ``answer`` (a B leg
        answered), ``connected`` (it is bridged), ``digits`` (``digitsMatch``) or
        ``hangup`` (the bridged B leg ended), with the B leg's UUID, To and From."""
        url = self.dial.callback_url
        if not url:
            return
        params = self.c.base_params()
        params.update(
            DialAction=action,
            DialALegUUID=self.c.call_uuid,
            DialBLegUUID=leg.uuid,
            DialBLegTo=leg.to,
            DialBLegFrom=self.caller_id,
        )
        params.update(extra)
        self.c.notify(url, self.dial.callback_method, params)

    # -- the run --

    async def run(self) -> DialResult:
        c, dial = self.c, self.dial
        targets = dial.numbers[: max(1, c.dial_defaults.max_targets)]
        if len(dial.numbers) > len(targets):
            log.warning(
                "call %s: Dial has %d targets, ringing the first %d",
                c.call_uuid,
                len(dial.numbers),
                len(targets),
            )
        for target in targets:
            for binding in self._phones(target):
                leg = _Leg(target, binding)
                self.legs.append(leg)
                leg.task = self.loop.create_task(self._ring(leg), name=f"dial-{c.call_uuid}")
        self._start_music()
        c._digit_hooks.append(self._on_a_digit)
        try:
            winner = await self._wait_winner()
            if winner is None:
                return self._unanswered_result()
            return await self._bridge(winner)
        finally:
            c._digit_hooks.remove(self._on_a_digit)
            self._stop_music()
            await self._end_losers(None)

    def _phones(self, target: Number | User) -> list[Binding | None]:
        """A ``<User>`` naming a registrar user with several registered phones rings each of
        them (a leg per binding, the first to answer wins); anything else is one leg."""
        ua = self.c._ua
        local_user = getattr(ua, "local_user", None)
        user_bindings = getattr(ua, "user_bindings", None)
        if not isinstance(target, User) or not callable(local_user) or not callable(user_bindings):
            return [None]
        try:
            user = local_user(target.uri)
        except ValueError:
            return [None]
        found = list(user_bindings(user)) if user else []
        limit = max(1, self.c.dial_defaults.max_targets)
        return found[:limit] if len(found) > 1 else [None]

    async def _wait_winner(self) -> _Leg | None:
        tasks = [leg.task for leg in self.legs if leg.task is not None]
        pending: set[asyncio.Future[Any]] = set(tasks)
        while not self.winner.done() and pending and not self.c._ended.done():
            timeout: float | None = self.ring_deadline - self.loop.time()
            if any(leg.confirming for leg in self.legs):
                timeout = None  # answered: the confirmTimeout bounds it now, not the ring time
            elif timeout is not None and timeout <= 0:
                break
            watched: set[asyncio.Future[Any]] = pending | {self.winner, self.c._ended}
            _, still = await asyncio.wait(
                watched, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            pending = {t for t in still if t in tasks}
        if self.winner.done():
            return self.winner.result()
        # Nobody answered in time (or the A leg went away): cancel whatever still rings.
        timed_out = not self.c._ended.done() and self.loop.time() >= self.ring_deadline
        for leg in self.legs:
            if leg.cause is None and not leg.answered:
                leg.timed_out = timed_out
        await self._end_losers(None, cause=causes.NO_ANSWER if timed_out else None)
        return None

    def _unanswered_result(self) -> DialResult:
        rang = any(leg.rang for leg in self.legs)
        if self.c._ended.done():
            return DialResult(DIAL_STATUS_FAILED, causes.ORIGINATOR_CANCEL, "", rang)
        statuses = [
            dial_status(leg.cause or causes.NORMAL_UNSPECIFIED, dial_timed_out=leg.timed_out)
            for leg in self.legs
        ]
        # One answer for the Dial: the most telling outcome over all legs.
        for status in (DIAL_STATUS_BUSY, DIAL_STATUS_NO_ANSWER, DIAL_STATUS_TIMEOUT):
            if status in statuses:
                leg = self.legs[statuses.index(status)]
                return DialResult(status, leg.cause or causes.NO_ANSWER, "", rang)
        cause = next((leg.cause for leg in self.legs if leg.cause), causes.NORMAL_TEMPORARY_FAILURE)
        return DialResult(DIAL_STATUS_FAILED, cause, "", rang)

    # -- ringing a B leg --

    def _headers(self, target: Number | User) -> dict[str, str] | None:
        prefix = self.c.dial_defaults.sip_header_prefix
        pairs = list(self.dial.sip_headers)
        if isinstance(target, User):
            pairs += list(target.sip_headers)
        return {f"{prefix}{k}": v for k, v in pairs} or None

    async def _ring(self, leg: _Leg) -> None:
        """Dial one target (through each of its gateways in turn) until it answers or fails."""
        target = leg.target
        defaults = self.c.dial_defaults
        gateways: Sequence[str | None]
        if isinstance(target, Number) and target.gateways:
            gateways = target.gateways
        else:
            gateways = (defaults.gateway if isinstance(target, Number) else None,)
        for gateway in gateways:
            if self.winner.done() or self.c._ended.done():
                leg.cause = leg.cause or causes.ORIGINATOR_CANCEL
                return
            remaining = self.ring_deadline - self.loop.time()
            if remaining <= 0:
                leg.timed_out = True
                leg.cause = leg.cause or causes.NO_ANSWER
                return
            leg.cause = None
            await self._ring_once(leg, gateway, remaining)
            if leg.answered or leg.cause in (
                causes.USER_BUSY,
                causes.NO_ANSWER,
                causes.ORIGINATOR_CANCEL,
                causes.CALL_REJECTED,
            ):
                return
            # RFC 3261 §16.7-style serial failover: try the next gateway for this number.

    async def _ring_once(self, leg: _Leg, gateway: str | None, ring_timeout: float) -> None:
        c = self.c
        target = leg.target
        defaults = c.dial_defaults
        leg.uuid = defaults.new_uuid()
        dialled = target.number if isinstance(target, Number) else target.uri
        if defaults.refuses is not None and defaults.refuses(dialled):
            log.info("call %s: Dial target %r belongs to another account", c.call_uuid, leg.to)
            leg.cause = causes.USER_NOT_REGISTERED
            return
        extra: dict[str, Any] = {"binding": leg.binding} if leg.binding is not None else {}
        try:
            call = await c._ua.dial(
                target.number if isinstance(target, Number) else target.uri,
                from_user=self.caller_id,
                caller_name=self.caller_name,
                headers=self._headers(target),
                ring_timeout=ring_timeout,
                transport=defaults.transport,
                gateway=gateway,
                call_uuid=leg.uuid,
                credentials=(
                    Credentials(target.username, target.password or "")
                    if isinstance(target, User) and target.username
                    else None
                ),
                **extra,
            )
        except ValueError as exc:
            log.warning("call %s: Dial target %r: %s", c.call_uuid, leg.to, exc)
            leg.cause = causes.INVALID_NUMBER_FORMAT
            return
        except LookupError as exc:
            log.warning("call %s: Dial target %r: %s", c.call_uuid, leg.to, exc)
            cause = getattr(exc, "cause", None)  # e.g. USER_NOT_REGISTERED
            leg.cause = cause if isinstance(cause, str) else causes.NO_ROUTE_DESTINATION
            return
        except Exception as exc:
            log.warning("call %s: Dial target %r failed: %s", c.call_uuid, leg.to, exc)
            leg.cause = causes.NORMAL_TEMPORARY_FAILURE
            return
        leg.call = call
        call.add_listener(leg._on_event)
        if defaults.on_b_leg is not None:
            try:
                defaults.on_b_leg(call, leg.to)
            except Exception:
                log.exception("call %s: on_b_leg hook failed", c.call_uuid)
        digits_sent = False
        async for event in call.events():
            if isinstance(event, Ringing):
                leg.rang = True
            elif isinstance(event, EarlyMedia):
                leg.rang = leg.early = True
                self._on_early_media(leg)
                if target.send_digits and target.send_on_preanswer and not digits_sent:
                    digits_sent = True
                    self._spawn_digits(call, target.send_digits)
            elif isinstance(event, Answered):
                leg.answered = True
                leg.answered_at = time.time()
                if self.winner.done() or c._ended.done():
                    await call.hangup(cause=causes.NORMAL_CLEARING)  # lost the race
                    continue
                self._callback("answer", leg, DialBLegStatus="answer")
                if target.send_digits and not digits_sent:
                    digits_sent = True
                    self._spawn_digits(call, target.send_digits)
                if self.dial.confirm_key:
                    leg.confirming = True
                    try:
                        confirmed = await self._confirmed(leg)
                    finally:
                        leg.confirming = False
                    if not confirmed:
                        if call.terminated is None:
                            await call.hangup(cause=causes.CALL_REJECTED)
                        continue
                if not self.winner.done() and not c._ended.done():
                    self.winner.set_result(leg)
                    return  # the bridge takes over the leg from here
                await call.hangup(cause=causes.NORMAL_CLEARING)
            elif isinstance(event, Terminated):
                leg.cause = event.cause
                if event.hangup_source == "timeout" and not leg.answered:
                    leg.timed_out = True
                return

    def _spawn_digits(self, call: OutboundCall, digits: str) -> None:
        async def send() -> None:
            try:
                await call.send_digits(digits)
            except Exception as exc:
                log.warning("call %s: sendDigits on B leg failed: %s", self.c.call_uuid, exc)

        self.loop.create_task(send(), name=f"dial-digits-{self.c.call_uuid}")

    async def _confirmed(self, leg: _Leg) -> bool:
        """``confirmSound``/``confirmKey``: the answering party must press the key."""
        call = leg.call
        assert call is not None and call.media is not None
        key = self.dial.confirm_key or ""
        deadline = self.loop.time() + max(1, self.dial.confirm_timeout)
        leg.digits.clear()
        if self.dial.confirm_sound:
            source = await self.c._source_for_url(self.dial.confirm_sound, loop=1)
            if source is not None and not call.media.closed:
                call.media.play(source, interrupt_on_dtmf=True)
        while self.loop.time() < deadline and call.terminated is None:
            if self.winner.done() or self.c._ended.done():
                return False
            while leg.digits:
                if leg.digits.popleft() == key:
                    if not call.media.closed:
                        call.media.stop_play()
                    return True
            leg.digit_event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    leg.digit_event.wait(), min(0.5, deadline - self.loop.time())
                )
        return False

    # -- what the A leg hears while B legs ring --

    def _start_music(self) -> None:
        music = self.dial.dial_music
        if music and music.lower() == "real":
            return  # the B leg's early media, bridged when it comes (_on_early_media)
        self.music_on = True
        if music:
            self.loop.create_task(self._play_music_url(music))
        elif self.c.dial_defaults.ringback:
            self.c.media.play(
                self.c._tone(
                    RINGBACK_FREQS_HZ, None, RINGBACK_LEVEL_DBM0, cadence=RINGBACK_CADENCE_MS
                )
            )

    async def _play_music_url(self, url: str) -> None:
        source = await self.c._source_for_url(url, loop=0)
        if source is None:
            return
        if not self.music_on or self.c.media.closed:
            _close(source)
            return
        self.c.media.play(source)

    def _stop_music(self) -> None:
        if self.music_on:
            self.music_on = False
            if not self.c.media.closed:
                self.c.media.stop_play()

    def _on_early_media(self, leg: _Leg) -> None:
        """``dialMusic="real"``: the caller hears the first B leg's early media."""
        music = self.dial.dial_music
        if not music or music.lower() != "real" or self.early_bridged is not None:
            return
        a, b = self.c.media, leg.call.media if leg.call else None
        if b is None or a.closed or b.closed or self.winner.done():
            return
        self.early_bridged = leg
        self.c._ua.media.bridge(a, b)  # type: ignore[union-attr]

    # -- the bridge --

    def _on_a_digit(self, digit: str) -> None:
        self.a_digits = (self.a_digits + digit)[-32:]
        if digit == "*" and self.dial.hangup_on_star:
            self.star.set()
        else:
            self._relay_digit(digit, self.bridged[1] if self.bridged else None)
        self._match_digits(self.a_digits, self.dial.digits_match, "DialDigitsMatch")

    def _on_b_digit(self, digit: str) -> None:
        self.b_digits = (self.b_digits + digit)[-32:]
        self._relay_digit(digit, self.bridged[0] if self.bridged else None)
        self._match_digits(self.b_digits, self.dial.digits_match_b_leg, "DialDigitsMatchBLeg")

    def _relay_digit(self, digit: str, to: MediaStream | None) -> None:
        """The bridge relays audio frames; a digit that came as an RFC 4733 event (or was
        taken out of the audio by the detector) is sent on to the other side here."""
        if to is None or to.closed:
            return
        try:
            fut = to.send_digits(digit)
        except Exception as exc:
            log.warning("call %s: relaying digit %r failed: %s", self.c.call_uuid, digit, exc)
            return
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())

    def _match_digits(self, pressed: str, patterns: Sequence[str], param: str) -> None:
        leg = self.winner.result() if self.winner.done() else None
        if leg is None or not patterns:
            return
        for pattern in patterns:
            if pattern and pressed.endswith(pattern):
                self._callback("digits", leg, **{param: pattern})
                if param == "DialDigitsMatch":
                    self.a_digits = ""
                else:
                    self.b_digits = ""
                return

    async def _bridge(self, leg: _Leg) -> DialResult:
        c = self.c
        call = leg.call
        assert call is not None and call.media is not None
        self._stop_music()
        await self._end_losers(leg)
        engine = c._ua.media
        assert engine is not None
        a, b = c.media, call.media
        if c._ended.done() or a.closed:
            await self._hangup_b(call, causes.NORMAL_CLEARING)
            return self._answered_result(leg, call)
        if b.closed or call.terminated is not None:
            return self._answered_result(leg, call)
        a.stop_play()
        engine.bridge(a, b)
        self.bridged = (a, b)
        log.info("call %s: bridged to %s (%s)", c.call_uuid, leg.to, leg.uuid)
        self._callback("connected", leg, DialBLegStatus="answer")
        b_ended: asyncio.Future[Any] = asyncio.ensure_future(call.wait_terminated())
        call.add_listener(
            lambda ev: self._on_b_digit(ev.digit) if isinstance(ev, DigitReceived) else None
        )
        star: asyncio.Future[Any] = asyncio.ensure_future(self.star.wait())
        try:
            await asyncio.wait(
                {b_ended, star, c._ended},
                timeout=max(1, self.dial.time_limit),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            star.cancel()
            self.bridged = None
            engine.unbridge(a)
        if not b_ended.done():
            if c._ended.done():
                cause = causes.NORMAL_CLEARING
            elif self.star.is_set():
                cause = causes.NORMAL_CLEARING
                log.info("call %s: hangupOnStar, B leg released", c.call_uuid)
            else:
                cause = causes.ALLOTTED_TIMEOUT
                log.info("call %s: Dial timeLimit reached", c.call_uuid)
            await self._hangup_b(call, cause)
        else:
            b_ended.result()
        b_ended.cancel()
        return self._answered_result(leg, call)

    async def _hangup_b(self, call: OutboundCall, cause: str) -> None:
        if call.terminated is None:
            await call.hangup(cause=cause)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(call.wait_terminated(), _LEG_END_GRACE_S)

    def _answered_result(self, leg: _Leg, call: OutboundCall) -> DialResult:
        end = call.terminated
        cause = end.cause if end is not None else causes.NORMAL_CLEARING
        duration = call.duration
        self._callback(
            "hangup",
            leg,
            Event="DialHangup",
            DialBLegStatus="hangup",
            DialBLegHangupCause=cause,
            DialBLegDuration=str(math.ceil(duration) if duration else 0),
            DialBLegBillDuration=str(math.ceil(duration) if duration else 0),
        )
        return DialResult(
            DIAL_STATUS_COMPLETED, cause, leg.uuid, True, math.ceil(duration) if duration else 0
        )

    async def _end_losers(self, keep: _Leg | None, *, cause: str | None = None) -> None:
        """Cancel (or BYE) every B leg but ``keep`` and wait for them to end (bounded)."""
        waits = []
        for leg in self.legs:
            if leg is keep:
                continue
            call = leg.call
            if call is not None and call.terminated is None:
                if self.early_bridged is leg:
                    self.c._ua.media.unbridge(call.media)  # type: ignore[union-attr,arg-type]
                    self.early_bridged = None
                how = cause or (
                    causes.NORMAL_CLEARING if call.answered_at else causes.ORIGINATOR_CANCEL
                )
                with contextlib.suppress(Exception):
                    await call.hangup(cause=how)
            if leg.task is not None and not leg.task.done():
                waits.append(leg.task)
        if waits:
            done, pending = await asyncio.wait(waits, timeout=_LEG_END_GRACE_S)
            for task in pending:
                task.cancel()
            for leg in self.legs:
                if leg is not keep and leg.cause is None:
                    leg.cause = cause or causes.ORIGINATOR_CANCEL
