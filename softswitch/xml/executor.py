"""Run Plivo XML verbs on a call.

:class:`XmlApplication` executes the verbs of one document after another against a
:class:`CallControl` (the small surface the orchestration glue implements over the real
Call). Behaviour follows Plivo and the open-source Plivo framework it descends from:

* documents: the answer XML runs first; ``<Redirect>`` and the ``action`` of ``GetDigits``,
  ``GetInput``, ``Record`` and ``Dial`` (with ``redirect="true"``, the default) fetch a new
  document which replaces the rest of the current one. With ``redirect="false"`` the action
  URL is only notified and execution goes on with the next verb;
* end of instructions: when the verbs run out the call is hung up (``NORMAL_CLEARING``,
  Plivo's "End Of XML Instructions"), as the framework's ``No more Elements, Hangup Now``;
* errors: a document that is not valid Plivo XML, or a URL that cannot be fetched, ends the
  call with the :class:`~softswitch.xml.parser.XmlAppError`'s cause and message (the glue
  records the error and still sends the hangup callback). When the *answer* document
  cannot be fetched or is invalid, ``fallback_url`` is tried first (Plivo's documented
  answer_url → fallback_url order). Action and redirect documents have no fallback;
* the call hanging up: every :class:`CallControl` operation may raise :class:`CallHungUp`;
  ``run()`` then returns quietly. The glue should also cancel the task running ``run()``
  when the call ends, which cancels any playback at once.

Redirect loops are bounded: at most ``max_redirects`` documents in a row may be fetched
without any verb that does something on the call in between (speak, play, wait, input,
record, dial, DTMF), and at most ``max_documents`` documents per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import logging
import os
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit

from softswitch.xml.parser import (
    CAUSE_FETCH_FAILED,
    CAUSE_INVALID_XML,
    DEFAULT_MAX_BYTES,
    XmlAppError,
    parse_response,
)
from softswitch.xml.verbs import (
    DTMF,
    MAX_LOOPS,
    Dial,
    GetDigits,
    GetInput,
    Hangup,
    Play,
    PreAnswer,
    Prompt,
    Record,
    Redirect,
    Speak,
    Verb,
    Wait,
)

log = logging.getLogger(__name__)

#: Hangup cause when the XML runs out of verbs (Plivo 4010 "End Of XML Instructions").
CAUSE_END_OF_XML = "NORMAL_CLEARING"
#: ``<Hangup reason=...>`` to hangup cause, as the framework maps them.
HANGUP_REASON_CAUSES = {"": "NORMAL_CLEARING", "rejected": "CALL_REJECTED", "busy": "USER_BUSY"}
#: Cause of a ``<Hangup schedule="N">`` firing (the framework's sched_hangup).
CAUSE_SCHEDULED_HANGUP = "ALLOTTED_TIMEOUT"

#: GetDigits ``playBeep`` and the framework's record beep: ``tone_stream://%(300,200,700)``.
BEEP_FREQS_HZ = (700.0,)
BEEP_DURATION_MS = 300
BEEP_LEVEL_DBM0 = -13.0


# --- what the executor needs from the call -------------------------------------------------


class FetchError(Exception):
    """An XML document could not be fetched (network, HTTP status, timeout, body too big)."""


class CallHungUp(Exception):
    """Raised by :class:`CallControl` operations when the call ended while they ran."""


@dataclass(frozen=True, slots=True)
class RecordingResult:
    """What :meth:`CallControl.record` reports. Times are Unix epoch milliseconds."""

    duration_ms: int
    start_ms: int
    end_ms: int
    #: the finish key that ended the recording, "" if silence, maxLength or hangup did.
    digits: str = ""


@dataclass(frozen=True, slots=True)
class DialResult:
    """What :meth:`CallControl.dial` reports, mapped onto Plivo's Dial action parameters."""

    #: Plivo ``DialStatus``: completed, busy, failed, timeout or no-answer.
    status: str
    #: ``DialHangupCause``: Q.850-derived name (NORMAL_CLEARING, USER_BUSY, NO_ANSWER...).
    hangup_cause: str
    #: ``DialBLegUUID``; "" when no B leg answered.
    b_leg_uuid: str = ""
    #: ``DialRingStatus``: whether a B leg rang (180/183 seen).
    rang: bool = False


@runtime_checkable
class CallControl(Protocol):
    """The call as the XML executor sees it. The orchestration glue implements it.

    Media operations return when done, when interrupted as asked, or raise
    :class:`CallHungUp` when the call ends under them.
    """

    call_uuid: str

    @property
    def answered(self) -> bool:
        """True once the call is answered (always so for outbound calls running XML)."""
        ...

    @property
    def hung_up(self) -> bool:
        """True once either side has ended the call."""
        ...

    def base_params(self) -> dict[str, str]:
        """Parameters posted with every request: CallUUID, From, To, Direction, CallStatus..."""
        ...

    async def fetch_xml(self, url: str, method: str, params: Mapping[str, str]) -> str:
        """Fetch an XML document through the webhook outbox (signed). Raises FetchError."""
        ...

    def notify(self, url: str, method: str, params: Mapping[str, str]) -> None:
        """Fire-and-forget callback (``callbackUrl``, ``redirect="false"`` actions)."""
        ...

    async def play(self, source: Any, *, interrupt_on_digit: bool = False) -> str | None:
        """Play a ``media.play`` source to the caller; return the DTMF key that interrupted
        it when ``interrupt_on_digit``, else None. The key is consumed (not buffered)."""
        ...

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
        """Collect DTMF keys. ``first_digit`` was already pressed (it interrupted a prompt).

        Returns ``(digits, how)``: digits exclude the finish key; ``how`` is ``finish_key``,
        ``num_digits``, ``timeout`` (no key within timeout_s/digit_timeout_s) or ``invalid``
        (a key outside ``valid_digits``, which is then the last of ``digits``).
        """
        ...

    async def send_digits(self, digits: str) -> None:
        """Send DTMF with the ``send_digits`` grammar (RFC 4733 events and/or in-band)."""
        ...

    async def wait(
        self,
        seconds: float,
        *,
        until_silence: bool = False,
        min_silence_ms: int = 2000,
        until_beep: bool = False,
    ) -> None:
        """Stay silent ``seconds``; end early after ``min_silence_ms`` of silence from the
        caller, or on a voicemail beep (the AMD beep detector) when asked."""
        ...

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
        """Record the caller to ``path`` (wav or mp3) until silence ``timeout_s``, a key of
        ``finish_on_key``, ``max_length_s`` or hangup; the file is complete on return."""
        ...

    async def dial(self, dial: Dial) -> DialResult:
        """Bridge to the first B leg of ``dial.numbers`` that answers (same UA, media relayed)
        until either side hangs up or ``dial.time_limit``. Honours the Dial's timeout,
        callerId, callerName, hangupOnStar, sendDigits, and fires its ``callbackUrl`` events
        (DialAction answer/connected/hangup/digits). Returns when the A leg is free again."""
        ...

    async def hangup(self, cause: str, reason: str | None = None) -> None:
        """End the call with a Q.850-style ``cause``; ``reason`` goes to the call record."""
        ...


class MediaFactory(Protocol):
    """Makes ``media.play`` sources. The default uses :mod:`media.play`; tests inject one."""

    def silence(self, duration_ms: int) -> Any: ...

    def tone(self, freqs_hz: Sequence[float], duration_ms: int, level_dbm0: float) -> Any: ...

    def pcm(self, samples: Any) -> Any:
        """A source over PCM from :meth:`tts` (cheap: wraps the array, no decoding)."""
        ...

    def file(self, path: str) -> Any:
        """A source for a local audio file. May block for a while (it may decode the whole
        file up front): the executor calls it in a worker thread, never on the loop."""
        ...

    async def tts(self, text: str, voice: str) -> Any:
        """Synthesize ``text`` with espeak-ng ``voice``; returns PCM for :meth:`pcm`."""
        ...


class PlayModuleMedia:
    """:class:`MediaFactory` over ``media.play`` (imported on first use)."""

    @staticmethod
    def _mod() -> Any:
        # Imported on first use: media.play is optional until a call really plays something.
        return importlib.import_module("media.play")

    def silence(self, duration_ms: int) -> Any:
        return self._mod().SilenceSource(duration_ms)

    def tone(self, freqs_hz: Sequence[float], duration_ms: int, level_dbm0: float) -> Any:
        return self._mod().ToneSource(tuple(freqs_hz), duration_ms, level_dbm0)

    def pcm(self, samples: Any) -> Any:
        return self._mod().ArraySource(samples, loop=1)

    def file(self, path: str) -> Any:
        return self._mod().FileSource(path, loop=1)

    async def tts(self, text: str, voice: str) -> Any:
        # espeak-ng is a subprocess: keep it off the event loop.
        return await asyncio.to_thread(self._mod().tts_to_pcm, text, voice=voice)


# --- text to speech -------------------------------------------------------------------------

# espeak-ng voices (``espeak-ng --voices``) that Plivo's Speak languages map onto.
_ESPEAK_LANGS = {
    "af", "am", "ar", "bg", "bn", "bs", "ca", "cmn", "cs", "cy", "da", "de", "el", "en-029",
    "en-gb", "en-gb-scotland", "en-us", "eo", "es", "es-419", "et", "eu", "fa", "fi", "fr-be",
    "fr-ch", "fr-fr", "ga", "gd", "gu", "he", "hi", "hr", "hu", "hy", "id", "is", "it", "ja",
    "ka", "kk", "kn", "ko", "lt", "lv", "mk", "ml", "mr", "ms", "mt", "nb", "ne", "nl", "pa",
    "pl", "pt", "pt-br", "ro", "ru", "sk", "sl", "sq", "sr", "sv", "sw", "ta", "te", "th", "tr",
    "uk", "ur", "vi", "yue",
}  # fmt: skip
_LANG_ALIASES = {
    "en": "en-us", "en-au": "en-gb", "en-in": "en-gb", "en-nz": "en-gb", "en-za": "en-gb",
    "en-ie": "en-gb", "en-gb-wls": "en-gb", "en-ca": "en-us", "fr": "fr-fr", "fr-ca": "fr-fr",
    "es-us": "es-419", "es-mx": "es-419", "pt-pt": "pt", "zh": "cmn", "zh-cn": "cmn",
    "cmn-cn": "cmn", "zh-tw": "cmn", "zh-hk": "yue", "yue-cn": "yue", "arb": "ar", "no": "nb",
    "nb-no": "nb", "he-il": "he", "iw": "he",
}  # fmt: skip
_MALE_VOICES = {"MAN", "rms", "awb", "kal"}


def espeak_voice(voice: str, language: str) -> str:
    """Map Plivo ``voice``/``language`` to an espeak-ng voice name (``en-us+f3``).

    The language tag picks the espeak-ng language (``en-GB`` → ``en-gb``, ``es-US`` →
    ``es-419``; a tag espeak-ng lacks falls back to its primary subtag, then to ``en-us``);
    ``WOMAN``/``MAN`` pick the female/male variant. Polly voices have no espeak-ng twin: the
    language decides and the female variant is used (Plivo's default voice is WOMAN).
    """
    tag = language.lower()
    lang = _LANG_ALIASES.get(tag, tag)
    if lang not in _ESPEAK_LANGS:
        primary = tag.split("-", 1)[0]
        lang = _LANG_ALIASES.get(primary, primary)
        if lang not in _ESPEAK_LANGS:
            log.warning("no espeak-ng voice for language %r, speaking en-us", language)
            lang = "en-us"
    variant = "m3" if voice in _MALE_VOICES else "f3"
    return f"{lang}+{variant}"


class TtsCache:
    """Synthesized speech per (text, espeak voice), shared by every call of the process.

    Bounded LRU; concurrent requests for the same text share one synthesis.
    """

    def __init__(self, max_entries: int = 256) -> None:
        self._max = max_entries
        self._done: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._pending: dict[tuple[str, str], asyncio.Future[Any]] = {}

    def __len__(self) -> int:
        return len(self._done)

    async def get(self, text: str, voice: str, synth: Callable[[str, str], Awaitable[Any]]) -> Any:
        key = (text, voice)
        if key in self._done:
            self._done.move_to_end(key)
            return self._done[key]
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[key] = fut
        try:
            pcm = await synth(text, voice)
        except asyncio.CancelledError:
            fut.cancel()
            raise
        except Exception as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            self._pending.pop(key, None)
        fut.set_result(pcm)
        self._done[key] = pcm
        while len(self._done) > self._max:
            self._done.popitem(last=False)
        return pcm


_DEFAULT_TTS_CACHE = TtsCache()


# --- media files ------------------------------------------------------------------------------


def _sniff_audio(head: bytes) -> str | None:
    """``wav`` or ``mp3`` from the first bytes (RIFF/WAVE header; ID3 tag or MPEG sync)."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:3] == b"ID3" or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"
    return None


_AUDIO_TYPES = {
    "audio/mpeg", "audio/mp3", "audio/mpeg3", "audio/x-mpeg-3", "audio/wav", "audio/x-wav",
    "audio/wave", "audio/vnd.wave", "application/octet-stream", "binary/octet-stream",
}  # fmt: skip


class MediaCache:
    """Downloads ``<Play>`` URLs once into ``cache_dir`` (size-bounded, type-checked).

    The file is kept under a name derived from the URL, so later calls play it without a
    fetch; ``file://`` URLs and absolute paths are played in place when they lie under one
    of ``allowed_dirs`` (XML comes from the user's server and must not read arbitrary
    files of ours).
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike[str],
        *,
        allowed_dirs: Sequence[str | os.PathLike[str]] = (),
        max_bytes: int = 20 * 1024 * 1024,
        timeout_s: float = 30.0,
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.allowed_dirs = tuple(Path(d).resolve() for d in allowed_dirs)
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self._locks: dict[str, asyncio.Lock] = {}

    async def path_for(self, url: str) -> str:
        """Local path of a playable WAV/MP3 for ``url``. Raises XmlAppError."""
        parts = urlsplit(url)
        if parts.scheme.lower() in ("http", "https"):
            return await self._download(url)
        local = Path(unquote(parts.path) if parts.scheme.lower() == "file" else url).resolve()
        if not any(local.is_relative_to(d) for d in self.allowed_dirs):
            raise XmlAppError(f"{url!r} is outside the allowed media directories", element="Play")
        if not local.is_file():
            raise XmlAppError(f"no such file {url!r}", element="Play")
        return str(local)

    async def _download(self, url: str) -> str:
        digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:32]
        for ext in ("wav", "mp3"):
            cached = self.cache_dir / f"{digest}.{ext}"
            if cached.is_file():
                return str(cached)
        lock = self._locks.setdefault(digest, asyncio.Lock())
        async with lock:
            for ext in ("wav", "mp3"):
                cached = self.cache_dir / f"{digest}.{ext}"
                if cached.is_file():
                    return str(cached)
            return await self._fetch_to(url, digest)

    async def _fetch_to(self, url: str, digest: str) -> str:
        import aiohttp  # noqa: PLC0415 - keep module import light

        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_dir / f".{digest}.{uuid.uuid4().hex}.part"
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                async with session.get(url) as resp:
                    if resp.status != 200:
                        raise XmlAppError(
                            f"fetching {url} answered HTTP {resp.status}", element="Play"
                        )
                    ctype = resp.content_type.lower()
                    if ctype not in _AUDIO_TYPES:
                        raise XmlAppError(
                            f"{url} has content type {ctype!r}, expected WAV or MP3 audio",
                            element="Play",
                        )
                    if (resp.content_length or 0) > self.max_bytes:
                        raise XmlAppError(
                            f"{url} is larger than {self.max_bytes} bytes", element="Play"
                        )
                    size = 0
                    head = b""
                    with open(tmp, "wb") as out:
                        async for chunk in resp.content.iter_chunked(64 * 1024):
                            size += len(chunk)
                            if size > self.max_bytes:
                                raise XmlAppError(
                                    f"{url} is larger than {self.max_bytes} bytes", element="Play"
                                )
                            if len(head) < 16:
                                head += chunk[:16]
                            out.write(chunk)
            kind = _sniff_audio(head)
            if kind is None:
                raise XmlAppError(f"{url} is neither WAV nor MP3", element="Play")
            final = self.cache_dir / f"{digest}.{kind}"
            os.replace(tmp, final)
            return str(final)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise XmlAppError(
                f"fetching {url} failed: {exc or type(exc).__name__}",
                element="Play",
                cause=CAUSE_FETCH_FAILED,
            ) from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


# --- the application --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Goto:
    """Fetch the next document: the rest of the current one is dropped."""

    url: str
    method: str
    params: Mapping[str, str]


class _Stop:
    """The document ended the call (``<Hangup>``)."""


_STOP = _Stop()
_Outcome = _Goto | _Stop | None


class XmlApplication:
    """Runs a call's Plivo XML. One instance per call; ``start()`` or ``run()`` once."""

    def __init__(
        self,
        call: CallControl,
        *,
        data_dir: str | os.PathLike[str],
        recording_url_base: str,
        max_redirects: int = 10,
        max_documents: int = 1000,
        fallback_url: str | None = None,
        fallback_method: str = "POST",
        media: MediaFactory | None = None,
        media_cache: MediaCache | None = None,
        media_dirs: Sequence[str | os.PathLike[str]] = (),
        tts_cache: TtsCache | None = None,
        max_xml_bytes: int = DEFAULT_MAX_BYTES,
        legacy: bool = False,
    ) -> None:
        """``recording_url_base``: public URL prefix under which the API server serves
        ``<data_dir>/recordings/``; a recording's URL is ``<base>/<RecordingID>.<format>``.
        ``media_dirs``: extra directories ``<Play>`` may read local files from (the data
        directory always may). ``legacy``: documents are the framework's RESTXML."""
        self.call = call
        self.data_dir = Path(data_dir)
        self.recording_url_base = recording_url_base.rstrip("/")
        self.max_redirects = max_redirects
        self.max_documents = max_documents
        self.fallback_url = fallback_url
        self.fallback_method = fallback_method
        self.media: MediaFactory = media or PlayModuleMedia()
        self.media_cache = media_cache or MediaCache(
            self.data_dir / "cache" / "media", allowed_dirs=(self.data_dir, *media_dirs)
        )
        self.tts_cache = tts_cache or _DEFAULT_TTS_CACHE
        self.max_xml_bytes = max_xml_bytes
        self.legacy = legacy
        #: the error that ended the call, if any (also raised from run()).
        self.error: XmlAppError | None = None
        #: URL of the document being executed.
        self.current_url: str | None = None
        self._progress = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._dtmf_tasks: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()
        self._dtmf_lock = asyncio.Lock()

    # -- entry points --

    async def start(self, answer_url: str, answer_method: str = "POST") -> None:
        """Fetch ``answer_url`` (``fallback_url`` when it fails) and run it.

        Retrying ``answer_url`` (Plivo: three tries, 60 s in all) is the webhook outbox's job
        inside :meth:`CallControl.fetch_xml`; a :class:`FetchError` here means it gave up.
        """
        try:
            text = await self._fetch(answer_url, answer_method, self.call.base_params())
        except XmlAppError as exc:
            if not self.fallback_url:
                await self._fail(exc)
                raise
            log.warning(
                "call %s: answer_url failed (%s), trying fallback_url", self.call.call_uuid, exc
            )
            await self._run_fallback()
            return
        await self.run(text, answer_url)

    async def _run_fallback(self) -> None:
        """Fetch and run ``fallback_url`` (the answer document failed)."""
        assert self.fallback_url is not None
        url, method = self.fallback_url, self.fallback_method
        self.fallback_url = None  # tried once
        try:
            text = await self._fetch(url, method, self.call.base_params())
        except XmlAppError as exc:
            await self._fail(exc)
            raise
        await self.run(text, url)

    async def run(self, xml_text: str | bytes, source_url: str) -> None:
        """Execute ``xml_text`` (the document fetched from ``source_url``) and whatever it
        leads to, until the verbs run out (the call is then hung up), a ``<Hangup>``, or the
        call ends. Raises :class:`XmlAppError` after hanging up the call on an error."""
        try:
            try:
                verbs = self._parse(xml_text)
            except XmlAppError as exc:
                if not self.fallback_url:
                    raise
                log.warning(
                    "call %s: invalid answer XML (%s), trying fallback_url",
                    self.call.call_uuid,
                    exc,
                )
                url, method = self.fallback_url, self.fallback_method
                self.fallback_url = None
                xml_text, source_url = await self._fetch(url, method, self.call.base_params()), url
                verbs = self._parse(xml_text)
            self.fallback_url = None
            await self._run_documents(verbs, source_url)
        except CallHungUp:
            log.info("call %s: hung up during XML", self.call.call_uuid)
        except XmlAppError as exc:
            await self._fail(exc)
            raise
        finally:
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- documents --

    def _parse(self, xml_text: str | bytes) -> tuple[Verb, ...]:
        return parse_response(xml_text, max_bytes=self.max_xml_bytes, legacy=self.legacy)

    async def _fetch(self, url: str, method: str, params: Mapping[str, str]) -> str:
        try:
            return await self.call.fetch_xml(url, method, params)
        except FetchError as exc:
            raise XmlAppError(
                f"fetching XML from {method} {url} failed: {exc}", cause=CAUSE_FETCH_FAILED
            ) from None

    async def _fail(self, exc: XmlAppError) -> None:
        self.error = exc
        log.warning("call %s: XML application error: %s", self.call.call_uuid, exc)
        if not self.call.hung_up:
            with contextlib.suppress(CallHungUp):
                await self.call.hangup(exc.cause, str(exc))

    async def _run_documents(self, verbs: tuple[Verb, ...], url: str) -> None:
        documents = 1
        idle_fetches = 0
        while True:
            self.current_url = url
            self._progress = False
            outcome = await self._run_verbs(verbs)
            if isinstance(outcome, _Stop) or self.call.hung_up:
                return
            if outcome is None:
                # Digits of an async <DTMF> still being sent go out before the hangup.
                pending = [t for t in self._dtmf_tasks if not t.done()]
                if pending:
                    await asyncio.gather(*pending)
                if self.call.hung_up:
                    return
                log.info("call %s: end of XML instructions, hanging up", self.call.call_uuid)
                await self.call.hangup(CAUSE_END_OF_XML, "End Of XML Instructions")
                return
            idle_fetches = 0 if self._progress else idle_fetches + 1
            if idle_fetches > self.max_redirects:
                raise XmlAppError(
                    f"more than {self.max_redirects} redirects in a row without any call "
                    f"activity (redirect loop at {outcome.url})",
                    element="Redirect",
                )
            documents += 1
            if documents > self.max_documents:
                raise XmlAppError(f"more than {self.max_documents} XML documents for one call")
            text = await self._fetch(outcome.url, outcome.method, outcome.params)
            verbs, url = self._parse(text), outcome.url

    async def _run_verbs(self, verbs: Sequence[Verb]) -> _Outcome:
        for verb in verbs:
            if self.call.hung_up:
                raise CallHungUp
            outcome = await self._run_verb(verb)
            if outcome is not None:
                return outcome
        return None

    async def _run_verb(self, verb: Verb) -> _Outcome:
        match verb:
            case Speak():
                await self._speak(verb)
            case Play():
                await self._play(verb)
            case Wait():
                self._progress = True
                await self.call.wait(
                    verb.length,
                    until_silence=verb.silence,
                    min_silence_ms=verb.min_silence,
                    until_beep=verb.beep and not verb.silence,
                )
            case GetDigits() | GetInput():
                return await self._get_input(verb)
            case DTMF():
                self._progress = True
                if verb.async_:
                    self._dtmf_tasks.add(self._spawn(self._send_digits(verb.digits)))
                else:
                    await self._send_digits(verb.digits)
            case Hangup():
                return await self._hangup(verb)
            case Redirect():
                return _Goto(verb.url, verb.method, self.call.base_params())
            case Record():
                return await self._record(verb)
            case Dial():
                return await self._dial(verb)
            case PreAnswer():
                if self.call.answered:
                    # Outbound calls are answered before their XML runs: nothing to pre-answer.
                    log.info(
                        "call %s: <PreAnswer> on an answered call, skipped", self.call.call_uuid
                    )
                    return None
                return await self._run_verbs(verb.children)
            case _:  # pragma: no cover - the parser only makes the verbs above
                raise XmlAppError(f"cannot execute {type(verb).__name__}", cause=CAUSE_INVALID_XML)
        return None

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _send_digits(self, digits: str) -> None:
        # One DTMF verb at a time: an async one may still be sending when the next starts.
        async with self._dtmf_lock:
            await self.call.send_digits(digits)

    def _after(
        self, url: str | None, method: str, params: dict[str, str], redirect: bool
    ) -> _Outcome:
        """Report a verb's result to its ``action``: fetch and continue there, or notify."""
        if url is None:
            return None
        if redirect and not self.call.hung_up:
            return _Goto(url, method, params)
        self.call.notify(url, method, params)
        return None

    async def _file_source(self, path: str) -> Any:
        """``media.file(path)`` in a worker thread: :class:`media.play.FileSource` decodes
        files up to 16 MB when it is made, which on the event loop would stall the 20 ms
        media clock (every call's RTP) for as long as the decode takes."""
        return await asyncio.to_thread(self.media.file, path)

    # -- verbs --

    async def _speak(self, verb: Speak) -> None:
        self._progress = True
        voice = espeak_voice(verb.voice, verb.language)
        pcm = await self.tts_cache.get(verb.text, voice, self.media.tts)
        for _ in range(min(verb.loop, MAX_LOOPS)):
            if self.call.hung_up:
                raise CallHungUp
            await self.call.play(self.media.pcm(pcm))

    async def _play(self, verb: Play) -> None:
        self._progress = True
        path = await self.media_cache.path_for(verb.url)
        for _ in range(min(verb.loop, MAX_LOOPS)):
            if self.call.hung_up:
                raise CallHungUp
            await self.call.play(await self._file_source(path))

    async def _play_prompts(self, prompts: Sequence[Prompt]) -> str | None:
        """Play nested prompts; the first key pressed stops them and is returned."""
        for prompt in prompts:
            if isinstance(prompt, Wait):
                sources: list[Any] = [self.media.silence(prompt.length * 1000)]
                rounds = 1
            elif isinstance(prompt, Speak):
                voice = espeak_voice(prompt.voice, prompt.language)
                pcm = await self.tts_cache.get(prompt.text, voice, self.media.tts)
                sources, rounds = [pcm], prompt.loop
            else:
                sources, rounds = [await self.media_cache.path_for(prompt.url)], prompt.loop
            for _ in range(min(rounds, MAX_LOOPS)):
                if self.call.hung_up:
                    raise CallHungUp
                item = sources[0]
                if isinstance(prompt, Speak):
                    item = self.media.pcm(item)
                elif isinstance(prompt, Play):
                    item = await self._file_source(item)
                key = await self.call.play(item, interrupt_on_digit=True)
                if key is not None:
                    return key
        return None

    async def _get_input(self, verb: GetDigits | GetInput) -> _Outcome:
        self._progress = True
        if isinstance(verb, GetDigits):
            retries, timeout, digit_timeout = verb.retries, verb.timeout, verb.digit_timeout
            valid, invalid_sound, beep = (
                verb.valid_digits,
                verb.invalid_digits_sound,
                verb.play_beep,
            )
            name = "GetDigits"
        else:
            # Plivo's digitEndTimeout "auto" is taken as GetDigits' default digitTimeout.
            retries, timeout, digit_timeout = 1, verb.execution_timeout, verb.digit_end_timeout or 2
            valid, invalid_sound, beep = "0123456789*#ABCD", None, False
            name = "GetInput"
        digits: str | None = None
        for attempt in range(retries):
            first = await self._play_prompts(verb.children)
            if first is None and beep:
                tone = self.media.tone(BEEP_FREQS_HZ, BEEP_DURATION_MS, BEEP_LEVEL_DBM0)
                first = await self.call.play(tone, interrupt_on_digit=True)
            got, how = await self.call.collect_digits(
                num_digits=verb.num_digits,
                timeout_s=float(timeout),
                digit_timeout_s=float(digit_timeout),
                finish_on_key=verb.finish_on_key,
                valid_digits=valid,
                first_digit=first,
            )
            shown = got if verb.log else "*" * len(got)
            log.info(
                "call %s: %s attempt %d: %r (%s)",
                self.call.call_uuid,
                name,
                attempt + 1,
                shown,
                how,
            )
            if got and how != "invalid" and all(c in valid for c in got):
                digits = got
                break
            if got and invalid_sound is not None:
                path = await self.media_cache.path_for(invalid_sound)
                await self.call.play(await self._file_source(path))
        if digits is None:
            return None  # no (valid) input: Plivo goes on with the next verb
        params = self.call.base_params()
        if isinstance(verb, GetInput):
            params["InputType"] = "dtmf"
        params["Digits"] = digits
        return self._after(verb.action, verb.method, params, verb.redirect)

    async def _hangup(self, verb: Hangup) -> _Outcome:
        if verb.schedule > 0:
            self._spawn(self._scheduled_hangup(verb.schedule))
            return None
        cause = HANGUP_REASON_CAUSES[verb.reason]
        await self.call.hangup(
            cause, f"Hangup XML ({verb.reason})" if verb.reason else "Hangup XML"
        )
        return _STOP

    async def _scheduled_hangup(self, seconds: int) -> None:
        await asyncio.sleep(seconds)
        if not self.call.hung_up:
            await self.call.hangup(
                CAUSE_SCHEDULED_HANGUP, f"Hangup XML (scheduled after {seconds} s)"
            )

    async def _record(self, verb: Record) -> _Outcome:
        self._progress = True
        recording_id = str(uuid.uuid4())
        directory = self.data_dir / "recordings"
        directory.mkdir(parents=True, exist_ok=True)
        name = f"{recording_id}.{verb.file_format}"
        result = await self.call.record(
            str(directory / name),
            max_length_s=verb.max_length,
            timeout_s=verb.timeout,
            finish_on_key=verb.finish_on_key,
            play_beep=verb.play_beep,
            file_format=verb.file_format,
        )
        params = self.call.base_params()
        params.update(
            RecordUrl=f"{self.recording_url_base}/{name}",
            RecordingID=recording_id,
            RecordingDuration=str(round(result.duration_ms / 1000)),
            RecordingDurationMs=str(result.duration_ms),
            RecordingStartMs=str(result.start_ms),
            RecordingEndMs=str(result.end_ms),
            RecordingFileFormat=verb.file_format,
            Digits=result.digits,
        )
        if verb.callback_url is not None:
            self.call.notify(verb.callback_url, verb.callback_method, dict(params))
        return self._after(verb.action, verb.method, params, verb.redirect)

    async def _dial(self, verb: Dial) -> _Outcome:
        self._progress = True
        result = await self.call.dial(verb)
        params = self.call.base_params()
        params.update(
            DialStatus=result.status,
            DialHangupCause=result.hangup_cause,
            DialRingStatus="true" if result.rang else "false",
            DialALegUUID=self.call.call_uuid,
            DialBLegUUID=result.b_leg_uuid,
        )
        return self._after(verb.action, verb.method, params, verb.redirect)


__all__ = [
    "BEEP_DURATION_MS",
    "BEEP_FREQS_HZ",
    "BEEP_LEVEL_DBM0",
    "CAUSE_END_OF_XML",
    "CAUSE_SCHEDULED_HANGUP",
    "HANGUP_REASON_CAUSES",
    "CallControl",
    "CallHungUp",
    "DialResult",
    "FetchError",
    "MediaCache",
    "MediaFactory",
    "PlayModuleMedia",
    "RecordingResult",
    "TtsCache",
    "XmlApplication",
    "espeak_voice",
]
