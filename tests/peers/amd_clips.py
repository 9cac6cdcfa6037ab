"""Audio clips a callee plays to the answering-machine detector: a human "Hello?", a
voicemail greeting ending in a beep and one ending in silence (espeak-ng speech, resampled to
8 kHz with sox).

``human_clip``, ``machine_clip`` and ``silent_end_clip`` are fixtures; modules that use them
import them.
"""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

RATE = 8000


def _speech(text: str, tmp: Path, voice: str = "en-us") -> np.ndarray:
    raw = tmp / "speech-raw.wav"
    out = tmp / "speech-8k.wav"
    subprocess.run(
        ["espeak-ng", "-v", voice, "-w", str(raw), text], check=True, capture_output=True
    )
    subprocess.run(
        ["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(out)],
        check=True,
        capture_output=True,
    )
    with wave.open(str(out)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).copy()


def _clip(path: Path, *parts: np.ndarray) -> Path:
    pcm = np.concatenate(parts).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.tobytes())
    return path


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.int16)


def _beep(hz: float = 1000.0, seconds: float = 0.4) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (8000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


@pytest.fixture
def human_clip(tmp_path: Path) -> Path:
    return _clip(tmp_path / "human.wav", _silence(0.4), _speech("Hello?", tmp_path), _silence(8))


GREETING = (
    "Hi, you have reached the voicemail of John Smith. I cannot take your call right now. "
    "Please leave a message after the tone and I will call you back."
)


@pytest.fixture
def silent_end_clip(tmp_path: Path) -> Path:
    """A greeting that ends in a long silence, without a beep."""
    greeting = _speech(GREETING.replace(" after the tone", ""), tmp_path)
    return _clip(tmp_path / "silent-end.wav", _silence(0.3), greeting, _silence(10))


@pytest.fixture
def machine_clip(tmp_path: Path) -> Path:
    greeting = _speech(GREETING, tmp_path)
    return _clip(
        tmp_path / "machine.wav", _silence(0.3), greeting, _silence(0.3), _beep(), _silence(6)
    )


def _tone(hz: float, seconds: float, amplitude: float = 4000.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16)


@pytest.fixture
def sit_clip(tmp_path: Path) -> Path:
    """A carrier intercept: the SIT (913.8 Hz 274 ms, 1370.6 Hz 274 ms, 1776.7 Hz 380 ms, about
    -21 dBm0) and the recorded announcement after it."""
    announcement = _speech("The number you have dialed is not in service. Please check the number.", tmp_path)
    return _clip(
        tmp_path / "sit.wav",
        _silence(0.3),
        _tone(913.8, 0.274),
        _tone(1370.6, 0.274),
        _tone(1776.7, 0.380),
        _silence(0.2),
        announcement,
        _silence(6),
    )


@pytest.fixture
def fax_clip(tmp_path: Path) -> Path:
    """A fax machine answering (T.30): 1.8 s of silence, then CED, 2100 Hz for 3.3 s."""
    return _clip(tmp_path / "fax.wav", _silence(1.8), _tone(2100.0, 3.3), _silence(8))
