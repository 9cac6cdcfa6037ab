"""Plivo XML applications on real calls (issue 5): LiveCallControl + XmlApplication over our
user agent, against real peers on loopback.

* baresip is the callee that records what it hears: Speak/Play carry speech of the right
  length, Wait is silence, Record's beep is a 1 kHz tone, and baresip's own audio (a
  greeting, a voicemail beep) ends ``<Wait silence/beep>``;
* sipp plays RFC 2833 digit captures for GetDigits and Record's finishOnKey;
* Dial bridges a call to a sipp UAS that plays a speech capture (g711a.pcap) to a baresip
  callee, and the speech crosses; busy/no-answer B legs give DialStatus and the A leg goes
  on; either side hanging up ends the other.

XML documents come from a real aiohttp server on 127.0.0.1 whose action URLs record what
they receive.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import wave
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from media.play import decode_audio, tts_to_pcm
from media.record import mp3_encoder_name
from sip import causes
from softswitch.api.plivo.xml import parse_document
from softswitch.app.control import FetchError
from softswitch.app.executor import Application
from softswitch.app.sources import espeak_voice
from softswitch.callcontrol import (
    DialDefaults,
    LiveCallControl,
    dial_status,
    frame_dbfs,
    run_xml_app,
)
from softswitch.ua import OutboundCall, UserAgent, UserAgentConfig
from tests.conftest import needs_sipp
from tests.peers.baresip import Baresip, needs_baresip, read_wav
from tests.peers.webhooks import WebhookReceiver

pytestmark = [pytest.mark.peer, needs_sipp]
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng missing")

RATE = 8000
FRAME = 160
VOICE = espeak_voice("WOMAN", "en-US")


# --- audio analysis ---------------------------------------------------------------------------


def levels(pcm: np.ndarray) -> np.ndarray:
    """dBFS of each 20 ms frame."""
    n = len(pcm) // FRAME
    return np.array([frame_dbfs(pcm[i * FRAME : (i + 1) * FRAME]) for i in range(n)])


def segments(
    pcm: np.ndarray, *, threshold: float = -40.0, gap_s: float = 0.6
) -> list[tuple[float, float]]:
    """Loud stretches (start, end) in seconds; quieter gaps shorter than ``gap_s`` are joined."""
    loud = levels(pcm) > threshold
    out: list[list[float]] = []
    for i, on in enumerate(loud):
        if not on:
            continue
        t = i * FRAME / RATE
        if out and t - out[-1][1] < gap_s:
            out[-1][1] = t + FRAME / RATE
        else:
            out.append([t, t + FRAME / RATE])
    return [(a, b) for a, b in out if b - a >= 0.1]


def dominant_hz(pcm: np.ndarray) -> float:
    x = np.asarray(pcm, dtype=np.float64) * np.hanning(len(pcm))
    spectrum = np.abs(np.fft.rfft(x))
    return float(np.argmax(spectrum) * RATE / len(pcm))


def write_wav(path: Path, pcm: np.ndarray, rate: int = RATE) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(pcm, dtype="<i2").tobytes())
    return path


def tone(hz: float, seconds: float, dbfs: float = -10.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (32767 * 10 ** (dbfs / 20) * np.sqrt(2) * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.int16)


def speech(text: str) -> np.ndarray:
    return np.asarray(tts_to_pcm(text, voice=VOICE), dtype=np.int16)


def pcap_audio(path: str) -> np.ndarray:
    """The decoded G.711 payload of a sipp RTP capture (Ethernet/IPv4/UDP, no options)."""
    from media.g711 import DECODERS

    data = Path(path).read_bytes()
    offset, chunks = 24, []
    while offset + 16 <= len(data):
        incl = int.from_bytes(data[offset + 8 : offset + 12], "little")
        packet = data[offset + 16 : offset + 16 + incl]
        offset += 16 + incl
        rtp = packet[42:]
        codec = {0: "PCMU", 8: "PCMA"}.get(rtp[1] & 0x7F)
        if codec is not None:
            chunks.append(DECODERS[codec](rtp[12:]))
    return np.concatenate(chunks).astype(np.int16)


def envelope_match(heard: np.ndarray, source: np.ndarray, window_s: float = 1.5) -> float:
    """How well the 20 ms level envelope of ``heard`` follows ``source``: the median, over
    consecutive ``window_s`` windows of ``heard``, of each window's best normalised
    correlation with ``source`` at any lag. Windowed, because a relay (and sipp's own pcap
    playback on a loaded machine) may slip a frame now and then: one global lag would
    penalise a slip that a listener never notices."""
    h, s = levels(heard), levels(source)
    h = np.maximum(np.where(np.isfinite(h), h, -90), -60)
    s = np.maximum(np.where(np.isfinite(s), s, -90), -60)
    size = int(window_s / 0.02)
    scores = []
    for start in range(0, len(h) - size + 1, size):
        a = h[start : start + size] - h[start : start + size].mean()
        if not (a * a).sum():
            continue  # a silent window says nothing either way
        best = -1.0
        for lag in range(0, len(s) - size + 1):
            b = s[lag : lag + size] - s[lag : lag + size].mean()
            denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
            if denom:
                best = max(best, float((a * b).sum()) / denom)
        scores.append(best)
    return float(np.median(scores)) if scores else -1.0


def baresip_heard(peer: Baresip) -> np.ndarray:
    peer.stop()  # flushes the WAV header
    path = peer.recording()
    assert path is not None, peer.log()
    return read_wav(path)


# --- the user's web application ---------------------------------------------------------------


@pytest.fixture
async def webapp(webhook_receiver: Any) -> WebhookReceiver:
    """XML documents and audio files by path (``xml``/``file``), 404 elsewhere."""
    return await webhook_receiver(respond=404)


@pytest.fixture
async def ua() -> AsyncIterator[UserAgent]:
    agent = UserAgent(UserAgentConfig(host="127.0.0.1", port=0))
    await agent.start()
    yield agent
    await agent.close()


class Http:
    """Plain aiohttp fetcher/notifier (production wires the signed webhook outbox)."""

    def __init__(self) -> None:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self.tasks: set[asyncio.Task[None]] = set()

    async def fetch(self, url: str, method: str, params: Mapping[str, str]) -> str:
        kw: dict[str, Any] = {"params": dict(params)} if method == "GET" else {"data": dict(params)}
        async with self.session.request(method, url, **kw) as resp:
            if resp.status != 200:
                raise FetchError(f"HTTP {resp.status}")
            return await resp.text()

    def notify(self, url: str, method: str, params: Mapping[str, str]) -> None:
        async def send() -> None:
            kw: dict[str, Any] = (
                {"params": dict(params)} if method == "GET" else {"data": dict(params)}
            )
            async with self.session.request(method, url, **kw) as resp:
                await resp.read()

        task = asyncio.get_running_loop().create_task(send())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def settle(self) -> None:
        """Wait until every callback sent so far got its answer."""
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=5)

    async def close(self) -> None:
        await self.settle()
        await self.session.close()


@pytest.fixture
async def http() -> AsyncIterator[Http]:
    client = Http()
    yield client
    await client.close()


class Run:
    """One call placed by our UA and driven by an XML application."""

    app: Application
    call: OutboundCall
    control: LiveCallControl
    answered_at: float
    ended_at: float
    b_legs: list[OutboundCall]


async def run_call(
    ua: UserAgent,
    http: Http,
    webapp: WebhookReceiver,
    target: str,
    answer_path: str,
    data_dir: Path,
    *,
    timeout: float = 40.0,
    fallback_path: str | None = None,
    xml: str | None = None,
) -> Run:
    run = Run()
    run.b_legs = []
    call = await ua.dial(target, from_user="15550001111")
    assert await asyncio.wait_for(call.wait_answered(), 10), call.terminated
    run.answered_at = time.monotonic()

    def base() -> dict[str, str]:
        return {
            "CallUUID": call.uuid,
            "From": "15550001111",
            "To": target,
            "Direction": "outbound",
            "CallStatus": "completed" if call.terminated else "in-progress",
        }

    run.call = call
    run.control = LiveCallControl(
        call,
        ua,
        base_params=base,
        fetcher=http.fetch,
        notifier=http.notify,
        data_dir=data_dir,
        dial_defaults=DialDefaults(on_b_leg=lambda leg, _to: run.b_legs.append(leg)),
    )
    run.app = await asyncio.wait_for(
        run_xml_app(
            run.control,
            answer_url=webapp.url(answer_path),
            answer_method="POST",
            fallback_url=webapp.url(fallback_path) if fallback_path else None,
            fallback_method="POST",
            data_dir=data_dir,
            recording_url_base="http://127.0.0.1:1/recordings",
            xml=xml,
            parse_document=parse_document,
        ),
        timeout,
    )
    await asyncio.wait_for(call.wait_terminated(), 10)
    run.ended_at = time.monotonic()
    await http.settle()  # the fire-and-forget callbacks have landed
    return run


# --- unit-level checks ---------------------------------------------------------------------------


def test_dial_status_mapping() -> None:
    assert dial_status(causes.USER_BUSY, dial_timed_out=False) == "busy"
    assert dial_status(causes.ORIGINATOR_CANCEL, dial_timed_out=True) == "no-answer"
    assert dial_status(causes.NO_ANSWER, dial_timed_out=False) == "no-answer"
    assert dial_status(causes.NO_USER_RESPONSE, dial_timed_out=False) == "timeout"
    assert dial_status(causes.CALL_REJECTED, dial_timed_out=False) == "failed"


def test_frame_dbfs() -> None:
    assert frame_dbfs(np.zeros(160, np.int16)) == -np.inf
    assert abs(frame_dbfs(tone(1000, 0.02, -10.0)) + 10.0) < 0.5


# --- documents -----------------------------------------------------------------------------------


async def test_answer_fails_fallback_runs(ua, http, webapp, sipp, tmp_path) -> None:
    peer = sipp("uas_answer.xml")
    webapp.xml("/fallback", '<Response><Hangup reason="busy"/></Response>')
    run = await run_call(ua, http, webapp, peer.uri, "/missing", tmp_path, fallback_path="/fb")
    # /missing and /fb both 404: the app records the error and hangs up with its cause.
    assert run.app.error is not None and run.app.error.cause == causes.NORMAL_TEMPORARY_FAILURE
    assert [r.path for r in webapp.requests] == ["/missing", "/fb"]
    assert run.call.terminated is not None
    assert run.call.terminated.hangup_source == "caller"
    await asyncio.to_thread(peer.assert_ok)

    peer = sipp("uas_answer.xml")
    run = await run_call(
        ua, http, webapp, peer.uri, "/missing", tmp_path, fallback_path="/fallback"
    )
    assert run.app.error is None
    assert webapp.requests[-1].path == "/fallback"
    assert webapp.requests[-1].params["CallUUID"] == run.call.uuid
    await asyncio.to_thread(peer.assert_ok)


async def test_prefetched_answer_xml_runs(ua, http, webapp, sipp, tmp_path) -> None:
    """The orchestration fetched answer_url itself and hands the document over."""
    peer = sipp("uas_answer.xml")
    run = await run_call(
        ua,
        http,
        webapp,
        peer.uri,
        "/answer",
        tmp_path,
        xml=f"<Response><Redirect>{webapp.url('/next')}</Redirect></Response>",
    )
    assert run.app.error is not None  # /next is 404: a fetch error ends the call
    assert [r.path for r in webapp.requests] == ["/next"]
    await asyncio.to_thread(peer.assert_ok)


# --- baresip hears what the XML plays ------------------------------------------------------------

SPEAK_TEXT = "Hello from the soft switch. This call is a test of speech."
PLAY_TEXT = "And this part comes from a wave file."


@needs_baresip
@needs_espeak
async def test_speak_wait_play_heard_by_baresip(ua, http, webapp, baresip, tmp_path) -> None:
    peer = baresip()
    # <Play> fetches a 22.05 kHz WAV straight from espeak-ng: the media cache downloads it
    # and the player resamples it to 8 kHz.
    raw = tmp_path / "play.wav"
    subprocess.run(["espeak-ng", "-v", VOICE, "-w", str(raw), PLAY_TEXT], check=True, timeout=30)
    play_url = webapp.file("/play.wav", raw.read_bytes())
    webapp.xml(
        "/answer",
        f'<Response><Speak>{SPEAK_TEXT}</Speak><Wait length="2"/>'
        f'<Play>{play_url}</Play><DTMF async="false">45</DTMF></Response>',
    )
    run = await run_call(ua, http, webapp, peer.uri, "/answer", tmp_path)
    assert run.app.error is None
    assert run.call.terminated is not None and run.call.terminated.cause == causes.NORMAL_CLEARING

    heard = baresip_heard(peer)
    spoken, played = speech(SPEAK_TEXT), decode_audio(str(raw))
    ((s0, s1),) = segments(spoken)
    ((p0, p1),) = segments(played)
    found = segments(heard)
    assert len(found) == 2, found
    (a0, a1), (b0, b1) = found
    # Each part lasts as long as its source's sound, within two frames or so.
    assert abs((a1 - a0) - (s1 - s0)) < 0.1, (found, (s0, s1))
    assert abs((b1 - b0) - (p1 - p0)) < 0.1, (found, (p0, p1))
    # Speech level survives G.711 both ways.
    assert np.median(levels(heard)[int(a0 * 50) : int(a1 * 50)]) > -40
    # <Wait length="2">: silence between the two, 2 s plus the sources' own quiet edges.
    gap = b0 - a1
    expected = 2.0 + (len(spoken) / RATE - s1) + p0
    assert abs(gap - expected) < 0.25, (gap, expected)
    quiet = levels(heard)[int(a1 * 50) + 2 : int(b0 * 50) - 2]
    assert quiet.size > 80 and np.max(quiet) < -60
    # <DTMF>: RFC 4733 events (baresip accepted telephone-event).
    assert [d for d, _ in peer.received_dtmf()] == ["4", "5"]


@needs_baresip
@needs_espeak
async def test_wait_beep_ends_on_voicemail_beep(ua, http, webapp, baresip, tmp_path) -> None:
    greeting = speech("Please leave a message")
    mic = np.concatenate([silence(0.3), greeting, silence(0.3), tone(1000, 0.4, -12), silence(20)])
    beep_end = 0.3 + len(greeting) / RATE + 0.3 + 0.4
    peer = baresip(play_wav=write_wav(tmp_path / "mic.wav", mic))
    webapp.xml(
        "/answer",
        '<Response><Wait length="20" beep="true"/><Speak>Your message after the beep</Speak></Response>',
    )
    run = await run_call(ua, http, webapp, peer.uri, "/answer", tmp_path)
    assert run.app.error is None
    heard = baresip_heard(peer)
    found = segments(heard)
    assert found, "baresip heard nothing"
    start = found[0][0]
    # The Speak starts right after the beep ended (not after the 20 s Wait).
    assert beep_end - 0.2 < start < beep_end + 1.5, (start, beep_end)
    assert run.ended_at - run.answered_at < 15


@needs_baresip
@needs_espeak
async def test_wait_silence_ends_after_greeting(ua, http, webapp, baresip, tmp_path) -> None:
    greeting = speech("Hello, you have reached the test line")
    ((g0, g1),) = segments(greeting)
    mic = np.concatenate([silence(0.5), greeting, silence(30)])
    greeting_end = 0.5 + g1
    peer = baresip(play_wav=write_wav(tmp_path / "mic.wav", mic))
    webapp.xml(
        "/answer",
        '<Response><Wait length="20" silence="true" minSilence="800"/>'
        "<Speak>Hello machine</Speak></Response>",
    )
    run = await run_call(ua, http, webapp, peer.uri, "/answer", tmp_path)
    assert run.app.error is None
    heard = baresip_heard(peer)
    found = segments(heard)
    assert found, "baresip heard nothing"
    start = found[0][0]
    # 800 ms of silence after the greeting ends the Wait (plus TTS lead-in).
    assert greeting_end + 0.6 < start < greeting_end + 2.0, (start, greeting_end)


@needs_baresip
@needs_espeak
async def test_record_beep_and_recording(ua, http, webapp, baresip, tmp_path) -> None:
    said = speech("This is my message for you. Goodbye.")
    mic = np.concatenate([silence(0.8), said, silence(30)])
    peer = baresip(play_wav=write_wav(tmp_path / "mic.wav", mic))
    webapp.xml(
        "/answer",
        f'<Response><Record action="{webapp.url("/recorded")}" maxLength="4" timeout="10" '
        'playBeep="true" fileFormat="wav" finishOnKey=""/></Response>',
    )
    mp3 = mp3_encoder_name() is not None
    second = (
        f'<Response><Record action="{webapp.url("/recorded2")}" maxLength="2" playBeep="false" '
        'fileFormat="mp3"/></Response>'
        if mp3
        else "<Response/>"
    )
    webapp.xml("/recorded", second)
    webapp.xml("/recorded2", "<Response/>")
    run = await run_call(ua, http, webapp, peer.uri, "/answer", tmp_path)
    assert run.app.error is None
    (params,) = webapp.params("/recorded")
    assert params["RecordUrl"].endswith(".wav") and params["RecordingFileFormat"] == "wav"
    assert params["RecordingDuration"] == "4", params
    assert 3800 <= int(params["RecordingDurationMs"]) <= 4200
    assert int(params["RecordingEndMs"]) - int(params["RecordingStartMs"]) >= 3900
    assert params["Digits"] == ""
    path = tmp_path / "recordings" / params["RecordUrl"].rsplit("/", 1)[1]
    recorded = decode_audio(str(path))
    assert abs(len(recorded) / RATE - 4.0) < 0.2
    assert sum(b - a for a, b in segments(recorded)) > 1.0  # the caller's speech is in it

    heard = baresip_heard(peer)
    first = segments(heard)[0]
    # playBeep: a 500 ms 1 kHz tone before the recording starts.
    assert abs((first[1] - first[0]) - 0.5) < 0.08, first
    beep = heard[int(first[0] * RATE) : int(first[1] * RATE)]
    assert abs(dominant_hz(beep) - 1000) < 20

    if mp3:
        (params2,) = webapp.params("/recorded2")
        assert params2["RecordUrl"].endswith(".mp3")
        mp3_path = tmp_path / "recordings" / params2["RecordUrl"].rsplit("/", 1)[1]
        assert abs(len(decode_audio(str(mp3_path))) / RATE - 2.0) < 0.2


# --- sipp presses digits --------------------------------------------------------------------------

LONG_PROMPT = (
    "Welcome to the test line. Please enter your account number followed by the pound key. "
    "If you do not know your account number, please stay on the line and wait patiently."
)


@needs_espeak
async def test_get_digits_rfc2833_from_sipp(ua, http, webapp, sipp, tmp_path) -> None:
    peer = sipp("uas_xml_digits.xml", rtp_echo=False)
    webapp.xml(
        "/answer",
        f'<Response><GetDigits action="{webapp.url("/digits")}" timeout="8" digitTimeout="3" '
        f'finishOnKey="#" numDigits="10"><Speak>{LONG_PROMPT}</Speak></GetDigits>'
        "<Speak>Not reached</Speak></Response>",
    )
    webapp.xml("/digits", "<Response><Hangup/></Response>")
    run = await run_call(ua, http, webapp, peer.uri, "/answer", tmp_path)
    assert run.app.error is None
    (params,) = webapp.params("/digits")
    assert params["Digits"] == "123"
    assert params["CallUUID"] == run.call.uuid
    # The first digit interrupted the long prompt: the call ended long before it would have.
    prompt_s = len(speech(LONG_PROMPT)) / RATE
    assert prompt_s > 8
    assert run.ended_at - run.answered_at < prompt_s - 2
    await asyncio.to_thread(peer.assert_ok)


async def test_get_digits_timeout_goes_on(ua, http, webapp, sipp, tmp_path) -> None:
    peer = sipp("uas_answer.xml")
    webapp.xml(
        "/answer",
        f'<Response><GetDigits action="{webapp.url("/digits")}" timeout="1"/>'
        f"<Redirect>{webapp.url('/next')}</Redirect></Response>",
    )
    webapp.xml("/next", "<Response><Hangup/></Response>")
    run = await run_call(ua, http, webapp, peer.uri, "/answer", tmp_path)
    assert run.app.error is None
    assert webapp.params("/digits") == [] and len(webapp.params("/next")) == 1
    await asyncio.to_thread(peer.assert_ok)


async def test_record_finish_on_key_from_sipp(ua, http, webapp, sipp, tmp_path) -> None:
    peer = sipp("uas_xml_digits.xml", rtp_echo=False)
    webapp.xml(
        "/answer",
        f'<Response><Record action="{webapp.url("/recorded")}" maxLength="20" timeout="15" '
        'playBeep="false" fileFormat="wav" finishOnKey="#*"/></Response>',
    )
    webapp.xml("/recorded", "<Response><Hangup/></Response>")
    run = await run_call(ua, http, webapp, peer.uri, "/answer", tmp_path)
    assert run.app.error is None
    (params,) = webapp.params("/recorded")
    assert params["Digits"] == "#"  # 1, 2, 3 are not finish keys; # is (sent ~2.4 s in)
    assert 1500 < int(params["RecordingDurationMs"]) < 5000
    await asyncio.to_thread(peer.assert_ok)


# --- Dial -------------------------------------------------------------------------------------------


@needs_baresip
async def test_dial_bridges_sipp_caller_to_baresip(
    ua, http, webapp, sipp, baresip, tmp_path
) -> None:
    """A leg: sipp plays g711a.pcap (speech); B leg: baresip, which records what it hears.
    baresip's microphone file ends after 4 s and it hangs up: the A leg goes on with the
    Dial's action document."""
    a_side = sipp("uas_xml_play.xml", rtp_echo=False)
    peer = baresip(max_call_s=4.0)
    webapp.xml(
        "/answer",
        f'<Response><Dial action="{webapp.url("/dialed")}" callbackUrl="{webapp.url("/dialcb")}" '
        f'timeLimit="30" callerId="15557654321"><User sendDigits="12">{peer.uri}</User>'
        "</Dial></Response>",
    )
    webapp.xml("/dialed", '<Response><Wait length="1"/><Hangup/></Response>')
    run = await run_call(ua, http, webapp, a_side.uri, "/answer", tmp_path)
    assert run.app.error is None
    (params,) = webapp.params("/dialed")
    assert params["DialStatus"] == "completed"
    assert params["DialHangupCause"] == causes.NORMAL_CLEARING
    assert params["DialALegUUID"] == run.call.uuid
    assert params["DialBLegUUID"] and params["DialBLegUUID"] == run.b_legs[0].uuid
    actions = [p["DialAction"] for p in webapp.params("/dialcb")]
    assert actions == ["answer", "connected", "hangup"], actions
    hangup_cb = webapp.params("/dialcb")[-1]
    assert hangup_cb["DialBLegHangupCause"] == causes.NORMAL_CLEARING
    assert run.b_legs[0].terminated is not None
    assert run.b_legs[0].terminated.hangup_source == "callee"
    # The A leg went on after the B leg hung up: <Wait 1> then our BYE.
    assert run.call.terminated is not None and run.call.terminated.hangup_source == "caller"

    heard = baresip_heard(peer)
    loud = levels(heard) > -35
    assert loud.sum() * 0.02 > 1.5, "the A leg's speech did not reach the B leg"
    # ... and it is the A leg's speech: its level envelope follows the capture sipp played.
    source = pcap_audio("/usr/share/sip-tester/g711a.pcap")
    assert envelope_match(heard[int(1.0 * RATE) :], source) > 0.8
    # <User sendDigits="12">: RFC 4733 digits to the B leg once it answered.
    assert [d for d, _ in peer.received_dtmf()] == ["1", "2"]
    assert "15557654321" in peer.log()  # callerId is the B leg's From user
    await asyncio.to_thread(a_side.assert_ok)


@needs_baresip
async def test_dial_a_leg_hangup_ends_b_leg(ua, http, webapp, sipp, baresip, tmp_path) -> None:
    a_side = sipp("uas_callee_bye.xml")  # sends BYE 1 s after the answer
    peer = baresip()
    webapp.xml(
        "/answer",
        f'<Response><Dial action="{webapp.url("/dialed")}"><User>{peer.uri}</User></Dial>'
        "<Speak>Not reached</Speak></Response>",
    )
    webapp.xml("/dialed", "<Response><Speak>Not reached either</Speak></Response>")
    run = await run_call(ua, http, webapp, a_side.uri, "/answer", tmp_path)
    assert run.call.terminated is not None and run.call.terminated.hangup_source == "callee"
    (b_leg,) = run.b_legs
    end = await asyncio.wait_for(b_leg.wait_terminated(), 5)
    assert end.hangup_source == "caller"  # we hung the B leg up
    # The action is still reported (notified, not fetched-and-run: the A leg is gone).
    (params,) = webapp.params("/dialed")
    assert params["DialStatus"] == "completed"
    await asyncio.to_thread(a_side.assert_ok)


async def test_dial_no_answer_then_busy(ua, http, webapp, sipp, tmp_path) -> None:
    a_side = sipp("uas_answer.xml")
    ringing = sipp("uas_ring_cancel.xml")
    busy = sipp("uas_busy.xml")
    webapp.xml(
        "/answer",
        f'<Response><Dial action="{webapp.url("/d1")}" redirect="false" timeout="1">'
        f"<User>{ringing.uri}</User></Dial>"
        f'<Dial action="{webapp.url("/d2")}"><User>{busy.uri}</User></Dial></Response>',
    )
    webapp.xml("/d2", "<Response><Hangup/></Response>")
    run = await run_call(ua, http, webapp, a_side.uri, "/answer", tmp_path)
    assert run.app.error is None
    (d1,) = webapp.params("/d1")
    assert d1["DialStatus"] == "no-answer" and d1["DialRingStatus"] == "true"
    assert d1["DialBLegUUID"] == ""
    (d2,) = webapp.params("/d2")
    assert d2["DialStatus"] == "busy" and d2["DialHangupCause"] == causes.USER_BUSY
    for peer in (a_side, ringing, busy):
        await asyncio.to_thread(peer.assert_ok)


@needs_baresip
@needs_espeak
async def test_dial_ringback_then_b_leg_audio_reaches_a(
    ua, http, webapp, baresip, tmp_path
) -> None:
    """A leg: baresip recording what it hears; B leg: baresip that rings 1.5 s, then talks."""
    said = speech("Hello, this is the person you called.")
    b_peer = baresip(
        play_wav=write_wav(tmp_path / "b.wav", np.concatenate([silence(0.6), said, silence(0.5)])),
        answer_delay_ms=1500,
        max_call_s=0.5,
    )
    a_peer = baresip()
    webapp.xml(
        "/answer",
        f'<Response><Dial timeout="10"><User>{b_peer.uri}</User></Dial></Response>',
    )
    run = await run_call(ua, http, webapp, a_peer.uri, "/answer", tmp_path)
    assert run.app.error is None
    heard = baresip_heard(a_peer)
    found = segments(heard, gap_s=0.3)
    assert len(found) >= 2, found
    # First the ringback: 440 + 480 Hz while the B leg rings (1.5 s of its 2 s "on" part).
    r0, r1 = found[0]
    assert 1.2 < r1 - r0 < 2.1, found
    ring = heard[int(r0 * RATE) : int(r1 * RATE)]
    spectrum = np.abs(np.fft.rfft(ring * np.hanning(len(ring))))
    freqs = np.fft.rfftfreq(len(ring), 1 / RATE)
    power = spectrum**2
    in_band = power[(freqs > 420) & (freqs < 500)].sum() / power.sum()
    assert in_band > 0.9, in_band
    for hz in (440, 480):  # both tones, about equally strong
        share = power[np.abs(freqs - hz) < 6].sum() / power.sum()
        assert share > 0.3, (hz, share)
    # Then the B leg's speech, about as long as what it said.
    voiced = sum(b - a for a, b in segments(heard[int(r1 * RATE) :]))
    expected = sum(b - a for a, b in segments(said))
    assert abs(voiced - expected) < 0.4, (voiced, expected)


@needs_baresip
async def test_dial_digits_match_and_hangup_on_star(
    ua, http, webapp, sipp, baresip, tmp_path
) -> None:
    a_side = sipp("uas_xml_star.xml", rtp_echo=False)  # presses 1, 2, 3 then *
    peer = baresip()
    webapp.xml(
        "/answer",
        f'<Response><Dial action="{webapp.url("/dialed")}" callbackUrl="{webapp.url("/cb")}" '
        f'hangupOnStar="true" digitsMatch="123"><User>{peer.uri}</User></Dial></Response>',
    )
    webapp.xml("/dialed", "<Response><Hangup/></Response>")
    run = await run_call(ua, http, webapp, a_side.uri, "/answer", tmp_path)
    assert run.app.error is None
    actions = [(p["DialAction"], p.get("DialDigitsMatch")) for p in webapp.params("/cb")]
    assert actions == [("answer", None), ("connected", None), ("digits", "123"), ("hangup", None)]
    (b_leg,) = run.b_legs
    assert b_leg.terminated is not None and b_leg.terminated.hangup_source == "caller"
    (params,) = webapp.params("/dialed")
    assert params["DialStatus"] == "completed"
    # The A party's keys reach the B party through the bridge (RFC 4733), except the *.
    peer.stop()
    assert [d for d, _ in peer.received_dtmf()] == ["1", "2", "3"]
    await asyncio.to_thread(a_side.assert_ok)


async def test_dial_confirm_key_and_time_limit(ua, http, webapp, sipp, tmp_path) -> None:
    a_side = sipp("uas_answer.xml")
    b_side = sipp("uas_xml_digits.xml", rtp_echo=False)  # the B party presses 1, 2, 3, #
    webapp.xml(
        "/answer",
        f'<Response><Dial action="{webapp.url("/dialed")}" callbackUrl="{webapp.url("/cb")}" '
        f'confirmKey="3" timeLimit="1"><User>{b_side.uri}</User></Dial></Response>',
    )
    webapp.xml("/dialed", "<Response><Hangup/></Response>")
    run = await run_call(ua, http, webapp, a_side.uri, "/answer", tmp_path)
    assert run.app.error is None
    callbacks = webapp.params("/cb")
    assert [p["DialAction"] for p in callbacks] == ["answer", "connected", "hangup"]
    (params,) = webapp.params("/dialed")
    assert params["DialStatus"] == "completed"
    assert params["DialHangupCause"] == causes.ALLOTTED_TIMEOUT  # timeLimit ended the bridge
    for peer in (a_side, b_side):
        await asyncio.to_thread(peer.assert_ok)


# --- the A leg hangs up ---------------------------------------------------------------------------


async def test_callee_hangup_stops_speak_and_keeps_recording(
    ua, http, webapp, sipp, tmp_path
) -> None:
    peer = sipp("uas_callee_bye.xml")  # BYE 1 s after the answer
    webapp.xml(
        "/answer",
        f"<Response><Speak>{LONG_PROMPT}</Speak><Speak>Not reached</Speak></Response>",
    )
    run = await run_call(ua, http, webapp, peer.uri, "/answer", tmp_path)
    assert run.app.error is None and run.call.terminated is not None
    assert run.call.terminated.hangup_source == "callee"
    await asyncio.to_thread(peer.assert_ok)

    peer = sipp("uas_callee_bye.xml")
    webapp.xml(
        "/answer2",
        f'<Response><Record action="{webapp.url("/recorded")}" maxLength="30" '
        'playBeep="false" fileFormat="wav"/><Speak>Not reached</Speak></Response>',
    )
    webapp.xml("/recorded", "<Response><Speak>Not run: the call is over</Speak></Response>")
    run = await run_call(ua, http, webapp, peer.uri, "/answer2", tmp_path)
    assert run.app.error is None
    # Plivo reports the recording even though the caller hung up (notified, not run).
    (params,) = webapp.params("/recorded")
    assert 500 < int(params["RecordingDurationMs"]) < 2500
    assert (tmp_path / "recordings" / params["RecordUrl"].rsplit("/", 1)[1]).stat().st_size > 44
    await asyncio.to_thread(peer.assert_ok)
