"""The media engine on loopback: two streams in one engine talk to each other over real UDP
sockets, plus RFC 2833 captures shipped with sipp replayed at a stream."""

from __future__ import annotations

import asyncio
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest

from media.dtmf import DigitsError, DtmfEvent
from media.engine import (
    MediaConfig,
    MediaEngine,
    MediaStream,
    PortPool,
    PortPoolExhausted,
    UnsupportedCodec,
)
from media.rtp import RtpSender, parse_rtp
from media.sdp import SdpError, SessionDescription
from tests.conftest import media_ports

LOOPBACK = "127.0.0.1"


class Sine:
    """A test source: a sine wave of ``seconds`` (the play.Source protocol)."""

    def __init__(self, freq: float, seconds: float, amplitude: float = 8000.0) -> None:
        self.freq, self.amplitude = freq, amplitude
        self.left = int(8000 * seconds)
        self.pos = 0
        self.closed = False

    def read(self, n: int = 160) -> np.ndarray | None:
        if self.left <= 0:
            return None
        n = min(n, self.left)
        t = (self.pos + np.arange(n)) / 8000.0
        self.pos += n
        self.left -= n
        return (self.amplitude * np.sin(2 * np.pi * self.freq * t)).astype(np.int16)

    def close(self) -> None:
        self.closed = True


async def wait_until(cond: Callable[[], bool], timeout: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@pytest.fixture
async def engine() -> AsyncIterator[MediaEngine]:
    eng = MediaEngine(MediaConfig(bind_host=LOOPBACK, **media_ports()))
    eng.start()
    yield eng
    await eng.stop()


def connect(a: MediaStream, b: MediaStream) -> None:
    """a offers, b answers: both know each other's address afterwards."""
    offer = a.create_offer()
    answer = b.handle_offer(offer)
    a.apply_answer(answer)


@pytest.fixture
async def pair(engine: MediaEngine) -> tuple[MediaStream, MediaStream]:
    a, b = engine.create_stream(), engine.create_stream()
    connect(a, b)
    return a, b


def dominant_frequency(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(samples.size)))
    return float(np.argmax(spectrum) * 8000 / samples.size)


# --- port pool -------------------------------------------------------------------------


def free_even_base() -> int:
    for base in range(47000, 60000, 50):
        socks = []
        try:
            for port in range(base, base + 6):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind((LOOPBACK, port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    pytest.skip("no free port range")


def test_port_pool_exhaustion_release_and_busy_ports() -> None:
    base = free_even_base()
    pool = PortPool(LOOPBACK, base, base + 5)  # pairs at base, base+2, base+4
    assert pool.capacity == 3
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    squatter.bind((LOOPBACK, base + 3))  # RTCP port of the second pair is taken
    try:
        got = [pool.allocate()[2], pool.allocate()[2]]
        assert got == [base, base + 4]
        with pytest.raises(PortPoolExhausted):
            pool.allocate()
        pool.release(base)
        pool.release(base)  # idempotent
        assert pool.allocate()[2] == base
        assert pool.in_use == 2
    finally:
        squatter.close()
        for port in (base, base + 2, base + 4):
            pool.release(port)
    assert pool.in_use == 0


def test_port_pool_round_robin() -> None:
    base = free_even_base()
    pool = PortPool(LOOPBACK, base + 1, base + 5)  # odd min rounds up to base + 2
    first = pool.allocate()[2]
    pool.release(first)
    assert pool.allocate()[2] == first + 2  # not the port just freed
    pool.release(first + 2)


async def test_engine_releases_ports_on_close(engine: MediaEngine) -> None:
    stream = engine.create_stream()
    port = stream.local_port
    assert engine.active_streams == 1 and engine.ports.in_use == 1
    future = stream.play(Sine(440, 1))
    stream.close()
    stream.close()
    assert future.cancelled()
    assert engine.active_streams == 0 and engine.ports.in_use == 0
    with pytest.raises(RuntimeError):
        stream.create_offer()
    rebound = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rebound.bind((LOOPBACK, port))  # really free again
    rebound.close()


# --- per-stream codecs -----------------------------------------------------------------


async def test_stream_offer_lists_only_its_codecs(engine: MediaEngine) -> None:
    """create_stream(codecs=...) restricts one stream's offer; the engine's default stays."""
    only_a = engine.create_stream(codecs=["pcma"])
    offer = only_a.create_offer()
    m_line = next(ln for ln in offer.splitlines() if ln.startswith("m=audio"))
    assert m_line.split()[3:] == ["8", "101"]
    assert "a=rtpmap:8 PCMA/8000" in offer.splitlines()
    assert "a=rtpmap:101 telephone-event/8000" in offer.splitlines()
    assert "PCMU" not in offer and "a=rtpmap:0 " not in offer
    assert only_a.codecs == ("PCMA",)
    # Preference order is the order given.
    both = engine.create_stream(codecs=["PCMA", "PCMU", "PCMA"])
    m_line = next(ln for ln in both.create_offer().splitlines() if ln.startswith("m=audio"))
    assert m_line.split()[3:] == ["8", "0", "101"]
    default = engine.create_stream()
    m_line = next(ln for ln in default.create_offer().splitlines() if ln.startswith("m=audio"))
    assert m_line.split()[3:] == ["0", "8", "101"]


async def test_stream_codecs_bound_the_answer(engine: MediaEngine) -> None:
    only_a = engine.create_stream(codecs=["PCMA"])
    offer = only_a.create_offer()
    pcmu_answer = offer.replace(" 8 101", " 0 101")
    pcmu_answer = pcmu_answer.replace("a=rtpmap:8 PCMA/8000", "a=rtpmap:0 PCMU/8000")
    with pytest.raises(SdpError):
        only_a.apply_answer(pcmu_answer)
    callee = engine.create_stream()
    only_a.apply_answer(callee.handle_offer(offer))
    assert only_a.negotiated is not None and only_a.negotiated.codec.name == "PCMA"
    # A re-offer from the far end is answered with the stream's codecs only.
    answer = only_a.handle_offer(callee.create_offer())
    assert only_a.negotiated.codec.name == "PCMA"
    assert "PCMU" not in answer


async def test_stream_codecs_refused(engine: MediaEngine) -> None:
    for bad in ([], ["G729"], ["PCMA", "G729"], "PCMA"):
        with pytest.raises(UnsupportedCodec) as info:
            engine.create_stream(codecs=bad)
        assert isinstance(info.value, ValueError) and "PCMA" in str(info.value)
    assert engine.active_streams == 0 and engine.ports.in_use == 0  # no port taken


# --- audio -----------------------------------------------------------------------------


async def test_tone_reaches_the_other_stream(pair: tuple[MediaStream, MediaStream]) -> None:
    a, b = pair
    received: list[np.ndarray] = []
    b.add_tap(lambda frame: received.append(frame.copy()))
    source = Sine(1000, 0.4)
    result = await asyncio.wait_for(a.play(source), 3)
    assert result == "completed" and source.closed
    await asyncio.sleep(0.1)
    audio = np.concatenate(received)
    loud = audio[np.abs(audio) > 1000]
    assert loud.size >= 0.7 * 3200  # 3/4 of the samples of a 1 kHz sine at 8 kHz are loud
    # The loudest stretch is the tone at 1000 Hz.
    start = int(np.argmax(np.abs(audio) > 1000))
    assert abs(dominant_frequency(audio[start : start + 2048]) - 1000) < 10
    stats_a, stats_b = a.stats(), b.stats()
    assert stats_a["codec"] == "PCMU" and stats_a["packets_sent"] >= 20
    assert stats_b["packets_received"] >= 20 and stats_b["lost"] == 0
    assert stats_b["latched"] and stats_b["remote"] == (LOOPBACK, a.local_port)


async def test_play_queue_and_stop(pair: tuple[MediaStream, MediaStream]) -> None:
    a, _ = pair
    first = a.play(Sine(500, 0.1))
    second = a.play(Sine(600, 5))
    third = a.play(Sine(700, 5))
    assert await asyncio.wait_for(first, 2) == "completed"
    await asyncio.sleep(0.05)
    assert a.playing and not second.done()
    a.stop_play()
    assert second.result() == "stopped" and third.result() == "stopped"
    assert not a.playing


async def test_pcma_codec_and_send_tap(engine: MediaEngine) -> None:
    # b answers with the first of its codecs the offer lists (its order, not the offer's).
    a, b = engine.create_stream(), engine.create_stream(codecs=["PCMA", "PCMU"])
    offer = a.create_offer().replace("RTP/AVP 0 8 101", "RTP/AVP 8 0 101")
    answer = b.handle_offer(offer)
    a._local_offer = offer  # as if we had offered PCMA first
    a.apply_answer(answer)
    assert a.stats()["codec"] == "PCMA" and b.stats()["codec"] == "PCMA"
    sent: list[np.ndarray] = []
    got: list[np.ndarray] = []
    a.add_send_tap(sent.append)
    b.add_tap(lambda f: got.append(f.copy()))
    await asyncio.wait_for(a.play(Sine(800, 0.2)), 2)
    await asyncio.sleep(0.1)
    assert sum(int(np.abs(f).max() > 1000) for f in sent) >= 9
    assert sum(int(np.abs(f).max() > 1000) for f in got) >= 9


async def test_bridge_relays_audio(engine: MediaEngine) -> None:
    caller, leg_a = engine.create_stream(), engine.create_stream()
    leg_b, callee = engine.create_stream(), engine.create_stream()
    connect(caller, leg_a)
    connect(leg_b, callee)
    engine.bridge(leg_a, leg_b)
    heard: list[np.ndarray] = []
    callee.add_tap(lambda f: heard.append(f.copy()))
    await asyncio.wait_for(caller.play(Sine(1200, 0.4)), 3)
    await asyncio.sleep(0.15)
    audio = np.concatenate(heard)
    start = int(np.argmax(np.abs(audio) > 1000))
    assert np.count_nonzero(np.abs(audio) > 1000) > 8000 * 0.2
    assert abs(dominant_frequency(audio[start : start + 1024]) - 1200) < 15
    engine.unbridge(leg_b)
    assert leg_a._bridge_peer is None


# --- DTMF ------------------------------------------------------------------------------


async def test_send_digits_rfc4733(pair: tuple[MediaStream, MediaStream]) -> None:
    a, b = pair
    events: list[DtmfEvent] = []
    b.on_dtmf = events.append
    sent = await asyncio.wait_for(a.send_digits("1#9", tone_ms=100), 3)
    assert sent == 3
    await wait_until(lambda: len(events) >= 3)
    await asyncio.sleep(0.1)
    assert [e.digit for e in events] == ["1", "#", "9"]
    assert {e.source for e in events} == {"rfc4733"}
    assert all(abs(e.duration_ms - 100) <= 20 for e in events)
    assert a.stats()["dtmf_sent"] == 3 and b.stats()["dtmf_received"] == 3
    assert b._detector is None  # in-band detection released after the first RFC 4733 packet


def _listen_inband(stream: MediaStream) -> None:
    """Make ``stream`` run the in-band detector although telephone-event was negotiated."""
    stream._config.inband_dtmf_detect = "always"
    if stream._detector is None:
        stream._detector = stream._engine._allocate_detector(stream)


async def test_send_digits_inband(pair: tuple[MediaStream, MediaStream]) -> None:
    # Both sides negotiated telephone-event, so "auto" detection would not listen for tones:
    # a receiver that must also catch in-band digits opts in with "always".
    a, b = pair
    _listen_inband(b)
    events: list[DtmfEvent] = []
    b.on_dtmf = events.append
    assert await asyncio.wait_for(a.send_digits("4D", mode="inband", tone_ms=100), 3) == 2
    await wait_until(lambda: len(events) >= 2)
    assert [(e.digit, e.source) for e in events] == [("4", "inband"), ("D", "inband")]


async def test_send_digits_validates_synchronously(pair: tuple[MediaStream, MediaStream]) -> None:
    a, _ = pair
    with pytest.raises(DigitsError):
        a.send_digits("12x")
    with pytest.raises(ValueError):
        a.send_digits("1", mode="sip-info")


async def test_inband_detection_auto_follows_negotiation(
    pair: tuple[MediaStream, MediaStream], engine: MediaEngine
) -> None:
    a, b = pair
    assert b.negotiated is not None and b.negotiated.dtmf_payload_type is not None
    assert b._detector is None  # telephone-event negotiated: no Goertzel work per tick
    c, d = engine.create_stream(), engine.create_stream()
    answer = d.handle_offer(c.create_offer())
    answer = "\r\n".join(
        ln for ln in answer.split("\r\n") if not ln.startswith("a=") or "101" not in ln
    ).replace(" 0 101", " 0")
    c.apply_answer(answer)
    assert c._detector is not None  # no telephone-event: listen for tones


async def test_send_digits_auto_without_telephone_event(engine: MediaEngine) -> None:
    a, b = engine.create_stream(), engine.create_stream()
    offer = a.create_offer()
    answer = b.handle_offer(offer)
    # The far end did not accept telephone-event: drop it from the answer.
    answer = "\r\n".join(
        ln for ln in answer.split("\r\n") if not ln.startswith("a=") or "101" not in ln
    ).replace(" 0 101", " 0")
    a.apply_answer(answer)
    _listen_inband(b)  # b's own state still has telephone-event: the edit was on the wire only
    assert a.negotiated is not None and a.negotiated.dtmf_payload_type is None
    with pytest.raises(SdpError):
        await asyncio.wait_for(a.send_digits("1", mode="rfc4733"), 2)
    events: list[DtmfEvent] = []
    b.on_dtmf = events.append
    await asyncio.wait_for(a.send_digits("7", tone_ms=80), 2)  # auto -> in-band
    await wait_until(lambda: len(events) >= 1)
    assert events[0].digit == "7" and events[0].source == "inband"


async def test_play_interrupted_by_dtmf(pair: tuple[MediaStream, MediaStream]) -> None:
    a, b = pair
    prompt = b.play(Sine(400, 5), interrupt_on_dtmf=True)
    await asyncio.sleep(0.05)
    await asyncio.wait_for(a.send_digits("5", tone_ms=60), 2)
    assert await asyncio.wait_for(prompt, 2) == "dtmf"


# --- SDP state on the stream ----------------------------------------------------------


async def test_apply_answer_idempotent_and_hold(pair: tuple[MediaStream, MediaStream]) -> None:
    a, b = pair
    offer_version = SessionDescription.parse(a._local_offer or "").origin.session_version
    answer = b.handle_offer(a.create_offer())  # same offer again: same o= version
    assert SessionDescription.parse(a.create_offer()).origin.session_version == offer_version
    a.apply_answer(answer)
    a.apply_answer(answer)
    # b puts a on hold with a re-INVITE: version + 1, a answers recvonly and stops sending.
    hold_offer = b.hold()
    assert (
        SessionDescription.parse(hold_offer).origin.session_version
        == SessionDescription.parse(answer).origin.session_version + 1
    )
    reply = a.handle_offer(hold_offer)
    assert "a=recvonly" in reply
    b.apply_answer(reply)
    assert a.negotiated.direction == "recvonly" and b.negotiated.direction == "sendonly"
    sent = a.stats()["packets_sent"]
    await asyncio.sleep(0.1)
    assert a.stats()["packets_sent"] == sent
    b_reply = a.handle_offer(b.resume())
    assert "a=sendrecv" in b_reply
    b.apply_answer(b_reply)
    await wait_until(lambda: a.stats()["packets_sent"] > sent)


async def test_apply_answer_without_common_codec(engine: MediaEngine) -> None:
    a = engine.create_stream()
    a.create_offer()
    answer = (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        "m=audio 4000 RTP/AVP 18\r\n"
    )
    with pytest.raises(SdpError):
        a.apply_answer(answer)
    assert a.negotiated is None


# --- raw peers: latching, SSRC change, silence modes, timeouts --------------------------


def peer_answer(port: int, *, dtmf_pt: int = 101) -> str:
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0 {dtmf_pt}\r\na=rtpmap:{dtmf_pt} telephone-event/8000\r\n"
        f"a=fmtp:{dtmf_pt} 0-16\r\na=ptime:20\r\n"
    )


@pytest.fixture
def peer() -> AsyncIterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOOPBACK, 0))
    sock.setblocking(False)
    yield sock
    sock.close()


def drain(sock: socket.socket) -> list[bytes]:
    out = []
    for _ in range(10000):
        try:
            out.append(sock.recv(2048))
        except BlockingIOError:
            break
    return out


async def test_symmetric_rtp_latches_and_follows_ssrc_change(
    engine: MediaEngine, peer: socket.socket
) -> None:
    stream = engine.create_stream()
    stream.create_offer()
    stream.apply_answer(peer_answer(9))  # the SDP names a port nobody listens on
    assert stream.remote_address == (LOOPBACK, 9)
    target = (LOOPBACK, stream.local_port)
    first, second = RtpSender(ssrc=1), RtpSender(ssrc=2)
    for _ in range(3):
        peer.sendto(first.packet(0, b"\xff" * 160), target)
        first.advance(160)
    await wait_until(lambda: stream.remote_address == peer.getsockname())
    await wait_until(lambda: len(drain(peer)) > 0)  # our RTP now goes to the latched source
    for _ in range(3):
        peer.sendto(second.packet(0, b"\xff" * 160), target)
    await wait_until(lambda: stream.stats()["ssrc_changes"] == 1)
    assert stream.stats()["remote_ssrc"] == 2


async def test_silence_none_sends_nothing_and_marks_talkspurt(peer: socket.socket) -> None:
    engine = MediaEngine(MediaConfig(bind_host=LOOPBACK, **media_ports(), silence="none"))
    engine.start()
    try:
        stream = engine.create_stream()
        stream.create_offer()
        stream.apply_answer(peer_answer(peer.getsockname()[1]))
        await asyncio.sleep(0.1)
        assert drain(peer) == []
        await asyncio.wait_for(stream.play(Sine(300, 0.06)), 2)
        await asyncio.sleep(0.05)
        packets = [parse_rtp(p) for p in drain(peer)]
        assert len(packets) == 3 and packets[0].marker and not packets[1].marker
    finally:
        await engine.stop()


async def test_comfort_noise_when_negotiated(peer: socket.socket) -> None:
    engine = MediaEngine(MediaConfig(bind_host=LOOPBACK, **media_ports(), silence="cn"))
    engine.start()
    try:
        stream = engine.create_stream()
        assert "a=rtpmap:13 CN/8000" in stream.create_offer()
        stream.apply_answer(
            peer_answer(peer.getsockname()[1]).replace("RTP/AVP 0 101", "RTP/AVP 0 13 101")
        )
        await asyncio.sleep(0.15)
        packets = [parse_rtp(p) for p in drain(peer)]
        assert [p.payload_type for p in packets] == [13]  # once, then quiet
    finally:
        await engine.stop()


async def ticks(engine: MediaEngine, n: int) -> None:
    """Wait until the media clock has ticked ``n`` more times (a negative check's bound)."""
    target = engine.clock_stats()["ticks"] + n
    await wait_until(lambda: engine.clock_stats()["ticks"] >= target, 5)


def sendonly_offer(port: int) -> str:
    """The peer's re-offer putting us on hold (RFC 3264 §8.4)."""
    return peer_answer(port).replace("o=- 1 1", "o=- 1 2") + "a=sendonly\r\n"


async def test_media_timeout_only_once_armed(peer: socket.socket) -> None:
    engine = MediaEngine(MediaConfig(bind_host=LOOPBACK, **media_ports()))
    engine.start()
    try:
        stream = engine.create_stream()
        fired: list[float] = []
        stream.on_media_timeout = lambda: fired.append(engine.now())
        stream.create_offer()
        stream.apply_answer(peer_answer(peer.getsockname()[1]))
        await ticks(engine, 10)  # 200 ms of silence: not armed, nothing happens
        assert not fired
        armed = engine.now()
        stream.set_media_timeout(0.1, 5.0)
        await wait_until(lambda: bool(fired), 2)
        assert 0.1 <= fired[0] - armed < 0.6
        await ticks(engine, 10)
        assert len(fired) == 1  # once
        with pytest.raises(ValueError):
            stream.set_media_timeout(-1)
    finally:
        await engine.stop()


async def test_rtp_keeps_the_media_timeout_away_and_rtcp_does_not(peer: socket.socket) -> None:
    engine = MediaEngine(MediaConfig(bind_host=LOOPBACK, **media_ports()))
    engine.start()
    try:
        stream = engine.create_stream()
        fired: list[float] = []
        stream.on_media_timeout = lambda: fired.append(engine.now())
        stream.create_offer()
        stream.apply_answer(peer_answer(peer.getsockname()[1]))
        stream.set_media_timeout(0.2)
        sender = RtpSender(ssrc=7)
        target = (LOOPBACK, stream.local_port)
        for _ in range(25):  # 0.5 s of RTP every 20 ms
            peer.sendto(sender.packet(0, b"\xff" * 160), target)
            sender.advance(160)
            await ticks(engine, 1)
        assert not fired
        stopped = engine.now()
        rtcp = (LOOPBACK, stream.local_port + 1)
        while not fired:  # RTCP goes on; RTP has stopped
            assert engine.now() - stopped < 2, "no media timeout"
            peer.sendto(stream._rtcp.build_report(engine.now(), time.time()), rtcp)
            await ticks(engine, 1)
        # the last RTP packet was read at a tick at or before ``stopped`` (how much before
        # depends on how late this task ran after that tick on a loaded machine)
        assert 0.1 <= fired[0] - stopped < 0.7
        assert stream.stats()["rtcp_received"] > 0
    finally:
        await engine.stop()


async def test_hold_uses_the_hold_timeout_and_resume_restarts_the_count(
    peer: socket.socket,
) -> None:
    engine = MediaEngine(MediaConfig(bind_host=LOOPBACK, **media_ports()))
    engine.start()
    try:
        stream = engine.create_stream()
        fired: list[float] = []
        stream.on_media_timeout = lambda: fired.append(engine.now())
        stream.create_offer()
        port = peer.getsockname()[1]
        stream.apply_answer(peer_answer(port))
        stream.set_media_timeout(0.2, 1.0)
        assert not stream.on_hold
        held = engine.now()
        assert "a=recvonly" in stream.handle_offer(sendonly_offer(port))
        assert stream.on_hold
        # Past the active limit, inside the hold limit.
        await wait_until(lambda: engine.now() - held >= 0.4, 2)
        assert not fired
        await wait_until(lambda: bool(fired), 3)
        assert 1.0 <= fired[0] - held < 1.5
        # Resume: the active limit again, counted from the resume.
        stream.set_media_timeout(0.2, 1.0)
        fired.clear()
        stream.handle_offer(sendonly_offer(port))
        resumed = engine.now()
        stream.handle_offer(peer_answer(port).replace("o=- 1 1", "o=- 1 3"))
        assert not stream.on_hold
        await wait_until(lambda: bool(fired), 2)
        assert 0.2 <= fired[0] - resumed < 0.7
        # We hold the peer (our sendonly, its recvonly): on hold as well.
        stream.hold()
        stream.apply_answer(peer_answer(port).replace("o=- 1 1", "o=- 1 4") + "a=recvonly\r\n")
        assert stream.on_hold and stream.negotiated.direction == "sendonly"
    finally:
        await engine.stop()


# --- RTP bleed: latching against strays ------------------------------------------------------


def mulaw(value: int) -> bytes:
    from media.g711 import ulaw_encode

    return ulaw_encode(np.full(160, value, dtype=np.int16))


@pytest.fixture
def stray() -> AsyncIterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOOPBACK, 0))
    sock.setblocking(False)
    yield sock
    sock.close()


async def test_strays_are_dropped_while_the_peer_sends(
    engine: MediaEngine, peer: socket.socket, stray: socket.socket
) -> None:
    """The issue's attack: random-SSRC packets from another port during a call. The stream
    keeps its source, SSRC and send address; the strays are counted and reach neither the
    statistics, the RFC 4733 receivers nor the taps."""
    stream = engine.create_stream()
    stream.create_offer()
    stream.apply_answer(peer_answer(peer.getsockname()[1]))
    heard: list[np.ndarray] = []
    stream.add_tap(lambda f: heard.append(f.copy()))
    digits: list[DtmfEvent] = []
    stream.on_dtmf = digits.append
    target = (LOOPBACK, stream.local_port)
    good = RtpSender(ssrc=0x1111)
    rng = np.random.default_rng(1)
    # One forger sends a plausible sequence (one SSRC, seq + 1) and RFC 4733 digits.
    forger = RtpSender(ssrc=0x2222)
    for i in range(100):
        peer.sendto(good.packet(0, mulaw(1000)), target)
        good.advance(160)
        for _ in range(3):  # random SSRCs, as in the reproduction
            bad = RtpSender(ssrc=int(rng.integers(1, 2**32)))
            stray.sendto(bad.packet(0, mulaw(-8000)), target)
        for _ in range(10):  # a burst of a plausible sequence between two of the peer's
            stray.sendto(
                forger.packet(
                    101 if i % 2 else 0, bytes([5, 0x80, 0, 160]) if i % 2 else mulaw(-8000)
                ),
                target,
            )
        await ticks(engine, 1)
    await wait_until(lambda: stream.stats()["packets_received"] == 100, 3)
    stats = stream.stats()
    assert stats["rtp_dropped_strays"] == 100 * 13
    assert stats["remote_ssrc"] == 0x1111 and stats["ssrc_changes"] == 0
    assert stats["rtp_source_changes"] == 0
    assert stream.remote_address == peer.getsockname()
    assert not digits
    audio = np.concatenate(heard)
    assert audio.min() >= 0  # the peer's constant (or silence on underrun), never a stray's
    assert np.count_nonzero(audio > 900) >= 90 * 160
    assert stats["lost"] == 0


async def test_a_stray_that_comes_first_loses_to_the_sdp_address(
    engine: MediaEngine, peer: socket.socket, stray: socket.socket
) -> None:
    stream = engine.create_stream()
    stream.create_offer()
    stream.apply_answer(peer_answer(peer.getsockname()[1]))
    target = (LOOPBACK, stream.local_port)
    stray.sendto(RtpSender(ssrc=9).packet(0, mulaw(-8000)), target)
    await wait_until(lambda: stream.remote_address == stray.getsockname())
    good = RtpSender(ssrc=0x1111)
    for _ in range(5):
        peer.sendto(good.packet(0, mulaw(1000)), target)
        good.advance(160)
        stray.sendto(RtpSender(ssrc=9).packet(0, mulaw(-8000)), target)
        await ticks(engine, 1)
    await wait_until(lambda: stream.stats()["packets_received"] == 6)
    assert stream.remote_address == peer.getsockname()
    assert stream.stats()["remote_ssrc"] == 0x1111
    assert stream.stats()["rtp_dropped_strays"] == 5


async def test_a_new_address_takes_over_only_after_a_quiet_source_and_a_sequence(
    engine: MediaEngine, peer: socket.socket, stray: socket.socket
) -> None:
    """NAT rebinding: the peer's packets start coming from a new port and the old one falls
    silent; after RELATCH_PACKETS in sequence (and the old source quiet) the stream follows."""
    from media.engine._config import RELATCH_PACKETS, RELATCH_QUIET_S

    stream = engine.create_stream()
    stream.create_offer()
    stream.apply_answer(peer_answer(peer.getsockname()[1]))
    target = (LOOPBACK, stream.local_port)
    sender = RtpSender(ssrc=0x1111)
    for _ in range(5):
        peer.sendto(sender.packet(0, mulaw(1000)), target)
        sender.advance(160)
    await wait_until(lambda: stream.stats()["packets_received"] == 5)
    moved = engine.now()
    sent = 0
    while stream.remote_address != stray.getsockname():
        assert sent < 100, stream.stats()
        stray.sendto(sender.packet(0, mulaw(1000)), target)  # same SSRC, next sequence numbers
        sender.advance(160)
        sent += 1
        await ticks(engine, 1)
    assert sent >= RELATCH_PACKETS
    assert engine.now() - moved >= RELATCH_QUIET_S
    stats = stream.stats()
    assert stats["rtp_source_changes"] == 1 and stats["ssrc_changes"] == 0
    assert stats["packets_received"] + stats["rtp_dropped_strays"] == 5 + sent
    assert stats["rtp_dropped_strays"] == RELATCH_PACKETS - 1 or sent > RELATCH_PACKETS
    # One packet from yet another port, even in sequence, does not move it again.
    third = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        third.bind((LOOPBACK, 0))
        third.sendto(sender.packet(0, mulaw(1000)), target)
        await wait_until(
            lambda: stream.stats()["rtp_dropped_strays"] == stats["rtp_dropped_strays"] + 1
        )
        assert stream.remote_address == stray.getsockname()
    finally:
        third.close()


async def test_rtcp_from_another_host_is_dropped(engine: MediaEngine, peer: socket.socket) -> None:
    stream = engine.create_stream()
    stream.create_offer()
    stream.apply_answer(peer_answer(peer.getsockname()[1]))
    target = (LOOPBACK, stream.local_port)
    peer.sendto(RtpSender(ssrc=1).packet(0, mulaw(1000)), target)
    await wait_until(lambda: stream.stats()["packets_received"] == 1)
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        other.bind(("127.0.0.2", 0))  # another loopback host
        report = stream._rtcp.build_report(engine.now(), time.time())
        other.sendto(report, (LOOPBACK, stream.local_port + 1))
        other.sendto(report, target)  # RFC 5761 RTCP on the RTP port
        await wait_until(lambda: stream.stats()["rtp_dropped_strays"] == 2)
        assert stream.stats()["rtcp_received"] == 0
        peer.sendto(report, (LOOPBACK, stream.local_port + 1))
        await wait_until(lambda: stream.stats()["rtcp_received"] == 1)
    finally:
        other.close()


async def test_a_reoffer_learns_the_source_again(
    engine: MediaEngine, peer: socket.socket, stray: socket.socket
) -> None:
    stream = engine.create_stream()
    stream.create_offer()
    stream.apply_answer(peer_answer(peer.getsockname()[1]))
    target = (LOOPBACK, stream.local_port)
    peer.sendto(RtpSender(ssrc=1).packet(0, mulaw(1000)), target)
    await wait_until(lambda: stream.stats()["packets_received"] == 1)
    stray.sendto(RtpSender(ssrc=2).packet(0, mulaw(1000)), target)
    await wait_until(lambda: stream.stats()["rtp_dropped_strays"] == 1)
    # The peer moves its media (a transfer): its re-offer names the new address.
    stream.handle_offer(peer_answer(stray.getsockname()[1]).replace("o=- 1 1", "o=- 1 2"))
    stray.sendto(RtpSender(ssrc=2).packet(0, mulaw(1000)), target)
    await wait_until(lambda: stream.stats()["packets_received"] == 2)
    assert stream.stats()["remote_ssrc"] == 2 and stream.remote_address == stray.getsockname()


async def test_rtcp_reports_give_rtt(pair: tuple[MediaStream, MediaStream]) -> None:
    a, b = pair
    loop = asyncio.get_running_loop()
    for s in (a, b):
        s._rtcp.interval = 0.1
        s._rtcp.next_report = loop.time() + 0.05
    await wait_until(lambda: a.stats()["rtt_ms"] is not None and b.stats()["rtt_ms"] is not None)
    assert 0 <= a.stats()["rtt_ms"] < 200
    assert a.stats()["rtcp_received"] >= 1


async def test_clock_lateness_is_recorded(engine: MediaEngine) -> None:
    await asyncio.sleep(0.2)
    stats = engine.clock_stats()
    assert stats["ticks"] >= 5
    assert 0 <= stats["p50_ms"] <= stats["p99_ms"] <= stats["max_ms"] + 1e-9
    # A blocked loop makes the clock skip the missed ticks instead of bursting.
    time.sleep(0.1)
    await asyncio.sleep(0.05)
    stats = engine.clock_stats()
    assert stats["skipped"] >= 3 and stats["late_ticks"] >= 1 and stats["max_ms"] >= 60


# --- RFC 2833 captures shipped with sipp ----------------------------------------------


PCAP_DIRS = [Path("/usr/share/sip-tester")]


def pcap_path(name: str) -> Path:
    for directory in PCAP_DIRS:
        if (directory / name).exists():
            return directory / name
    pytest.skip(f"{name} not installed (Debian package sip-tester)")


def read_pcap_udp(path: Path) -> list[tuple[float, bytes]]:
    """(time, UDP payload) of each packet in a classic libpcap file over Ethernet/IPv4."""
    data = path.read_bytes()
    magic = struct.unpack_from("<I", data)[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    linktype = struct.unpack_from(endian + "I", data, 20)[0]
    assert linktype == 1, "Ethernet captures only"
    out = []
    offset = 24
    while offset + 16 <= len(data):
        sec, usec, incl, _ = struct.unpack_from(endian + "IIII", data, offset)
        frame = data[offset + 16 : offset + 16 + incl]
        offset += 16 + incl
        if struct.unpack_from("!H", frame, 12)[0] != 0x0800:
            continue
        ihl = (frame[14] & 0x0F) * 4
        if frame[14 + 9] != 17:  # UDP
            continue
        udp = 14 + ihl
        length = struct.unpack_from("!H", frame, udp + 4)[0]
        out.append((sec + usec / 1e6, frame[udp + 8 : udp + length]))
    return out


@pytest.mark.parametrize(
    "name, digit",
    [
        ("dtmf_2833_1.pcap", "1"),
        ("dtmf_2833_pound.pcap", "#"),
        ("dtmf_2833_star.pcap", "*"),
    ],
)
async def test_sipp_rfc2833_capture(
    engine: MediaEngine, peer: socket.socket, name: str, digit: str
) -> None:
    packets = read_pcap_udp(pcap_path(name))
    assert packets and all(parse_rtp(p).payload_type == 101 for _, p in packets)
    stream = engine.create_stream()
    events: list[DtmfEvent] = []
    stream.on_dtmf = events.append
    stream.create_offer()
    stream.apply_answer(peer_answer(peer.getsockname()[1]))
    target = (LOOPBACK, stream.local_port)
    t0 = packets[0][0]
    loop = asyncio.get_running_loop()
    start = loop.time()
    for when, payload in packets:  # replay with the capture's timing (~160 ms in all)
        delay = start + (when - t0) - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        peer.sendto(payload, target)
    await wait_until(lambda: bool(events), 2)
    await asyncio.sleep(0.1)
    assert [(e.digit, e.source) for e in events] == [(digit, "rfc4733")]
    assert events[0].duration_ms == 280  # 0x08c0 = 2240 samples at 8 kHz


# --- a real peer: sipp's RTP echo ------------------------------------------------------


def free_udp_port(step: int = 1) -> int:
    """A port p with p and p + step free on loopback (sipp -rtp_echo also binds p + 2)."""
    for _ in range(50):
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind((LOOPBACK, 0))
        port = probe.getsockname()[1]
        probe.close()
        other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            other.bind((LOOPBACK, port + step))
            return port
        except OSError:
            continue
        finally:
            other.close()
    pytest.skip("no free UDP ports")


@pytest.mark.peer
async def test_sipp_rtp_echo_peer(engine: MediaEngine) -> None:
    """Our RTP through sipp's echo: the tone and RFC 4733 digits come back to us."""
    if shutil.which("sipp") is None:
        pytest.skip("sipp not installed")
    media_port, sip_port = free_udp_port(2), free_udp_port()
    proc = subprocess.Popen(
        [
            "sipp",
            "-sn",
            "uas",
            "-rtp_echo",
            "-mp",
            str(media_port),
            "-p",
            str(sip_port),
            "-i",
            LOOPBACK,
            "-nostdin",
            "-timeout",
            "10s",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        stream = engine.create_stream()
        stream.create_offer()
        stream.apply_answer(peer_answer(media_port))
        await wait_until(lambda: stream.stats()["packets_received"] > 5, 5)
        heard: list[np.ndarray] = []
        events: list[DtmfEvent] = []
        stream.add_tap(lambda f: heard.append(f.copy()))
        stream.on_dtmf = events.append
        await asyncio.wait_for(stream.play(Sine(700, 0.3)), 3)
        await asyncio.wait_for(stream.send_digits("3", tone_ms=100), 3)
        await wait_until(lambda: bool(events), 3)
        assert [(e.digit, e.source) for e in events] == [("3", "rfc4733")]
        audio = np.concatenate(heard)
        start = int(np.argmax(np.abs(audio) > 1000))
        assert np.count_nonzero(np.abs(audio) > 1000) > 1000
        assert abs(dominant_frequency(audio[start : start + 1024]) - 700) < 15
    finally:
        proc.kill()
        proc.wait(timeout=5)


# --- overlays (play(mix=True)) and bridged audio under a prompt, tick by tick -------------


class Const:
    """A test source: ``frames`` frames of one sample value; counts its reads."""

    def __init__(self, value: int, frames: int) -> None:
        self.value, self.left = value, frames
        self.reads = 0
        self.closed = False

    def read(self, n: int = 160) -> np.ndarray | None:
        self.reads += 1
        if self.left <= 0:
            return None
        self.left -= 1
        return np.full(n, self.value, dtype=np.int16)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
async def manual() -> AsyncIterator[tuple[MediaEngine, MediaStream, MediaStream]]:
    """An engine whose clock is not started: the test calls ``service()`` once per tick."""
    eng = MediaEngine(MediaConfig(bind_host=LOOPBACK, **media_ports()))
    a, b = eng.create_stream(), eng.create_stream()
    connect(a, b)
    yield eng, a, b
    await eng.stop()


def sent_values(eng: MediaEngine, a: MediaStream, ticks: int) -> list[int]:
    """Run ``ticks`` ticks; the (constant) value of each frame ``a`` sent."""
    frames: list[np.ndarray] = []
    a.add_send_tap(lambda f: frames.append(f.copy()))
    for _ in range(ticks):
        eng.service(eng.now(), time.time())
    a.remove_send_tap(frames.append)
    assert all(f.dtype == np.int16 and f.size == 160 and (f == f[0]).all() for f in frames)
    return [int(f[0]) for f in frames]


async def test_overlay_sums_into_the_prompt_and_silence(
    manual: tuple[MediaEngine, MediaStream, MediaStream],
) -> None:
    eng, a, _ = manual
    prompt = a.play(Const(1000, 3))
    overlay = a.play(Const(-300, 5), mix=True)
    assert a.playing and a.overlays == 1
    # The prompt is neither delayed nor cut; the overlay goes on over silence after it.
    assert sent_values(eng, a, 7) == [700, 700, 700, -300, -300, 0, 0]
    assert prompt.result() == "completed" and overlay.result() == "completed"
    assert not a.playing and a.overlays == 0


async def test_overlay_sum_clips_to_int16(
    manual: tuple[MediaEngine, MediaStream, MediaStream],
) -> None:
    eng, a, _ = manual
    a.play(Const(30000, 1))
    a.play(Const(-30000, 1))
    a.play(Const(-30000, 1))
    # The overlays sum to 15000 for two ticks (20000 + 30000 go past int16 on the way: the
    # sum is int32), then to -10000 for one.
    a.play(Const(20000, 2), mix=True)
    a.play(Const(30000, 2), mix=True)
    a.play(Const(-25000, 2), mix=True)
    a.play(Const(-10000, 3), mix=True)
    # 30000 + 15000 -> 32767; -30000 + 15000; -30000 - 10000 -> -32768; silence
    assert sent_values(eng, a, 4) == [32767, -15000, -32768, 0]


async def test_several_overlays_end_on_their_own(
    manual: tuple[MediaEngine, MediaStream, MediaStream],
) -> None:
    eng, a, _ = manual
    sources = [Const(100, 1), Const(200, 2), Const(400, 3)]
    futures = [a.play(s, mix=True) for s in sources]
    assert a.overlays == 3
    assert sent_values(eng, a, 4) == [700, 600, 400, 0]
    assert [f.result() for f in futures] == ["completed"] * 3
    assert all(s.closed for s in sources)


async def test_stop_overlays_and_stop_play(
    manual: tuple[MediaEngine, MediaStream, MediaStream],
) -> None:
    eng, a, _ = manual
    prompt_src, mix1, mix2 = Const(1000, 100), Const(10, 100), Const(20, 100)
    prompt = a.play(prompt_src)
    first, second = a.play(mix1, mix=True), a.play(mix2, mix=True)
    assert sent_values(eng, a, 1) == [1030]
    a.stop_overlays()
    assert first.result() == "stopped" and second.result() == "stopped"
    assert mix1.closed and mix2.closed and not prompt.done()
    assert sent_values(eng, a, 1) == [1000]  # the prompt goes on where it was
    third = a.play(Const(5, 100), mix=True)
    queued = a.play(Const(7, 100))
    a.stop_play()  # everything: prompt, queue and overlays
    assert [f.result() for f in (prompt, third, queued)] == ["stopped"] * 3
    assert not a.playing
    assert sent_values(eng, a, 1) == [0]
    # A cancelled future stops its overlay; close() cancels the rest.
    gone, last = a.play(Const(3, 100), mix=True), a.play(Const(4, 100), mix=True)
    gone.cancel()
    assert sent_values(eng, a, 1) == [4]
    a.close()
    assert last.cancelled() and a.overlays == 0


async def test_overlay_interrupt_on_dtmf_and_paused_by_digits(
    manual: tuple[MediaEngine, MediaStream, MediaStream],
) -> None:
    eng, a, _ = manual
    keep_src = Const(50, 100)
    keep = a.play(keep_src, mix=True)
    cut = a.play(Const(60, 100), mix=True, interrupt_on_dtmf=True)
    a._deliver_dtmf(DtmfEvent("5", 0.0, 60, "rfc4733"))
    assert cut.result() == "dtmf" and not keep.done() and a.overlays == 1
    # Digits pre-empt the overlays too: nothing is summed into the tones (or sent with the
    # RFC 4733 events), and the overlay resumes where it was afterwards.
    reads = keep_src.reads
    digits = a.send_digits("1", mode="inband", tone_ms=60)
    for _ in range(20):
        eng.service(eng.now(), time.time())
        if digits.done():
            break
        assert keep_src.reads == reads  # not read while the tone frames go out
    assert digits.result() == 1
    assert keep_src.reads == reads + 1  # the tick the job ended sends the overlay again
    assert sent_values(eng, a, 1) == [50]


async def test_prompt_on_a_bridged_leg_drops_the_bridged_frames(
    manual: tuple[MediaEngine, MediaStream, MediaStream],
) -> None:
    eng, a, b = manual
    c, d = eng.create_stream(), eng.create_stream()
    connect(c, d)
    eng.bridge(a, c)  # b <-> a = c <-> d: a sends b what c received from d, and back
    for _ in range(3):  # media flows
        eng.service(eng.now(), time.time())
        await asyncio.sleep(0.002)
    a.play(Const(1000, 10))
    for _ in range(11):  # the 11th tick finds the source ended
        eng.service(eng.now(), time.time())
        await asyncio.sleep(0.002)
        assert len(a._bridge_in) <= 1  # no backlog builds up under the prompt
    assert not a.playing
    # Bridged audio plus an overlay: summed.
    a.play(Const(100, 5), mix=True)
    values = sent_values(eng, a, 2)
    assert values == [100, 100]  # d sends silence, relayed through c to a
