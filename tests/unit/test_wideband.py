"""G.722 and Opus (media.wideband): the resamplers, the codecs' round trip, the SDP of
opus/48000/2 and G722/8000, RTP timestamps on the wire, and transcoding across a bridge."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import numpy as np
import pytest

from media.engine import SUPPORTED_CODECS, MediaConfig, MediaEngine, MediaStream, codec_list
from media.rtp import RtpSender, parse_rtp
from media.sdp import (
    TELEPHONE_EVENT_48K_PT,
    SessionDescription,
    answer_offer,
    build_offer,
    negotiate_answer,
)
from media.wideband import CODECS, Downsampler, Upsampler
from tests.conftest import media_ports
from tests.unit.test_media_engine import Sine, connect, dominant_frequency, drain, wait_until

LOOPBACK = "127.0.0.1"
RATE = 8000


def tone(freq: float, seconds: float, amplitude: float = 10000.0, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def framed(process, pcm: np.ndarray, size: int) -> np.ndarray:
    return np.concatenate([process(pcm[i : i + size]) for i in range(0, pcm.size, size)])


# --- resamplers ------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [2, 6])
def test_resamplers_framed_equal_whole_no_clicks(factor: int) -> None:
    """The delay lines carry over: 20 ms frames resample exactly as the signal in one piece."""
    x = tone(1000, 1.0)
    whole = Upsampler(factor).process(x)
    up = Upsampler(factor)
    assert np.array_equal(framed(up.process, x, 160), whole)
    wide = tone(1000, 1.0, rate=RATE * factor)
    whole_down = Downsampler(factor).process(wide)
    down = Downsampler(factor)
    parts = framed(down.process, wide, 160 * factor)
    assert parts.size == whole_down.size == RATE
    assert np.allclose(parts, whole_down, atol=0.01)
    # Uneven chunks are carried over, not dropped.
    odd = Downsampler(factor)
    assert framed(odd.process, wide, 7 * factor + 1).size + odd._history.size // factor >= RATE - 25


@pytest.mark.parametrize("factor", [2, 6])
def test_resamplers_keep_the_band_and_reject_aliases(factor: int) -> None:
    up = Upsampler(factor).process(tone(1000, 0.5))
    steady = up[up.size // 2 :]
    assert abs(np.abs(steady).max() - 10000) < 200  # unit gain in the pass band
    down = Downsampler(factor)
    out = down.process(tone(1000, 0.5, rate=RATE * factor))[1000:]
    assert abs(np.abs(out).max() - 10000) < 200
    alias = Downsampler(factor).process(tone(5000, 0.5, rate=RATE * factor))[1000:]
    assert np.abs(alias).max() < 10000 * 0.003  # 5 kHz would fold onto 3 kHz: -50 dB or better


# --- codecs ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["G722", "OPUS"])
@pytest.mark.parametrize("freq", [440.0, 1000.0, 2500.0])
def test_round_trip_keeps_the_frequency(name: str, freq: float) -> None:
    codec = CODECS[name]
    encoder, decoder = codec.encoder(), codec.decoder()
    x = tone(freq, 1.0)
    payloads = [encoder.encode(x[i : i + 160]) for i in range(0, x.size, 160)]
    if name == "G722":
        assert {len(p) for p in payloads} == {160}  # 64 kbit/s: 4 bits a sample at 16 kHz
    else:
        assert all(0 < len(p) <= 200 for p in payloads)
    y = np.concatenate([decoder.decode(p) for p in payloads])
    assert y.size == x.size and y.dtype == np.int16
    steady = y[2000:]
    assert abs(dominant_frequency(steady[:4096]) - freq) < 4
    level = np.sqrt(np.mean(steady.astype(np.float64) ** 2))
    assert abs(20 * np.log10(level / (10000 / np.sqrt(2)))) < 1.5  # level kept within 1.5 dB


def test_g722_two_frames_per_packet_and_bad_input() -> None:
    encoder, decoder = CODECS["G722"].encoder(), CODECS["G722"].decoder()
    x = tone(1000, 0.04)
    payload = encoder.encode(x)  # ptime 40: one payload of 320 bytes
    assert len(payload) == 320 and decoder.decode(payload).size == 320
    opus = CODECS["OPUS"].decoder()
    assert opus.decode(b"\xff" * 3).size == 0 and opus.errors == 1  # counted, not raised


def test_supported_codecs_and_timestamp_steps() -> None:
    assert SUPPORTED_CODECS == ("PCMU", "PCMA", "G722", "OPUS")
    assert codec_list(["opus", "g722", "PCMU"]) == ["OPUS", "G722", "PCMU"]
    # RFC 3551 §4.5.2: G.722's RTP clock is 8000; RFC 7587 §4.1: Opus's is 48000.
    assert CODECS["G722"].timestamp_step == 160 and CODECS["OPUS"].timestamp_step == 960
    MediaConfig(codecs=["OPUS", "G722", "PCMA"])


# --- SDP -------------------------------------------------------------------------------

BARESIP_OPUS_OFFER = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 96 9 0 101\r\n"
    "a=rtpmap:96 opus/48000/2\r\na=fmtp:96 stereo=1;sprop-stereo=1\r\n"
    "a=rtpmap:9 G722/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n"
    "a=ptime:20\r\na=sendrecv\r\n"
)


def test_offer_lists_opus_g722_and_both_event_clocks() -> None:
    text = build_offer(
        address=LOOPBACK, port=40000, codecs=["OPUS", "G722", "PCMU"], session_id=1, version=1
    )
    assert "m=audio 40000 RTP/AVP 111 9 0 102 101\r\n" in text
    assert "a=rtpmap:111 opus/48000/2\r\n" in text
    assert "a=fmtp:111 useinbandfec=1; maxplaybackrate=8000; sprop-maxcapturerate=8000" in text
    assert "a=rtpmap:9 G722/8000\r\n" in text
    assert "a=rtpmap:102 telephone-event/48000\r\n" in text
    assert "a=rtpmap:101 telephone-event/8000\r\n" in text
    plain = build_offer(address=LOOPBACK, port=40000, codecs=["G722"], session_id=1, version=1)
    assert "telephone-event/48000" not in plain


def test_answer_to_opus_keeps_our_order_and_the_event_clock() -> None:
    text, neg = answer_offer(
        BARESIP_OPUS_OFFER,
        address=LOOPBACK,
        port=50000,
        supported=["G722", "OPUS"],
        session_id=2,
        version=1,
    )
    assert neg.codec.name == "G722" and neg.codec.clock_rate == 8000  # ours first
    text, neg = answer_offer(
        BARESIP_OPUS_OFFER,
        address=LOOPBACK,
        port=50000,
        supported=["OPUS"],
        session_id=2,
        version=1,
    )
    assert (neg.codec.name, neg.codec.payload_type, neg.codec.clock_rate) == ("opus", 96, 48000)
    # The offer has telephone-event/8000 only: that is what we answer and send with.
    assert (neg.dtmf_payload_type, neg.dtmf_clock_rate) == (101, 8000)
    assert "a=rtpmap:96 opus/48000/2\r\n" in text and "m=audio 50000 RTP/AVP 96 101\r\n" in text
    with48 = BARESIP_OPUS_OFFER.replace("RTP/AVP 96 9 0 101", "RTP/AVP 96 9 0 110 101").replace(
        "a=ptime", "a=rtpmap:110 telephone-event/48000\r\na=ptime"
    )
    text, neg = answer_offer(
        with48, address=LOOPBACK, port=50000, supported=["OPUS"], session_id=2, version=1
    )
    assert (neg.dtmf_payload_type, neg.dtmf_clock_rate) == (110, 48000)


def test_negotiate_answer_with_opus_and_g722() -> None:
    offer = build_offer(
        address=LOOPBACK, port=40000, codecs=["OPUS", "G722", "PCMU"], session_id=1, version=1
    )
    answer = (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        "m=audio 50000 RTP/AVP 111 102\r\na=rtpmap:111 opus/48000/2\r\n"
        "a=rtpmap:102 telephone-event/48000\r\n"
    )
    neg = negotiate_answer(offer, answer)
    assert neg.codec.name == "opus" and (neg.dtmf_payload_type, neg.dtmf_clock_rate) == (102, 48000)
    assert {102, 101} <= neg.receive_dtmf_payload_types
    g722 = (
        answer.replace("RTP/AVP 111 102", "RTP/AVP 9 101")
        .replace("111 opus/48000/2", "9 G722/8000")
        .replace("102 telephone-event/48000", "101 telephone-event/8000")
    )
    neg = negotiate_answer(offer, g722)
    assert neg.codec.name == "G722" and (neg.dtmf_payload_type, neg.dtmf_clock_rate) == (101, 8000)
    parsed = SessionDescription.parse(offer)
    assert parsed.media[0].telephone_event_at(48000).payload_type == TELEPHONE_EVENT_48K_PT


# --- the engine ------------------------------------------------------------------------


@pytest.fixture
async def engine() -> AsyncIterator[MediaEngine]:
    eng = MediaEngine(MediaConfig(bind_host=LOOPBACK, **media_ports()))
    eng.start()
    yield eng
    await eng.stop()


async def _tone_across(a: MediaStream, b: MediaStream, freq: float) -> np.ndarray:
    received: list[np.ndarray] = []

    def tap(frame: np.ndarray) -> None:
        received.append(frame.copy())

    b.add_tap(tap)
    assert await asyncio.wait_for(a.play(Sine(freq, 0.6)), 3) == "completed"
    await asyncio.sleep(0.1)
    b.remove_tap(tap)
    return np.concatenate(received)


def _assert_tone(audio: np.ndarray, freq: float) -> None:
    loud = np.abs(audio) > 2000
    assert np.count_nonzero(loud) > 0.5 * 0.5 * RATE, np.abs(audio).max()
    start = int(np.argmax(loud)) + 400  # past the codecs' onset
    assert abs(dominant_frequency(audio[start : start + 2048]) - freq) < 10


@pytest.mark.parametrize("name", ["G722", "OPUS"])
async def test_two_streams_talk_wideband(engine: MediaEngine, name: str) -> None:
    a = engine.create_stream(codecs=[name, "PCMU"])
    b = engine.create_stream(codecs=[name])
    connect(a, b)
    assert a.stats()["codec"].upper() == name == b.stats()["codec"].upper()
    _assert_tone(await _tone_across(a, b, 1000.0), 1000.0)
    _assert_tone(await _tone_across(b, a, 700.0), 700.0)
    assert b.stats()["lost"] == 0 and b.stats()["packets_received"] >= 30


@pytest.mark.parametrize(("name", "step", "pt"), [("G722", 160, 9), ("OPUS", 960, 111)])
async def test_rtp_timestamps_on_the_wire(
    engine: MediaEngine, name: str, step: int, pt: int
) -> None:
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind((LOOPBACK, 0))
    peer.setblocking(False)
    try:
        stream = engine.create_stream(codecs=[name])
        offer = stream.create_offer()
        answer, _ = answer_offer(
            offer,
            address=LOOPBACK,
            port=peer.getsockname()[1],
            supported=[name],
            session_id=3,
            version=1,
        )
        stream.apply_answer(answer)
        stream.play(Sine(1000, 0.3))
        got: list[bytes] = []

        def enough() -> bool:
            got.extend(drain(peer))
            return len(got) >= 12

        await wait_until(enough, 3)
        packets = [parse_rtp(p) for p in got]
        audio = [p for p in packets if p is not None and p.payload_type == pt]
        steps = {
            (b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in zip(audio, audio[1:], strict=False)
        }
        assert steps == {step}, steps
        # And what the peer sends (G.722: 160 per 20 ms; Opus: 960) is decoded at 8 kHz.
        heard: list[np.ndarray] = []
        stream.add_tap(lambda f: heard.append(f.copy()))
        sender = RtpSender(clock_rate=CODECS[name].rtp_clock_rate)
        encoder = CODECS[name].encoder()
        x = tone(600, 0.6)
        target = (LOOPBACK, stream.local_port)
        for i in range(0, x.size, 160):
            peer.sendto(sender.packet(pt, encoder.encode(x[i : i + 160])), target)
            sender.advance(step)
            if i % 800 == 0:
                await asyncio.sleep(0.02)
        await wait_until(lambda: stream.stats()["packets_received"] >= 30, 3)
        await asyncio.sleep(0.2)
        audio_in = np.concatenate(heard)
        assert np.count_nonzero(np.abs(audio_in) > 2000) > 0.2 * RATE
        start = int(np.argmax(np.abs(audio_in) > 2000)) + 200
        assert abs(dominant_frequency(audio_in[start : start + 1024]) - 600) < 15
        assert stream.stats()["jitter_ms"] < 40  # measured in the codec's own clock
    finally:
        peer.close()


@pytest.mark.parametrize(("left", "right"), [("G722", "PCMU"), ("OPUS", "PCMA"), ("OPUS", "G722")])
async def test_bridge_transcodes_between_codecs(engine: MediaEngine, left: str, right: str) -> None:
    """Bridges exchange decoded 8 kHz frames, so two legs with different codecs hear each
    other: caller (left) <-> leg_a = leg_b <-> callee (right)."""
    caller, leg_a = engine.create_stream(codecs=[left]), engine.create_stream(codecs=[left])
    leg_b, callee = engine.create_stream(codecs=[right]), engine.create_stream(codecs=[right])
    connect(caller, leg_a)
    connect(leg_b, callee)
    assert leg_a.stats()["codec"].upper() == left and leg_b.stats()["codec"].upper() == right
    engine.bridge(leg_a, leg_b)
    _assert_tone(await _tone_across(caller, callee, 1200.0), 1200.0)
    _assert_tone(await _tone_across(callee, caller, 800.0), 800.0)


async def test_rfc4733_at_48000_next_to_opus(engine: MediaEngine) -> None:
    """Both sides list telephone-event/48000 with Opus: events use that clock (RFC 4733 §2.1),
    so a 250 ms digit lasts 12,000 timestamp units and is read back as 250 ms."""
    a, b = engine.create_stream(codecs=["OPUS"]), engine.create_stream(codecs=["OPUS"])
    connect(a, b)
    assert (a.negotiated.dtmf_payload_type, a.negotiated.dtmf_clock_rate) == (102, 48000)
    assert (b.negotiated.dtmf_payload_type, b.negotiated.dtmf_clock_rate) == (102, 48000)
    got = []
    b.on_dtmf = got.append
    assert await asyncio.wait_for(a.send_digits("5", tone_ms=250), 3) == 1
    await wait_until(lambda: len(got) == 1, 3)
    assert got[0].digit == "5" and abs(got[0].duration_ms - 250) <= 20, got[0]


def test_codecs_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m benchmarks.codecs`` at a tiny scale: every codec measured, no timing checked."""
    import json

    from benchmarks import codecs as bench

    assert bench.main(["--frames", "10", "--streams", "2", "--ticks", "10", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["codec"]) == set(SUPPORTED_CODECS)
    assert [t["codec"] for t in out["tick"]] == list(SUPPORTED_CODECS)
    assert all(t["packets_received"] > 0 for t in out["tick"])
