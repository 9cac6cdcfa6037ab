"""Run call-application verbs on a call, whatever vocabulary the documents are written in.

:class:`Application` executes the verbs of one document after another against a
:class:`~softswitch.app.control.CallControl` (the small surface the orchestration glue
implements over the real call). The vocabulary comes in as ``parse_document``: a function
from the document's text to a :class:`~softswitch.app.verbs.Document` (its verbs and the
names under which its results are posted), which each API dialect provides. The behaviour is
the one the XML call-application vocabularies share:

* documents: the answer document runs first; ``<Redirect>`` and the ``action`` of
  ``GetDigits``, ``GetInput``, ``Record`` and ``Dial`` (with ``redirect`` true, the default)
  fetch a new document which replaces the rest of the current one. With ``redirect`` false
  the action URL is only notified and execution goes on with the next verb;
* end of instructions: when the verbs run out the call is hung up (``NORMAL_CLEARING``,
  reason "End Of XML Instructions");
* errors: a document that is not valid in its vocabulary, or a URL that cannot be fetched,
  ends the call with the :class:`~softswitch.app.document.XmlAppError`'s cause and message
  (the glue records the error and still sends the hangup callback). When the *answer*
  document cannot be fetched or is invalid, ``fallback_url`` is tried first (the documented
  answer_url → fallback_url order). Action and redirect documents have no fallback;
* the call hanging up: every ``CallControl`` operation may raise
  :class:`~softswitch.app.control.CallHungUp`; ``run()`` then returns quietly. The glue
  should also cancel the task running ``run()`` when the call ends, which cancels any
  playback at once.

Redirect loops are bounded: at most ``max_redirects`` documents in a row may be fetched
without any verb that does something on the call in between (speak, play, wait, input,
record, dial, DTMF), and at most ``max_documents`` documents per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

from softswitch.app.control import CallControl, CallHungUp, ConferenceControl, FetchError
from softswitch.app.document import (
    CAUSE_FETCH_FAILED,
    CAUSE_INVALID_XML,
    DEFAULT_MAX_BYTES,
    XmlAppError,
)
from softswitch.app.sources import (
    SHARED_TTS_CACHE,
    MediaCache,
    MediaFactory,
    PlayModuleMedia,
    TtsCache,
    espeak_voice,
)
from softswitch.app.verbs import (
    DTMF,
    MAX_LOOPS,
    Conference,
    ConferenceEvent,
    Dial,
    Document,
    GetDigits,
    GetInput,
    Hangup,
    Play,
    PreAnswer,
    Prompt,
    Record,
    Redirect,
    ResultParams,
    Speak,
    Verb,
    Wait,
)

log = logging.getLogger(__name__)

#: Hangup cause when the document runs out of verbs ("End Of XML Instructions").
CAUSE_END_OF_XML = "NORMAL_CLEARING"
#: ``<Hangup reason=...>`` to hangup cause (Q.850 names: 21 call rejected, 17 user busy).
HANGUP_REASON_CAUSES = {"": "NORMAL_CLEARING", "rejected": "CALL_REJECTED", "busy": "USER_BUSY"}
#: Cause of a ``<Hangup schedule="N">`` firing (Q.850-derived "allotted timeout").
CAUSE_SCHEDULED_HANGUP = "ALLOTTED_TIMEOUT"

#: GetDigits ``playBeep`` and the record beep: 300 ms of 700 Hz (FreeSWITCH's
#: ``tone_stream://%(300,200,700)``).
BEEP_FREQS_HZ = (700.0,)
BEEP_DURATION_MS = 300
BEEP_LEVEL_DBM0 = -13.0


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


class ParseDocument(Protocol):
    """A vocabulary's parser: document text to verbs, or :class:`XmlAppError`."""

    def __call__(self, document: str | bytes, *, max_bytes: int = ...) -> Document: ...


class Application:
    """Runs a call's application documents. One instance per call; ``start()`` or ``run()``
    once."""

    def __init__(
        self,
        call: CallControl,
        *,
        parse_document: ParseDocument,
        data_dir: str | os.PathLike[str],
        recording_url_base: str,
        recordings_dir: str | os.PathLike[str] | None = None,
        recording_url: Callable[[str], str] | None = None,
        max_redirects: int = 10,
        max_documents: int = 1000,
        fallback_url: str | None = None,
        fallback_method: str = "POST",
        media: MediaFactory | None = None,
        media_cache: MediaCache | None = None,
        media_dirs: Sequence[str | os.PathLike[str]] = (),
        tts_cache: TtsCache | None = None,
        max_xml_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        """``recording_url_base``: public URL prefix under which the API server serves
        ``<data_dir>/recordings/``; a recording's URL is ``<base>/<RecordingID>.<format>``.
        ``media_dirs``: extra directories ``<Play>`` may read local files from (the data
        directory always may). ``parse_document``: the vocabulary's parser."""
        self.call = call
        self.parse_document = parse_document
        self.data_dir = Path(data_dir)
        self.recording_url_base = recording_url_base.rstrip("/")
        #: Where ``<Record>`` writes (default ``<data_dir>/recordings``) and how the URL of a
        #: recording named ``<id>.<format>`` is made (default ``<base>/<name>``).
        self.recordings_dir = (
            Path(recordings_dir) if recordings_dir is not None else self.data_dir / "recordings"
        )
        self.recording_url = recording_url or (lambda name: f"{self.recording_url_base}/{name}")
        self.max_redirects = max_redirects
        self.max_documents = max_documents
        self.fallback_url = fallback_url
        self.fallback_method = fallback_method
        self.media: MediaFactory = media or PlayModuleMedia()
        self.media_cache = media_cache or MediaCache(
            self.data_dir / "cache" / "media", allowed_dirs=(self.data_dir, *media_dirs)
        )
        self.tts_cache = tts_cache or SHARED_TTS_CACHE
        self.max_xml_bytes = max_xml_bytes
        #: the error that ended the call, if any (also raised from run()).
        self.error: XmlAppError | None = None
        #: URL of the document being executed.
        self.current_url: str | None = None
        self._progress = False
        #: how the running document's vocabulary names verb results.
        self._names: ResultParams | None = None
        #: the running document's URLs are references to resolve against current_url.
        self._relative = False
        #: Inside <PreAnswer>: its verbs run as early media, the call stays unanswered.
        self._early = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._dtmf_tasks: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()
        self._dtmf_lock = asyncio.Lock()

    # -- entry points --

    async def start(self, answer_url: str, answer_method: str = "POST") -> None:
        """Fetch ``answer_url`` (``fallback_url`` when it fails) and run it.

        Retrying ``answer_url`` (three tries, 60 s in all) is the webhook outbox's job
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
                document = self._parse(xml_text)
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
                document = self._parse(xml_text)
            self.fallback_url = None
            await self._run_documents(document, source_url)
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

    def _parse(self, xml_text: str | bytes) -> Document:
        return self.parse_document(xml_text, max_bytes=self.max_xml_bytes)

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

    async def _run_documents(self, document: Document, url: str) -> None:
        documents = 1
        idle_fetches = 0
        while True:
            self.current_url = url
            self._progress = False
            self._names = document.result_params
            self._relative = document.relative_urls
            outcome = await self._run_verbs(document.verbs)
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
            document, url = self._parse(text), outcome.url

    async def _run_verbs(self, verbs: Sequence[Verb]) -> _Outcome:
        for verb in verbs:
            if self.call.hung_up:
                raise CallHungUp
            outcome = await self._run_verb(verb)
            if outcome is not None:
                return outcome
        return None

    async def _run_verb(self, verb: Verb) -> _Outcome:
        if (
            not self._early
            and not isinstance(verb, PreAnswer | Hangup | Redirect)
            and not self.call.answered
        ):
            # A call whose application runs before the answer (inbound): the first verb
            # outside <PreAnswer> that needs media answers it (<Hangup> then refuses the
            # unanswered call instead; a control without answer() is always answered).
            answer = getattr(self.call, "answer", None)
            if callable(answer):
                await answer()
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
                return _Goto(self._ref(verb.url), verb.method, self.call.base_params())
            case Record():
                return await self._record(verb)
            case Dial():
                return await self._dial(verb)
            case Conference():
                return await self._conference(verb)
            case PreAnswer():
                if self.call.answered:
                    # Outbound calls are answered before their XML runs: nothing to pre-answer.
                    log.info(
                        "call %s: <PreAnswer> on an answered call, skipped", self.call.call_uuid
                    )
                    return None
                pre_answer = getattr(self.call, "pre_answer", None)
                if callable(pre_answer):
                    await pre_answer()  # 183 with SDP: the children play as early media
                self._early = True
                try:
                    return await self._run_verbs(verb.children)
                finally:
                    self._early = False
            case _:  # pragma: no cover - the parser only makes the verbs above
                raise XmlAppError(f"cannot execute {type(verb).__name__}", cause=CAUSE_INVALID_XML)
        return None

    def _ref(self, url: str) -> str:
        """A URL of the running document, resolved against the document's URL when its
        vocabulary writes references (RFC 3986 §5.2; ``""`` is the document itself)."""
        if self._relative and self.current_url:
            return urljoin(self.current_url, url)
        return url

    def _result_names(self) -> ResultParams:
        assert self._names is not None, "verbs run only inside a document"
        return self._names

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
        url = self._ref(url)
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
        path = await self.media_cache.path_for(self._ref(verb.url))
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
                sources = [await self.media_cache.path_for(self._ref(prompt.url))]
                rounds = prompt.loop
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
            # digit_end_timeout "auto" is taken as GetDigits' default digit timeout (2 s).
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
                path = await self.media_cache.path_for(self._ref(invalid_sound))
                await self.call.play(await self._file_source(path))
        if digits is None:
            return None  # no (valid) input: go on with the next verb
        names = self._result_names()
        params = self.call.base_params()
        if isinstance(verb, GetInput):
            _put(params, names.input_type, "dtmf")
        _put(params, names.digits, digits)
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
        directory = self.recordings_dir
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
        names = self._result_names()
        params = self.call.base_params()
        for key, value in (
            (names.record_url, self.recording_url(name)),
            (names.recording_id, recording_id),
            (names.recording_duration_s, str(round(result.duration_ms / 1000))),
            (names.recording_duration_ms, str(result.duration_ms)),
            (names.recording_start_ms, str(result.start_ms)),
            (names.recording_end_ms, str(result.end_ms)),
            (names.recording_file_format, verb.file_format),
            (names.digits, result.digits),
        ):
            _put(params, key, value)
        if verb.callback_url is not None:
            self.call.notify(self._ref(verb.callback_url), verb.callback_method, dict(params))
        return self._after(verb.action, verb.method, params, verb.redirect)

    async def _dial(self, verb: Dial) -> _Outcome:
        self._progress = True
        result = await self.call.dial(verb)
        names = self._result_names()
        params = self.call.base_params()
        status = dict(names.dial_status_words).get(result.status, result.status)
        for key, value in (
            (names.dial_status, status),
            (names.dial_hangup_cause, result.hangup_cause),
            (names.dial_ring_status, "true" if result.rang else "false"),
            (names.dial_duration_s, str(result.duration_s)),
        ):
            _put(params, key, value)
        for key, uid in (
            (names.dial_a_leg_uuid, self.call.call_uuid),
            (names.dial_b_leg_uuid, result.b_leg_uuid),
        ):
            if names.call_id is None:
                _put(params, key, uid)
            elif uid and key is not None:
                _put(params, key, names.call_id(uid))
        return self._after(verb.action, verb.method, params, verb.redirect)

    async def _conference(self, verb: Conference) -> _Outcome:
        self._progress = True
        if not isinstance(self.call, ConferenceControl):
            raise XmlAppError("not supported on this call", element="Conference")
        names = self._result_names()
        callback = self._ref(verb.callback_url) if verb.callback_url else None

        def on_event(event: ConferenceEvent) -> None:
            if callback is None or names.conference_params is None:
                return
            extra = names.conference_params(event)
            if extra is not None:
                params = self.call.base_params()
                params.update(extra)
                self.call.notify(callback, verb.callback_method, params)

        def record_path(fmt: str) -> tuple[str, str, str]:
            recording_id = str(uuid.uuid4())
            self.recordings_dir.mkdir(parents=True, exist_ok=True)
            name = f"{verb.record_file_name or recording_id}.{fmt}"
            return str(self.recordings_dir / name), self.recording_url(name), recording_id

        makers: dict[str, Callable[[], Awaitable[Any]]] = {}

        async def sound(url: str) -> Any:
            ref = self._ref(url)
            maker = makers.get(ref)
            if maker is None:
                # the wait sound is fetched with wait_method, enter/exit sounds with POST
                method = verb.wait_method if url == verb.wait_sound else "POST"
                maker = makers[ref] = await self._sound_maker(
                    ref, method, document=verb.sounds_are_documents or not _is_audio_url(ref)
                )
            return await maker()

        result = await self.call.conference(
            verb, on_event=on_event, record_path=record_path, sound=sound
        )
        if verb.action is None or names.conference_params is None:
            return None
        params = self.call.base_params()
        params.update(names.conference_params(result) or {})
        return self._after(verb.action, verb.method, params, verb.redirect)

    async def _sound_maker(
        self, url: str, method: str, *, document: bool
    ) -> Callable[[], Awaitable[Any]]:
        """How to make a source for a conference sound (enter/exit/wait): an audio file, or
        (``document``) a document of ``Play``/``Speak``/``Wait`` verbs fetched once with
        ``method``, its parts played in order each time a source is made."""
        if not document:
            path = await self.media_cache.path_for(url)
            return lambda: self._file_source(path)
        fetched = self._parse(await self.call.fetch_xml(url, method, self.call.base_params()))
        parts: list[tuple[str, Any]] = []
        for verb in fetched.verbs:
            loops = min(getattr(verb, "loop", 1) or MAX_LOOPS, 100)
            if isinstance(verb, Play):
                parts += [("file", await self.media_cache.path_for(self._ref(verb.url)))] * loops
            elif isinstance(verb, Speak):
                voice = espeak_voice(verb.voice, verb.language)
                parts += [
                    ("pcm", await self.tts_cache.get(verb.text, voice, self.media.tts))
                ] * loops
            elif isinstance(verb, Wait):
                parts.append(("silence", verb.length * 1000))
        if not parts:
            raise XmlAppError("has no Play, Speak or Wait to play", element="Conference")

        async def make() -> Any:
            sources = []
            for kind, value in parts:
                if kind == "file":
                    sources.append(await self._file_source(value))
                elif kind == "pcm":
                    sources.append(self.media.pcm(value))
                else:
                    sources.append(self.media.silence(value))
            return _Sequence(sources)

        return make


def _is_audio_url(url: str) -> bool:
    """A sound URL naming an audio file by its extension (else it is a document)."""
    return urlsplit(url).path.lower().endswith((".wav", ".mp3"))


class _Sequence:
    """Sources played one after the other (a wait-sound document)."""

    def __init__(self, sources: list[Any]) -> None:
        self._sources = sources

    def read(self, n: int) -> Any:
        while self._sources:
            frame = self._sources[0].read(n)
            if frame is not None and len(frame):
                return frame
            self._sources.pop(0).close()
        return None

    def close(self) -> None:
        for source in self._sources:
            source.close()
        self._sources = []


def _put(params: dict[str, str], name: str | None, value: str) -> None:
    """Post ``value`` under the vocabulary's ``name``; a vocabulary without one posts nothing."""
    if name is not None:
        params[name] = value


__all__ = [
    "BEEP_DURATION_MS",
    "BEEP_FREQS_HZ",
    "BEEP_LEVEL_DBM0",
    "CAUSE_END_OF_XML",
    "CAUSE_SCHEDULED_HANGUP",
    "HANGUP_REASON_CAUSES",
    "Application",
    "ParseDocument",
]
