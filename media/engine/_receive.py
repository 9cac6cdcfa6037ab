"""The receive path of a :class:`~media.engine.MediaStream`: RTP and RTCP in, symmetric RTP,
RFC 4733 receivers, the playout FIFO, taps, and the frame handed to the bridge peer.

DTMF dedupe rule: each stream runs the in-band (Goertzel) detector until the first RFC 4733
telephone-event packet arrives from the peer; from then on the peer is known to signal
digits out of band, the detector slot is released, and only RFC 4733 events are reported.
A digit's tone takes >= 40 ms to detect in-band while its first RFC 4733 packet is sent at
tone start, so the first digit is not reported twice.

Latching ("RTP bleed", the class of Asterisk CVE-2017-14099): RTP is accepted from one source
address at a time. The first packet after an SDP from the peer (a new answer, or any re-offer)
sets it; for ``LEARN_WINDOW_S`` after that, a packet from the address in the SDP takes over at
once (a stray that beat the peer's first packet loses its place). Later a new address takes
over only after ``RELATCH_PACKETS`` consecutive packets of one SSRC with consecutive sequence
numbers, nothing accepted from the current source in between, and the current source silent
for ``RELATCH_QUIET_S`` (a NAT rebinding: the old address has fallen silent; a burst of forged
packets between two of the peer's does not qualify). Everything else is dropped before it reaches the statistics, the
SSRC, the RFC 4733 receivers, the playout FIFO, taps (AMD, recorders) and bridges, and is
counted in ``stats()["rtp_dropped_strays"]``; RTCP is accepted only from the host of the source
(or before one is known). The check costs one tuple comparison per packet.

Symmetric RTP (RFC 4961): a stream sends to the SDP address until a source is latched, then to
that source (``MediaConfig.symmetric_rtp``). A new SSRC from the source's audio (PBXs switch
SSRC on transfer or re-INVITE) is accepted: statistics restart. Telephone-events arriving with
an SSRC other than the audio's (some gateways do this; so does sipp replaying a capture while
echoing our audio) are not a source change: each SSRC gets its own RFC 4733 receiver and the
audio statistics stay. A new address in a later SDP unlatches.

RTP inactivity (``MediaStream.set_media_timeout``, as FreeSWITCH's ``rtp_timeout_sec`` /
``rtp_hold_timeout_sec`` and Asterisk's ``rtptimeout`` / ``rtpholdtimeout``): once armed,
``on_media_timeout`` is called once when no RTP packet has been accepted for the active
limit, or for the hold limit while the negotiated direction is not ``sendrecv`` (either side
holds, or the peer's c= is 0.0.0.0). RTCP does not count (Asterisk's choice: a peer whose
audio died may still send reports). Changing between held and active restarts the count.

Receive path: no reordering jitter buffer (nothing is played out to a sound card); received
audio goes through a FIFO of at most ``MAX_PLAYOUT_FRAMES`` frames and comes out one 20 ms
frame per tick, silence-filled on underrun, so taps and recorders see wall-clock time.

SRTP (``_srtp.py``): when the stream's media is SRTP, each packet is authenticated and
decrypted first (before latching and everything above; RTCP once it passed the source check);
one that fails is dropped and counted in ``stats()["srtp_auth_failures"]`` (or
``["srtp_replays"]``). Plain RTP pays one ``is None`` test.

A base class of :class:`~media.engine.MediaStream`; the fields it reads are declared in
:class:`~media.engine._state.StreamState`. The methods run per packet and per tick, so they stay plain
methods of the stream, with no object in between.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

import numpy as np

from .. import dtmf as _dtmf
from ..rtp import RTP_HEADER, RtpHeader, is_rtcp, parse_rtp
from ._config import (
    CLOCK_RATE,
    FRAME_SAMPLES,
    LEARN_WINDOW_S,
    MAX_EVENT_SOURCES,
    MAX_PLAYOUT_FRAMES,
    RELATCH_PACKETS,
    RELATCH_QUIET_S,
    SILENCE,
)
from ._send import finish
from ._state import StreamState

_unpack_header = RTP_HEADER.unpack_from

# One logger for the whole engine (its records kept the name "media.engine" through the split).
log = logging.getLogger("media.engine")


class ReceivePath(StreamState):
    """Packets in, and the received frame of each tick (see the module docstring)."""

    # --- receive path (called by the engine on the clock tick) ----------------------------

    def _on_rtp(self, data: bytes, addr: tuple[Any, ...], now: float, wall: float) -> None:
        srtp = self._srtp
        if srtp is None and addr == self._source and len(data) > 12:
            # The usual packet, in fewer steps: plain RTP from the latched source, a plain
            # header (version 2, no padding, extension or CSRCs), the current SSRC, an audio
            # payload type we decode. The same work as the general path below.
            b0, b1, seq, ts, ssrc = _unpack_header(data)
            rx = self._rx
            decoder = self._decoders.get(b1 & 0x7F)
            if b0 == 0x80 and decoder is not None and ssrc == rx.ssrc and not 192 <= b1 <= 223:
                rx.update(seq, ts, now)
                self.packets_received += 1
                self.bytes_received += len(data) - 12
                self._last_rx = now
                self._receiving = True
                if self._taps or self._bridge_peer is not None or self._detector is not None:
                    self._play_in(decoder(data[12:]))
                return
        if is_rtcp(data):  # RTCP sent to the RTP port (RFC 5761 demultiplexing)
            if self._rtcp_from_source(addr):
                plain = data if srtp is None else srtp.unprotect_rtcp(data)
                if plain is not None:
                    self._rtcp.handle(plain, wall)
            return
        if srtp is not None:  # RFC 3711: authenticate and decrypt before anything reads it
            plain = srtp.unprotect_rtp(data)
            if plain is None:
                return
            data = plain
        packet = parse_rtp(data)
        if packet is None:
            self.packets_dropped += 1
            return
        if addr != self._source and not self._admit_source(packet, addr, now):
            self.rtp_dropped_strays += 1
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
                codec = self._receive_codecs.get(pt)  # durations in its clock (Opus: 48000)
                receiver = self._rfc4733_rx[packet.ssrc] = _dtmf.Rfc4733Receiver(
                    clock_rate=codec.clock_rate if codec is not None else CLOCK_RATE
                )
            event = receiver.feed(packet.payload, packet.timestamp, packet.marker, now)
            if receiver.busy:
                self._engine._rx_work[self] = None  # type: ignore[index]  # flush per tick
            if event is not None:
                self._deliver_dtmf(event)
            return
        decoder = self._decoders.get(pt)
        if decoder is None:
            # CN, or a codec we cannot decode: the playout FIFO fills silence instead.
            return
        self._receiving = True
        if not self._taps and self._bridge_peer is None and self._detector is None:
            return  # nobody listens to this audio (no tap, bridge or detector): skip decoding
        self._play_in(decoder(packet.payload))

    def _play_in(self, samples: np.ndarray) -> None:
        """Decoded audio into the playout FIFO, in 20 ms frames."""
        if self._playout_partial.size:
            samples = np.concatenate((self._playout_partial, samples))
        full = samples.size // FRAME_SAMPLES
        for i in range(full):
            self._playout.append(samples[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES])
        self._playout_partial = samples[full * FRAME_SAMPLES :]
        while len(self._playout) > MAX_PLAYOUT_FRAMES:
            self._playout.popleft()

    def _admit_source(self, packet: RtpHeader, addr: tuple[Any, ...], now: float) -> bool:
        """A packet from an address other than the latched source: latch to it (and accept
        it) or not (see the module docstring). Off the per-packet fast path."""
        if self._source is None or (
            now < self._learn_until and (addr[0], addr[1]) == self._sdp_remote
        ):
            self._latch(addr, now)
            return True
        seq = packet.sequence_number
        if (
            addr == self._cand_addr
            and packet.ssrc == self._cand_ssrc
            and seq == (self._cand_seq + 1) & 0xFFFF
            and self._cand_mark == self.packets_received
        ):
            self._cand_count += 1
        else:
            self._cand_addr, self._cand_ssrc, self._cand_count = addr, packet.ssrc, 1
        self._cand_seq = seq
        self._cand_mark = self.packets_received
        if self._cand_count < RELATCH_PACKETS or now - self._last_rx < RELATCH_QUIET_S:
            return False
        log.info(
            "media stream %d: RTP source moved from %s:%s to %s:%s after %d packets in sequence",
            self.local_port,
            *self._source[:2],
            *addr[:2],
            self._cand_count,
        )
        self.rtp_source_changes += 1
        self._latch(addr, now)
        return True

    def _latch(self, addr: tuple[Any, ...], now: float) -> None:
        if self._source is None:
            self._learn_until = now + LEARN_WINDOW_S
        self._source = addr
        self._cand_addr = None
        if self._config.symmetric_rtp:
            # Symmetric RTP (RFC 4961): answer to where the media comes from (NAT).
            self._latched = True
            remote = (addr[0], addr[1])
            if remote != self._remote_rtp:
                self._remote_rtp = remote
                self._engine._fast.touch(self)  # type: ignore[arg-type]  # a new destination

    def _unlatch_source(self) -> None:
        """A new SDP from the peer: learn the source again from the next packet."""
        self._source = None
        self._cand_addr = None

    def _rtcp_from_source(self, addr: tuple[Any, ...]) -> bool:
        source = self._source
        if source is None or addr[0] == source[0]:
            return True
        self.rtp_dropped_strays += 1
        return False

    def _on_rtcp(self, data: bytes, addr: tuple[Any, ...], wall: float) -> None:
        if not self._rtcp_from_source(addr):
            return
        if self._srtp is not None:
            plain = self._srtp.unprotect_rtcp(data)
            if plain is None:
                return
            data = plain
        if self._config.symmetric_rtp:
            self._remote_rtcp = (addr[0], addr[1])
        self._rtcp.handle(data, wall)

    def _playout_frame(self) -> np.ndarray | None:
        """This tick's received frame: the oldest buffered one, or silence on underrun."""
        if self._playout:
            return self._playout.popleft()
        return SILENCE if self._receiving else None

    def _deliver_dtmf(self, event: _dtmf.DtmfEvent) -> None:
        self.dtmf_received += 1
        if self._playing is not None and self._playing.interrupt_on_dtmf:
            item, self._playing = self._playing, None
            finish(item.future, "dtmf", close=item.source)
            kept = deque(i for i in self._play_queue if not i.interrupt_on_dtmf)
            for i in self._play_queue:
                if i.interrupt_on_dtmf:
                    finish(i.future, "dtmf", close=i.source)
            self._play_queue = kept
        if any(i.interrupt_on_dtmf for i in self._overlays):
            for i in self._overlays:
                if i.interrupt_on_dtmf:
                    finish(i.future, "dtmf", close=i.source)
            self._overlays = [i for i in self._overlays if not i.interrupt_on_dtmf]
        if self.on_dtmf is not None:
            try:
                self.on_dtmf(event)
            except Exception:
                log.exception("on_dtmf callback failed")

    def _media_timed_out(self) -> None:
        """The RTP watchdog ran out (the engine checks it from its heap of deadlines)."""
        self._timed_out = True
        if self.on_media_timeout is not None:
            try:
                self.on_media_timeout()
            except Exception:
                log.exception("on_media_timeout callback failed")

    @property
    def _receive_work(self) -> bool:
        """Whether :meth:`_receive_tick` has anything to do: someone reads the received
        frames (a tap, a bridge, the in-band detector), frames are still buffered, or an
        RFC 4733 event is owed. The clock visits only such streams (its ``_rx_work``)."""
        return bool(
            self._taps
            or self._bridge_peer is not None
            or self._detector is not None
            or self._playout
            or any(r.busy for r in self._rfc4733_rx.values())
        )

    def _receive_tick(self, now: float) -> np.ndarray | None:
        for receiver in list(self._rfc4733_rx.values()):
            event = receiver.flush(now)
            if event is not None:
                self._deliver_dtmf(event)
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
