"""linphonec as a direct callee (issue 17): our UA calls it on loopback, it auto-answers.

Audio both ways (a tone each way, checked at the other end), hang-up from either side,
RFC 4733 digits it reports, and the wideband codecs it offers (Opus, G.722).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from media.play import ToneSource
from sip import causes
from softswitch.ua import UserAgent, UserAgentConfig
from tests.conftest import wait_until
from tests.peers.baresip import read_wav_8k
from tests.peers.linphone import needs_linphone
from tests.test_media_peers import _write_wav, tone_frames

pytestmark = [pytest.mark.peer, needs_linphone, pytest.mark.xdist_group("timing")]

RATE = 8000
OUR_TONE_HZ = 1000.0
THEIR_TONE_HZ = 600.0


@pytest.fixture
async def ua():
    agent = UserAgent(UserAgentConfig(host="127.0.0.1", port=0))
    await agent.start()
    yield agent
    await agent.close()


def _tone_ms(pcm: np.ndarray, freq: float) -> int:
    return int(tone_frames(pcm, freq).sum()) * 20


async def test_linphone_answers_and_we_hang_up(ua, linphone):
    peer = linphone(codecs=("PCMU",))
    call = await ua.dial(peer.uri, from_user="1000", codecs=["PCMU", "PCMA"])
    assert await asyncio.wait_for(call.wait_answered(), 10), f"not answered:\n{peer.log()}"
    assert call.media.stats()["codec"].upper() == "PCMU"
    await call.hangup()
    end = await asyncio.wait_for(call.wait_terminated(), 5)
    assert end.cause == causes.NORMAL_CLEARING
    assert await asyncio.to_thread(peer.wait_for, "ended", 5) is not None, peer.log()


async def test_linphone_hangs_up(ua, linphone):
    peer = linphone(codecs=("PCMU",))
    call = await ua.dial(peer.uri, from_user="1000", codecs=["PCMU"])
    assert await asyncio.wait_for(call.wait_answered(), 10), f"not answered:\n{peer.log()}"
    assert await asyncio.to_thread(peer.wait_for, "connected", 5) is not None, peer.log()
    peer.command("terminate")
    end = await asyncio.wait_for(call.wait_terminated(), 5)
    assert end.cause == causes.NORMAL_CLEARING
    assert end.hangup_source == "callee"


@pytest.mark.parametrize("codec", ["PCMU", "G722", "OPUS"])
async def test_linphone_audio_both_ways_and_digits(ua, linphone, tmp_path: Path, codec: str):
    """We offer every codec we have; linphonec may answer only ``codec``. A 600 Hz tone from
    its file reaches us, our 1000 Hz tone reaches its recording, and our RFC 4733 digits are
    reported on its console."""
    src = tmp_path / "their_tone.wav"
    t = np.arange(int(1.5 * RATE)) / RATE
    _write_wav(src, (8000 * np.sin(2 * np.pi * THEIR_TONE_HZ * t)).astype(np.int16))
    peer = linphone(codecs=(codec,), play_wav=src)
    call = await ua.dial(peer.uri, from_user="1000", codecs=["OPUS", "G722", "PCMU", "PCMA"])
    frames: list[np.ndarray] = []
    call.media.add_tap(lambda f: frames.append(f.copy()))
    assert await asyncio.wait_for(call.wait_answered(), 10), f"not answered:\n{peer.log()}"
    assert call.media.stats()["codec"].upper() == codec
    done = call.media.play(ToneSource((OUR_TONE_HZ,), 1500, -10.0))
    assert await asyncio.wait_for(done, 5) == "completed"
    await asyncio.wait_for(call.send_digits("19"), 5)
    await wait_until(
        lambda: len(peer.received_dtmf()) >= 2, 5, what="linphonec reported two digits"
    )
    assert peer.received_dtmf() == ["1", "9"]
    stats = call.media.stats()
    await call.hangup()
    end = await asyncio.wait_for(call.wait_terminated(), 5)
    assert end.cause == causes.NORMAL_CLEARING
    peer.stop()  # closes its recording

    # Theirs reached us (linphone loops its play file, so at least the file's length).
    their_ms = _tone_ms(np.concatenate(frames), THEIR_TONE_HZ)
    print(f"{codec}: linphonec's tone heard for {their_ms} ms; stats {stats}")
    assert their_ms >= 1400, their_ms
    # Ours reached linphonec: 1.5 s of 1000 Hz in what it recorded.
    assert peer.recording_path is not None
    received = read_wav_8k(peer.recording_path)
    our_ms = _tone_ms(received, OUR_TONE_HZ)
    print(f"{codec}: our tone heard by linphonec for {our_ms} ms")
    assert abs(our_ms - 1500) <= 100, our_ms
