"""The media fast path (``media/engine/_fast.py``) against the full path: the same stream,
driven through the same script of work starting and ending, sends byte-identical packets
(sequence numbers, timestamps, payloads, marker bits) on both; plus what the clock no longer
visits (idle streams, the RTCP and media-timeout heaps).

Each script runs on two engines side by side, ``fast_path=True`` and ``fast_path=False``
(every stream through ``_send_tick``, the reference), with real UDP sockets on loopback as
the far end; the clock is driven by hand (``service()``), so both see the same ticks."""

from __future__ import annotations

import asyncio
import gc
import random
import socket
import time
import weakref
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from media.engine import MediaConfig, MediaEngine, MediaStream
from media.engine._fast import FAST, FULL, NONE, PARKED
from media.rtp import RtpSender, parse_rtp
from tests.conftest import media_ports

LOOPBACK = "127.0.0.1"


class Tone:
    """A deterministic source of ``frames`` 20 ms frames (the play.Source protocol)."""

    def __init__(self, freq: float, frames: int) -> None:
        self.freq, self.left, self.pos = freq, frames * 160, 0

    def read(self, n: int = 160) -> np.ndarray | None:
        if self.left <= 0:
            return None
        n = min(n, self.left)
        t = (self.pos + np.arange(n)) / 8000.0
        self.pos += n
        self.left -= n
        return (6000 * np.sin(2 * np.pi * self.freq * t)).astype(np.int16)


def sdp(port: int, version: int, *, codecs: str = "0", direction: str = "sendrecv") -> str:
    rtpmap = "".join(
        f"a=rtpmap:{pt} {name}\r\n"
        for pt, name in (("0", "PCMU/8000"), ("8", "PCMA/8000"), ("111", "opus/48000/2"))
        if pt in codecs.split()
    )
    return (
        f"v=0\r\no=- 1 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP {codecs} 101\r\n{rtpmap}"
        "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\n"
        f"a={direction}\r\n"
    )


def send_stats(stream: MediaStream) -> dict[str, object]:
    """stats() but what depends on the far end's port or on arrival times."""
    return {k: v for k, v in stream.stats().items() if k not in ("remote", "jitter_ms")}


def drain(sock: socket.socket) -> list[bytes]:
    out = []
    for _ in range(10000):
        try:
            out.append(sock.recv(2048))
        except BlockingIOError:
            break
    return out


class Side:
    """One engine, one stream on it, and the far end's socket."""

    def __init__(
        self, fast: bool, ports: dict[str, int], loop: asyncio.AbstractEventLoop, silence: str
    ) -> None:
        config = MediaConfig(bind_host=LOOPBACK, **ports, silence=silence)
        self.engine = MediaEngine(config, fast_path=fast)
        self.engine._loop = loop  # futures of play()/send_digits(); the clock is driven by hand
        self.peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.peer.bind((LOOPBACK, 0))
        self.peer.setblocking(False)
        self.port = self.peer.getsockname()[1]
        self.stream = self.engine.create_stream(codecs=["PCMU", "PCMA", "OPUS"])
        sender = self.stream._sender  # the same random starts on both sides, near the wraps
        sender.ssrc, sender.sequence_number, sender.timestamp = 0x5EED, 65530, 2**32 - 1000
        self.packets: list[bytes] = []
        self.rx = RtpSender(ssrc=77, sequence_number=1, timestamp=0)
        self.tapped = 0

    def tick(self, now: float, skipped: int) -> None:
        self.engine.service(now, time.time(), skipped)
        self.packets += drain(self.peer)

    def send_rtp(self) -> None:
        self.peer.sendto(self.rx.packet(0, b"\xff" * 160), (LOOPBACK, self.stream.local_port))
        self.rx.advance(160)

    def tap(self, frame: np.ndarray) -> None:
        self.tapped += 1

    def close(self) -> None:
        self.stream.close()
        self.peer.close()


def make_sides(silence: str) -> Iterator[tuple[Side, Side]]:
    ports = media_ports()
    half = (ports["port_max"] - ports["port_min"]) // 2
    lower = {"port_min": ports["port_min"], "port_max": ports["port_min"] + half}
    upper = {"port_min": ports["port_min"] + half + 1, "port_max": ports["port_max"]}
    loop = asyncio.new_event_loop()
    fast, full = Side(True, lower, loop, silence), Side(False, upper, loop, silence)
    yield fast, full
    fast.close()
    full.close()
    loop.close()


@pytest.fixture
def sides() -> Iterator[tuple[Side, Side]]:
    yield from make_sides("silence")


@pytest.fixture(params=["silence", "none", "cn"])
def any_sides(request: pytest.FixtureRequest) -> Iterator[tuple[Side, Side]]:
    """Both sides with each ``MediaConfig.silence``: encoded silence (the fast path),
    nothing (silent streams are parked) or comfort noise (the full path)."""
    yield from make_sides(request.param)


OPS = (
    "play", "overlay", "stop", "digits", "inband", "tap", "untap", "held", "inactive",
    "resume", "pcma", "pcmu", "opus", "we_hold", "we_resume", "rtp", "skip", "stats", "wait",
)  # fmt: skip


def run_script(fast: Side, full: Side, ops: list[tuple[str, int]]) -> None:
    """Apply each op to both streams, then tick both; the op's number is its size."""
    version = [2]
    now = 1000.0

    def both(fn: Callable[[Side], object]) -> None:
        fn(fast)
        fn(full)

    def offer(direction: str = "sendrecv", codecs: str = "0 8") -> None:
        version[0] += 1
        both(
            lambda s: s.stream.handle_offer(
                sdp(s.port, version[0], codecs=codecs, direction=direction)
            )
        )

    both(lambda s: s.stream.create_offer())
    both(lambda s: s.stream.apply_answer(sdp(s.port, 1, codecs="0")))
    for op, n in ops:
        skipped = 0
        if op == "play":
            both(lambda s, n=n: s.stream.play(Tone(440, n)))
        elif op == "overlay":
            both(lambda s, n=n: s.stream.play(Tone(1000, n), mix=True))
        elif op == "stop":
            both(lambda s: s.stream.stop_play())
        elif op in ("digits", "inband"):
            mode = "rfc4733" if op == "digits" else "inband"
            digits = "1" if n % 2 else "2@60"
            both(lambda s, d=digits, m=mode: s.stream.send_digits(d, mode=m))
        elif op == "tap":
            both(lambda s: s.stream.add_send_tap(s.tap))
        elif op == "untap":
            both(lambda s: s.stream.remove_send_tap(s.tap))
        elif op == "held":  # the far end holds us: we only receive
            offer("sendonly")
        elif op == "inactive":
            offer("inactive")
        elif op == "resume":
            offer("sendrecv")
        elif op in ("pcma", "pcmu", "opus"):  # re-INVITE changing the codec
            offer(codecs={"pcma": "8", "pcmu": "0", "opus": "111"}[op])
        elif op == "we_hold":
            version[0] += 1
            both(lambda s: s.stream.hold())
            both(lambda s: s.stream.apply_answer(sdp(s.port, version[0], direction="recvonly")))
        elif op == "we_resume":
            version[0] += 1
            both(lambda s: s.stream.resume())
            both(lambda s: s.stream.apply_answer(sdp(s.port, version[0])))
        elif op == "rtp":
            both(lambda s: s.send_rtp())
        elif op == "skip":
            skipped = 1 + n % 3
        elif op == "stats":
            assert send_stats(fast.stream) == send_stats(full.stream)
        for _ in range(max(1, n if op == "wait" else 1)):
            now += 0.020 * (1 + skipped)
            fast.tick(now, skipped)
            full.tick(now, skipped)
            skipped = 0
    for _ in range(3):  # what is still on its way
        now += 0.020
        fast.tick(now, 0)
        full.tick(now, 0)
    time.sleep(0.005)
    fast.packets += drain(fast.peer)
    full.packets += drain(full.peer)


def check_same(fast: Side, full: Side) -> None:
    assert len(fast.packets) == len(full.packets)
    for i, (a, b) in enumerate(zip(fast.packets, full.packets, strict=True)):
        assert a == b, (i, parse_rtp(a), parse_rtp(b))
    assert send_stats(fast.stream) == send_stats(full.stream)
    assert fast.tapped == full.tapped


def test_plain_stream_takes_the_fast_path_and_sends_the_same_bytes(sides) -> None:
    fast, full = sides
    run_script(fast, full, [("wait", 30), ("stats", 1), ("wait", 5)])
    assert fast.stream._path == FAST and full.stream._path == FULL
    check_same(fast, full)
    packets = [parse_rtp(p) for p in fast.packets]
    assert packets[0].marker and not any(p.marker for p in packets[1:])
    seqs = [p.sequence_number for p in packets]
    assert seqs == [(65530 + i) & 0xFFFF for i in range(len(seqs))]  # wraps at 2**16
    assert {p.payload for p in packets} == {b"\xff" * 160}


@pytest.mark.parametrize(
    "script",
    [
        [("wait", 3), ("play", 4), ("wait", 6), ("play", 2), ("stop", 1), ("wait", 3)],
        [("wait", 2), ("held", 1), ("wait", 7), ("skip", 2), ("resume", 1), ("wait", 4)],
        [
            ("wait", 2),
            ("inactive", 1),
            ("wait", 3),
            ("pcma", 1),
            ("wait", 3),
            ("resume", 1),
            ("wait", 3),
            ("pcmu", 1),
            ("wait", 3),
        ],
        [("wait", 2), ("digits", 1), ("wait", 15), ("inband", 2), ("wait", 20)],
        [
            ("wait", 2),
            ("tap", 1),
            ("wait", 3),
            ("untap", 1),
            ("wait", 3),
            ("overlay", 3),
            ("wait", 5),
        ],
        [
            ("rtp", 1),
            ("wait", 2),
            ("we_hold", 1),
            ("wait", 3),
            ("we_resume", 1),
            ("rtp", 1),
            ("skip", 1),
            ("wait", 3),
        ],
    ],
    ids=["play", "hold", "codec", "digits", "tap-overlay", "latch-our-hold"],
)
def test_transitions_send_the_same_bytes(any_sides, script) -> None:
    fast, full = any_sides
    run_script(fast, full, script)
    check_same(fast, full)


@pytest.mark.parametrize("wait", range(3, 15))
def test_a_codec_change_during_digits_marks_the_first_audio_packet(sides, wait: int) -> None:
    """A re-INVITE changing the codec while digits are sent: the marker goes on the first
    audio packet after them, whichever path the stream is on when it goes out."""
    fast, full = sides
    run_script(fast, full, [("digits", 1), ("pcma", 1), ("wait", wait), ("play", 2), ("wait", 25)])
    check_same(fast, full)
    assert sum(parse_rtp(p).marker and parse_rtp(p).payload_type == 8 for p in fast.packets) == 1


@pytest.mark.parametrize("seed", range(30))
def test_random_scripts_send_the_same_bytes(any_sides, seed: int) -> None:
    rng = random.Random(seed)
    ops = [(rng.choice(OPS), rng.randint(1, 6)) for _ in range(30)]
    fast, full = any_sides
    run_script(fast, full, ops)
    check_same(fast, full)


def test_paths_follow_the_work(sides) -> None:
    fast, _ = sides
    stream, engine = fast.stream, fast.engine
    now = [1000.0]

    def tick() -> None:
        now[0] += 0.02
        fast.tick(now[0], 0)

    stream.create_offer()
    tick()
    assert stream._path == NONE  # no answer yet: not visited
    stream.apply_answer(sdp(fast.port, 1))
    tick()
    assert stream._path == FAST and len(engine._fast) == 1
    stream.play(Tone(300, 2))
    tick()
    assert stream._path == FULL and len(engine._fast) == 0
    tick()
    tick()  # the source ended on this tick: back on the fast path after it
    assert stream._path == FAST
    stream.handle_offer(sdp(fast.port, 2, direction="sendonly"))
    tick()
    assert stream._path == PARKED
    stream.close()
    assert stream._path == NONE and len(engine._fast) == 0 and not engine._fast.parked


def test_idle_streams_are_not_visited(sides) -> None:
    """Streams with an offer and no answer (calls being set up) cost no work per tick:
    no send path, no receive work, no socket read."""
    fast, _ = sides
    engine = fast.engine
    idle = [engine.create_stream() for _ in range(20)]
    for s in idle:
        s.create_offer()
    calls: list[MediaStream] = []
    original = MediaStream._receive_tick

    def spy(self: MediaStream, now: float) -> object:
        calls.append(self)
        return original(self, now)

    MediaStream._receive_tick = spy  # type: ignore[method-assign]
    try:
        for k in range(5):
            engine.service(2000.0 + k * 0.02, time.time())
    finally:
        MediaStream._receive_tick = original  # type: ignore[method-assign]
    assert calls == []
    assert all(s._path == NONE for s in idle)
    assert not engine._fast.full and not engine._rx_work
    for s in idle:
        s.close()


def test_rtcp_reports_come_from_the_heap_with_the_fast_path_counts(sides) -> None:
    fast, full = sides
    for side in (fast, full):
        side.rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # type: ignore[attr-defined]
        side.rtcp.bind((LOOPBACK, side.port + 1))  # type: ignore[attr-defined]
        side.rtcp.setblocking(False)  # type: ignore[attr-defined]
    try:
        for side in (fast, full):
            side.stream.create_offer()
            side.stream.apply_answer(sdp(side.port, 1))
        now = 1000.0
        for side in (fast, full):
            side.stream._rtcp.next_report = now + 0.1  # the setter moves the heap entry
        reports: dict[bool, list[bytes]] = {True: [], False: []}
        for _ in range(8):
            now += 0.02
            for side in (fast, full):
                side.tick(now, 0)
                reports[side is fast] += drain(side.rtcp)  # type: ignore[attr-defined]
        assert len(reports[True]) == len(reports[False]) == 1
        # The sender info (bytes 8-27: NTP time, RTP time, packet and octet counts): the
        # NTP time stamp is the wall clock's, the rest must agree.
        a, b = reports[True][0], reports[False][0]
        assert a[0:8] == b[0:8] and a[16:28] == b[16:28]
    finally:
        for side in (fast, full):
            side.rtcp.close()  # type: ignore[attr-defined]


def test_media_timeout_from_the_heap_fires_once_at_the_same_tick(sides) -> None:
    fast, _ = sides
    stream = fast.stream
    fired: list[float] = []
    stream.create_offer()
    stream.apply_answer(sdp(fast.port, 1))
    now = fast.engine.now()
    stream.set_media_timeout(0.1)
    stream.on_media_timeout = lambda: fired.append(now)
    base = stream._last_rx
    for k in range(1, 20):
        now = base + k * 0.02
        if k == 3:
            fast.send_rtp()
            time.sleep(0.002)
        fast.tick(now, 0)
    # The packet drained at tick 3 moved the deadline to 0.06 + 0.1: fired on the first
    # tick past it (now - last_rx > limit), once.
    assert len(fired) == 1 and fired[0] - (base + 0.06) > 0.1
    assert fired[0] - (base + 0.06) <= 0.1 + 0.02 + 1e-9


def test_a_closed_stream_is_freed_by_reference_counting(sides) -> None:
    """No path, heap or socket table keeps a closed stream (or a reference cycle through
    it) alive: servers freeze their heap while calls are up (softswitch.process.GcPolicy),
    so what only the cyclic collector could free would stay."""
    fast, _ = sides
    engine = fast.engine
    stream = engine.create_stream()
    stream.create_offer()
    stream.apply_answer(sdp(fast.port, 1))
    stream.set_media_timeout(60.0, 600.0)
    stream.add_tap(lambda frame: None)
    for k in range(3):
        engine.service(engine.now() + k * 0.02, time.time())
    assert stream._path == FAST and engine._rtcp_due and engine._watch_due
    probe = weakref.ref(stream)
    gc.disable()
    try:
        stream.close()
        del stream
        assert probe() is None
    finally:
        gc.enable()
    assert all(s is fast.stream for s in engine._rtcp_due.values())
    assert all(s is fast.stream for s in engine._watch_due.values())


def test_the_media_tick_benchmark_runs() -> None:
    """``python -m benchmarks.media_tick`` at a tiny scale (no timing asserted)."""
    from benchmarks import media_tick

    out = asyncio.run(media_tick.measure(10, 4, 20, base=media_ports()["port_min"]))
    assert out["streams"] == 10 and out["idle"] == 4
    assert out["packets_sent"] == 10 * 40 and out["packets_received"] > 0
