"""The XML executor's :class:`~softswitch.app.control.CallControl` over a live SIP call.

:class:`LiveCallControl` wraps one answered :class:`softswitch.ua.OutboundCall` (the A leg)
and carries out each verb of the XML vocabulary on its RTP stream
(:class:`media.engine.MediaStream`):

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
* ``dial``: :class:`softswitch.dial.DialRun` (its own module): the B legs
  (``<Number>``/``<User>``) are dialled at once through the same user agent; the first to
  answer (and confirm, with ``confirmKey``) wins and the others are cancelled; the A leg
  hears ringback (or ``dialMusic``, or the B leg's early media with ``dialMusic="real"``)
  meanwhile. The two streams are bridged until either side hangs up, ``timeLimit``, or
  ``hangupOnStar``. When the B leg ends the A leg goes on with the XML; when the A leg ends
  the B leg is hung up.

Hang-up of the A leg: operations waiting on media notice it at once and raise
:class:`~softswitch.app.control.CallHungUp` (``record`` and ``dial`` return their result
instead, so the executor can still report it to the ``action`` URL).

What the control needs from the call it runs on (request parameters, the signed fetch, the
notifications, ending the call) comes through :class:`CallHooks`, which the orchestration
implements (:class:`softswitch.runner.CallAppHooks`); callables are still accepted.

About 630 lines, over the ~600 of the style guide because it is one class:
:class:`LiveCallControl`'s methods are the verbs' media operations, and they share its digit
buffer and hang-up watch (``_until_ended``, ``_next_digit``), so splitting the verbs apart would
only pass the control's private state between modules. What does not touch that state lives
beside it: the caller's audio levels, the silence watch, the beep detector, the record beep and
:class:`LiveMedia` in :mod:`softswitch.callaudio`; the bridge in :mod:`softswitch.dial`.

:func:`run_xml_app` builds the :class:`~softswitch.app.control.XmlApplication` for a
control and runs it: the orchestration's ``app_runner`` hook is a thin wrapper around it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from sip import causes
from softswitch.app.control import CallHungUp, DialResult, FetchError, RecordingResult
from softswitch.app.document import CAUSE_FETCH_FAILED, XmlAppError
from softswitch.app.executor import Application
from softswitch.app.sources import MediaCache
from softswitch.app.verbs import Conference, ConferenceEvent, Dial
from softswitch.events import (
    CallEvent,
    DigitReceived,
    Terminated,
)

from .callaudio import (
    RECORD_BEEP_FREQ_HZ,
    RECORD_BEEP_LEVEL_DBM0,
    RECORD_BEEP_MS,
    SILENCE_DBFS,
    LiveMedia,
    _beep_detector,
    _SilenceWatch,
    frame_dbfs,
)
from .dial import (
    DIAL_STATUS_BUSY,
    DIAL_STATUS_COMPLETED,
    DIAL_STATUS_FAILED,
    DIAL_STATUS_NO_ANSWER,
    DIAL_STATUS_TIMEOUT,
    DialDefaults,
    DialRun,
    _close,
    dial_status,
)

if TYPE_CHECKING:
    from media.engine import MediaStream
    from softswitch.conference import Conferences
    from softswitch.ua import OutboundCall, UserAgent

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


class LiveCallControl:
    """Implements :class:`softswitch.app.control.CallControl` on a real, answered call.

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
        conferences: Conferences | None = None,
        account_id: str = "",
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
        #: the rooms ``<Conference>`` joins (the manager's); None: a private registry.
        self.conferences = conferences
        self.account_id = account_id
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

    #: Longest wait for the caller's ACK after our 200 (RFC 3261 §13.3.1.4: 64*T1).
    ANSWER_TIMEOUT_S = 32.0

    async def answer(self) -> None:
        """Answer a call whose application runs before the answer (an inbound leg): 200
        with its SDP, then the caller's ACK. :class:`CallHungUp` if the call ends first."""
        leg = self._call
        if leg.answered_at is not None:
            return
        accept = getattr(leg, "answer", None)
        if not callable(accept):
            return
        try:
            accept()
        except ValueError as exc:  # the offer could not be answered (488 sent)
            raise CallHungUp() from exc
        try:
            answered = await asyncio.wait_for(leg.wait_answered(), self.ANSWER_TIMEOUT_S)
        except TimeoutError:
            answered = False
        if not answered:
            raise CallHungUp()

    async def pre_answer(self) -> None:
        """Early media before the answer (``<PreAnswer>``): 183 with the call's SDP."""
        early = getattr(self._call, "early", None)
        if callable(early) and self._call.answered_at is None:
            early()

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
        """GetDigits: ``timeout_s`` for the first key, ``digit_timeout_s`` between
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
            return await DialRun(self, dial).run()
        finally:
            self._flush_digits()  # keys pressed while bridged were the B party's business

    # -- conferences ------------------------------------------------------------------------------

    async def conference(
        self,
        verb: Conference,
        *,
        on_event: Callable[[ConferenceEvent], None],
        record_path: Callable[[str], tuple[str, str, str]],
        sound: Callable[[str], Awaitable[Any]],
    ) -> ConferenceEvent:
        """``<Conference>``: the call is a member of the room until it leaves
        (:meth:`softswitch.conference.Conferences.run_member`)."""
        self._check_live()
        self._flush_digits()
        if self.conferences is None:
            from softswitch.conference import Conferences  # noqa: PLC0415

            self.conferences = Conferences(lambda: self._ua.media)
        try:
            return await self.conferences.run_member(
                account=self.account_id,
                call_uuid=self.call_uuid,
                stream=self.media,
                engine=self._ua.media,  # type: ignore[arg-type]
                verb=verb,
                on_event=on_event,
                record_path=record_path,
                sound=sound,
                ended=self._ended,
                digit_hooks=self._digit_hooks,
                hangup=self.hangup,
            )
        finally:
            self._flush_digits()


_ENDED = object()


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
) -> Application:
    """Run the call's XML application on ``control`` and return it when done.

    Without ``xml`` the answer document is fetched from ``answer_url`` (``fallback_url`` if
    that fails); with ``xml`` (the orchestration already fetched it) it runs at once and
    ``answer_url`` is only its source URL. An application error is not raised: the call is
    hung up with its cause and the error is in the returned app's ``.error``. ``options``
    go to :class:`~softswitch.app.executor.Application` (``parse_document``, ``media_dirs``,
    ``max_redirects``...).
    """
    options.setdefault("media", LiveMedia())
    app = Application(
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
