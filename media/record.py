"""Audio sinks: record 8 kHz mono int16 frames to WAV (``wave``) or MP3 (PyAV + LAME).

A :class:`Recorder` is fed from the media clock (``write`` per 20 ms frame), so ``write`` stays
cheap: WAV frames go straight to the file (the header is fixed up on ``close``); MP3 frames are
encoded by libmp3lame, whose cost is small at 8 kHz (MPEG-2.5 layer III).
"""

from __future__ import annotations

import os
import wave
from typing import Any

import numpy as np

__all__ = ["Recorder", "RecorderError", "mp3_encoder_name"]


class RecorderError(RuntimeError):
    """The recording cannot be created or written."""


def mp3_encoder_name() -> str | None:
    """The PyAV MP3 encoder available (``libmp3lame``, as FFmpeg names it), or ``None``."""
    import av

    for name in ("libmp3lame", "mp3"):
        try:
            codec = av.Codec(name, "w")
        except (av.FFmpegError, ValueError):  # not built in
            continue
        if codec.is_encoder:
            return name
    return None


class Recorder:
    """Writes the frames it is given to ``path`` as ``wav`` or ``mp3``.

    ``close()`` finishes the file and returns its duration in seconds (samples written / rate);
    it is idempotent. ``write`` after ``close`` raises :class:`RecorderError`.
    """

    #: 32 kbit/s: transparent for 8 kHz telephone audio (LAME's default at 8 kHz is ~8 kbit/s).
    mp3_bit_rate = 32_000

    def __init__(self, path: str | os.PathLike[str], fmt: str = "wav", rate: int = 8000) -> None:
        fmt = fmt.lower()
        if fmt not in ("wav", "mp3"):
            raise ValueError("fmt must be 'wav' or 'mp3'")
        self.path = os.fspath(path)
        self.fmt = fmt
        self.rate = rate
        self.samples = 0
        self._closed = False
        self._wav: Any = None
        self._container: Any = None
        self._stream: Any = None
        self._fh: Any = None
        try:
            if fmt == "wav":
                self._fh = open(self.path, "wb")  # noqa: SIM115 - closed in close()
                self._wav = wave.open(self._fh, "wb")
                self._wav.setnchannels(1)
                self._wav.setsampwidth(2)
                self._wav.setframerate(rate)
            else:
                self._open_mp3()
        except (OSError, wave.Error) as exc:
            self._abandon()
            raise RecorderError(f"cannot record to {self.path}: {exc}") from exc
        except RecorderError:
            self._abandon()
            raise

    def _abandon(self) -> None:
        self._closed = True
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def _open_mp3(self) -> None:
        import av

        encoder = mp3_encoder_name()
        if encoder is None:
            raise RecorderError("no MP3 encoder in this FFmpeg build (libmp3lame)")
        try:
            # The file is opened by Python: the path is never parsed as an FFmpeg URL.
            self._fh = open(self.path, "wb")  # noqa: SIM115 - closed in close()
            self._container = av.open(self._fh, mode="w", format="mp3")
            self._stream = self._container.add_stream(encoder, rate=self.rate, layout="mono")
            self._stream.bit_rate = self.mp3_bit_rate
        except av.FFmpegError as exc:
            raise RecorderError(f"cannot record MP3 to {self.path}: {exc}") from exc

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def duration(self) -> float:
        """Seconds recorded so far."""
        return self.samples / self.rate

    def write(self, pcm: np.ndarray) -> None:
        """Append int16 mono samples (any length)."""
        if self._closed:
            raise RecorderError("recorder is closed")
        data = np.ascontiguousarray(np.asarray(pcm, dtype=np.int16).reshape(-1))
        if data.size == 0:
            return
        if self._wav is not None:
            self._wav.writeframesraw(data.astype("<i2", copy=False).tobytes())
        else:
            import av

            frame = av.AudioFrame.from_ndarray(data[None, :], format="s16", layout="mono")
            frame.sample_rate = self.rate
            frame.pts = self.samples
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        self.samples += data.size

    def close(self) -> float:
        """Finish the file; returns the recorded duration in seconds."""
        if self._closed:
            return self.duration
        self._closed = True
        if self._wav is not None:
            self._wav.close()  # rewrites the RIFF sizes
            self._fh.close()
            self._wav = None
        elif self._container is not None:
            try:
                for packet in self._stream.encode(None):
                    self._container.mux(packet)
            finally:
                self._container.close()
                self._fh.close()
                self._container = None
        return self.duration

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
