"""Audio sources (media/play.py) and sinks (media/record.py) with real files from sox/espeak-ng."""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from media import play
from media.dtmf import DBM0_PEAK
from media.play import (
    ArraySource,
    AudioFileError,
    FileSource,
    SilenceSource,
    Source,
    ToneSource,
    decode_audio,
    tts_to_pcm,
)
from media.record import Recorder, RecorderError, mp3_encoder_name

RATE = 8000
needs_sox = pytest.mark.skipif(shutil.which("sox") is None, reason="sox not installed")
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng missing")
needs_mp3 = pytest.mark.skipif(mp3_encoder_name() is None, reason="no libmp3lame in FFmpeg")


def drain(src: Source, n: int = 160, limit: int = 100_000) -> np.ndarray:
    out = []
    for _ in range(limit):
        chunk = src.read(n)
        if chunk is None:
            return np.concatenate(out) if out else np.zeros(0, np.int16)
        assert chunk.dtype == np.int16 and 0 < len(chunk) <= n
        out.append(chunk)
    raise AssertionError("source did not finish")


def level_dbm0(x: np.ndarray, freq: float) -> float:
    t = np.arange(len(x)) / RATE
    c = np.dot(x.astype(np.float64), np.exp(-2j * np.pi * freq * t)) * 2 / len(x)
    return float(20 * np.log10(abs(c) / DBM0_PEAK))


def dominant_freq(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(len(x))))
    return float(np.argmax(spec) * RATE / len(x))


def sox(*args: str) -> None:
    subprocess.run(["sox", *args], check=True, capture_output=True, timeout=30)


# ---------------------------------------------------------------------------------------------
# Simple sources


def test_silence() -> None:
    assert len(drain(SilenceSource(70))) == 560
    assert not np.any(drain(SilenceSource(70)))
    endless = SilenceSource()
    assert all(len(endless.read(160)) == 160 for _ in range(1000))
    assert isinstance(endless, Source)


def test_tone_source_frequency_level_duration() -> None:
    x = drain(ToneSource((1000.0,), 500, -10.0))
    assert len(x) == 4000
    assert abs(level_dbm0(x, 1000.0) + 10.0) < 0.05
    dual = drain(ToneSource((440.0, 480.0), 1000, -19.0))
    assert abs(level_dbm0(dual, 440.0) + 19) < 0.1 and abs(level_dbm0(dual, 480.0) + 19) < 0.1
    # Continuous phase whatever the read size.
    a = drain(ToneSource((700.0,), 100), n=160)
    b = drain(ToneSource((700.0,), 100), n=37)
    assert np.array_equal(a, b)


def test_tone_source_cadence_and_endless() -> None:
    x = drain(ToneSource((425.0,), 3000, -10.0, cadence=(1000, 500)))
    on = np.abs(x.astype(np.int32)).reshape(-1, 400).max(axis=1) > 0  # 50 ms blocks
    # 1 s on (20 blocks), 0.5 s off (10), 1 s on, 0.5 s off.
    assert on.tolist() == ([True] * 20 + [False] * 10) * 2
    endless = ToneSource((425.0,), None)
    assert all(endless.read(160) is not None for _ in range(500))
    with pytest.raises(ValueError):
        ToneSource((425.0,), 100, cadence=(100,))


def test_array_source_loops() -> None:
    pcm = np.arange(250, dtype=np.int16)
    assert np.array_equal(drain(ArraySource(pcm)), pcm)
    assert np.array_equal(drain(ArraySource(pcm, loop=3)), np.tile(pcm, 3))
    # Reads stay full-length across the loop seam.
    src = ArraySource(pcm, loop=0)
    chunks = [src.read(160) for _ in range(100)]
    assert all(c is not None and len(c) == 160 for c in chunks)
    assert np.array_equal(np.concatenate(chunks)[:1000], np.tile(pcm, 4))
    assert ArraySource(np.zeros(0, np.int16), loop=0).read() is None
    # A bool is a flag, not a count: False plays once (not "0 = forever"), True loops.
    assert np.array_equal(drain(ArraySource(pcm, loop=False)), pcm)
    looping = ArraySource(pcm, loop=True)
    assert all(looping.read(160) is not None for _ in range(100))
    with pytest.raises(ValueError):
        ArraySource(pcm, loop=-1)


# ---------------------------------------------------------------------------------------------
# Files


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@needs_sox
def test_wav_file_resampled_to_8k_mono(media_dir: Path) -> None:
    path = media_dir / "tone16k.wav"
    sox(
        "-n",
        "-r",
        "16000",
        "-c",
        "2",
        "-b",
        "16",
        str(path),
        "synth",
        "0.5",
        "sine",
        "1000",
        "vol",
        "0.3",
    )
    x = drain(FileSource(path))
    assert abs(len(x) - 4000) <= 16
    assert abs(dominant_freq(x) - 1000) < 5
    peak = 0.3 * 32767
    assert abs(np.max(np.abs(x[500:-500])) - peak) < 0.05 * peak


@needs_sox
def test_mp3_file_from_sox(media_dir: Path) -> None:
    path = media_dir / "tone44k.mp3"
    sox("-n", "-r", "44100", "-c", "1", str(path), "synth", "1.0", "sine", "440", "vol", "0.5")
    src = FileSource(path)
    assert src.decoded_up_front
    x = drain(src)
    assert abs(len(x) - 8000) < 400  # MP3 framing / encoder delay
    assert abs(dominant_freq(x[1000:7000]) - 440) < 5


@needs_sox
def test_file_loops_streaming_and_cache(media_dir: Path) -> None:
    path = media_dir / "chirp.wav"
    sox("-n", "-r", "8000", "-c", "1", "-b", "16", str(path), "synth", "0.3", "sine", "300-900")
    once = drain(FileSource(path))
    assert len(once) == 2400
    assert np.array_equal(drain(FileSource(path, loop=3)), np.tile(once, 3))
    # The same file twice decodes once (shared read-only array).
    a, b = FileSource(path), FileSource(path)
    assert a._inner is not None and b._inner is not None
    assert np.shares_memory(a._inner._pcm, b._inner._pcm)
    # Large-file path: decoded while playing, same samples, loops reopen the file.
    streamed = FileSource(path, loop=2, up_front_max_bytes=0)
    assert not streamed.decoded_up_front
    assert np.array_equal(drain(streamed, n=123), np.tile(once, 2))
    forever = FileSource(path, loop=0, up_front_max_bytes=0)
    got = np.concatenate([forever.read(160) for _ in range(60)])
    assert np.array_equal(got, np.tile(once, 4)[: len(got)])
    forever.close()
    assert forever.read() is None


def test_bad_files(media_dir: Path) -> None:
    junk = media_dir / "junk.wav"
    junk.write_bytes(b"this is not audio at all" * 100)
    with pytest.raises(AudioFileError):
        FileSource(junk)
    with pytest.raises(AudioFileError):
        FileSource(junk, up_front_max_bytes=0)
    with pytest.raises(AudioFileError):
        FileSource(media_dir / "missing.wav")
    with pytest.raises(AudioFileError, match="URL"):
        FileSource("https://example.invalid/a.mp3")
    with pytest.raises(AudioFileError):
        decode_audio(b"\x00" * 64)


# ---------------------------------------------------------------------------------------------
# Text to speech


@needs_espeak
def test_tts_speech_and_caches(tmp_path: Path) -> None:
    play._tts_memory.clear()
    text = "Please enter your account number, followed by the pound key."
    pcm = tts_to_pcm(text, cache_dir=tmp_path)
    assert pcm.dtype == np.int16 and 1.5 * RATE < len(pcm) < 10 * RATE
    assert np.sqrt(np.mean(pcm.astype(np.float64) ** 2)) > 300  # not silence
    assert tts_to_pcm(text, cache_dir=tmp_path) is pcm  # memory cache
    files = list(tmp_path.glob("espeak-*.wav"))
    assert len(files) == 1
    with wave.open(str(files[0])) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
    play._tts_memory.clear()
    again = tts_to_pcm(text, cache_dir=tmp_path)  # from disk
    assert again is not pcm and np.array_equal(again, pcm)
    slow = tts_to_pcm(text, rate_wpm=100)
    assert len(slow) > len(pcm) * 1.3
    # Text is never parsed as options.
    assert len(tts_to_pcm("--help me")) > RATE // 4
    assert len(tts_to_pcm("Bonjour", voice="fr")) > 0


def test_tts_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        tts_to_pcm("x", voice="--stdout")
    with pytest.raises(ValueError):
        tts_to_pcm("x", rate_wpm=5)
    with pytest.raises(ValueError):
        tts_to_pcm("x" * 20_000)


# ---------------------------------------------------------------------------------------------
# Recording


def test_wav_recording_is_exact(tmp_path: Path) -> None:
    path = tmp_path / "rec.wav"
    src = ToneSource((600.0, 1400.0), 1230, -12.0)
    written = []
    with Recorder(path) as rec:
        while (chunk := src.read(160)) is not None:
            rec.write(chunk)
            written.append(chunk)
        rec.write(np.zeros(0, np.int16))
    assert rec.closed and rec.close() == pytest.approx(1.23)
    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
        data = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    assert np.array_equal(data, np.concatenate(written))
    with pytest.raises(RecorderError):
        rec.write(np.zeros(160, np.int16))


@needs_sox
def test_wav_recording_readable_by_sox(tmp_path: Path) -> None:
    path = tmp_path / "rec.wav"
    rec = Recorder(path)
    for _ in range(50):
        rec.write(np.full(160, 1000, np.int16))
    assert rec.close() == pytest.approx(1.0)
    out = subprocess.run(["soxi", "-D", str(path)], capture_output=True, text=True, check=True)
    assert float(out.stdout) == pytest.approx(1.0)


@needs_mp3
def test_mp3_recording_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "rec.mp3"
    src = ToneSource((440.0,), 2000, -10.0)
    rec = Recorder(path, fmt="mp3")
    ref = []
    while (chunk := src.read(160)) is not None:
        rec.write(chunk)
        ref.append(chunk)
    assert rec.close() == pytest.approx(2.0)
    x = decode_audio(path).astype(np.float64)
    y = np.concatenate(ref).astype(np.float64)
    assert abs(len(x) - len(y)) < 1200
    n = min(len(x), len(y))
    assert np.corrcoef(x[:n], y[:n])[0, 1] > 0.99
    assert abs(level_dbm0(x[800 : n - 800].astype(np.int16), 440.0) + 10.0) < 1.0
    if shutil.which("soxi"):
        out = subprocess.run(["soxi", "-r", str(path)], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "8000"


def test_recorder_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Recorder(tmp_path / "x.ogg", fmt="ogg")
    with pytest.raises(RecorderError):
        Recorder(tmp_path / "no" / "such" / "dir.wav")


@needs_espeak
def test_speech_file_from_espeak_plays_back(tmp_path: Path) -> None:
    path = tmp_path / "speech.wav"
    subprocess.run(
        ["espeak-ng", "-w", str(path), "testing one two three"],
        check=True,
        capture_output=True,
        timeout=30,
    )
    x = drain(FileSource(path))
    with wave.open(str(path)) as w:
        seconds = w.getnframes() / w.getframerate()
    assert abs(len(x) / RATE - seconds) < 0.01
    assert np.max(np.abs(x)) > 1000
