"""Mixing and bridging on the running media clock, over loopback UDP.

* ``play(mix=True)`` (Plivo's live Play/Speak ``mix=true``): the far end hears the prompt and
  the overlay at the same time, and the overlay neither delays nor cuts the prompt.
* A prompt on one leg of a bridge replaces the bridged audio (Plivo ``mix=false``) and leaves
  no backlog behind: the bridged audio that follows is as fresh as before the prompt.
* ``<Play>`` of a large file: the decode runs in a worker thread, so the media clock keeps
  its 20 ms deadlines while the source is being prepared.

Delays are measured in clock ticks (``clock_stats()['ticks']`` read in the taps), not in
wall time, so a loaded machine does not change them.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from media.engine import MediaConfig, MediaEngine, MediaStream
from media.play import ToneSource, decode_audio
from softswitch.api.plivo.xml import XmlApplication
from softswitch.app.control import CallHungUp
from softswitch.app.sources import TtsCache
from softswitch.callcontrol import LiveMedia
from tests.conftest import media_ports

LOOPBACK = "127.0.0.1"
RATE = 8000


@pytest.fixture
async def engine() -> AsyncIterator[MediaEngine]:
    eng = MediaEngine(MediaConfig(bind_host=LOOPBACK, **media_ports()))
    eng.start()
    yield eng
    await eng.stop()


def connect(a: MediaStream, b: MediaStream) -> None:
    """a offers, b answers."""
    a.apply_answer(b.handle_offer(a.create_offer()))


def tone(freq: float, ms: int) -> ToneSource:
    return ToneSource((freq,), ms, -12.0)


def band(samples: np.ndarray, freq: float) -> float:
    """Amplitude of ``freq`` in ``samples`` (one DFT bin, Hann window), full scale = 1."""
    x = samples.astype(np.float64) / 32768.0
    w = np.hanning(x.size)
    t = np.arange(x.size) / RATE
    return float(2 * abs(np.sum(x * w * np.exp(-2j * np.pi * freq * t))) / w.sum())


async def wait_until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


class Heard:
    """A tap: every received frame with the clock tick it was handed over on."""

    def __init__(self, engine: MediaEngine) -> None:
        self.engine = engine
        self.frames: list[tuple[int, np.ndarray]] = []

    def __call__(self, frame: np.ndarray) -> None:
        self.frames.append((int(self.engine.clock_stats()["ticks"]), frame.copy()))

    def first_tick(self, freq: float, after: int = 0, level: float = 0.05) -> int | None:
        """The first tick at or after ``after`` whose frame carries ``freq``."""
        for tick, frame in self.frames:
            if tick >= after and band(frame, freq) > level:
                return tick
        return None


# --- mix=True over loopback ------------------------------------------------------------------


async def test_overlay_is_heard_with_the_prompt_at_the_same_time(engine: MediaEngine) -> None:
    a, b = engine.create_stream(), engine.create_stream()
    connect(a, b)
    heard = Heard(engine)
    b.add_tap(heard)
    prompt = a.play(tone(500.0, 1000))
    await asyncio.sleep(0.2)
    overlay = a.play(tone(1300.0, 400), mix=True)
    # The overlay ends first: it ran alongside the prompt instead of waiting for it.
    assert await asyncio.wait_for(overlay, 5) == "completed"
    assert not prompt.done()
    assert await asyncio.wait_for(prompt, 5) == "completed"
    await asyncio.sleep(0.1)

    audio = np.concatenate([f for _, f in heard.frames])
    both = [
        i
        for i in range(0, audio.size - 800, 160)
        if band(audio[i : i + 800], 500.0) > 0.05 and band(audio[i : i + 800], 1300.0) > 0.05
    ]
    # 100 ms windows with both tones at once: the 400 ms overlay fits about 16 of them.
    assert len(both) >= 10
    prompt_frames = sum(1 for _, f in heard.frames if band(f, 500.0) > 0.05)
    overlay_frames = sum(1 for _, f in heard.frames if band(f, 1300.0) > 0.05)
    assert 45 <= prompt_frames <= 53  # the whole prompt, 50 frames, neither cut nor stretched
    assert 17 <= overlay_frames <= 22


# --- a prompt on a bridged leg ---------------------------------------------------------------


async def test_prompt_on_a_bridged_leg_leaves_no_stale_backlog(engine: MediaEngine) -> None:
    """caller <-> leg_a == bridge == leg_b <-> callee; a prompt plays on leg_a (the caller
    hears it) while the callee talks; then the callee's next word reaches the caller as fast
    as before the prompt."""
    caller, leg_a = engine.create_stream(), engine.create_stream()
    leg_b, callee = engine.create_stream(), engine.create_stream()
    connect(caller, leg_a)
    connect(leg_b, callee)
    engine.bridge(leg_a, leg_b)
    heard, spoken = Heard(engine), Heard(engine)
    caller.add_tap(heard)
    callee.add_send_tap(spoken)

    async def delay_of(freq: float) -> int:
        """Ticks from the callee sending ``freq`` to the caller receiving it."""
        start = int(engine.clock_stats()["ticks"])
        await asyncio.wait_for(callee.play(tone(freq, 200)), 5)
        await asyncio.sleep(0.1)
        sent = spoken.first_tick(freq, after=start)
        got = heard.first_tick(freq, after=start)
        assert sent is not None and got is not None
        return got - sent

    before = await delay_of(1500.0)
    assert 1 <= before <= 3  # callee -> leg_b (next tick) -> leg_a -> caller (next tick)

    # The prompt plays while the callee talks (700 Hz): the caller hears the prompt only.
    # Both start on the next tick, prompt_start + 1; the caller hears the prompt's 20 frames
    # on ticks prompt_start + 2 ... + 21.
    prompt_start = int(engine.clock_stats()["ticks"])
    talk = callee.play(tone(700.0, 800))
    assert await asyncio.wait_for(leg_a.play(tone(400.0, 400)), 5) == "completed"
    during = [f for t, f in heard.frames if prompt_start + 3 <= t <= prompt_start + 20]
    assert len(during) == 18
    assert all(band(f, 400.0) > 0.05 and band(f, 700.0) < 0.01 for f in during)
    await asyncio.wait_for(talk, 5)

    after = await delay_of(1100.0)
    # A backlog of bridged frames kept from the prompt would add up to MAX_BRIDGE_FRAMES.
    assert after == before


# --- <Play> of a large file -------------------------------------------------------------------


class StreamCall:
    """Just enough of :class:`~softswitch.app.control.CallControl` to run ``<Play>`` on a
    real stream: each source plays for ``play_s`` seconds and is then stopped."""

    call_uuid = "mix-test"
    answered = True
    hung_up = False

    def __init__(self, stream: MediaStream, play_s: float) -> None:
        self.stream, self.play_s = stream, play_s
        self.results: list[str] = []

    def base_params(self) -> dict[str, str]:
        return {"CallUUID": self.call_uuid}

    def notify(self, url: str, method: str, params: Mapping[str, str]) -> None:
        pass

    async def play(self, source: Any, *, interrupt_on_digit: bool = False) -> str | None:
        fut = self.stream.play(source)
        await asyncio.sleep(self.play_s)
        self.stream.stop_play()
        self.results.append(await fut)
        return None

    async def hangup(self, cause: str, reason: str | None = None) -> None:
        self.hung_up = True
        raise CallHungUp


@pytest.mark.peer
@pytest.mark.skipif(shutil.which("sox") is None, reason="sox not installed")
async def test_clock_keeps_time_while_a_large_wav_is_prepared(tmp_path: Path) -> None:
    big = tmp_path / "big.wav"
    # ~10 MB: 59 s of 44.1 kHz stereo, decoded whole (and resampled) when the source is made.
    subprocess.run(
        ["sox", "-n", "-r", "44100", "-c", "2", "-b", "16", str(big), "synth", "59", "sine", "440"],
        check=True,
        timeout=60,
    )
    assert big.stat().st_size > 10_000_000
    # How long the decode takes here: on the event loop the clock would stall as long.
    t0 = time.perf_counter()
    await asyncio.to_thread(decode_audio, big)
    decode_s = time.perf_counter() - t0

    # A fresh clock, so its lateness figures cover the <Play> only.
    engine = MediaEngine(MediaConfig(bind_host=LOOPBACK, **media_ports()))
    engine.start()
    try:
        await _play_big_wav(engine, big, tmp_path, decode_s)
    finally:
        await engine.stop()


async def _play_big_wav(engine: MediaEngine, big: Path, tmp_path: Path, decode_s: float) -> None:
    a, b = engine.create_stream(), engine.create_stream()
    connect(a, b)
    heard = Heard(engine)
    b.add_tap(heard)
    await asyncio.sleep(0.1)
    before = engine.clock_stats()
    call = StreamCall(a, play_s=0.3)
    app = XmlApplication(
        call,  # type: ignore[arg-type]
        data_dir=tmp_path,
        recording_url_base="http://softswitch.test/rec/",
        media=LiveMedia(),
        tts_cache=TtsCache(),
    )
    await asyncio.wait_for(app.run(f"<Response><Play>{big}</Play></Response>", "x"), 30)
    after = engine.clock_stats()

    assert call.results == ["stopped"]
    assert heard.first_tick(440.0, after=int(before["ticks"])) is not None
    # The clock did not stall for the decode: no jump in lateness, no skipped ticks beyond
    # what a busy machine causes anyway (a stall would skip about decode_s / 20 ms).
    stall_ticks = int(decode_s / 0.020)
    assert after["skipped"] - before["skipped"] < max(2, stall_ticks // 2)
    assert after["max_ms"] < max(60.0, decode_s * 1000 / 2)
