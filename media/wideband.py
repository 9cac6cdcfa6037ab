"""G.722 and Opus for the 8 kHz engine: PyAV's codecs behind stateful per-stream objects, and
the polyphase FIR resamplers between the codecs' rates and the engine's clock.

The engine works in 8 kHz 20 ms frames (:data:`media.engine.CLOCK_RATE`); these codecs do not:

* **G.722** (ITU-T G.722, RTP: RFC 3551 §4.5.2) samples at 16 kHz, but its RTP clock is 8000
  (an error in RFC 1890 kept for compatibility): timestamps advance 160 per 20 ms. A frame is
  upsampled 8k → 16k before encoding (320 samples → 160 bytes) and decoded audio is
  downsampled 16k → 8k.
* **Opus** (RFC 6716, RTP: RFC 7587) always has an RTP clock of 48000 and is written
  ``opus/48000/2`` whatever it carries: timestamps advance 960 per 20 ms. libopus encodes
  8 kHz input itself (its API takes 8/12/16/24/48 kHz), so nothing is resampled on the way
  out; FFmpeg's decoder always returns 48 kHz, downsampled 48k → 8k here. Mono: the decoder
  downmixes a stereo sender. We offer ``maxplaybackrate=8000; sprop-maxcapturerate=8000``
  (RFC 7587 §6.1): the engine hears and sends 8 kHz audio, so the peer need not spend bits on
  a wider band.

Everything per stream is stateful and keeps its history from one frame to the next: the
ADPCM and Opus coder states and the resamplers' FIR delay lines, so frame boundaries do not
click. An encoder or decoder belongs to one stream (one direction of one RTP session).

Cost (``python -m benchmarks.codecs``; benchmarks/RESULTS.md, "Wideband codecs"): encoding
and decoding 20 ms take ~100 µs for G.722 and ~185 µs for Opus against ~5 µs for G.711, most
of it in FFmpeg's coders, the rest in PyAV's objects and the resamplers; a stream's whole
tick costs 4-6 times a G.711 stream's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import av
import av.error
import numpy as np
from av.audio.codeccontext import AudioCodecContext
from av.audio.frame import AudioFrame

__all__ = [
    "CODECS",
    "Downsampler",
    "G722Decoder",
    "G722Encoder",
    "OpusDecoder",
    "OpusEncoder",
    "Upsampler",
    "WidebandCodec",
    "lowpass",
]

ENGINE_RATE = 8000
FRAME_SAMPLES = 160  # 20 ms at the engine's rate
TAPS_PER_PHASE = 24
KAISER_BETA = 7.0  # about -70 dB stop band
CUTOFF_HZ = 3800.0  # the 8 kHz engine keeps 0-3.8 kHz; the telephone band ends at 3.4 kHz
OPUS_BITRATE = 24000  # bit/s: generous for 8 kHz audio (RFC 7587 §3.1.1 lists 8-12 kbit/s NB)


def lowpass(taps: int, cutoff_hz: float, rate: int, beta: float = KAISER_BETA) -> np.ndarray:
    """A linear-phase low-pass FIR (a Kaiser-windowed sinc) of unit DC gain."""
    n = np.arange(taps) - (taps - 1) / 2.0
    fc = cutoff_hz / rate  # cycles per sample
    h = 2.0 * fc * np.sinc(2.0 * fc * n) * np.kaiser(taps, beta)
    return h / h.sum()


class Upsampler:
    """Integer-factor interpolation by a polyphase FIR (rate x ``factor``), stateful.

    Output sample ``n * factor + p`` is phase ``p`` of the filter over the last
    ``TAPS_PER_PHASE`` input samples; the delay line carries over between calls, so a stream
    cut into frames comes out as if it had been resampled in one piece."""

    def __init__(self, factor: int, in_rate: int = ENGINE_RATE) -> None:
        self.factor = factor
        p = TAPS_PER_PHASE
        h = lowpass(p * factor, CUTOFF_HZ, in_rate * factor) * factor  # zero-stuffing gain
        # g[j, q] multiplies window sample j (oldest first) for output phase q.
        g = np.empty((p, factor), dtype=np.float32)
        for j in range(p):
            for q in range(factor):
                g[j, q] = h[q + (p - 1 - j) * factor]
        self._g = g
        self._history = np.zeros(p - 1, dtype=np.float32)

    def process(self, pcm: np.ndarray) -> np.ndarray:
        """``pcm`` (int16 or float) at the input rate → float32 at ``factor`` times the rate."""
        p = TAPS_PER_PHASE
        buf = np.concatenate((self._history, pcm.astype(np.float32)))
        n = buf.size - (p - 1)
        # Row i is the window buf[i : i + p]: a strided view, no copy.
        windows = np.ndarray((n, p), np.float32, buf, 0, (4, 4))
        out = (windows @ self._g).ravel()
        self._history = buf[n:]
        return out


class Downsampler:
    """Integer-factor decimation by a polyphase FIR (rate / ``factor``), stateful.

    Output ``m`` is the filter over the input up to the last sample of block ``m``. The input
    is cut into rows of ``factor`` samples; one matrix product gives each row's contribution
    to each filter phase, and the output sums one diagonal of it. Input lengths that are not
    a multiple of ``factor`` are carried over to the next call."""

    def __init__(self, factor: int, out_rate: int = ENGINE_RATE) -> None:
        self.factor = factor
        p = TAPS_PER_PHASE
        taps = p * factor
        h = lowpass(taps, CUTOFF_HZ, out_rate * factor)
        # y[m] = sum_k h[taps-1-k] * buf[m*factor + k], k = r*factor + j
        self._h = h[::-1].reshape(p, factor).T.astype(np.float32).copy()  # (factor, p)
        self._history = np.zeros(taps - factor, dtype=np.float32)

    def process(self, pcm: np.ndarray) -> np.ndarray:
        """``pcm`` at the input rate → float32 at the rate / ``factor``."""
        f, p = self.factor, TAPS_PER_PHASE
        buf = np.concatenate((self._history, pcm.astype(np.float32)))
        rows = buf.size // f
        n = rows - (p - 1)  # outputs this call
        if n <= 0:
            self._history = buf
            return np.zeros(0, dtype=np.float32)
        z = buf[: rows * f].reshape(rows, f) @ self._h  # (rows, p), contiguous
        # out[m] = sum_r z[m + r, r]: a strided view along the diagonals.
        diag = np.ndarray((n, p), np.float32, z, 0, (p * 4, (p + 1) * 4))
        out = diag.sum(axis=1)
        self._history = buf[n * f :]
        return out


def _to_int16(x: np.ndarray) -> np.ndarray:
    """Float samples rounded and clipped to int16 (in place on ``x``; plain ufuncs, which cost
    less than ``np.clip``'s wrapper at this size)."""
    np.rint(x, out=x)
    np.minimum(x, 32767.0, out=x)
    np.maximum(x, -32768.0, out=x)
    return x.astype(np.int16)


class _PyAvEncoder:
    """One FFmpeg encoder context fed int16 mono frames of ``frame_size`` samples."""

    def __init__(
        self, name: str, rate: int, *, bit_rate: int = 0, options: dict[str, str] | None = None
    ):
        ctx = cast(AudioCodecContext, av.CodecContext.create(name, "w"))
        ctx.sample_rate = rate
        ctx.layout = "mono"
        ctx.format = "s16"
        if bit_rate:
            ctx.bit_rate = bit_rate
        if options:
            ctx.options = options
        ctx.open()
        self._ctx = ctx
        self._rate = rate
        self.frame_size = ctx.frame_size or FRAME_SAMPLES
        self._pts = 0
        self._frames: dict[int, AudioFrame] = {}

    def encode(self, pcm: np.ndarray) -> list[bytes]:
        # One AudioFrame per size, refilled each time (a new one costs ~5 µs more): G.722 and
        # libopus consume the samples inside encode(), before it returns.
        frame = self._frames.get(pcm.size)
        if frame is None:
            frame = self._frames[pcm.size] = AudioFrame(
                format="s16", layout="mono", samples=pcm.size
            )
            frame.sample_rate = self._rate
        samples = np.ascontiguousarray(pcm, dtype=np.int16)
        frame.planes[0].update(samples)  # type: ignore[arg-type]  # takes any buffer
        frame.pts = self._pts
        self._pts += pcm.size
        return [bytes(packet) for packet in self._ctx.encode(frame)]


class _PyAvDecoder:
    """One FFmpeg decoder context; bad packets count in ``errors`` and decode to nothing."""

    def __init__(self, name: str, rate: int) -> None:
        ctx = cast(AudioCodecContext, av.CodecContext.create(name, "r"))
        ctx.sample_rate = rate
        ctx.layout = "mono"
        ctx.open()
        self._ctx = ctx
        self.errors = 0

    def decode(self, payload: bytes) -> list[np.ndarray]:
        try:
            frames = self._ctx.decode(av.Packet(payload))
        except av.error.FFmpegError:
            self.errors += 1
            return []
        return [f.to_ndarray().reshape(-1) for f in frames]


_EMPTY = np.zeros(0, dtype=np.int16)


class G722Encoder:
    """8 kHz int16 frames → G.722 bytes (RTP payload type 9; 160 bytes per 20 ms)."""

    def __init__(self) -> None:
        self._up = Upsampler(2)
        self._enc = _PyAvEncoder("g722", 16000)

    def encode(self, pcm: np.ndarray) -> bytes:
        wide = _to_int16(self._up.process(pcm))
        step = self._enc.frame_size
        # G.722 is a byte stream (4 bits a sample per band): frames concatenate (ptime 40+).
        return b"".join(
            b"".join(self._enc.encode(wide[i : i + step])) for i in range(0, wide.size, step)
        )


class G722Decoder:
    """G.722 bytes → 8 kHz int16 samples (two per byte)."""

    def __init__(self) -> None:
        self._dec = _PyAvDecoder("g722", 16000)
        self._down = Downsampler(2)

    @property
    def errors(self) -> int:
        return self._dec.errors

    def decode(self, payload: bytes) -> np.ndarray:
        frames = self._dec.decode(payload)
        if not frames:
            return _EMPTY
        wide = frames[0] if len(frames) == 1 else np.concatenate(frames)
        return _to_int16(self._down.process(wide))


class OpusEncoder:
    """8 kHz int16 frames → one Opus packet per 20 ms frame (RFC 7587: one packet per RTP
    packet, so the stream sends 20 ms packets whatever ptime the peer asked for)."""

    def __init__(self, bit_rate: int = OPUS_BITRATE) -> None:
        # libopus takes 8 kHz input natively; "voip" favours speech intelligibility.
        self._enc = _PyAvEncoder(
            "libopus", ENGINE_RATE, bit_rate=bit_rate, options={"application": "voip"}
        )

    def encode(self, pcm: np.ndarray) -> bytes:
        packets = self._enc.encode(pcm)
        return packets[0] if len(packets) == 1 else b"".join(packets)


class OpusDecoder:
    """Opus packets (any frame size, mono or stereo) → 8 kHz int16 samples."""

    def __init__(self) -> None:
        self._dec = _PyAvDecoder("libopus", 48000)
        self._down = Downsampler(6)

    @property
    def errors(self) -> int:
        return self._dec.errors

    def decode(self, payload: bytes) -> np.ndarray:
        frames = self._dec.decode(payload)
        if not frames:
            return _EMPTY
        wide = frames[0] if len(frames) == 1 else np.concatenate(frames)
        return _to_int16(self._down.process(wide))


@dataclass(frozen=True)
class WidebandCodec:
    """How the engine uses one of these codecs."""

    name: str
    """The SDP encoding name, upper-case as the engine lists codecs."""
    rtp_clock_rate: int
    """RTP timestamp units per second (8000 for G.722, 48000 for Opus)."""
    packet_frames: int
    """20 ms frames one RTP packet may carry at most (Opus: one packet, one frame)."""
    encoder: Callable[[], G722Encoder | OpusEncoder]
    decoder: Callable[[], G722Decoder | OpusDecoder]

    @property
    def timestamp_step(self) -> int:
        """RTP timestamp advance per 20 ms frame."""
        return self.rtp_clock_rate * FRAME_SAMPLES // ENGINE_RATE


CODECS: dict[str, WidebandCodec] = {
    "G722": WidebandCodec("G722", 8000, 6, G722Encoder, G722Decoder),
    "OPUS": WidebandCodec("OPUS", 48000, 1, OpusEncoder, OpusDecoder),
}
