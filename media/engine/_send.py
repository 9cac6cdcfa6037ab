"""The send path of a :class:`~media.engine.MediaStream`: queued sources, overlays mixed in,
bridged audio, ``send_digits`` jobs, packetisation and RTCP reports.

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

A base class of :class:`~media.engine.MediaStream`; the fields it reads are declared in
:class:`~media.engine._state.StreamState`. The methods run once per stream per tick, so they stay plain
methods of the stream, with no object in between.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np

from .. import dtmf as _dtmf
from ..sdp import SdpError
from ._config import CLOCK_RATE, CN_LEVEL, CN_REFRESH_TICKS, FRAME_SAMPLES, SILENCE
from ._state import DigitsJob, PlayItem, StreamState

# One logger for the whole engine (its records kept the name "media.engine" through the split).
log = logging.getLogger("media.engine")


def finish(future: asyncio.Future[Any], result: Any, *, close: Any = None) -> None:
    if not future.done():
        future.set_result(result)
    close_source(close)


def cancel(future: asyncio.Future[Any], *, close: Any = None) -> None:
    if not future.done():
        future.cancel()
    close_source(close)


def close_source(source: Any) -> None:
    closer = getattr(source, "close", None)
    if callable(closer):
        try:
            closer()
        except Exception:
            log.exception("closing media source failed")


class SendPath(StreamState):
    """What a stream sends on each tick (see the module docstring)."""

    @property
    def _can_send(self) -> bool:
        neg = self._negotiated
        return neg is not None and neg.sending and self._remote_rtp is not None and not self.closed

    # --- send path ------------------------------------------------------------------------

    @staticmethod
    def _read_item(item: PlayItem) -> np.ndarray | None:
        """The item's next 20 ms frame (padded with silence), or None once it has ended
        (its future is then done: ``"completed"``, or the source's exception)."""
        if item.future.done():  # cancelled by its owner, or stopped meanwhile
            close_source(item.source)
            return None
        try:
            frame = item.source.read(FRAME_SAMPLES)
        except Exception as exc:  # a broken file must not stop the clock
            log.exception("media source failed")
            if not item.future.done():
                item.future.set_exception(exc)
            close_source(item.source)
            return None
        if frame is None or len(frame) == 0:
            finish(item.future, "completed", close=item.source)
            return None
        frame = np.asarray(frame, dtype=np.int16)
        if frame.size < FRAME_SAMPLES:
            frame = np.concatenate((frame, SILENCE[: FRAME_SAMPLES - frame.size]))
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
        running: list[PlayItem] = []
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

    def _start_digits(self, job: DigitsJob) -> bool:
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
            job.sender = _dtmf.Rfc4733Sender(
                job.steps, clock_rate=neg.dtmf_clock_rate if neg else CLOCK_RATE, ptime_ms=20
            )
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
            finish(job.future, job.digits)
        return [], None, False

    def _send_tick(self, skipped: int) -> None:
        if self._negotiated is None or self.closed:
            return
        sender = self._sender
        if skipped:
            sender.advance(skipped * self._ts_step)
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
            frame, silence = SILENCE, True
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
            sock, remote, srtp = self._rtp_sock, self._remote_rtp, self._srtp
            assert remote is not None  # _can_send
            for packet in packets:
                if srtp is not None:  # RFC 3711: protect the packet as built
                    packet = srtp.protect_rtp(packet)
                try:
                    sock.sendto(packet, remote)
                except OSError:
                    self.send_errors += 1
        sender.advance(self._ts_step)

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
        if (
            silence
            and self._frames_per_packet == 1
            and not self._pending
            and self._stateless_encoder
        ):
            payload = self._silence_payload()
            marker, self._marker_next = self._marker_next, False
            return [
                sender.packet(self._send_pt, payload, marker=marker, timestamp=sender.timestamp)
            ]
        self._pending.append(frame)
        if len(self._pending) < self._frames_per_packet:
            return []
        first_ts = (sender.timestamp - (len(self._pending) - 1) * self._ts_step) & 0xFFFFFFFF
        pcm = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending)
        self._pending = []
        payload = self._encoder(pcm)  # type: ignore[misc]
        marker, self._marker_next = self._marker_next, False
        return [sender.packet(self._send_pt, payload, marker=marker, timestamp=first_ts)]

    def _silence_payload(self) -> bytes:
        """Encoded silence is the same bytes every tick: encoded once per payload type
        (stateless encoders only: G.711)."""
        payload = self._silence_payloads.get(self._send_pt)
        if payload is None:
            payload = self._silence_payloads[self._send_pt] = self._encoder(SILENCE)  # type: ignore[misc]
        return payload

    def _rtcp_tick(self, now: float) -> None:
        """Send the RTCP report if it is due (the engine calls this when the report's time
        in its heap has come)."""
        if self._remote_rtcp is not None and self._rtcp.due(now):
            self._engine._fast.sync(self)  # type: ignore[arg-type]  # SR counts, timestamp
            # The SR's NTP time stamp and DLSR are read from the wall clock right before
            # sending, not at the tick start: RFC 3550 §6.4.1 RTT = A - LSR - DLSR at the
            # peer is off by whatever lies between the two.
            report = self._rtcp.build_report(now, time.time())
            if self._srtp is not None:
                report = self._srtp.protect_rtcp(report)
            try:
                self._rtcp_sock.sendto(report, self._remote_rtcp)
            except OSError:
                self.send_errors += 1
