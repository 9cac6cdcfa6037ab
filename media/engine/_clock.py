"""The media clock: :class:`MediaEngine` ticks every 20 ms and services every stream in one
batch (the four steps of the tick are in the :mod:`media.engine` docstring); it also owns the
port pool, the in-band DTMF detector bank and the bridges between streams.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import select
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import dtmf as _dtmf
from ..sdp import SRTP_POLICIES
from ._config import CLOCK_RATE, MediaConfig, codec_list
from ._fast import FULL, FastPath
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

    def __init__(self, config: MediaConfig | None = None, *, fast_path: bool = True) -> None:
        """``fast_path=False`` sends every stream through ``_send_tick`` (the reference the
        fast path is tested against; see :mod:`media.engine._fast`)."""
        self.config = config or MediaConfig()
        self.ports = PortPool(self.config.bind_host, self.config.port_min, self.config.port_max)
        self._streams: dict[int, MediaStream] = {}  # by local port, in creation order
        # Readiness of every RTP/RTCP socket: one poll per tick returns only the sockets
        # with data (a stream waiting for its answer costs nothing per tick).
        self._epoll = hasattr(select, "epoll")
        self._poller: Any = select.epoll() if self._epoll else select.poll()
        # fd -> (stream, is RTCP, socket, RTP: the socket's recvfrom and the stream's _on_rtp
        # bound once, as the first read of each tick calls them for every ready socket).
        self._fds: dict[int, tuple[MediaStream, bool, socket.socket, Any, Any]] = {}
        self._fast = FastPath(fast_path)
        # Streams whose received frames someone reads (taps, bridge, detector) or that owe
        # an RFC 4733 event: the only ones _receive_tick visits.
        self._rx_work: dict[MediaStream, None] = {}
        # (when, key): RTCP report times and media-timeout deadlines. The key names the
        # stream in the dict beside (only its latest entry: an entry whose key is gone is
        # stale and skipped), so a closed stream is not kept alive by the heap.
        self._rtcp_heap: list[tuple[float, int]] = []
        self._rtcp_due: dict[int, MediaStream] = {}
        self._watch_heap: list[tuple[float, int]] = []
        self._watch_due: dict[int, MediaStream] = {}
        self._keys = itertools.count()
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
        for sock, is_rtcp in ((rtp, False), (rtcp, True)):
            self._poller.register(sock.fileno(), select.POLLIN)
            self._fds[sock.fileno()] = (stream, is_rtcp, sock, sock.recvfrom, stream._on_rtp)
        self._streams[port] = stream
        return stream

    def _remove(self, stream: MediaStream) -> None:
        if self._streams.pop(stream.local_port, None) is None:
            return
        for sock in (stream._rtp_sock, stream._rtcp_sock):
            fd = sock.fileno()
            if fd >= 0 and self._fds.pop(fd, None) is not None:
                try:
                    self._poller.unregister(fd)
                except (KeyError, ValueError, OSError):
                    pass
        fast = self._fast
        fast.leave(stream)
        fast.dirty.pop(stream, None)
        self._rx_work.pop(stream, None)
        self._rtcp_due.pop(stream._rtcp_key, None)
        self._watch_due.pop(stream._watch_key, None)
        stream._rtcp.on_schedule = None  # (a reference cycle: streams are freed by refcount)
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
        for s in (a, b):
            self._fast.touch(s)
            self._rx_work[s] = None

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
        self._rx_work[stream] = None
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

        Only streams with something to do are visited: sockets with data (one poll), the
        streams whose received frames someone reads (``_rx_work``), due timers (heaps), the
        streams on the full send path; the plain ones send in one batch
        (:mod:`media.engine._fast`). A failure in one stream is logged and does not stop
        the others (try blocks cost nothing in CPython 3.11 until they catch)."""
        # 1. Drain readable sockets.
        self._drain(now, wall)
        # 2. Media timeouts that are due, then received frames: taps, bridges, and the
        # detector bank in one call for all.
        if self._watch_heap and self._watch_heap[0][0] <= now:
            self._watchdogs(now)
        if self._rx_work:
            self._receive(now)
        # Tick hooks (conference mixers) between the receive and the send halves.
        if self._tick_hooks:
            for hook in list(self._tick_hooks):
                try:
                    hook(now)
                except Exception:
                    log.exception("media tick hook failed; removed")
                    self.remove_tick_hook(hook)
        # 3. Send: streams whose work changed are placed first; the full path, then the fast
        # path in one batch; full-path streams whose work ended join the fast path after.
        fast = self._fast
        if fast.dirty:
            dirty = list(fast.dirty)
            fast.dirty.clear()
            for stream in dirty:
                fast.place(stream)
        done: list[MediaStream] = []
        if fast.full:
            for stream in list(fast.full):
                if stream._path != FULL:  # closed or moved by a callback earlier this tick
                    continue
                try:
                    stream._send_tick(skipped)
                except Exception:
                    log.exception("media stream %d: send tick failed", stream.local_port)
                if fast.enabled:
                    done.append(stream)
        fast.send(skipped)
        fast.ticks += skipped + 1
        for stream in done:
            if stream._path == FULL and fast.kind(stream) != FULL:
                fast.place(stream)
        # 4. RTCP reports that are due.
        if self._rtcp_heap and self._rtcp_heap[0][0] <= now:
            self._reports(now)

    def _drain(self, now: float, wall: float) -> None:
        """Read what arrived: one datagram from each ready socket, then, from the sockets
        still ready after that (a second poll; rare), the rest up to MAX_PACKETS_PER_TICK.
        A socket is thus read once per tick in the usual case of one packet per 20 ms,
        without the empty read (an exception) that ends a drain."""
        fds = self._fds
        poll = self._poller.poll
        # epoll's default maxevents is FD_SETSIZE - 1: ask for every socket.
        extra = (len(fds) + 1,) if self._epoll else ()
        ready = poll(0, *extra)
        if not ready:
            return
        for fd, _ev in ready:
            entry = fds.get(fd)
            if entry is None:
                continue
            stream, rtcp, sock, recvfrom, on_rtp = entry
            if rtcp:
                self._read(stream, sock, True, 1, now, wall)
                continue
            try:
                data, addr = recvfrom(2048)
            except OSError:
                continue  # nothing after all, or an ICMP error surfaced as ECONNREFUSED
            try:
                on_rtp(data, addr, now, wall)
            except Exception:
                log.exception("media stream %d: receive failed", stream.local_port)
        for fd, _ev in poll(0, *extra):
            entry = fds.get(fd)
            if entry is not None:
                self._read(entry[0], entry[2], entry[1], MAX_PACKETS_PER_TICK - 1, now, wall)

    @staticmethod
    def _read(
        stream: MediaStream, sock: socket.socket, rtcp: bool, count: int, now: float, wall: float
    ) -> None:
        for _ in range(count):
            if stream.closed:  # a callback earlier in this tick closed it
                return
            try:
                if rtcp:
                    data, anc, _, addr = sock.recvmsg(2048, TIMESTAMP_CMSG_SPACE)
                else:
                    data, addr = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # e.g. ICMP port unreachable surfaced as ECONNREFUSED
            try:
                if rtcp:
                    stream._on_rtcp(data, addr, arrival_wall(anc))
                else:
                    stream._on_rtp(data, addr, now, wall)
            except Exception:
                log.exception("media stream %d: receive failed", stream.local_port)

    def _receive(self, now: float) -> None:
        slots: list[int] = []
        frames: list[np.ndarray] = []
        rx_work = self._rx_work
        for stream in list(rx_work):
            try:
                frame = stream._receive_tick(now)
            except Exception:
                log.exception("media stream %d: receive tick failed", stream.local_port)
                continue
            if frame is not None and stream._detector is not None:
                slots.append(stream._detector)
                frames.append(frame)
            if not stream._receive_work or stream.closed:
                rx_work.pop(stream, None)
        if slots and self._detector_bank is not None:
            block = np.stack(frames)
            for slot, event in self._detector_bank.process(np.array(slots), block):
                owner = self._detector_streams.get(slot)
                if owner is not None and not owner._seen_rfc4733:
                    owner._deliver_dtmf(event)

    # --- timers: RTCP reports and media timeouts ------------------------------------------

    def _schedule_rtcp(self, stream: MediaStream, when: float) -> None:
        if stream.closed:
            return
        self._rtcp_due.pop(stream._rtcp_key, None)
        key = stream._rtcp_key = next(self._keys)
        self._rtcp_due[key] = stream
        heapq.heappush(self._rtcp_heap, (when, key))

    def _reports(self, now: float) -> None:
        heap = self._rtcp_heap
        waiting: list[MediaStream] = []
        while heap and heap[0][0] <= now:
            _, key = heapq.heappop(heap)
            stream = self._rtcp_due.pop(key, None)
            if stream is None:
                continue
            if stream._remote_rtcp is None:
                waiting.append(stream)  # due, nowhere to send yet: look again next tick
                continue
            try:
                stream._rtcp_tick(now)
            except Exception:
                log.exception("media stream %d: RTCP report failed", stream.local_port)
        for stream in waiting:
            self._schedule_rtcp(stream, now)

    def _arm_watchdog(self, stream: MediaStream) -> None:
        """(Re)start the media-timeout check of ``stream`` from its last accepted packet."""
        self._watch_due.pop(stream._watch_key, None)
        stream._watch_key = -1
        limit = stream._rx_limit
        if limit == math.inf or stream._timed_out or stream.closed:
            return
        key = stream._watch_key = next(self._keys)
        self._watch_due[key] = stream
        heapq.heappush(self._watch_heap, (stream._last_rx + limit, key))

    def _watchdogs(self, now: float) -> None:
        """Deadlines that passed: fire the stream's timeout, or (packets came meanwhile)
        push the deadline on from its last packet. The condition is the one every tick
        checked before: ``now - last_rx > limit``."""
        heap, due = self._watch_heap, self._watch_due
        while heap and heap[0][0] <= now:
            _, key = heapq.heappop(heap)
            stream = due.get(key)
            if stream is None:
                continue
            if now - stream._last_rx > stream._rx_limit:
                del due[key]
                stream._watch_key = -1
                stream._media_timed_out()
                continue
            when = stream._last_rx + stream._rx_limit
            heapq.heappush(heap, (when if when > now else now + 1e-6, key))

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
