"""G.722 and Opus against a real peer (issue 17): baresip with its ``g722``/``opus`` modules
accepts only that codec; audio crosses both ways in the same call (a tone each way, its
frequency and length checked at the other end), and RFC 4733 digits reach baresip.

baresip records what it decoded at the codec's rate (16 kHz for G.722, 48 kHz for Opus);
``read_wav_8k`` brings that to 8 kHz before the tone is measured.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from media.play import ToneSource
from media.sdp import SessionDescription
from sip import causes
from softswitch.ua import GatewayConfig, UserAgent, UserAgentConfig
from tests.conftest import wait_until
from tests.peers.baresip import needs_baresip, needs_baresip_codec, read_wav_8k
from tests.test_media_peers import _write_wav, tone_frames
from tests.test_xml_calls import http, webapp  # noqa: F401  (the Dial test's fixtures)

pytestmark = [pytest.mark.peer]

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


@needs_baresip
@pytest.mark.parametrize(
    "codec",
    [
        pytest.param("G722", marks=needs_baresip_codec("G722")),
        pytest.param("OPUS", marks=needs_baresip_codec("OPUS")),
    ],
)
async def test_wideband_call_with_baresip_audio_both_ways(ua, baresip, tmp_path: Path, codec: str):
    src = tmp_path / "their_tone.wav"
    t = np.arange(int(1.5 * RATE)) / RATE
    _write_wav(src, (8000 * np.sin(2 * np.pi * THEIR_TONE_HZ * t)).astype(np.int16))
    peer = baresip(codecs=(codec,), play_wav=src)
    # We offer all four, wideband first; baresip can answer only with ``codec``.
    call = await ua.dial(peer.uri, from_user="1000", codecs=["OPUS", "G722", "PCMU", "PCMA"])
    frames: list[np.ndarray] = []
    call.media.add_tap(lambda f: frames.append(f.copy()))
    assert await asyncio.wait_for(call.wait_answered(), 10), "not answered"
    assert call.media.stats()["codec"].upper() == codec
    done = call.media.play(ToneSource((OUR_TONE_HZ,), 1500, -10.0))
    assert await asyncio.wait_for(done, 5) == "completed"
    # RFC 4733 over the wideband call (baresip answers telephone-event/8000 next to Opus).
    neg = call.media.negotiated
    assert neg.dtmf_payload_type is not None
    print(f"{codec}: telephone-event {neg.dtmf_payload_type}/{neg.dtmf_clock_rate}")
    await asyncio.wait_for(call.send_digits("19"), 5)
    await wait_until(lambda: len(peer.received_dtmf()) >= 2, 5, what="baresip logged two digits")
    assert [d for d, _ in peer.received_dtmf()] == ["1", "9"]
    await asyncio.sleep(0.3)
    stats = call.media.stats()
    await call.hangup()
    end = await asyncio.wait_for(call.wait_terminated(), 5)
    assert end.cause == causes.NORMAL_CLEARING
    peer.stop()

    # Theirs reached us: 1.5 s of 600 Hz, decoded and resampled to 8 kHz.
    heard = np.concatenate(frames)
    their_ms = _tone_ms(heard, THEIR_TONE_HZ)
    print(f"{codec}: baresip's tone heard for {their_ms} ms; stats {stats}")
    assert abs(their_ms - 1500) <= 100, their_ms
    assert stats["packets_received"] > 50 and stats["lost"] == 0
    # Ours reached baresip: 1.5 s of 1000 Hz in what it decoded.
    recording = peer.recording()
    assert recording is not None
    received = read_wav_8k(recording)
    our_ms = _tone_ms(received, OUR_TONE_HZ)
    print(f"{codec}: our tone heard by baresip for {our_ms} ms")
    assert abs(our_ms - 1500) <= 100, our_ms
    assert not tone_frames(received, 2000.0).any()


@needs_baresip
@needs_baresip_codec("G722")
async def test_g722_leg_bridged_to_a_pcmu_leg(ua, baresip, tmp_path: Path):
    """What a Dial does (``engine.bridge`` of the two legs' streams, softswitch/dial.py): the
    bridge moves decoded 8 kHz frames, so a G.722 baresip and a PCMU baresip hear each other."""
    tones = {}
    for name, freq in (("wide", 600.0), ("narrow", 1000.0)):
        tones[name] = tmp_path / f"{name}.wav"
        t = np.arange(int(1.5 * RATE)) / RATE
        _write_wav(tones[name], (8000 * np.sin(2 * np.pi * freq * t)).astype(np.int16))
    wide = baresip(codecs=("G722",), play_wav=tones["wide"])
    narrow = baresip(codecs=("PCMU",), play_wav=tones["narrow"])
    codecs = ["G722", "PCMU"]
    call_w = await ua.dial(wide.uri, from_user="1000", codecs=codecs)
    call_n = await ua.dial(narrow.uri, from_user="1000", codecs=codecs)
    ua.media.bridge(call_w.media, call_n.media)
    for call in (call_w, call_n):
        assert await asyncio.wait_for(call.wait_answered(), 10), "not answered"
    assert call_w.media.stats()["codec"] == "G722" and call_n.media.stats()["codec"] == "PCMU"
    await asyncio.sleep(2.0)
    for call in (call_w, call_n):
        await call.hangup()
        await asyncio.wait_for(call.wait_terminated(), 5)
    wide.stop()
    narrow.stop()
    at_wide = read_wav_8k(wide.recording())
    at_narrow = read_wav_8k(narrow.recording())
    print(
        f"G722 side heard 1000 Hz for {_tone_ms(at_wide, 1000.0)} ms; "
        f"PCMU side heard 600 Hz for {_tone_ms(at_narrow, 600.0)} ms"
    )
    # Each side hears the other's 1.5 s tone (the calls answer a little apart: some is lost).
    assert _tone_ms(at_wide, 1000.0) >= 1200
    assert _tone_ms(at_narrow, 600.0) >= 1200


@needs_baresip
@needs_baresip_codec("G722")
@needs_baresip_codec("OPUS")
@pytest.mark.parametrize("order", [["G722", "OPUS", "PCMU"], ["OPUS", "PCMU", "G722"]])
async def test_gateway_codec_order_is_the_offer_order(baresip, order: list[str]):
    """A gateway's configured ``codecs`` (``UserAgentConfig.gateway_codecs``, from the server
    configuration) orders the m-line of every call through it; baresip, which takes all three
    (in another order of its own), answers with our first."""
    peer = baresip(codecs=("PCMU", "OPUS", "G722"))
    gw = GatewayConfig(name="trunk", host="127.0.0.1", port=peer.port)
    config = UserAgentConfig(
        host="127.0.0.1", port=0, gateways=[gw], gateway_codecs={"trunk": order}
    )
    async with UserAgent(config) as agent:
        call = await agent.dial(peer.uri, from_user="1000", gateway="trunk")
        offer = SessionDescription.parse(call.media._local_offer)
        names = [c.name.upper() for c in offer.media[0].codecs if c.name != "telephone-event"]
        assert names == order
        assert await asyncio.wait_for(call.wait_answered(), 10), (
            call.terminated,
            peer.log()[-1500:],
        )
        print(f"offer {names}: baresip answered {call.media.stats()['codec']}")
        assert call.media.stats()["codec"].upper() == order[0]
        await call.hangup()
        await asyncio.wait_for(call.wait_terminated(), 5)


@needs_baresip
@needs_baresip_codec("G722")
async def test_xml_dial_bridges_a_pcmu_caller_to_a_g722_callee(http, webapp, baresip, tmp_path):  # noqa: F811
    """The whole Dial (softswitch/dial.py): the A leg is a PCMU-only baresip, the XML dials a
    G722-only baresip, and each hears the other's tone through the transcoding bridge."""
    from media.engine import MediaConfig
    from tests.conftest import media_ports
    from tests.test_xml_calls import run_call

    tones = {}
    for name, freq in (("a", 600.0), ("b", 1000.0)):
        t = np.arange(int(1.5 * RATE)) / RATE
        tones[name] = tmp_path / f"{name}.wav"
        _write_wav(tones[name], (8000 * np.sin(2 * np.pi * freq * t)).astype(np.int16))
    a_side = baresip(codecs=("PCMU",), play_wav=tones["a"])
    b_side = baresip(codecs=("G722",), play_wav=tones["b"], max_call_s=1.0)  # hangs up at EOF
    media = MediaConfig(bind_host="127.0.0.1", codecs=["PCMU", "PCMA", "G722"], **media_ports())
    agent = UserAgent(UserAgentConfig(host="127.0.0.1", port=0, media=media))
    await agent.start()
    try:
        webapp.xml("/answer", f"<Response><Dial><User>{b_side.uri}</User></Dial></Response>")
        run = await run_call(agent, http, webapp, a_side.uri, "/answer", tmp_path)
    finally:
        await agent.close()
    (b_leg,) = run.b_legs
    assert run.call.final_stats["codec"] == "PCMU" and b_leg.final_stats["codec"] == "G722"
    a_side.stop()
    b_side.stop()
    at_a = read_wav_8k(a_side.recording())
    at_b = read_wav_8k(b_side.recording())
    print(
        f"A (PCMU) heard 1000 Hz for {_tone_ms(at_a, 1000.0)} ms; "
        f"B (G722) heard 600 Hz for {_tone_ms(at_b, 600.0)} ms"
    )
    # B answers after A: B's tone from its start; A's tone from B's answer on (some is gone).
    assert _tone_ms(at_a, 1000.0) >= 1200
    assert _tone_ms(at_b, 600.0) >= 600
