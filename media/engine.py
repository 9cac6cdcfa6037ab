"""The media engine: one clock, a port pool, and the RTP streams it services in batches.

Why one clock: an asyncio callback per packet costs ~20 µs and a timer per stream drifts; a
raw non-blocking ``sendto``/``recvfrom`` costs ~3 µs. So :class:`MediaEngine` arms a single
``loop.call_at`` every 20 ms against absolute deadlines (``t0 + k * 20 ms`` on the loop's
monotonic clock, never relative sleeps) and on each tick, for every stream at once:

1. drains the readable RTP/RTCP sockets (one ``selectors`` poll with timeout 0, then
   ``recvfrom`` until ``BlockingIOError``), parses RTP, updates RFC 3550 statistics, feeds
   RFC 4733 receivers and decodes audio into a small per-stream playout FIFO;
2. takes one 20 ms frame per stream from the FIFO (silence on underrun), runs the in-band
   DTMF detector bank over all of them in one numpy call, then the taps (AMD, recorders)
   and bridges;
3. builds each stream's due packet (RFC 4733 events, in-band tones, the playing source,
   bridged audio, or silence/comfort noise) and sends it with a raw ``sendto``;
4. sends RTCP reports that are due.

If a tick runs more than one period late, the clock skips the missed ticks (counted in
``clock_stats()['skipped']``) and RTP timestamps jump accordingly, so the far end sees a gap
rather than audio that drifts further and further behind.

DTMF dedupe rule: each stream runs the in-band (Goertzel) detector until the first RFC 4733
telephone-event packet arrives from the peer; from then on the peer is known to signal
digits out of band, the detector slot is released, and only RFC 4733 events are reported.
A digit's tone takes >= 40 ms to detect in-band while its first RFC 4733 packet is sent at
tone start, so the first digit is not reported twice.

Symmetric RTP (RFC 4961): a stream sends to the SDP address until the first RTP packet
arrives, then to that packet's source (``MediaConfig.symmetric_rtp``). A new SSRC from the
peer's audio (PBXs switch SSRC on transfer or re-INVITE) is accepted: statistics restart
and the stream latches again. Telephone-events arriving with an SSRC other than the audio's
(some gateways do this; so does sipp replaying a capture while echoing our audio) are not a
source change: each SSRC gets its own RFC 4733 receiver and the audio statistics stay. A new
address in a later SDP unlatches.

Receive path: no reordering jitter buffer (nothing is played out to a sound card); received
audio goes through a FIFO of at most ``MAX_PLAYOUT_FRAMES`` frames and comes out one 20 ms
frame per tick, silence-filled on underrun, so taps and recorders see wall-clock time.
Send path: ptime is a multiple of 20 ms (frames are accumulated); a peer asking for another
ptime gets ``MediaConfig.ptime_ms``. While on hold (our direction without "send") sources and
DTMF jobs still advance but no RTP is sent.

Playback: :meth:`MediaStream.play` queues sources; they play one after another. With
``mix=True`` a source is an overlay instead (the live-call Play/Speak API's ``mix=true``): it
starts on the next tick and each of its frames is summed (int32, clipped to int16) into whatever
the stream sends that tick: the playing source, bridged audio, or silence. Overlays never
delay or interrupt the queue, several may run at once, and each ends on its own.

What a stream sends on a tick, in order of precedence:

1. a ``send_digits`` job pre-empts everything: RFC 4733 event packets or an in-band tone
   frame; neither the queued source nor the overlays are read meanwhile (they resume
   where they were), so nothing is summed into the Q.23 tones;
2. else the queued source's frame; a prompt on one leg of a bridge replaces what that
   leg hears (the live-call API's ``mix=false``), so the bridged frame of this tick is dropped;
3. else the bridged frame (:meth:`MediaEngine.bridge`), else silence;
4. plus the overlays' frames.

Bridged audio is relayed in real time: the frame a stream received on a tick is what its
peer sends on the same tick. Frames that were not sent on their tick (the peer was playing
a prompt or sending digits, or had no negotiated media yet) are dropped, not played late,
so a prompt never leaves a backlog that would delay the bridged audio for the rest of the
call.
"""

from __future__ import annotations

import asyncio
import logging
import platform
import random
import selectors
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import dtmf as _dtmf
from . import g711 as _g711
from .rtp import ReceiveStatistics, RtcpSession, RtpSender, is_rtcp, parse_rtp
from .sdp import (
    Codec,
    NegotiatedMedia,
    SdpError,
    SessionDescription,
    answer_offer,
    build_offer,
    negotiate_answer,
)

__all__ = [
    "MediaConfig",
    "MediaEngine",
    "MediaStream",
    "PortPool",
    "PortPoolExhausted",
]

log = logging.getLogger(__name__)

CLOCK_RATE = 8000
FRAME_SAMPLES = 160  # 20 ms at 8 kHz
TICK = 0.020
LATE_THRESHOLD = 0.005  # a tick later than this counts in clock_stats()["late_ticks"]
MAX_PACKETS_PER_TICK = 64  # per socket, so one flooded socket cannot starve the others
MAX_PLAYOUT_FRAMES = 6  # 120 ms of received audio buffered at most; older frames dropped
MAX_BRIDGE_FRAMES = 5
MAX_EVENT_SOURCES = 4  # SSRCs whose RFC 4733 events are tracked at once per stream
LATENESS_WINDOW = 4096  # ticks of lateness history (~82 s)
CN_REFRESH_TICKS = 50  # RFC 3389 §4: resend comfort noise now and then (here every second)
CN_LEVEL = 70  # -70 dBov: quiet background

_SILENCE = np.zeros(FRAME_SAMPLES, dtype=np.int16)


@dataclass
class MediaConfig:
    """Media engine settings (one per process)."""

    bind_host: str = "127.0.0.1"
    """Local address the RTP sockets bind to."""
    advertised_host: str | None = None
    """Address written in SDP (c=, o=); defaults to ``bind_host``."""
    port_min: int = 16384
    port_max: int = 32767
    """RTP uses even ports and RTCP the odd one above (RFC 3550 §11)."""
    ptime_ms: int = 20
    """Packetisation time we ask for and send with (a multiple of 20)."""
    codecs: list[str] = field(default_factory=lambda: ["PCMU", "PCMA"])
    """Codecs we offer and accept, in preference order (only G.711 is encoded)."""
    telephone_event: bool = True
    """Offer/accept RFC 4733 telephone-event."""
    silence: str = "silence"
    """What to send when nothing plays: ``silence`` (encoded zeros), ``cn`` (RFC 3389
    comfort noise, if negotiated, else silence) or ``none`` (send nothing)."""
    inband_dtmf_detect: bool | str = "auto"
    """In-band (Goertzel) DTMF detection: ``"auto"`` runs it only when the peer did not
    negotiate telephone-event (as Asterisk's ``dtmfmode=rfc2833`` and FreeSWITCH do: a peer
    that offers RFC 4733 sends its digits that way, and detection costs a few µs per stream
    per tick); ``True``/``"always"`` runs it on every stream until RFC 4733 packets arrive;
    ``False`` never."""
    symmetric_rtp: bool = True
    """Send to the source address of received RTP (latch) instead of the SDP address."""
    media_timeout_s: float = 0.0
    """Call ``on_media_timeout`` when no RTP arrives for this long (0 = off)."""

    def __post_init__(self) -> None:
        if self.silence not in ("silence", "cn", "none"):
            raise ValueError(f"silence must be silence, cn or none, not {self.silence!r}")
        if self.ptime_ms <= 0 or self.ptime_ms % 20:
            raise ValueError("ptime_ms must be a positive multiple of 20")
        if self.port_max - self.port_min < 1:
            raise ValueError("port range must hold at least one RTP/RTCP pair")
        unknown = [c for c in self.codecs if c.upper() not in _g711.ENCODERS]
        if unknown:
            raise ValueError(f"cannot encode {unknown}; supported: {sorted(_g711.ENCODERS)}")

    @property
    def sdp_address(self) -> str:
        return self.advertised_host or self.bind_host

    @property
    def sdp_codecs(self) -> list[str]:
        return list(self.codecs) + (["CN"] if self.silence == "cn" else [])


class PortPoolExhausted(RuntimeError):
    """Every RTP/RTCP port pair in the configured range is in use."""


class PortPool:
    """Even RTP ports with RTCP on port + 1 (RFC 3550 §11), handed out round-robin so a port
    freed a moment ago is not reused at once (late packets of the old call would land in
    the new one). Ports busy in other processes are skipped."""

    def __init__(self, host: str, port_min: int, port_max: int) -> None:
        self.host = host
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        first = port_min + (port_min & 1)
        self._ports = list(range(first, port_max, 2))  # port + 1 <= port_max
        if not self._ports:
            raise ValueError("port range holds no RTP/RTCP pair")
        self._cursor = 0
        self._busy: dict[int, tuple[socket.socket, socket.socket]] = {}

    @property
    def in_use(self) -> int:
        return len(self._busy)

    @property
    def capacity(self) -> int:
        return len(self._ports)

    def _bind(self, port: int) -> socket.socket:
        sock = socket.socket(self.family, socket.SOCK_DGRAM)
        try:
            sock.bind((self.host, port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    def allocate(self) -> tuple[socket.socket, socket.socket, int]:
        """Bind the next free pair; raises :class:`PortPoolExhausted` after one full round."""
        for _ in range(len(self._ports)):
            port = self._ports[self._cursor]
            self._cursor = (self._cursor + 1) % len(self._ports)
            if port in self._busy:
                continue
            try:
                rtp = self._bind(port)
            except OSError:
                continue
            try:
                rtcp = self._bind(port + 1)
            except OSError:
                rtp.close()
                continue
            self._busy[port] = (rtp, rtcp)
            return rtp, rtcp, port
        raise PortPoolExhausted(f"no free RTP port pair in {self._ports[0]}-{self._ports[-1] + 1}")

    def release(self, port: int) -> None:
        """Close the pair's sockets and free the port. Idempotent."""
        pair = self._busy.pop(port, None)
        if pair is not None:
            for sock in pair:
                sock.close()


@dataclass
class _PlayItem:
    source: Any
    future: asyncio.Future[str]
    interrupt_on_dtmf: bool


@dataclass
class _DigitsJob:
    steps: list[Any]
    mode: str
    future: asyncio.Future[int]
    sender: Any = None  # Rfc4733Sender or InbandDtmfGenerator once started
    rfc4733: bool = False
    payload_type: int = 101

    @property
    def digits(self) -> int:
        return sum(1 for step in self.steps if step.digit is not None)


class MediaStream:
    """One RTP session (audio, one SSRC each way) owned by a :class:`MediaEngine`.

    Created by :meth:`MediaEngine.create_stream`. Before the remote address is known (before
    :meth:`apply_answer` or :meth:`handle_offer`) it only receives.
    """

    def __init__(
        self, engine: MediaEngine, rtp_sock: socket.socket, rtcp_sock: socket.socket, port: int
    ) -> None:
        self._engine = engine
        self._config = engine.config
        self.local_port = port
        self.local_address = self._config.sdp_address
        self._rtp_sock = rtp_sock
        self._rtcp_sock = rtcp_sock
        self.on_dtmf: Callable[[_dtmf.DtmfEvent], None] | None = None
        self.on_media_timeout: Callable[[], None] | None = None
        self.closed = False

        self._sender = RtpSender(CLOCK_RATE)
        self._rx = ReceiveStatistics(CLOCK_RATE)
        self._rtcp = RtcpSession(self._sender, self._rx, cname=f"softswitch@{port}")

        # Offer/answer state (RFC 3264 §8: same o= session id, version + 1 when changed).
        self._session_id = random.randint(1, 2**31)
        self._version = 1
        self._last_local_body: str | None = None
        self._local_offer: str | None = None
        self._local_offer_parsed: SessionDescription | None = None
        self._last_answer: tuple[str | None, str] | None = None
        self._held = False
        self._negotiated: NegotiatedMedia | None = None
        self._sdp_remote: tuple[str, int] | None = None
        self._remote_rtp: tuple[str, int] | None = None
        self._remote_rtcp: tuple[str, int] | None = None
        self._latched = False

        # Receive path.
        self._receive_codecs: dict[int, Codec] = {}
        self._dtmf_types: frozenset[int] = frozenset()
        # One RFC 4733 receiver per SSRC sending events (see _on_rtp), oldest first.
        self._rfc4733_rx: dict[int, _dtmf.Rfc4733Receiver] = {}
        self._seen_rfc4733 = False
        self._playout: deque[np.ndarray] = deque()
        self._playout_partial = np.zeros(0, dtype=np.int16)
        self._receiving = False
        self._last_rx: float | None = None
        self._timed_out = False
        self._taps: list[Callable[[np.ndarray], None]] = []
        self._silence_payloads: dict[int, bytes] = {}
        self._send_taps: list[Callable[[np.ndarray], None]] = []
        self._detector: int | None = None  # slot in the engine's detector bank
        self._bridge_peer: MediaStream | None = None
        self._bridge_in: deque[np.ndarray] = deque(maxlen=MAX_BRIDGE_FRAMES)

        # Send path.
        self._encoder: Callable[[np.ndarray], bytes] | None = None
        self._send_pt = 0
        self._frames_per_packet = 1
        self._pending: list[np.ndarray] = []
        self._marker_next = True
        self._silent_ticks = 0
        self._play_queue: deque[_PlayItem] = deque()
        self._playing: _PlayItem | None = None
        self._overlays: list[_PlayItem] = []  # mix=True sources, summed into every frame
        self._digits_queue: deque[_DigitsJob] = deque()
        self._digits: _DigitsJob | None = None

        # Counters for stats().
        self.packets_received = 0
        self.bytes_received = 0
        self.packets_dropped = 0
        self.send_errors = 0
        self.dtmf_sent = 0
        self.dtmf_received = 0
        self.ssrc_changes = 0

    # --- SDP ------------------------------------------------------------------------------

    def _versioned(self, build: Callable[[int], str]) -> str:
        """Build a local SDP body, bumping o= version only if the body changed (RFC 3264 §8)."""
        text = build(self._version)
        body = "\n".join(ln for ln in text.splitlines() if not ln.startswith("o="))
        if self._last_local_body is not None and body != self._last_local_body:
            self._version += 1
            text = build(self._version)
        self._last_local_body = body
        return text

    def _offer(self, direction: str) -> str:
        cfg = self._config

        def build(version: int) -> str:
            return build_offer(
                address=self.local_address,
                port=self.local_port,
                codecs=cfg.sdp_codecs,
                telephone_event=cfg.telephone_event,
                ptime=cfg.ptime_ms,
                direction=direction,
                session_id=self._session_id,
                version=version,
            )

        self._local_offer = self._versioned(build)
        offer = self._local_offer_parsed = SessionDescription.parse(self._local_offer)
        if self._negotiated is None:
            # Until the answer arrives, accept what we offered (early RTP may beat the 183).
            _, audio = offer.first_audio()
            self._receive_codecs = {c.payload_type: c for c in audio.codecs}
            te = audio.telephone_event
            self._dtmf_types = frozenset({te.payload_type}) if te else frozenset()
        return self._local_offer

    def create_offer(self) -> str:
        """Our SDP offer for an INVITE (RFC 3264 §5)."""
        self._check_open()
        return self._offer("sendonly" if self._held else "sendrecv")

    def hold(self) -> str:
        """A re-INVITE offer putting the far end on hold (RFC 3264 §8.4: ``a=sendonly``)."""
        self._held = True
        return self.create_offer()

    def resume(self) -> str:
        """A re-INVITE offer taking the far end off hold (``a=sendrecv``)."""
        self._held = False
        return self.create_offer()

    def apply_answer(self, sdp: str) -> None:
        """Apply the answer to our latest offer (183 early media, then 200). Applying the
        same answer twice is a no-op; a different one updates the session.

        Raises :class:`SdpError` if no common codec.
        """
        self._check_open()
        if self._local_offer is None:
            raise SdpError("apply_answer() before create_offer()")
        key = (self._local_offer, sdp)
        if self._last_answer == key:
            return
        # The offer as parsed when we built it (parsing our own text again costs per call).
        offer = self._local_offer_parsed or self._local_offer
        negotiated = negotiate_answer(offer, sdp)
        self._last_answer = key
        self._apply(negotiated)

    def handle_offer(self, sdp: str) -> str:
        """Answer an offer from the far end (re-INVITE: hold, resume, codec change, or an
        INVITE we receive). Returns our answer SDP."""
        self._check_open()
        cfg = self._config
        result: list[NegotiatedMedia] = []

        def build(version: int) -> str:
            text, negotiated = answer_offer(
                sdp,
                address=self.local_address,
                port=self.local_port,
                supported=cfg.sdp_codecs,
                telephone_event=cfg.telephone_event,
                ptime=cfg.ptime_ms,
                session_id=self._session_id,
                version=version,
                hold=self._held,
            )
            result.append(negotiated)
            return text

        text = self._versioned(build)
        self._last_answer = None
        self._apply(result[-1])
        return text

    def _apply(self, neg: NegotiatedMedia) -> None:
        remote = (neg.remote_address, neg.remote_port)
        if remote != self._sdp_remote:
            # New media address from signalling: send there until RTP arrives again.
            self._sdp_remote = remote
            self._latched = False
            self._remote_rtp = None if neg.remote_address in ("0.0.0.0", "::") else remote
            rtcp_port = neg.remote_rtcp_port or neg.remote_port + 1
            self._remote_rtcp = (
                (neg.remote_rtcp_address or neg.remote_address, rtcp_port)
                if self._remote_rtp
                else None
            )
        codec_name = neg.codec.name.upper()
        encoder = _g711.ENCODERS.get(codec_name)
        if encoder is None:
            raise SdpError(f"negotiated codec {neg.codec.name} cannot be encoded")
        if self._negotiated is None or neg.codec != self._negotiated.codec:
            self._marker_next = True
        self._encoder = encoder
        self._send_pt = neg.codec.payload_type
        ptime = neg.ptime if neg.ptime and neg.ptime % 20 == 0 else self._config.ptime_ms
        self._frames_per_packet = max(1, min(ptime // 20, 6))
        self._pending.clear()
        self._receive_codecs = dict(neg.receive_codecs)
        self._dtmf_types = neg.receive_dtmf_payload_types
        self._negotiated = neg
        now = self._engine.now()
        if self._last_rx is None:
            self._last_rx = now
        self._receiving = True
        if self._rtcp.next_report is None:
            self._rtcp.schedule(now)
        mode = self._config.inband_dtmf_detect
        wanted = bool(mode) and (mode != "auto" or neg.dtmf_payload_type is None)
        if wanted and not self._seen_rfc4733 and self._detector is None:
            self._detector = self._engine._allocate_detector(self)
        elif not wanted and self._detector is not None:
            self._engine._release_detector(self._detector)
            self._detector = None

    @property
    def negotiated(self) -> NegotiatedMedia | None:
        """The result of the last offer/answer, or ``None`` before one completed."""
        return self._negotiated

    @property
    def remote_address(self) -> tuple[str, int] | None:
        """Where RTP goes now (the latched source once symmetric RTP latched)."""
        return self._remote_rtp

    @property
    def _can_send(self) -> bool:
        neg = self._negotiated
        return neg is not None and neg.sending and self._remote_rtp is not None and not self.closed

    # --- application API ------------------------------------------------------------------

    def _future(self) -> asyncio.Future[Any]:
        return self._engine.loop.create_future()

    def play(
        self, source: Any, *, mix: bool = False, interrupt_on_dtmf: bool = False
    ) -> asyncio.Future[str]:
        """Play a source (anything with ``read(n) -> int16 array | None``).

        ``mix=False``: queue it; queued sources play in order and replace bridged audio.
        ``mix=True``: overlay it from the next tick on, summed into whatever is sent (the
        queued source, bridged audio or silence) without delaying or stopping it.
        The future's result is ``"completed"``, ``"stopped"`` (:meth:`stop_play`,
        :meth:`stop_overlays`) or ``"dtmf"`` (interrupted by a received digit when
        ``interrupt_on_dtmf``); it is cancelled if the stream closes first, and cancelling
        it stops the source. Playback starts once media flows (after offer/answer)."""
        self._check_open()
        item = _PlayItem(source, self._future(), interrupt_on_dtmf)
        if mix:
            self._overlays.append(item)
        else:
            self._play_queue.append(item)
        return item.future

    def stop_play(self) -> None:
        """Stop everything this stream plays: the playing source, the queued ones and the
        overlays (their futures: ``"stopped"``)."""
        items = ([self._playing] if self._playing else []) + list(self._play_queue)
        self._playing = None
        self._play_queue.clear()
        for item in items:
            _finish(item.future, "stopped", close=item.source)
        self.stop_overlays()

    def stop_overlays(self) -> None:
        """Stop the ``mix=True`` sources only (their futures: ``"stopped"``); the queue and
        bridged audio go on."""
        items, self._overlays = self._overlays, []
        for item in items:
            _finish(item.future, "stopped", close=item.source)

    @property
    def playing(self) -> bool:
        """True while a source plays, is queued, or is mixed in as an overlay."""
        return self._playing is not None or bool(self._play_queue) or bool(self._overlays)

    @property
    def overlays(self) -> int:
        """How many ``mix=True`` sources are being mixed in."""
        return len(self._overlays)

    def send_digits(
        self, digits: str | list[Any], *, mode: str = "auto", tone_ms: int | None = None
    ) -> asyncio.Future[int]:
        """Send DTMF (grammar of :func:`media.dtmf.parse_send_digits`: ``w`` 0.5 s, ``W``
        1 s, ``@ms`` tone length). ``mode``: ``rfc4733`` (RFC 4733 events), ``inband``
        (Q.23 tones in the audio) or ``auto`` (RFC 4733 if the peer accepted
        telephone-event, else in-band, decided when the job starts). Raises
        :class:`media.dtmf.DigitsError` at once for a bad string. The future's result is
        the number of digits sent."""
        self._check_open()
        if mode not in ("auto", "rfc4733", "inband"):
            raise ValueError(f"mode must be auto, rfc4733 or inband, not {mode!r}")
        if isinstance(digits, str):
            steps = (
                _dtmf.parse_send_digits(digits)
                if tone_ms is None
                else _dtmf.parse_send_digits(digits, default_tone_ms=tone_ms)
            )
        else:
            steps = list(digits)
        job = _DigitsJob(steps, mode, self._future())
        self._digits_queue.append(job)
        return job.future

    def add_tap(self, fn: Callable[[np.ndarray], None]) -> None:
        """Receive each 20 ms frame of decoded received audio (int16, 160 samples), on the
        clock tick, silence-filled when no packet arrived. Must be quick."""
        self._taps.append(fn)

    def remove_tap(self, fn: Callable[[np.ndarray], None]) -> None:
        if fn in self._taps:
            self._taps.remove(fn)

    def add_send_tap(self, fn: Callable[[np.ndarray], None]) -> None:
        """Receive each 20 ms frame we send (before encoding), e.g. to record both legs."""
        self._send_taps.append(fn)

    def remove_send_tap(self, fn: Callable[[np.ndarray], None]) -> None:
        if fn in self._send_taps:
            self._send_taps.remove(fn)

    def stats(self) -> dict[str, Any]:
        """Counters and RFC 3550 quality figures for CDRs and call status."""
        neg = self._negotiated
        return {
            "packets_sent": self._sender.packets_sent,
            "bytes_sent": self._sender.octets_sent,
            "packets_received": self.packets_received,
            "bytes_received": self.bytes_received,
            "packets_dropped": self.packets_dropped,
            "lost": max(0, self._rx.lost),
            "loss_fraction": self._rx.loss_fraction,
            "jitter_ms": self._rx.jitter_ms,
            "rtt_ms": None if self._rtcp.rtt is None else self._rtcp.rtt * 1000.0,
            "remote_loss_fraction": self._rtcp.remote_fraction_lost / 256.0,
            "codec": neg.codec.name if neg else None,
            "ptime": self._frames_per_packet * 20 if neg else None,
            "direction": neg.direction if neg else None,
            "remote": self._remote_rtp,
            "latched": self._latched,
            "ssrc": self._sender.ssrc,
            "remote_ssrc": self._rx.ssrc,
            "ssrc_changes": self.ssrc_changes,
            "rtcp_sent": self._rtcp.reports_sent,
            "rtcp_received": self._rtcp.reports_received,
            "dtmf_sent": self.dtmf_sent,
            "dtmf_received": self.dtmf_received,
            "send_errors": self.send_errors,
        }

    def close(self) -> None:
        """Stop media, send an RTCP BYE, release the ports, cancel pending futures.
        Idempotent."""
        if self.closed:
            return
        if self._remote_rtcp is not None:
            try:
                self._rtcp_sock.sendto(
                    self._rtcp.build_report(self._engine.now(), time.time(), bye=True),
                    self._remote_rtcp,
                )
            except OSError:
                pass
        self.closed = True
        items = ([self._playing] if self._playing else []) + list(self._play_queue)
        for item in items + self._overlays:
            _cancel(item.future, close=item.source)
        self._playing = None
        self._play_queue.clear()
        self._overlays = []
        for job in ([self._digits] if self._digits else []) + list(self._digits_queue):
            _cancel(job.future)
        self._digits = None
        self._digits_queue.clear()
        self._engine._remove(self)

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("media stream is closed")

    # --- receive path (called by the engine on the clock tick) ----------------------------

    def _on_rtp(self, data: bytes, addr: tuple[str, int], now: float, wall: float) -> None:
        if is_rtcp(data):  # RTCP sent to the RTP port (RFC 5761 demultiplexing)
            self._rtcp.handle(data, wall)
            return
        packet = parse_rtp(data)
        if packet is None:
            self.packets_dropped += 1
            return
        rx = self._rx
        pt = packet.payload_type
        event_packet = pt in self._dtmf_types
        foreign_events = False
        if packet.ssrc != rx.ssrc:
            if rx.ssrc is None:
                rx.ssrc = packet.ssrc
            elif event_packet:
                # Telephone-events from a second SSRC (RFC 3550 §8 lets a session carry
                # several sources): some gateways send RFC 4733 packets with their own
                # SSRC next to the audio, and sipp's pcap replay does too while -rtp_echo
                # reflects our audio. Not a source change: keep the audio statistics and
                # the latch, and give those events their own receiver.
                foreign_events = True
            else:
                # A PBX switches SSRC on transfer/re-INVITE: accept it and start over.
                self.ssrc_changes += 1
                rx.reset(packet.ssrc)
                self._latched = False
        if self._config.symmetric_rtp and not self._latched:
            # Symmetric RTP (RFC 4961): answer to where the media comes from (NAT).
            self._latched = True
            self._remote_rtp = (addr[0], addr[1])
        if not foreign_events:
            # RFC 4733 §2.5.1.2: every packet of an event carries the event's start
            # timestamp, so events count for loss but would inflate the A.8 jitter.
            rx.update(packet.sequence_number, packet.timestamp, now, jitter=not event_packet)
        self.packets_received += 1
        self.bytes_received += len(packet.payload)
        self._last_rx = now
        if event_packet:
            if not self._seen_rfc4733:
                self._seen_rfc4733 = True
                if self._detector is not None:
                    self._engine._release_detector(self._detector)
                    self._detector = None
            receiver = self._rfc4733_rx.get(packet.ssrc)
            if receiver is None:
                if len(self._rfc4733_rx) >= MAX_EVENT_SOURCES:
                    oldest = next(iter(self._rfc4733_rx))
                    pending = self._rfc4733_rx.pop(oldest).flush(now + 10.0)
                    if pending is not None:
                        self._deliver_dtmf(pending)
                receiver = self._rfc4733_rx[packet.ssrc] = _dtmf.Rfc4733Receiver()
            event = receiver.feed(packet.payload, packet.timestamp, packet.marker, now)
            if event is not None:
                self._deliver_dtmf(event)
            return
        codec = self._receive_codecs.get(pt)
        decoder = _g711.DECODERS.get(codec.name.upper()) if codec is not None else None
        if decoder is None:
            # CN, or a codec we cannot decode: the playout FIFO fills silence instead.
            return
        self._receiving = True
        if not self._taps and self._bridge_peer is None and self._detector is None:
            return  # nobody listens to this audio (no tap, bridge or detector): skip decoding
        samples = decoder(packet.payload)
        if self._playout_partial.size:
            samples = np.concatenate((self._playout_partial, samples))
        full = samples.size // FRAME_SAMPLES
        for i in range(full):
            self._playout.append(samples[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES])
        self._playout_partial = samples[full * FRAME_SAMPLES :]
        while len(self._playout) > MAX_PLAYOUT_FRAMES:
            self._playout.popleft()

    def _on_rtcp(self, data: bytes, addr: tuple[str, int], wall: float) -> None:
        if self._config.symmetric_rtp:
            self._remote_rtcp = (addr[0], addr[1])
        self._rtcp.handle(data, wall)

    def _playout_frame(self) -> np.ndarray | None:
        """This tick's received frame: the oldest buffered one, or silence on underrun."""
        if self._playout:
            return self._playout.popleft()
        return _SILENCE if self._receiving else None

    def _deliver_dtmf(self, event: _dtmf.DtmfEvent) -> None:
        self.dtmf_received += 1
        if self._playing is not None and self._playing.interrupt_on_dtmf:
            item, self._playing = self._playing, None
            _finish(item.future, "dtmf", close=item.source)
            kept = deque(i for i in self._play_queue if not i.interrupt_on_dtmf)
            for i in self._play_queue:
                if i.interrupt_on_dtmf:
                    _finish(i.future, "dtmf", close=i.source)
            self._play_queue = kept
        if any(i.interrupt_on_dtmf for i in self._overlays):
            for i in self._overlays:
                if i.interrupt_on_dtmf:
                    _finish(i.future, "dtmf", close=i.source)
            self._overlays = [i for i in self._overlays if not i.interrupt_on_dtmf]
        if self.on_dtmf is not None:
            try:
                self.on_dtmf(event)
            except Exception:
                log.exception("on_dtmf callback failed")

    def _receive_tick(self, now: float) -> np.ndarray | None:
        for receiver in list(self._rfc4733_rx.values()):
            event = receiver.flush(now)
            if event is not None:
                self._deliver_dtmf(event)
        timeout = self._config.media_timeout_s
        if (
            timeout > 0
            and not self._timed_out
            and self._last_rx is not None
            and self._negotiated is not None
            and now - self._last_rx > timeout
        ):
            self._timed_out = True
            if self.on_media_timeout is not None:
                try:
                    self.on_media_timeout()
                except Exception:
                    log.exception("on_media_timeout callback failed")
        frame = self._playout_frame()
        if frame is None:
            return None
        for tap in self._taps:
            try:
                tap(frame)
            except Exception:
                log.exception("media tap failed; removed")
                self._taps.remove(tap)
        if self._bridge_peer is not None:
            self._bridge_peer._bridge_in.append(frame)
        return frame

    # --- send path ------------------------------------------------------------------------

    @staticmethod
    def _read_item(item: _PlayItem) -> np.ndarray | None:
        """The item's next 20 ms frame (padded with silence), or None once it has ended
        (its future is then done: ``"completed"``, or the source's exception)."""
        if item.future.done():  # cancelled by its owner, or stopped meanwhile
            _close_source(item.source)
            return None
        try:
            frame = item.source.read(FRAME_SAMPLES)
        except Exception as exc:  # a broken file must not stop the clock
            log.exception("media source failed")
            if not item.future.done():
                item.future.set_exception(exc)
            _close_source(item.source)
            return None
        if frame is None or len(frame) == 0:
            _finish(item.future, "completed", close=item.source)
            return None
        frame = np.asarray(frame, dtype=np.int16)
        if frame.size < FRAME_SAMPLES:
            frame = np.concatenate((frame, _SILENCE[: FRAME_SAMPLES - frame.size]))
        return frame[:FRAME_SAMPLES]

    def _next_source_frame(self) -> np.ndarray | None:
        while self._playing is not None or self._play_queue:
            if self._playing is None:
                self._playing = self._play_queue.popleft()
            frame = self._read_item(self._playing)
            if frame is not None:
                return frame
            self._playing = None
        return None

    def _overlay_sum(self) -> np.ndarray | None:
        """This tick's frames of every overlay summed in int32 (None when none plays)."""
        if not self._overlays:
            return None
        total: np.ndarray | None = None
        running: list[_PlayItem] = []
        for item in self._overlays:
            frame = self._read_item(item)
            if frame is None:
                continue
            running.append(item)
            if total is None:
                total = frame.astype(np.int32)
            else:
                total += frame
        self._overlays = running
        return total

    def _take_bridged(self) -> np.ndarray | None:
        """The frame the bridge peer received this tick; anything older is dropped (see the
        module docstring: bridged audio is never played late)."""
        if not self._bridge_in:
            return None
        frame = self._bridge_in[-1]
        self._bridge_in.clear()
        return frame

    def _start_digits(self, job: _DigitsJob) -> bool:
        neg = self._negotiated
        dtmf_pt = neg.dtmf_payload_type if neg else None
        if job.mode == "rfc4733" and dtmf_pt is None:
            if not job.future.done():
                job.future.set_exception(
                    SdpError("the peer did not accept telephone-event (RFC 4733)")
                )
            return False
        job.rfc4733 = job.mode == "rfc4733" or (job.mode == "auto" and dtmf_pt is not None)
        if job.rfc4733:
            assert dtmf_pt is not None
            job.payload_type = dtmf_pt  # fixed for the job even if a re-INVITE changes it
            job.sender = _dtmf.Rfc4733Sender(job.steps, clock_rate=CLOCK_RATE, ptime_ms=20)
        else:
            job.sender = _dtmf.InbandDtmfGenerator(
                job.steps, rate=CLOCK_RATE, frame_samples=FRAME_SAMPLES
            )
        return True

    def _digits_tick(self) -> tuple[list[bytes], np.ndarray | None, bool]:
        """Advance the DTMF job: (event packets, in-band frame, job active)."""
        while self._digits is not None or self._digits_queue:
            if self._digits is None:
                job = self._digits_queue.popleft()
                if job.future.cancelled() or not self._start_digits(job):
                    continue
                self._digits = job
            job = self._digits
            if job.rfc4733:
                ticks = job.sender.next_tick(self._sender.timestamp)
                if ticks is not None:
                    pt = job.payload_type
                    packets = [
                        self._sender.packet(pt, payload, marker=marker, timestamp=ts)
                        for payload, marker, ts in ticks
                    ]
                    return packets, None, True
            else:
                frame = job.sender.next_frame()
                if frame is not None:
                    return [], np.asarray(frame, dtype=np.int16), True
            self._digits = None
            self.dtmf_sent += job.digits
            _finish(job.future, job.digits)
        return [], None, False

    def _send_tick(self, skipped: int) -> None:
        if self._negotiated is None or self.closed:
            return
        sender = self._sender
        if skipped:
            sender.advance(skipped * FRAME_SAMPLES)
            self._pending.clear()
        packets, frame, digits_active = self._digits_tick()
        silence = False
        if digits_active:
            self._bridge_in.clear()  # digits replace the bridged audio of this tick
        else:
            frame = self._next_source_frame()
            bridged = self._take_bridged()  # taken (and dropped under a prompt) every tick
            if frame is None:
                frame = bridged
            overlay = self._overlay_sum()
            if overlay is not None:
                if frame is not None:
                    overlay += frame
                frame = np.clip(overlay, -32768, 32767).astype(np.int16)
        if frame is None and not packets:
            frame, silence = _SILENCE, True
        if frame is not None and self._send_taps:
            for tap in self._send_taps:
                try:
                    tap(frame)
                except Exception:
                    log.exception("send tap failed; removed")
                    self._send_taps.remove(tap)
        if self._can_send:
            if packets:
                self._pending.clear()
            elif frame is not None:
                packets = self._audio_packets(frame, silence)
            sock, remote = self._rtp_sock, self._remote_rtp
            assert remote is not None  # _can_send
            for packet in packets:
                try:
                    sock.sendto(packet, remote)
                except OSError:
                    self.send_errors += 1
        sender.advance(FRAME_SAMPLES)

    def _audio_packets(self, frame: np.ndarray, silence: bool) -> list[bytes]:
        mode = self._config.silence
        sender = self._sender
        cn = self._negotiated.cn_payload_type if self._negotiated else None
        if silence and (mode == "none" or (mode == "cn" and cn is not None)):
            self._pending.clear()
            self._silent_ticks += 1
            self._marker_next = True  # RFC 3551 §4.1: marker on the first packet after silence
            if mode == "cn" and self._silent_ticks % CN_REFRESH_TICKS == 1:
                return [sender.packet(cn, bytes([CN_LEVEL]))]  # type: ignore[arg-type]
            return []
        self._silent_ticks = 0
        if silence and self._frames_per_packet == 1 and not self._pending:
            # Encoded silence is the same bytes every tick: encode it once per codec.
            payload = self._silence_payloads.get(self._send_pt)
            if payload is None:
                payload = self._silence_payloads[self._send_pt] = self._encoder(_SILENCE)  # type: ignore[misc]
            marker, self._marker_next = self._marker_next, False
            return [sender.packet(self._send_pt, payload, marker=marker, timestamp=sender.timestamp)]
        self._pending.append(frame)
        if len(self._pending) < self._frames_per_packet:
            return []
        first_ts = (sender.timestamp - (len(self._pending) - 1) * FRAME_SAMPLES) & 0xFFFFFFFF
        pcm = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending)
        self._pending = []
        payload = self._encoder(pcm)  # type: ignore[misc]
        marker, self._marker_next = self._marker_next, False
        return [sender.packet(self._send_pt, payload, marker=marker, timestamp=first_ts)]

    def _rtcp_tick(self, now: float) -> None:
        if self._remote_rtcp is not None and self._rtcp.due(now):
            # The SR's NTP time stamp and DLSR are read from the wall clock right before
            # sending, not at the tick start: RFC 3550 §6.4.1 RTT = A - LSR - DLSR at the
            # peer is off by whatever lies between the two.
            report = self._rtcp.build_report(now, time.time())
            try:
                self._rtcp_sock.sendto(report, self._remote_rtcp)
            except OSError:
                self.send_errors += 1


# Python's socket module does not export SO_TIMESTAMP; Linux's value (SO_TIMESTAMP_OLD, also
# the SCM_TIMESTAMP control message type, struct timeval) is 29 except on PA-RISC.
_SO_TIMESTAMP: int | None = getattr(
    socket,
    "SO_TIMESTAMP",
    29 if sys.platform == "linux" and not platform.machine().startswith("parisc") else None,
)
_TIMEVAL = struct.Struct("@ll")
_TIMESTAMP_CMSG_SPACE = socket.CMSG_SPACE(_TIMEVAL.size) if _SO_TIMESTAMP is not None else 0


def _arrival_wall(ancdata: list[tuple[int, int, bytes]]) -> float:
    """Wall-clock arrival time of an RTCP packet: the kernel's SO_TIMESTAMP when present,
    else now. Sockets are drained once per 20 ms tick, so the tick's own time would add up
    to 20 ms to the RTT of RFC 3550 §6.4.1 (A is the arrival time of the report)."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMP and len(data) >= _TIMEVAL.size:
            sec, usec = _TIMEVAL.unpack_from(data)
            return sec + usec / 1e6
    return time.time()


def _finish(future: asyncio.Future[Any], result: Any, *, close: Any = None) -> None:
    if not future.done():
        future.set_result(result)
    _close_source(close)


def _cancel(future: asyncio.Future[Any], *, close: Any = None) -> None:
    if not future.done():
        future.cancel()
    _close_source(close)


def _close_source(source: Any) -> None:
    closer = getattr(source, "close", None)
    if callable(closer):
        try:
            closer()
        except Exception:
            log.exception("closing media source failed")


class MediaEngine:
    """Owns the media clock, the port pool and every :class:`MediaStream` of the process."""

    def __init__(self, config: MediaConfig | None = None) -> None:
        self.config = config or MediaConfig()
        self.ports = PortPool(self.config.bind_host, self.config.port_min, self.config.port_max)
        self._streams: dict[int, MediaStream] = {}  # by local port, in creation order
        self._selector = selectors.DefaultSelector()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._t0 = 0.0
        self._k = 0
        self._lateness = np.zeros(LATENESS_WINDOW, dtype=np.float64)
        self._ticks = 0
        self._late_ticks = 0
        self._skipped = 0
        self._max_late = 0.0
        self._detector_bank: _dtmf.DtmfDetectorBank | None = None
        self._detector_streams: dict[int, MediaStream] = {}  # by detector slot

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            return asyncio.get_running_loop()
        return self._loop

    def now(self) -> float:
        """The media clock's time base: the loop's monotonic clock."""
        return self._loop.time() if self._loop is not None else time.monotonic()

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Arm the clock on ``loop`` (default: the running loop)."""
        if self._handle is not None:
            return
        self._loop = loop or asyncio.get_running_loop()
        self._t0 = self._loop.time()
        self._k = 1
        self._handle = self._loop.call_at(self._t0 + TICK, self._tick)

    async def stop(self) -> None:
        """Close every stream and stop the clock."""
        for stream in list(self._streams.values()):
            stream.close()
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def create_stream(self) -> MediaStream:
        """Allocate an RTP/RTCP port pair and a stream on it (raises PortPoolExhausted)."""
        rtp, rtcp, port = self.ports.allocate()
        if _SO_TIMESTAMP is not None:
            try:  # kernel arrival time stamps for RTCP: see _arrival_wall()
                rtcp.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMP, 1)
            except OSError:
                pass
        stream = MediaStream(self, rtp, rtcp, port)
        self._selector.register(rtp, selectors.EVENT_READ, (stream, False))
        self._selector.register(rtcp, selectors.EVENT_READ, (stream, True))
        self._streams[port] = stream
        return stream

    def _remove(self, stream: MediaStream) -> None:
        if self._streams.pop(stream.local_port, None) is None:
            return
        for sock in (stream._rtp_sock, stream._rtcp_sock):
            try:
                self._selector.unregister(sock)
            except (KeyError, ValueError):
                pass
        if stream._detector is not None:
            self._release_detector(stream._detector)
            stream._detector = None
        self.unbridge(stream)
        self.ports.release(stream.local_port)

    @property
    def active_streams(self) -> int:
        return len(self._streams)

    # --- bridging -------------------------------------------------------------------------

    def bridge(self, a: MediaStream, b: MediaStream) -> None:
        """Relay audio both ways: each tick, the frame received on one stream is what the
        other sends on the same tick, unless that one plays a queued source or sends
        digits: the bridged frame is then dropped, never delayed (overlays are summed into
        it). One bridge per stream."""
        if a is b:
            raise ValueError("cannot bridge a stream to itself")
        self.unbridge(a)
        self.unbridge(b)
        a._bridge_peer, b._bridge_peer = b, a

    def unbridge(self, stream: MediaStream) -> None:
        peer = stream._bridge_peer
        stream._bridge_peer = None
        stream._bridge_in.clear()
        if peer is not None:
            peer._bridge_peer = None
            peer._bridge_in.clear()

    # --- in-band DTMF detector bank ------------------------------------------------------

    def _allocate_detector(self, stream: MediaStream) -> int:
        if self._detector_bank is None:
            self._detector_bank = _dtmf.DtmfDetectorBank(rate=CLOCK_RATE)
        slot = self._detector_bank.allocate()  # the bank grows as needed
        self._detector_streams[slot] = stream
        return slot

    def _release_detector(self, slot: int) -> None:
        if self._detector_streams.pop(slot, None) is not None and self._detector_bank:
            self._detector_bank.release(slot)

    # --- the clock ------------------------------------------------------------------------

    def _tick(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        late = now - (self._t0 + self._k * TICK)
        self._lateness[self._ticks % LATENESS_WINDOW] = max(late, 0.0)
        self._ticks += 1
        self._max_late = max(self._max_late, late)
        skipped = 0
        if late > LATE_THRESHOLD:
            self._late_ticks += 1
        if late >= TICK:
            skipped = int(late // TICK)
            self._k += skipped
            self._skipped += skipped
        try:
            self.service(now, time.time(), skipped)
        except Exception:
            log.exception("media clock tick failed")
        self._k += 1
        self._handle = loop.call_at(self._t0 + self._k * TICK, self._tick)

    def service(self, now: float, wall: float, skipped: int = 0) -> None:
        """One tick's work for every stream (public so benchmarks can drive it directly).

        A failure in one stream is logged and does not stop the others (try blocks cost
        nothing in CPython 3.11 until they catch)."""
        # 1. Drain readable sockets.
        for key, _ in self._selector.select(0):
            stream, rtcp = key.data
            sock = key.fileobj
            for _ in range(MAX_PACKETS_PER_TICK):
                if stream.closed:  # a callback earlier in this tick closed it
                    break
                try:
                    if rtcp:
                        data, anc, _, addr = sock.recvmsg(2048, _TIMESTAMP_CMSG_SPACE)  # type: ignore[union-attr]
                    else:
                        data, addr = sock.recvfrom(2048)  # type: ignore[union-attr]
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    continue  # e.g. ICMP port unreachable surfaced as ECONNREFUSED
                try:
                    if rtcp:
                        stream._on_rtcp(data, addr, _arrival_wall(anc))
                    else:
                        stream._on_rtp(data, addr, now, wall)
                except Exception:
                    log.exception("media stream %d: receive failed", stream.local_port)
        streams = list(self._streams.values())
        # 2. Received frames: taps, bridges, and the detector bank in one call for all.
        slots: list[int] = []
        frames: list[np.ndarray] = []
        for stream in streams:
            try:
                frame = stream._receive_tick(now)
            except Exception:
                log.exception("media stream %d: receive tick failed", stream.local_port)
                continue
            if frame is not None and stream._detector is not None:
                slots.append(stream._detector)
                frames.append(frame)
        if slots and self._detector_bank is not None:
            block = np.stack(frames)
            for slot, event in self._detector_bank.process(np.array(slots), block):
                owner = self._detector_streams.get(slot)
                if owner is not None and not owner._seen_rfc4733:
                    owner._deliver_dtmf(event)
        # 3. Send, 4. RTCP.
        for stream in streams:
            if stream.closed:
                continue
            try:
                stream._send_tick(skipped)
                stream._rtcp_tick(now)
            except Exception:
                log.exception("media stream %d: send tick failed", stream.local_port)

    def clock_stats(self) -> dict[str, float | int]:
        """Tick lateness (actual - deadline) over the last ``LATENESS_WINDOW`` ticks."""
        n = min(self._ticks, LATENESS_WINDOW)
        window = self._lateness[:n]
        p50, p99 = (np.percentile(window, [50, 99]) * 1000.0) if n else (0.0, 0.0)
        return {
            "ticks": self._ticks,
            "late_ticks": self._late_ticks,
            "skipped": self._skipped,
            "p50_ms": float(p50),
            "p99_ms": float(p99),
            "max_ms": max(self._max_late, 0.0) * 1000.0,
            "streams": len(self._streams),
        }
