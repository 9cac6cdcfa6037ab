"""The state of one :class:`~media.engine.MediaStream`, declared in one place.

:class:`StreamState` sets every field a stream has; :class:`~media.engine._receive.ReceivePath`
(packets in, the received frame of each tick), :class:`~media.engine._send.SendPath` (what the
stream sends each tick) and :class:`~media.engine.MediaStream` (offer/answer and the
application API) are its subclasses, so the per-packet and per-tick work stays plain method
calls on the stream, with no object in between.
"""

from __future__ import annotations

import asyncio
import math
import random
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import dtmf as _dtmf
from ..rtp import ReceiveStatistics, RtcpSession, RtpSender
from ..sdp import Codec, LocalCrypto, NegotiatedMedia, SessionDescription
from ._config import CLOCK_RATE, FRAME_SAMPLES, MAX_BRIDGE_FRAMES
from ._srtp import SrtpContext

if TYPE_CHECKING:
    from ._clock import MediaEngine
    from ._stream import MediaStream


@dataclass
class PlayItem:
    source: Any
    future: asyncio.Future[str]
    interrupt_on_dtmf: bool


@dataclass
class DigitsJob:
    steps: list[Any]
    mode: str
    future: asyncio.Future[int]
    sender: Any = None  # Rfc4733Sender or InbandDtmfGenerator once started
    rfc4733: bool = False
    payload_type: int = 101

    @property
    def digits(self) -> int:
        return sum(1 for step in self.steps if step.digit is not None)


class StreamState:
    """Every field of a stream (see :class:`~media.engine.MediaStream`)."""

    def __init__(
        self,
        engine: MediaEngine,
        rtp_sock: socket.socket,
        rtcp_sock: socket.socket,
        port: int,
        *,
        codecs: list[str] | None = None,
        srtp: str = "off",
    ) -> None:
        self._engine = engine
        self._config = engine.config
        # The codecs this stream offers and accepts (checked by create_stream; None: the
        # engine's), comfort noise included when configured.
        self.codecs: tuple[str, ...] = tuple(codecs if codecs is not None else self._config.codecs)
        self._sdp_codecs = self._config.offer_codecs(self.codecs)
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
        # The engine keeps report times in a heap (its _rtcp_heap; the key of our latest
        # entry), and media timeouts in another (_watch_heap).
        self._rtcp.on_schedule = self._rtcp_scheduled
        self._rtcp_key = -1
        self._watch_key = -1
        # Which send path the clock takes for this stream (_fast.py: NONE, FULL, FAST, PARKED).
        self._path = 0
        # SRTP (RFC 3711, keyed by SDES; see _srtp.py): the policy (checked by create_stream),
        # our keys (None when off) and, once an exchange agreed on crypto, the sessions.
        self.srtp = srtp
        self._crypto: LocalCrypto | None = LocalCrypto(srtp) if srtp != "off" else None
        self._srtp: SrtpContext | None = SrtpContext.unkeyed() if srtp == "mandatory" else None

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
        # Receive latching (see ReceivePath): the source RTP is accepted from (None: the next
        # packet's source is learnt), until when the SDP's own address may still take over,
        # and the candidate a new source must build up (address, SSRC, last sequence number,
        # packets in a row, packets_received when its last packet came).
        self._source: tuple[Any, ...] | None = None
        self._learn_until = 0.0
        self._cand_addr: tuple[Any, ...] | None = None
        self._cand_ssrc = 0
        self._cand_seq = 0
        self._cand_count = 0
        self._cand_mark = 0

        # Receive path.
        self._receive_codecs: dict[int, Codec] = {}
        # The decoder of each payload type we may receive (set with _receive_codecs): G.711's
        # tables, or a G.722/Opus decoder of this stream (stateful, one per codec name).
        self._decoders: dict[int, Callable[[bytes], np.ndarray]] = {}
        self._wideband_decoders: dict[str, Any] = {}
        self._dtmf_types: frozenset[int] = frozenset()
        # One RFC 4733 receiver per SSRC sending events (see _on_rtp), oldest first.
        self._rfc4733_rx: dict[int, _dtmf.Rfc4733Receiver] = {}
        self._seen_rfc4733 = False
        self._playout: deque[np.ndarray] = deque()
        self._playout_partial = np.zeros(0, dtype=np.int16)
        self._receiving = False
        # RTP inactivity watchdog (set_media_timeout): off (an infinite limit) until armed.
        self._last_rx = 0.0
        self._rx_timeouts = (0.0, 0.0)  # (active, on hold); 0 = off
        self._rx_limit = math.inf
        self._timed_out = False
        self._taps: list[Callable[[np.ndarray], None]] = []
        self._silence_payloads: dict[int, bytes] = {}
        self._send_taps: list[Callable[[np.ndarray], None]] = []
        self._detector: int | None = None  # slot in the engine's detector bank
        self._bridge_peer: MediaStream | None = None
        self._bridge_in: deque[np.ndarray] = deque(maxlen=MAX_BRIDGE_FRAMES)

        # Send path.
        self._encoder: Callable[[np.ndarray], bytes] | None = None
        self._wideband_encoder: tuple[str, Any] | None = None  # (codec name, its encoder)
        self._ts_step = FRAME_SAMPLES  # RTP timestamp units per 20 ms (Opus: 960)
        self._stateless_encoder = True  # G.711: encoded silence may be cached
        self._send_pt = 0
        self._frames_per_packet = 1
        self._pending: list[np.ndarray] = []
        self._marker_next = True
        self._silent_ticks = 0
        self._play_queue: deque[PlayItem] = deque()
        self._playing: PlayItem | None = None
        self._overlays: list[PlayItem] = []  # mix=True sources, summed into every frame
        self._digits_queue: deque[DigitsJob] = deque()
        self._digits: DigitsJob | None = None

        # Counters for stats().
        self.packets_received = 0
        self.bytes_received = 0
        self.packets_dropped = 0
        self.send_errors = 0
        self.dtmf_sent = 0
        self.dtmf_received = 0
        self.ssrc_changes = 0
        self.rtp_dropped_strays = 0
        self.rtp_source_changes = 0
        self.srtp_auth_failures = 0  # of SRTP contexts no longer in use (see stats())
        self.srtp_replays = 0

    def _rtcp_scheduled(self, when: float) -> None:
        self._engine._schedule_rtcp(self, when)  # type: ignore[arg-type]
