"""The media clock: :class:`MediaEngine` ticks every 20 ms and services every stream in one
batch (the four steps of the tick are in the :mod:`media.engine` docstring); it also owns the
port pool, the in-band DTMF detector bank and the bridges between streams.
"""

from __future__ import annotations

import asyncio
import logging
import selectors
import socket
import time
from collections.abc import Callable, Sequence

import numpy as np

from .. import dtmf as _dtmf
from ..sdp import SRTP_POLICIES
from ._config import CLOCK_RATE, MediaConfig, codec_list
from ._ports import SO_TIMESTAMP, TIMESTAMP_CMSG_SPACE, PortPool, arrival_wall
from ._stream import MediaStream

# One logger for the whole engine (its records kept the name "media.engine" through the split).
log = logging.getLogger("media.engine")

TICK = 0.020
LATE_THRESHOLD = 0.005  # a tick later than this counts in clock_stats()["late_ticks"]
MAX_PACKETS_PER_TICK = 64  # per socket, so one flooded socket cannot starve the others
LATENESS_WINDOW = 4096  # ticks of lateness history (~82 s)


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
        self._tick_hooks: list[Callable[[float], None]] = []  # between receive and send

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

    def create_stream(
        self, codecs: Sequence[str] | None = None, *, srtp: str = "off"
    ) -> MediaStream:
        """Allocate an RTP/RTCP port pair and a stream on it (raises PortPoolExhausted).

        ``codecs`` (names such as ``"PCMA"``, in preference order) restricts this stream:
        its offers list only them (plus telephone-event and comfort noise as configured)
        and answers are accepted only with one of them. ``None``: the configured
        ``MediaConfig.codecs``. An empty list or a codec the engine cannot encode raises
        :class:`UnsupportedCodec` (a ``ValueError``) before any port is taken.

        ``srtp``: ``"off"`` (plain RTP/AVP), ``"optional"`` (offer RTP/AVP with SDES
        ``a=crypto`` lines, SRTP if the peer answers one) or ``"mandatory"`` (offer RTP/SAVP;
        an answer without crypto is refused with :class:`media.sdp.SdpError`); anything else
        raises ``ValueError`` before any port is taken (see :mod:`media.sdp._crypto`)."""
        names = None if codecs is None else codec_list(codecs)
        if srtp not in SRTP_POLICIES:
            raise ValueError(f"srtp must be one of {', '.join(SRTP_POLICIES)}, not {srtp!r}")
        rtp, rtcp, port = self.ports.allocate()
        if SO_TIMESTAMP is not None:
            try:  # kernel arrival time stamps for RTCP: see arrival_wall()
                rtcp.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMP, 1)
            except OSError:
                pass
        stream = MediaStream(self, rtp, rtcp, port, codecs=names, srtp=srtp)
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

    # --- tick hooks -----------------------------------------------------------------------

    def add_tick_hook(self, fn: Callable[[float], None]) -> None:
        """Call ``fn(now)`` on every tick after every stream's received frame went to its
        taps and before any stream sends (a conference mixes there: what its members' taps
        gathered this tick is what their overlays send on the same tick). Must be quick."""
        self._tick_hooks.append(fn)

    def remove_tick_hook(self, fn: Callable[[float], None]) -> None:
        if fn in self._tick_hooks:
            self._tick_hooks.remove(fn)

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
                        data, anc, _, addr = sock.recvmsg(2048, TIMESTAMP_CMSG_SPACE)  # type: ignore[union-attr]
                    else:
                        data, addr = sock.recvfrom(2048)  # type: ignore[union-attr]
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    continue  # e.g. ICMP port unreachable surfaced as ECONNREFUSED
                try:
                    if rtcp:
                        stream._on_rtcp(data, addr, arrival_wall(anc))
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
        # Tick hooks (conference mixers) between the receive and the send halves.
        for hook in list(self._tick_hooks):
            try:
                hook(now)
            except Exception:
                log.exception("media tick hook failed; removed")
                self.remove_tick_hook(hook)
        # 3. Send, 4. RTCP.
        for stream in streams:
            if stream.closed:
                continue
            try:
                stream._send_tick(skipped)
                stream._rtcp_tick(now)
            except Exception:
                log.exception("media stream %d: send tick failed", stream.local_port)

    def lateness_window(self) -> np.ndarray:
        """The lateness (seconds, >= 0) of the last ``LATENESS_WINDOW`` ticks, a copy (for
        a metrics scrape; unordered once the window has wrapped)."""
        return self._lateness[: min(self._ticks, LATENESS_WINDOW)].copy()

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
