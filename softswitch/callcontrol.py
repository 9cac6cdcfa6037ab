"""The XML executor's :class:`~softswitch.xml.executor.CallControl` over a live SIP call.

:class:`LiveCallControl` wraps one answered :class:`sip.aio.ua.OutboundCall` (the A leg)
and carries out each Plivo verb on its RTP stream (:class:`media.engine.MediaStream`):

* ``play``: queue a :mod:`media.play` source; with ``interrupt_on_digit`` the media engine
  ends it on the first received DTMF digit (RFC 4733 event or in-band tone), and that digit
  is handed back and consumed.
* digits: every :class:`sip.events.DigitReceived` of the A leg lands in a small buffer.
  Input operations (interruptible prompts, ``collect_digits``) read it; any other media
  operation drops what was pressed before and during it, so a key pressed during a plain
  ``<Speak>`` never leaks into the next ``<GetDigits>``.
* ``wait``: the stream sends silence by itself when nothing plays; ``silence="true"`` ends
  the wait after ``minSilence`` ms with the caller's frame energy below
  :data:`SILENCE_DBFS`; ``beep="true"`` ends it when :class:`media.amd.BeepDetector` reports
  a voicemail beep that has ended.
* ``record``: a receive tap feeds :class:`media.record.Recorder` (WAV or MP3) until
  ``maxLength``, ``timeout`` seconds of silence, a ``finishOnKey`` key or the hangup. With
  ``playBeep`` a 500 ms 1 kHz tone (-13 dBm0) is played first.
* ``dial``: the B legs (``<Number>``/``<User>``) are dialled at once through the same
  :class:`~sip.aio.ua.UserAgent`; the first to answer (and confirm, with ``confirmKey``)
  wins and the others are cancelled; the A leg hears ringback (or ``dialMusic``, or the B
  leg's early media with ``dialMusic="real"``) meanwhile. The two streams are bridged with
  :meth:`media.engine.MediaEngine.bridge` until either side hangs up, ``timeLimit``, or
  ``hangupOnStar``. When the B leg ends the A leg goes on with the XML (Plivo); when the
  A leg ends the B leg is hung up.

Hang-up of the A leg: operations waiting on media notice it at once and raise
:class:`~softswitch.xml.executor.CallHungUp` (``record`` and ``dial`` return their result
instead, so the executor can still report it to the ``action`` URL, as Plivo does).

:func:`run_xml_app` builds the :class:`~softswitch.xml.executor.XmlApplication` for a
control and runs it: the orchestration's ``app_runner`` hook is a thin wrapper around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import math
import os
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from sip import causes
from sip.events import (
    Answered,
    CallEvent,
    DigitReceived,
    EarlyMedia,
    Ringing,
    Terminated,
)
from softswitch.xml.executor import (
    CallHungUp,
    DialResult,
    FetchError,
    MediaCache,
    PlayModuleMedia,
    RecordingResult,
    XmlApplication,
)
from softswitch.xml.parser import CAUSE_FETCH_FAILED, XmlAppError
from softswitch.xml.verbs import Dial, Number, User

if TYPE_CHECKING:
    from media.engine import MediaStream
    from sip.aio.ua import OutboundCall, UserAgent

log = logging.getLogger("softswitch.callcontrol")

__all__ = [
    "CallHooks",
    "DIAL_STATUS_BUSY",
    "DIAL_STATUS_COMPLETED",
    "DIAL_STATUS_FAILED",
    "DIAL_STATUS_NO_ANSWER",
    "DIAL_STATUS_TIMEOUT",
    "RECORD_BEEP_FREQ_HZ",
    "RECORD_BEEP_LEVEL_DBM0",
    "RECORD_BEEP_MS",
    "SILENCE_DBFS",
    "DialDefaults",
    "Fetcher",
    "LiveCallControl",
    "LiveMedia",
    "Notifier",
    "dial_status",
    "frame_dbfs",
    "run_xml_app",
]

#: ``(url, method, params) -> XML text``; raises :class:`FetchError` when it gives up.
Fetcher = Callable[[str, str, Mapping[str, str]], Awaitable[str]]
#: ``(url, method, params)``: fire-and-forget callback.
Notifier = Callable[[str, str, Mapping[str, str]], None]
#: ``(cause, reason)``: ends the A leg through the orchestration (so its record is right).
HangupHook = Callable[[str, "str | None"], Awaitable[None]]

class CallHooks(Protocol):
    """What the executor asks of the call it runs on, implemented by the orchestration
    (:class:`softswitch.runner.CallAppHooks`): the parameters of every request, the signed
    fetch of documents, fire-and-forget notifications, and ending the call."""

    def base_params(self) -> dict[str, str]: ...

    async def fetch(self, url: str, method: str, params: Mapping[str, str]) -> str: ...

    def notify(self, url: str, method: str, params: Mapping[str, str]) -> None: ...

    async def hangup(self, cause: str, reason: str | None) -> None: ...


#: A received 20 ms frame whose RMS level is below this (dBFS) counts as silence, for
#: ``<Wait silence="true">`` and ``<Record timeout=...>``. Speech sits around -30..-10 dBFS;
#: a quiet line's noise and comfort noise (RFC 3389, -70 dBov here) well below.
SILENCE_DBFS = -45.0

#: ``<Record playBeep="true">``: the beep played before recording starts.
RECORD_BEEP_FREQ_HZ = 1000.0
RECORD_BEEP_MS = 500
RECORD_BEEP_LEVEL_DBM0 = -13.0

#: US ringback (ITU-T E.180 / ANSI T1.401: 440 + 480 Hz, 2 s on, 4 s off) for the A leg
#: while the B legs ring and ``dialMusic`` is not given.
RINGBACK_FREQS_HZ = (440.0, 480.0)
RINGBACK_CADENCE_MS = (2000, 4000)
RINGBACK_LEVEL_DBM0 = -19.0

#: Plivo ``DialStatus`` values.
DIAL_STATUS_COMPLETED = "completed"
DIAL_STATUS_BUSY = "busy"
DIAL_STATUS_FAILED = "failed"
DIAL_STATUS_TIMEOUT = "timeout"
DIAL_STATUS_NO_ANSWER = "no-answer"

#: How long to wait for a BYE/CANCEL we sent to end a leg before giving up on its cause.
_LEG_END_GRACE_S = 5.0
#: ``<Wait silence>`` counts silence only after this many loud frames (60 ms) were heard,
#: as FreeSWITCH's wait_for_silence ``listen_hits``: the wait is for a greeting to *end*.
_LISTEN_FRAMES = 3
_FULL_SCALE = 32768.0


def frame_dbfs(frame: np.ndarray) -> float:
    """RMS level of an int16 frame in dBFS (a full-scale square wave is 0 dBFS)."""
    x = np.asarray(frame, dtype=np.float64)
    if x.size == 0:
        return -math.inf
    power = float(np.mean(x * x))
    if power <= 0.0:
        return -math.inf
    return 10.0 * math.log10(power / (_FULL_SCALE * _FULL_SCALE))


def dial_status(cause: str, *, dial_timed_out: bool) -> str:
    """Plivo ``DialStatus`` for a B leg that ended without being answered.

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


class LiveMedia(PlayModuleMedia):
    """:class:`~softswitch.xml.executor.MediaFactory` over :mod:`media.play` whose sources
    play once (``loop=1``; ``loop=0`` means *forever* in :mod:`media.play`).

    :meth:`file` decodes (blocking); the executor calls it through ``asyncio.to_thread``."""

    @staticmethod
    def _play_mod() -> Any:
        return importlib.import_module("media.play")

    def pcm(self, samples: Any) -> Any:
        return self._play_mod().ArraySource(samples, loop=1)

    def file(self, path: str) -> Any:
        return self._play_mod().FileSource(path, loop=1)


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
    #: Most B legs one ``<Dial>`` rings at once (Plivo: 10 numbers per Dial).
    max_targets: int = 10
    #: Ringback to the A leg while B legs ring and no ``dialMusic`` is given.
    ringback: bool = True
    #: Prefix of custom SIP headers from ``sipHeaders`` (Plivo sends ``X-PH-<name>``).
    sip_header_prefix: str = "X-PH-"
    #: Called with each B leg as soon as it is dialled (records, CDRs, live-call lists).
    on_b_leg: Callable[[OutboundCall, str], None] | None = None
    #: Makes the B legs' call UUIDs.
    new_uuid: Callable[[], str] = field(default=lambda: str(uuid.uuid4()))


class _Leg:
    """One B leg of a ``<Dial>`` while it rings."""

    def __init__(self, target: Number | User) -> None:
        self.target = target
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


class _SilenceWatch:
    """Measures how long the caller has been quiet, from a receive tap.

    The engine only taps once media has started to arrive, so time with no frames at all
    counts as silence too: ``silent_for`` is measured from the last loud frame (or from the
    start) on the loop clock."""

    def __init__(self, loop: asyncio.AbstractEventLoop, threshold_dbfs: float) -> None:
        self._loop = loop
        self._threshold = (_FULL_SCALE * 10 ** (threshold_dbfs / 20)) ** 2  # mean power
        self.last_voice = loop.time()
        self.voiced_frames = 0
        self.voice = asyncio.Event()

    def feed(self, frame: np.ndarray) -> None:
        x = np.asarray(frame, dtype=np.float32)
        if x.size and float(np.mean(x * x)) >= self._threshold:
            self.last_voice = self._loop.time()
            self.voiced_frames += 1
            self.voice.set()

    @property
    def heard_voice(self) -> bool:
        """Sound for at least :data:`_LISTEN_FRAMES` frames so far."""
        return self.voiced_frames >= _LISTEN_FRAMES

    def silent_for(self) -> float:
        return self._loop.time() - self.last_voice


class LiveCallControl:
    """Implements :class:`softswitch.xml.executor.CallControl` on a real, answered call.

    ``base_params`` gives the parameters posted with every request (CallUUID, From, To...);
    ``fetcher``/``notifier`` go through the webhook outbox in production (signed, retried)
    and may be plain HTTP calls in tests; ``data_dir`` is where recordings and the media
    cache live; ``hangup`` (optional) ends the A leg through the orchestration instead of
    sending the BYE directly, so the call record shows why it ended.
    """

    def __init__(
        self,
        call: OutboundCall,
        ua: UserAgent,
        *,
        base_params: Callable[[], dict[str, str]] | None = None,
        fetcher: Fetcher | None = None,
        notifier: Notifier | None = None,
        data_dir: str | os.PathLike[str],
        dial_defaults: DialDefaults | None = None,
        hangup: HangupHook | None = None,
        hooks: CallHooks | None = None,
        media_cache: MediaCache | None = None,
        silence_dbfs: float = SILENCE_DBFS,
    ) -> None:
        if call.media is None:
            raise ValueError("the call has no media stream")
        self._call = call
        self._ua = ua
        if hooks is not None:
            base_params, fetcher, notifier = hooks.base_params, hooks.fetch, hooks.notify
            hangup = hangup or hooks.hangup
        if base_params is None or fetcher is None or notifier is None:
            raise TypeError("LiveCallControl needs hooks, or base_params, fetcher and notifier")
        self._base_params = base_params
        self._fetcher = fetcher
        self._notifier = notifier
        self.data_dir = Path(data_dir)
        self.dial_defaults = dial_defaults or DialDefaults()
        self._hangup_hook = hangup
        #: resolves ``dialMusic``/``confirmSound`` URLs; :func:`run_xml_app` shares the app's.
        self.media_cache = media_cache
        self.silence_dbfs = silence_dbfs
        self.call_uuid: str = call.uuid
        self._loop = asyncio.get_running_loop()
        self._ended: asyncio.Future[None] = self._loop.create_future()
        self._hangup_sent = False
        self._digits: deque[str] = deque(maxlen=128)
        self._digit_event = asyncio.Event()
        self._digit_hooks: list[Callable[[str], None]] = []
        if call.terminated is not None:
            self._ended.set_result(None)
        call.add_listener(self._on_event)

    # -- the call ----------------------------------------------------------------------------

    @property
    def call(self) -> OutboundCall:
        return self._call

    @property
    def media(self) -> MediaStream:
        media = self._call.media
        assert media is not None  # checked in __init__
        return media

    @property
    def answered(self) -> bool:
        return self._call.answered_at is not None or bool(self._call.session.answered)

    @property
    def hung_up(self) -> bool:
        return self._call.terminated is not None or self._hangup_sent

    def base_params(self) -> dict[str, str]:
        return dict(self._base_params())

    def _on_event(self, event: CallEvent) -> None:
        if isinstance(event, DigitReceived):
            self._digits.append(event.digit)
            self._digit_event.set()
            for hook in list(self._digit_hooks):
                try:
                    hook(event.digit)
                except Exception:
                    log.exception("call %s: digit hook failed", self.call_uuid)
        elif isinstance(event, Terminated):
            if not self._ended.done():
                self._ended.set_result(None)
            self._digit_event.set()

    def _check_live(self) -> None:
        if self.hung_up or self.media.closed:
            raise CallHungUp

    async def _until_ended(self, *aws: Awaitable[Any], timeout: float | None = None) -> bool:
        """Wait for the first of ``aws`` or the end of the call (or ``timeout``).

        Returns True if the call ended. Futures passed in are left running (the caller
        owns them); tasks made here from coroutines are cancelled."""
        futs: set[asyncio.Future[Any]] = {self._ended}
        made: list[asyncio.Future[Any]] = []  # tasks made here from coroutines: ours to cancel
        for a in aws:
            fut: asyncio.Future[Any] = asyncio.ensure_future(a)
            futs.add(fut)
            if fut is not a:
                made.append(fut)
        try:
            await asyncio.wait(futs, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in made:
                task.cancel()
        return self._ended.done()

    # -- HTTP ----------------------------------------------------------------------------------

    async def fetch_xml(self, url: str, method: str, params: Mapping[str, str]) -> str:
        try:
            return await self._fetcher(url, method, params)
        except FetchError:
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a plain HTTP fetcher's errors mean the same thing
            raise FetchError(f"{type(exc).__name__}: {exc}") from exc

    def notify(self, url: str, method: str, params: Mapping[str, str]) -> None:
        try:
            self._notifier(url, method, dict(params))
        except Exception:
            log.exception("call %s: callback to %s failed", self.call_uuid, url)

    # -- digits --------------------------------------------------------------------------------

    def _flush_digits(self) -> None:
        self._digits.clear()
        self._digit_event.clear()

    async def _next_digit(self, timeout: float) -> str | None:
        """The next buffered or arriving digit within ``timeout`` s; None on timeout.
        Raises CallHungUp when the call ends first."""
        deadline = self._loop.time() + max(0.0, timeout)
        while True:
            if self._digits:
                return self._digits.popleft()
            self._check_live()
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                return None
            self._digit_event.clear()
            waiter: asyncio.Future[Any] = asyncio.ensure_future(self._digit_event.wait())
            try:
                await asyncio.wait(
                    {waiter, self._ended}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                waiter.cancel()

    async def collect_digits(
        self,
        *,
        num_digits: int,
        timeout_s: float,
        digit_timeout_s: float,
        finish_on_key: str,
        valid_digits: str,
        first_digit: str | None = None,
    ) -> tuple[str, str]:
        """Plivo GetDigits: ``timeout_s`` for the first key, ``digit_timeout_s`` between
        keys; a key of ``finish_on_key`` ends input (not included); a key outside
        ``valid_digits`` ends it as ``invalid``; ``num_digits`` keys end it."""
        got = ""
        pending = first_digit
        while True:
            if pending is None:
                pending = await self._next_digit(digit_timeout_s if got else timeout_s)
                if pending is None:
                    return got, "timeout"
            key, pending = pending, None
            if finish_on_key and key in finish_on_key:
                return got, "finish_key"
            got += key
            if key not in valid_digits:
                return got, "invalid"
            if num_digits > 0 and len(got) >= num_digits:
                return got, "num_digits"

    async def send_digits(self, digits: str) -> None:
        """DTMF on the A leg (RFC 4733 events when negotiated, else in-band tones)."""
        self._check_live()
        fut = self.media.send_digits(digits)
        if await self._until_ended(fut):
            raise CallHungUp
        if fut.cancelled():
            raise CallHungUp
        fut.result()

    # -- playing ---------------------------------------------------------------------------------

    async def _play(self, source: Any, *, interrupt: bool) -> str:
        """Play ``source`` to the end (or interruption); returns the engine's outcome."""
        try:
            self._check_live()
        except CallHungUp:
            _close(source)
            raise
        fut = self.media.play(source, interrupt_on_dtmf=interrupt)
        try:
            if await self._until_ended(fut):
                raise CallHungUp
        except asyncio.CancelledError:
            # The executor's task was cancelled (the call ended): stop what plays now.
            if not self.media.closed and not fut.done():
                self.media.stop_play()
            raise
        if fut.cancelled():
            raise CallHungUp
        return fut.result()

    async def play(self, source: Any, *, interrupt_on_digit: bool = False) -> str | None:
        if not interrupt_on_digit:
            self._flush_digits()
            await self._play(source, interrupt=False)
            self._flush_digits()
            return None
        if self._digits:  # a key pressed between two prompts of one GetDigits
            _close(source)
            return self._digits.popleft()
        outcome = await self._play(source, interrupt=True)
        if outcome != "dtmf":
            return None
        # The engine ends the playback, then reports the digit synchronously (on_dtmf ->
        # DigitReceived), so it is buffered by the time this coroutine resumes.
        if self._digits:
            return self._digits.popleft()
        digits = self._call.digits
        return digits[-1].digit if digits else None

    # -- waiting ---------------------------------------------------------------------------------

    async def wait(
        self,
        seconds: float,
        *,
        until_silence: bool = False,
        min_silence_ms: int = 2000,
        until_beep: bool = False,
    ) -> None:
        """``<Wait>``: ``seconds`` at most; ``until_silence`` ends after ``min_silence_ms``
        of caller silence; ``until_beep`` ends when a voicemail beep has ended."""
        self._check_live()
        self._flush_digits()
        loop = self._loop
        deadline = loop.time() + max(0.0, float(seconds))
        media = self.media
        if until_silence:
            watch = _SilenceWatch(loop, self.silence_dbfs)
            media.add_tap(watch.feed)
            try:
                need = max(0, min_silence_ms) / 1000.0
                while True:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    if watch.heard_voice:
                        quiet_left = need - watch.silent_for()
                        if quiet_left <= 0:
                            break
                    else:
                        quiet_left = remaining
                    watch.voice.clear()
                    # Wake on voice (the silence restarts) or when enough quiet may have passed.
                    if await self._until_ended(
                        watch.voice.wait(), timeout=min(remaining, quiet_left)
                    ):
                        raise CallHungUp
            finally:
                media.remove_tap(watch.feed)
        elif until_beep and (detector := _beep_detector()) is not None:
            beep_heard = loop.create_future()

            def feed(frame: np.ndarray) -> None:
                if beep_heard.done():
                    return
                beep = detector.feed(frame)
                if beep is not None:
                    beep_heard.set_result(beep)

            media.add_tap(feed)
            try:
                if await self._until_ended(beep_heard, timeout=deadline - loop.time()):
                    raise CallHungUp
                if beep_heard.done():
                    log.info("call %s: beep heard, Wait ends", self.call_uuid)
            finally:
                media.remove_tap(feed)
                if not beep_heard.done():
                    beep_heard.cancel()
        else:
            if await self._until_ended(asyncio.sleep(max(0.0, deadline - loop.time()))):
                raise CallHungUp
        self._flush_digits()

    # -- recording -------------------------------------------------------------------------------

    async def record(
        self,
        path: str,
        *,
        max_length_s: int,
        timeout_s: int,
        finish_on_key: str,
        play_beep: bool,
        file_format: str,
    ) -> RecordingResult:
        """``<Record>``: the caller's audio to ``path`` until ``max_length_s``,
        ``timeout_s`` seconds of silence (0: no silence limit), a key of ``finish_on_key``,
        or the hangup (then the result is still returned: the file is complete)."""
        from media.record import Recorder, RecorderError  # noqa: PLC0415 - optional module

        self._check_live()
        self._flush_digits()
        if play_beep:
            await self._play(
                self._tone((RECORD_BEEP_FREQ_HZ,), RECORD_BEEP_MS, RECORD_BEEP_LEVEL_DBM0),
                interrupt=False,
            )
            self._flush_digits()
        try:
            recorder = Recorder(path, file_format)
        except (RecorderError, ValueError) as exc:
            raise XmlAppError(
                str(exc), element="Record", cause=causes.NORMAL_TEMPORARY_FAILURE
            ) from None
        loop = self._loop
        watch = _SilenceWatch(loop, self.silence_dbfs)
        failed: list[BaseException] = []

        def tap(frame: np.ndarray) -> None:
            if recorder.closed or failed:
                return
            try:
                recorder.write(frame)
            except Exception as exc:  # disk full: stop recording, keep the call
                failed.append(exc)
                return
            watch.feed(frame)

        media = self.media
        start_wall = time.time()
        start = loop.time()
        deadline = start + max(1, max_length_s)
        finished_by = ""
        media.add_tap(tap)
        try:
            while True:
                now = loop.time()
                remaining = deadline - now
                if remaining <= 0 or failed:
                    break
                if timeout_s > 0 and watch.silent_for() >= timeout_s:
                    break
                wake = remaining
                if timeout_s > 0:
                    wake = min(wake, timeout_s - watch.silent_for())
                key = await self._next_digit_or_end(max(0.02, wake))
                if key is _ENDED:
                    break
                if isinstance(key, str) and finish_on_key and key in finish_on_key:
                    finished_by = key
                    break
        finally:
            media.remove_tap(tap)
            end_wall = time.time()
            recorder.close()
        if failed:
            log.warning("call %s: recording to %s failed: %s", self.call_uuid, path, failed[0])
        self._flush_digits()
        duration_ms = round(recorder.samples * 1000 / recorder.rate)
        return RecordingResult(
            duration_ms=duration_ms,
            start_ms=int(start_wall * 1000),
            end_ms=int(end_wall * 1000),
            digits=finished_by,
        )

    async def _next_digit_or_end(self, timeout: float) -> object:
        """A digit, None on timeout, or :data:`_ENDED` when the call ended."""
        try:
            return await self._next_digit(timeout)
        except CallHungUp:
            return _ENDED

    # -- hanging up ------------------------------------------------------------------------------

    async def hangup(self, cause: str, reason: str | None = None) -> None:
        """End the A leg (BYE; RFC 3261 §15) with ``cause``."""
        if self.hung_up:
            return
        self._hangup_sent = True
        log.info("call %s: hangup %s (%s)", self.call_uuid, cause, reason or "")
        if self._hangup_hook is not None:
            await self._hangup_hook(cause, reason)
        else:
            await self._call.hangup(cause=cause)

    # -- media helpers ---------------------------------------------------------------------------

    @staticmethod
    def _tone(freqs: Sequence[float], duration_ms: int | None, level: float, **kw: Any) -> Any:
        from media.play import ToneSource  # noqa: PLC0415

        return ToneSource(tuple(freqs), duration_ms, level, **kw)

    async def _source_for_url(self, url: str, *, loop: int) -> Any | None:
        """A playable source for a ``dialMusic``/``confirmSound`` URL, or None (logged)."""
        if self.media_cache is None:
            log.warning("call %s: no media cache to fetch %s", self.call_uuid, url)
            return None
        try:
            path = await self.media_cache.path_for(url)
            from media.play import FileSource  # noqa: PLC0415

            # FileSource decodes the file when made: off the loop, or the media clock stalls.
            return await asyncio.to_thread(FileSource, path, loop=loop)
        except Exception as exc:
            log.warning("call %s: cannot play %s: %s", self.call_uuid, url, exc)
            return None

    # -- dialing ----------------------------------------------------------------------------------

    async def dial(self, dial: Dial) -> DialResult:
        """``<Dial>``: ring every target at once, bridge the first that answers, return
        when the A leg is free again (B hung up, ``timeLimit``, ``hangupOnStar``) or when
        the A leg hung up (the B leg is then hung up too)."""
        self._check_live()
        self._flush_digits()
        try:
            return await _DialRun(self, dial).run()
        finally:
            self._flush_digits()  # keys pressed while bridged were the B party's business


_ENDED = object()


def _close(source: Any) -> None:
    closer = getattr(source, "close", None)
    if callable(closer):
        with contextlib.suppress(Exception):
            closer()


def _beep_detector() -> Any | None:
    try:
        amd = importlib.import_module("media.amd")
        return amd.BeepDetector()
    except Exception:  # the AMD module is optional
        log.warning("media.amd.BeepDetector unavailable: <Wait beep> waits its full length")
        return None


class _DialRun:
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

    # -- callbacks (Plivo Dial callbackUrl) --

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
            leg = _Leg(target)
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
            )
        except ValueError as exc:
            log.warning("call %s: Dial target %r: %s", c.call_uuid, leg.to, exc)
            leg.cause = causes.INVALID_NUMBER_FORMAT
            return
        except LookupError as exc:
            log.warning("call %s: Dial target %r: %s", c.call_uuid, leg.to, exc)
            leg.cause = causes.NO_ROUTE_DESTINATION
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
        return DialResult(DIAL_STATUS_COMPLETED, cause, leg.uuid, True)

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


async def run_xml_app(
    control: LiveCallControl,
    *,
    answer_url: str,
    answer_method: str = "POST",
    fallback_url: str | None = None,
    fallback_method: str = "POST",
    data_dir: str | os.PathLike[str],
    recording_url_base: str,
    xml: str | bytes | None = None,
    **options: Any,
) -> XmlApplication:
    """Run the call's Plivo XML application on ``control`` and return it when done.

    Without ``xml`` the answer document is fetched from ``answer_url`` (``fallback_url`` if
    that fails); with ``xml`` (the orchestration already fetched it) it runs at once and
    ``answer_url`` is only its source URL. An application error is not raised: the call is
    hung up with its cause and the error is in the returned app's ``.error``. ``options``
    go to :class:`~softswitch.xml.executor.XmlApplication` (``media_dirs``, ``legacy``,
    ``max_redirects``...).
    """
    options.setdefault("media", LiveMedia())
    app = XmlApplication(
        control,
        data_dir=data_dir,
        recording_url_base=recording_url_base,
        fallback_url=fallback_url,
        fallback_method=fallback_method,
        **options,
    )
    if control.media_cache is None:
        control.media_cache = app.media_cache
    try:
        if xml is None:
            await app.start(answer_url, answer_method)
        else:
            await app.run(xml, answer_url)
    except XmlAppError as exc:
        app.error = app.error or exc
    except CallHungUp:
        pass
    if app.error is not None and app.error.cause == CAUSE_FETCH_FAILED:
        log.warning(
            "call %s: XML application could not be fetched: %s", control.call_uuid, app.error
        )
    return app
