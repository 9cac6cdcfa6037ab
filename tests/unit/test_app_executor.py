"""XmlApplication against a recording fake CallControl, with real HTTP servers on loopback
serving the answer/action/redirect documents and the audio files."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import shutil
import subprocess
import wave
from collections import deque
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from softswitch.api.plivo.xml import RESULT_PARAMS, XmlApplication, parse_response
from softswitch.app.control import (
    CallControl,
    CallHungUp,
    DialResult,
    FetchError,
    RecordingResult,
)
from softswitch.app.document import (
    CAUSE_FETCH_FAILED,
    CAUSE_INVALID_XML,
    XmlAppError,
)
from softswitch.app.executor import Application
from softswitch.app.sources import MediaCache, TtsCache, espeak_voice
from softswitch.app.verbs import Dial, Document
from tests.peers.webhooks import WebhookReceiver


def wav_bytes(ms: int = 100) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x00" * (8 * ms))
    return buf.getvalue()


# --- the HTTP side ----------------------------------------------------------------------------


def response(verbs: str) -> str:
    """A whole document around ``verbs``."""
    return f"<Response>{verbs}</Response>"


@pytest.fixture
async def server(webhook_receiver: Any) -> WebhookReceiver:
    """The user's web app: documents and files by path, 404 elsewhere; records every request."""
    return await webhook_receiver(respond=(404, "not found", "text/plain"))


# --- the call side ----------------------------------------------------------------------------


class FakeMedia:
    """Sources as plain tuples, so tests can see what was played."""

    def __init__(self) -> None:
        self.tts_calls: list[tuple[str, str]] = []

    def silence(self, duration_ms: int) -> Any:
        return ("silence", duration_ms)

    def tone(self, freqs_hz: Any, duration_ms: int, level_dbm0: float) -> Any:
        return ("tone", tuple(freqs_hz), duration_ms)

    def pcm(self, samples: Any) -> Any:
        return ("pcm", samples)

    def file(self, path: str) -> Any:
        return ("file", path)

    async def tts(self, text: str, voice: str) -> Any:
        self.tts_calls.append((text, voice))
        return f"{voice}:{text}"


class FakeCall:
    """Records what the executor asked; DTMF comes from a scripted key queue.

    ``keys``: keys the caller presses, in order; ``None`` is a pause long enough for any
    timeout. A key is taken by an interruptible prompt if it is next in the queue.
    """

    def __init__(
        self, session: aiohttp.ClientSession, keys: list[str | None] | None = None
    ) -> None:
        self.call_uuid = "a-leg-uuid"
        self.session = session
        self.keys: deque[str | None] = deque(keys or [])
        self.ops: list[tuple[str, Any]] = []
        self.notified: list[tuple[str, str, dict[str, str]]] = []
        self.hangups: list[tuple[str, str | None]] = []
        self.dial_result = DialResult(
            status="completed", hangup_cause="NORMAL_CLEARING", b_leg_uuid="b-leg", rang=True
        )
        self.hang_up_on_play: int | None = None
        self._answered = True
        self._hung_up = False

    @property
    def answered(self) -> bool:
        return self._answered

    @property
    def hung_up(self) -> bool:
        return self._hung_up

    def base_params(self) -> dict[str, str]:
        return {
            "CallUUID": self.call_uuid,
            "From": "+15550001",
            "To": "+15550002",
            "Direction": "outbound",
        }

    async def fetch_xml(self, url: str, method: str, params: Mapping[str, str]) -> str:
        self.ops.append(("fetch", (method, url)))
        kwargs: dict[str, Any] = (
            {"params": dict(params)} if method == "GET" else {"data": dict(params)}
        )
        try:
            async with self.session.request(method, url, **kwargs) as resp:
                if resp.status != 200:
                    raise FetchError(f"HTTP {resp.status}")
                return await resp.text()
        except aiohttp.ClientError as exc:
            raise FetchError(str(exc)) from exc

    def notify(self, url: str, method: str, params: Mapping[str, str]) -> None:
        self.notified.append((url, method, dict(params)))

    async def play(self, source: Any, *, interrupt_on_digit: bool = False) -> str | None:
        self.ops.append(("play", (source, interrupt_on_digit)))
        if self.hang_up_on_play is not None:
            self.hang_up_on_play -= 1
            if self.hang_up_on_play < 0:
                self._hung_up = True
                raise CallHungUp
        if interrupt_on_digit and self.keys and self.keys[0] is not None:
            return self.keys.popleft()
        return None

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
        self.ops.append(
            ("collect", (num_digits, timeout_s, digit_timeout_s, finish_on_key, first_digit))
        )
        digits = ""
        pending = [first_digit] if first_digit is not None else []
        while True:
            if pending:
                key = pending.pop()
            elif self.keys:
                key = self.keys.popleft()
            else:
                key = None
            if key is None:
                return digits, "timeout"
            if finish_on_key and key == finish_on_key:
                return digits, "finish_key"
            digits += key
            if key not in valid_digits:
                return digits, "invalid"
            if len(digits) >= num_digits:
                return digits, "num_digits"

    async def send_digits(self, digits: str) -> None:
        self.ops.append(("send_digits", digits))

    async def wait(
        self,
        seconds: float,
        *,
        until_silence: bool = False,
        min_silence_ms: int = 2000,
        until_beep: bool = False,
    ) -> None:
        self.ops.append(("wait", (seconds, until_silence, min_silence_ms, until_beep)))

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
        self.ops.append(
            ("record", (path, max_length_s, timeout_s, finish_on_key, play_beep, file_format))
        )
        Path(path).write_bytes(wav_bytes())
        return RecordingResult(
            duration_ms=3200, start_ms=1_700_000_000_000, end_ms=1_700_000_003_200, digits="#"
        )

    async def dial(self, dial: Dial) -> DialResult:
        self.ops.append(("dial", dial))
        return self.dial_result

    async def hangup(self, cause: str, reason: str | None = None) -> None:
        self.hangups.append((cause, reason))
        self._hung_up = True

    def kinds(self) -> list[str]:
        return [op for op, _ in self.ops]

    def played(self) -> list[Any]:
        return [args[0] for op, args in self.ops if op == "play"]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
        yield s


@pytest.fixture
def media() -> FakeMedia:
    return FakeMedia()


def make_app(call: FakeCall, media: FakeMedia, tmp_path: Path, **kw: Any) -> XmlApplication:
    return XmlApplication(
        call,
        data_dir=tmp_path,
        recording_url_base="http://softswitch.test/v1/Recording/",
        media=media,
        tts_cache=TtsCache(),
        **kw,
    )


def test_fake_call_satisfies_protocol(session: aiohttp.ClientSession) -> None:
    assert isinstance(FakeCall(session), CallControl)


# --- GetDigits ------------------------------------------------------------------------------


async def test_get_digits_first_digit_interrupts_nested_speak_and_action_continues(
    server: WebhookReceiver, session: aiohttp.ClientSession, media: FakeMedia, tmp_path: Path
) -> None:
    server.xml("/action", response("<Speak>You pressed twelve</Speak>"))
    call = FakeCall(session, keys=["1", "2", "#"])
    app = make_app(call, media, tmp_path)
    await app.run(
        f'<Response><GetDigits action="{server.url("/action")}" timeout="7" digitTimeout="3">'
        "<Speak>Press digits then pound</Speak><Speak>Second prompt</Speak></GetDigits>"
        "<Speak>never reached</Speak></Response>",
        server.url("/answer"),
    )
    (params,) = server.params("/action")
    assert params["Digits"] == "12" and params["CallUUID"] == "a-leg-uuid"
    plays = call.played()
    # the first prompt was interrupted by "1": the second one never played
    assert plays[0] == ("pcm", "en-us+f3:Press digits then pound")
    assert ("pcm", "en-us+f3:Second prompt") not in plays
    assert ("pcm", "en-us+f3:never reached") not in plays
    assert plays[-1] == ("pcm", "en-us+f3:You pressed twelve")
    collect = next(args for op, args in call.ops if op == "collect")
    assert collect == (99, 7.0, 3.0, "#", "1")
    assert call.hangups == [("NORMAL_CLEARING", "End Of XML Instructions")]


async def test_get_digits_retries_with_invalid_digits_sound(
    server: WebhookReceiver, session: aiohttp.ClientSession, media: FakeMedia, tmp_path: Path
) -> None:
    server.routes["/invalid.wav"] = (200, wav_bytes(), "audio/wav")
    server.xml("/action", response(""))
    call = FakeCall(session, keys=[None, "9", "1"])
    app = make_app(call, media, tmp_path)
    await app.run(
        f'<Response><GetDigits action="{server.url("/action")}" numDigits="1" retries="3" '
        f'validDigits="12" invalidDigitsSound="{server.url("/invalid.wav")}">'
        "<Speak>Press one or two</Speak></GetDigits></Response>",
        server.url("/answer"),
    )
    assert [p["Digits"] for p in server.params("/action")] == ["1"]
    collects = [args for op, args in call.ops if op == "collect"]
    assert len(collects) == 3  # timeout, invalid 9, then 1
    invalid_plays = [p for p in call.played() if p[0] == "file"]
    assert len(invalid_plays) == 1 and invalid_plays[0][1].endswith(".wav")
    assert len(server.params("/invalid.wav")) == 1
    # the prompt is replayed on each attempt
    assert call.played().count(("pcm", "en-us+f3:Press one or two")) == 3


async def test_get_digits_finish_key_collects_until_key(
    server: WebhookReceiver, session: aiohttp.ClientSession, media: FakeMedia, tmp_path: Path
) -> None:
    server.xml("/action", response(""))
    call = FakeCall(session, keys=["4", "5", "*", "6"])
    app = make_app(call, media, tmp_path)
    await app.run(
        f'<Response><GetDigits action="{server.url("/action")}" finishOnKey="*" method="GET"/></Response>',
        server.url("/answer"),
    )
    assert [p["Digits"] for p in server.params("/action")] == ["45"]
    assert server.requests[-1].method == "GET"
    assert list(call.keys) == ["6"]


async def test_get_digits_timeout_goes_to_next_verb(
    server: WebhookReceiver, session: aiohttp.ClientSession, media: FakeMedia, tmp_path: Path
) -> None:
    call = FakeCall(session, keys=[])
    app = make_app(call, media, tmp_path)
    await app.run(
        f'<Response><GetDigits action="{server.url("/action")}" retries="2"><Speak>Menu</Speak></GetDigits>'
        "<Speak>No input, goodbye</Speak></Response>",
        server.url("/answer"),
    )
    assert server.params("/action") == []
    assert call.played()[-1] == ("pcm", "en-us+f3:No input, goodbye")
    assert call.kinds().count("collect") == 2
    assert call.hangups == [("NORMAL_CLEARING", "End Of XML Instructions")]


async def test_get_digits_redirect_false_notifies_and_continues(
    server: WebhookReceiver, session: aiohttp.ClientSession, media: FakeMedia, tmp_path: Path
) -> None:
    call = FakeCall(session, keys=["7", "#"])
    app = make_app(call, media, tmp_path)
    await app.run(
        f'<Response><GetDigits action="{server.url("/action")}" redirect="false" playBeep="true"/>'
        "<Speak>Thanks</Speak></Response>",
        server.url("/answer"),
    )
    assert server.params("/action") == []  # not fetched...
    ((url, method, params),) = call.notified  # ...only notified
    assert (url, method, params["Digits"]) == (server.url("/action"), "POST", "7")
    assert call.played()[0] == ("tone", (700.0,), 300)  # playBeep; "7" interrupted it
    assert call.played()[-1] == ("pcm", "en-us+f3:Thanks")


async def test_get_input_dtmf(
    server: WebhookReceiver, session: aiohttp.ClientSession, media: FakeMedia, tmp_path: Path
) -> None:
    server.xml("/input", response("<Hangup/>"))
    call = FakeCall(session, keys=["3", "3", "#"])
    app = make_app(call, media, tmp_path)
    await app.run(
        f'<Response><GetInput action="{server.url("/input")}" inputType="dtmf speech" '
        'executionTimeout="9" digitEndTimeout="4"><Speak language="fr-FR" voice="MAN">Bonjour</Speak>'
        "</GetInput></Response>",
        server.url("/answer"),
    )
    (params,) = server.params("/input")
    assert (params["InputType"], params["Digits"]) == ("dtmf", "33")
    assert call.played()[0] == ("pcm", "fr-fr+m3:Bonjour")
    collect = next(args for op, args in call.ops if op == "collect")
    assert collect[:4] == (32, 9.0, 4.0, "#")
    assert call.hangups == [("NORMAL_CLEARING", "Hangup XML")]


async def test_executor_posts_results_under_the_vocabulary_names(
    server: WebhookReceiver, session: aiohttp.ClientSession, media: FakeMedia, tmp_path: Path
) -> None:
    # The neutral executor with another vocabulary's names: same verbs, other parameter
    # names, and a name the vocabulary lacks (None) is not posted at all.
    names = dataclasses.replace(RESULT_PARAMS, digits="Keys", input_type=None)

    def parse(document: str | bytes, *, max_bytes: int = 100 * 1024) -> Document:
        return Document(parse_response(document, max_bytes=max_bytes), names)

    server.xml("/input", response("<Hangup/>"))
    call = FakeCall(session, keys=["3", "3", "#"])
    app = Application(
        call,
        parse_document=parse,
        data_dir=tmp_path,
        recording_url_base="http://softswitch.test/v1/Recording/",
        media=media,
        tts_cache=TtsCache(),
    )
    await app.run(
        f'<Response><GetInput action="{server.url("/input")}"/></Response>', server.url("/answer")
    )
    (params,) = server.params("/input")
    assert params["Keys"] == "33" and "Digits" not in params and "InputType" not in params
    assert params["CallUUID"] == "a-leg-uuid"


# --- Redirect, documents, errors ---------------------------------------------------------------


async def test_redirect_fetches_and_continues(
    server: WebhookReceiver, session: aiohttp.ClientSession, media: FakeMedia, tmp_path: Path
) -> None:
    server.xml("/next", response("<Speak>second document</Speak>"))
    call = FakeCall(session)
    app = make_app(call, media, tmp_path)
    await app.run(
        f'<Response><Redirect method="GET">{server.url("/next")}</Redirect><Speak>dropped</Speak></Response>',
        server.url("/answer"),
    )
    (req,) = server.requests
    method, path, params = req.method, req.path, req.params
    assert (method, path, params["CallUUID"]) == ("GET", "/next", "a-leg-uuid")
    assert call.played() == [("pcm", "en-us+f3:second document")]
    assert app.current_url == server.url("/next")


async def test_redirect_loop_is_bounded(
    server: WebhookReceiver, session: aiohttp.ClientSession, media: FakeMedia, tmp_path: Path
) -> None:
    loop_url = server.xml("/loop", response(f"<Redirect>{server.url('/loop')}</Redirect>"))
    call = FakeCall(session)
    app = make_app(call, media, tmp_path, max_redirects=3)
    with pytest.raises(XmlAppError, match="more than 3 redirects in a row"):
        await app.run(
            f"<Response><Redirect>{loop_url}</Redirect></Response>", server.url("/answer")
        )
    assert len(server.params("/loop")) == 3
    ((cause, reason),) = call.hangups
    assert cause == CAUSE_INVALID_XML and "redirect loop" in (reason or "")
    assert app.error is not None


async def test_redirect_loop_with_activity_is_bounded_by_documents(
    server: WebhookReceiver, session: aiohttp.ClientSession, media: FakeMedia, tmp_path: Path
) -> None:
    loop_url = server.xml("/loop", response(f"<Wait/><Redirect>{server.url('/loop')}</Redirect>"))
    call = FakeCall(session)
    app = make_app(call, media, tmp_path, max_redirects=2, max_documents=6)
    with pytest.raises(XmlAppError, match="more than 6 XML documents"):
        await app.run(
            f"<Response><Redirect>{loop_url}</Redirect></Response>", server.url("/answer")
        )
    assert len(server.params("/loop")) == 5


async def test_invalid_action_xml_ends_call_with_error(
    server: WebhookReceiver, session: aiohttp.ClientSession, media: FakeMedia, tmp_path: Path
) -> None:
    server.routes["/bad"] = (200, "<Response><Speak loop='x'>hi</Speak></Response>", "text/xml")
    call = FakeCall(session)
    app = make_app(call, media, tmp_path)
    with pytest.raises(XmlAppError) as info:
        await app.run(
            f"<Response><Redirect>{server.url('/bad')}</Redirect></Response>", server.url("/answer")
        )
    assert str(info.value) == "<Speak> attribute 'loop': must be an integer (got 'x')"
    assert call.hangups == [(CAUSE_INVALID_XML, str(info.value))]


async def test_fetch_failure_ends_call(
    server: WebhookReceiver, session: aiohttp.ClientSession, media: FakeMedia, tmp_path: Path
) -> None:
    call = FakeCall(session)
    app = make_app(call, media, tmp_path)
    with pytest.raises(XmlAppError, match="HTTP 404") as info:
        await app.run(
            f"<Response><Redirect>{server.url('/missing')}</Redirect></Response>", server.url("/a")
        )
    assert info.value.cause == CAUSE_FETCH_FAILED
    assert call.hangups[0][0] == CAUSE_FETCH_FAILED


async def test_invalid_answer_xml_tries_fallback_url(
    server: WebhookReceiver, session: aiohttp.ClientSession, media: FakeMedia, tmp_path: Path
) -> None:
    fallback = server.xml("/fallback", response("<Speak>fallback speaking</Speak>"))
    call = FakeCall(session)
    app = make_app(call, media, tmp_path, fallback_url=fallback)
    await app.run("this is not xml", server.url("/answer"))
    assert len(server.params("/fallback")) == 1
    assert call.played() == [("pcm", "en-us+f3:fallback speaking")]
    assert call.hangups == [("NORMAL_CLEARING", "End Of XML Instructions")]


async def test_unreachable_answer_url_tries_fallback_then_fails(
    server: WebhookReceiver, session: aiohttp.ClientSession, media: FakeMedia, tmp_path: Path
) -> None:
    server.routes["/fallback"] = (200, "<Response><Unknown/></Response>", "text/xml")
    call = FakeCall(session)
    app = make_app(
        call, media, tmp_path, fallback_url=server.url("/fallback"), fallback_method="GET"
    )
    with pytest.raises(XmlAppError, match="<Unknown>: unknown element"):
        await app.start(server.url("/answer-missing"))
    assert [(r.method, r.path) for r in server.requests] == [
        ("POST", "/answer-missing"),
        ("GET", "/fallback"),
    ]
    assert call.hangups[0][0] == CAUSE_INVALID_XML


async def test_start_fetches_answer_url(
    server: WebhookReceiver, session: aiohttp.ClientSession, media: FakeMedia, tmp_path: Path
) -> None:
    answer = server.xml("/answer", response("<Wait length='2'/>"))
    call = FakeCall(session)
    await make_app(call, media, tmp_path).start(answer, "GET")
    assert (server.requests[0].method, server.requests[0].path) == ("GET", "/answer")
    assert ("wait", (2, False, 2000, False)) in call.ops


# --- other verbs --------------------------------------------------------------------------------


async def test_record_posts_action_params_and_callback(
    server: WebhookReceiver, session: aiohttp.ClientSession, media: FakeMedia, tmp_path: Path
) -> None:
    server.xml("/recorded", response("<Speak>Thanks</Speak>"))
    call = FakeCall(session)
    app = make_app(call, media, tmp_path)
    await app.run(
        f'<Response><Record action="{server.url("/recorded")}" maxLength="30" timeout="5" '
        f'finishOnKey="#*" playBeep="true" fileFormat="wav" callbackUrl="{server.url("/cb")}"/>'
        "</Response>",
        server.url("/answer"),
    )
    (params,) = server.params("/recorded")
    rid = params["RecordingID"]
    assert params["RecordUrl"] == f"http://softswitch.test/v1/Recording/{rid}.wav"
    assert params["RecordingDuration"] == "3"
    assert params["RecordingDurationMs"] == "3200"
    assert params["RecordingStartMs"] == "1700000000000"
    assert params["RecordingEndMs"] == "1700000003200"
    assert params["Digits"] == "#" and params["CallUUID"] == "a-leg-uuid"
    ((cb_url, cb_method, cb_params),) = call.notified
    assert (cb_url, cb_method, cb_params["RecordingID"]) == (server.url("/cb"), "POST", rid)
    (rec,) = [args for op, args in call.ops if op == "record"]
    assert rec[0] == str(tmp_path / "recordings" / f"{rid}.wav")
    assert rec[1:] == (30, 5, "#*", True, "wav")
    assert (tmp_path / "recordings" / f"{rid}.wav").is_file()


async def test_record_without_action_continues(
    session: aiohttp.ClientSession, media: FakeMedia, tmp_path: Path
) -> None:
    call = FakeCall(session)
    await make_app(call, media, tmp_path).run(
        "<Response><Record/><Speak>after</Speak></Response>", "http://x/"
    )
    assert call.kinds()[:2] == ["record", "play"]


async def test_hangup_reason(
    session: aiohttp.ClientSession, media: FakeMedia, tmp_path: Path
) -> None:
    call = FakeCall(session)
    await make_app(call, media, tmp_path).run(
        '<Response><Hangup reason="busy"/><Speak>not spoken</Speak></Response>', "http://x/"
    )
    assert call.hangups == [("USER_BUSY", "Hangup XML (busy)")]
    assert call.played() == []


async def test_hangup_rejected(
    session: aiohttp.ClientSession, media: FakeMedia, tmp_path: Path
) -> None:
    call = FakeCall(session)
    await make_app(call, media, tmp_path).run(
        '<Response><Hangup reason="rejected"/></Response>', "x"
    )
    assert call.hangups[0][0] == "CALL_REJECTED"


async def test_scheduled_hangup_lets_xml_continue(
    session: aiohttp.ClientSession, media: FakeMedia, tmp_path: Path
) -> None:
    call = FakeCall(session)
    app = make_app(call, media, tmp_path)
    await app.run('<Response><Hangup schedule="60"/><Speak>still here</Speak></Response>', "x")
    assert call.played() == [("pcm", "en-us+f3:still here")]
    assert call.hangups == [("NORMAL_CLEARING", "End Of XML Instructions")]
    assert not app._tasks  # the scheduled hangup was cancelled with the application


async def test_wait(session: aiohttp.ClientSession, media: FakeMedia, tmp_path: Path) -> None:
    call = FakeCall(session)
    await make_app(call, media, tmp_path).run(
        '<Response><Wait length="5" silence="true" minSilence="500"/><Wait length="30" beep="true"/>'
        '<Wait length="3" silence="true" beep="true"/></Response>',
        "x",
    )
    waits = [args for op, args in call.ops if op == "wait"]
    assert waits == [(5, True, 500, False), (30, False, 2000, True), (3, True, 2000, False)]


async def test_dtmf_sync_and_async(
    session: aiohttp.ClientSession, media: FakeMedia, tmp_path: Path
) -> None:
    call = FakeCall(session)
    await make_app(call, media, tmp_path).run(
        '<Response><DTMF async="false">12w3</DTMF><DTMF>#9</DTMF><Wait/></Response>', "x"
    )
    sent = [args for op, args in call.ops if op == "send_digits"]
    assert sent == ["12w3", "#9"]


async def test_dial_posts_dial_status(
    server: WebhookReceiver, session: aiohttp.ClientSession, media: FakeMedia, tmp_path: Path
) -> None:
    server.xml("/dialed", response(""))
    call = FakeCall(session)
    call.dial_result = DialResult(status="busy", hangup_cause="USER_BUSY", b_leg_uuid="", rang=True)
    await make_app(call, media, tmp_path).run(
        f'<Response><Dial action="{server.url("/dialed")}" timeout="15" callerId="+15550009">'
        '<Number sendDigits="1w2">+15550003</Number><User>sip:bob@127.0.0.1</User></Dial></Response>',
        "x",
    )
    (params,) = server.params("/dialed")
    assert params["DialStatus"] == "busy"
    assert params["DialHangupCause"] == "USER_BUSY"
    assert params["DialRingStatus"] == "true"
    assert params["DialALegUUID"] == "a-leg-uuid" and params["DialBLegUUID"] == ""
    (dial,) = [args for op, args in call.ops if op == "dial"]
    assert dial.timeout == 15 and dial.caller_id == "+15550009" and len(dial.numbers) == 2


async def test_dial_after_a_leg_hung_up_only_notifies(
    server: WebhookReceiver, session: aiohttp.ClientSession, media: FakeMedia, tmp_path: Path
) -> None:
    call = FakeCall(session)

    async def dial_then_hang_up(dial: Dial) -> DialResult:
        call._hung_up = True
        return DialResult(
            status="completed", hangup_cause="NORMAL_CLEARING", b_leg_uuid="b", rang=True
        )

    call.dial = dial_then_hang_up  # type: ignore[method-assign]
    await make_app(call, media, tmp_path).run(
        f'<Response><Dial action="{server.url("/dialed")}"><Number>1</Number></Dial></Response>',
        "x",
    )
    assert server.requests == []
    assert call.notified[0][2]["DialBLegUUID"] == "b"
    assert call.hangups == []


async def test_pre_answer_on_answered_call_runs_nothing(
    session: aiohttp.ClientSession, media: FakeMedia, tmp_path: Path
) -> None:
    call = FakeCall(session)
    await make_app(call, media, tmp_path).run(
        "<Response><PreAnswer><Speak>early</Speak></PreAnswer><Speak>answered</Speak></Response>",
        "x",
    )
    assert call.played() == [("pcm", "en-us+f3:answered")]


async def test_hangup_during_playback_stops_quietly(
    session: aiohttp.ClientSession, media: FakeMedia, tmp_path: Path
) -> None:
    call = FakeCall(session)
    call.hang_up_on_play = 1
    app = make_app(call, media, tmp_path)
    await app.run('<Response><Speak loop="0">forever</Speak><Speak>next</Speak></Response>', "x")
    assert len(call.played()) == 2
    assert call.hangups == [] and app.error is None


async def test_cancelling_run_cancels_async_work(
    session: aiohttp.ClientSession, media: FakeMedia, tmp_path: Path
) -> None:
    call = FakeCall(session)
    started = asyncio.Event()

    async def slow_play(source: Any, *, interrupt_on_digit: bool = False) -> str | None:
        started.set()
        await asyncio.sleep(30)
        return None

    call.play = slow_play  # type: ignore[method-assign]
    app = make_app(call, media, tmp_path)
    task = asyncio.create_task(
        app.run('<Response><Hangup schedule="30"/><Speak>x</Speak></Response>', "x")
    )
    await asyncio.wait_for(started.wait(), 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not app._tasks


async def test_speak_tts_cached_per_text_and_voice(
    session: aiohttp.ClientSession, media: FakeMedia, tmp_path: Path
) -> None:
    call = FakeCall(session)
    await make_app(call, media, tmp_path).run(
        '<Response><Speak loop="2">hello</Speak><Speak>hello</Speak><Speak voice="MAN">hello</Speak></Response>',
        "x",
    )
    assert media.tts_calls == [("hello", "en-us+f3"), ("hello", "en-us+m3")]
    assert len(call.played()) == 4


def test_espeak_voice_mapping() -> None:
    assert espeak_voice("WOMAN", "en-US") == "en-us+f3"
    assert espeak_voice("MAN", "en-GB") == "en-gb+m3"
    assert espeak_voice("WOMAN", "en-AU") == "en-gb+f3"
    assert espeak_voice("WOMAN", "es-US") == "es-419+f3"
    assert espeak_voice("MAN", "de-DE") == "de+m3"
    assert espeak_voice("WOMAN", "pt-BR") == "pt-br+f3"
    assert espeak_voice("Polly.Joanna", "fr-CA") == "fr-fr+f3"
    assert espeak_voice("WOMAN", "xx-YY") == "en-us+f3"


@pytest.mark.peer
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_mapped_languages_exist_in_espeak_ng() -> None:
    from softswitch.app import sources

    out = subprocess.run(
        ["espeak-ng", "--voices"], capture_output=True, text=True, timeout=10
    ).stdout
    names = {line.split()[1] for line in out.splitlines()[1:] if line.split()}
    assert sources._ESPEAK_LANGS <= names


# --- Play and the media cache ----------------------------------------------------------------------


async def test_play_url_downloaded_once_and_looped(
    server: WebhookReceiver, session: aiohttp.ClientSession, media: FakeMedia, tmp_path: Path
) -> None:
    server.routes["/hello.wav"] = (200, wav_bytes(), "audio/x-wav")
    call = FakeCall(session)
    await make_app(call, media, tmp_path).run(
        f'<Response><Play loop="3">{server.url("/hello.wav")}</Play>'
        f"<Play>{server.url('/hello.wav')}</Play></Response>",
        "x",
    )
    assert len(server.params("/hello.wav")) == 1
    plays = call.played()
    assert len(plays) == 4 and len({p for p in plays}) == 1
    path = Path(plays[0][1])
    assert path.parent == tmp_path / "cache" / "media" and path.suffix == ".wav"
    assert path.read_bytes() == wav_bytes()


async def test_play_url_mp3_sniffed(server: WebhookReceiver, tmp_path: Path) -> None:
    server.routes["/a"] = (200, b"ID3\x03\x00" + b"\x00" * 100, "audio/mpeg")
    path = await MediaCache(tmp_path).path_for(server.url("/a"))
    assert path.endswith(".mp3")


async def test_play_url_wrong_content_type_or_too_big(
    server: WebhookReceiver, tmp_path: Path
) -> None:
    server.routes["/page"] = (200, b"<html></html>", "text/html")
    server.routes["/big.wav"] = (200, wav_bytes(1000), "audio/wav")
    server.routes["/fake.wav"] = (200, b"not audio at all", "audio/wav")
    cache = MediaCache(tmp_path, max_bytes=4000)
    with pytest.raises(XmlAppError, match="content type 'text/html'"):
        await cache.path_for(server.url("/page"))
    with pytest.raises(XmlAppError, match="larger than 4000 bytes"):
        await cache.path_for(server.url("/big.wav"))
    with pytest.raises(XmlAppError, match="neither WAV nor MP3"):
        await cache.path_for(server.url("/fake.wav"))
    with pytest.raises(XmlAppError, match="HTTP 404"):
        await cache.path_for(server.url("/missing.wav"))
    assert list(tmp_path.iterdir()) == []  # no partial files left


async def test_play_local_paths_confined(
    session: aiohttp.ClientSession, media: FakeMedia, tmp_path: Path
) -> None:
    sounds = tmp_path / "sounds"
    sounds.mkdir()
    (sounds / "a.wav").write_bytes(wav_bytes())
    call = FakeCall(session)
    await make_app(call, media, tmp_path).run(
        f"<Response><Play>{sounds / 'a.wav'}</Play><Play>file://{sounds / 'a.wav'}</Play></Response>",
        "x",
    )
    assert call.played() == [("file", str(sounds / "a.wav"))] * 2
    call = FakeCall(session)
    with pytest.raises(XmlAppError, match="outside the allowed media directories"):
        await make_app(call, media, tmp_path).run(
            "<Response><Play>/etc/passwd</Play></Response>", "x"
        )
    assert call.hangups and call.hangups[0][0] == CAUSE_INVALID_XML


# --- the real media.play, when present ---------------------------------------------------------------


@pytest.mark.peer
async def test_real_media_factory_speaks() -> None:
    pytest.importorskip("media.play")
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    from softswitch.app.sources import PlayModuleMedia

    factory = PlayModuleMedia()
    pcm = await factory.tts("hello", espeak_voice("WOMAN", "en-US"))
    assert len(pcm) > 1000
    assert factory.pcm(pcm) is not None
    assert factory.silence(100) is not None


# --- a vocabulary that writes relative URLs (TwiML) -----------------------------------------


def twiml_app(call: FakeCall, media: FakeMedia, tmp_path: Path) -> Application:
    from softswitch.api.callapi.twiml import parse_document as parse_twiml

    return Application(
        call,
        parse_document=parse_twiml,
        data_dir=tmp_path,
        recording_url_base="http://softswitch.test/2010-04-01/Recordings/",
        media=media,
        tts_cache=TtsCache(),
    )


async def test_relative_urls_resolve_against_the_document_and_gather_posts_to_it(
    server: WebhookReceiver, session: aiohttp.ClientSession, media: FakeMedia, tmp_path: Path
) -> None:
    server.routes["/hello.wav"] = (200, wav_bytes(), "audio/x-wav")
    # A Gather without action posts its digits to the document's own URL; the second time
    # no key comes, so it goes on with the next verb (the end).
    server.xml("/app/next", "<Response><Gather numDigits='2'/></Response>")
    call = FakeCall(session, keys=["4", "2"])
    await twiml_app(call, media, tmp_path).run(
        "<Response><Play>../hello.wav</Play><Redirect method='GET'>next?x=1</Redirect></Response>",
        server.url("/app/answer"),
    )
    assert len(server.params("/hello.wav")) == 1
    first, second = (r for r in server.requests if r.path == "/app/next")
    assert (first.method, first.params["x"]) == ("GET", "1")
    assert second.method == "POST" and second.params["Digits"] == "42"
    assert second.query == {"x": "1"}  # the URL of the running document, query included
    assert call.hangups == [("NORMAL_CLEARING", "End Of XML Instructions")]


async def test_twiml_dial_result_in_twilio_words(
    server: WebhookReceiver, session: aiohttp.ClientSession, media: FakeMedia, tmp_path: Path
) -> None:
    import uuid

    server.xml("/app/dialed", "<Response><Dial action='/dialed2'>+15550004</Dial></Response>")
    server.xml("/dialed2", "<Response/>")
    call = FakeCall(session)
    b_leg = str(uuid.uuid4())
    results = [
        DialResult(status="timeout", hangup_cause="NO_USER_RESPONSE", b_leg_uuid="", rang=False),
        DialResult("completed", "NORMAL_CLEARING", b_leg, True, duration_s=7),
    ]
    real_dial = call.dial

    async def dial(verb: Dial) -> DialResult:
        await real_dial(verb)
        return results.pop(0)

    call.dial = dial  # type: ignore[method-assign]
    await twiml_app(call, media, tmp_path).run(
        "<Response><Dial action='dialed'>+15550003</Dial></Response>", server.url("/app/answer")
    )
    (first,) = server.params("/app/dialed")
    assert first["DialCallStatus"] == "no-answer" and first["DialCallDuration"] == "0"
    assert "DialCallSid" not in first
    (second,) = server.params("/dialed2")
    assert second["DialCallStatus"] == "completed" and second["DialCallDuration"] == "7"
    assert second["DialCallSid"] == "CA" + uuid.UUID(b_leg).hex
