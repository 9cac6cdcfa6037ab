"""Audio sources for the media engine: 8 kHz mono int16, read a frame at a time.

Every source has ``read(n) -> np.ndarray | None``: up to ``n`` samples (exactly ``n`` except
possibly the last chunk; the engine pads it with silence), ``None`` once finished. ``close()``
releases what the source holds. Sources never block on the network: a URL is downloaded into a
cache by the caller (softswitch/) and handed over as a local path.

* :class:`SilenceSource`, :class:`ToneSource` (with optional on/off cadence), :class:`ArraySource`.
* :class:`FileSource`: WAV, MP3 and anything else FFmpeg reads, decoded with PyAV and resampled
  to 8 kHz mono by libswresample. Files up to :data:`DECODE_UP_FRONT_MAX_BYTES` are decoded
  whole when the source is created (errors surface at once, not mid-call) and kept in a small
  shared LRU cache so hold music played to many calls is decoded once; larger files are decoded
  incrementally while playing.
* :func:`tts_to_pcm`: text to speech with espeak-ng, cached in memory and optionally on disk.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import threading
import wave
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .dtmf import dbm0_to_amplitude

__all__ = [
    "DECODE_UP_FRONT_MAX_BYTES",
    "RATE",
    "ArraySource",
    "AudioFileError",
    "FileSource",
    "SilenceSource",
    "Source",
    "ToneSource",
    "decode_audio",
    "tts_to_pcm",
]

RATE = 8000
#: Files up to this size are decoded entirely when the source is created.
DECODE_UP_FRONT_MAX_BYTES = 16 * 1024 * 1024
#: Decoded audio kept for reuse by :class:`FileSource` (bytes of int16 PCM).
DECODED_CACHE_MAX_BYTES = 64 * 1024 * 1024


class AudioFileError(ValueError):
    """A file that cannot be decoded as audio (missing, not audio, corrupt)."""


@runtime_checkable
class Source(Protocol):
    def read(self, n: int = 160) -> np.ndarray | None:
        """Up to ``n`` int16 samples at 8 kHz; ``None`` when finished."""
        ...


class SilenceSource:
    """Silence for ``duration_ms`` (``None``: endless, until the engine stops it)."""

    def __init__(self, duration_ms: int | None = None, *, rate: int = RATE) -> None:
        self._remaining = None if duration_ms is None else rate * duration_ms // 1000

    def read(self, n: int = 160) -> np.ndarray | None:
        if self._remaining is None:
            return np.zeros(n, dtype=np.int16)
        if self._remaining <= 0:
            return None
        k = min(n, self._remaining)
        self._remaining -= k
        return np.zeros(k, dtype=np.int16)

    def close(self) -> None:
        pass


class ToneSource:
    """A sum of sines (e.g. ``(440.0, 480.0)`` for US ringback), each at ``level_dbm0``.

    ``duration_ms=None`` plays forever. ``cadence`` is an on/off pattern in ms repeated over the
    duration, e.g. ``(2000, 4000)`` for ringback (ITU-T E.180); phase runs continuously.
    """

    def __init__(
        self,
        freqs: tuple[float, ...],
        duration_ms: int | None,
        level_dbm0: float = -10.0,
        *,
        cadence: tuple[int, ...] | None = None,
        rate: int = RATE,
    ) -> None:
        if not freqs:
            raise ValueError("at least one frequency")
        if cadence is not None and (len(cadence) % 2 or sum(cadence) <= 0 or min(cadence) < 0):
            raise ValueError("cadence is on/off pairs of milliseconds")
        self._freqs = np.asarray(freqs, dtype=np.float64)
        self._amp = dbm0_to_amplitude(level_dbm0)
        self._rate = rate
        self._total = None if duration_ms is None else rate * duration_ms // 1000
        self._pos = 0
        self._mask: np.ndarray | None = None
        if cadence is not None:
            parts = [
                np.full(rate * ms // 1000, i % 2 == 0, dtype=bool) for i, ms in enumerate(cadence)
            ]
            self._mask = np.concatenate(parts)

    def read(self, n: int = 160) -> np.ndarray | None:
        k = n if self._total is None else min(n, self._total - self._pos)
        if k <= 0:
            return None
        t = np.arange(self._pos, self._pos + k, dtype=np.float64)
        x = self._amp * np.sin(2 * np.pi * np.outer(t / self._rate, self._freqs)).sum(axis=1)
        if self._mask is not None:
            x *= self._mask[(t.astype(np.int64)) % len(self._mask)]
        self._pos += k
        return np.clip(np.rint(x), -32768, 32767).astype(np.int16)

    def close(self) -> None:
        pass


def _loop_count(loop: int | bool) -> int:
    """``loop`` as a play count (0 = forever). A bool reads as a flag: ``False`` plays once and
    ``True`` loops forever, so ``loop=False`` never means "forever" by accident."""
    if isinstance(loop, bool):
        return 0 if loop else 1
    if loop < 0:
        raise ValueError("loop must be >= 0 (0 = forever)")
    return int(loop)


class ArraySource:
    """Plays an int16 array ``loop`` times (``0``: forever; see :func:`_loop_count`)."""

    def __init__(self, pcm: np.ndarray, loop: int | bool = 1) -> None:
        loop = _loop_count(loop)
        self._pcm = np.asarray(pcm, dtype=np.int16).reshape(-1)
        self._loops_left = loop  # 0 = forever
        self._pos = 0

    def read(self, n: int = 160) -> np.ndarray | None:
        size = len(self._pcm)
        if size == 0:
            return None
        parts: list[np.ndarray] = []
        want = n
        while want > 0:
            if self._pos >= size:
                if self._loops_left == 1:
                    break
                if self._loops_left > 1:
                    self._loops_left -= 1
                self._pos = 0
            chunk = self._pcm[self._pos : self._pos + want]
            parts.append(chunk)
            self._pos += len(chunk)
            want -= len(chunk)
        if not parts:
            return None
        return parts[0].copy() if len(parts) == 1 else np.concatenate(parts)

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------
# Files (PyAV)


def _iter_decoded(fileobj: Any, rate: int) -> Iterator[np.ndarray]:
    """Decode the first audio stream of an open file to mono int16 at ``rate``."""
    import av

    try:
        container = av.open(fileobj, mode="r")
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise AudioFileError(f"cannot open audio: {exc}") from exc
    with container:
        if not container.streams.audio:
            raise AudioFileError("no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    yield out.to_ndarray().reshape(-1)
            for out in resampler.resample(None):
                yield out.to_ndarray().reshape(-1)
        except av.FFmpegError as exc:
            raise AudioFileError(f"cannot decode audio: {exc}") from exc


def decode_audio(data: bytes | str | os.PathLike[str], *, rate: int = RATE) -> np.ndarray:
    """Decode a whole file (path) or in-memory file (bytes) to mono int16 at ``rate``.

    Files are opened by Python and handed to FFmpeg as file objects, so a path is never
    interpreted as an FFmpeg protocol URL (``concat:``, ``http:``...).
    """
    if isinstance(data, bytes):
        chunks = list(_iter_decoded(io.BytesIO(data), rate))
    else:
        try:
            fh = open(data, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise AudioFileError(f"cannot open {data}: {exc}") from exc
        with fh:
            chunks = list(_iter_decoded(fh, rate))
    if not chunks:
        return np.zeros(0, dtype=np.int16)
    return np.concatenate(chunks).astype(np.int16, copy=False)


class _DecodedCache:
    """LRU of decoded files keyed by (path, size, mtime, rate); arrays are read-only."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[Any, ...], np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> np.ndarray | None:
        with self._lock:
            pcm = self._items.get(key)
            if pcm is not None:
                self._items.move_to_end(key)
            return pcm

    def put(self, key: tuple[Any, ...], pcm: np.ndarray) -> None:
        if pcm.nbytes > self.max_bytes:
            return
        pcm.setflags(write=False)
        with self._lock:
            if key in self._items:
                return
            self._items[key] = pcm
            self._bytes += pcm.nbytes
            while self._bytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self._bytes -= old.nbytes

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


_decoded_cache = _DecodedCache(DECODED_CACHE_MAX_BYTES)


class FileSource:
    """An audio file (WAV, MP3, ...) played ``loop`` times (``0``: forever; ``False``: once).

    ``path`` is a local file: URLs must be fetched by the caller first (see module docstring).
    Small files (<= :data:`DECODE_UP_FRONT_MAX_BYTES`) are decoded here, so a bad file raises
    :class:`AudioFileError` from the constructor; larger ones are decoded while playing (the
    file is probed here) and reopened for each loop. Decoding is CPU work: create sources for
    big files off the media clock (``asyncio.to_thread``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        loop: int | bool = 1,
        *,
        rate: int = RATE,
        up_front_max_bytes: int = DECODE_UP_FRONT_MAX_BYTES,
    ) -> None:
        text = os.fspath(path)
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", text):
            raise AudioFileError(f"FileSource takes a local path, not a URL: {text!r}")
        loop = _loop_count(loop)
        try:
            st = os.stat(text)
        except OSError as exc:
            raise AudioFileError(f"cannot open {text}: {exc}") from exc
        self.path = text
        self._rate = rate
        self._inner: ArraySource | None = None
        self._stream: Iterator[np.ndarray] | None = None
        self._fh: Any = None
        self._buf = np.zeros(0, dtype=np.int16)
        self._loops_left = loop
        if st.st_size <= up_front_max_bytes:
            key = (os.path.abspath(text), st.st_size, st.st_mtime_ns, rate)
            pcm = _decoded_cache.get(key)
            if pcm is None:
                pcm = decode_audio(text, rate=rate)
                _decoded_cache.put(key, pcm)
            self._inner = ArraySource(pcm, loop)
        else:
            self._open_stream()
            try:
                first = next(self._stream, None) if self._stream is not None else None
                if first is None:
                    raise AudioFileError(f"no audio in {text}")
            except BaseException:
                self._close_stream()
                raise
            self._buf = first

    @property
    def decoded_up_front(self) -> bool:
        return self._inner is not None

    def _open_stream(self) -> None:
        self._close_stream()
        try:
            self._fh = open(self.path, "rb")  # noqa: SIM115 - owned by the source
        except OSError as exc:
            raise AudioFileError(f"cannot open {self.path}: {exc}") from exc
        self._stream = _iter_decoded(self._fh, self._rate)

    def _close_stream(self) -> None:
        if self._stream is not None:
            close = getattr(self._stream, "close", None)
            if close:
                close()
            self._stream = None
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def read(self, n: int = 160) -> np.ndarray | None:
        if self._inner is not None:
            return self._inner.read(n)
        while len(self._buf) < n:
            chunk = next(self._stream, None) if self._stream is not None else None
            if chunk is None:
                if self._loops_left == 1:
                    self._close_stream()
                    break
                if self._loops_left > 1:
                    self._loops_left -= 1
                self._open_stream()
                chunk = next(self._stream, None) if self._stream is not None else None
                if chunk is None:
                    break
            self._buf = np.concatenate([self._buf, chunk])
        if len(self._buf) == 0:
            return None
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def close(self) -> None:
        self._close_stream()
        self._inner = None
        self._buf = np.zeros(0, dtype=np.int16)
        self._loops_left = 1


# ---------------------------------------------------------------------------------------------
# Text to speech (espeak-ng)

_VOICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_+./-]{0,63}$")
TTS_MAX_CHARS = 10_000
_tts_memory: OrderedDict[tuple[str, str, int | None], np.ndarray] = OrderedDict()
_TTS_MEMORY_ITEMS = 256
_tts_lock = threading.Lock()


def _tts_key_name(text: str, voice: str, rate_wpm: int | None) -> str:
    digest = hashlib.sha256(f"{voice}\0{rate_wpm}\0{text}".encode()).hexdigest()
    return f"espeak-{digest[:32]}.wav"


def tts_to_pcm(
    text: str,
    *,
    voice: str = "en-us",
    rate_wpm: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    espeak: str = "espeak-ng",
    timeout: float = 60.0,
) -> np.ndarray:
    """Speak ``text`` with espeak-ng and return 8 kHz mono int16 PCM.

    Results are cached in memory (LRU, 256 entries) keyed by ``(text, voice, rate_wpm)`` and, when
    ``cache_dir`` is given, on disk as 8 kHz WAV files named by a hash of the key. The text goes
    to espeak-ng on stdin (never as an argument, so it cannot be read as an option). This blocks
    for the synthesis time: call it through ``asyncio.to_thread``. Returned arrays are read-only.
    """
    if len(text) > TTS_MAX_CHARS:
        raise ValueError(f"text longer than {TTS_MAX_CHARS} characters")
    if not _VOICE_RE.match(voice):
        raise ValueError(f"invalid espeak-ng voice name {voice!r}")
    if rate_wpm is not None and not 80 <= rate_wpm <= 500:
        raise ValueError("rate_wpm must be 80..500")
    key = (text, voice, rate_wpm)
    with _tts_lock:
        cached = _tts_memory.get(key)
        if cached is not None:
            _tts_memory.move_to_end(key)
            return cached
    disk: Path | None = None
    pcm: np.ndarray | None = None
    if cache_dir is not None:
        disk = Path(cache_dir) / _tts_key_name(text, voice, rate_wpm)
        if disk.exists():
            try:
                pcm = _read_wav_8k(disk)
            except (OSError, wave.Error, EOFError):
                pcm = None  # corrupt cache entry: synthesise again
    if pcm is None:
        args = [espeak, "-v", voice, "--stdout", "--stdin"]
        if rate_wpm is not None:
            args[1:1] = ["-s", str(rate_wpm)]
        try:
            proc = subprocess.run(
                args, input=text.encode("utf-8"), capture_output=True, timeout=timeout, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RuntimeError(f"espeak-ng failed: {exc}") from exc
        if proc.returncode != 0 or not proc.stdout:
            raise RuntimeError(
                f"espeak-ng failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[:200]}"
            )
        pcm = decode_audio(proc.stdout, rate=RATE)
        if disk is not None:
            disk.parent.mkdir(parents=True, exist_ok=True)
            tmp = disk.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
            with wave.open(str(tmp), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(RATE)
                w.writeframes(pcm.astype("<i2").tobytes())
            os.replace(tmp, disk)  # atomic: readers never see half a file
    pcm.setflags(write=False)
    with _tts_lock:
        _tts_memory[key] = pcm
        while len(_tts_memory) > _TTS_MEMORY_ITEMS:
            _tts_memory.popitem(last=False)
    return pcm


def _read_wav_8k(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        if w.getframerate() != RATE or w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise wave.Error("not 8 kHz mono 16-bit")
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)
