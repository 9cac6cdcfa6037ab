"""One RTP session: :class:`MediaStream`, its offer/answer state and its application API.

Its fields are declared in :class:`~media.engine._state.StreamState`; its per-packet and
per-tick work is in the two base classes :class:`~media.engine._receive.ReceivePath` and
:class:`~media.engine._send.SendPath`, which the engine's clock calls for every stream.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import dtmf as _dtmf
from .. import g711 as _g711
from .. import wideband as _wideband
from ..sdp import (
    Codec,
    NegotiatedMedia,
    SdpError,
    SessionDescription,
    SrtpParameters,
    answer_offer,
    build_offer,
    negotiate_answer,
)
from ._config import FRAME_SAMPLES
from ._receive import ReceivePath
from ._send import DigitsJob, PlayItem, SendPath, cancel, finish
from ._srtp import SrtpContext


class MediaStream(ReceivePath, SendPath):
    """One RTP session (audio, one SSRC each way) owned by a :class:`MediaEngine`.

    Created by :meth:`MediaEngine.create_stream`. Before the remote address is known (before
    :meth:`apply_answer` or :meth:`handle_offer`) it only receives.
    """

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
            text = build_offer(
                address=self.local_address,
                port=self.local_port,
                codecs=self._sdp_codecs,
                telephone_event=cfg.telephone_event,
                ptime=cfg.ptime_ms,
                direction=direction,
                session_id=self._session_id,
                version=version,
            )
            return text if self._crypto is None else self._crypto.secure_offer(text)

        self._local_offer = self._versioned(build)
        offer = self._local_offer_parsed = SessionDescription.parse(self._local_offer)
        if self._negotiated is None:
            # Until the answer arrives, accept what we offered (early RTP may beat the 183).
            _, audio = offer.first_audio()
            self._set_receive_codecs({c.payload_type: c for c in audio.codecs})
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

        Raises :class:`SdpError` if no common codec, or when SRTP is mandatory and the
        answer has no usable ``a=crypto`` line (RFC 4568).
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
        srtp: SrtpParameters | None = None
        if self._crypto is not None:
            if not isinstance(offer, SessionDescription):
                offer = SessionDescription.parse(offer)
            srtp = self._crypto.read_answer(offer, SessionDescription.parse(sdp))
        self._last_answer = key
        self._apply(negotiated)
        self._apply_srtp(srtp)

    def handle_offer(self, sdp: str) -> str:
        """Answer an offer from the far end (re-INVITE: hold, resume, codec change, or an
        INVITE we receive). Returns our answer SDP. With SRTP on, an offer with a usable
        ``a=crypto`` line is answered with ours (a new key from the peer rekeys); raises
        :class:`SdpError` when SRTP is mandatory and the offer has none."""
        self._check_open()
        cfg = self._config
        crypto = self._crypto
        result: list[tuple[NegotiatedMedia, SrtpParameters | None]] = []

        def build(version: int) -> str:
            text, negotiated = answer_offer(
                sdp,
                address=self.local_address,
                port=self.local_port,
                supported=self._sdp_codecs,
                telephone_event=cfg.telephone_event,
                ptime=cfg.ptime_ms,
                session_id=self._session_id,
                version=version,
                hold=self._held,
                secure=crypto is not None,
            )
            srtp = None
            if crypto is not None:
                text, srtp = crypto.secure_answer(sdp, text)
            result.append((negotiated, srtp))
            return text

        text = self._versioned(build)
        self._last_answer = None
        self._unlatch_source()  # a new SDP from the peer: learn its RTP source again
        self._apply(result[-1][0])
        self._apply_srtp(result[-1][1])
        return text

    def _apply_srtp(self, params: SrtpParameters | None) -> None:
        """Start, rekey or stop SRTP after an exchange (plain RTP when ``params`` is None)."""
        current = self._srtp
        if params is None:
            if current is not None:
                self.srtp_auth_failures += current.auth_failures
                self.srtp_replays += current.replays
            self._srtp = None
        elif current is None:
            self._srtp = SrtpContext(params)
        else:
            self._srtp = current.rekeyed(params)
        self._engine._fast.touch(self)

    def _apply(self, neg: NegotiatedMedia) -> None:
        remote = (neg.remote_address, neg.remote_port)
        if remote != self._sdp_remote:
            # New media address from signalling: send there until RTP arrives again.
            self._sdp_remote = remote
            self._latched = False
            self._unlatch_source()
            self._remote_rtp = None if neg.remote_address in ("0.0.0.0", "::") else remote
            rtcp_port = neg.remote_rtcp_port or neg.remote_port + 1
            self._remote_rtcp = (
                (neg.remote_rtcp_address or neg.remote_address, rtcp_port)
                if self._remote_rtp
                else None
            )
        self._set_encoder(neg.codec)
        if self._negotiated is None or neg.codec != self._negotiated.codec:
            self._marker_next = True
        self._send_pt = neg.codec.payload_type
        ptime = neg.ptime if neg.ptime and neg.ptime % 20 == 0 else self._config.ptime_ms
        wide = _wideband.CODECS.get(neg.codec.name.upper())
        most = wide.packet_frames if wide is not None else 6
        self._frames_per_packet = max(1, min(ptime // 20, most))
        self._pending.clear()
        self._set_receive_codecs(dict(neg.receive_codecs))
        self._dtmf_types = neg.receive_dtmf_payload_types
        held = self.on_hold
        self._negotiated = neg
        now = self._engine.now()
        if self.on_hold != held:
            self._last_rx = now  # the watchdog counts afresh from a hold or a resume
            self._set_rx_limit()
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
        self._engine._fast.touch(self)

    def _set_encoder(self, codec: Codec) -> None:
        """The encoder of the codec we send: G.711's table, or this stream's G.722/Opus
        encoder (kept across re-INVITEs that keep the codec, so its state runs on). The RTP
        clocks follow the codec (Opus: 48000, RFC 7587 §4.1; G.722: 8000, RFC 3551 §4.5.2)."""
        name = codec.name.upper()
        encoder = _g711.ENCODERS.get(name)
        if encoder is not None:
            self._encoder, self._ts_step, self._stateless_encoder = encoder, FRAME_SAMPLES, True
            self._wideband_encoder = None
        else:
            wide = _wideband.CODECS.get(name)
            if wide is None:
                raise SdpError(f"negotiated codec {codec.name} cannot be encoded")
            if self._wideband_encoder is None or self._wideband_encoder[0] != name:
                self._wideband_encoder = (name, wide.encoder())
            self._encoder = self._wideband_encoder[1].encode
            self._ts_step, self._stateless_encoder = wide.timestamp_step, False
        self._sender.clock_rate = self._rx.clock_rate = codec.clock_rate

    def _set_receive_codecs(self, codecs: dict[int, Codec]) -> None:
        """The payload types we may receive and their decoders. A G.722/Opus decoder is made
        once per codec for this stream, when its first packet arrives (one costs 0.2-0.3 ms
        to set up: an offer listing both need not pay for the one the answer leaves out)."""
        self._receive_codecs = codecs
        decoders: dict[int, Callable[[bytes], np.ndarray]] = {}
        for pt, codec in codecs.items():
            name = codec.name.upper()
            g711 = _g711.DECODERS.get(name)
            if g711 is not None:
                decoders[pt] = g711
            elif name in _wideband.CODECS:
                decoder = self._wideband_decoders.get(name)
                decoders[pt] = decoder.decode if decoder is not None else self._first_packet(name)
        self._decoders = decoders

    def _first_packet(self, name: str) -> Callable[[bytes], np.ndarray]:
        """A stand-in decoder that makes the real one on the first packet and hands over."""

        def decode(payload: bytes) -> np.ndarray:
            decoder = self._wideband_decoders.get(name)
            if decoder is None:
                decoder = self._wideband_decoders[name] = _wideband.CODECS[name].decoder()
            for pt, fn in self._decoders.items():
                if fn is decode:
                    self._decoders[pt] = decoder.decode
            return decoder.decode(payload)

        return decode

    @property
    def negotiated(self) -> NegotiatedMedia | None:
        """The result of the last offer/answer, or ``None`` before one completed."""
        return self._negotiated

    @property
    def on_hold(self) -> bool:
        """True while the negotiated direction is not ``sendrecv``: either side holds (a
        ``sendonly``/``recvonly``/``inactive`` SDP, or the peer's c=0.0.0.0)."""
        neg = self._negotiated
        return neg is not None and neg.direction != "sendrecv"

    def set_media_timeout(self, timeout_s: float, hold_timeout_s: float = 0.0) -> None:
        """Arm the RTP inactivity watchdog from now: ``on_media_timeout`` is called (once)
        when no RTP packet from the peer is accepted for ``timeout_s`` seconds, or for
        ``hold_timeout_s`` while :attr:`on_hold`. 0 turns either off; calling again
        re-arms. RTCP does not count. Off until called (a SIP leg arms it at answer)."""
        if timeout_s < 0 or hold_timeout_s < 0:
            raise ValueError("media timeouts must be >= 0 (0 = off)")
        self._rx_timeouts = (float(timeout_s), float(hold_timeout_s))
        self._last_rx = self._engine.now()
        self._timed_out = False
        self._set_rx_limit()

    def _set_rx_limit(self) -> None:
        active, hold = self._rx_timeouts
        limit = hold if self.on_hold else active
        self._rx_limit = limit if limit > 0 else math.inf
        self._engine._arm_watchdog(self)

    @property
    def remote_address(self) -> tuple[str, int] | None:
        """Where RTP goes now (the latched source once symmetric RTP latched)."""
        return self._remote_rtp

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
        item = PlayItem(source, self._future(), interrupt_on_dtmf)
        if mix:
            self._overlays.append(item)
        else:
            self._play_queue.append(item)
        self._engine._fast.touch(self)
        return item.future

    def stop_play(self) -> None:
        """Stop everything this stream plays: the playing source, the queued ones and the
        overlays (their futures: ``"stopped"``)."""
        items = ([self._playing] if self._playing else []) + list(self._play_queue)
        self._playing = None
        self._play_queue.clear()
        for item in items:
            finish(item.future, "stopped", close=item.source)
        self.stop_overlays()

    def stop_overlays(self) -> None:
        """Stop the ``mix=True`` sources only (their futures: ``"stopped"``); the queue and
        bridged audio go on."""
        items, self._overlays = self._overlays, []
        for item in items:
            finish(item.future, "stopped", close=item.source)

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
            steps = _dtmf.parse_send_digits(digits, default_tone_ms=tone_ms)
        else:
            steps = list(digits)
        job = DigitsJob(steps, mode, self._future())
        self._digits_queue.append(job)
        self._engine._fast.touch(self)
        return job.future

    def add_tap(self, fn: Callable[[np.ndarray], None]) -> None:
        """Receive each 20 ms frame of decoded received audio (int16, 160 samples), on the
        clock tick, silence-filled when no packet arrived. Must be quick."""
        self._taps.append(fn)
        self._engine._rx_work[self] = None

    def remove_tap(self, fn: Callable[[np.ndarray], None]) -> None:
        if fn in self._taps:
            self._taps.remove(fn)

    def add_send_tap(self, fn: Callable[[np.ndarray], None]) -> None:
        """Receive each 20 ms frame we send (before encoding), e.g. to record both legs."""
        self._send_taps.append(fn)
        self._engine._fast.touch(self)

    def remove_send_tap(self, fn: Callable[[np.ndarray], None]) -> None:
        if fn in self._send_taps:
            self._send_taps.remove(fn)

    def stats(self) -> dict[str, Any]:
        """Counters and RFC 3550 quality figures for CDRs and call status."""
        self._engine._fast.sync(self)
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
            "rtp_dropped_strays": self.rtp_dropped_strays,
            "rtp_source_changes": self.rtp_source_changes,
            "rtcp_sent": self._rtcp.reports_sent,
            "rtcp_received": self._rtcp.reports_received,
            "dtmf_sent": self.dtmf_sent,
            "dtmf_received": self.dtmf_received,
            "send_errors": self.send_errors,
            "srtp": self._srtp.suite if self._srtp is not None else None,
            "srtp_auth_failures": self.srtp_auth_failures
            + (self._srtp.auth_failures if self._srtp is not None else 0),
            "srtp_replays": self.srtp_replays
            + (self._srtp.replays if self._srtp is not None else 0),
        }

    def close(self) -> None:
        """Stop media, send an RTCP BYE, release the ports, cancel pending futures.
        Idempotent."""
        if self.closed:
            return
        self._engine._fast.sync(self)
        if self._remote_rtcp is not None:
            try:
                report = self._rtcp.build_report(self._engine.now(), time.time(), bye=True)
                if self._srtp is not None:
                    report = self._srtp.protect_rtcp(report)
                self._rtcp_sock.sendto(report, self._remote_rtcp)
            except (OSError, ValueError):
                pass
        self.closed = True
        items = ([self._playing] if self._playing else []) + list(self._play_queue)
        for item in items + self._overlays:
            cancel(item.future, close=item.source)
        self._playing = None
        self._play_queue.clear()
        self._overlays = []
        for job in ([self._digits] if self._digits else []) + list(self._digits_queue):
            cancel(job.future)
        self._digits = None
        self._digits_queue.clear()
        self._engine._remove(self)

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("media stream is closed")
