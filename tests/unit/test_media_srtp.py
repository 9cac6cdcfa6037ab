"""SRTP in the media engine, over real loopback UDP: two engine streams that negotiate SDES
and talk both ways, and a bare socket holding the other end's libsrtp session to check what
goes on the wire, forged and replayed packets, SRTCP and rekeying."""

from __future__ import annotations

import asyncio
import base64
import socket
import time
from collections.abc import AsyncIterator, Callable

import numpy as np
import pylibsrtp
import pytest

from media.engine import MediaConfig, MediaEngine, MediaStream
from media.rtp import RtpSender, is_rtcp, parse_rtp
from media.sdp import SdpError
from tests.conftest import media_ports

LOOPBACK = "127.0.0.1"
SUITE = "AES_CM_128_HMAC_SHA1_80"


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


@pytest.fixture
def peer() -> AsyncIterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOOPBACK, 0))
    sock.setblocking(False)
    yield sock
    sock.close()


def collect(sock: socket.socket, into: list[bytes]) -> Callable[[], int]:
    """A wait_until condition: how many datagrams ``sock`` has received so far."""

    def count() -> int:
        into.extend(drain(sock))
        return len(into)

    return count


def drain(sock: socket.socket) -> list[bytes]:
    out = []
    for _ in range(10000):
        try:
            out.append(sock.recv(2048))
        except BlockingIOError:
            break
    return out


class Sine:
    def __init__(self, freq: float, seconds: float) -> None:
        self.freq, self.left, self.pos = freq, int(8000 * seconds), 0

    def read(self, n: int = 160) -> np.ndarray | None:
        if self.left <= 0:
            return None
        n = min(n, self.left)
        t = (self.pos + np.arange(n)) / 8000.0
        self.pos += n
        self.left -= n
        return (8000 * np.sin(2 * np.pi * self.freq * t)).astype(np.int16)

    def close(self) -> None:
        pass


def dominant_frequency(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(samples.size)))
    return float(np.argmax(spectrum) * 8000 / samples.size)


def session(key: bytes, inbound: bool, suite: str = SUITE) -> pylibsrtp.Session:
    profile = {
        "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
        "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    }[suite]
    kind = pylibsrtp.Policy.SSRC_ANY_INBOUND if inbound else pylibsrtp.Policy.SSRC_ANY_OUTBOUND
    return pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=kind, srtp_profile=profile))


def crypto_answer(port: int, key: bytes, *, tag: int = 1, suite: str = SUITE) -> str:
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\n"
        f"a=crypto:{tag} {suite} inline:{base64.b64encode(key).decode()}\r\n"
    )


def mulaw_tone() -> bytes:
    from media.g711 import ENCODERS

    t = np.arange(160) / 8000.0
    return ENCODERS["PCMU"]((8000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16))


# --- two engine streams ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("offerer", "answerer"), [("mandatory", "optional"), ("optional", "mandatory")]
)
async def test_audio_and_rtcp_cross_both_ways_encrypted(
    engine: MediaEngine, offerer: str, answerer: str
) -> None:
    a = engine.create_stream(srtp=offerer)
    b = engine.create_stream(srtp=answerer)
    offer = a.create_offer()
    assert ("RTP/SAVP" in offer) == (offerer == "mandatory") and "a=crypto:1 " + SUITE in offer
    answer = b.handle_offer(offer)
    assert answer.count("a=crypto:") == 1 and "a=crypto:1 " + SUITE in answer
    a.apply_answer(answer)
    heard_a: list[np.ndarray] = []
    heard_b: list[np.ndarray] = []
    a.add_tap(lambda f: heard_a.append(f.copy()))
    b.add_tap(lambda f: heard_b.append(f.copy()))
    for s in (a, b):
        s._rtcp.interval = 0.1
        s._rtcp.next_report = engine.now() + 0.05
    done = await asyncio.wait_for(
        asyncio.gather(a.play(Sine(1000, 0.4)), b.play(Sine(600, 0.4))), 3
    )
    assert done == ["completed", "completed"]
    await wait_until(lambda: a.stats()["rtt_ms"] is not None and b.stats()["rtt_ms"] is not None)
    for heard, freq in ((heard_b, 1000), (heard_a, 600)):
        audio = np.concatenate(heard)
        start = int(np.argmax(np.abs(audio) > 1000))
        assert abs(dominant_frequency(audio[start : start + 2048]) - freq) < 10
    for s in (a, b):
        stats = s.stats()
        assert stats["srtp"] == SUITE and stats["srtp_auth_failures"] == 0
        assert stats["packets_received"] >= 20 and stats["rtcp_received"] >= 1


async def test_plain_stream_and_optional_stream_talk_plain(engine: MediaEngine) -> None:
    a = engine.create_stream(srtp="optional")
    b = engine.create_stream()  # srtp off: the crypto lines are ignored
    answer = b.handle_offer(a.create_offer())
    assert "a=crypto" not in answer
    a.apply_answer(answer)
    await wait_until(
        lambda: a.stats()["packets_received"] >= 5 and b.stats()["packets_received"] >= 5
    )
    assert a.stats()["srtp"] is None and b.stats()["srtp"] is None


async def test_mandatory_refuses_a_plain_peer(engine: MediaEngine) -> None:
    a = engine.create_stream(srtp="mandatory")
    b = engine.create_stream()
    with pytest.raises(SdpError, match="no acceptable audio stream"):
        b.handle_offer(a.create_offer())  # RTP/SAVP is refused by an SRTP-less stream
    plain = engine.create_stream()
    answer = engine.create_stream().handle_offer(plain.create_offer())
    with pytest.raises(SdpError, match="SRTP is mandatory but the answer has no a=crypto"):
        a.apply_answer(answer)
    assert a.negotiated is None
    with pytest.raises(SdpError, match="no usable SRTP crypto in the offer"):
        engine.create_stream(srtp="mandatory").handle_offer(plain.create_offer())


async def test_bad_policy_is_refused_before_a_port_is_taken(engine: MediaEngine) -> None:
    with pytest.raises(ValueError, match="srtp must be one of off, optional, mandatory"):
        engine.create_stream(srtp="required")
    assert engine.ports.in_use == 0


# --- the wire, from a bare socket ------------------------------------------------------


async def _secured(engine: MediaEngine, peer: socket.socket, key: bytes) -> MediaStream:
    stream = engine.create_stream(srtp="mandatory")
    stream.create_offer()
    stream.apply_answer(crypto_answer(peer.getsockname()[1], key))
    return stream


async def test_what_we_send_is_srtp_and_srtcp(engine: MediaEngine, peer: socket.socket) -> None:
    their_key = bytes(range(30))
    stream = await _secured(engine, peer, their_key)
    rx = session(stream._crypto.keys[SUITE], inbound=True)  # type: ignore[union-attr]
    stream._rtcp.interval = 0.1
    stream._rtcp.next_report = engine.now() + 0.05
    await asyncio.wait_for(stream.play(Sine(1000, 0.2)), 3)
    rtcp_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        # The stream sends RTCP to the answer's port + 1.
        rtcp_sock.bind((LOOPBACK, peer.getsockname()[1] + 1))
    except OSError:
        pytest.skip("the port above the peer's is taken")
    try:
        rtcp_sock.setblocking(False)
        packets: list[bytes] = []
        count = collect(peer, packets)
        await wait_until(lambda: count() >= 10)
        for wire in packets[:10]:
            header = parse_rtp(wire)
            assert header is not None  # the RTP header stays in clear (RFC 3711 §3.1)
            plain = rx.unprotect(wire)
            assert len(wire) == len(plain) + 10  # the 80-bit authentication tag
            assert wire[12 : len(plain)] != plain[12:]  # the payload is encrypted
        reports: list[bytes] = []
        count = collect(rtcp_sock, reports)
        await wait_until(lambda: count() >= 1)
        assert is_rtcp(reports[0])
        plain_rtcp = rx.unprotect_rtcp(reports[0])
        assert plain_rtcp[1] == 200  # a sender report inside
    finally:
        rtcp_sock.close()


async def test_forged_plain_and_replayed_packets_are_dropped(
    engine: MediaEngine, peer: socket.socket
) -> None:
    their_key = bytes(range(30))
    stream = await _secured(engine, peer, their_key)
    tx = session(their_key, inbound=False)
    sender = RtpSender(ssrc=7)
    target = (LOOPBACK, stream.local_port)
    good = tx.protect(sender.packet(0, mulaw_tone()))
    peer.sendto(good, target)
    await wait_until(lambda: stream.stats()["packets_received"] == 1)
    peer.sendto(good, target)  # replayed
    sender.advance(160)
    forged = bytearray(tx.protect(sender.packet(0, mulaw_tone())))
    forged[20] ^= 0x01  # a flipped payload bit fails the HMAC
    peer.sendto(bytes(forged), target)
    sender.advance(160)
    peer.sendto(sender.packet(0, mulaw_tone()), target)  # plain RTP
    wrong = session(bytes(30), inbound=False)  # the right format under another key
    sender.advance(160)
    peer.sendto(wrong.protect(sender.packet(0, mulaw_tone())), target)
    await wait_until(
        lambda: stream.stats()["srtp_auth_failures"] == 3 and stream.stats()["srtp_replays"] == 1
    )
    assert stream.stats()["packets_received"] == 1
    # SRTCP: a protected report is taken, a plain one is not.
    report = stream._rtcp.build_report(engine.now(), time.time())
    peer.sendto(report, (LOOPBACK, stream.local_port + 1))
    peer.sendto(tx.protect_rtcp(report), (LOOPBACK, stream.local_port + 1))
    await wait_until(lambda: stream.stats()["rtcp_received"] == 1)
    await wait_until(lambda: stream.stats()["srtp_auth_failures"] == 4)


async def test_a_reoffer_with_a_new_key_rekeys(engine: MediaEngine, peer: socket.socket) -> None:
    old_key, new_key = bytes(range(30)), bytes(range(100, 130))
    stream = await _secured(engine, peer, old_key)
    target = (LOOPBACK, stream.local_port)
    sender = RtpSender(ssrc=9)
    old, new = session(old_key, inbound=False), session(new_key, inbound=False)
    peer.sendto(old.protect(sender.packet(0, mulaw_tone())), target)
    await wait_until(lambda: stream.stats()["packets_received"] == 1)
    my_keys = dict(stream._crypto.keys)  # type: ignore[union-attr]
    reoffer = crypto_answer(peer.getsockname()[1], new_key, tag=4).replace("o=- 1 1", "o=- 1 2")
    answer = stream.handle_offer(reoffer)
    # Our answer repeats the re-offer's tag with our (unchanged) key.
    assert f"a=crypto:4 {SUITE} inline:{base64.b64encode(my_keys[SUITE]).decode()}" in answer
    sender.advance(160)
    peer.sendto(old.protect(sender.packet(0, mulaw_tone())), target)
    await wait_until(lambda: stream.stats()["srtp_auth_failures"] == 1)
    sender.advance(160)
    peer.sendto(new.protect(sender.packet(0, mulaw_tone())), target)
    await wait_until(lambda: stream.stats()["packets_received"] == 2)
    # Our send session went on: the peer's receive session still authenticates our packets.
    rx = session(my_keys[SUITE], inbound=True)
    drain(peer)
    got: list[bytes] = []
    count = collect(peer, got)
    await wait_until(lambda: count() >= 2)
    assert rx.unprotect(got[-1])
    # A re-offer that drops crypto under "mandatory" is refused (the re-INVITE gets 488).
    plain = reoffer.replace("RTP/SAVP", "RTP/AVP").split("a=crypto")[0]
    with pytest.raises(SdpError, match="no usable SRTP crypto"):
        stream.handle_offer(plain)
    assert stream.stats()["srtp"] == SUITE


async def test_mandatory_drops_what_comes_before_the_keys(
    engine: MediaEngine, peer: socket.socket
) -> None:
    their_key = bytes(range(30))
    stream = engine.create_stream(srtp="mandatory")
    stream.create_offer()
    target = (LOOPBACK, stream.local_port)
    tx = session(their_key, inbound=False)
    sender = RtpSender(ssrc=5)
    peer.sendto(tx.protect(sender.packet(0, mulaw_tone())), target)  # before the answer
    sender.advance(160)
    peer.sendto(sender.packet(0, mulaw_tone()), target)  # plain, before the answer
    await wait_until(lambda: stream.stats()["srtp_auth_failures"] == 2)
    assert stream.stats()["packets_received"] == 0 and stream.stats()["srtp"] is None
    stream.apply_answer(crypto_answer(peer.getsockname()[1], their_key))
    sender.advance(160)
    peer.sendto(tx.protect(sender.packet(0, mulaw_tone())), target)
    await wait_until(lambda: stream.stats()["packets_received"] == 1)
    assert stream.stats()["srtp"] == SUITE and stream.stats()["srtp_auth_failures"] == 2
